//! Scenario files: the TOML a simulation run is described by (schemes, cluster, checkpoint,
//! training-job model, fault schedule), parsed with serde and validated into typed errors
//! that name the field and the bound it broke.

use std::path::Path;

use rackpoint_proto::limits::{MAX_NODES, MAX_SHARD_BYTES, MAX_TOTAL_SHARDS, MIN_SHARD_BYTES};
use rackpoint_proto::CodeParams;
use serde::{Deserialize, Serialize};

use rackpoint_proto::limits::{
    SIM_MAX_CHECKPOINT_BYTES, SIM_MAX_FAULTS, SIM_MAX_FAULT_TIME_MS, SIM_MAX_NOTE_CHARS,
    SIM_MAX_OBJECTS, SIM_MAX_SCENARIO_FILE_BYTES, SIM_MAX_SCHEMES, SIM_MAX_TRIALS,
};

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is larger than a scenario may be.
    #[error("{path}: {len} bytes, over the {max}-byte limit for a scenario")]
    TooLarge {
        /// The file.
        path: String,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The TOML did not parse or has unknown or missing fields.
    #[error("cannot parse scenario: {0}")]
    Parse(String),
    /// A field is out of bounds or inconsistent with another.
    #[error("scenario field `{field}`: {reason}")]
    Invalid {
        /// The field (a dotted path).
        field: String,
        /// What is wrong, with the bound.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid { field: field.into(), reason: reason.into() }
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in tables and file names.
    pub name: String,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Trials per scheme unless `--trials` says otherwise.
    #[serde(default = "default_trials")]
    pub trials: u32,
    /// The run's seed unless `--seed` says otherwise.
    #[serde(default)]
    pub seed: u64,
    /// The redundancy schemes compared, each on its own cluster: a preset name (see
    /// [`Scheme::preset`]) or a table.
    #[serde(deserialize_with = "schemes_from_toml")]
    pub schemes: Vec<Scheme>,
    /// Overrides every scheme's cluster size (for example 1,000 nodes in fast mode).
    #[serde(default)]
    pub cluster: Option<ClusterShape>,
    /// What is saved.
    pub checkpoint: CheckpointSpec,
    /// The training job the costs are priced for.
    pub job: JobModel,
    /// The faults of every trial.
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Fast mode only: draw each trial's faults from the seed under this atlas instead.
    #[serde(default)]
    pub atlas: Option<Atlas>,
    /// The heal phase after each trial.
    #[serde(default)]
    pub heal: HealSpec,
    /// The durability model's inputs (optional: scenarios that price durability carry it).
    #[serde(default)]
    pub durability: Option<DurabilitySpec>,
}

fn default_trials() -> u32 {
    20
}

/// Nodes and racks of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterShape {
    /// Storage nodes.
    pub nodes: usize,
    /// Racks (failure domains); node `id` is in rack `(id - 1) mod racks`.
    pub racks: usize,
}

/// A redundancy scheme: Reed-Solomon `k + m`, or `copies`-way replication, which the client
/// stores as Reed-Solomon with `k = 1, m = copies - 1` (every shard is the whole stripe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheme {
    /// Name in tables, e.g. `rs-4+2`, `rep-3`.
    pub name: String,
    /// `rs` or `replication`.
    pub kind: SchemeKind,
    /// Data shards (rs only).
    #[serde(default)]
    pub k: Option<u8>,
    /// Parity shards (rs only).
    #[serde(default)]
    pub m: Option<u8>,
    /// Copies (replication only).
    #[serde(default)]
    pub copies: Option<u8>,
    /// Nodes and racks of this scheme's cluster.
    pub cluster: ClusterShape,
}

/// The two families of schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemeKind {
    /// Reed-Solomon `k + m`.
    Rs,
    /// `copies`-way replication.
    Replication,
}

/// A scheme as written: a preset's name or a full table.
#[derive(Deserialize)]
#[serde(untagged)]
enum SchemeSpec {
    Preset(String),
    Table(Scheme),
}

