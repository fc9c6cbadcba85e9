//! Stray copies: shards of a committed part held by a node its manifest does not place them
//! on. A repair that moved shards commits the manifest naming their new places, then deletes
//! the old copies; killed in between (crash point `repair.before_stale_delete`) it leaves
//! copies no manifest names, which no orphan sweep would touch (the part has a manifest) and
//! no later repair would look for. `gc` finds them from the same `ListParts` summaries its
//! orphan sweep reads: a node holding more shards of a part than the manifest places on it
//! is asked for each shard the manifest places elsewhere, and exactly the versions found are
//! deleted, only where the part's newest shard on that node is older than the grace period
//! (before that, a repair may be writing to it a shard its next manifest will name), and only
//! when every node answered (so the listing has every part's newest revision).

use std::collections::BTreeMap;

use rackpoint_proto::{JobName, NodeId, PartShards, Rank, ShardIndex, Step, StripeId};

use crate::catalog::{self, Listing};
use crate::ctx::Ctx;
use crate::transport::TransportError;

/// Node summaries as `gc` gathered them: each node's parts, or why it did not answer.
pub(crate) type Summaries = [(NodeId, Result<Vec<PartShards>, TransportError>)];

/// Deletes the stray copies of `job`'s committed parts (see the module doc); returns how
/// many were deleted, pushing what failed to `errors`.
pub(crate) async fn sweep(
    ctx: &Ctx,
    job: &JobName,
    summaries: &Summaries,
    listing: &Listing,
    grace_ms: u64,
    errors: &mut Vec<(NodeId, String)>,
) -> u64 {
    // With a node silent, the listing may not see a part's newest revision, and the copies
    // that one names would look like strays of the older one: judge only on a full answer.
    if summaries.iter().any(|(_, r)| r.is_err()) {
        return 0;
    }
    // (step, rank) -> (node, shards it holds), for committed parts old enough to judge.
    let mut held: BTreeMap<(Step, Rank), Vec<(NodeId, u64)>> = BTreeMap::new();
    for (node, parts) in summaries {
        for p in parts.iter().flatten() {
            if listing.contains_key(&(p.step, p.rank)) && p.newest_age_ms >= grace_ms {
                held.entry((p.step, p.rank)).or_default().push((*node, p.shards));
            }
        }
    }
    let mut deleted = 0;
    for ((step, rank), nodes) in held {
        let Some(part) = listing.get(&(step, rank)) else { continue };
        let Ok(manifest) = catalog::fetch_manifest(ctx, job, step, rank, part).await else {
            continue; // judged again by the next collection
        };
        let mut placed: BTreeMap<NodeId, u64> = BTreeMap::new();
        for shard in manifest.objects.iter().flat_map(|o| &o.stripes).flat_map(|s| &s.shards) {
            *placed.entry(shard.node).or_default() += 1;
        }
        for (node, count) in nodes {
            if count <= placed.get(&node).copied().unwrap_or(0) {
                continue;
            }
            for object in &manifest.objects {
                for (s, stripe) in object.stripes.iter().enumerate() {
                    let id = StripeId {
                        job: job.clone(),
                        step,
                        rank,
                        object: object.name.clone(),
                        stripe: rackpoint_proto::StripeIndex(s as u32),
                    };
                    for (i, shard) in stripe.shards.iter().enumerate() {
                        if shard.node == node {
                            continue;
                        }
                        let key = id.shard(ShardIndex(i as u8));
                        // Missing (the usual answer), corrupt or unanswered: nothing to do here.
                        let Ok((hash, _)) = ctx.verify_shard(node, key.clone()).await else {
                            continue;
                        };
                        match ctx.delete_shard(node, key, hash).await {
                            Ok(true) => deleted += 1,
                            Ok(false) => {}
                            Err(e) => errors.push((node, e.to_string())),
                        }
                    }
                }
            }
        }
    }
    deleted
}
