//! Deletes that cannot half-happen, pure: the decisions of `rm` and `gc` around deletion
//! marks. A delete first stores a durable mark of the step on every node that answers and
//! goes on only once `m + 1` nodes hold it: every later listing waits for all but `m` nodes
//! (see `listing`), so it sees at least one mark, and a marked step is never listed as
//! complete nor chosen as the latest. Then every node of the map deletes the step's key
//! ranges; only when every one of them confirmed are the marks cleared. A node that did not
//! confirm keeps the step marked until a later `rm`, `gc` or `repair` finishes the delete.
//! `gc` deletes nothing (unless forced) while a node of the map did not answer its listing:
//! a step it would delete may have manifests there that it cannot see.

use std::collections::BTreeSet;

use rackpoint_proto::{NodeId, Step};

use crate::listing::JobListing;

/// Nodes that must hold a step's mark before anything of it is deleted: m + 1, so that a
/// listing answered by all but m nodes sees at least one.
pub fn marks_needed(m: usize) -> usize {
    m + 1
}

/// Whether a delete may go on once `acked` nodes stored the mark.
pub fn may_delete(acked: usize, m: usize) -> bool {
    acked >= marks_needed(m)
}

/// When a delete may not go on: the nodes that stored a mark this delete made (they said it
/// was not there before), whose marks to take back so that the step is shown as it was.
/// A node that held the mark already keeps it: an earlier delete is still pending there.
pub fn marks_to_take_back(acks: &[(NodeId, bool)]) -> Vec<NodeId> {
    acks.iter().filter(|(_, existed)| !existed).map(|(n, _)| *n).collect()
}

/// The nodes of the map that did not confirm the step's delete (in map order): the step
/// stays marked until each of them did. Empty: the delete is done everywhere, clear the marks.
pub fn unconfirmed(map: &[NodeId], confirmed: &BTreeSet<NodeId>) -> Vec<NodeId> {
    map.iter().copied().filter(|n| !confirmed.contains(n)).collect()
}

/// What `gc` may do after its listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GcGate {
    /// Go on: delete the steps retention chose.
    Proceed,
    /// Delete nothing: these nodes did not answer the listing, so a step retention chose may
    /// have manifests (of newer checkpoints, or of its own) that the listing does not show.
    Refuse {
        /// The nodes to bring back (or pass `--force`).
        unseen: Vec<NodeId>,
    },
}

/// Whether `gc` may delete `to_delete` when `unseen` nodes did not answer its listing:
/// with nothing to delete, or every node seen, or `force`, it goes on (a forced delete
/// marks each step first, so what the nodes down hold is deleted when they return).
pub fn gc_gate(to_delete: &[Step], unseen: &[NodeId], force: bool) -> GcGate {
    if to_delete.is_empty() || unseen.is_empty() || force {
        GcGate::Proceed
    } else {
        GcGate::Refuse { unseen: unseen.to_vec() }
    }
}

