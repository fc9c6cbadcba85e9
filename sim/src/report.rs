//! Trial results and what a run reports: per scenario and scheme, the recovery rate, restore
//! time percentiles, bytes read, detection time, oracle disagreements and the seeds that
//! replay each failure; as a terminal table and as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cost::CostReport;
use crate::durability::{DurabilityParams, MonteCarlo};
use crate::oracle::Expectation;
use rackpoint_proto::limits::SIM_MAX_REPORTED_FAILURES;

/// How one trial's restore ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    /// Every byte came back equal to the original.
    Restored,
    /// A stripe had fewer than `k` good shards: the clean refusal.
    NotEnoughShards(String),
    /// No manifest (or no complete checkpoint) could be found: nothing half-visible.
    NotFound(String),
    /// The restore returned bytes that differ from the original: a bug, always.
    WrongBytes(String),
    /// The save itself failed.
    SaveFailed(String),
    /// Any other error (including a hang past the bound).
    Error(String),
}

impl Outcome {
    /// A refusal that loses nothing and claims nothing.
    pub fn is_clean_failure(&self) -> bool {
        matches!(self, Outcome::NotEnoughShards(_) | Outcome::NotFound(_))
    }
}

/// What the heal phase's repair did.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct RepairOutcome {
    /// Milliseconds the repair took.
    pub ms: f64,
    /// The repair reported every part back to full redundancy.
    pub complete: bool,
    /// Shards written (rewritten in place or moved).
    pub shards_written: u64,
    /// Of them, shards moved to another node.
    pub moved: u64,
    /// Shard bytes written.
    pub bytes_written: u64,
    /// Shard bytes read to rebuild.
    pub bytes_read: u64,
    /// Manifest copies written back.
    pub manifest_copies_added: usize,
    /// Why the repair call failed, if it did.
    pub error: Option<String>,
}

/// How the heal phase ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealOutcome {
    /// Every node answered again after restarts, thaws and cleared relays.
    pub cluster_back: bool,
    /// The step healed and verified: the newest committed one (`None`: nothing committed).
    pub verified_step: Option<u64>,
    /// That step restored with the exact bytes after healing.
    pub restores_after_heal: bool,
    /// The repair, when it ran.
    pub repair: Option<RepairOutcome>,
    /// `verify` after the repair found every part, every shard good and clean chains.
    pub full_redundancy: bool,
    /// Shards `verify` still found missing or corrupt after the repair.
    pub bad_shards: u64,
    /// What did not come back, if anything.
    pub note: String,
}

impl HealOutcome {
    /// Whether the cluster is back to a healthy state the next trial may start from.
    pub fn is_whole(&self) -> bool {
        self.cluster_back && self.full_redundancy && self.restores_after_heal
    }
}

/// One trial.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrialResult {
    /// Trial number within the cell.
    pub trial: u32,
    /// The seed that replays it.
    pub seed: u64,
    /// Nodes the faults made unavailable or corrupt.
    pub faulty_nodes: usize,
    /// What the oracle expected.
    pub expected: Expectation,
    /// What happened.
    pub outcome: Outcome,
    /// Milliseconds the save took (to commit).
    pub save_ms: f64,
    /// Milliseconds the restore took, when it ran.
    pub restore_ms: Option<f64>,
    /// Shard bytes the restore read.
    pub bytes_read: u64,
    /// Milliseconds until the client's health view saw every unavailable node down.
    pub detect_ms: Option<f64>,
    /// Stripes the restore rebuilt from parity.
    pub degraded_stripes: u64,
    /// The heal phase, when it ran.
    pub heal: Option<HealOutcome>,
}

