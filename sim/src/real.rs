//! Real mode: every trial runs against real `rackpoint-store` processes on loopback (the
//! client library's `local_cluster`), each behind a UDP [`Relay`], through the public
//! [`Client`] API. A trial saves a seeded checkpoint, injects its faults (SIGKILL, SIGSTOP,
//! relay partitions, delays and losses, on-disk corruption, a filling disk, a killed client),
//! restores with a fresh client, compares every byte, and heals the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rackpoint_client::cluster_dir::{InitOptions, NODE_DATA_DIR};
use rackpoint_client::codec::{Codec, ObjectLayout};
use rackpoint_client::gc::GcOptions;
use rackpoint_client::local_cluster::{seeded_bytes, LocalCluster, LocalClusterError};
use rackpoint_client::manifest::Manifest;
use rackpoint_client::placement;
use rackpoint_client::repair::{RepairOptions, RepairScope};
use rackpoint_client::restore::Which;
use rackpoint_client::save::{ObjectData, ObjectSource, SaveRequest};
use rackpoint_client::tls::ClientTls;
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::{ClusterMap, JobName, NodeId, ObjectName, Rank, Step, StripeIndex};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::oracle::{self, Damage, Expectation, StripeNodes};
use crate::relay::Relay;
use crate::report::{CellHead, CellReport, HealOutcome, Outcome, RepairOutcome, TrialResult};
use crate::scenario::{CheckpointSpec, ClusterShape, FaultKind, Phase, Scenario, Scheme};
use crate::schedule::{resolve, Action};
use crate::trial_seed;
use rackpoint_proto::limits::{
    SIM_DETECT_POLL_MS, SIM_DETECT_TIMEOUT_MS, SIM_REAL_RESTORE_TIMEOUT_MS,
    SIM_REAL_SAVE_TIMEOUT_MS,
};