fn schemes_from_toml<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Scheme>, D::Error> {
    let specs = Vec::<SchemeSpec>::deserialize(d)?;
    specs
        .into_iter()
        .map(|spec| match spec {
            SchemeSpec::Table(s) => Ok(s),
            SchemeSpec::Preset(name) => Scheme::preset(&name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown scheme preset {name:?} (known: {})",
                    SCHEME_PRESETS.join(", ")
                ))
            }),
        })
        .collect()
}

/// The scheme presets: the issue's four, plus RS 2+2 at 2-way replication's overhead.
pub const SCHEME_PRESETS: [&str; 5] = ["rs-4+2", "rs-8+3", "rep-3", "rep-2", "rs-2+2"];

impl Scheme {
    /// A preset: `rs-4+2` and `rs-2+2` on 6 nodes in 3 racks, `rs-8+3` on 12 nodes in 4
    /// racks, `rep-3` and `rep-2` (3- and 2-way replication) on 6 nodes in 3 racks.
    pub fn preset(name: &str) -> Option<Self> {
        let six = ClusterShape { nodes: 6, racks: 3 };
        let (kind, k, m, copies, cluster) = match name {
            "rs-4+2" => (SchemeKind::Rs, Some(4), Some(2), None, six),
            "rs-2+2" => (SchemeKind::Rs, Some(2), Some(2), None, six),
            "rs-8+3" => {
                (SchemeKind::Rs, Some(8), Some(3), None, ClusterShape { nodes: 12, racks: 4 })
            }
            "rep-3" => (SchemeKind::Replication, None, None, Some(3), six),
            "rep-2" => (SchemeKind::Replication, None, None, Some(2), six),
            _ => return None,
        };
        Some(Self { name: name.to_owned(), kind, k, m, copies, cluster })
    }

    /// `(k, m)` as the codec sees it (replication is `k = 1, m = copies - 1`).
    pub fn km(&self) -> (u8, u8) {
        match self.kind {
            SchemeKind::Rs => (self.k.unwrap_or(0), self.m.unwrap_or(0)),
            SchemeKind::Replication => (1, self.copies.unwrap_or(1).saturating_sub(1)),
        }
    }

    /// Bytes stored per byte saved: `(k + m) / k`.
    pub fn overhead(&self) -> f64 {
        let (k, m) = self.km();
        (f64::from(k) + f64::from(m)) / f64::from(k.max(1))
    }

    /// The code for a shard size. Replication uses whole stripes of `shard_size_bytes`.
    pub fn code(&self, shard_size_bytes: u32) -> Result<CodeParams, ScenarioError> {
        let (k, m) = self.km();
        CodeParams::new(k, m, shard_size_bytes)
            .map_err(|e| invalid(format!("schemes.{}", self.name), e.to_string()))
    }
}

/// What one trial saves: one part per rank of `world_size`, each of `objects` objects
/// that add up to `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Bytes per part.
    pub bytes: u64,
    /// Objects per part.
    pub objects: u32,
    /// Ranks writing parts (real mode saves rank 0's part; the job model scales).
    #[serde(default = "one")]
    pub world_size: u32,
    /// Bytes per shard.
    pub shard_size_bytes: u32,
}

fn one() -> u32 {
    1
}

/// The training job whose failures are priced. `preset` fills the anchored values (the
/// fields given beside it override them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobModel {
    /// `llama3-16k` or `100k-gpu` (see [`JobModel::resolve`]).
    #[serde(default)]
    pub preset: Option<String>,
    /// GPUs in the job.
    #[serde(default)]
    pub gpus: Option<u64>,
    /// Price of one GPU-hour, in dollars.
    #[serde(default)]
    pub price_per_gpu_hour: Option<f64>,
    /// Seconds per training step.
    #[serde(default)]
    pub step_time_s: Option<f64>,
    /// Seconds between checkpoints.
    #[serde(default)]
    pub checkpoint_interval_s: Option<f64>,
    /// Seconds to notice a failure (collective timeout, health check).
    #[serde(default)]
    pub detect_s: Option<f64>,
    /// Seconds to reschedule and restart the job's processes.
    #[serde(default)]
    pub restart_s: Option<f64>,
    /// Mean time between job interruptions, in hours.
    #[serde(default)]
    pub job_mtbf_hours: Option<f64>,
    /// Seconds training stalls per checkpoint save of one copy of the checkpoint (overhead
    /// 1); a scheme's stall is this times its overhead (`cost::scheme_stall_s`).
    #[serde(default)]
    pub save_stall_s: Option<f64>,
    /// Seconds a restore takes at the job's scale (when not measured).
    #[serde(default)]
    pub restore_s: Option<f64>,
}