impl TrialResult {
    /// Whether the trial agrees with the oracle (and returned no wrong bytes).
    pub fn agrees(&self) -> bool {
        match &self.outcome {
            Outcome::Restored => self.expected.recoverable,
            o if o.is_clean_failure() => !self.expected.recoverable,
            _ => false,
        }
    }
}

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Percentiles {
    /// Values in the sample.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Nearest-rank percentiles (`None` values skipped).
pub fn percentiles(values: impl IntoIterator<Item = f64>) -> Percentiles {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Percentiles { count: v.len(), p50: rank(0.50), p99: rank(0.99), max: v[v.len() - 1] }
}

/// One scenario on one scheme.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellReport {
    /// The scenario.
    pub scenario: String,
    /// The scheme.
    pub scheme: String,
    /// `k`, `m` as stored.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Bytes stored per byte saved.
    pub overhead: f64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// `real` or `fast`.
    pub mode: String,
    /// Trials run.
    pub trials: u32,
    /// Exact bytes back.
    pub restored: u32,
    /// Trials the oracle called recoverable.
    pub expected_recoverable: u32,
    /// Clean refusals.
    pub clean_failures: u32,
    /// Wrong bytes returned (must be 0).
    pub wrong_bytes: u32,
    /// Trials that disagree with the oracle (must be 0).
    pub disagreements: u32,
    /// `restored / trials`.
    pub recovery_rate: f64,
    /// Restore time, ms.
    pub restore_ms: Percentiles,
    /// Save time, ms.
    pub save_ms: Percentiles,
    /// Detection time, ms.
    pub detect_ms: Percentiles,
    /// Mean shard bytes read per restore.
    pub mean_bytes_read: f64,
    /// Trials whose heal phase brought full redundancy back.
    pub healed_full: u32,
    /// Trials whose heal phase ran.
    pub healed: u32,
    /// Trials whose heal phase ran the repair.
    pub repairs_run: u32,
    /// Trials whose repair rebuilt something (shards or manifest copies).
    pub repairs_rebuilt: u32,
    /// Shards the repairs wrote, over all trials.
    pub repair_shards: u64,
    /// Shard bytes the repairs wrote, over all trials.
    pub repair_bytes: u64,
    /// Repair time, ms (trials whose repair ran).
    pub repair_ms: Percentiles,
    /// Clusters the cell started (real mode: one, plus one after each heal that did not
    /// make the cluster whole; fast mode: 0).
    pub clusters: u32,
    /// Seeds of the trials that disagree with the oracle (first few).
    pub failing_seeds: Vec<u64>,
    /// The failure cost for the scenario's job model with this cell's times.
    pub cost: Option<CostReport>,
    /// Every trial.
    pub trials_detail: Vec<TrialResult>,
}

impl CellReport {
    /// Summarizes trials.
    pub fn from_trials(head: CellHead, trials: Vec<TrialResult>, cost: Option<CostReport>) -> Self {
        let n = trials.len() as u32;
        let count =
            |f: &dyn Fn(&TrialResult) -> bool| trials.iter().filter(|t| f(t)).count() as u32;
        let restored = count(&|t| t.outcome == Outcome::Restored);
        let failing_seeds: Vec<u64> = trials
            .iter()
            .filter(|t| !t.agrees())
            .map(|t| t.seed)
            .take(SIM_MAX_REPORTED_FAILURES)
            .collect();
        let bytes: u64 = trials.iter().map(|t| t.bytes_read).sum();
        Self {
            scenario: head.scenario,
            scheme: head.scheme,
            k: head.k,
            m: head.m,
            overhead: head.overhead,
            nodes: head.nodes,
            mode: head.mode,
            trials: n,
            restored,
            expected_recoverable: count(&|t| t.expected.recoverable),
            clean_failures: count(&|t| t.outcome.is_clean_failure()),
            wrong_bytes: count(&|t| matches!(t.outcome, Outcome::WrongBytes(_))),
            disagreements: count(&|t| !t.agrees()),
            recovery_rate: if n == 0 { 0.0 } else { f64::from(restored) / f64::from(n) },
            restore_ms: percentiles(trials.iter().filter_map(|t| t.restore_ms)),
            save_ms: percentiles(trials.iter().map(|t| t.save_ms)),
            detect_ms: percentiles(trials.iter().filter_map(|t| t.detect_ms)),
            mean_bytes_read: if n == 0 { 0.0 } else { bytes as f64 / f64::from(n) },
            healed_full: count(&|t| t.heal.as_ref().is_some_and(|h| h.full_redundancy)),
            healed: count(&|t| t.heal.is_some()),
            repairs_run: count(&|t| repair_of(t).is_some()),
            repairs_rebuilt: count(&|t| {
                repair_of(t).is_some_and(|r| r.shards_written > 0 || r.manifest_copies_added > 0)
            }),
            repair_shards: trials.iter().filter_map(repair_of).map(|r| r.shards_written).sum(),
            repair_bytes: trials.iter().filter_map(repair_of).map(|r| r.bytes_written).sum(),
            repair_ms: percentiles(trials.iter().filter_map(repair_of).map(|r| r.ms)),
            clusters: 0,
            failing_seeds,
            cost,
            trials_detail: trials,
        }
    }
}

fn repair_of(t: &TrialResult) -> Option<&RepairOutcome> {
    t.heal.as_ref().and_then(|h| h.repair.as_ref())
}

