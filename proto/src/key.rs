//! Binary storage keys. Shard keys sort by (job, step, rank, object, stripe, index) and
//! manifest keys by (job, step, rank), so that every shard or manifest of one checkpoint is a
//! single contiguous key range (`CheckpointRange`).
//!
//! Layout: a one-byte table tag, then the job name and a NUL (names never hold NUL, so the
//! encoding is prefix-free and sorts like the tuple), then big-endian integers.

use serde::{Deserialize, Serialize};

use crate::access::JobRange;
use crate::ids::{JobName, ObjectName, Rank, ShardIndex, Step, StripeId, StripeIndex};

const SHARD_TAG: u8 = b'S';
const MANIFEST_TAG: u8 = b'M';
const DELETION_MARK_TAG: u8 = b'D';
/// The one key of the node's signed cluster map (a table of one row, apart from the others).
pub const CLUSTER_MAP_KEY: &[u8] = b"C";

/// The address of one shard.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardKey {
    /// The job.
    pub job: JobName,
    /// The checkpoint's step.
    pub step: Step,
    /// The writing rank.
    pub rank: Rank,
    /// The object inside the part.
    pub object: ObjectName,
    /// The stripe inside the object.
    pub stripe: StripeIndex,
    /// The shard inside the stripe.
    pub index: ShardIndex,
}

/// The address of one part's manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ManifestKey {
    /// The job.
    pub job: JobName,
    /// The checkpoint's step.
    pub step: Step,
    /// The writing rank.
    pub rank: Rank,
}

/// A half-open byte range `[start, end)` of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRange {
    /// First key in the range.
    pub start: Vec<u8>,
    /// First key past the range.
    pub end: Vec<u8>,
}

fn job_step_prefix(tag: u8, job: &JobName, step: Step) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + job.as_str().len() + 1 + 8 + 4);
    k.push(tag);
    k.extend_from_slice(job.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&step.0.to_be_bytes());
    k
}

fn job_prefix(tag: u8, job: &JobName) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(job.as_str().as_bytes());
    k.push(0);
    k
}

/// The smallest key greater than every key with this prefix (prefixes here never end in 0xff
/// bytes only, since they start with an ASCII tag).
fn prefix_end(mut p: Vec<u8>) -> Vec<u8> {
    while let Some(last) = p.pop() {
        if last < 0xff {
            p.push(last + 1);
            return p;
        }
    }
    unreachable!("prefixes start with an ASCII tag byte")
}

impl StripeId {
    /// The key of this stripe's shard `index`.
    pub fn shard(&self, index: ShardIndex) -> ShardKey {
        ShardKey {
            job: self.job.clone(),
            step: self.step,
            rank: self.rank,
            object: self.object.clone(),
            stripe: self.stripe,
            index,
        }
    }
}

impl ShardKey {
    /// The key's binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut k = job_step_prefix(SHARD_TAG, &self.job, self.step);
        k.extend_from_slice(&self.rank.0.to_be_bytes());
        k.extend_from_slice(self.object.as_str().as_bytes());
        k.push(0);
        k.extend_from_slice(&self.stripe.0.to_be_bytes());
        k.push(self.index.0);
        k
    }

    /// Decodes a key made by [`ShardKey::encode`]; `None` if `b` is not one.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(&[SHARD_TAG])?;
        let (job, rest) = split_name(rest)?;
        let (step, rest) = split_be::<8>(rest)?;
        let (rank, rest) = split_be::<4>(rest)?;
        let (object, rest) = split_name(rest)?;
        let (stripe, rest) = split_be::<4>(rest)?;
        let [index] = rest else { return None };
        Some(Self {
            job: JobName::new(job).ok()?,
            step: Step(u64::from_be_bytes(step)),
            rank: Rank(u32::from_be_bytes(rank)),
            object: ObjectName::new(object).ok()?,
            stripe: StripeIndex(u32::from_be_bytes(stripe)),
            index: ShardIndex(*index),
        })
    }

    /// The range of every shard key of checkpoint `(job, step)`.
    pub fn checkpoint_range(job: &JobName, step: Step) -> CheckpointRange {
        let start = job_step_prefix(SHARD_TAG, job, step);
        CheckpointRange { end: prefix_end(start.clone()), start }
    }

    /// The range of every shard key of a job.
    pub fn job_range(job: &JobName) -> CheckpointRange {
        let start = job_prefix(SHARD_TAG, job);
        CheckpointRange { end: prefix_end(start.clone()), start }
    }

    /// The range of every shard key of one part `(job, step, rank)`.
    pub fn part_range(part: &ManifestKey) -> CheckpointRange {
        let mut start = job_step_prefix(SHARD_TAG, &part.job, part.step);
        start.extend_from_slice(&part.rank.0.to_be_bytes());
        CheckpointRange { end: prefix_end(start.clone()), start }
    }

    /// The part `(job, step, rank)` this shard belongs to.
    pub fn part(&self) -> ManifestKey {
        ManifestKey { job: self.job.clone(), step: self.step, rank: self.rank }
    }

    /// The range of every shard key of every job.
    pub fn all_range() -> CheckpointRange {
        CheckpointRange { start: vec![SHARD_TAG], end: vec![SHARD_TAG + 1] }
    }
}

