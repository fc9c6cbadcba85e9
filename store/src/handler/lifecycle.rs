//! Handling of the lifecycle requests (issue 10): `VerifyShard`, `DeleteManifest`,
//! `ReplaceManifest`, `ListParts`, `DeleteOrphanShards`, `DeleteShard`.

use bytes::Bytes;
use rackpoint_core::manifest::Manifest;
use rackpoint_proto::{Digest, JobName, ManifestKey, Rank, Response, ShardKey, Step};

use super::{blocking, Handler, Reply, RequestError};
use crate::stats::FoundBy;

impl Handler {
    pub(super) async fn verify_shard(&self, key: ShardKey) -> Result<Reply, RequestError> {
        let (engine, k) = (self.engine.clone(), key.clone());
        let result = blocking(move || engine.verify_shard(&k)).await;
        if let Some(reason) = result.as_ref().err().and_then(RequestError::corruption) {
            self.counters.report_corrupt(&key, FoundBy::Verify, reason);
        }
        let shard = result?;
        Ok(Reply::bare(Response::ShardVerified { hash: shard.hash, len: shard.len }))
    }

    pub(super) async fn delete_manifest(
        &self,
        key: ManifestKey,
        hash: Option<Digest>,
    ) -> Result<Reply, RequestError> {
        let engine = self.engine.clone();
        let existed = blocking(move || engine.delete_manifest(&key, hash)).await?;
        Ok(Reply::bare(Response::ManifestDeleted { existed }))
    }

    pub(super) async fn delete_shard(
        &self,
        key: ShardKey,
        hash: Digest,
    ) -> Result<Reply, RequestError> {
        let (engine, k) = (self.engine.clone(), key.clone());
        let existed = blocking(move || engine.delete_shard(&k, hash)).await?;
        self.policy.quotas.forget(&key.job);
        if existed {
            self.counters.forget_corrupt_where(|c| *c == key);
            tracing::debug!(shard = ?key, "shard deleted (moved elsewhere by a repair)");
        }
        Ok(Reply::bare(Response::ShardDeleted { existed }))
    }

    pub(super) async fn replace_manifest(
        &self,
        key: ManifestKey,
        identity: (u32, Digest),
        revision: (u32, Digest),
        payload: Bytes,
    ) -> Result<Reply, RequestError> {
        let engine = self.engine.clone();
        let store = move || {
            let check = |held: &[u8]| same_content(held, &payload, identity.0);
            engine.replace_manifest(&key, identity, revision, &payload, &check)
        };
        blocking(store).await?;
        Ok(Reply::bare(Response::ManifestStored))
    }

    pub(super) async fn list_parts(
        &self,
        job: JobName,
        after: Option<(Step, Rank)>,
        limit: u32,
    ) -> Result<Reply, RequestError> {
        let engine = self.engine.clone();
        let page = blocking(move || engine.list_parts(&job, after, limit)).await?;
        Ok(Reply::bare(Response::Parts { entries: page.entries, more: page.more }))
    }

    pub(super) async fn delete_orphan_shards(
        &self,
        key: ManifestKey,
        min_age_ms: u64,
    ) -> Result<Reply, RequestError> {
        let (engine, k) = (self.engine.clone(), key.clone());
        let sweep = blocking(move || engine.delete_orphan_shards(&k, min_age_ms)).await?;
        self.policy.quotas.forget(&key.job);
        if sweep.shards > 0 {
            let (engine, part) = (self.engine.clone(), key.clone());
            // Forget the corrupt shards of the part that are gone (the young ones stay).
            let gone =
                move |k: &ShardKey| k.part() == part && matches!(engine.shard_len(k), Ok(None));
            self.counters.forget_corrupt_where(gone);
        }
        tracing::info!(
            job = %key.job, step = %key.step, rank = %key.rank, shards = sweep.shards,
            bytes = sweep.bytes, kept_young = sweep.kept_young, "deleted orphan shards"
        );
        Ok(Reply::bare(Response::OrphansDeleted {
            shards: sweep.shards,
            bytes: sweep.bytes,
            kept_young: sweep.kept_young,
        }))
    }
}

/// Whether `new`, a repair's rewrite of world size `world_size`, describes the same content
/// as `held`, the manifest this node holds of the part (only where shards live may differ):
/// both are parsed by the reader's own rules (bounded by `MAX_MANIFEST_BYTES`, which both
/// were checked against when written), and a rewrite that cannot be compared is refused.
fn same_content(held: &[u8], new: &[u8], world_size: u32) -> Result<(), String> {
    let new = Manifest::from_bytes(new)
        .map_err(|e| format!("the rewrite is not a valid manifest ({e})"))?;
    if new.world_size != world_size {
        return Err(format!(
            "the rewrite says world size {} but was sent as {world_size}",
            new.world_size
        ));
    }
    let held = Manifest::from_bytes(held).map_err(|e| {
        format!("the manifest held is not valid ({e}), so no rewrite can be checked against it")
    })?;
    held.same_content(&new).map_err(|e| {
        format!("the rewrite changes what the part holds, not only where its shards live: {e}")
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rackpoint_core::manifest::{CodeSpec, ObjectEntry, ShardEntry, StripeEntry};
    use rackpoint_proto::{CodeParams, NodeId, ObjectName};

    use super::*;

    fn manifest() -> Manifest {
        let shards = (0..3u8)
            .map(|i| ShardEntry { node: NodeId(u32::from(i) + 1), hash: Digest([i; 32]) })
            .collect();
        Manifest {
            format_version: rackpoint_core::manifest::MANIFEST_FORMAT_VERSION,
            job: JobName::new("job").expect("valid"),
            step: Step(5),
            rank: Rank(0),
            world_size: 1,
            writer: "w".into(),
            code: CodeSpec::for_params(CodeParams::new(2, 1, 64).expect("valid")),
            objects: vec![ObjectEntry {
                name: ObjectName::new("o").expect("valid"),
                len: 100,
                hash: Digest([9; 32]),
                stripes: vec![StripeEntry { shards }],
            }],
            user_meta: BTreeMap::new(),
            prev: None,
        }
    }

    #[test]
    fn only_a_change_of_placement_passes() {
        let held = manifest();
        let mut moved = held.clone();
        moved.objects[0].stripes[0].shards[1].node = NodeId(7);
        assert_eq!(same_content(&held.to_bytes(), &moved.to_bytes(), 1), Ok(()));
        let mut swapped = moved.clone();
        swapped.objects[0].hash = Digest([8; 32]);
        let err = same_content(&held.to_bytes(), &swapped.to_bytes(), 1).expect_err("content");
        assert!(err.contains("object 0 (o) differs in its hash"), "{err}");
        let err = same_content(&held.to_bytes(), &moved.to_bytes(), 2).expect_err("world size");
        assert!(err.contains("world size 1 but was sent as 2"), "{err}");
        let err = same_content(&held.to_bytes(), b"garbage", 1).expect_err("unparsable");
        assert!(err.contains("not a valid manifest"), "{err}");
        let err = same_content(b"garbage", &moved.to_bytes(), 1).expect_err("held unparsable");
        assert!(err.contains("manifest held is not valid"), "{err}");
    }
}
