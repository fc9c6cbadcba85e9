//! `rackpoint-store`: runs one storage node from its `node.toml`.
//!
//! Contract with scripts and test harnesses: once the QUIC endpoint serves, exactly one line
//! `listening <ip:port>` is printed on stdout; logs go to stderr (`RUST_LOG`, default
//! `info`), as text or, with `RACKPOINT_LOG_FORMAT=json` or `log_format = "json"` in
//! `node.toml`, one JSON object a line; the metrics endpoint's bound address is logged
//! (`metrics endpoint serving`, field `metrics_addr`) before the `listening` line is printed.
//! SIGTERM or SIGINT drains in-flight requests and exits 0. A bad config,
//! unreadable certificates, or a data dir in use by another process exit non-zero with a
//! one-line error on stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rackpoint_proto::logs::{LogFormat, LOG_FORMAT_ENV};
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

/// Logs to stderr in `format`: text, or JSON lines with the current span's fields (a
/// request's id, kind, peer and identity) and the span list.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).init(),
    }
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

async fn run(config: rackpoint_proto::NodeConfig) -> anyhow::Result<()> {
    // Everything the node writes (RocksDB files, segment files) is its user's alone.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let signals = StopSignals::install()?;
    let node = Node::start(&config).await?;
    let addr = node.local_addr();
    if let Some(metrics_addr) = node.metrics_addr() {
        tracing::info!(%metrics_addr, "metrics endpoint serving");
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening {addr}").and_then(|()| stdout.flush()).context("stdout")?;
    drop(stdout);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        node = %config.id,
        %addr,
        data_dir = %config.data_dir.display(),
        started_empty = node.started_empty(),
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
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("rackpoint-store: error: {}", one_line(&e.to_string()));
        ExitCode::FAILURE
    };
    let config = match load_node_config(&args.config) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let env = std::env::var(LOG_FORMAT_ENV).ok();
    match LogFormat::chosen(env.as_deref(), config.log_format) {
        Ok(format) => init_logging(format),
        Err(e) => return fail(&e),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rackpoint-store: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rackpoint-store: error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}
