//! The engine's lifecycle operations: manifest revisions (a committed manifest is never
//! replaced by other bytes; a repair's rewrite at a higher revision must describe the same
//! content, and no older revision may overwrite it), per-part manifest delete (a failed
//! commit's rollback), per-part shard summaries with write ages and the deletion of a part's
//! orphan shards older than a grace period (garbage collection of interrupted saves).

use std::sync::atomic::Ordering;

use rackpoint_proto::failpoint;
use rackpoint_proto::limits::{MAX_LIST_ENTRIES, MAX_MANIFEST_BYTES, NODE_DELETE_BATCH_KEYS};
use rackpoint_proto::wire::PartShards;
use rackpoint_proto::{Digest, JobName, ManifestKey, Rank, ShardKey, Step};
use rocksdb::WriteBatch;

use super::{check_payload, db_error, unix_now_ms, Engine, EngineError, IndexRecord};

/// How a manifest is being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ManifestWrite {
    /// A first commit (`PutManifest`): revision 0, over nothing or the very same manifest.
    Put,
    /// A repair's rewrite (`ReplaceManifest`) at a revision, naming its part's revision 0.
    Replace {
        /// The new revision.
        revision: u32,
        /// The id of the part's revision 0.
        base: Digest,
    },
}

impl ManifestWrite {
    fn revision(self) -> u32 {
        match self {
            ManifestWrite::Put => 0,
            ManifestWrite::Replace { revision, .. } => revision,
        }
    }

    /// The chain id the written manifest answers to (a first commit is its own).
    fn base(self, hash: Digest) -> Digest {
        match self {
            ManifestWrite::Put => hash,
            ManifestWrite::Replace { base, .. } => base,
        }
    }
}

/// Whether a manifest write (of `world_size` and id `hash`) may go over what is stored, as
/// far as the index records tell:
/// - over nothing, always;
/// - a put, only over the very same manifest (revision 0, same id and world size): a
///   committed manifest is never replaced by other bytes, and a put never undoes a repair;
/// - a rewrite, only over the same part (same chain id and world size) at a lower revision,
///   or the very same rewrite again; its content is then compared by the caller's check
///   (see [`Engine::replace_manifest`]). Anything else would let an older or rival rewrite
///   win.
fn manifest_write_allowed(
    stored: Option<&IndexRecord>,
    (world_size, hash): (u32, Digest),
    write: ManifestWrite,
) -> Result<(), EngineError> {
    let revision = write.revision();
    let Some(s) = stored else { return Ok(()) };
    let holds = format!("holds revision {} ({}, world size {})", s.revision, s.hash, s.world_size);
    let refuse = |why: &str| {
        Err(EngineError::Conflict {
            reason: format!(
                "{holds}; refused revision {revision} ({hash}, world size {world_size}): {why}"
            ),
        })
    };
    if s.world_size != world_size {
        return refuse("another world size");
    }
    match write {
        ManifestWrite::Put if s.revision > 0 => refuse("a put never undoes a repair"),
        ManifestWrite::Put if s.hash != hash => {
            refuse("a committed manifest is never replaced by other bytes")
        }
        ManifestWrite::Put => Ok(()),
        ManifestWrite::Replace { base, .. } if base != s.base => {
            refuse(&format!("it names chain id {base}, the part's is {}", s.base))
        }
        ManifestWrite::Replace { .. } if s.revision < revision => Ok(()),
        ManifestWrite::Replace { .. } if s.revision == revision && s.hash == hash => Ok(()),
        ManifestWrite::Replace { .. } if s.revision == revision => {
            refuse("a rival rewrite at the same revision")
        }
        ManifestWrite::Replace { .. } => refuse("an older revision"),
    }
}

/// A check of a repair's rewrite against the bytes of the manifest a node holds of the part:
/// `Err(why)` when the rewrite does not describe the same content.
pub type ContentCheck<'a> = &'a dyn Fn(&[u8]) -> Result<(), String>;

/// One page of a job's part summaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartsPage {
    /// Entries in (step, rank) order.
    pub entries: Vec<PartShards>,
    /// Whether more entries follow the last one.
    pub more: bool,
}

/// What deleting a part's orphans did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrphanSweep {
    /// Shards removed.
    pub shards: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Shards kept because they were written less than the grace period ago.
    pub kept_young: u64,
}

