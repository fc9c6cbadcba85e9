//! A whole run: every scenario on every scheme in the chosen mode, then the costs and the
//! durability figures, gathered into one [`RunReport`].

use rackpoint_proto::limits::SIM_SHUTDOWN_GRACE_MS;

use crate::cost;
use crate::durability::{self, DurabilityParams, HOURS_PER_YEAR};
use crate::real::{self, RealError, RealOptions};
use crate::report::{CellReport, DurabilityRow, RunReport};
use crate::scenario::{DurabilitySpec, Scenario};

/// Where trials run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real `rackpoint-store` processes.
    Real,
    /// The in-process simulation.
    Fast,
}

impl Mode {
    /// `real` or `fast`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Real => "real",
            Mode::Fast => "fast",
        }
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Real or fast.
    pub mode: Mode,
    /// Trials per cell (else each scenario's own).
    pub trials: Option<u32>,
    /// The run seed (else each scenario's own).
    pub seed: Option<u64>,
    /// Replay only the trial with this seed, in every cell.
    pub replay: Option<u64>,
    /// What real mode needs.
    pub real: Option<RealOptions>,
    /// Monte-Carlo runs of the durability check.
    pub monte_carlo_runs: u64,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Real mode could not set up a cell.
    #[error("scenario {scenario}, scheme {scheme}: {error}")]
    Real {
        /// The scenario.
        scenario: String,
        /// The scheme.
        scheme: String,
        /// Why.
        error: Box<RealError>,
    },
    /// Real mode was asked for without its binaries.
    #[error("real mode needs the rackpoint-store binary and a save-worker binary")]
    NoRealOptions,
    /// The async runtime could not start, or its signal handlers could not be installed.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// SIGINT or SIGTERM arrived during a real-mode run; the running clusters' node
    /// processes were stopped.
    #[error(
        "interrupted by {signal}; stopped {stopped} node process(es) of the running cluster(s)"
    )]
    Interrupted {
        /// `SIGINT` or `SIGTERM`.
        signal: &'static str,
        /// Node processes killed by the handler (a dropped cluster kills its own too).
        stopped: usize,
    },
}

impl RunError {
    /// The exit status a shell gives a process killed by the signal (128 + its number), for
    /// an interrupted run; `None` otherwise.
    pub fn signal_exit_status(&self) -> Option<u8> {
        match self {
            RunError::Interrupted { signal: "SIGINT", .. } => Some(130),
            RunError::Interrupted { .. } => Some(143),
            _ => None,
        }
    }
}

/// SIGINT and SIGTERM, listened for during a real-mode run (installed inside the runtime).
struct Interrupts {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new(rt: &tokio::runtime::Runtime) -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let _in = rt.enter();
        Ok(Self { int: signal(SignalKind::interrupt())?, term: signal(SignalKind::terminate())? })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Trials each cell of `scenarios` will run under `opts` (for a progress bar).
pub fn total_trials(scenarios: &[Scenario], opts: &RunOptions) -> u64 {
    scenarios
        .iter()
        .map(|s| {
            let per = if opts.replay.is_some() { 1 } else { opts.trials.unwrap_or(s.trials) };
            u64::from(per) * s.schemes.len() as u64
        })
        .sum()
}

/// Runs every scenario on every scheme, calling `tick` after each trial.
pub fn run(
    scenarios: &[Scenario],
    opts: &RunOptions,
    tick: &(dyn Fn() + Sync),
) -> Result<RunReport, RunError> {
    let mut cells = Vec::new();
    let mut runtime = match opts.mode {
        Mode::Real => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(RunError::Runtime)?;
            let interrupts = Interrupts::new(&rt).map_err(RunError::Runtime)?;
            Some((rt, interrupts))
        }
        Mode::Fast => None,
    };
    for scenario in scenarios {
        let trials = opts.trials.unwrap_or(scenario.trials);
        let seed = opts.seed.unwrap_or(scenario.seed);
        let job = scenario.job.resolve().expect("validated when loaded");
        for scheme in &scenario.schemes {
            let mut cell = match (&mut runtime, opts.mode) {
                (Some((rt, interrupts)), Mode::Real) => {
                    let real_opts = opts.real.as_ref().ok_or(RunError::NoRealOptions)?;
                    let trials = if opts.replay.is_some() { 1 } else { trials };
                    let seed_for = opts.replay;
                    let ran = rt.block_on(async {
                        tokio::select! {
                            r = real::run_cell(
                                scenario, scheme, trials, seed, seed_for, real_opts, tick,
                            ) => Ok(r),
                            signal = interrupts.recv() => Err(signal),
                        }
                    });
                    match ran {
                        Ok(r) => r.map_err(|error| RunError::Real {
                            scenario: scenario.name.clone(),
                            scheme: scheme.name.clone(),
                            error: Box::new(error),
                        })?,
                        Err(signal) => {
                            // The cell's future is dropped (its cluster with it); nodes still
                            // held by a task are stopped here, then the runtime is let go of
                            // without waiting for blocking work.
                            let stopped = real::stop_all_clusters();
                            if let Some((rt, _)) = runtime.take() {
                                rt.shutdown_timeout(std::time::Duration::from_millis(
                                    SIM_SHUTDOWN_GRACE_MS,
                                ));
                            }
                            return Err(RunError::Interrupted { signal, stopped });
                        }
                    }
                }
                _ => crate::fast::run_cell(scenario, scheme, trials, seed, opts.replay, tick),
            };
            attach_cost(&mut cell, &job);
            cells.push(cell);
        }
    }
    let durability = scenarios.iter().flat_map(|s| durability_rows(s, opts)).collect();
    Ok(RunReport {
        seed: opts.seed.unwrap_or_else(|| scenarios.first().map_or(0, |s| s.seed)),
        mode: opts.mode.name().into(),
        cells,
        durability,
    })
}

