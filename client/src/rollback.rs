//! Rolling back a commit that reached fewer than m + 1 nodes: the copies it did store are
//! deleted again (`DeleteManifest`, only if they are still this commit's bytes), so a failed
//! commit leaves no visible part, only orphan shards that garbage collection removes after
//! its grace period.

use futures::future::join_all;
use rackpoint_proto::{Digest, ManifestKey, NodeId};

use crate::ctx::Ctx;
use crate::transport::TransportError;

/// Deletes manifest `id` of part `key` from `stored`; returns the nodes where that failed
/// (they keep a copy, with less redundancy than a commit promises, until a later repair,
/// delete or garbage collection).
pub(crate) async fn roll_back(
    ctx: &Ctx,
    key: &ManifestKey,
    id: Digest,
    stored: &[NodeId],
) -> Vec<(NodeId, TransportError)> {
    let deletes = stored
        .iter()
        .map(|&n| async move { (n, ctx.delete_manifest(n, key.clone(), Some(id)).await) });
    let failed: Vec<(NodeId, TransportError)> =
        join_all(deletes).await.into_iter().filter_map(|(n, r)| r.err().map(|e| (n, e))).collect();
    for (n, e) in &failed {
        tracing::warn!(node = %n, job = %key.job, step = %key.step, rank = %key.rank, "a failed commit's manifest copy could not be rolled back: {e}");
    }
    failed
}