/// The nodes still to finish the delete of `step`, as `listing` shows it: those that still
/// list a manifest of it, and those that did not answer (they may hold its shards or
/// manifests). Sorted.
pub fn pending_nodes(listing: &JobListing, step: Step) -> Vec<NodeId> {
    let holders = listing
        .parts
        .range((step, rackpoint_proto::Rank(0))..=(step, rackpoint_proto::Rank(u32::MAX)))
        .flat_map(|(_, p)| p.holders());
    let mut nodes: Vec<NodeId> = holders.chain(listing.unseen.iter().copied()).collect();
    nodes.sort();
    nodes.dedup();
    nodes
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use rackpoint_proto::{Digest, ManifestEntry, Rank};

    use super::*;
    use crate::listing::{ListingQuorum, QuorumState};

    fn nodes(ids: &[u32]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    #[test]
    fn the_mark_quorum_is_m_plus_one() {
        assert_eq!(marks_needed(2), 3);
        assert!(!may_delete(2, 2) && may_delete(3, 2) && may_delete(6, 2));
        assert!(may_delete(1, 0) && !may_delete(0, 0));
    }

    #[test]
    fn only_the_marks_this_delete_made_are_taken_back() {
        let acks = [(NodeId(1), false), (NodeId(2), true), (NodeId(5), false)];
        assert_eq!(marks_to_take_back(&acks), nodes(&[1, 5]));
    }

    #[test]
    fn marks_are_cleared_only_when_every_node_of_the_map_confirmed() {
        let map = nodes(&[1, 2, 3, 4, 5, 6]);
        let some: BTreeSet<NodeId> = nodes(&[1, 2, 3, 5]).into_iter().collect();
        assert_eq!(unconfirmed(&map, &some), nodes(&[4, 6]));
        let all: BTreeSet<NodeId> = map.iter().copied().collect();
        assert!(unconfirmed(&map, &all).is_empty());
    }

    #[test]
    fn gc_refuses_unless_forced_when_a_node_was_not_seen() {
        let steps = [Step(400), Step(500)];
        assert_eq!(
            gc_gate(&steps, &nodes(&[4, 5, 6]), false),
            GcGate::Refuse { unseen: nodes(&[4, 5, 6]) }
        );
        assert_eq!(gc_gate(&steps, &nodes(&[4, 5, 6]), true), GcGate::Proceed);
        assert_eq!(gc_gate(&steps, &[], false), GcGate::Proceed);
        assert_eq!(gc_gate(&[], &nodes(&[4]), false), GcGate::Proceed, "nothing to delete");
    }

    fn entry(step: u64) -> ManifestEntry {
        ManifestEntry {
            step: Step(step),
            rank: Rank(0),
            world_size: 1,
            len: 1,
            hash: Digest([1; 32]),
            revision: 0,
            base: Digest([1; 32]),
        }
    }

    #[test]
    fn the_nodes_to_finish_are_the_holders_and_the_unseen() {
        let (mut q, t0) = (ListingQuorum::new(nodes(&[1, 2, 3, 4]), 1), Instant::now());
        q.on_marks(NodeId(1), &[Step(7)]);
        q.on_answer(NodeId(1), vec![], t0, Duration::ZERO);
        q.on_answer(NodeId(3), vec![entry(7), entry(8)], t0, Duration::ZERO);
        q.on_answer(NodeId(2), vec![entry(8)], t0, Duration::ZERO);
        let l = q.finish();
        assert_eq!(pending_nodes(&l, Step(7)), nodes(&[3, 4]));
    }

    proptest! {
        /// Whoever stored the mark (at least m + 1 nodes) and whichever nodes answer a later
        /// listing (the quorum waits for all but m), in any order, the listing shows the step
        /// as being deleted.
        #[test]
        fn every_listing_after_a_quorum_of_marks_sees_one(
            n in 1usize..10,
            m in 0usize..4,
            seed in any::<u64>(),
        ) {
            let m = m.min(n.saturating_sub(1));
            let map: Vec<NodeId> = (1..=n as u32).map(NodeId).collect();
            let mut rng = seed;
            let mut next = move || {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (rng >> 33) as usize
            };
            let mut shuffled = map.clone();
            for i in (1..n).rev() {
                shuffled.swap(i, next() % (i + 1));
            }
            let marked: BTreeSet<NodeId> =
                shuffled[..marks_needed(m) + next() % (n - m)].iter().copied().collect();
            prop_assert!(may_delete(marked.len(), m));
            for i in (1..n).rev() {
                shuffled.swap(i, next() % (i + 1));
            }
            // The nodes that answer come in some order; the rest fail or stay silent.
            let answering = n - m + next() % (m + 1);
            let (mut q, t0) = (ListingQuorum::new(map.clone(), m), Instant::now());
            for (i, node) in shuffled.iter().enumerate() {
                if i < answering {
                    let marks: Vec<Step> =
                        if marked.contains(node) { vec![Step(9)] } else { vec![] };
                    q.on_marks(*node, &marks);
                    q.on_answer(*node, vec![], t0, Duration::from_millis(1));
                } else if next() % 2 == 0 {
                    q.on_error(*node);
                }
            }
            prop_assert_eq!(q.poll(t0 + Duration::from_millis(1)), QuorumState::Done);
            let l = q.finish();
            prop_assert!(l.is_deleting(Step(9)), "marked {marked:?}, unseen {:?}", l.unseen);
            prop_assert_eq!(l.unseen.len(), n - answering);
        }
    }
}
