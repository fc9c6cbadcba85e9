//! Fast mode's manifests: the real [`Manifest`] of a simulated save, built as the client's
//! save builds it (every object with its length and hash, every stripe with each shard's node
//! and hash), validated by the rules readers apply, and named by the id of the bytes a node
//! would store. The checkpoint choice and the repair read it as the client reads its own.

use std::collections::BTreeMap;

use rackpoint_client::manifest::{
    CodeSpec, Manifest, ManifestError, ObjectEntry, ShardEntry, StripeEntry,
    MANIFEST_FORMAT_VERSION,
};
use rackpoint_proto::{CodeParams, Digest, JobName, NodeId, ObjectName, Rank, ShardIndex, Step};

use super::save::{Saved, SavedStripe};

/// Who fast mode says wrote its manifests.
const WRITER: &str = "rackpoint-sim fast mode";

/// The manifest of rank 0 (of one) of `step`, whose objects are `objects` named `names`,
/// with `stripes` (every stripe of every object, in order) where they are now. A stripe
/// not placed yet names the largest node id for each shard, so that a manifest that
/// validates here stays within every bound once placed. Refused as the client's save would
/// refuse it (too many objects or stripes for a manifest, say).
pub fn manifest_of(
    (job, step): (&JobName, u64),
    code: CodeParams,
    names: &[ObjectName],
    objects: &[Vec<u8>],
    stripes: &[SavedStripe],
) -> Result<Manifest, ManifestError> {
    let mut entries: Vec<ObjectEntry> = names
        .iter()
        .zip(objects)
        .map(|(name, bytes)| ObjectEntry {
            name: name.clone(),
            len: bytes.len() as u64,
            hash: Digest::of(bytes),
            stripes: Vec::new(),
        })
        .collect();
    for s in stripes {
        let node_of = |i: usize| s.nodes.get(i).copied().unwrap_or(NodeId(u32::MAX));
        let shards =
            s.hashes.iter().enumerate().map(|(i, &hash)| ShardEntry { node: node_of(i), hash });
        if let Some(o) = entries.get_mut(s.object) {
            o.stripes.push(StripeEntry { shards: shards.collect() });
        }
    }
    let manifest = Manifest { objects: entries, ..empty_manifest((job, step), code) };
    manifest.to_checked_bytes()?;
    Ok(manifest)
}

/// The manifest of a part of no objects: what a save refused before anything was stored
/// carries (it is never listed, committed or read).
pub fn empty_manifest((job, step): (&JobName, u64), code: CodeParams) -> Manifest {
    Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        job: job.clone(),
        step: Step(step),
        rank: Rank(0),
        world_size: 1,
        writer: WRITER.to_owned(),
        code: CodeSpec::for_params(code),
        objects: Vec::new(),
        user_meta: BTreeMap::new(),
        prev: None,
    }
}

impl Saved {
    /// Writes where every shard went into the manifest (once the stripes are placed) and
    /// names the save by the manifest's id: what nodes list and a reader checks.
    pub fn seal_manifest(&mut self) {
        for s in &self.stripes {
            let Some(entry) = self.manifest.objects.get_mut(s.object) else { continue };
            let Some(stripe) = entry.stripes.get_mut(s.stripe.0 as usize) else { continue };
            for (shard, node) in stripe.shards.iter_mut().zip(&s.nodes) {
                shard.node = *node;
            }
        }
        self.manifest_id = self.manifest.id();
    }

    /// Moves shard `index` of stripe `stripe` (its number in the checkpoint) to `node`, in
    /// the stripe and in the manifest (whose id changes: call [`Saved::seal_manifest`]).
    pub fn move_shard(&mut self, stripe: usize, index: ShardIndex, node: NodeId) {
        let Some(s) = self.stripes.get_mut(stripe) else { return };
        let i = usize::from(index.0);
        if let Some(n) = s.nodes.get_mut(i) {
            *n = node;
        }
        let entry = self.manifest.objects.get_mut(s.object);
        let shard = entry.and_then(|o| o.stripes.get_mut(s.stripe.0 as usize));
        if let Some(shard) = shard.and_then(|st| st.shards.get_mut(i)) {
            shard.node = node;
        }
    }

    /// The manifest entry of stripe `stripe` (its number in the checkpoint).
    pub fn entry(&self, stripe: usize) -> Option<&StripeEntry> {
        let s = self.stripes.get(stripe)?;
        self.manifest.objects.get(s.object)?.stripes.get(s.stripe.0 as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::save::saved_stripes_of as stripes;

    #[test]
    fn a_sealed_manifest_names_where_each_shard_went_and_reads_back() {
        let code = CodeParams::new(2, 1, 64).expect("valid");
        let objects = vec![vec![7u8; 300], vec![9u8; 3]];
        let names: Vec<ObjectName> =
            ["a", "b"].iter().map(|n| ObjectName::new(*n).expect("valid")).collect();
        let job = JobName::new("sim").expect("valid");
        let mut placed = stripes(code, &objects);
        let unplaced =
            manifest_of((&job, 3), code, &names, &objects, &placed).expect("a valid part");
        for (n, s) in placed.iter_mut().enumerate() {
            s.nodes = (0..3).map(|i| NodeId((n * 3 + i) as u32 + 1)).collect();
        }
        let mut saved = Saved {
            step: 3,
            stripes: placed,
            manifest_nodes: Vec::new(),
            committed: false,
            manifest: unplaced,
            manifest_id: Digest::default(),
            ended_at: 0,
            moved_shards: 0,
        };
        saved.seal_manifest();
        let bytes = saved.manifest.to_checked_bytes().expect("valid");
        assert_eq!(saved.manifest_id, Digest::of(&bytes), "the id of the bytes nodes store");
        let read = Manifest::from_bytes(&bytes).expect("a reader accepts it");
        assert_eq!(read.objects.len(), 2);
        assert_eq!(read.objects[0].stripes.len(), 3, "300 bytes in stripes of 128");
        assert_eq!(read.objects[0].hash, Digest::of(&objects[0]));
        assert_eq!(read.objects[1].stripes[0].shards[2].node, NodeId(12));
        assert_eq!(
            read.lost_stripe(&|n| n == NodeId(1) || n == NodeId(2)).map(|l| l.lost),
            Some(2)
        );
        let before = saved.manifest_id;
        saved.move_shard(3, ShardIndex(2), NodeId(40));
        saved.seal_manifest();
        assert_ne!(saved.manifest_id, before, "a move changes the manifest");
        assert_eq!(saved.entry(3).map(|e| e.shards[2].node), Some(NodeId(40)));
        assert_eq!(saved.stripes[3].nodes[2], NodeId(40));
    }
}
