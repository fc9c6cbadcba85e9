//! The listing quorum, pure: merges the manifest lists of a job's nodes and decides when a
//! listing is complete enough to use.
//!
//! Every manifest is stored on m + 1 nodes, so once all but m nodes have *answered*, every
//! committed part has been seen at least once. From that moment the nodes still silent get a
//! grace period (one hedging threshold); after it they are left out, and the driver suspects
//! them (marks them down). A node that replied with an error counts as replied, not answered.
//! Replicas that disagree on a part's manifest id are reported; the highest revision wins
//! (a repair rewrote it: `ManifestEntry::revision`), and among copies of one revision the
//! first id seen is kept.
//!
//! Drive it with [`ListingQuorum::on_answer`] and [`ListingQuorum::on_error`], and ask
//! [`ListingQuorum::poll`] whether to wait on (and until when) or stop.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rackpoint_proto::{Digest, ManifestEntry, NodeId, Rank, Step};

/// One part as the nodes list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    /// Parts in its checkpoint.
    pub world_size: u32,
    /// Its manifest id.
    pub hash: Digest,
    /// Nodes that hold that manifest.
    pub nodes: Vec<NodeId>,
    /// The manifest's revision (0 until a repair moved some of its shards).
    pub revision: u32,
    /// The id of the part's revision 0: what the next manifest's `prev` names.
    pub base: Digest,
}

/// Every part of a job, by (step, rank).
pub type Listing = BTreeMap<(Step, Rank), PartEntry>;

/// Where a listing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumState {
    /// Wait for more answers; with `Some`, stop waiting at that instant.
    Waiting(Option<Instant>),
    /// Every node replied, or the grace after the quorum ran out.
    Done,
}

/// A node's copy of a part that disagrees with the id seen first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conflict {
    /// The node.
    pub node: NodeId,
    /// The part's step.
    pub step: Step,
    /// The part's rank.
    pub rank: Rank,
}

/// One listing of one job over a set of nodes; see the module doc.
#[derive(Debug, Clone)]
pub struct ListingQuorum {
    nodes: Vec<NodeId>,
    /// `nodes` as a set, and the nodes that replied: sets, so that a listing over a
    /// thousand nodes costs `n log n`, not `n^2` per poll.
    members: BTreeSet<NodeId>,
    enough: usize,
    listing: Listing,
    answered: Vec<NodeId>,
    replied: BTreeSet<NodeId>,
    grace_until: Option<Instant>,
}

impl ListingQuorum {
    /// A listing over `nodes` of a code with `m` parity shards: all but `m` must answer
    /// (at least one).
    pub fn new(nodes: Vec<NodeId>, m: usize) -> Self {
        let enough = nodes.len().saturating_sub(m).max(1);
        let members: BTreeSet<NodeId> = nodes.iter().copied().collect();
        let (answered, replied) = (Vec::new(), BTreeSet::new());
        let listing = Listing::new();
        Self { nodes, members, enough, listing, answered, replied, grace_until: None }
    }

    /// Node `node` listed `entries` at `now`; `grace` is how long stragglers get once the
    /// quorum is reached. Returns the entries that conflict with copies seen before.
    pub fn on_answer(
        &mut self,
        node: NodeId,
        entries: Vec<ManifestEntry>,
        now: Instant,
        grace: Duration,
    ) -> Vec<Conflict> {
        if !self.first_reply(node) {
            return Vec::new();
        }
        self.answered.push(node);
        if self.answered.len() >= self.enough && self.grace_until.is_none() {
            self.grace_until = Some(now + grace);
        }
        entries.into_iter().filter_map(|e| self.merge(node, e)).collect()
    }

    /// Node `node` replied with an error (or its call failed).
    pub fn on_error(&mut self, node: NodeId) {
        self.first_reply(node);
    }

