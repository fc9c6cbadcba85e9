//! Real mode: every trial runs against real `rackpoint-store` processes on loopback (the
//! client library's `local_cluster`), each behind a UDP [`Relay`](crate::relay::Relay),
//! through the public [`Client`] API. A trial saves a seeded checkpoint ([`save`]), injects
//! its faults ([`faults`], [`disk`]: SIGKILL, SIGSTOP, relay partitions, delays and losses,
//! on-disk corruption, a filling disk, a killed client), restores with a fresh client and
//! compares every byte ([`restore`]), and heals the cluster ([`heal`]). The trials of a cell
//! share one cluster ([`cell`]).

mod cell;
mod disk;
mod faults;
mod heal;
mod restore;
mod save;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use rackpoint_client::manifest::Manifest;
use rackpoint_client::restore::Which;
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::{JobName, Step, StripeIndex};
use rand::rngs::StdRng;
use rand::SeedableRng;

pub use cell::stop_all_clusters;
pub use save::save_worker;

use crate::oracle::StripeNodes;
use crate::report::{CellHead, CellReport, HealOutcome, Outcome, TrialResult};
use crate::scenario::{CheckpointSpec, FaultKind, Scenario, Scheme};
use crate::schedule::{resolve, Action};
use crate::trial_seed;
use crate::workload::{self, PlannedSave};
use cell::{lock, Cell};
use faults::FaultState;

/// Why a real-mode cell could not be set up (a trial's own failures are outcomes).
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// The cluster could not be started or controlled.
    #[error(transparent)]
    Cluster(#[from] rackpoint_client::local_cluster::LocalClusterError),
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

/// What the phases of one trial work with.
struct Trial<'a> {
    cell: &'a Cell,
    /// The trial's faults, resolved from its seed.
    actions: &'a [Action],
    job: &'a JobName,
    spec: &'a CheckpointSpec,
    /// The checkpoints the trial saves, by step (see [`workload::trial_saves`]).
    saves: &'a BTreeMap<u64, PlannedSave>,
    /// The client that saves and watches the faults (its health view measures detection).
    watcher: &'a Client,
    state: &'a Mutex<FaultState>,
    /// The scheme's data shards.
    k: usize,
}

impl Trial<'_> {
    /// The step the trial's save faults strike.
    fn last_step(&self) -> u64 {
        last_step(self.saves)
    }
}

/// The last step of `saves` (1 if there is none).
fn last_step(saves: &BTreeMap<u64, PlannedSave>) -> u64 {
    saves.keys().next_back().copied().unwrap_or(1)
}

/// One trial: save, faults, restore judged by the oracle, heal.
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
    let kill_client = actions.iter().find(|a| a.fault.kind == FaultKind::KillClient);
    let saves = workload::trial_saves(&scenario.checkpoint, seed, kill_client.is_some());
    let state = Mutex::new(FaultState::default());
    let mut result = TrialResult::fresh(trial, seed, k);
    let watcher = match cell.client() {
        Ok(c) => c,
        Err(e) => {
            result.outcome = Outcome::Error(format!("client: {e}"));
            return result;
        }
    };
    let t = Trial {
        cell,
        actions: &actions,
        job: &job,
        spec: &scenario.checkpoint,
        saves: &saves,
        watcher: &watcher,
        state: &state,
        k,
    };
    let replicas = save::save_phase(&t, opts, kill_client, &mut result).await;
    if result.outcome == Outcome::Restored {
        // A killed client's save may not have committed: the restore takes the newest.
        let which = match kill_client {
            Some(_) => Which::Latest,
            None => Which::Step(Step(t.last_step())),
        };
        restore::restore_phase(&t, &replicas, which, &mut result).await;
    }
    result.heal = Some(heal::heal(&scenario.heal, &t).await);
    let errors = std::mem::take(&mut lock(&state).errors);
    if !errors.is_empty() && result.outcome == Outcome::Restored && !result.expected.recoverable {
        result.outcome = Outcome::Error(format!("fault injection failed: {}", errors.join("; ")));
    }
    result
}

