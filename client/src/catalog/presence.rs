//! Shard presence for `list` (`ls`): one `ListParts` pass per node per job, the count of
//! each part's shards every node holds, so the SURVIVES column counts the shards that exist
//! rather than the nodes that are up. No shard is read: content is `verify`'s to check.

use std::collections::BTreeMap;

use rackpoint_proto::limits::CLIENT_MAX_LISTED_MANIFESTS;
use rackpoint_proto::{JobName, NodeId, Rank, Step};

use crate::ctx::Ctx;
use crate::transport::TransportError;

/// Each node's count of the job's shards per part; a node missing from the map did not
/// answer (down, or an error), so none of its shards count as present.
#[derive(Debug, Default)]
pub(crate) struct Presence(BTreeMap<NodeId, BTreeMap<(Step, Rank), u64>>);

impl Presence {
    /// The shards of part `(step, rank)` that `node` holds; `None` if it did not answer.
    pub(crate) fn held(&self, node: NodeId, part: (Step, Rank)) -> Option<u64> {
        self.0.get(&node).map(|parts| parts.get(&part).copied().unwrap_or(0))
    }

    /// Whether `node` answered.
    pub(crate) fn answered(&self, node: NodeId) -> bool {
        self.0.contains_key(&node)
    }
}

/// Asks every node not known down for its part summaries of `job`, all at once.
pub(crate) async fn measure(ctx: &Ctx, job: &JobName) -> Presence {
    let asks = ctx
        .map
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|n| !ctx.health.is_down(*n))
        .map(|n| async move { (n, node_counts(ctx, n, job).await) });
    let mut out = BTreeMap::new();
    for (node, r) in futures::future::join_all(asks).await {
        match r {
            Ok(counts) => {
                out.insert(node, counts);
            }
            Err(e) => tracing::debug!(node = %node, "no shard counts: {e}"),
        }
    }
    Presence(out)
}

/// Every part summary one node lists for `job`, across pages (bounded like a manifest
/// listing).
async fn node_counts(
    ctx: &Ctx,
    node: NodeId,
    job: &JobName,
) -> Result<BTreeMap<(Step, Rank), u64>, TransportError> {
    let mut all = BTreeMap::new();
    let mut after = None;
    loop {
        let (entries, more) = ctx.list_parts(node, job, after).await?;
        after = entries.last().map(|p| (p.step, p.rank));
        all.extend(entries.into_iter().map(|p| ((p.step, p.rank), p.shards)));
        if !more || after.is_none() {
            return Ok(all);
        }
        if all.len() >= CLIENT_MAX_LISTED_MANIFESTS {
            let reason = format!(
                "the job has shards of more than {CLIENT_MAX_LISTED_MANIFESTS} parts on this node"
            );
            return Err(TransportError::Protocol { node, reason });
        }
    }
}
