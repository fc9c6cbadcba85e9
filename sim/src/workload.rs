//! The workload both simulator modes save: a trial's checkpoints, their steps and their
//! seeded objects, made the same way in real mode (`real`) and fast mode (`fast`).

use std::collections::BTreeMap;

use rackpoint_client::local_cluster::seeded_bytes;
use rackpoint_proto::ObjectName;

use crate::scenario::CheckpointSpec;

/// A checkpoint part's objects, in save order: each name with its bytes.
pub type Objects = Vec<(ObjectName, Vec<u8>)>;

/// The seeded objects of one part: `spec.objects` objects splitting `spec.bytes` (the first
/// `spec.bytes % spec.objects` one byte longer), named `obj-0`, `obj-1`, ...
pub fn checkpoint_objects(spec: &CheckpointSpec, seed: u64) -> Objects {
    let n = u64::from(spec.objects);
    (0..n)
        .map(|i| {
            let len = spec.bytes / n + u64::from(i < spec.bytes % n);
            let name = ObjectName::new(format!("obj-{i}")).expect("obj-N is a valid object name");
            (name, seeded_bytes(seed ^ (i + 1).wrapping_mul(0x9E37_79B9), len as usize))
        })
        .collect()
}

/// The seed of the save a killed client interrupts (its objects differ from the baseline's,
/// so a restore that returns the wrong step is caught).
pub fn killed_save_seed(trial_seed: u64) -> u64 {
    trial_seed ^ 0xC1
}

/// One save a trial makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSave {
    /// The seed its objects come from.
    pub seed: u64,
    /// Its objects.
    pub objects: Objects,
}

/// The saves of one trial seeded `seed`, by step. Without a killed client: one save, at
/// step 1. With one: a baseline at step 1, then the save the client is killed during at
/// step 2, seeded [`killed_save_seed`]. The last step is the one the trial's save faults strike.
pub fn trial_saves(
    spec: &CheckpointSpec,
    seed: u64,
    kill_client: bool,
) -> BTreeMap<u64, PlannedSave> {
    let baseline = PlannedSave { seed, objects: checkpoint_objects(spec, seed) };
    let mut saves = BTreeMap::from([(1, baseline)]);
    if kill_client {
        let seed = killed_save_seed(seed);
        saves.insert(2, PlannedSave { seed, objects: checkpoint_objects(spec, seed) });
    }
    saves
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(bytes: u64, objects: u32) -> CheckpointSpec {
        CheckpointSpec { bytes, objects, world_size: 1, shard_size_bytes: 4096 }
    }

    proptest! {
        #[test]
        fn objects_split_the_bytes_evenly_and_are_named_in_order(
            bytes in 0u64..20_000,
            objects in 1u32..12,
            seed in any::<u64>(),
        ) {
            let got = checkpoint_objects(&spec(bytes, objects), seed);
            prop_assert_eq!(got.len(), objects as usize);
            prop_assert_eq!(got.iter().map(|(_, b)| b.len() as u64).sum::<u64>(), bytes);
            let lens: Vec<usize> = got.iter().map(|(_, b)| b.len()).collect();
            prop_assert!(lens.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1));
            for (i, (name, _)) in got.iter().enumerate() {
                prop_assert_eq!(name.as_str(), format!("obj-{i}"));
            }
        }

        #[test]
        fn the_same_seed_gives_the_same_bytes(seed in any::<u64>()) {
            let s = spec(3000, 3);
            prop_assert_eq!(checkpoint_objects(&s, seed), checkpoint_objects(&s, seed));
        }
    }

    #[test]
    fn objects_of_one_part_and_of_two_seeds_differ() {
        let s = spec(3000, 3);
        let a = checkpoint_objects(&s, 7);
        assert_ne!(a[0].1, a[1].1);
        assert_ne!(a, checkpoint_objects(&s, 8));
    }

    #[test]
    fn a_killed_client_adds_a_baseline_with_other_objects() {
        let s = spec(3000, 2);
        let plain = trial_saves(&s, 5, false);
        assert_eq!(plain.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(plain[&1].objects, checkpoint_objects(&s, 5));
        let killed = trial_saves(&s, 5, true);
        assert_eq!(killed.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(killed[&1], plain[&1]);
        assert_eq!(killed[&2].seed, killed_save_seed(5));
        assert_ne!(killed[&2].objects, killed[&1].objects);
        assert_eq!(killed[&2].objects, checkpoint_objects(&s, killed_save_seed(5)));
    }
}