/// Every stripe of a manifest in checkpoint order: its object's number, its index in the
/// object, and its shards' nodes.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracle::Expectation;
    use rackpoint_client::codec::{Codec, ObjectLayout};
    use rackpoint_client::manifest::{
        CodeSpec, ObjectEntry, ShardEntry, StripeEntry, MANIFEST_FORMAT_VERSION,
    };
    use rackpoint_proto::{CodeParams, Digest, NodeId, ObjectName, Rank};

    use crate::workload::Objects;

    /// Seeded objects of the given lengths, named `o0`, `o1`, ...
    pub(super) fn objects(lens: &[usize]) -> Objects {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| {
                let name = ObjectName::new(format!("o{i}")).expect("valid name");
                let bytes = rackpoint_client::local_cluster::seeded_bytes(i as u64 + 1, len);
                (name, bytes)
            })
            .collect()
    }

    /// Every stripe's shards as encoded, with their nodes, in checkpoint order.
    pub(super) type PlacedShards = Vec<Vec<(NodeId, Vec<u8>)>>;

    /// The manifest of `objects` under `k + m` with shards of `shard_size` bytes, shard `i`
    /// of the `flat`-th stripe on node `(flat + i) mod nodes + 1`; and every stripe's shards
    /// as encoded, with their nodes.
    pub(super) fn manifest_of(
        k: u8,
        m: u8,
        shard_size: u32,
        objects: &Objects,
        nodes: u32,
    ) -> (Manifest, PlacedShards) {
        let params = CodeParams::new(k, m, shard_size).expect("valid code");
        let codec = Codec::new(params).expect("a codec");
        let mut shards = Vec::new();
        let mut entries = Vec::new();
        for (name, bytes) in objects {
            let layout = ObjectLayout::new(params, bytes.len() as u64);
            let mut stripes = Vec::new();
            for s in 0..layout.stripe_count() {
                let r = layout.stripe_range(StripeIndex(s));
                let encoded =
                    codec.encode_stripe(&bytes[r.start as usize..r.end as usize]).expect("encode");
                let flat = shards.len() as u32;
                let placed: Vec<(NodeId, Vec<u8>)> = encoded
                    .shards
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| (NodeId((flat + i as u32) % nodes + 1), b))
                    .collect();
                let entries =
                    placed.iter().map(|(n, b)| ShardEntry { node: *n, hash: Digest::of(b) });
                stripes.push(StripeEntry { shards: entries.collect() });
                shards.push(placed);
            }
            entries.push(ObjectEntry {
                name: name.clone(),
                len: bytes.len() as u64,
                hash: Digest::of(bytes),
                stripes,
            });
        }
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            job: JobName::new("sim-t0").expect("valid job"),
            step: Step(1),
            rank: Rank(0),
            world_size: 1,
            writer: "test".into(),
            code: CodeSpec::for_params(params),
            objects: entries,
            user_meta: BTreeMap::new(),
            prev: None,
        };
        (manifest, shards)
    }

    #[test]
    fn stripes_come_in_checkpoint_order_with_their_nodes() {
        let objects = objects(&[5_000, 100, 2_048]);
        let (manifest, shards) = manifest_of(2, 1, 1024, &objects, 5);
        let got = stripes_of(&manifest);
        let places: Vec<(usize, u32)> = got.iter().map(|(o, s, _)| (*o, s.0)).collect();
        assert_eq!(places, vec![(0, 0), (0, 1), (0, 2), (1, 0), (2, 0)]);
        for ((_, _, nodes), placed) in got.iter().zip(&shards) {
            let want: Vec<NodeId> = placed.iter().map(|(n, _)| *n).collect();
            assert_eq!(nodes.nodes, want);
        }
    }

    #[test]
    fn the_last_step_is_the_killed_save_when_there_is_one() {
        let spec = CheckpointSpec { bytes: 100, objects: 1, world_size: 1, shard_size_bytes: 64 };
        assert_eq!(last_step(&workload::trial_saves(&spec, 3, false)), 1);
        assert_eq!(last_step(&workload::trial_saves(&spec, 3, true)), 2);
        assert_eq!(last_step(&BTreeMap::new()), 1);
    }

    #[test]
    fn a_fresh_result_expects_a_clean_restore() {
        let r = TrialResult::fresh(4, 99, 3);
        assert_eq!((r.trial, r.seed), (4, 99));
        assert_eq!(r.outcome, Outcome::Restored);
        assert_eq!(r.expected, Expectation { recoverable: true, weakest_good: 3, most_lost: 0 });
        assert!(r.heal.is_none() && r.restore_ms.is_none());
    }
}