/// Prices a cell's failures with the job model on the cell's scheme: the modelled stall
/// `save_stall_s * overhead` and the model's restore time (`cost::scheme_report`), in both
/// modes. A trial saves a small checkpoint, so its measured times (the recovery table's save
/// and restore columns) do not stand in for the job's.
fn attach_cost(cell: &mut CellReport, job: &crate::scenario::ResolvedJob) {
    cell.cost = Some(cost::scheme_report(job, cell.overhead));
}

/// Where a durability spec's repair time comes from, in words.
fn repair_from(spec: &DurabilitySpec) -> String {
    let source = spec.repair_source.as_deref().unwrap_or("configured");
    match (spec.repair_hours, spec.repair_mib_s, spec.node_data_bytes) {
        (Some(h), _, _) => format!("repair_hours = {h} ({source})"),
        (None, Some(rate), Some(bytes)) => format!(
            "{:.1} GiB per node / {rate} MiB/s + {} h before it starts; throughput: {source}",
            bytes as f64 / (1u64 << 30) as f64,
            spec.repair_start_hours
        ),
        _ => source.to_string(),
    }
}

/// The durability figures of a scenario with a `[durability]` section, one per scheme.
fn durability_rows(s: &Scenario, opts: &RunOptions) -> Vec<DurabilityRow> {
    let Some(spec) = &s.durability else { return Vec::new() };
    let hours = spec.monte_carlo_years * HOURS_PER_YEAR;
    s.schemes
        .iter()
        .map(|scheme| {
            let (k, m) = scheme.km();
            let params = DurabilityParams {
                k,
                m,
                nodes: s.cluster_of(scheme).nodes,
                stripes: spec.stripes,
                node_mtbf_hours: spec.node_mtbf_hours,
                repair_hours: spec.repair_hours(),
            };
            let mut check = params;
            // Halve the node MTBF until a year loses the checkpoint often enough to count.
            while durability::loss_probability(&check, hours) < 0.2
                && check.node_mtbf_hours > check.repair_hours * 2.0
            {
                check.node_mtbf_hours /= 2.0;
            }
            let seed = opts.seed.unwrap_or(s.seed) ^ u64::from(k) << 8 ^ u64::from(m);
            DurabilityRow {
                scenario: s.name.clone(),
                scheme: scheme.name.clone(),
                params,
                stripe_mttdl_hours: durability::stripe_mttdl_hours(
                    k,
                    m,
                    params.node_mtbf_hours,
                    params.repair_hours,
                ),
                loss_per_year: durability::loss_probability(&params, HOURS_PER_YEAR),
                assumptions: durability::assumptions(&params, repair_from(spec)),
                check_params: check,
                check_hours: hours,
                check_analytic: durability::loss_probability(&check, hours),
                check_monte_carlo: durability::monte_carlo(
                    &check,
                    hours,
                    opts.monte_carlo_runs,
                    seed,
                ),
            }
        })
        .collect()
}