/// The identifying part of a cell.
#[derive(Debug, Clone, PartialEq)]
pub struct CellHead {
    /// The scenario.
    pub scenario: String,
    /// The scheme.
    pub scheme: String,
    /// Data shards.
    pub k: u8,
    /// Parity shards.
    pub m: u8,
    /// Bytes stored per byte saved.
    pub overhead: f64,
    /// Nodes.
    pub nodes: usize,
    /// `real` or `fast`.
    pub mode: String,
}

/// The durability of one scheme: analytic, and the Monte-Carlo check at accelerated rates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurabilityRow {
    /// The scenario.
    pub scenario: String,
    /// The scheme.
    pub scheme: String,
    /// The inputs.
    pub params: DurabilityParams,
    /// Mean hours until one stripe is lost.
    pub stripe_mttdl_hours: f64,
    /// Probability of losing the checkpoint within a year.
    pub loss_per_year: f64,
    /// The accelerated inputs of the check (node MTBF divided until losses are countable).
    pub check_params: DurabilityParams,
    /// Hours each check run covers.
    pub check_hours: f64,
    /// The chain's probability at the check's inputs.
    pub check_analytic: f64,
    /// The Monte-Carlo estimate at the check's inputs.
    pub check_monte_carlo: MonteCarlo,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunReport {
    /// The run's seed.
    pub seed: u64,
    /// `real` or `fast`.
    pub mode: String,
    /// One per scenario and scheme.
    pub cells: Vec<CellReport>,
    /// Per scenario job model, priced with the model's own stall and restore times.
    pub job_costs: Vec<(String, CostReport)>,
    /// Per scenario with a durability section and scheme.
    pub durability: Vec<DurabilityRow>,
}

impl RunReport {
    /// The report as pretty JSON (deterministic: no map with random order, no wall clock in
    /// fast mode).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }

    /// Whether every trial agreed with the oracle and no bytes were wrong.
    pub fn all_agree(&self) -> bool {
        self.cells.iter().all(|c| c.disagreements == 0 && c.wrong_bytes == 0)
    }
}

fn ms(p: &Percentiles) -> String {
    if p.count == 0 {
        "-".into()
    } else if p.p50 >= 10_000.0 {
        format!("{:.0}/{:.0}", p.p50, p.p99)
    } else {
        format!("{:.1}/{:.1}", p.p50, p.p99)
    }
}

/// The terminal table: one row per cell.
pub fn table(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<8} {:>5} {:>4} {:>6} {:>9} {:>8} {:>6} {:>5} {:>15} {:>15} {:>10} {:>9} {:>9} {:>15} {:>11} {:>6}",
        "scenario", "scheme", "nodes", "ovh", "trials", "recovered", "expected", "clean", "wrong",
        "restore p50/99", "detect p50/99", "MiB read", "healed", "rebuilt", "repair p50/99",
        "GPU-h/fail", "eff"
    );
    for c in &report.cells {
        let (gpu_h, eff) = c.cost.map_or(("-".into(), "-".into()), |k| {
            (format!("{:.0}", k.per_failure.gpu_hours), format!("{:.3}", k.effective_ratio))
        });
        let _ = writeln!(
            out,
            "{:<22} {:<8} {:>5} {:>4.2} {:>6} {:>8.1}% {:>7.1}% {:>6} {:>5} {:>15} {:>15} {:>10.1} {:>9} {:>9} {:>15} {:>11} {:>6}",
            truncate(&c.scenario, 22),
            c.scheme,
            c.nodes,
            c.overhead,
            c.trials,
            100.0 * c.recovery_rate,
            100.0 * f64::from(c.expected_recoverable) / f64::from(c.trials.max(1)),
            c.clean_failures,
            c.wrong_bytes,
            ms(&c.restore_ms),
            ms(&c.detect_ms),
            c.mean_bytes_read / (1024.0 * 1024.0),
            format!("{}/{}", c.healed_full, c.healed),
            format!("{}/{}", c.repairs_rebuilt, c.repairs_run),
            ms(&c.repair_ms),
            gpu_h,
            eff,
        );
        if !c.failing_seeds.is_empty() {
            let _ = writeln!(
                out,
                "  !! {} trial(s) disagree with the oracle; replay with --trial-seed {}",
                c.disagreements,
                c.failing_seeds.iter().map(|s| format!("{s:#x}")).collect::<Vec<_>>().join(", ")
            );
        }
    }
    out
}