impl ManifestKey {
    /// The key's binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut k = job_step_prefix(MANIFEST_TAG, &self.job, self.step);
        k.extend_from_slice(&self.rank.0.to_be_bytes());
        k
    }

    /// Decodes a key made by [`ManifestKey::encode`]; `None` if `b` is not one.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(&[MANIFEST_TAG])?;
        let (job, rest) = split_name(rest)?;
        let (step, rest) = split_be::<8>(rest)?;
        let rank: [u8; 4] = rest.try_into().ok()?;
        Some(Self {
            job: JobName::new(job).ok()?,
            step: Step(u64::from_be_bytes(step)),
            rank: Rank(u32::from_be_bytes(rank)),
        })
    }

    /// The range of every manifest key of checkpoint `(job, step)`.
    pub fn checkpoint_range(job: &JobName, step: Step) -> CheckpointRange {
        let start = job_step_prefix(MANIFEST_TAG, job, step);
        CheckpointRange { end: prefix_end(start.clone()), start }
    }

    /// The range of every manifest key of a job.
    pub fn job_range(job: &JobName) -> CheckpointRange {
        let start = job_prefix(MANIFEST_TAG, job);
        CheckpointRange { end: prefix_end(start.clone()), start }
    }
}

/// The two tables of keys: shards and manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// [`ShardKey`]s.
    Shards,
    /// [`ManifestKey`]s.
    Manifests,
}

impl Table {
    fn tag(self) -> u8 {
        match self {
            Table::Shards => SHARD_TAG,
            Table::Manifests => MANIFEST_TAG,
        }
    }

    /// The keys of this table whose job lies in `names` and sorts after `after` (every key
    /// of the job `after` itself excluded).
    pub fn jobs_range(self, names: &JobRange, after: Option<&JobName>) -> CheckpointRange {
        let tag = self.tag();
        let mut start = vec![tag];
        start.extend_from_slice(&names.start);
        if let Some(after) = after {
            // Every key of `after` is tag, name, NUL, ...; the next job's keys sort at or
            // past tag, name, 0x01.
            let mut past = vec![tag];
            past.extend_from_slice(after.as_str().as_bytes());
            past.push(1);
            start = start.max(past);
        }
        let end = match &names.end {
            Some(e) => {
                let mut end = vec![tag];
                end.extend_from_slice(e);
                end
            }
            None => vec![tag + 1],
        };
        CheckpointRange { start, end }
    }

    /// The job name bytes a key of this table starts with (`None`: not one of its keys).
    pub fn job_of(self, key: &[u8]) -> Option<&[u8]> {
        let rest = key.strip_prefix(&[self.tag()])?;
        let nul = rest.iter().position(|&c| c == 0)?;
        Some(&rest[..nul])
    }
}

/// The address of a checkpoint's deletion mark (`MarkDeleting`): `(job, step)` in a table of
/// its own, so the checkpoint's shard and manifest ranges never hold it and its delete keeps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeletionMarkKey {
    /// The job.
    pub job: JobName,
    /// The checkpoint's step.
    pub step: Step,
}

impl DeletionMarkKey {
    /// The key's binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        job_step_prefix(DELETION_MARK_TAG, &self.job, self.step)
    }

    /// Decodes a key made by [`DeletionMarkKey::encode`]; `None` if `b` is not one.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(&[DELETION_MARK_TAG])?;
        let (job, rest) = split_name(rest)?;
        let step: [u8; 8] = rest.try_into().ok()?;
        Some(Self { job: JobName::new(job).ok()?, step: Step(u64::from_be_bytes(step)) })
    }

    /// The range of every deletion mark of a job.
    pub fn job_range(job: &JobName) -> CheckpointRange {
        let start = job_prefix(DELETION_MARK_TAG, job);
        CheckpointRange { end: prefix_end(start.clone()), start }
    }
}

fn split_name(b: &[u8]) -> Option<(String, &[u8])> {
    let nul = b.iter().position(|&c| c == 0)?;
    let name = std::str::from_utf8(&b[..nul]).ok()?.to_owned();
    Some((name, &b[nul + 1..]))
}

