//! `rackpoint-store`: runs one storage node from its `node.toml`.
//!
//! Contract with scripts and test harnesses: once the QUIC endpoint serves, exactly one line
//! `listening <ip:port>` is printed on stdout; logs go to stderr (`RUST_LOG`, default
//! `info`). SIGTERM or SIGINT drains in-flight requests and exits 0. A bad config,
//! unreadable certificates, or a data dir in use by another process exit non-zero with a
//! one-line error on stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rackpoint_store::{load_node_config, Node};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Rackpoint storage node.
#[derive(Debug, Parser)]
#[command(name = "rackpoint-store", version, about)]
struct Args {
    /// The node's `node.toml`; relative paths in it are relative to its folder.
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
}

fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Waits for SIGTERM or SIGINT (handlers are installed before this is first polled).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        let term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        Ok(Self { term, int })
    }

    async fn wait(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Everything the node writes (RocksDB files, segment files) is its user's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let config = load_node_config(&args.config)?;
    let signals = StopSignals::install()?;
    let node = Node::start(&config).await?;
    let addr = node.local_addr();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening {addr}").and_then(|()| stdout.flush()).context("stdout")?;
    drop(stdout);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %config.id,
        %addr,
        data_dir = %config.data_dir.display(),
        "rackpoint-store serving"
    );
    let which = signals.wait().await;
    tracing::info!("{which}: draining in-flight requests");
    let report = node.stop().await;
    if report.drained {
        tracing::info!("stopped");
    } else {
        tracing::warn!("stopped with requests still in flight after the drain timeout");
    }
    Ok(())
}

/// The message with its lines (a TOML parser's, say) joined into one.
fn one_line(message: &str) -> String {
    message.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rackpoint-store: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rackpoint-store: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