/// The job-cost and durability sections under the table.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    if !report.job_costs.is_empty() {
        let _ = writeln!(out, "\nCost of a failure (job model's stall and restore times):");
        let _ = writeln!(
            out,
            "{:<22} {:>7} {:>8} {:>9} {:>10} {:>11} {:>10} {:>12} {:>12} {:>7} {:>7}",
            "scenario",
            "GPUs",
            "MTBF h",
            "interval",
            "lost s",
            "GPU-h/fail",
            "$/fail",
            "GPU-h/day",
            "Young/Daly s",
            "eff",
            "eff@YD"
        );
        for (name, c) in &report.job_costs {
            let _ = writeln!(
                out,
                "{:<22} {:>7} {:>8.2} {:>9.0} {:>10.0} {:>11.0} {:>10.0} {:>12.0} {:>12.0} {:>7.3} {:>7.3}",
                truncate(name, 22),
                c.job.gpus,
                c.job.job_mtbf_hours,
                c.job.checkpoint_interval_s,
                c.per_failure.total_s,
                c.per_failure.gpu_hours,
                c.per_failure.dollars,
                c.gpu_hours_lost_per_day,
                c.young_daly_interval_s,
                c.effective_ratio,
                c.effective_ratio_at_young_daly,
            );
        }
    }
    if !report.durability.is_empty() {
        let _ = writeln!(out, "\nDurability (Markov chain per placement group; Monte-Carlo check at accelerated failure rates):");
        let _ = writeln!(
            out,
            "{:<22} {:<8} {:>6} {:>8} {:>9} {:>8} {:>13} {:>12} {:>10} {:>16}",
            "scenario",
            "scheme",
            "nodes",
            "stripes",
            "MTBF h",
            "repair h",
            "stripe MTTDL h",
            "P(loss)/yr",
            "check: MC",
            "vs chain"
        );
        for d in &report.durability {
            let _ = writeln!(
                out,
                "{:<22} {:<8} {:>6} {:>8} {:>9.0} {:>8.1} {:>13.3e} {:>12.3e} {:>10.3} {:>16}",
                truncate(&d.scenario, 22),
                d.scheme,
                d.params.nodes,
                d.params.stripes,
                d.params.node_mtbf_hours,
                d.params.repair_hours,
                d.stripe_mttdl_hours,
                d.loss_per_year,
                d.check_monte_carlo.probability,
                format!("{:.3} ±{:.3}", d.check_analytic, d.check_monte_carlo.ci95),
            );
        }
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).map(f64::from));
        assert_eq!((p.count, p.p50, p.p99, p.max), (100, 50.0, 99.0, 100.0));
        let p = percentiles([3.0]);
        assert_eq!((p.p50, p.p99), (3.0, 3.0));
        assert_eq!(percentiles([]).count, 0);
    }

    fn trial(recoverable: bool, outcome: Outcome) -> TrialResult {
        TrialResult {
            trial: 0,
            seed: 9,
            faulty_nodes: 1,
            expected: Expectation { recoverable, weakest_good: 4, most_lost: 2 },
            outcome,
            save_ms: 1.0,
            restore_ms: Some(2.0),
            bytes_read: 10,
            detect_ms: None,
            degraded_stripes: 0,
            heal: None,
        }
    }

    #[test]
    fn agreement_with_the_oracle() {
        assert!(trial(true, Outcome::Restored).agrees());
        assert!(!trial(true, Outcome::NotEnoughShards(String::new())).agrees());
        assert!(trial(false, Outcome::NotEnoughShards(String::new())).agrees());
        assert!(!trial(false, Outcome::Restored).agrees());
        assert!(!trial(false, Outcome::WrongBytes(String::new())).agrees());
        let head = CellHead {
            scenario: "s".into(),
            scheme: "rs-4+2".into(),
            k: 4,
            m: 2,
            overhead: 1.5,
            nodes: 6,
            mode: "fast".into(),
        };
        let cell = CellReport::from_trials(
            head,
            vec![trial(true, Outcome::Restored), trial(true, Outcome::Error("x".into()))],
            None,
        );
        assert_eq!((cell.restored, cell.disagreements, cell.failing_seeds.len()), (1, 1, 1));
        assert_eq!(cell.recovery_rate, 0.5);
        let run = RunReport {
            seed: 1,
            mode: "fast".into(),
            cells: vec![cell],
            job_costs: Vec::new(),
            durability: Vec::new(),
        };
        assert!(table(&run).contains("--trial-seed 0x9"));
    }
}