/// Why a real-mode cell could not be set up (a trial's own failures are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// The cluster could not be started or controlled.
    #[error(transparent)]
    Cluster(#[from] LocalClusterError),
    /// A relay could not be bound.
    #[error("relay: {0}")]
    Relay(std::io::Error),
    /// The client could not be made.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The scenario does not fit the scheme.
    #[error(transparent)]
    Scenario(#[from] crate::scenario::ScenarioError),
    /// A file of the cluster folder could not be written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

/// What real mode needs from outside.
#[derive(Debug, Clone)]
pub struct RealOptions {
    /// The `rackpoint-store` binary.
    pub store_bin: PathBuf,
    /// A binary whose `save-worker` subcommand saves one part (the simulator itself), run
    /// as a separate process so that `kill_client` can SIGKILL it.
    pub worker_bin: PathBuf,
}

/// The seeded objects of one part: `spec.objects` objects splitting `spec.bytes`.
pub fn checkpoint_objects(spec: &CheckpointSpec, seed: u64) -> Vec<(ObjectName, Vec<u8>)> {
    let n = u64::from(spec.objects);
    (0..n)
        .map(|i| {
            let len = spec.bytes / n + u64::from(i < spec.bytes % n);
            let name = ObjectName::new(format!("obj-{i}")).expect("obj-N is a valid object name");
            (name, seeded_bytes(seed ^ (i + 1).wrapping_mul(0x9E37_79B9), len as usize))
        })
        .collect()
}

fn save_request(
    job: &JobName,
    step: u64,
    world_size: u32,
    objects: &[(ObjectName, Vec<u8>)],
) -> SaveRequest {
    SaveRequest {
        job: job.clone(),
        step: Step(step),
        rank: Rank(0),
        world_size,
        objects: objects
            .iter()
            .map(|(name, bytes)| ObjectData {
                name: name.clone(),
                source: ObjectSource::Memory(Bytes::copy_from_slice(bytes)),
            })
            .collect(),
        user_meta: BTreeMap::new(),
    }
}

/// The `save-worker` subcommand: saves one part of seeded objects through `cluster_file`.
pub async fn save_worker(
    cluster_file: &Path,
    job: &JobName,
    step: u64,
    spec: &CheckpointSpec,
    seed: u64,
) -> Result<(), ClientError> {
    let client = Client::connect(cluster_file)?;
    let objects = checkpoint_objects(spec, seed);
    client.save(save_request(job, step, 1, &objects)).await.map(|_| ())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// One scheme's cluster, behind relays, for the trials of one scenario.
struct Cell {
    cluster: Arc<Mutex<LocalCluster>>,
    relays: BTreeMap<NodeId, Relay>,
    /// The map with relay addresses.
    map: ClusterMap,
    relay_cluster_file: PathBuf,
    tls: ClientTls,
    shape: ClusterShape,
    /// The scheme's parity shards.
    m: usize,
    /// Last, so that the folder is removed only after the nodes (in `cluster`) are killed.
    _dir: tempfile::TempDir,
}

impl Cell {
    async fn start(
        scheme: &Scheme,
        shape: ClusterShape,
        spec: &CheckpointSpec,
        opts: &RealOptions,
        seed: u64,
        label: &str,
    ) -> Result<Self, RealError> {
        let tmp = tempfile::Builder::new()
            .prefix("rackpoint-sim-")
            .tempdir()
            .map_err(|error| RealError::Io { path: std::env::temp_dir(), error })?;
        let dir = tmp.path().to_owned();
        let code = scheme.code(spec.shard_size_bytes)?;
        let mut init = InitOptions::new(shape.nodes);
        init.racks = shape.racks;
        init.k = code.k;
        init.m = code.m;
        init.shard_size_bytes = code.shard_size_bytes;
        // The heal phase sweeps an interrupted save's orphans at once.
        init.node_min_orphan_grace_ms = 0;
        let cluster =
            tokio::task::block_in_place(|| LocalCluster::start(&dir, &init, &opts.store_bin))?;
        let tls = cluster.tls().clone();
        let mut map = cluster.map().clone();
        let mut relays = BTreeMap::new();
        for node in &mut map.nodes {
            let relay = Relay::start(node.addr, seed ^ u64::from(node.id.0))
                .await
                .map_err(RealError::Relay)?;
            node.addr = relay.addr();
            relays.insert(node.id, relay);
        }
        // The relayed map beside the real one, so its TLS paths resolve the same way.
        let relay_cluster_file = dir.join("cluster-relayed.toml");
        std::fs::write(&relay_cluster_file, map.to_toml())
            .map_err(|error| RealError::Io { path: relay_cluster_file.clone(), error })?;
        let cluster = Arc::new(Mutex::new(cluster));
        register(&cluster);
        eprintln!("rackpoint-sim: {label}: {} nodes up in {}", shape.nodes, dir.display());
        Ok(Self {
            _dir: tmp,
            cluster,
            relays,
            map,
            relay_cluster_file,
            tls,
            shape,
            m: usize::from(code.m),
        })
    }

    fn client(&self) -> Result<Client, ClientError> {
        Client::with_map(self.map.clone(), &self.tls)
    }
}

/// Every cluster real mode has started and not yet dropped, so that a signal can stop
/// their nodes (see [`stop_all_clusters`]).
static LIVE: Mutex<Vec<Weak<Mutex<LocalCluster>>>> = Mutex::new(Vec::new());

fn register(cluster: &Arc<Mutex<LocalCluster>>) {
    let mut live = lock(&LIVE);
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(cluster));
}

/// SIGKILLs and reaps every node process of every live real-mode cluster (a cluster that is
/// dropped kills its own nodes; this is for the ones a signal interrupted). Returns how many
/// node processes were stopped.
pub fn stop_all_clusters() -> usize {
    let live: Vec<Arc<Mutex<LocalCluster>>> =
        std::mem::take(&mut *lock(&LIVE)).iter().filter_map(Weak::upgrade).collect();
    let mut stopped = 0;
    for cluster in live {
        let mut c = lock(&cluster);
        let ids: Vec<NodeId> = c.map().nodes.iter().map(|n| n.id).collect();
        for id in ids {
            if c.is_running(id) && c.kill(id).is_ok() {
                stopped += 1;
            }
        }
    }
    stopped
}

/// What the faults have done so far in a trial, for the oracle and the heal phase.
#[derive(Default)]
struct FaultState {
    killed: BTreeSet<NodeId>,
    /// Killed nodes whose data folder was deleted (they restart empty).
    wiped: BTreeSet<NodeId>,
    frozen: BTreeSet<NodeId>,
    partitioned: BTreeSet<NodeId>,
    restarted: BTreeSet<NodeId>,
    filled: BTreeSet<NodeId>,
    corrupt: BTreeSet<(usize, u8)>,
    corrupt_nodes: BTreeSet<NodeId>,
    slow: Vec<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)>,
    errors: Vec<String>,
}

impl FaultState {
    fn unavailable(&self) -> BTreeSet<NodeId> {
        self.killed.iter().chain(&self.frozen).chain(&self.partitioned).copied().collect()
    }
}

/// Every stripe of a manifest in checkpoint order, with its object's layout.
fn stripes_of(manifest: &Manifest) -> Vec<(usize, StripeIndex, StripeNodes)> {
    let mut out = Vec::new();
    for (o, obj) in manifest.objects.iter().enumerate() {
        for (s, stripe) in obj.stripes.iter().enumerate() {
            out.push((
                o,
                StripeIndex(s as u32),
                StripeNodes { nodes: stripe.shards.iter().map(|e| e.node).collect() },
            ));
        }
    }
    out
}

/// Which trial-local context a fault needs when it fires.
struct Ctx<'a> {
    cell: &'a Cell,
    manifest: Option<&'a Manifest>,
    objects: &'a [(ObjectName, Vec<u8>)],
    state: &'a Mutex<FaultState>,
}

