//! Fast mode's repair, run by the heal phase: surveys every shard of a checkpoint where its
//! manifest says it is (healthy, missing, corrupt, or unreachable), plans each stripe with the
//! client's own planner (`repair_plan::plan_stripe`: rewrite in place, move off down or
//! doubled-up nodes, or report it unrecoverable), reads the sources it names (`pick_sources`:
//! `k` healthy shards over the least-read nodes, or the shards themselves for a copy),
//! rebuilds the stripe with the real codec (decode, then encode again: every rebuilt shard
//! must hash to the manifest's digest, or nothing is written) and writes the planned shards.
//! A move rewrites the manifest (its id changes) on its holders and its replica set, and the
//! moved shard's old copy is deleted; last, a manifest on fewer than m + 1 nodes gets its
//! copies back. Every request is timed on the simulated nodes (each node serves one at a
//! time); the clock ends where the last one ends.

use rackpoint_client::codec::Codec;
use rackpoint_client::placement;
use rackpoint_client::repair_plan::{self, ShardState, StripePlan};
use rackpoint_proto::{Digest, NodeId, Rank, ShardIndex, Step};

use super::save::{Saved, MANIFEST_LEN};
use super::world::{Micros, NodeState, Rot};
use super::Sim;
use crate::report::RepairOutcome;

/// Bytes of a `VerifyShard` request and its answer (a digest), roughly.
const VERIFY_BYTES: usize = 64;

/// What one repair did, and what it could not bring back.
#[derive(Debug, Clone, PartialEq)]
pub struct Repaired {
    /// The figures the report shows.
    pub outcome: RepairOutcome,
    /// Stripes left short of full redundancy, and why.
    pub problems: Vec<String>,
}

/// The running figures of one repair.
struct Run {
    out: Repaired,
    /// Shard bytes read from each node so far (to spread reads).
    read_from: std::collections::BTreeMap<NodeId, u64>,
    /// When the last request ends.
    end: Micros,
}