    /// Whether to wait on, at `now`.
    pub fn poll(&self, now: Instant) -> QuorumState {
        let all_replied = self.replied.len() == self.members.len();
        match self.grace_until {
            _ if all_replied => QuorumState::Done,
            Some(until) if now >= until => QuorumState::Done,
            until => QuorumState::Waiting(until),
        }
    }

    /// Nodes that have not replied at all (to suspect once the listing is done).
    pub fn silent(&self) -> Vec<NodeId> {
        self.nodes.iter().copied().filter(|n| !self.replied.contains(n)).collect()
    }

    /// Nodes that answered with a list.
    pub fn answered(&self) -> &[NodeId] {
        &self.answered
    }

    /// The merged listing.
    pub fn into_listing(self) -> Listing {
        self.listing
    }

    /// Records `node`'s reply; false if it had replied already (or is not in the set).
    fn first_reply(&mut self, node: NodeId) -> bool {
        self.members.contains(&node) && self.replied.insert(node)
    }

    fn merge(&mut self, node: NodeId, e: ManifestEntry) -> Option<Conflict> {
        let part = self.listing.entry((e.step, e.rank)).or_insert_with(|| PartEntry {
            world_size: e.world_size,
            hash: e.hash,
            nodes: Vec::new(),
            revision: e.revision,
            base: e.base,
        });
        if e.revision > part.revision {
            // A repair's rewrite supersedes the copies seen so far.
            *part = PartEntry {
                world_size: e.world_size,
                hash: e.hash,
                nodes: Vec::new(),
                revision: e.revision,
                base: e.base,
            };
        }
        if part.hash != e.hash {
            return Some(Conflict { node, step: e.step, rank: e.rank });
        }
        if !part.nodes.contains(&node) {
            part.nodes.push(node);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const GRACE: Duration = Duration::from_millis(250);

    fn entry(step: u64, rank: u32, hash: u8) -> ManifestEntry {
        ManifestEntry {
            step: Step(step),
            rank: Rank(rank),
            world_size: 1,
            len: 1,
            hash: Digest([hash; 32]),
            revision: 0,
            base: Digest([hash; 32]),
        }
    }

    fn six() -> Vec<NodeId> {
        (1..=6).map(NodeId).collect()
    }

    #[test]
    fn all_but_m_answers_start_a_grace_then_the_silent_are_left_out() {
        let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
        assert_eq!(q.poll(t0), QuorumState::Waiting(None), "no deadline before the quorum");
        for n in 1..=3 {
            q.on_answer(NodeId(n), vec![entry(5, 0, 1)], t0, GRACE);
        }
        q.on_error(NodeId(4));
        assert_eq!(q.poll(t0), QuorumState::Waiting(None), "an error is not an answer");
        let t1 = t0 + Duration::from_millis(10);
        q.on_answer(NodeId(5), vec![], t1, GRACE);
        assert_eq!(q.poll(t1), QuorumState::Waiting(Some(t1 + GRACE)));
        assert_eq!(q.poll(t1 + GRACE), QuorumState::Done);
        assert_eq!(q.silent(), vec![NodeId(6)]);
        assert_eq!(q.answered(), &[NodeId(1), NodeId(2), NodeId(3), NodeId(5)]);
        let listing = q.into_listing();
        assert_eq!(listing[&(Step(5), Rank(0))].nodes, vec![NodeId(1), NodeId(2), NodeId(3)]);
    }

    #[test]
    fn every_reply_in_ends_the_listing_at_once() {
        let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
        for n in 1..=6 {
            q.on_error(NodeId(n));
        }
        assert_eq!(q.poll(t0), QuorumState::Done);
        assert!(q.answered().is_empty() && q.silent().is_empty());
    }

    #[test]
    fn a_disagreeing_copy_is_reported_and_the_first_kept() {
        let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
        assert!(q.on_answer(NodeId(1), vec![entry(1, 0, 7)], t0, GRACE).is_empty());
        let conflicts = q.on_answer(NodeId(2), vec![entry(1, 0, 8), entry(2, 0, 9)], t0, GRACE);
        assert_eq!(conflicts, vec![Conflict { node: NodeId(2), step: Step(1), rank: Rank(0) }]);
        assert!(q.on_answer(NodeId(2), vec![entry(1, 0, 7)], t0, GRACE).is_empty(), "once a node");
        let listing = q.into_listing();
        assert_eq!(listing[&(Step(1), Rank(0))].hash, Digest([7; 32]));
        assert_eq!(listing[&(Step(1), Rank(0))].nodes, vec![NodeId(1)]);
        assert_eq!(listing[&(Step(2), Rank(0))].nodes, vec![NodeId(2)]);
    }

    #[test]
    fn a_higher_revision_wins_whatever_the_order() {
        let repaired = ManifestEntry { revision: 1, hash: Digest([9; 32]), ..entry(1, 0, 7) };
        for first_the_repaired in [false, true] {
            let (mut q, t0) = (ListingQuorum::new(six(), 2), Instant::now());
            let (a, b) = if first_the_repaired {
                (repaired.clone(), entry(1, 0, 7))
            } else {
                (entry(1, 0, 7), repaired.clone())
            };
            q.on_answer(NodeId(1), vec![a], t0, GRACE);
            q.on_answer(NodeId(2), vec![b], t0, GRACE);
            q.on_answer(NodeId(3), vec![repaired.clone()], t0, GRACE);
            let part = &q.into_listing()[&(Step(1), Rank(0))];
            assert_eq!(
                (part.revision, part.hash, part.base),
                (1, Digest([9; 32]), Digest([7; 32]))
            );
            let holders =
                if first_the_repaired { [NodeId(1), NodeId(3)] } else { [NodeId(2), NodeId(3)] };
            assert_eq!(part.nodes, holders);
        }
    }

    #[test]
    fn a_single_node_cluster_needs_its_one_answer() {
        let (mut q, t0) = (ListingQuorum::new(vec![NodeId(1)], 2), Instant::now());
        assert_eq!(q.poll(t0), QuorumState::Waiting(None));
        q.on_answer(NodeId(1), vec![], t0, GRACE);
        assert_eq!(q.poll(t0), QuorumState::Done);
    }

    proptest! {
        /// Whatever the order of replies: the listing is done once every node replied; before
        /// the quorum there is no deadline; every part seen is listed with only the nodes
        /// that hold its first id; silent plus replied is the node set.
        #[test]
        fn the_quorum_keeps_its_rules(
            m in 0usize..4,
            replies in proptest::collection::vec((1u32..=8, any::<bool>(), 0u64..3, 0u8..2, 0u64..100), 0..40),
        ) {
            let nodes: Vec<NodeId> = (1..=8).map(NodeId).collect();
            let (mut q, mut now) = (ListingQuorum::new(nodes.clone(), m), Instant::now());
            let mut answered: Vec<NodeId> = Vec::new();
            for (node, ok, step, hash, dt) in replies {
                now += Duration::from_millis(dt);
                let id = NodeId(node);
                let first = q.silent().contains(&id);
                if ok {
                    q.on_answer(id, vec![entry(step, 0, hash)], now, GRACE);
                    if first { answered.push(id); }
                } else {
                    q.on_error(id);
                }
                prop_assert_eq!(q.answered(), answered.as_slice());
                if answered.len() < (8 - m).max(1) && !q.silent().is_empty() {
                    prop_assert_eq!(q.poll(now), QuorumState::Waiting(None));
                }
                if q.silent().is_empty() {
                    prop_assert_eq!(q.poll(now), QuorumState::Done);
                }
            }
            let silent = q.silent();
            let listing = q.into_listing();
            for part in listing.values() {
                prop_assert!(!part.nodes.is_empty());
                prop_assert!(part.nodes.iter().all(|n| answered.contains(n) && !silent.contains(n)));
            }
        }
    }
}