/// Bytes from the middle of every shard of `manifest` stored on `node` (at most `limit`),
/// with the shards' places, for on-disk corruption.
fn needles(
    manifest: &Manifest,
    objects: &[(ObjectName, Vec<u8>)],
    node: NodeId,
    limit: usize,
) -> Vec<(usize, u8, Vec<u8>)> {
    let params = manifest.code.params;
    let Ok(codec) = Codec::new(params) else { return Vec::new() };
    let mut out = Vec::new();
    for (flat, (o, s, stripe)) in stripes_of(manifest).into_iter().enumerate() {
        for (i, n) in stripe.nodes.iter().enumerate() {
            if *n != node || out.len() >= limit {
                continue;
            }
            let layout = ObjectLayout::new(params, objects[o].1.len() as u64);
            let r = layout.stripe_range(s);
            let Ok(enc) = codec.encode_stripe(&objects[o].1[r.start as usize..r.end as usize])
            else {
                continue;
            };
            let shard = &enc.shards[i];
            if shard.len() < 64 {
                continue;
            }
            let mid = shard.len() / 2;
            out.push((flat, i as u8, shard[mid - 32..mid + 32].to_vec()));
        }
    }
    out
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Fires one fault now.
async fn fire(ctx: &Ctx<'_>, a: &Action) {
    let cluster = ctx.cell.cluster.clone();
    let note = |e: String| lock(ctx.state).errors.push(e);
    match a.fault.kind {
        FaultKind::Kill | FaultKind::KillRack => {
            for &id in &a.nodes {
                let c = cluster.clone();
                let r = blocking(move || lock(&c).kill(id)).await;
                match r {
                    Ok(_) | Err(LocalClusterError::NotRunning(_)) => {
                        lock(ctx.state).killed.insert(id);
                    }
                    Err(e) => note(format!("kill {id}: {e}")),
                }
            }
        }
        FaultKind::Wipe => {
            for &id in &a.nodes {
                let c = cluster.clone();
                let r = blocking(move || {
                    let mut c = lock(&c);
                    match c.kill(id) {
                        Ok(_) | Err(LocalClusterError::NotRunning(_)) => {}
                        Err(e) => return Err(e.to_string()),
                    }
                    let data = c.node_dir(id).join(NODE_DATA_DIR);
                    std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))
                })
                .await;
                match r {
                    Ok(()) => {
                        let mut s = lock(ctx.state);
                        s.killed.insert(id);
                        s.wiped.insert(id);
                    }
                    Err(e) => note(format!("wipe {id}: {e}")),
                }
            }
        }
        FaultKind::Restart => {
            let ids: Vec<NodeId> = if a.nodes.is_empty() {
                lock(ctx.state).killed.iter().copied().collect()
            } else {
                a.nodes.clone()
            };
            for id in ids {
                let c = cluster.clone();
                match blocking(move || lock(&c).restart(id)).await {
                    Ok(()) => {
                        let mut s = lock(ctx.state);
                        s.killed.remove(&id);
                        s.restarted.insert(id);
                    }
                    Err(e) => note(format!("restart {id}: {e}")),
                }
            }
        }
        FaultKind::Freeze => {
            for &id in &a.nodes {
                match lock(&cluster).pause(id) {
                    Ok(()) => {
                        lock(ctx.state).frozen.insert(id);
                    }
                    Err(e) => note(format!("freeze {id}: {e}")),
                }
            }
        }
        FaultKind::Partition | FaultKind::Delay | FaultKind::Drop => {
            for id in &a.nodes {
                let Some(relay) = ctx.cell.relays.get(id) else { continue };
                match a.fault.kind {
                    FaultKind::Partition => {
                        relay.set_partitioned(true);
                        lock(ctx.state).partitioned.insert(*id);
                    }
                    FaultKind::Delay => relay.set_delay(Duration::from_millis(a.fault.delay_ms)),
                    _ => {
                        relay.set_drop_probability(a.fault.drop_probability);
                        if a.fault.drop_probability >= 1.0 {
                            lock(ctx.state).partitioned.insert(*id);
                        }
                    }
                }
            }
        }
        FaultKind::Corrupt => corrupt(ctx, a).await,
        FaultKind::Slow => {
            for &id in &a.nodes {
                let stop = Arc::new(AtomicBool::new(false));
                let task = tokio::spawn(cycle_stop(
                    cluster.clone(),
                    id,
                    a.fault.run_ms,
                    a.fault.stop_ms,
                    stop.clone(),
                ));
                lock(ctx.state).slow.push((stop, task));
            }
        }
        FaultKind::FillDisk => {
            for &id in &a.nodes {
                if let Err(e) = fill_disk(ctx.cell, id, a.fault.free_bytes).await {
                    note(format!("fill disk of {id}: {e}"));
                } else {
                    lock(ctx.state).filled.insert(id);
                }
            }
        }
        FaultKind::KillClient => {}
    }
}

