//! Fast mode: a whole cluster in one process on a simulated clock, deterministic per seed.
//! Trials drive the client's own pure code (`placement`, `stripe_write`, `planner`, `codec`,
//! `listing`, `checkpoint_choice`, `repair_plan`) over real manifests ([`manifest`]) against
//! simulated nodes, links and disks ([`world`]); a fault atlas draws each trial's faults from
//! its seed, within the code's tolerance or beyond it on purpose. Fast mode never reads the
//! wall clock (see [`world::origin`] for the one fixed `Instant` the planner's type needs).

pub mod manifest;
pub mod repair;
pub mod restore;
pub mod save;
pub mod world;

use std::collections::{BTreeMap, BTreeSet};

use rackpoint_client::hedge::HedgePolicy;
use rackpoint_client::placement;
use rackpoint_client::redundancy;
use rackpoint_client::stripe_write::StripeWrite;
use rackpoint_proto::cluster::ClientTlsPaths;
use rackpoint_proto::{
    ClusterMap, CodeParams, JobName, NodeId, NodeInfo, ObjectName, Rank, Step, StripeId,
    StripeIndex,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::oracle::{self, Damage, StripeNodes};
use crate::report::{CellHead, CellReport, HealOutcome, Outcome, TrialResult};
use crate::scenario::{
    Atlas, CheckpointSpec, ClusterShape, Fault, FaultKind, HealSpec, Phase, Scenario, Scheme,
};
use crate::schedule::{resolve, Action};
use crate::trial_seed;
use rackpoint_proto::limits::SIM_FAST_MAX_EVENTS_PER_TRIAL;
use restore::Want;
use save::Saved;
use world::{Micros, NodeState, Queue, Rot, World};

/// A simulated event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    /// Fire scheduled fault `i`.
    Fault(usize),
    /// A shard put ends.
    Put {
        /// Stripe number in the checkpoint.
        stripe: usize,
        /// Shard index.
        index: u8,
        /// Its node.
        node: NodeId,
        /// The node's epoch when sent (`u64::MAX`: already failed).
        epoch: u64,
        /// When sent.
        sent: Micros,
    },
    /// A manifest put or get ends.
    Manifest {
        /// Its node.
        node: NodeId,
        /// Epoch when sent.
        epoch: u64,
        /// When sent.
        sent: Micros,
    },
    /// A shard get ends.
    Get {
        /// Stripe number.
        stripe: usize,
        /// Shard index.
        index: u8,
        /// Its node.
        node: NodeId,
        /// Epoch when sent.
        epoch: u64,
        /// When sent.
        sent: Micros,
    },
    /// A manifest listing of one node ends.
    List {
        /// Its node.
        node: NodeId,
        /// Epoch when sent.
        epoch: u64,
        /// When sent.
        sent: Micros,
    },
    /// The listing quorum's grace for stragglers ends.
    ListGrace,
    /// A stripe write's backoff ends.
    Wake {
        /// Stripe number.
        stripe: usize,
    },
    /// A stripe planner's deadline.
    Tick {
        /// Stripe number.
        stripe: usize,
    },
    /// The saving client dies.
    KillClient,
}

/// One trial's simulation: the world, the queue, and what the client works with.
pub struct Sim<'a> {
    /// Simulated now.
    pub now: Micros,
    /// Nodes and health.
    pub world: World,
    /// Pending events.
    pub queue: Queue<Ev>,
    map: ClusterMap,
    code: CodeParams,
    job: JobName,
    object_names: Vec<ObjectName>,
    actions: &'a [Action],
    pending_faults: usize,
    stuck: bool,
    /// Fresh stripe writes placed with nothing down, by `(step, stripe)`: placement is a
    /// pure function of the map, the stripe and the down set, so a cell computes it once.
    placements: &'a mut BTreeMap<(u64, usize), StripeWrite>,
    /// The hedging policy (the client's own), fed every shard fetch's latency.
    hedge: HedgePolicy,
}

