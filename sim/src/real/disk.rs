//! Faults on a node's disk: shards of the committed checkpoint corrupted in place (found on
//! disk by bytes from their middle), and a disk given only a little free space.

use rackpoint_client::codec::{Codec, ObjectLayout};
use rackpoint_client::manifest::Manifest;
use rackpoint_proto::{CodeParams, NodeId, StripeIndex};

use super::cell::{blocking, lock, Cell};
use super::faults::FaultCtx;
use super::stripes_of;
use crate::schedule::Action;
use crate::workload::Objects;

/// A shard to corrupt: its stripe in checkpoint order, its index, and bytes from its middle
/// that find it on disk.
pub(super) type Needle = (usize, u8, Vec<u8>);

/// Bytes a needle takes from the middle of a shard (a shorter shard is left alone).
const NEEDLE_BYTES: usize = 64;

/// Corrupts up to `a.fault.shards` shards of the committed checkpoint on each node.
pub(super) async fn corrupt(ctx: &FaultCtx<'_>, a: &Action) {
    let Some((manifest, objects)) = ctx.committed else {
        ctx.note("corrupt needs a committed manifest (phase after_save)".into());
        return;
    };
    for &id in &a.nodes {
        let found = needles(manifest, objects, id, a.fault.shards);
        if found.is_empty() {
            continue;
        }
        let bytes: Vec<Vec<u8>> = found.iter().map(|(_, _, b)| b.clone()).collect();
        let c = ctx.cell.cluster.clone();
        let corrupted = blocking(move || {
            let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
            lock(&c).corrupt_on_disk(id, &refs)
        })
        .await;
        let mut s = lock(ctx.state);
        match corrupted {
            Ok(_) => {
                s.corrupt.extend(found.iter().map(|(flat, i, _)| (*flat, *i)));
                s.corrupt_nodes.insert(id);
                s.restarted.insert(id);
            }
            Err(e) => s.errors.push(format!("corrupt {id}: {e}")),
        }
    }
}

/// Needles for the shards of `manifest` stored on `node` (at most `limit`), in checkpoint
/// order; `objects` are the manifest's objects.
pub(super) fn needles(
    manifest: &Manifest,
    objects: &Objects,
    node: NodeId,
    limit: usize,
) -> Vec<Needle> {
    let params = manifest.code.params;
    let Ok(codec) = Codec::new(params) else { return Vec::new() };
    let mut out = Vec::new();
    for (flat, (o, s, stripe)) in stripes_of(manifest).into_iter().enumerate() {
        for (i, _) in stripe.nodes.iter().enumerate().filter(|(_, n)| **n == node) {
            if out.len() >= limit {
                return out;
            }
            if let Some(middle) = shard_middle(&codec, params, &objects[o].1, s, i) {
                out.push((flat, i as u8, middle));
            }
        }
    }
    out
}

/// The [`NEEDLE_BYTES`] in the middle of shard `i` of stripe `s` of `object`, encoded
/// as the client encodes it; `None` for a shorter shard.
fn shard_middle(
    codec: &Codec,
    params: CodeParams,
    object: &[u8],
    s: StripeIndex,
    i: usize,
) -> Option<Vec<u8>> {
    let r = ObjectLayout::new(params, object.len() as u64).stripe_range(s);
    let encoded = codec.encode_stripe(&object[r.start as usize..r.end as usize]).ok()?;
    let shard = encoded.shards.get(i)?;
    if shard.len() < NEEDLE_BYTES {
        return None;
    }
    let start = shard.len() / 2 - NEEDLE_BYTES / 2;
    Some(shard[start..start + NEEDLE_BYTES].to_vec())
}

/// Gives each node of `a` only `a.fault.free_bytes` of free space (a restart).
pub(super) async fn fill(ctx: &FaultCtx<'_>, a: &Action) {
    for &id in &a.nodes {
        match fill_disk(ctx.cell, id, a.fault.free_bytes).await {
            Ok(()) => {
                lock(ctx.state).filled.insert(id);
            }
            Err(e) => ctx.note(format!("fill disk of {id}: {e}")),
        }
    }
}