async fn corrupt(ctx: &Ctx<'_>, a: &Action) {
    let Some(manifest) = ctx.manifest else {
        lock(ctx.state).errors.push("corrupt needs a committed manifest (phase after_save)".into());
        return;
    };
    for &id in &a.nodes {
        let found = needles(manifest, ctx.objects, id, a.fault.shards);
        if found.is_empty() {
            continue;
        }
        let bytes: Vec<Vec<u8>> = found.iter().map(|(_, _, b)| b.clone()).collect();
        let c = ctx.cell.cluster.clone();
        let r = blocking(move || {
            let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
            lock(&c).corrupt_on_disk(id, &refs)
        })
        .await;
        let mut s = lock(ctx.state);
        match r {
            Ok(_) => {
                s.corrupt.extend(found.iter().map(|(flat, i, _)| (*flat, *i)));
                s.corrupt_nodes.insert(id);
                s.restarted.insert(id);
            }
            Err(e) => s.errors.push(format!("corrupt {id}: {e}")),
        }
    }
}

/// A straggler: the node runs `run_ms`, stops `stop_ms`, until told to stop (then runs).
async fn cycle_stop(
    cluster: Arc<Mutex<LocalCluster>>,
    id: NodeId,
    run_ms: u64,
    stop_ms: u64,
    done: Arc<AtomicBool>,
) {
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        if done.load(Ordering::SeqCst) || lock(&cluster).pause(id).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(stop_ms)).await;
        if lock(&cluster).resume(id).is_err() {
            break;
        }
    }
    let _ = lock(&cluster).resume(id);
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

