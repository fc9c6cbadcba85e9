//! The retention rule of `gc` and `keep_last`, pure: "keep the newest `keep` complete
//! checkpoints" over a settled listing. A step is complete as `list` and `latest` say
//! ([`checkpoint_choice::step_is_complete`]); every listed step older than the oldest one
//! kept is deleted, complete or not; a step newer than it (a save still being written, say)
//! is never deleted; nothing is deleted while fewer than `keep` steps are complete, and
//! `keep == 0` deletes nothing. Steps being deleted are neither kept nor deleted anew
//! ([`plan`]): their pending delete is finished separately.

use rackpoint_proto::Step;

use crate::checkpoint_choice::{by_step, step_is_complete};
use crate::listing::{JobListing, Listing};

/// What the rule keeps and deletes, each oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    /// The complete checkpoints kept by the rule (all of them when nothing is deleted).
    pub kept: Vec<Step>,
    /// The steps to delete.
    pub deleted: Vec<Step>,
}

/// The rule over `listing`'s steps not being deleted (see the module doc).
pub fn plan(listing: &JobListing, keep: usize) -> Retention {
    let live: Listing = listing
        .iter()
        .filter(|((s, _), _)| !listing.is_deleting(*s))
        .map(|(k, p)| (*k, p.clone()))
        .collect();
    let (kept, deleted) = retention(&live, keep);
    Retention { kept, deleted }
}

/// The steps to delete under "keep the newest `keep` complete checkpoints" over every step of
/// `listing`: every listed step older than the oldest one kept; nothing while fewer than
/// `keep` are complete. Returns (kept, deleted), oldest first.
pub fn retention(listing: &Listing, keep: usize) -> (Vec<Step>, Vec<Step>) {
    let steps = by_step(listing);
    let complete: Vec<Step> =
        steps.iter().filter(|(_, parts)| step_is_complete(parts)).map(|(s, _)| *s).collect();
    if keep == 0 || complete.len() < keep {
        return (complete, Vec::new());
    }
    let kept = complete[complete.len() - keep..].to_vec();
    let oldest_kept = kept[0];
    let deleted = steps.keys().copied().filter(|s| *s < oldest_kept).collect();
    (kept, deleted)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use rackpoint_proto::{Digest, NodeId, Rank};

    use super::*;
    use crate::listing::PartEntry;

    fn listing(parts: &[(u64, u32, u32)]) -> Listing {
        parts
            .iter()
            .map(|&(step, rank, world_size)| {
                let entry = PartEntry {
                    world_size,
                    hash: Digest::default(),
                    nodes: vec![NodeId(1)],
                    revision: 0,
                    base: Digest::default(),
                    others: Vec::new(),
                    dispute: None,
                };
                ((Step(step), Rank(rank)), entry)
            })
            .collect()
    }

    #[test]
    fn retention_keeps_the_newest_complete_checkpoints() {
        // Steps 10, 20, 40 complete; 30 missing rank 1; 50 still being written.
        let l = listing(&[
            (10, 0, 2),
            (10, 1, 2),
            (20, 0, 2),
            (20, 1, 2),
            (30, 0, 2),
            (40, 0, 2),
            (40, 1, 2),
            (50, 1, 2),
        ]);
        let (kept, deleted) = retention(&l, 2);
        assert_eq!(kept, [Step(20), Step(40)]);
        assert_eq!(deleted, [Step(10)], "incomplete 30 and 50 are newer than the oldest kept");
        let (kept, deleted) = retention(&l, 1);
        assert_eq!((kept, deleted), (vec![Step(40)], vec![Step(10), Step(20), Step(30)]));
        let (_, deleted) = retention(&l, 3);
        assert!(deleted.is_empty(), "exactly three are complete: keep all");
        let (_, deleted) = retention(&l, 4);
        assert!(deleted.is_empty(), "fewer complete than asked: delete nothing");
        assert!(retention(&l, 0).1.is_empty(), "0 keeps everything");
    }

    #[test]
    fn a_step_being_deleted_is_neither_kept_nor_deleted_again() {
        let parts = listing(&[(10, 0, 1), (20, 0, 1), (30, 0, 1)]);
        let deleting = BTreeMap::from([(Step(30), vec![NodeId(2)])]);
        let l = JobListing { parts, deleting, unseen: Vec::new() };
        let r = plan(&l, 1);
        assert_eq!(r, Retention { kept: vec![Step(20)], deleted: vec![Step(10)] });
    }

    #[test]
    fn a_step_has_the_largest_world_size_its_parts_name_as_for_latest() {
        // Rank 0 says one part, rank 1 says three: two of three parts, not complete (as
        // `latest` and `list` judge it), so not counted as a checkpoint kept.
        let l = listing(&[(10, 0, 1), (20, 0, 1), (20, 1, 3), (30, 0, 1)]);
        assert_eq!(retention(&l, 2), (vec![Step(10), Step(30)], vec![]));
        assert_eq!(retention(&l, 1), (vec![Step(30)], vec![Step(10), Step(20)]));
    }

    proptest! {
        /// For any listing and `keep`: the newest complete step is never deleted; `keep`
        /// complete steps are kept whenever that many exist (and then only those are kept),
        /// else nothing is deleted; no step newer than the oldest kept is deleted, so no step
        /// newer than the newest complete one either; every older step is deleted, complete
        /// or not; kept and deleted never meet, and every step named is listed.
        #[test]
        fn retention_keeps_its_promises(
            parts in proptest::collection::vec((1u64..12, 0u32..3, 1u32..4), 0..30),
            keep in 0usize..5,
        ) {
            let l = listing(&parts);
            let (kept, deleted) = retention(&l, keep);
            let steps = by_step(&l);
            let complete: Vec<Step> =
                steps.iter().filter(|(_, p)| step_is_complete(p)).map(|(s, _)| *s).collect();
            prop_assert!(kept.iter().chain(&deleted).all(|s| steps.contains_key(s)));
            prop_assert!(kept.iter().all(|s| complete.contains(s) && !deleted.contains(s)));
            prop_assert!(kept.windows(2).all(|w| w[0] < w[1]) && deleted.windows(2).all(|w| w[0] < w[1]));
            if let Some(newest) = complete.last() {
                prop_assert!(!deleted.contains(newest));
                prop_assert!(deleted.iter().all(|s| s < newest));
            }
            if keep == 0 || complete.len() < keep {
                prop_assert!(deleted.is_empty());
                prop_assert_eq!(&kept, &complete);
            } else {
                prop_assert_eq!(&kept[..], &complete[complete.len() - keep..]);
                let oldest_kept = kept[0];
                let older: Vec<Step> = steps.keys().copied().filter(|s| *s < oldest_kept).collect();
                prop_assert_eq!(deleted, older);
            }
        }
    }
}