/// Restarts node `id` with a capacity `free_bytes` above what it stores now.
async fn fill_disk(cell: &Cell, id: NodeId, free_bytes: u64) -> Result<(), String> {
    let client = cell.client().map_err(|e| e.to_string())?;
    let used = client
        .status()
        .await
        .into_iter()
        .find(|s| s.node.id == id)
        .and_then(|s| s.stats.ok())
        .map(|s| s.shard_bytes)
        .ok_or("its stats did not answer")?;
    set_capacity(cell, id, used + free_bytes.max(1)).await
}

/// Restarts node `id` with `capacity_bytes` (0: no limit).
pub(super) async fn set_capacity(
    cell: &Cell,
    id: NodeId,
    capacity_bytes: u64,
) -> Result<(), String> {
    let c = cell.cluster.clone();
    blocking(move || {
        let mut c = lock(&c);
        c.edit_node_config(id, |config| config.capacity_bytes = capacity_bytes)?;
        c.terminate(id)?;
        c.restart(id)
    })
    .await
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::real::tests::{manifest_of, objects};

    proptest::proptest! {
        /// The needles for a node are, in checkpoint order and up to the limit, the middle
        /// 64 bytes of every shard the manifest puts on it that is at least that long (the
        /// bytes that node stores).
        #[test]
        fn needles_are_the_middles_of_that_nodes_long_shards(
            lens in proptest::collection::vec(1usize..6_000, 1..4),
            k in 1u8..5,
            m in 1u8..4,
            shard_size in proptest::sample::select(vec![64u32, 256, 1024]),
            nodes in 1u32..8,
            node in 1u32..9,
            limit in 0usize..12,
        ) {
            let objects = objects(&lens);
            let (manifest, shards) = manifest_of(k, m, shard_size, &objects, nodes);
            let want: Vec<Needle> = shards
                .iter()
                .enumerate()
                .flat_map(|(flat, stripe)| {
                    stripe.iter().enumerate().map(move |(i, (on, bytes))| (flat, i, on, bytes))
                })
                .filter(|(_, _, on, bytes)| **on == NodeId(node) && bytes.len() >= NEEDLE_BYTES)
                .map(|(flat, i, _, bytes)| {
                    let mid = bytes.len() / 2;
                    (flat, i as u8, bytes[mid - 32..mid + 32].to_vec())
                })
                .take(limit)
                .collect();
            proptest::prop_assert_eq!(needles(&manifest, &objects, NodeId(node), limit), want);
        }
    }

    #[test]
    fn needles_stop_at_the_limit_and_skip_short_shards_and_other_nodes() {
        let objects = objects(&[8_192, 40]);
        let (manifest, shards) = manifest_of(2, 2, 1024, &objects, 4);
        let limited = needles(&manifest, &objects, NodeId(1), 2);
        assert_eq!(limited.len(), 2);
        assert_eq!(limited, needles(&manifest, &objects, NodeId(1), usize::MAX)[..2]);
        assert!(needles(&manifest, &objects, NodeId(9), usize::MAX).is_empty());
        let short: Vec<(usize, u8)> = shards
            .iter()
            .enumerate()
            .flat_map(|(f, s)| s.iter().enumerate().map(move |(i, (_, b))| (f, i as u8, b.len())))
            .filter(|(_, _, len)| *len < NEEDLE_BYTES)
            .map(|(f, i, _)| (f, i))
            .collect();
        assert!(!short.is_empty(), "the 40-byte object has 20-byte shards");
        for node in 1..=4 {
            for (flat, i, _) in needles(&manifest, &objects, NodeId(node), usize::MAX) {
                assert!(!short.contains(&(flat, i)));
            }
        }
    }
}