/// Accumulates consecutive shard records of one part into a [`PartShards`].
fn add_to(entry: &mut PartShards, record: &IndexRecord, now_ms: u64) {
    entry.shards += 1;
    entry.bytes += u64::from(record.len);
    entry.newest_age_ms = entry.newest_age_ms.min(now_ms.saturating_sub(record.written_at_ms));
}

impl Engine {
    /// Checks and stores a manifest under the rule of [`manifest_write_allowed`]; a rewrite
    /// that changes the bytes held must also pass `same_content` on them. Both happen under
    /// the key's lock, so nothing lands between the check and the write.
    pub(super) fn store_manifest(
        &self,
        key: &ManifestKey,
        (world_size, hash): (u32, Digest),
        bytes: &[u8],
        write: ManifestWrite,
        same_content: Option<ContentCheck<'_>>,
    ) -> Result<(), EngineError> {
        check_payload("manifest", bytes, MAX_MANIFEST_BYTES, hash)?;
        let k = key.encode();
        let _shared = self.delete_lock.read().unwrap_or_else(|p| p.into_inner());
        let _key = self.lock_key(&k);
        if self.is_marked_deleting(&key.job, key.step)? {
            return Err(EngineError::Conflict {
                reason: format!(
                    "step {} of job {} is being deleted (this node holds its deletion mark): no \
                     manifest of it is stored until the deletion finishes (rackpoint gc, rm or \
                     repair); save another step",
                    key.step, key.job
                ),
            });
        }
        let stored = self.read_record(&k)?;
        manifest_write_allowed(stored.as_ref(), (world_size, hash), write)?;
        if let (Some(held), Some(check)) = (stored.filter(|s| s.hash != hash), same_content) {
            let (_, held_bytes) = self.read_verified(&k, false)?;
            check(&held_bytes).map_err(|why| EngineError::Conflict {
                reason: format!(
                    "holds revision {} ({}); refused revision {} ({hash}): {why}",
                    held.revision,
                    held.hash,
                    write.revision()
                ),
            })?;
        }
        let (revision, base) = (write.revision(), write.base(hash));
        let record = IndexRecord::manifest(bytes.len() as u32, world_size, hash, revision, base);
        failpoint::hit("node.manifest_write.before");
        self.write(self.put_batch(&k, &record, bytes))?;
        failpoint::hit("node.manifest_write.after");
        if stored.is_none() {
            self.counters.manifests.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Stores a repair's rewrite of a manifest at `revision` (`base`: the id of the part's
    /// revision 0). Over nothing it is kept as is (a repair's new holder). Over a manifest of
    /// the part it is kept only at a higher revision, with the same chain id and world size,
    /// and when `same_content(held bytes)` accepts it (only where shards live may change);
    /// the very same rewrite again succeeds; anything else is `Conflict`, nothing changed.
    /// Durable on return.
    pub fn replace_manifest(
        &self,
        key: &ManifestKey,
        (world_size, hash): (u32, Digest),
        (revision, base): (u32, Digest),
        bytes: &[u8],
        same_content: ContentCheck<'_>,
    ) -> Result<(), EngineError> {
        let write = ManifestWrite::Replace { revision, base };
        self.store_manifest(key, (world_size, hash), bytes, write, Some(same_content))
    }

    /// Deletes a part's manifest (only if its id is `expect`, when given); returns whether
    /// there was one. Deleting a missing manifest succeeds. Durable on return.
    pub fn delete_manifest(
        &self,
        key: &ManifestKey,
        expect: Option<Digest>,
    ) -> Result<bool, EngineError> {
        let deleted = self.delete_key_if(&key.encode(), "manifest", expect)?;
        if deleted.is_some() {
            self.counters.manifests.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(deleted.is_some())
    }

    /// Deletes one shard if its stored hash is `expect` (another version stays: `Conflict`);
    /// returns whether there was one. Durable on return.
    pub fn delete_shard(&self, key: &ShardKey, expect: Digest) -> Result<bool, EngineError> {
        let Some(stored) = self.delete_key_if(&key.encode(), "shard", Some(expect))? else {
            return Ok(false);
        };
        self.counters.shards_removed(&key.job, 1, u64::from(stored.len));
        self.free_segment_bytes(key, &stored);
        self.remove_segment_if_empty(&key.job, key.step)?;
        Ok(true)
    }

    /// Deletes key `k` (index record and bytes, one synced batch) if it is stored, and only
    /// if its hash is `expect` when given (another version stays: `Conflict`, naming `what`).
    /// Returns the record deleted; the caller adjusts the counters.
    fn delete_key_if(
        &self,
        k: &[u8],
        what: &str,
        expect: Option<Digest>,
    ) -> Result<Option<IndexRecord>, EngineError> {
        let _shared = self.delete_lock.read().unwrap_or_else(|p| p.into_inner());
        let _key = self.lock_key(k);
        let Some(stored) = self.read_record(k)? else { return Ok(None) };
        if let Some(want) = expect.filter(|h| *h != stored.hash) {
            let reason = format!("holds {what} {}, not {want}", stored.hash);
            return Err(EngineError::Conflict { reason });
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index_cf(), k);
        batch.delete_cf(self.data_cf(), k);
        self.write(batch)?;
        Ok(Some(stored))
    }

    /// Up to `limit` (capped at `MAX_LIST_ENTRIES`) summaries of the parts of `job` that
    /// have shards here, in (step, rank) order, starting after part `after`. Reads only
    /// the index (keys and small records).
    pub fn list_parts(
        &self,
        job: &JobName,
        after: Option<(Step, Rank)>,
        limit: u32,
    ) -> Result<PartsPage, EngineError> {
        let limit = limit.min(MAX_LIST_ENTRIES) as usize;
        let range = ShardKey::job_range(job);
        let start = match after {
            Some((step, rank)) => {
                ShardKey::part_range(&ManifestKey { job: job.clone(), step, rank }).end
            }
            None => range.start.clone(),
        };
        let now_ms = unix_now_ms();
        let mut entries: Vec<PartShards> = Vec::new();
        for item in self.index_iter(&start, &range.end) {
            let (raw_key, value) = item.map_err(db_error)?;
            let Some(key) = ShardKey::decode(&raw_key) else { continue };
            let record = IndexRecord::decode(&value)?;
            if let Some(e) = entries.last_mut().filter(|e| (e.step, e.rank) == (key.step, key.rank))
            {
                add_to(e, &record, now_ms);
                continue;
            }
            if entries.len() == limit {
                return Ok(PartsPage { entries, more: true });
            }
            let mut e = PartShards {
                step: key.step,
                rank: key.rank,
                shards: 0,
                bytes: 0,
                newest_age_ms: u64::MAX,
            };
            add_to(&mut e, &record, now_ms);
            entries.push(e);
        }
        Ok(PartsPage { entries, more: false })
    }

    /// Deletes the shards of part `part` written at least `min_age_ms` ago, in synced
    /// batches; refuses (`Conflict`, nothing deleted by that batch) once this node holds a
    /// manifest of the part, since a committed part has no orphans. Its key range is
    /// compacted afterwards so that the space returns.
    pub fn delete_orphan_shards(
        &self,
        part: &ManifestKey,
        min_age_ms: u64,
    ) -> Result<OrphanSweep, EngineError> {
        let range = ShardKey::part_range(part);
        let mut sweep = OrphanSweep::default();
        let mut cursor = range.start.clone();
        loop {
            let (batch_sweep, next) =
                self.delete_orphan_batch(part, &cursor, &range.end, min_age_ms)?;
            sweep.shards += batch_sweep.shards;
            sweep.bytes += batch_sweep.bytes;
            sweep.kept_young += batch_sweep.kept_young;
            match next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        if sweep.shards > 0 {
            self.db.compact_range_cf(self.data_cf(), Some(&range.start), Some(&range.end));
            self.db.compact_range_cf(self.index_cf(), Some(&range.start), Some(&range.end));
            self.remove_segment_if_empty(&part.job, part.step)?;
        }
        Ok(sweep)
    }

    /// One batch of [`Engine::delete_orphan_shards`] from `start`: the sweep and where the
    /// next batch starts (`None` at the end of the part). Holds the delete lock, so the
    /// counts are exact and no manifest of the part lands in between.
    fn delete_orphan_batch(
        &self,
        part: &ManifestKey,
        start: &[u8],
        end: &[u8],
        min_age_ms: u64,
    ) -> Result<(OrphanSweep, Option<Vec<u8>>), EngineError> {
        let _exclusive = self.delete_lock.write().unwrap_or_else(|p| p.into_inner());
        if self.read_record(&part.encode())?.is_some() {
            let reason = format!("holds a manifest of step {} rank {}", part.step, part.rank);
            return Err(EngineError::Conflict { reason });
        }
        let now_ms = unix_now_ms();
        let (mut sweep, mut batch, mut seen) = (OrphanSweep::default(), WriteBatch::default(), 0);
        let (mut next, mut deleted) = (None, Vec::new());
        for item in self.index_iter(start, end) {
            let (key, value) = item.map_err(db_error)?;
            if seen == NODE_DELETE_BATCH_KEYS {
                next = Some(key.to_vec());
                break;
            }
            seen += 1;
            // An unreadable record is deleted with its shard: nothing could serve it.
            let record = IndexRecord::decode(&value).ok();
            let age = now_ms.saturating_sub(record.map_or(0, |r| r.written_at_ms));
            if age < min_age_ms {
                sweep.kept_young += 1;
                continue;
            }
            batch.delete_cf(self.index_cf(), &key);
            batch.delete_cf(self.data_cf(), &key);
            sweep.shards += 1;
            sweep.bytes += record.map_or(0, |r| u64::from(r.len));
            if let (Some(shard), Some(record)) = (ShardKey::decode(&key), record) {
                deleted.push((shard, record));
            }
        }
        if sweep.shards > 0 {
            self.write(batch)?;
            self.counters.shards_removed(&part.job, sweep.shards, sweep.bytes);
        }
        for (shard, record) in &deleted {
            self.free_segment_bytes(shard, record);
        }
        Ok((sweep, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{blake3_digest, EngineCounts, EngineOptions};
    use rackpoint_proto::{ObjectName, ShardIndex, StripeIndex};

    fn job() -> JobName {
        JobName::new("job").expect("valid")
    }

    fn part(step: u64, rank: u32) -> ManifestKey {
        ManifestKey { job: job(), step: Step(step), rank: Rank(rank) }
    }

    fn shard(step: u64, rank: u32, stripe: u32) -> ShardKey {
        ShardKey {
            job: job(),
            step: Step(step),
            rank: Rank(rank),
            object: ObjectName::new("o").expect("valid"),
            stripe: StripeIndex(stripe),
            index: ShardIndex(0),
        }
    }

    fn open(dir: &std::path::Path) -> Engine {
        Engine::open(dir, EngineOptions::default()).expect("opens")
    }

    fn put(e: &Engine, key: &ShardKey, len: usize) {
        let b = vec![key.stripe.0 as u8; len];
        e.put_shard(key, blake3_digest(&b), &b).expect("put");
    }

    /// Stores manifest bytes `b` at `revision` (0: a put; else a rewrite naming the chain id
    /// of `b"first"`, whose content check passes).
    fn put_manifest(
        e: &Engine,
        key: &ManifestKey,
        b: &[u8],
        revision: u32,
    ) -> Result<(), EngineError> {
        match revision {
            0 => e.put_manifest(key, 1, blake3_digest(b), b),
            r => {
                let chain = (r, blake3_digest(b"first"));
                e.replace_manifest(key, (1, blake3_digest(b)), chain, b, &|_| Ok(()))
            }
        }
    }

    #[test]
    fn the_revision_rule() {
        let h = |b: &[u8]| blake3_digest(b);
        let stored = IndexRecord::manifest(1, 1, h(b"a"), 1, h(b"base"));
        let replace = |revision| ManifestWrite::Replace { revision, base: h(b"base") };
        let ok = |write, hash| manifest_write_allowed(Some(&stored), (1, hash), write).is_ok();
        assert!(manifest_write_allowed(None, (1, h(b"x")), replace(3)).is_ok());
        assert!(manifest_write_allowed(None, (1, h(b"x")), ManifestWrite::Put).is_ok());
        assert!(ok(replace(2), h(b"b")), "a higher revision replaces (its content checked next)");
        assert!(ok(replace(1), h(b"a")), "the same bytes again");
        assert!(!ok(replace(1), h(b"b")), "a rival rewrite at the same revision");
        assert!(!ok(replace(0), h(b"b")), "an older revision");
        assert!(!ok(ManifestWrite::Put, h(b"b")), "a put never undoes a repair");
        assert!(!ok(ManifestWrite::Put, h(b"a")), "not even with the same bytes");
        let other_chain = ManifestWrite::Replace { revision: 2, base: h(b"other") };
        assert!(!ok(other_chain, h(b"b")), "a rewrite of another chain");
        let resized = manifest_write_allowed(Some(&stored), (2, h(b"b")), replace(2));
        assert!(resized.is_err(), "a rewrite of another world size");
        let committed = IndexRecord::manifest(1, 1, h(b"a"), 0, h(b"a"));
        let put = |(world_size, hash)| {
            manifest_write_allowed(Some(&committed), (world_size, hash), ManifestWrite::Put)
        };
        assert!(put((1, h(b"a"))).is_ok(), "the same commit again");
        let err = put((1, h(b"b"))).expect_err("other bytes over a committed manifest");
        assert!(err.to_string().contains("never replaced by other bytes"), "{err}");
        assert!(put((2, h(b"a"))).is_err(), "the same bytes with another world size");
        let rewrite = ManifestWrite::Replace { revision: 1, base: h(b"a") };
        assert!(manifest_write_allowed(Some(&committed), (1, h(b"b")), rewrite).is_ok());
    }

    #[test]
    fn repaired_manifests_are_listed_with_their_revision_and_never_downgraded() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path());
        put_manifest(&e, &part(1, 0), b"first", 0).expect("put");
        put_manifest(&e, &part(1, 0), b"repaired", 1).expect("replace");
        let err = put_manifest(&e, &part(1, 0), b"first", 0).expect_err("no downgrade");
        assert!(matches!(err, EngineError::Conflict { .. }), "{err}");
        put_manifest(&e, &part(1, 0), b"repaired", 1).expect("the same rewrite again");
        let listed = e.list_manifests(&job(), None, 10).expect("list").entries;
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].revision, listed[0].hash), (1, blake3_digest(b"repaired")));
        assert_eq!(listed[0].base, blake3_digest(b"first"), "the chain id is kept");
        assert_eq!(e.get_manifest(&part(1, 0)).expect("get").bytes, b"repaired");
        assert_eq!(e.counts().manifests, 1);
    }

    #[test]
    fn a_committed_manifest_is_never_replaced_by_other_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path());
        put_manifest(&e, &part(1, 0), b"first", 0).expect("put");
        put_manifest(&e, &part(1, 0), b"first", 0).expect("the same commit again");
        let err = put_manifest(&e, &part(1, 0), b"swapped", 0).expect_err("other bytes");
        assert!(matches!(err, EngineError::Conflict { .. }), "{err}");
        assert_eq!(e.get_manifest(&part(1, 0)).expect("get").bytes, b"first");
        let listed = e.list_manifests(&job(), None, 10).expect("list").entries;
        assert_eq!((listed[0].revision, listed[0].hash), (0, blake3_digest(b"first")));
        assert_eq!(e.counts().manifests, 1);
    }