/// A job model with every value known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResolvedJob {
    /// GPUs in the job.
    pub gpus: u64,
    /// Dollars per GPU-hour.
    pub price_per_gpu_hour: f64,
    /// Seconds per step.
    pub step_time_s: f64,
    /// Seconds between checkpoints.
    pub checkpoint_interval_s: f64,
    /// Seconds to notice a failure.
    pub detect_s: f64,
    /// Seconds to restart.
    pub restart_s: f64,
    /// Mean hours between interruptions.
    pub job_mtbf_hours: f64,
    /// Seconds of stall per save of one copy (overhead 1; see `cost::scheme_stall_s`).
    pub save_stall_s: f64,
    /// Seconds per restore.
    pub restore_s: f64,
}

/// Llama 3 405B pre-training: 16,384 H100s, 419 unexpected interruptions in 54 days
/// (Meta, "The Llama 3 Herd of Models", 2024): one every 54 * 24 / 419 = 3.09 hours.
pub const LLAMA3_16K: ResolvedJob = ResolvedJob {
    gpus: 16_384,
    price_per_gpu_hour: 2.0,
    step_time_s: 5.0,
    checkpoint_interval_s: 1800.0,
    detect_s: 120.0,
    restart_s: 600.0,
    job_mtbf_hours: 54.0 * 24.0 / 419.0,
    save_stall_s: 30.0,
    restore_s: 120.0,
};

/// A 100,000-GPU job failing about every 30 minutes (the rate extrapolated from per-GPU
/// failure rates at that scale).
pub const GPU_100K: ResolvedJob = ResolvedJob {
    gpus: 100_000,
    price_per_gpu_hour: 2.0,
    step_time_s: 5.0,
    checkpoint_interval_s: 600.0,
    detect_s: 120.0,
    restart_s: 600.0,
    job_mtbf_hours: 0.5,
    save_stall_s: 30.0,
    restore_s: 120.0,
};

impl JobModel {
    /// The preset's values with the given fields laid over them; every value checked.
    pub fn resolve(&self) -> Result<ResolvedJob, ScenarioError> {
        let base = match self.preset.as_deref() {
            Some("llama3-16k") => Some(LLAMA3_16K),
            Some("100k-gpu") => Some(GPU_100K),
            Some(other) => {
                return Err(invalid(
                    "job.preset",
                    format!("unknown preset {other:?} (known: llama3-16k, 100k-gpu)"),
                ))
            }
            None => None,
        };
        let pick = |field: &str, v: Option<f64>, b: Option<f64>| -> Result<f64, ScenarioError> {
            let value = v
                .or(b)
                .ok_or_else(|| invalid(format!("job.{field}"), "missing (give it or a preset)"))?;
            if !value.is_finite() || value < 0.0 {
                return Err(invalid(format!("job.{field}"), format!("{value} is not >= 0")));
            }
            Ok(value)
        };
        let gpus =
            self.gpus.or(base.map(|b| b.gpus)).ok_or_else(|| invalid("job.gpus", "missing"))?;
        if gpus == 0 {
            return Err(invalid("job.gpus", "must be at least 1"));
        }
        let job = ResolvedJob {
            gpus,
            price_per_gpu_hour: pick(
                "price_per_gpu_hour",
                self.price_per_gpu_hour,
                base.map(|b| b.price_per_gpu_hour),
            )?,
            step_time_s: pick("step_time_s", self.step_time_s, base.map(|b| b.step_time_s))?,
            checkpoint_interval_s: pick(
                "checkpoint_interval_s",
                self.checkpoint_interval_s,
                base.map(|b| b.checkpoint_interval_s),
            )?,
            detect_s: pick("detect_s", self.detect_s, base.map(|b| b.detect_s))?,
            restart_s: pick("restart_s", self.restart_s, base.map(|b| b.restart_s))?,
            job_mtbf_hours: pick(
                "job_mtbf_hours",
                self.job_mtbf_hours,
                base.map(|b| b.job_mtbf_hours),
            )?,
            save_stall_s: pick("save_stall_s", self.save_stall_s, base.map(|b| b.save_stall_s))?,
            restore_s: pick("restore_s", self.restore_s, base.map(|b| b.restore_s))?,
        };
        if job.job_mtbf_hours <= 0.0 || job.checkpoint_interval_s <= 0.0 {
            return Err(invalid("job", "job_mtbf_hours and checkpoint_interval_s must be > 0"));
        }
        Ok(job)
    }
}

