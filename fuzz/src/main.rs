//! `rackpoint-fuzz`: runs the fuzz targets for a bounded time or number of executions,
//! replays saved inputs, or makes the seed corpus.
//!
//! ```text
//! rackpoint-fuzz run [--target frame|manifest|handler]... [--seconds N] [--execs N] [--seed S]
//!                    [--corpus DIR] [--out DIR] [--max-len BYTES]
//! rackpoint-fuzz replay --target T FILE...    # in order, on one fresh target
//! rackpoint-fuzz corpus [--out DIR]           # needs the rackpoint-store binary
//! ```

mod generate;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rackpoint_fuzz::runner::{self, Options};
use rackpoint_fuzz::{default_corpus, seeds, target, TARGETS};

#[derive(Parser)]
#[command(about = "Rackpoint's fuzz harness (stable toolchain, seeded, structure-aware)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mutate and run inputs of each target in turn (all targets unless named).
    Run {
        /// A target to run (repeatable): frame, manifest, handler.
        #[arg(long = "target")]
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long)]
        seconds: Option<f64>,
        /// Executions per target (with --seconds, whichever comes first).
        #[arg(long)]
        execs: Option<u64>,
        /// Seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The seed corpus (default: fuzz/corpus of the source tree).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Where failing inputs are written (DIR/<target>/crash-*.bin).
        #[arg(long, default_value = "fuzz-out")]
        out: PathBuf,
        /// Longest input made (default: the target's own).
        #[arg(long)]
        max_len: Option<usize>,
    },
    /// Run saved inputs, in order, on one fresh target (a failure's `.history/*` files then
    /// the failure itself reproduce a handler failure).
    Replay {
        /// The target.
        #[arg(long)]
        target: String,
        /// The inputs.
        files: Vec<PathBuf>,
    },
    /// Make the seed corpus: real saves on a local cluster (needs the rackpoint-store binary).
    Corpus {
        /// Where to write it (default: fuzz/corpus of the source tree).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { targets, seconds, execs, seed, corpus, out, max_len } => {
            let names: Vec<String> = if targets.is_empty() {
                TARGETS.iter().map(|t| (*t).to_owned()).collect()
            } else {
                targets
            };
            let corpus = corpus.unwrap_or_else(default_corpus);
            let duration = match (seconds, execs) {
                (None, None) => Some(Duration::from_secs(60)),
                (s, _) => s.map(Duration::from_secs_f64),
            };
            let opts = Options {
                duration,
                execs,
                seed,
                max_len,
                out: Some(out),
                progress: Some(Duration::from_secs(10)),
            };
            let mut failed = false;
            for name in &names {
                let Some(mut t) = target(name) else {
                    eprintln!("unknown target {name:?} (known: {})", TARGETS.join(", "));
                    return ExitCode::from(2);
                };
                let seeds = match seeds(&corpus, name) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("cannot read the corpus of {name} in {}: {e}", corpus.display());
                        return ExitCode::from(2);
                    }
                };
                let report = runner::run(t.as_mut(), seeds, &opts);
                println!("{report}");
                for f in &report.failures {
                    let at = f.saved.as_ref().map(|p| p.display().to_string());
                    println!(
                        "  FAILURE x{}: {}\n    input: {}",
                        f.count,
                        f.what,
                        at.unwrap_or_else(|| "(not saved)".into())
                    );
                }
                failed |= !report.failures.is_empty();
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Replay { target: name, files } => {
            let Some(mut t) = target(&name) else {
                eprintln!("unknown target {name:?} (known: {})", TARGETS.join(", "));
                return ExitCode::from(2);
            };
            let mut inputs = Vec::new();
            for f in &files {
                match std::fs::read(f) {
                    Ok(b) => inputs.push(b),
                    Err(e) => {
                        eprintln!("cannot read {}: {e}", f.display());
                        return ExitCode::from(2);
                    }
                }
            }
            let mut failed = false;
            for (f, r) in files.iter().zip(runner::replay(t.as_mut(), &inputs)) {
                match r {
                    Ok(()) => println!("{}: ok", f.display()),
                    Err(what) => {
                        failed = true;
                        println!("{}: FAILURE: {what}", f.display());
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Corpus { out } => {
            let out = out.unwrap_or_else(default_corpus);
            match generate::corpus(&out) {
                Ok(()) => {
                    println!("corpus written to {}", out.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