    /// A rewrite of part (1, 0) to bytes `b` at `revision`, checked by `check`.
    fn rewrite(
        e: &Engine,
        b: &[u8],
        revision: u32,
        check: ContentCheck<'_>,
    ) -> Result<(), EngineError> {
        let chain = (revision, blake3_digest(b"first"));
        e.replace_manifest(&part(1, 0), (1, blake3_digest(b)), chain, b, check)
    }

    #[test]
    fn a_rewrite_over_a_held_manifest_must_pass_the_content_check() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path());
        let seen = std::cell::RefCell::new(Vec::new());
        let refuse = |held: &[u8]| -> Result<(), String> {
            seen.borrow_mut().push(held.to_vec());
            Err("describes other content".to_owned())
        };
        rewrite(&e, b"first", 0, &refuse).expect("a new holder takes a rewrite unchecked");
        assert!(seen.borrow().is_empty(), "nothing held, nothing to compare");
        rewrite(&e, b"first", 0, &refuse).expect("the very same bytes need no check");
        let err = rewrite(&e, b"swapped", 1, &refuse).expect_err("the check refuses");
        assert!(matches!(err, EngineError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("describes other content"), "{err}");
        assert_eq!(*seen.borrow(), [b"first".to_vec()], "the check saw the bytes held");
        assert_eq!(e.get_manifest(&part(1, 0)).expect("get").bytes, b"first", "nothing changed");
        rewrite(&e, b"moved", 1, &|_| Ok(())).expect("a rewrite the check accepts");
        let listed = e.list_manifests(&job(), None, 10).expect("list").entries;
        assert_eq!((listed[0].revision, listed[0].hash), (1, blake3_digest(b"moved")));
        assert_eq!(e.counts().manifests, 1);
    }

    #[test]
    fn delete_manifest_is_idempotent_and_guarded_by_its_id() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path());
        put_manifest(&e, &part(1, 0), b"m", 0).expect("put");
        put_manifest(&e, &part(1, 1), b"n", 0).expect("put");
        let err = e.delete_manifest(&part(1, 0), Some(blake3_digest(b"other")));
        assert!(matches!(err, Err(EngineError::Conflict { .. })), "{err:?}");
        assert!(e.delete_manifest(&part(1, 0), Some(blake3_digest(b"m"))).expect("deletes"));
        assert!(!e.delete_manifest(&part(1, 0), None).expect("again: nothing to delete"));
        assert!(matches!(e.get_manifest(&part(1, 0)), Err(EngineError::NotFound)));
        assert!(e.get_manifest(&part(1, 1)).is_ok(), "the other rank's part stays");
        assert_eq!(e.counts().manifests, 1);
        drop(e);
        assert_eq!(open(dir.path()).counts().manifests, 1, "the reopen scan agrees");
    }

    #[test]
    fn parts_are_summarised_in_pages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path());
        for (step, rank, stripes) in [(1, 0, 3), (1, 1, 2), (2, 0, 1), (3, 0, 4)] {
            for stripe in 0..stripes {
                put(&e, &shard(step, rank, stripe), 100);
            }
        }
        let other = ShardKey { job: JobName::new("job2").expect("valid"), ..shard(1, 0, 0) };
        put(&e, &other, 10);
        let page = e.list_parts(&job(), None, 2).expect("list");
        let got: Vec<_> =
            page.entries.iter().map(|p| (p.step.0, p.rank.0, p.shards, p.bytes)).collect();
        assert_eq!(got, [(1, 0, 3, 300), (1, 1, 2, 200)]);
        assert!(page.more);
        assert!(page.entries.iter().all(|p| p.newest_age_ms < 600_000), "{page:?}");
        let page = e.list_parts(&job(), Some((Step(1), Rank(1))), 10).expect("list");
        let got: Vec<_> = page.entries.iter().map(|p| (p.step.0, p.shards)).collect();
        assert_eq!((got, page.more), (vec![(2, 1), (3, 4)], false));
    }

    #[test]
    fn orphans_are_deleted_only_past_the_grace_and_never_beside_a_manifest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path());
        for stripe in 0..(NODE_DELETE_BATCH_KEYS as u32 + 5) {
            put(&e, &shard(1, 0, stripe), 64);
        }
        put(&e, &shard(1, 1, 0), 64);
        let young = e.delete_orphan_shards(&part(1, 0), u64::MAX).expect("sweep");
        let all = NODE_DELETE_BATCH_KEYS as u64 + 5;
        assert_eq!(young, OrphanSweep { shards: 0, bytes: 0, kept_young: all });
        put_manifest(&e, &part(1, 1), b"committed", 0).expect("put");
        let err = e.delete_orphan_shards(&part(1, 1), 0).expect_err("a committed part");
        assert!(matches!(err, EngineError::Conflict { .. }), "{err}");
        let swept = e.delete_orphan_shards(&part(1, 0), 0).expect("sweep");
        assert_eq!(swept, OrphanSweep { shards: all, bytes: all * 64, kept_young: 0 });
        assert_eq!(e.counts(), EngineCounts { shards: 1, shard_bytes: 64, manifests: 1 });
        assert!(e.get_shard(&shard(1, 1, 0)).is_ok(), "the committed part's shard stays");
        assert!(e
            .list_parts(&job(), None, 10)
            .expect("list")
            .entries
            .iter()
            .all(|p| p.rank.0 == 1));
    }
}