/// When a fault fires, relative to the trial's save and restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the save starts (the save must work around it).
    BeforeSave,
    /// `at_ms` after the save starts.
    DuringSave,
    /// After the save is committed, before the restore.
    AfterSave,
    /// `at_ms` after the restore starts.
    DuringRestore,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL `count` random nodes (or `nodes`).
    Kill,
    /// SIGKILL every node of one rack (`rack`, or drawn from the seed).
    KillRack,
    /// SIGKILL `count` nodes and delete their data folders: a lost disk. The heal phase
    /// starts them empty, and repair must rebuild every shard they held.
    Wipe,
    /// Start killed nodes again (the ones named, or every killed one).
    Restart,
    /// SIGSTOP: sockets stay open, nothing is answered.
    Freeze,
    /// The relay drops every datagram to and from the node.
    Partition,
    /// The relay delays every datagram by `delay_ms`.
    Delay,
    /// The relay drops each datagram with probability `drop_probability`.
    Drop,
    /// Flip bytes inside the node's stored shards of the checkpoint, on disk.
    Corrupt,
    /// A straggler: the node runs `run_ms` then is stopped `stop_ms`, over and over (its
    /// disk and its network slow alike).
    Slow,
    /// The node's capacity is set `free_bytes` above what it holds, so its disk fills
    /// during the save.
    FillDisk,
    /// SIGKILL the saving client `at_ms` into the save.
    KillClient,
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// When.
    pub phase: Phase,
    /// Milliseconds into the phase (`during_*`); with `at_ms_max`, drawn uniformly from
    /// `[at_ms, at_ms_max]` by the seed.
    #[serde(default)]
    pub at_ms: u64,
    /// Upper end of the drawn time.
    #[serde(default)]
    pub at_ms_max: Option<u64>,
    /// Nodes hit, drawn from the seed (ignored when `nodes` is given).
    #[serde(default = "one_node")]
    pub count: usize,
    /// Hit `m` nodes (the scheme's parity count; `copies - 1` for replication) instead of
    /// `count`: the most a stripe can lose and still restore.
    #[serde(default)]
    pub count_m: bool,
    /// Explicit node ids.
    #[serde(default)]
    pub nodes: Vec<u32>,
    /// For `kill_rack`: the rack index (`0..racks`); drawn from the seed if absent.
    #[serde(default)]
    pub rack: Option<usize>,
    /// For `delay`.
    #[serde(default)]
    pub delay_ms: u64,
    /// For `drop`: 0 to 1.
    #[serde(default)]
    pub drop_probability: f64,
    /// For `slow`: milliseconds running per cycle.
    #[serde(default = "default_run_ms")]
    pub run_ms: u64,
    /// For `slow`: milliseconds stopped per cycle.
    #[serde(default = "default_stop_ms")]
    pub stop_ms: u64,
    /// For `fill_disk`: bytes the node may still take.
    #[serde(default)]
    pub free_bytes: u64,
    /// For `corrupt`: shards of the checkpoint corrupted on each node.
    #[serde(default = "default_corrupt_shards")]
    pub shards: usize,
    /// For `corrupt`, fast mode only: the node serves the bad bytes as good (a lying disk),
    /// so only the client's own hash check can catch them.
    #[serde(default)]
    pub silent: bool,
}

impl Fault {
    /// A fault of `kind` in `phase` with every other field at its default (one random node,
    /// no time offset).
    pub fn new(kind: FaultKind, phase: Phase) -> Self {
        Self {
            kind,
            phase,
            at_ms: 0,
            at_ms_max: None,
            count: 1,
            count_m: false,
            nodes: Vec::new(),
            rack: None,
            delay_ms: 0,
            drop_probability: 0.0,
            run_ms: default_run_ms(),
            stop_ms: default_stop_ms(),
            free_bytes: 0,
            shards: default_corrupt_shards(),
            silent: false,
        }
    }
}

