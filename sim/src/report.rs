//! Trial results and what a run reports: per scenario and scheme, the recovery rate, restore
//! time percentiles, bytes read, detection time, oracle disagreements and the seeds that
//! replay each failure; the cost of a failure per scheme; durability with its assumptions.
//! As terminal tables, each followed by a legend of its columns (units included), and as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cost::CostReport;
use crate::durability::{Assumptions, DurabilityParams, MonteCarlo};
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
    /// A trial's result before anything ran: restored, as the oracle expects of no damage
    /// (each mode's driver then records what happened).
    pub fn fresh(trial: u32, seed: u64, k: usize) -> Self {
        TrialResult {
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
        }
    }
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
    /// Neither exact, nor a clean refusal, nor wrong bytes: a failed save, an error, a hang.
    pub other_failures: u32,
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
    /// Trials whose heal phase left the step restoring exactly but short of full redundancy
    /// (`verify` still found shards missing or corrupt).
    pub healed_partial: u32,
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
            other_failures: count(&|t| {
                !matches!(t.outcome, Outcome::Restored | Outcome::WrongBytes(_))
                    && !t.outcome.is_clean_failure()
            }),
            disagreements: count(&|t| !t.agrees()),
            recovery_rate: if n == 0 { 0.0 } else { f64::from(restored) / f64::from(n) },
            restore_ms: percentiles(trials.iter().filter_map(|t| t.restore_ms)),
            save_ms: percentiles(trials.iter().map(|t| t.save_ms)),
            detect_ms: percentiles(trials.iter().filter_map(|t| t.detect_ms)),
            mean_bytes_read: if n == 0 { 0.0 } else { bytes as f64 / f64::from(n) },
            healed_full: count(&|t| t.heal.as_ref().is_some_and(|h| h.full_redundancy)),
            healed_partial: count(&|t| {
                t.heal.as_ref().is_some_and(|h| !h.full_redundancy && h.restores_after_heal)
            }),
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
    /// What the figure assumes (rates, where the repair time comes from, correlation).
    pub assumptions: Assumptions,
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
    /// One per scenario and scheme (each with its cost of a failure).
    pub cells: Vec<CellReport>,
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

/// The columns of [`table`] and what each one means, units included.
pub const RECOVERY_LEGEND: &[(&str, &str)] = &[
    ("nodes", "storage nodes in the cluster"),
    ("overhead", "bytes stored per byte saved, (k + m) / k (x)"),
    ("trials", "trials run; each saves a checkpoint, injects the faults and restores"),
    ("exact", "trials whose restore returned every byte equal to the original (%)"),
    (
        "expected",
        "trials the oracle says must restore: no stripe lost more than m shards (%); \
         exact must equal it",
    ),
    (
        "refused",
        "clean refusals: too few shards or no complete checkpoint, nothing returned and \
         nothing claimed (trials); the right answer beyond m",
    ),
    ("wrong", "restores that returned bytes differing from the original (trials; must be 0)"),
    ("other", "neither of the three: a failed save, an error, a hang (trials)"),
    ("save ms", "time to commit the save, median/99th percentile (ms; fast mode: simulated)"),
    ("restore ms", "time from the restore call to its last byte or refusal, p50/p99 (ms)"),
    (
        "detect ms",
        "from a node becoming unavailable to the client's health view marking it down, \
         p50/p99 (ms; - when no trial made a node unavailable)",
    ),
    ("MiB read", "shard bytes one restore read, mean (MiB)"),
    (
        "healed",
        "heal phase after each trial, trials full/part/ran: full = full redundancy back; \
         part = the step restores exactly but shards are still missing or corrupt",
    ),
    ("rebuilt", "trials whose repair rebuilt shards or manifest copies / trials it ran in"),
    ("repair ms", "repair time, p50/p99 (ms)"),
];