async fn set_capacity(cell: &Cell, id: NodeId, capacity_bytes: u64) -> Result<(), String> {
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

/// Fires the faults of `phase` at their times from now (concurrently with `work`), and
/// returns `work`'s result once it and every fault are done.
async fn with_faults<T>(
    ctx: &Ctx<'_>,
    actions: &[Action],
    phase: Phase,
    work: impl std::future::Future<Output = T>,
) -> T {
    let timed: Vec<&Action> = actions
        .iter()
        .filter(|a| a.fault.phase == phase && a.fault.kind != FaultKind::KillClient)
        .collect();
    let faults = async {
        let start = tokio::time::Instant::now();
        let mut order = timed.clone();
        order.sort_by_key(|a| a.at_ms);
        for a in order {
            tokio::time::sleep_until(start + Duration::from_millis(a.at_ms)).await;
            fire(ctx, a).await;
        }
    };
    let (out, ()) = tokio::join!(work, faults);
    out
}

async fn fire_all(ctx: &Ctx<'_>, actions: &[Action], phase: Phase) {
    for a in actions.iter().filter(|a| a.fault.phase == phase) {
        fire(ctx, a).await;
    }
}

/// Polls `client`'s health view until it holds every node of `want` (bounded).
async fn detect(client: &Client, want: &BTreeSet<NodeId>, since: Instant) -> Option<f64> {
    if want.is_empty() {
        return None;
    }
    let deadline = since + Duration::from_millis(SIM_DETECT_TIMEOUT_MS);
    loop {
        let down: BTreeSet<NodeId> = client.down_nodes().into_iter().collect();
        if want.is_subset(&down) {
            return Some(since.elapsed().as_secs_f64() * 1e3);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(SIM_DETECT_POLL_MS)).await;
    }
}

/// `GetShard` requests each answering node has served since it started.
async fn shards_served(client: &Client) -> BTreeMap<NodeId, u64> {
    let bound = Duration::from_millis(rackpoint_proto::limits::CLIENT_CONNECT_TIMEOUT_MS + 1000);
    let Ok(all) = tokio::time::timeout(bound, client.status()).await else {
        return BTreeMap::new();
    };
    all.into_iter()
        .filter_map(|s| {
            let stats = s.stats.ok()?;
            let served =
                stats.requests.iter().find(|r| r.kind == "GetShard").map_or(0, |r| r.served);
            Some((s.node.id, served))
        })
        .collect()
}

fn classify(
    result: Result<
        Result<
            (
                rackpoint_client::restore::RestoreReport,
                Vec<rackpoint_client::restore::RestoredObject>,
            ),
            ClientError,
        >,
        tokio::time::error::Elapsed,
    >,
    expect_by_step: &dyn Fn(u64) -> Option<Vec<(ObjectName, Vec<u8>)>>,
) -> (Outcome, u64) {
    match result {
        Err(_) => {
            (Outcome::Error(format!("restore hung past {SIM_REAL_RESTORE_TIMEOUT_MS} ms")), 0)
        }
        // A clean refusal, lost or only unavailable (nodes that hold shards do not answer).
        Ok(Err(
            e @ (ClientError::NotEnoughShards { .. } | ClientError::ShardsUnavailable { .. }),
        )) => (Outcome::NotEnoughShards(e.to_string()), 0),
        Ok(Err(
            e @ (ClientError::ManifestNotFound { .. }
            | ClientError::NoCheckpoint { .. }
            | ClientError::NoSuchJob { .. }
            | ClientError::Unavailable { .. }),
        )) => (Outcome::NotFound(e.to_string()), 0),
        Ok(Err(e)) => (Outcome::Error(e.to_string()), 0),
        Ok(Ok((report, got))) => {
            let Some(want) = expect_by_step(report.manifest.step.0) else {
                return (
                    Outcome::WrongBytes(format!(
                        "restored step {} was never saved",
                        report.manifest.step.0
                    )),
                    report.degraded_stripes,
                );
            };
            let same = want.len() == got.len()
                && want.iter().zip(&got).all(|((n, b), r)| *n == r.name && *b == r.bytes);
            if same {
                (Outcome::Restored, report.degraded_stripes)
            } else {
                (
                    Outcome::WrongBytes(format!(
                        "step {}: restored objects differ from the saved ones",
                        report.manifest.step.0
                    )),
                    report.degraded_stripes,
                )
            }
        }
    }
}

/// Runs one scenario on one scheme: `trials` trials from `seed` (or the one trial `replay`
/// names), calling `tick` after each. The trials share one cluster, each with its own job:
/// the heal phase brings full redundancy back and deletes the trial's checkpoints, so the
/// next trial starts from a healthy cluster. A trial whose heal did not make the cluster
/// whole (a node that did not restart, a repair short of full redundancy) is followed by a
/// fresh cluster, so one failed heal cannot poison the trials after it.
pub async fn run_cell(
    scenario: &Scenario,
    scheme: &Scheme,
    trials: u32,
    seed: u64,
    replay: Option<u64>,
    opts: &RealOptions,
    tick: &(dyn Fn() + Sync),
) -> Result<CellReport, RealError> {
    let shape = scenario.cluster_of(scheme);
    let label = format!("{}/{}", scenario.name, scheme.name);
    let mut cell = Cell::start(scheme, shape, &scenario.checkpoint, opts, seed, &label).await?;
    let (k, m) = scheme.km();
    let mut results = Vec::with_capacity(trials as usize);
    let mut clusters = 1;
    for t in 0..trials {
        let tseed = replay.unwrap_or_else(|| trial_seed(seed, t));
        let result = run_trial(scenario, &cell, opts, t, tseed, usize::from(k)).await;
        let whole = result.heal.as_ref().is_some_and(HealOutcome::is_whole);
        results.push(result);
        tick();
        if !whole && t + 1 < trials {
            drop(cell);
            clusters += 1;
            let fresh = seed ^ u64::from(t + 1).wrapping_mul(0xA24B_AED4_963E_E407);
            cell = Cell::start(scheme, shape, &scenario.checkpoint, opts, fresh, &label).await?;
        }
    }
    let head = CellHead {
        scenario: scenario.name.clone(),
        scheme: scheme.name.clone(),
        k,
        m,
        overhead: scheme.overhead(),
        nodes: shape.nodes,
        mode: "real".into(),
    };
    let mut report = CellReport::from_trials(head, results, None);
    report.clusters = clusters;
    Ok(report)
}

async fn run_trial(
    scenario: &Scenario,
    cell: &Cell,
    opts: &RealOptions,
    trial: u32,
    seed: u64,
    k: usize,
) -> TrialResult {
    let mut rng = StdRng::seed_from_u64(seed);
    let actions = resolve(&scenario.faults, cell.shape, cell.m, &mut rng);
    let job = JobName::new(format!("sim-t{trial}")).expect("sim-tN is a valid job name");
    let objects = checkpoint_objects(&scenario.checkpoint, seed);
    let state = Mutex::new(FaultState::default());
    let kill_client = actions.iter().find(|a| a.fault.kind == FaultKind::KillClient).cloned();
    let mut result = TrialResult {
        trial,
        seed,
        faulty_nodes: 0,
        expected: Expectation { recoverable: true, weakest_good: k, most_lost: 0 },
        outcome: Outcome::Restored,
        save_ms: 0.0,
        restore_ms: None,
        bytes_read: 0,
        detect_ms: None,
        degraded_stripes: 0,
        heal: None,
    };
    let watcher = match cell.client() {
        Ok(c) => c,
        Err(e) => {
            result.outcome = Outcome::Error(format!("client: {e}"));
            return result;
        }
    };
    // Saves: a baseline step first when the client is to be killed during the next one.
    let mut saved: BTreeMap<u64, Vec<(ObjectName, Vec<u8>)>> = BTreeMap::new();
    let mut replicas: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
    let step = 1 + u64::from(kill_client.is_some());
    let second_objects =
        kill_client.as_ref().map(|_| checkpoint_objects(&scenario.checkpoint, seed ^ 0xC1));
    {
        let ctx = Ctx { cell, manifest: None, objects: &objects, state: &state };
        fire_all(&ctx, &actions, Phase::BeforeSave).await;
        let started = Instant::now();
        let save = async {
            let mut replicas = BTreeMap::new();
            if kill_client.is_some() {
                let r = watcher.save(save_request(&job, 1, 1, &objects)).await?;
                replicas.insert(1, r.manifest_nodes);
            }
            match (&kill_client, &second_objects) {
                (Some(a), Some(_)) => {
                    run_killed_worker(
                        cell,
                        opts,
                        &job,
                        step,
                        &scenario.checkpoint,
                        seed ^ 0xC1,
                        a.at_ms,
                    )
                    .await;
                }
                _ => {
                    let r = watcher.save(save_request(&job, step, 1, &objects)).await?;
                    replicas.insert(step, r.manifest_nodes);
                }
            }
            Ok::<_, ClientError>(replicas)
        };
        let bounded = tokio::time::timeout(Duration::from_millis(SIM_REAL_SAVE_TIMEOUT_MS), save);
        let saved_ok = with_faults(&ctx, &actions, Phase::DuringSave, bounded).await;
        result.save_ms = started.elapsed().as_secs_f64() * 1e3;
        match saved_ok {
            Ok(Ok(r)) => replicas = r,
            Ok(Err(e)) => result.outcome = Outcome::SaveFailed(e.to_string()),
            Err(_) => {
                result.outcome =
                    Outcome::SaveFailed(format!("save hung past {SIM_REAL_SAVE_TIMEOUT_MS} ms"))
            }
        }
    }
    if kill_client.is_some() {
        saved.insert(1, objects.clone());
        if let Some(o) = &second_objects {
            saved.insert(step, o.clone());
        }
    } else {
        saved.insert(step, objects.clone());
    }
    if result.outcome == Outcome::Restored {
        let trial = TrialCtx {
            cell,
            actions: &actions,
            job: &job,
            saved: &saved,
            replicas: &replicas,
            watcher: &watcher,
            state: &state,
            k,
        };
        restore_phase(&trial, step, kill_client.is_some(), &mut result).await;
    }
    result.heal = Some(heal(scenario, cell, &job, &saved, &state).await);
    let s = lock(&state);
    if !s.errors.is_empty() && result.outcome == Outcome::Restored && !result.expected.recoverable {
        result.outcome = Outcome::Error(format!("fault injection failed: {}", s.errors.join("; ")));
    }
    result
}

/// Runs the save worker for `step` and SIGKILLs it `at_ms` in (if it is still running).
async fn run_killed_worker(
    cell: &Cell,
    opts: &RealOptions,
    job: &JobName,
    step: u64,
    spec: &CheckpointSpec,
    seed: u64,
    at_ms: u64,
) {
    let spawned = tokio::process::Command::new(&opts.worker_bin)
        .arg("save-worker")
        .arg("--cluster")
        .arg(&cell.relay_cluster_file)
        .args(["--job", job.as_str(), "--step", &step.to_string(), "--seed", &seed.to_string()])
        .args(["--bytes", &spec.bytes.to_string(), "--objects", &spec.objects.to_string()])
        .args(["--shard-size", &spec.shard_size_bytes.to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = spawned else { return };
    tokio::select! {
        _ = child.wait() => {}
        () = tokio::time::sleep(Duration::from_millis(at_ms)) => {
            let _ = child.start_kill(); // SIGKILL
            let _ = child.wait().await;
        }
    }
}

/// What the restore phase of one trial works with.
struct TrialCtx<'a> {
    cell: &'a Cell,
    actions: &'a [Action],
    job: &'a JobName,
    saved: &'a BTreeMap<u64, Vec<(ObjectName, Vec<u8>)>>,
    /// Manifest replica nodes per step, as the saves reported them.
    replicas: &'a BTreeMap<u64, Vec<NodeId>>,
    watcher: &'a Client,
    state: &'a Mutex<FaultState>,
    k: usize,
}

/// Finds the committed part, injects the after-save faults, measures detection, asks the
/// oracle, restores with a fresh client (faults during the restore), and compares.
async fn restore_phase(t: &TrialCtx<'_>, step: u64, latest: bool, result: &mut TrialResult) {
    let TrialCtx { cell, actions, job, saved, replicas, watcher, state, k } = *t;
    let found = match watcher.resume(job).await {
        Ok(Some(point)) => point.parts.into_iter().next(),
        _ => None,
    };
    let Some(manifest) = found else {
        result.outcome = Outcome::Error("the saved checkpoint is not listed".into());
        return;
    };
    let restore_step = manifest.step.0;
    let served_before = shards_served(watcher).await;
    let objects = &saved[&restore_step];
    let ctx = Ctx { cell, manifest: Some(&manifest), objects, state };
    let injected = Instant::now();
    fire_all(&ctx, actions, Phase::AfterSave).await;
    let want = lock(state).unavailable();
    result.detect_ms = detect(watcher, &want, injected).await;
    // The oracle, from where the shards really went and what the faults took (during the
    // restore too: those faults are known from the schedule).
    let mut damage = {
        let s = lock(state);
        Damage { unavailable: s.unavailable(), corrupt: s.corrupt.clone() }
    };
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
    let stripes: Vec<StripeNodes> = stripes_of(&manifest).into_iter().map(|(_, _, s)| s).collect();
    let manifest_nodes = match replicas.get(&restore_step) {
        Some(nodes) => nodes.clone(),
        None => {
            let copies = usize::from(manifest.code.params.m) + 1;
            placement::place_manifest(&cell.map, job, Step(restore_step), Rank(0), copies, &|_| {
                false
            })
            .unwrap_or_default()
        }
    };
    result.expected = oracle::expect(k, &stripes, &manifest_nodes, &damage);
    {
        let s = lock(state);
        result.faulty_nodes = s.unavailable().union(&s.corrupt_nodes).count();
    }
    let restorer = match cell.client() {
        Ok(c) => c,
        Err(e) => {
            result.outcome = Outcome::Error(format!("client: {e}"));
            return;
        }
    };
    let which = if latest { Which::Latest } else { Which::Step(Step(step)) };
    let started = Instant::now();
    let bounded = tokio::time::timeout(
        Duration::from_millis(SIM_REAL_RESTORE_TIMEOUT_MS),
        restorer.restore(job, which, Rank(0)),
    );
    let restored = with_faults(&ctx, actions, Phase::DuringRestore, bounded).await;
    result.restore_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    let lookup = |s: u64| saved.get(&s).cloned();
    let (outcome, degraded) = classify(restored, &lookup);
    result.outcome = outcome;
    result.degraded_stripes = degraded;
    // Shard bytes read: GetShard requests served during the restore, times the shard size
    // (an upper bound for short last stripes). Restarted nodes count from zero.
    let after = {
        heal_network_and_processes(cell, state).await;
        shards_served(watcher).await
    };
    let restarted = lock(state).restarted.clone();
    let served: u64 = after
        .iter()
        .map(|(id, n)| {
            n.saturating_sub(if restarted.contains(id) {
                0
            } else {
                served_before.get(id).copied().unwrap_or(0)
            })
        })
        .sum();
    result.bytes_read = served * u64::from(manifest.code.params.shard_size_bytes);
}

/// Undoes every fault that holds a node down: slow cycles, freezes, relays, kills, disks.
async fn heal_network_and_processes(cell: &Cell, state: &Mutex<FaultState>) {
    let (slow, frozen, killed, filled) = {
        let mut s = lock(state);
        (
            std::mem::take(&mut s.slow),
            std::mem::take(&mut s.frozen),
            s.killed.clone(),
            std::mem::take(&mut s.filled),
        )
    };
    for (stop, task) in slow {
        stop.store(true, Ordering::SeqCst);
        let _ = task.await;
    }
    for id in frozen {
        let _ = lock(&cell.cluster).resume(id);
    }
    for relay in cell.relays.values() {
        relay.clear();
    }
    lock(state).partitioned.clear();
    for id in killed {
        let c = cell.cluster.clone();
        if blocking(move || lock(&c).restart(id)).await.is_ok() {
            let mut s = lock(state);
            s.killed.remove(&id);
            s.restarted.insert(id);
        }
    }
    for id in filled {
        if set_capacity(cell, id, 0).await.is_ok() {
            lock(state).restarted.insert(id);
        }
    }
}

/// The heal phase: everything back (restarts, thaws, relays cleared, disks given back),
/// then the client's repair over the trial's job, then the newest committed step must
/// restore exactly and `verify` must find full redundancy; last, the trial's checkpoints
/// (and the orphans of an interrupted save) are deleted so the cell's cluster can serve the
/// next trial.
async fn heal(
    scenario: &Scenario,
    cell: &Cell,
    job: &JobName,
    saved: &BTreeMap<u64, Vec<(ObjectName, Vec<u8>)>>,
    state: &Mutex<FaultState>,
) -> HealOutcome {
    heal_network_and_processes(cell, state).await;
    let mut out = HealOutcome {
        cluster_back: false,
        verified_step: None,
        restores_after_heal: false,
        repair: None,
        full_redundancy: false,
        bad_shards: 0,
        note: String::new(),
    };
    let still_down = lock(state).killed.clone();
    out.cluster_back = still_down.is_empty();
    let mut notes = Vec::new();
    if !out.cluster_back {
        notes.push(format!("nodes {still_down:?} did not restart"));
    }
    // A fresh client: the trial's clients still hold the faults' down marks.
    let Ok(client) = cell.client() else {
        out.note = "no client".into();
        return out;
    };
    // The newest committed step: the interrupted save of a killed client is not one.
    let committed: Vec<u64> = match bounded(client.list(job)).await {
        Ok(list) => list.into_iter().filter(|c| c.complete).map(|c| c.step.0).collect(),
        Err(e) => {
            notes.push(format!("list: {e}"));
            Vec::new()
        }
    };
    let newest = committed.iter().copied().filter(|s| saved.contains_key(s)).max();
    out.verified_step = newest;
    if newest.is_none() && !saved.is_empty() {
        notes.push("no committed step to heal".into());
    }
    if let (true, Some(_)) = (scenario.heal.repair, newest) {
        let options = RepairOptions::limited_to(None);
        let started = Instant::now();
        let repaired = bounded(client.repair(job, RepairScope::All, options)).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        out.repair = Some(match repaired {
            Ok(r) => {
                for p in r.parts.iter().flat_map(|p| &p.problems) {
                    notes.push(format!("repair: {}", p.problem));
                }
                RepairOutcome {
                    ms,
                    complete: r.is_complete(),
                    shards_written: r.shards_written(),
                    moved: r.parts.iter().map(|p| p.moved).sum(),
                    bytes_written: r.parts.iter().map(|p| p.bytes_written).sum(),
                    bytes_read: r.bytes_read(),
                    manifest_copies_added: r.parts.iter().map(|p| p.manifest_copies_added).sum(),
                    error: None,
                }
            }
            Err(e) => {
                notes.push(format!("repair: {e}"));
                RepairOutcome { ms, error: Some(e.to_string()), ..RepairOutcome::default() }
            }
        });
    }
    if let (true, Some(step)) = (scenario.heal.verify, newest) {
        let got = bounded(client.restore(job, Which::Step(Step(step)), Rank(0))).await;
        out.restores_after_heal = match &got {
            Ok((_, objs)) => saved.get(&step).is_some_and(|w| {
                w.len() == objs.len()
                    && w.iter().zip(objs).all(|((n, b), o)| *n == o.name && *b == o.bytes)
            }),
            Err(e) => {
                notes.push(format!("restore after heal: {e}"));
                false
            }
        };
        match bounded(client.verify(job, Step(step))).await {
            Ok(report) => {
                out.bad_shards = report.bad_shards.len() as u64;
                out.full_redundancy = report.is_healthy();
                if !out.full_redundancy {
                    notes.push(format!(
                        "verify: {} bad shard(s), {} chain problem(s), {} stripe(s) doubled on a node",
                        out.bad_shards,
                        report.chain_problems.len(),
                        report.degraded_placement.len()
                    ));
                }
            }
            Err(e) => notes.push(format!("verify: {e}")),
        }
    }
    for &step in saved.keys() {
        let _ = bounded(client.delete(job, Step(step))).await;
    }
    if saved.keys().any(|s| !committed.contains(s)) {
        // Shards of the interrupted save have no manifest: sweep them now, with no grace.
        let _ =
            bounded(client.gc(job, GcOptions { keep: 0, orphan_grace_ms: 0, force: false })).await;
    }
    out.note = notes.join("; ");
    out
}

/// `work`, bounded by the real-mode restore bound (a hung heal step is an error, not a hang).
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_millis(SIM_REAL_RESTORE_TIMEOUT_MS), work).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("hung past {SIM_REAL_RESTORE_TIMEOUT_MS} ms")),
    }
}