fn default_corrupt_shards() -> usize {
    4
}

fn one_node() -> usize {
    1
}
fn default_run_ms() -> u64 {
    20
}
fn default_stop_ms() -> u64 {
    80
}

/// A fault atlas for fast mode (TigerBeetle's `ClusterFaultAtlas`): each trial draws its
/// faults from the seed, keeping within the code's tolerance, or exceeding it on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Atlas {
    /// At most `m` nodes faulty (killed, frozen, partitioned or corrupt) plus any number of
    /// slow, lossy or delayed links: every restore must return the exact bytes.
    Within,
    /// `m + 1` nodes of one stripe faulty: every restore must fail with `NotEnoughShards`.
    Beyond,
}

/// The heal phase: bring back what the faults took and require full redundancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealSpec {
    /// Restart killed nodes, thaw frozen ones, clear the relays, give disks back.
    #[serde(default = "yes")]
    pub restart: bool,
    /// Check the restarted cluster answers and the checkpoint still restores.
    #[serde(default = "yes")]
    pub verify: bool,
    /// Run the client's repair over the trial's job before verifying, and require full
    /// redundancy (`verify` healthy) after it.
    #[serde(default = "yes")]
    pub repair: bool,
}

fn yes() -> bool {
    true
}

impl Default for HealSpec {
    fn default() -> Self {
        Self { restart: true, verify: true, repair: true }
    }
}

/// Inputs of the durability model. The repair time is either given (`repair_hours`) or,
/// better, derived from a measured repair throughput: a failed node's `node_data_bytes`
/// rebuilt at `repair_mib_s` (MiB of lost shard bytes rebuilt per second, as the harness's
/// `repair` measurement reports time to full redundancy after a node is wiped), plus
/// `repair_start_hours` before the repair begins (detection, an operator). `repair_source`
/// says where the throughput (or time) comes from; the report prints it beside the figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilitySpec {
    /// Mean time between failures of one storage node, in hours.
    pub node_mtbf_hours: f64,
    /// Hours to rebuild a failed node's shards elsewhere (instead of the throughput pair).
    #[serde(default)]
    pub repair_hours: Option<f64>,
    /// Measured repair throughput: MiB of a lost node's shard bytes rebuilt per second.
    #[serde(default)]
    pub repair_mib_s: Option<f64>,
    /// Shard bytes one node holds (what a repair must rebuild when it fails).
    #[serde(default)]
    pub node_data_bytes: Option<u64>,
    /// Hours from a node's failure until its repair starts (with the throughput pair).
    #[serde(default)]
    pub repair_start_hours: f64,
    /// Where the repair throughput or time comes from (a measurement and its setting), at
    /// most `SIM_MAX_NOTE_CHARS` characters; without it the report says "configured".
    #[serde(default)]
    pub repair_source: Option<String>,
    /// Stripes of the checkpoint (each on its own placement group).
    pub stripes: u64,
    /// Years simulated per Monte-Carlo run.
    #[serde(default = "default_years")]
    pub monte_carlo_years: f64,
}

impl DurabilitySpec {
    /// Hours to bring a failed node's shards back: `repair_hours` as given, or
    /// `repair_start_hours + node_data_bytes / (repair_mib_s MiB/s)`.
    pub fn repair_hours(&self) -> f64 {
        match (self.repair_hours, self.repair_mib_s, self.node_data_bytes) {
            (Some(h), _, _) => h,
            (None, Some(rate), Some(bytes)) => {
                self.repair_start_hours + bytes as f64 / (rate * 1024.0 * 1024.0) / 3600.0
            }
            _ => f64::NAN, // refused by `validate`
        }
    }
}

fn default_years() -> f64 {
    1.0
}

