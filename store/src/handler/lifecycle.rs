//! Handling of the lifecycle requests (issue 10): `VerifyShard`, `DeleteManifest`,
//! `ReplaceManifest`, `ListParts`, `DeleteOrphanShards`, `DeleteShard`.

use bytes::Bytes;
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
        let store = move || engine.replace_manifest(&key, identity, revision, &payload);
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
