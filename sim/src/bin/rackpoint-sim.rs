//! `rackpoint-sim`: runs fault scenarios in real or fast mode and prints the recovery table,
//! the cost of failures and the durability figures; `--out DIR` also writes `report.json`
//! and SVG plots. Exits 1 if any trial disagrees with the oracle (the seeds are printed), 2
//! on an error; SIGINT or SIGTERM during a real-mode run stops every node process the run
//! started and exits 130 or 143.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rackpoint_client::local_cluster::find_store_binary;
use rackpoint_proto::JobName;
use rackpoint_sim::real::{self, RealOptions};
use rackpoint_sim::run::{self, Mode, RunOptions};
use rackpoint_sim::scenario::{CheckpointSpec, ClusterShape, Scenario};
use rackpoint_sim::{plot, report};

#[derive(Parser)]
#[command(name = "rackpoint-sim", version, about = "Rackpoint fault-injection simulator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Real,
    Fast,
}

#[derive(Subcommand)]
enum Command {
    /// Runs scenarios and reports recovery, time, cost and durability.
    Run {
        /// Scenario files.
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
        /// Trials per scheme (default: each scenario's own).
        #[arg(long)]
        trials: Option<u32>,
        /// Run seed (default: each scenario's own).
        #[arg(long)]
        seed: Option<u64>,
        /// Replays the one trial with this seed (as printed for a failing trial; 0x… or decimal).
        #[arg(long, value_parser = parse_seed)]
        trial_seed: Option<u64>,
        /// Writes report.json and SVG plots here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Real processes or the in-process simulation.
        #[arg(long, value_enum, default_value = "fast")]
        mode: ModeArg,
        /// Monte-Carlo runs of the durability check.
        #[arg(long, default_value_t = 400)]
        monte_carlo_runs: u64,
        /// Runs every scheme on this many nodes (for example 1000 in fast mode).
        #[arg(long, requires = "racks")]
        nodes: Option<usize>,
        /// Racks for `--nodes`.
        #[arg(long, requires = "nodes")]
        racks: Option<usize>,
        /// Saves parts of this many bytes instead of each scenario's own.
        #[arg(long)]
        checkpoint_bytes: Option<u64>,
    },
    /// Saves one part of seeded objects and exits (real mode runs it to kill a client).
    #[command(hide = true)]
    SaveWorker {
        #[arg(long)]
        cluster: PathBuf,
        #[arg(long)]
        job: String,
        #[arg(long)]
        step: u64,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        bytes: u64,
        #[arg(long)]
        objects: u32,
        #[arg(long)]
        shard_size: u32,
    },
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> ExitCode {
    match run_cli() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rackpoint-sim: {e:#}");
            // SIGINT/SIGTERM during a real-mode run: the nodes are stopped; exit as the
            // signal would have (130, 143).
            let signal =
                e.downcast_ref::<run::RunError>().and_then(run::RunError::signal_exit_status);
            ExitCode::from(signal.unwrap_or(2))
        }
    }
}

fn run_cli() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::SaveWorker { cluster, job, step, seed, bytes, objects, shard_size } => {
            let job = JobName::new(job).context("job name")?;
            let spec =
                CheckpointSpec { bytes, objects, world_size: 1, shard_size_bytes: shard_size };
            let rt = tokio::runtime::Runtime::new().context("runtime")?;
            rt.block_on(real::save_worker(&cluster, &job, step, &spec, seed))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            scenarios,
            trials,
            seed,
            trial_seed,
            out,
            mode,
            monte_carlo_runs,
            nodes,
            racks,
            checkpoint_bytes,
        } => {
            let mut loaded: Vec<Scenario> = scenarios
                .iter()
                .map(|p| Scenario::load(p).with_context(|| p.display().to_string()))
                .collect::<Result<_, _>>()?;
            for s in loaded.iter_mut().filter(|_| checkpoint_bytes.is_some()) {
                s.checkpoint.bytes = checkpoint_bytes.unwrap_or(s.checkpoint.bytes);
                s.validate().with_context(|| format!("{} with --checkpoint-bytes", s.name))?;
            }
            if let (Some(nodes), Some(racks)) = (nodes, racks) {
                for s in &mut loaded {
                    s.cluster = Some(ClusterShape { nodes, racks });
                    s.validate().with_context(|| format!("{} on {nodes} nodes", s.name))?;
                }
            }
            let mode = match mode {
                ModeArg::Real => Mode::Real,
                ModeArg::Fast => Mode::Fast,
            };
            let real = match mode {
                Mode::Real => Some(RealOptions {
                    store_bin: find_store_binary()?,
                    worker_bin: std::env::current_exe().context("own path")?,
                }),
                Mode::Fast => None,
            };
            let opts =
                RunOptions { mode, trials, seed, replay: trial_seed, real, monte_carlo_runs };
            let bar = progress(run::total_trials(&loaded, &opts));
            let tick = || {
                if let Some(b) = &bar {
                    b.inc(1);
                }
            };
            let report = run::run(&loaded, &opts, &tick)?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            print!("{}", report::table(&report));
            print!("{}", report::summary(&report));
            if let Some(dir) = out {
                let written = write_outputs(&report, &dir)?;
                println!("\nwrote {}: {}", dir.display(), written.join(", "));
            }
            Ok(if report.all_agree() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

/// A progress bar on stderr, only on a terminal and for more than a handful of trials.
fn progress(total: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() || total < 10 {
        return None;
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} trials, eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

fn write_outputs(
    report: &report::RunReport,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<&'static str>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let json = dir.join("report.json");
    std::fs::write(&json, report.to_json()).with_context(|| format!("write {}", json.display()))?;
    let mut written = vec!["report.json", "recovery.svg", "restore-time.svg", "cost-interval.svg"];
    plot::recovery_bars(report, &dir.join("recovery.svg"))?;
    plot::restore_time_cdf(report, &dir.join("restore-time.svg"))?;
    plot::cost_vs_interval(report, &dir.join("cost-interval.svg"))?;
    if !report.durability.is_empty() {
        plot::durability_vs_overhead(report, &dir.join("durability.svg"))?;
        written.push("durability.svg");
    }
    Ok(written)
}