/// The columns of the cost table and what each one means, units included.
pub const COST_LEGEND: &[(&str, &str)] = &[
    ("GPUs", "GPUs in the job model"),
    ("MTBF h", "mean hours between interruptions of the whole job"),
    ("interval s", "the job's checkpoint interval (s)"),
    (
        "stall s",
        "training stall per save on this scheme: the job's one-copy stall x overhead \
         (modelled: a save is bound by the bytes it writes) (s)",
    ),
    ("restore s", "the job model's restore time, the same for every scheme (s)"),
    (
        "GPU-h/failure",
        "one failure at the job's interval: GPUs x (interval / 2 lost + detect + restart \
         + restore) / 3600 (GPU-hours); the one figure per failure",
    ),
    ("$/failure", "GPU-h/failure x price per GPU-hour (dollars)"),
    (
        "stalls GPU-h",
        "save stalls between two failures: GPUs x (MTBF / interval) x stall (GPU-hours)",
    ),
    ("GPU-h/day", "(GPU-h/failure + stalls GPU-h) x failures per day (GPU-hours)"),
    (
        "best s",
        "the interval that minimizes GPU-h/failure + stalls GPU-h: Young/Daly \
         sqrt(2 x stall x MTBF) (s)",
    ),
    ("total@best", "GPU-h/failure + stalls GPU-h at the best interval (GPU-hours)"),
    ("useful", "share of wall time spent training at the job's interval (0-1)"),
    ("useful@best", "the same at the best interval (0-1)"),
];

/// The columns of the durability table and what each one means, units included.
pub const DURABILITY_LEGEND: &[(&str, &str)] = &[
    ("nodes", "storage nodes in the cluster"),
    ("stripes", "stripes of the checkpoint, each on k + m distinct nodes"),
    ("overhead", "bytes stored per byte saved (x)"),
    ("MTTDL h", "mean time to data loss of one stripe's placement group, Markov chain (hours)"),
    (
        "P(loss)/yr",
        "probability of losing any stripe of the checkpoint within a year: \
         1 - exp(-groups x 8766 h / MTTDL)",
    ),
    (
        "check MTBF h",
        "the check's node MTBF, shortened until losses are frequent enough to count (hours)",
    ),
    ("check yrs", "years each Monte-Carlo run covers"),
    ("MC P", "Monte-Carlo probability of loss at the check's inputs (losses / runs)"),
    ("+-95%", "half-width of the Monte-Carlo estimate's 95% confidence interval"),
    (
        "chain P",
        "the chain's probability at the check's inputs; MC P should fall near it (within about \
         2 x +-95%): the chain treats placement groups as independent though they share \
         nodes, which makes it slightly pessimistic",
    ),
];

/// "scenario", "scheme", then the legend's column names: every column has its legend line.
fn header<'a>(legend: &[(&'a str, &str)]) -> Vec<&'a str> {
    let mut h = vec!["scenario", "scheme"];
    h.extend(legend.iter().map(|(name, _)| *name));
    h
}

/// One row, each column padded to its width (negative: left-aligned).
fn row(out: &mut String, widths: &[isize], cols: &[&str]) {
    let mut line = String::new();
    for (w, c) in widths.iter().zip(cols) {
        let width = w.unsigned_abs();
        if *w < 0 {
            let _ = write!(line, "{c:<width$} ");
        } else {
            let _ = write!(line, "{c:>width$} ");
        }
    }
    let _ = writeln!(out, "{}", line.trim_end());
}

fn legend(out: &mut String, rows: &[(&str, &str)]) {
    let _ = writeln!(out, "Columns:");
    for (name, meaning) in rows {
        let _ = writeln!(out, "  {name:<14} {meaning}");
    }
}

fn heal_counts(c: &CellReport) -> String {
    if c.healed == 0 {
        "-".into()
    } else {
        format!("{}/{}/{}", c.healed_full, c.healed_partial, c.healed)
    }
}

/// The recovery table (one row per cell) and its legend.
pub fn table(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Recovery ({} mode): did each restore return the exact bytes, refuse cleanly, or lie?",
        report.mode
    );
    const W: [isize; 17] = [-22, -8, 5, 8, 6, 7, 8, 7, 5, 5, 13, 13, 13, 11, 13, 9, 13];
    row(&mut out, &W, &header(RECOVERY_LEGEND));
    let units = [
        "",
        "",
        "",
        "x",
        "",
        "%",
        "%",
        "trials",
        "trials",
        "trials",
        "p50/p99",
        "p50/p99",
        "p50/p99",
        "per restore",
        "full/part/ran",
        "/ran",
        "p50/p99",
    ];
    row(&mut out, &W, &units);
    for c in &report.cells {
        let cells = [
            truncate(&c.scenario, 22),
            c.scheme.clone(),
            c.nodes.to_string(),
            format!("{:.2}x", c.overhead),
            c.trials.to_string(),
            format!("{:.1}%", 100.0 * c.recovery_rate),
            format!(
                "{:.1}%",
                100.0 * f64::from(c.expected_recoverable) / f64::from(c.trials.max(1))
            ),
            c.clean_failures.to_string(),
            c.wrong_bytes.to_string(),
            c.other_failures.to_string(),
            ms(&c.save_ms),
            ms(&c.restore_ms),
            ms(&c.detect_ms),
            format!("{:.1}", c.mean_bytes_read / (1024.0 * 1024.0)),
            heal_counts(c),
            if c.repairs_run == 0 {
                "-".into()
            } else {
                format!("{}/{}", c.repairs_rebuilt, c.repairs_run)
            },
            ms(&c.repair_ms),
        ];
        row(&mut out, &W, &cells.each_ref().map(String::as_str));
        if !c.failing_seeds.is_empty() {
            let _ = writeln!(
                out,
                "  !! {} trial(s) disagree with the oracle; replay with --trial-seed {}",
                c.disagreements,
                c.failing_seeds.iter().map(|s| format!("{s:#x}")).collect::<Vec<_>>().join(", ")
            );
        }
    }
    legend(&mut out, RECOVERY_LEGEND);
    out
}

