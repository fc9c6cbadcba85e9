//! `rackpoint`: the command-line tool of a Rackpoint cluster: set up and run a local cluster,
//! look at nodes, put/get/ls/verify/rm checkpoints, and run the demo. Global options
//! (`--cluster`, `--json`) go before or after the subcommand. Exit status: see [`exit::Exit`].

mod all_jobs;
mod cluster;
mod commands;
mod demo;
mod exit;
mod folder_tree;
mod json;
mod json_ops;
mod lifecycle;
mod membership;
mod rebalance;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use exit::{Exit, Usage};
use rackpoint_client::cluster_dir::IdentityFiles;
use rackpoint_client::{Client, ClientOptions};

/// Rackpoint: a distributed checkpoint store for training jobs.
#[derive(Debug, Parser)]
#[command(name = "rackpoint", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand takes, before or after its name.
#[derive(Debug, clap::Args)]
pub struct Global {
    /// The cluster's cluster.toml (status, put, get, ls, verify, rm).
    #[arg(long, global = true, env = "RACKPOINT_CLUSTER", value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Print one JSON document on stdout instead of text (every command; `cluster up` prints
    /// one when its nodes are up and one when they stop); errors too are one JSON document on
    /// stdout, with the same exit status. The schema is in the README.
    #[arg(long, global = true)]
    pub json: bool,
    /// The client certificate to present, instead of the one cluster.toml names (with
    /// --key; issue one with `rackpoint cluster cert`).
    #[arg(long, global = true, env = "RACKPOINT_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert.
    #[arg(long, global = true, env = "RACKPOINT_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl Global {
    /// Connects to the cluster named by `--cluster` or `RACKPOINT_CLUSTER`, as the identity
    /// `--cert`/`--key` name, or else the one the cluster file names.
    pub fn connect(&self) -> anyhow::Result<Client> {
        let Some(file) = &self.cluster else {
            return Err(Usage(
                "no cluster given: pass --cluster FILE or set RACKPOINT_CLUSTER".into(),
            )
            .into());
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(IdentityFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        };
        // The cluster's errors name the file they are about.
        let client = Client::connect_as(file, identity.as_ref(), ClientOptions::default());
        if let Ok(c) = &client {
            OPEN.lock().unwrap_or_else(|p| p.into_inner()).push(c.clone());
        }
        client.context("cannot use the cluster")
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set up and run local clusters.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Nodes up or down, with their address, rack, shards and bytes.
    Status,
    /// Save files as one part of a checkpoint: each file becomes an object named by its file name.
    Put(commands::PutArgs),
    /// Restore a part's objects as files into a folder.
    Get(commands::GetArgs),
    /// List a job's checkpoints (parts, completeness, bytes, failures survivable), or without
    /// a job the jobs of the cluster (checkpoints, stored bytes, newest step).
    Ls(commands::LsArgs),
    /// Read back every shard of a checkpoint and check hashes and manifest chains.
    Verify(commands::VerifyArgs),
    /// Delete a checkpoint from every node.
    Rm(commands::RmArgs),
    /// Bring a checkpoint (`--step N`), every checkpoint (`--all`) or every checkpoint of
    /// every job (`--all-jobs`) back to full redundancy.
    Repair(lifecycle::RepairArgs),
    /// Keep the newest N complete checkpoints (`--keep N`) of a job or of every job
    /// (`--all-jobs`), delete older ones and orphans.
    Gc(lifecycle::GcArgs),
    /// Move stored shards onto the placement the current map gives (nodes just added), a
    /// bounded number at a time under a rate limit (admin only).
    Rebalance(rebalance::RebalanceArgs),
    /// The main job on an embedded default: a 6-node cluster on loopback, a checkpoint saved,
    /// two nodes killed with SIGKILL, the checkpoint restored and verified.
    Demo(demo::DemoArgs),
}

impl Command {
    /// The name used in JSON documents (`cluster init`, ...).
    fn json_name(&self) -> &'static str {
        match self {
            Command::Cluster(c) => c.json_name(),
            Command::Status => "status",
            Command::Put(_) => "put",
            Command::Get(_) => "get",
            Command::Ls(_) => "ls",
            Command::Verify(_) => "verify",
            Command::Rm(_) => "rm",
            Command::Repair(_) => "repair",
            Command::Gc(_) => "gc",
            Command::Rebalance(_) => "rebalance",
            Command::Demo(_) => "demo",
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let json = cli.global.json;
    let name = cli.command.json_name();
    match run(cli) {
        Ok(()) => Exit::Success.into(),
        Err(e) => {
            let code = exit::code_of(&e);
            // The one path of every failure: a JSON document on stdout with `--json` (none
            // if the command printed its own report, say `verify`), else one line on stderr.
            if json {
                if !exit::already_reported(&e) {
                    json::print(&json::ErrorDoc::new(name, &e, code));
                }
            } else if let Some(line) = exit::error_line(&e) {
                eprintln!("rackpoint: {line}");
            }
            code.into()
        }
    }
}

/// A command line clap refused (exit 2): clap's text, or with `--json` one JSON document.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let wants_json = std::env::args_os().any(|a| a == "--json");
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) || !wants_json {
        e.exit();
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
    json::print(&json::ErrorDoc::usage(first));
    Exit::Usage.into()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    if let Command::Cluster(c) = command {
        return cluster::run(c, &global);
    }
    init_logging();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        let result = match command {
            Command::Cluster(_) => unreachable!("handled above"),
            Command::Status => commands::status(&global).await,
            Command::Put(a) => commands::put(&global, a).await,
            Command::Get(a) => commands::get(&global, a).await,
            Command::Ls(a) => commands::ls(&global, a).await,
            Command::Verify(a) => commands::verify(&global, a).await,
            Command::Rm(a) => commands::rm(&global, a).await,
            Command::Repair(a) => lifecycle::repair(&global, a).await,
            Command::Gc(a) => lifecycle::gc(&global, a).await,
            Command::Rebalance(a) => rebalance::run(&global, a).await,
            Command::Demo(a) => demo::run(a, global.json).await,
        };
        // Tell the nodes this process is done with its connections: left open, each would
        // hold one of the identity's connection slots on its node until the idle timeout.
        let open = std::mem::take(&mut *OPEN.lock().unwrap_or_else(|p| p.into_inner()));
        futures::future::join_all(open.iter().map(Client::close)).await;
        result
    })
}

/// The clients this process opened (closed before it exits).
static OPEN: std::sync::Mutex<Vec<Client>> = std::sync::Mutex::new(Vec::new());

/// Logs to stderr, errors only unless `RUST_LOG` says otherwise (`RUST_LOG=warn` shows nodes
/// going down and up; `RUST_LOG=rackpoint_client=debug` every request with its id), so that a
/// failing command ends with exactly one line of reason. `RACKPOINT_LOG_FORMAT=json` writes
/// one JSON object a line, with the request span's fields; an unknown format is text, said on
/// stderr.
pub fn init_logging() {
    use rackpoint_proto::logs::{LogFormat, LOG_FORMAT_ENV};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let format = std::env::var(LOG_FORMAT_ENV).ok();
    let format = LogFormat::chosen(format.as_deref(), None).unwrap_or_else(|e| {
        eprintln!("rackpoint: {e}; logging as text");
        LogFormat::Text
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}