/// A cluster map of `shape` with made-up addresses (fast mode opens no socket).
pub fn sim_map(shape: ClusterShape, code: CodeParams) -> ClusterMap {
    let nodes = (1..=shape.nodes as u32)
        .map(|i| NodeInfo {
            id: NodeId(i),
            addr: std::net::SocketAddr::from((
                [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                7000,
            )),
            rack: format!("rack-{}", (i as usize - 1) % shape.racks),
            decommissioned: false,
        })
        .collect();
    let tls =
        ClientTlsPaths { ca: "ca.pem".into(), cert: "client.pem".into(), key: "client.key".into() };
    ClusterMap { epoch: 0, code, tls, nodes }
}

impl<'a> Sim<'a> {
    fn new(
        map: ClusterMap,
        code: CodeParams,
        objects: usize,
        actions: &'a [Action],
        rng: StdRng,
        placements: &'a mut BTreeMap<(u64, usize), StripeWrite>,
    ) -> Self {
        let world = World::new(map.nodes.len(), rng);
        let object_names = (0..objects)
            .map(|i| ObjectName::new(format!("obj-{i}")).expect("obj-N is a valid object name"))
            .collect();
        let job = JobName::new("sim").expect("valid job name");
        Self {
            now: 0,
            world,
            queue: Queue::default(),
            map,
            code,
            job,
            object_names,
            actions,
            pending_faults: 0,
            stuck: false,
            placements,
            hedge: HedgePolicy::default(),
        }
    }

    /// The next event that is not a fault (faults fire on the way), advancing the clock.
    fn next_event(&mut self) -> Option<Ev> {
        loop {
            if self.queue.popped() > SIM_FAST_MAX_EVENTS_PER_TRIAL {
                self.stuck = true;
                return None;
            }
            let (at, ev) = self.queue.pop()?;
            self.now = self.now.max(at);
            self.world.run_heartbeats(self.now);
            match ev {
                Ev::Fault(i) => {
                    self.pending_faults -= 1;
                    self.fire(i);
                }
                other => return Some(other),
            }
        }
    }

    /// An event that belongs to no running operation (a late reply after the operation
    /// ended, a fault's stray effects): dropped.
    fn handle_other(&mut self, _ev: Ev) {}

    /// Fires the faults of `phase`: at once for the untimed phases, on the queue at their
    /// times for the timed ones.
    fn start_phase(&mut self, phase: Phase) {
        for (i, a) in self.actions.iter().enumerate().filter(|(_, a)| a.fault.phase == phase) {
            match phase {
                Phase::BeforeSave | Phase::AfterSave => self.fire(i),
                Phase::DuringSave | Phase::DuringRestore => {
                    self.queue.push(self.now + a.at_ms * 1000, Ev::Fault(i));
                    self.pending_faults += 1;
                }
            }
        }
    }

    /// Lets every queued fault fire (the operation it was timed against may have ended).
    fn drain_faults(&mut self) {
        while self.pending_faults > 0 && self.next_event().is_some() {}
    }

    fn fire(&mut self, i: usize) {
        let a = &self.actions[i];
        let now = self.now;
        let f = &a.fault;
        for &id in &a.nodes {
            let Some(n) = self.world.nodes.get_mut(&id) else { continue };
            match f.kind {
                FaultKind::Kill | FaultKind::KillRack => {
                    self.world.set_state(id, NodeState::Dead, now)
                }
                FaultKind::Wipe => {
                    // A lost disk: its shards and manifest copies are gone for good.
                    n.shards.clear();
                    n.rotten.clear();
                    n.manifests.clear();
                    self.world.set_state(id, NodeState::Dead, now)
                }
                FaultKind::Restart => self.world.set_state(id, NodeState::Up, now),
                FaultKind::Freeze => self.world.set_state(id, NodeState::Frozen, now),
                FaultKind::Partition => self.world.set_state(id, NodeState::Partitioned, now),
                FaultKind::Delay => n.delay_us = f.delay_ms * 1000,
                FaultKind::Drop if f.drop_probability >= 1.0 => {
                    self.world.set_state(id, NodeState::Partitioned, now)
                }
                FaultKind::Drop => n.loss = f.drop_probability,
                FaultKind::Slow => n.slow = (f.run_ms + f.stop_ms) as f64 / f.run_ms as f64,
                FaultKind::FillDisk => {
                    n.free_bytes = Some(f.free_bytes / self.world.byte_scale.max(1))
                }
                FaultKind::Corrupt => {
                    let rot = if f.silent { Rot::Silent } else { Rot::Detected };
                    let places: Vec<_> = n.shards.iter().copied().take(f.shards).collect();
                    n.rotten.extend(places.into_iter().map(|p| (p, rot)));
                }
                FaultKind::KillClient => {}
            }
        }
        if f.kind == FaultKind::Restart && a.nodes.is_empty() {
            let dead: Vec<NodeId> = self
                .world
                .nodes
                .values()
                .filter(|n| n.state == NodeState::Dead)
                .map(|n| n.id)
                .collect();
            for id in dead {
                self.world.set_state(id, NodeState::Up, now);
            }
        }
        if f.kind == FaultKind::KillClient {
            self.queue.push(now, Ev::KillClient);
        }
    }

    /// What the faults took from `saved`, as the oracle sees it.
    fn damage(&self, saved: &Saved) -> Damage {
        let unavailable =
            self.world.nodes.values().filter(|n| n.state != NodeState::Up).map(|n| n.id).collect();
        let mut corrupt = BTreeSet::new();
        for (s, stripe) in saved.stripes.iter().enumerate() {
            for (i, node) in stripe.nodes.iter().enumerate() {
                let place = (saved.step, s, i as u8);
                let n = &self.world.nodes[node];
                if n.rotten.contains_key(&place) || !n.shards.contains(&place) {
                    corrupt.insert((s, i as u8));
                }
            }
        }
        Damage { unavailable, corrupt }
    }
}

fn stripe_nodes(saved: &Saved) -> Vec<StripeNodes> {
    saved.stripes.iter().map(|s| StripeNodes { nodes: s.nodes.clone() }).collect()
}

/// Shard size fast mode encodes with: the scenario's geometry (stripes per object) is kept,
/// the bytes shrink by `shard_size_bytes / FAST_SHARD_BYTES`, and simulated transfer times
/// are scaled back up, so a trial costs microseconds of CPU yet times full-size shards.
pub const FAST_SHARD_BYTES: u32 = 1024;

/// The checkpoint fast mode encodes, and the factor its bytes were shrunk by.
pub fn fast_spec(spec: &CheckpointSpec) -> (CheckpointSpec, u64) {
    if spec.shard_size_bytes <= FAST_SHARD_BYTES {
        return (*spec, 1);
    }
    let scale = u64::from(spec.shard_size_bytes / FAST_SHARD_BYTES);
    let bytes = spec.bytes.div_ceil(scale).max(u64::from(spec.objects));
    (
        CheckpointSpec { bytes, shard_size_bytes: spec.shard_size_bytes / scale as u32, ..*spec },
        scale,
    )
}

/// The seeded objects of a trial (the same generator as real mode).
fn objects_of(spec: &CheckpointSpec, seed: u64) -> Vec<Vec<u8>> {
    crate::workload::checkpoint_objects(spec, seed).into_iter().map(|(_, b)| b).collect()
}

/// Draws one trial's faults from the atlas (see [`Atlas`]).
pub fn atlas_actions(
    atlas: Atlas,
    map: &ClusterMap,
    code: CodeParams,
    byte_scale: u64,
    rng: &mut StdRng,
) -> Vec<Action> {
    let m = usize::from(code.m);
    let mut pool: Vec<NodeId> = map.nodes.iter().map(|n| n.id).collect();
    let mut faulty: Vec<NodeId> = match atlas {
        Atlas::Within => {
            pool.shuffle(rng);
            let f = rng.gen_range(0..=m);
            pool.drain(..f).collect()
        }
        Atlas::Beyond => {
            let job = JobName::new("sim").expect("valid");
            let object = ObjectName::new("obj-0").expect("valid");
            let r = StripeId { job, step: Step(1), rank: Rank(0), object, stripe: StripeIndex(0) };
            let mut first = placement::place_stripe(map, &r, code, &|_| false).unwrap_or_default();
            first.shuffle(rng);
            first.truncate(m + 1);
            pool.retain(|n| !first.contains(n));
            pool.shuffle(rng);
            first
        }
    };
    faulty.sort();
    let mut actions = Vec::new();
    let one = |kind, phase, node: NodeId| {
        let mut f = Fault::new(kind, phase);
        f.nodes = vec![node.0];
        f
    };
    // A save that cannot find k + m distinct healthy nodes doubles shards up on a node
    // (`place_degraded`), and such a stripe is promised to survive one node, not m: the
    // atlas then keeps the save phase clean so that "within" stays within what is promised.
    let roomy = map.nodes.len() > code.total() + m;
    let kinds = match atlas {
        Atlas::Within if roomy => 8,
        _ => 5,
    };
    for &node in &faulty {
        let pick = rng.gen_range(0..kinds);
        let mut f = match pick {
            0 => one(FaultKind::Kill, Phase::AfterSave, node),
            1 => one(FaultKind::Freeze, Phase::AfterSave, node),
            2 => one(FaultKind::Partition, Phase::AfterSave, node),
            3 => one(FaultKind::Corrupt, Phase::AfterSave, node),
            4 => one(FaultKind::Corrupt, Phase::AfterSave, node),
            5 => one(FaultKind::Kill, Phase::BeforeSave, node),
            6 => one(FaultKind::Kill, Phase::DuringSave, node),
            _ => one(FaultKind::Kill, Phase::DuringRestore, node),
        };
        f.silent = pick == 4;
        f.shards = if atlas == Atlas::Beyond { usize::MAX } else { rng.gen_range(1..=8) };
        let at_ms = if matches!(f.phase, Phase::DuringSave | Phase::DuringRestore) {
            rng.gen_range(0..=20)
        } else {
            0
        };
        actions.push(Action { fault: f, at_ms, nodes: vec![node] });
    }
    // Benign faults on other nodes: they slow things down but take no shard away.
    let benign = rng.gen_range(0..=3).min(pool.len());
    for node in pool.drain(..benign) {
        let mut f = match rng.gen_range(0..if atlas == Atlas::Within && roomy { 4 } else { 3 }) {
            0 => {
                let mut f = one(FaultKind::Delay, Phase::BeforeSave, node);
                f.delay_ms = rng.gen_range(1..=50);
                f
            }
            1 => {
                let mut f = one(FaultKind::Drop, Phase::BeforeSave, node);
                f.drop_probability = rng.gen_range(0.01..0.3);
                f
            }
            2 => {
                let mut f = one(FaultKind::Slow, Phase::BeforeSave, node);
                f.stop_ms = rng.gen_range(20..=200);
                f
            }
            _ => {
                let mut f = one(FaultKind::FillDisk, Phase::BeforeSave, node);
                f.free_bytes = rng.gen_range(0..=4 * u64::from(code.shard_size_bytes) * byte_scale);
                f
            }
        };
        f.count = 1;
        actions.push(Action { fault: f, at_ms: 0, nodes: vec![node] });
    }
    actions
}

/// Runs one fast-mode trial from its seed. `placements` caches healthy placements across the
/// trials of a cell (pass the same map for one scenario and scheme).
pub fn run_trial(
    scenario: &Scenario,
    scheme: &Scheme,
    trial: u32,
    seed: u64,
    placements: &mut BTreeMap<(u64, usize), StripeWrite>,
) -> TrialResult {
    let shape = scenario.cluster_of(scheme);
    let (spec, scale) = fast_spec(&scenario.checkpoint);
    let code = scheme.code(spec.shard_size_bytes).expect("validated scheme");
    let map = sim_map(shape, code);
    let mut rng = StdRng::seed_from_u64(seed);
    let actions = match scenario.atlas {
        Some(atlas) => atlas_actions(atlas, &map, code, scale, &mut rng),
        None => resolve(&scenario.faults, shape, usize::from(code.m), &mut rng),
    };
    let world_rng = StdRng::seed_from_u64(rng.gen());
    let objects = objects_of(&spec, seed);
    let mut sim = Sim::new(map, code, objects.len(), &actions, world_rng, placements);
    sim.world.byte_scale = scale;
    let k = usize::from(code.k);
    let kill_client = actions.iter().any(|a| a.fault.kind == FaultKind::KillClient);
    let mut result = TrialResult::fresh(trial, seed, k);
    sim.start_phase(Phase::BeforeSave);
    let save_start = sim.now;
    let baseline = kill_client.then(|| sim.save(1, &objects));
    let second_objects =
        kill_client.then(|| objects_of(&spec, crate::workload::killed_save_seed(seed)));
    sim.start_phase(Phase::DuringSave);
    let step = if kill_client { 2 } else { 1 };
    let (saved, failure) = sim.save(step, second_objects.as_ref().unwrap_or(&objects));
    result.save_ms = (sim.now - save_start) as f64 / 1e3;
    sim.drain_faults();
    // Which checkpoint a restore must find: the killed save's if it committed, else the last.
    let (target, _) = match (&baseline, failure) {
        (Some((_, Some(f))), _) => {
            result.outcome = Outcome::SaveFailed(f.to_string());
            return finish(sim, result);
        }
        (None, Some(f)) => {
            result.outcome = Outcome::SaveFailed(f.to_string());
            return finish(sim, result);
        }
        // A client killed after some manifest copies were stored left a visible part (no
        // rollback ran): the restore's listing finds it, so the oracle judges it.
        (Some((base, None)), Some(_)) if saved.manifest_nodes.is_empty() => {
            (base.clone(), objects.clone())
        }
        (Some(_), _) => (saved.clone(), second_objects.clone().unwrap_or_default()),
        (None, None) => (saved.clone(), objects.clone()),
    };
    // What the restore may pick from: every save of the trial, with its objects.
    let mut saves: Vec<(Saved, Vec<Vec<u8>>)> = Vec::new();
    if let Some((base, _)) = &baseline {
        saves.push((base.clone(), objects.clone()));
    }
    saves.push((saved, second_objects.clone().unwrap_or_else(|| objects.clone())));
    let want = if kill_client { Want::Latest } else { Want::Step(step) };
    let injected = sim.now;
    sim.start_phase(Phase::AfterSave);
    let unavailable: Vec<Micros> =
        sim.world.nodes.values().filter_map(|n| n.unavailable_since).collect();
    result.detect_ms = unavailable
        .iter()
        .map(|&since| sim.world.heartbeat_detects_at(since.max(injected)) - since.max(injected))
        .max()
        .map(|us| us as f64 / 1e3);
    let mut damage = sim.damage(&target);
    for a in actions.iter().filter(|a| a.fault.phase == Phase::DuringRestore) {
        if matches!(
            a.fault.kind,
            FaultKind::Kill
                | FaultKind::KillRack
                | FaultKind::Wipe
                | FaultKind::Freeze
                | FaultKind::Partition
        ) {
            damage.unavailable.extend(&a.nodes);
        }
    }
    result.faulty_nodes = actions
        .iter()
        .filter(|a| {
            !matches!(
                a.fault.kind,
                FaultKind::Delay
                    | FaultKind::Drop
                    | FaultKind::Slow
                    | FaultKind::FillDisk
                    | FaultKind::Restart
            )
        })
        .flat_map(|a| a.nodes.iter())
        .collect::<BTreeSet<_>>()
        .len();
    result.expected = oracle::expect(k, &stripe_nodes(&target), &target.manifest_nodes, &damage);
    sim.start_phase(Phase::DuringRestore);
    let candidates: Vec<(&Saved, &[Vec<u8>])> =
        saves.iter().map(|(s, o)| (s, o.as_slice())).collect();
    let (restored, _) = sim.restore(&candidates, want);
    sim.drain_faults();
    result.outcome = if sim.stuck {
        Outcome::Error("trial exceeded its event bound".into())
    } else {
        restored.outcome
    };
    result.restore_ms = Some(restored.elapsed_us as f64 / 1e3);
    result.bytes_read = restored.bytes_read;
    result.degraded_stripes = restored.degraded;
    if scenario.heal.restart {
        result.heal = Some(heal(&mut sim, &saves, target.step, scenario.heal));
    }
    result
}

fn finish(mut sim: Sim<'_>, mut result: TrialResult) -> TrialResult {
    sim.drain_faults();
    result.expected.recoverable = false;
    result
}

/// The heal phase: every node back up and thawed, links clean, disks given back; then (with
/// `spec.repair`) the repair of step `target` with the client's planner ([`repair`]); then
/// (with `spec.verify`) the step must restore exactly again, and full redundancy means no
/// shard missing or corrupt where the manifest says, no stripe with two shards on a node,
/// and the manifest on m + 1 nodes.
fn heal(
    sim: &mut Sim<'_>,
    saves: &[(Saved, Vec<Vec<u8>>)],
    target: u64,
    spec: HealSpec,
) -> HealOutcome {
    let now = sim.now;
    let ids: Vec<NodeId> = sim.world.nodes.keys().copied().collect();
    for id in ids {
        sim.world.set_state(id, NodeState::Up, now);
        let n = sim.world.nodes.get_mut(&id).expect("listed");
        n.delay_us = 0;
        n.loss = 0.0;
        n.slow = 1.0;
        n.free_bytes = None;
    }
    sim.world.health = world::Health::default();
    let mut out = HealOutcome {
        cluster_back: true,
        verified_step: Some(target),
        restores_after_heal: false,
        repair: None,
        full_redundancy: false,
        bad_shards: 0,
        note: String::new(),
    };
    let mut saves = saves.to_vec();
    let Some(t) = saves.iter().position(|(s, _)| s.step == target) else {
        out.note = format!("step {target} was never saved");
        return out;
    };
    let mut notes = Vec::new();
    if spec.repair {
        let repaired = sim.repair(&mut saves[t].0);
        notes.extend(repaired.problems.iter().map(|p| format!("repair: {p}")));
        out.repair = Some(repaired.outcome);
    }
    if spec.verify {
        let candidates: Vec<(&Saved, &[Vec<u8>])> =
            saves.iter().map(|(s, o)| (s, o.as_slice())).collect();
        let (again, _) = sim.restore(&candidates, Want::Step(target));
        out.restores_after_heal = again.outcome == Outcome::Restored;
        if !out.restores_after_heal {
            notes.push(format!("restore after heal: {:?}", again.outcome));
        }
        let saved = &saves[t].0;
        out.bad_shards = sim.damage(saved).corrupt.len() as u64;
        let doubled = saved.manifest.objects.iter().flat_map(|o| &o.stripes);
        let doubled = doubled.filter(|e| redundancy::crowded_node(e).is_some()).count();
        let holds = |n: &world::Node| n.manifests.get(&saved.step) == Some(&saved.manifest_id);
        let copies = sim.world.nodes.values().filter(|n| holds(n)).count();
        let need = usize::from(sim.code.m) + 1;
        out.full_redundancy = out.bad_shards == 0 && doubled == 0 && copies >= need;
        if out.bad_shards > 0 {
            notes.push(format!("{} shard(s) missing or corrupt", out.bad_shards));
        }
        if doubled > 0 {
            notes.push(format!("{doubled} stripe(s) with two shards on a node"));
        }
        if copies < need {
            notes.push(format!("manifest on {copies} of {need} nodes"));
        }
    }
    out.note = notes.join("; ");
    out
}

/// Runs one scenario on one scheme in fast mode: `trials` trials from `seed` (or the one
/// trial `replay` names), calling `tick` after each.
pub fn run_cell(
    scenario: &Scenario,
    scheme: &Scheme,
    trials: u32,
    seed: u64,
    replay: Option<u64>,
    tick: &dyn Fn(),
) -> CellReport {
    let shape = scenario.cluster_of(scheme);
    let (k, m) = scheme.km();
    let mut placements = BTreeMap::new();
    let results: Vec<TrialResult> = match replay {
        Some(s) => vec![run_trial(scenario, scheme, 0, s, &mut placements)],
        None => (0..trials)
            .map(|t| {
                let r = run_trial(scenario, scheme, t, trial_seed(seed, t), &mut placements);
                tick();
                r
            })
            .collect(),
    };
    let head = CellHead {
        scenario: scenario.name.clone(),
        scheme: scheme.name.clone(),
        k,
        m,
        overhead: scheme.overhead(),
        nodes: shape.nodes,
        mode: "fast".into(),
    };
    CellReport::from_trials(head, results, None)
}