/// The cost table: one row per cell, from the cell's [`CostReport`] (the only place its
/// figures are computed).
pub fn cost_table(report: &RunReport) -> String {
    let mut out = String::new();
    if report.cells.iter().all(|c| c.cost.is_none()) {
        return out;
    }
    let _ = writeln!(
        out,
        "\nCost of a failure per scheme (the scenario's job model; a scheme changes only the \
         save stall):"
    );
    const W: [isize; 15] = [-22, -8, 7, 7, 10, 7, 9, 13, 10, 12, 10, 7, 10, 6, 11];
    row(&mut out, &W, &header(COST_LEGEND));
    for c in &report.cells {
        let Some(k) = &c.cost else { continue };
        let cells = [
            truncate(&c.scenario, 22),
            c.scheme.clone(),
            k.job.gpus.to_string(),
            format!("{:.2}", k.job.job_mtbf_hours),
            format!("{:.0}", k.job.checkpoint_interval_s),
            format!("{:.1}", k.save_stall_s),
            format!("{:.0}", k.restore_s),
            format!("{:.0}", k.per_failure.gpu_hours),
            format!("{:.0}", k.per_failure.dollars),
            format!("{:.0}", k.at_interval.checkpointing_gpu_h),
            format!("{:.0}", k.gpu_hours_lost_per_day),
            format!("{:.0}", k.young_daly_interval_s),
            format!("{:.0}", k.at_young_daly.total_gpu_h),
            format!("{:.3}", k.effective_ratio),
            format!("{:.3}", k.effective_ratio_at_young_daly),
        ];
        row(&mut out, &W, &cells.each_ref().map(String::as_str));
    }
    legend(&mut out, COST_LEGEND);
    out
}

/// The durability table, its legend and, per scenario, the assumptions behind its figures.
pub fn durability_table(report: &RunReport) -> String {
    let mut out = String::new();
    if report.durability.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\nDurability (Markov chain per placement group; Monte-Carlo check at shortened node MTBF):"
    );
    const W: [isize; 12] = [-22, -8, 6, 8, 8, 11, 11, 12, 9, 16, 7, 8];
    row(&mut out, &W, &header(DURABILITY_LEGEND));
    for d in &report.durability {
        let p = &d.params;
        let mc = &d.check_monte_carlo;
        let cells = [
            truncate(&d.scenario, 22),
            d.scheme.clone(),
            p.nodes.to_string(),
            p.stripes.to_string(),
            format!("{:.2}x", overhead(p)),
            format!("{:.3e}", d.stripe_mttdl_hours),
            format!("{:.3e}", d.loss_per_year),
            format!("{:.0}", d.check_params.node_mtbf_hours),
            format!("{:.2}", d.check_hours / crate::durability::HOURS_PER_YEAR),
            format!("{:.3} ({}/{})", mc.probability, mc.losses, mc.runs),
            format!("{:.3}", mc.ci95),
            format!("{:.3}", d.check_analytic),
        ];
        row(&mut out, &W, &cells.each_ref().map(String::as_str));
    }
    legend(&mut out, DURABILITY_LEGEND);
    let mut seen: Vec<&str> = Vec::new();
    for d in &report.durability {
        if seen.contains(&d.scenario.as_str()) {
            continue;
        }
        seen.push(&d.scenario);
        let a = &d.assumptions;
        let _ = writeln!(out, "Assumptions ({}):", d.scenario);
        let _ = writeln!(
            out,
            "  node failures: independent, exponential, MTBF {:.0} h ({:.1}% of nodes fail per \
             year; configured)",
            a.node_mtbf_hours,
            100.0 * a.node_failures_per_year
        );
        let _ = writeln!(
            out,
            "  repair: exponential, in parallel per failed node, mean {:.2} h = {}",
            a.repair_hours, a.repair_from
        );
        let _ = writeln!(
            out,
            "  correlated failures (a rack, a power domain): {}",
            if a.correlated_failures {
                "modelled"
            } else {
                "not modelled; a whole-rack outage is outside these figures"
            }
        );
        let _ = writeln!(
            out,
            "  placement groups: min(stripes, C(nodes, k + m)), each an independent chain \
             ({:.0} for {})",
            a.placement_groups, d.scheme
        );
    }
    out
}