impl Sim<'_> {
    /// Repairs `saved` in the world (see the module doc); `saved` then names where its shards
    /// and manifest copies are.
    pub fn repair(&mut self, saved: &mut Saved) -> Repaired {
        let start = self.now;
        let outcome = RepairOutcome { complete: true, ..RepairOutcome::default() };
        let out = Repaired { outcome, problems: Vec::new() };
        let mut run = Run { out, read_from: Default::default(), end: start };
        let codec = Codec::new(self.code).expect("the scenario's code was validated");
        let mut moved = false;
        for stripe in 0..saved.stripes.len() {
            match self.repair_stripe(saved, stripe, &codec, &mut run) {
                Ok(m) => moved |= m,
                Err(problem) => run.out.problems.push(format!("stripe {stripe}: {problem}")),
            }
        }
        if moved {
            saved.seal_manifest();
            self.rewrite_manifest(saved, &mut run);
        }
        run.out.outcome.manifest_copies_added = self.restore_manifest_copies(saved, &mut run);
        run.out.outcome.complete = run.out.problems.is_empty();
        self.now = run.end;
        run.out.outcome.ms = (run.end - start) as f64 / 1e3;
        run.out
    }

    /// A request of `bytes` to `node` made at the repair's start, answered: when it ends.
    fn request(&mut self, node: NodeId, bytes: usize, put: bool, run: &mut Run) -> Micros {
        let (at, _) = self.world.send(node, self.now, bytes, put);
        self.world.health.end(node, at, true);
        run.end = run.end.max(at);
        at
    }

    /// What a `VerifyShard` of shard `index` of stripe `stripe` finds on `node`.
    fn survey(&mut self, saved: &Saved, stripe: usize, index: usize, run: &mut Run) -> ShardState {
        let node = saved.stripes[stripe].nodes[index];
        let up = self.world.nodes.get(&node).is_some_and(|n| n.state == NodeState::Up);
        if self.world.health.is_down(node) || !up {
            return ShardState::Unreachable;
        }
        self.request(node, VERIFY_BYTES, false, run);
        let place = (saved.step, stripe, index as u8);
        let n = &self.world.nodes[&node];
        match n.rotten.get(&place) {
            _ if !n.shards.contains(&place) => ShardState::Missing,
            // The node re-hashes what it holds: rot of either kind gives another digest.
            Some(Rot::Detected | Rot::Silent) => ShardState::Corrupt,
            None => ShardState::Healthy,
        }
    }

    /// Surveys, plans and repairs one stripe; true when a shard moved to another node.
    fn repair_stripe(
        &mut self,
        saved: &mut Saved,
        stripe: usize,
        codec: &Codec,
        run: &mut Run,
    ) -> Result<bool, String> {
        let total = saved.stripes[stripe].nodes.len();
        let states: Vec<ShardState> =
            (0..total).map(|i| self.survey(saved, stripe, i, run)).collect();
        let s = &saved.stripes[stripe];
        let id = saved.manifest.stripe_id(&self.object_names[s.object], s.stripe);
        let entry = saved.entry(stripe).ok_or("the stripe is not in the manifest")?.clone();
        let health = &self.world.health;
        let plan =
            repair_plan::plan_stripe(&self.map, &id, self.code, &entry, &states, &|n: NodeId| {
                health.is_down(n)
            });
        let (fixes, sources, copy, unplaced) = match plan {
            StripePlan::Healthy => return Ok(false),
            StripePlan::Unsurveyed { unknown } => {
                return Err(format!("{unknown} shards could not be checked"))
            }
            StripePlan::Unrecoverable { need, got } => {
                return Err(format!("unrecoverable: {got} healthy shards, {need} needed"))
            }
            StripePlan::NoRoom { shards } => {
                return Err(format!("{shards} shards need a node but none can take them"))
            }
            StripePlan::Fix { fixes, sources, copy, unplaced } => (fixes, sources, copy, unplaced),
        };
        let shards = self.rebuild(saved, stripe, codec, &sources, copy, run)?;
        let step = saved.step;
        let place = move |i: ShardIndex| (step, stripe, i.0);
        let mut moved = false;
        for fix in &fixes {
            let Some(bytes) = &shards[usize::from(fix.index.0)] else {
                return Err(format!("shard {} was not rebuilt", fix.index));
            };
            let len = bytes.len();
            self.request(fix.to, len, true, run);
            let to = self.world.nodes.get_mut(&fix.to).ok_or("a target outside the world")?;
            to.shards.insert(place(fix.index));
            to.rotten.remove(&place(fix.index));
            let scaled = len as u64 * self.world.byte_scale;
            run.out.outcome.bytes_written += scaled;
            run.out.outcome.shards_written += 1;
            if fix.to != fix.from {
                moved = true;
                run.out.outcome.moved += 1;
                // The old copy goes once the manifest names the new place (here: at once,
                // the heal's cluster is whole).
                if let Some(from) = self.world.nodes.get_mut(&fix.from) {
                    from.shards.remove(&place(fix.index));
                    from.rotten.remove(&place(fix.index));
                }
                saved.move_shard(stripe, fix.index, fix.to);
            }
        }
        if unplaced > 0 {
            return Err(format!("{unplaced} shards need a node but none can take them"));
        }
        Ok(moved)
    }

    /// Reads the sources the plan names (`k` of them spread over the least-read nodes, or
    /// every one for a copy) and returns every shard that can be written: for a copy the
    /// sources themselves, else all `k + m`, decoded and encoded again, each checked against
    /// the manifest's digest.
    fn rebuild(
        &mut self,
        saved: &Saved,
        stripe: usize,
        codec: &Codec,
        sources: &[ShardIndex],
        copy: bool,
        run: &mut Run,
    ) -> Result<Vec<Option<Vec<u8>>>, String> {
        let s = &saved.stripes[stripe];
        let want = if copy { sources.len() } else { usize::from(self.code.k) };
        let node_of = |i: ShardIndex| s.nodes[usize::from(i.0)];
        let read_from = |n: NodeId| run.read_from.get(&n).copied().unwrap_or(0);
        let picked = repair_plan::pick_sources(sources, want, &node_of, &read_from);
        let mut shards: Vec<Option<Vec<u8>>> = vec![None; s.nodes.len()];
        for &i in &picked {
            // A source the survey found healthy holds the bytes the save wrote.
            let bytes = s.shards[usize::from(i.0)].clone();
            let node = node_of(i);
            *run.read_from.entry(node).or_insert(0) += bytes.len() as u64;
            run.out.outcome.bytes_read += bytes.len() as u64 * self.world.byte_scale;
            self.request(node, bytes.len(), false, run);
            shards[usize::from(i.0)] = Some(bytes);
        }
        if picked.len() < want {
            return Err(format!("read {} of the {want} healthy shards needed", picked.len()));
        }
        if copy {
            return Ok(shards);
        }
        let data = codec
            .decode_stripe(&s.layout, s.stripe, shards, &s.hashes)
            .map_err(|e| format!("decode: {e}"))?;
        let encoded = codec.encode_stripe(&data).map_err(|e| format!("encode: {e}"))?;
        if let Some(i) = (0..s.hashes.len()).find(|&i| encoded.hashes[i] != s.hashes[i]) {
            return Err(format!("rebuilt shard {i} does not hash to the manifest's digest"));
        }
        Ok(encoded.shards.into_iter().map(Some).collect())
    }

    /// The manifest's replica set among the nodes in service, `copies` long.
    fn manifest_targets(&self, step: u64, copies: usize) -> Vec<NodeId> {
        let health = &self.world.health;
        let unusable =
            |n: NodeId| !repair_plan::in_service(&self.map, n, &|d: NodeId| health.is_down(d));
        placement::place_manifest(&self.map, &self.job, Step(step), Rank(0), copies, &unusable)
            .unwrap_or_default()
    }

    /// After a move: the new manifest (its id sealed) on its replica set and on every
    /// holder of the old one.
    fn rewrite_manifest(&mut self, saved: &mut Saved, run: &mut Run) {
        let mut targets = self.manifest_targets(saved.step, usize::from(self.code.m) + 1);
        for n in &saved.manifest_nodes {
            if !targets.contains(n) {
                targets.push(*n);
            }
        }
        let mut stored = Vec::new();
        for node in targets {
            if self.store_manifest(node, saved.step, saved.manifest_id, run) {
                stored.push(node);
            }
        }
        saved.manifest_nodes = stored;
    }

    /// Stores manifest `id` of `step` on `node`; false if the node is not up.
    fn store_manifest(&mut self, node: NodeId, step: u64, id: Digest, run: &mut Run) -> bool {
        if self.world.nodes.get(&node).is_none_or(|n| n.state != NodeState::Up) {
            return false;
        }
        self.request(node, MANIFEST_LEN as usize, true, run);
        self.world.nodes.get_mut(&node).map(|n| n.manifests.insert(step, id)).is_some()
    }

    /// Writes the manifest to nodes of its replica set that lack it until m + 1 nodes in
    /// service hold it; returns the copies added.
    fn restore_manifest_copies(&mut self, saved: &mut Saved, run: &mut Run) -> usize {
        let need = usize::from(self.code.m) + 1;
        let (step, id) = (saved.step, saved.manifest_id);
        let holds = |sim: &Self, n: NodeId| {
            sim.world
                .nodes
                .get(&n)
                .is_some_and(|x| x.state == NodeState::Up && x.manifests.get(&step) == Some(&id))
        };
        saved.manifest_nodes.retain(|n| holds(self, *n));
        let held = saved.manifest_nodes.len();
        if held >= need {
            return 0;
        }
        let health = &self.world.health;
        let up = self.map.nodes.iter().filter(|n| !health.is_down(n.id)).count();
        let mut order = self.manifest_targets(step, up);
        order.retain(|n| !saved.manifest_nodes.contains(n));
        let mut added = 0;
        for node in order {
            if held + added >= need {
                break;
            }
            if self.store_manifest(node, step, id, run) {
                saved.manifest_nodes.push(node);
                added += 1;
            }
        }
        added
    }
}