fn split_be<const N: usize>(b: &[u8]) -> Option<([u8; N], &[u8])> {
    if b.len() < N {
        return None;
    }
    let (head, rest) = b.split_at(N);
    Some((head.try_into().ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job() -> impl Strategy<Value = JobName> {
        "[A-Za-z0-9._-]{1,12}".prop_map(|s| JobName::new(s).expect("valid by construction"))
    }
    fn object() -> impl Strategy<Value = ObjectName> {
        "[a-z0-9. é]{1,12}"
            .prop_filter("not . or ..", |s| s != "." && s != "..")
            .prop_map(|s| ObjectName::new(s).expect("valid by construction"))
    }
    fn shard_key() -> impl Strategy<Value = ShardKey> {
        (job(), any::<u64>(), any::<u32>(), object(), any::<u32>(), any::<u8>()).prop_map(
            |(job, step, rank, object, stripe, index)| ShardKey {
                job,
                step: Step(step),
                rank: Rank(rank),
                object,
                stripe: StripeIndex(stripe),
                index: ShardIndex(index),
            },
        )
    }

    proptest! {
        #[test]
        fn shard_keys_round_trip(k in shard_key()) {
            prop_assert_eq!(ShardKey::decode(&k.encode()), Some(k));
        }

        #[test]
        fn shard_keys_sort_like_their_tuples(a in shard_key(), b in shard_key()) {
            let ta = (a.job.as_str().as_bytes(), a.step, a.rank, a.object.as_str().as_bytes(), a.stripe, a.index);
            let tb = (b.job.as_str().as_bytes(), b.step, b.rank, b.object.as_str().as_bytes(), b.stripe, b.index);
            prop_assert_eq!(a.encode().cmp(&b.encode()), ta.cmp(&tb));
        }

        #[test]
        fn a_checkpoint_is_one_range(k in shard_key(), other in shard_key()) {
            let r = ShardKey::checkpoint_range(&k.job, k.step);
            let e = k.encode();
            prop_assert!(r.start <= e && e < r.end);
            let o = other.encode();
            let inside = r.start <= o && o < r.end;
            prop_assert_eq!(inside, other.job == k.job && other.step == k.step);
            let m = ManifestKey { job: k.job.clone(), step: k.step, rank: k.rank }.encode();
            prop_assert!(!(r.start <= m && m < r.end), "manifests live in another table");
        }

        #[test]
        fn a_part_is_one_range(k in shard_key(), other in shard_key()) {
            let r = ShardKey::part_range(&k.part());
            let e = k.encode();
            prop_assert!(r.start <= e && e < r.end);
            let o = other.encode();
            let inside = r.start <= o && o < r.end;
            prop_assert_eq!(inside, other.part() == k.part());
        }

        #[test]
        fn manifest_keys_round_trip(j in job(), step in any::<u64>(), rank in any::<u32>()) {
            let k = ManifestKey { job: j, step: Step(step), rank: Rank(rank) };
            let r = ManifestKey::checkpoint_range(&k.job, k.step);
            let e = k.encode();
            prop_assert!(r.start <= e && e < r.end);
            prop_assert_eq!(ManifestKey::decode(&e), Some(k));
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ShardKey::decode(&b);
            let _ = ManifestKey::decode(&b);
            let _ = DeletionMarkKey::decode(&b);
        }

        #[test]
        fn deletion_marks_round_trip_and_stay_out_of_checkpoint_ranges(k in shard_key(), step in any::<u64>()) {
            let mark = DeletionMarkKey { job: k.job.clone(), step: Step(step) };
            let e = mark.encode();
            prop_assert_eq!(DeletionMarkKey::decode(&e), Some(mark.clone()));
            prop_assert!(ShardKey::decode(&e).is_none() && ManifestKey::decode(&e).is_none());
            let r = DeletionMarkKey::job_range(&k.job);
            prop_assert!(r.start <= e && e < r.end);
            for range in [
                ShardKey::checkpoint_range(&k.job, Step(step)),
                ManifestKey::checkpoint_range(&k.job, Step(step)),
            ] {
                prop_assert!(!(range.start <= e && e < range.end), "a delete keeps the mark");
            }
        }
    }

    proptest! {
        /// The keys a job listing seeks through hold exactly the jobs of the name range
        /// that sort after the resume point, in both tables.
        #[test]
        fn jobs_ranges_hold_the_keys_of_the_jobs_in_them(
            k in shard_key(),
            pattern in prop_oneof![
                "[A-Za-z0-9._-]{1,3}".prop_map(crate::access::JobPattern::Prefix),
                job().prop_map(crate::access::JobPattern::Exact),
                Just(crate::access::JobPattern::All),
            ],
            after in proptest::option::of(job()),
        ) {
            let names = pattern.range();
            for (table, key) in [(Table::Shards, k.encode()), (Table::Manifests, k.part().encode())] {
                let r = table.jobs_range(&names, after.as_ref());
                let inside = r.start <= key && key < r.end;
                let want = pattern.matches(&k.job) && after.as_ref().is_none_or(|a| k.job.as_str() > a.as_str());
                prop_assert_eq!(inside, want);
                prop_assert_eq!(table.job_of(&key), Some(k.job.as_str().as_bytes()));
            }
        }
    }

    #[test]
    fn job_range_does_not_catch_a_longer_job_name() {
        let a = JobName::new("job").expect("valid");
        let b = JobName::new("job2").expect("valid");
        let r = ManifestKey::job_range(&a);
        let kb = ManifestKey { job: b, step: Step(0), rank: Rank(0) }.encode();
        assert!(!(r.start <= kb && kb < r.end));
    }
}