fn overhead(p: &DurabilityParams) -> f64 {
    (f64::from(p.k) + f64::from(p.m)) / f64::from(p.k.max(1))
}

/// The cost and durability sections under the recovery table.
pub fn summary(report: &RunReport) -> String {
    let mut out = cost_table(report);
    out.push_str(&durability_table(report));
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
        let run =
            RunReport { seed: 1, mode: "fast".into(), cells: vec![cell], durability: Vec::new() };
        assert!(table(&run).contains("--trial-seed 0x9"));
        assert_eq!(cell_other(&run), 1, "the error is neither exact, refused nor wrong");
    }

    fn cell_other(run: &RunReport) -> u32 {
        run.cells[0].other_failures
    }

    #[test]
    fn every_column_has_a_legend_line_and_a_width() {
        // The headers are made from the legends, so a column cannot go unexplained; the
        // widths must cover every one of them.
        assert_eq!(header(RECOVERY_LEGEND).len(), 17);
        assert_eq!(header(COST_LEGEND).len(), 15);
        assert_eq!(header(DURABILITY_LEGEND).len(), 12);
        for legend in [RECOVERY_LEGEND, COST_LEGEND, DURABILITY_LEGEND] {
            for (name, meaning) in legend {
                assert!(meaning.len() > 10, "{name} is explained");
            }
        }
    }

    #[test]
    fn one_cost_figure_per_cell_in_every_table() {
        let job = crate::scenario::LLAMA3_16K;
        let head = CellHead {
            scenario: "s".into(),
            scheme: "rep-3".into(),
            k: 1,
            m: 2,
            overhead: 3.0,
            nodes: 6,
            mode: "real".into(),
        };
        let cost = crate::cost::scheme_report(&job, 3.0);
        let cell = CellReport::from_trials(head, vec![trial(true, Outcome::Restored)], Some(cost));
        let run =
            RunReport { seed: 1, mode: "real".into(), cells: vec![cell], durability: Vec::new() };
        let text = format!("{}{}", table(&run), summary(&run));
        // 16,384 GPUs x (900 + 120 + 600 + 120 s) / 3600 = 7,918.9 GPU-hours: printed once.
        let figure = format!("{:.0}", cost.per_failure.gpu_hours);
        assert_eq!(figure, "7919");
        assert_eq!(text.matches(&figure).count(), 1, "{text}");
        assert!(text.contains("Columns:") && text.contains("GPU-h/failure"));
        assert!((cost.save_stall_s - 90.0).abs() < 1e-9, "3 copies stall 3 x 30 s");
    }

    #[test]
    fn healed_counts_full_and_partial_heals_apart() {
        let heal = |full: bool, restores: bool| HealOutcome {
            cluster_back: true,
            verified_step: Some(1),
            restores_after_heal: restores,
            repair: None,
            full_redundancy: full,
            bad_shards: u64::from(!full),
            note: String::new(),
        };
        let mut trials = Vec::new();
        for (full, restores) in [(true, true), (false, true), (false, false)] {
            let mut t = trial(true, Outcome::Restored);
            t.heal = Some(heal(full, restores));
            trials.push(t);
        }
        let head = CellHead {
            scenario: "s".into(),
            scheme: "rs-4+2".into(),
            k: 4,
            m: 2,
            overhead: 1.5,
            nodes: 6,
            mode: "real".into(),
        };
        let cell = CellReport::from_trials(head, trials, None);
        assert_eq!((cell.healed_full, cell.healed_partial, cell.healed), (1, 1, 3));
        assert_eq!(heal_counts(&cell), "1/1/3");
    }
}