impl Scenario {
    /// Parses and validates scenario text.
    pub fn from_toml(text: &str) -> Result<Self, ScenarioError> {
        let s: Self = toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    /// Reads (bounded), parses and validates a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let name = path.display().to_string();
        let io = |error| ScenarioError::Io { path: name.clone(), error };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > SIM_MAX_SCENARIO_FILE_BYTES {
            return Err(ScenarioError::TooLarge {
                path: name,
                len,
                max: SIM_MAX_SCENARIO_FILE_BYTES,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::from_toml(&text)
    }

    /// A scheme's cluster, after the scenario-wide override.
    pub fn cluster_of(&self, scheme: &Scheme) -> ClusterShape {
        self.cluster.unwrap_or(scheme.cluster)
    }

    /// Checks every bound and every cross-field rule.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.name.is_empty() || self.name.len() > 64 || !self.name.bytes().all(safe_byte) {
            return Err(invalid("name", "1 to 64 of [A-Za-z0-9._+-]"));
        }
        if self.trials == 0 || self.trials > SIM_MAX_TRIALS {
            return Err(invalid("trials", format!("{} not in 1..={SIM_MAX_TRIALS}", self.trials)));
        }
        if self.schemes.is_empty() || self.schemes.len() > SIM_MAX_SCHEMES {
            return Err(invalid("schemes", format!("need 1 to {SIM_MAX_SCHEMES} schemes")));
        }
        for s in &self.schemes {
            self.validate_scheme(s)?;
        }
        self.validate_checkpoint()?;
        self.job.resolve()?;
        if self.faults.len() > SIM_MAX_FAULTS {
            return Err(invalid("fault", format!("at most {SIM_MAX_FAULTS} faults")));
        }
        for (i, f) in self.faults.iter().enumerate() {
            self.validate_fault(i, f)?;
        }
        if let Some(d) = &self.durability {
            let ok = |v: f64| v.is_finite() && v > 0.0;
            match (d.repair_hours, d.repair_mib_s, d.node_data_bytes) {
                (Some(_), None, None) => {}
                (None, Some(rate), Some(bytes)) if ok(rate) && bytes > 0 => {}
                _ => {
                    return Err(invalid(
                        "durability.repair_hours",
                        "give repair_hours, or repair_mib_s (> 0) with node_data_bytes (> 0)",
                    ))
                }
            }
            let start_ok = d.repair_start_hours.is_finite() && d.repair_start_hours >= 0.0;
            if !ok(d.node_mtbf_hours) || !ok(d.repair_hours()) || !ok(d.monte_carlo_years) {
                return Err(invalid("durability", "hours and years must be finite and > 0"));
            }
            if !start_ok {
                return Err(invalid("durability.repair_start_hours", "must be finite and >= 0"));
            }
            if d.stripes == 0 {
                return Err(invalid("durability.stripes", "must be at least 1"));
            }
            if d.repair_source.as_ref().is_some_and(|n| n.chars().count() > SIM_MAX_NOTE_CHARS) {
                return Err(invalid(
                    "durability.repair_source",
                    format!("at most {SIM_MAX_NOTE_CHARS} characters"),
                ));
            }
        }
        Ok(())
    }

    fn validate_scheme(&self, s: &Scheme) -> Result<(), ScenarioError> {
        let field = format!("schemes.{}", s.name);
        if s.name.is_empty() || s.name.len() > 32 || !s.name.bytes().all(safe_byte) {
            return Err(invalid(&field, "name must be 1 to 32 of [A-Za-z0-9._+-]"));
        }
        match s.kind {
            SchemeKind::Rs if s.k.is_none() || s.m.is_none() || s.copies.is_some() => {
                return Err(invalid(&field, "kind = \"rs\" takes k and m, not copies"));
            }
            SchemeKind::Replication if s.copies.is_none() || s.k.is_some() || s.m.is_some() => {
                return Err(invalid(&field, "kind = \"replication\" takes copies, not k or m"));
            }
            _ => {}
        }
        let (k, m) = s.km();
        if k == 0 || m == 0 || usize::from(k) + usize::from(m) > MAX_TOTAL_SHARDS {
            return Err(invalid(
                &field,
                format!("k = {k}, m = {m}: need k >= 1, m >= 1 (copies >= 2), k + m <= {MAX_TOTAL_SHARDS}"),
            ));
        }
        let c = self.cluster_of(s);
        if c.nodes < usize::from(k) + usize::from(m) || c.nodes > MAX_NODES {
            return Err(invalid(
                format!("{field}.cluster.nodes"),
                format!("{} nodes: need k + m = {} to {MAX_NODES}", c.nodes, k + m),
            ));
        }
        if c.racks == 0 || c.racks > c.nodes {
            return Err(invalid(format!("{field}.cluster.racks"), "1 to nodes racks"));
        }
        Ok(())
    }

    fn validate_checkpoint(&self) -> Result<(), ScenarioError> {
        let c = &self.checkpoint;
        if c.bytes == 0 || c.bytes > SIM_MAX_CHECKPOINT_BYTES {
            return Err(invalid(
                "checkpoint.bytes",
                format!("{} not in 1..={SIM_MAX_CHECKPOINT_BYTES}", c.bytes),
            ));
        }
        if c.objects == 0 || c.objects > SIM_MAX_OBJECTS || u64::from(c.objects) > c.bytes {
            return Err(invalid(
                "checkpoint.objects",
                format!("{} not in 1..={SIM_MAX_OBJECTS} (and at most one per byte)", c.objects),
            ));
        }
        if c.world_size == 0 {
            return Err(invalid("checkpoint.world_size", "must be at least 1"));
        }
        if !(MIN_SHARD_BYTES..=MAX_SHARD_BYTES).contains(&c.shard_size_bytes) {
            return Err(invalid(
                "checkpoint.shard_size_bytes",
                format!("{} not in {MIN_SHARD_BYTES}..={MAX_SHARD_BYTES}", c.shard_size_bytes),
            ));
        }
        Ok(())
    }

    fn validate_fault(&self, i: usize, f: &Fault) -> Result<(), ScenarioError> {
        let field = |name: &str| format!("fault[{i}].{name}");
        let timed = matches!(f.phase, Phase::DuringSave | Phase::DuringRestore);
        if !timed && (f.at_ms != 0 || f.at_ms_max.is_some()) {
            return Err(invalid(field("at_ms"), "only during_save and during_restore are timed"));
        }
        if f.at_ms > SIM_MAX_FAULT_TIME_MS
            || f.at_ms_max.is_some_and(|t| t < f.at_ms || t > SIM_MAX_FAULT_TIME_MS)
        {
            return Err(invalid(
                field("at_ms"),
                format!("need at_ms <= at_ms_max <= {SIM_MAX_FAULT_TIME_MS}"),
            ));
        }
        let smallest = self.schemes.iter().map(|s| self.cluster_of(s).nodes).min().unwrap_or(0);
        if f.count > smallest {
            return Err(invalid(
                field("count"),
                format!("{} is over the {smallest} nodes", f.count),
            ));
        }
        if let Some(&bad) = f.nodes.iter().find(|&&n| n == 0 || n as usize > smallest) {
            return Err(invalid(field("nodes"), format!("node {bad} is not in 1..={smallest}")));
        }
        match f.kind {
            FaultKind::Drop if !(0.0..=1.0).contains(&f.drop_probability) => {
                Err(invalid(field("drop_probability"), "must be in 0..=1"))
            }
            FaultKind::Delay if f.delay_ms == 0 || f.delay_ms > SIM_MAX_FAULT_TIME_MS => {
                Err(invalid(field("delay_ms"), format!("1 to {SIM_MAX_FAULT_TIME_MS}")))
            }
            FaultKind::Slow if f.run_ms == 0 || f.stop_ms == 0 => {
                Err(invalid(field("run_ms"), "run_ms and stop_ms must be > 0"))
            }
            FaultKind::KillClient if f.phase != Phase::DuringSave => {
                Err(invalid(field("phase"), "kill_client happens during_save"))
            }
            FaultKind::FillDisk if f.phase != Phase::BeforeSave => {
                Err(invalid(field("phase"), "fill_disk is set before_save (it fills during it)"))
            }
            FaultKind::KillRack => {
                let racks =
                    self.schemes.iter().map(|s| self.cluster_of(s).racks).min().unwrap_or(0);
                match f.rack {
                    Some(r) if r >= racks => {
                        Err(invalid(field("rack"), format!("{r} is not in 0..{racks}")))
                    }
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

fn safe_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
schemes = [{ name = "rs-4+2", kind = "rs", k = 4, m = 2, cluster = { nodes = 6, racks = 3 } }, "rep-3"]
[checkpoint]
bytes = 1048576
objects = 2
shard_size_bytes = 65536
[job]
preset = "llama3-16k"
[[fault]]
kind = "kill"
phase = "after_save"
count = 2
"#;

    #[test]
    fn a_minimal_scenario_parses_and_replication_is_rs_with_k_1() {
        let s = Scenario::from_toml(MINIMAL).expect("valid");
        assert_eq!(s.schemes[1].km(), (1, 2));
        assert_eq!(s.schemes[1].overhead(), 3.0);
        assert_eq!(s.schemes[0].overhead(), 1.5);
        assert_eq!(s.trials, 20);
        assert_eq!(s.faults[0].count, 2);
        let job = s.job.resolve().expect("preset");
        assert_eq!(job.gpus, 16_384);
    }

    fn refused(text: &str) -> String {
        Scenario::from_toml(text).expect_err("must be refused").to_string()
    }

    #[test]
    fn bad_fields_name_the_field_and_the_bound() {
        let e = refused(&MINIMAL.replace("count = 2", "count = 7"));
        assert!(e.contains("fault[0].count") && e.contains("6 nodes"), "{e}");
        let e = refused(&MINIMAL.replace("k = 4, m = 2", "k = 4, m = 0"));
        assert!(e.contains("schemes.rs-4+2") && e.contains("m >= 1"), "{e}");
        let e = refused(&MINIMAL.replace("nodes = 6, racks = 3 }", "nodes = 5, racks = 3 }"));
        assert!(e.contains("cluster.nodes"), "{e}");
        let e = refused(&MINIMAL.replace("\"rep-3\"", "\"rep-9\""));
        assert!(e.contains("unknown scheme preset"), "{e}");
        let e = refused(
            &MINIMAL.replace("phase = \"after_save\"", "phase = \"after_save\"\nat_ms = 5"),
        );
        assert!(e.contains("at_ms"), "{e}");
        let e = refused(&MINIMAL.replace("preset = \"llama3-16k\"", "preset = \"nope\""));
        assert!(e.contains("job.preset"), "{e}");
        let e = refused(&MINIMAL.replace("shard_size_bytes = 65536", "shard_size_bytes = 1"));
        assert!(e.contains("checkpoint.shard_size_bytes"), "{e}");
        let e = refused(&MINIMAL.replace("kind = \"kill\"", "kind = \"explode\""));
        assert!(e.contains("cannot parse"), "{e}");
        let e = refused(&format!("{MINIMAL}\nsurprise = 1\n"));
        assert!(e.contains("cannot parse"), "{e}");
    }

    #[test]
    fn durability_repair_time_comes_from_the_measured_throughput() {
        let with = |d: &str| {
            format!("{MINIMAL}\n[durability]\nnode_mtbf_hours = 43800.0\nstripes = 10\n{d}\n")
        };
        let s = Scenario::from_toml(&with("repair_mib_s = 128.0\nnode_data_bytes = 483183820800"))
            .expect("valid");
        let d = s.durability.expect("present");
        assert!((d.repair_hours() - 1.0).abs() < 1e-9, "450 GiB at 128 MiB/s is an hour");
        let s = Scenario::from_toml(&with("repair_hours = 2.5")).expect("valid");
        assert_eq!(s.durability.as_ref().map(|d| d.repair_hours()), Some(2.5));
        let long = format!("repair_hours = 1.0\nrepair_source = \"{}\"", "x".repeat(10_000));
        assert!(refused(&with(&long)).contains("durability.repair_source"));
        let e = refused(&with("repair_mib_s = 128.0"));
        assert!(e.contains("durability.repair_hours") && e.contains("node_data_bytes"), "{e}");
        let e = refused(&with("repair_hours = 1.0\nrepair_mib_s = 1.0\nnode_data_bytes = 1"));
        assert!(e.contains("durability.repair_hours"), "{e}");
    }

    #[test]
    fn a_job_without_preset_needs_every_field() {
        let e = refused(&MINIMAL.replace("preset = \"llama3-16k\"", "gpus = 8"));
        assert!(e.contains("job.price_per_gpu_hour"), "{e}");
    }
}
