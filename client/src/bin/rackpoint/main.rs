//! `rackpoint`: the command-line tool of a Rackpoint cluster: set up a local cluster folder,
//! look at nodes, put/get/ls/verify/rm checkpoints, and run the demo. Exit status 0 only on
//! full success; otherwise one line on stderr saying what failed.

mod commands;
mod demo;
mod lifecycle;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use rackpoint_client::cluster_dir::{self, node_dir, InitOptions, CLUSTER_FILE, NODE_FILE};

/// Rackpoint: a distributed checkpoint store for training jobs.
#[derive(Debug, Parser)]
#[command(name = "rackpoint", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Set up and manage clusters.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Nodes up or down, with their address, rack, shards and bytes.
    Status(commands::ClusterArg),
    /// Save files as one part of a checkpoint: each file becomes an object named by its file name.
    Put(commands::PutArgs),
    /// Restore a part's objects as files into a folder.
    Get(commands::GetArgs),
    /// List a job's checkpoints: parts, completeness, bytes, failures survivable.
    Ls(commands::JobArgs),
    /// Read back every shard of a checkpoint and check hashes and manifest chains.
    Verify(commands::JobArgs),
    /// Delete a checkpoint (`--step N`) from every node.
    Rm(commands::JobArgs),
    /// Bring a checkpoint (`--step N`) or every checkpoint (`--all`) back to full redundancy.
    Repair(lifecycle::RepairArgs),
    /// Keep the newest N complete checkpoints (`--keep N`), delete older ones and orphans.
    Gc(lifecycle::GcArgs),
    /// The main job on an embedded default: a 6-node cluster on loopback, a checkpoint saved,
    /// two nodes killed with SIGKILL, the checkpoint restored and verified.
    Demo(demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Make a local cluster folder: CA, node and client certificates, node configs on
    /// 127.0.0.1, and cluster.toml.
    Init(InitArgs),
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Folder to make the cluster in (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Number of nodes (ids 1..=N).
    #[arg(long)]
    nodes: usize,
    /// Number of racks (failure domains); node i is in rack-((i - 1) mod R).
    #[arg(long, default_value_t = 3)]
    racks: usize,
    /// Node i listens on BASE_PORT + i - 1 (default: free ports chosen now).
    #[arg(long)]
    base_port: Option<u16>,
    /// Data shards per stripe.
    #[arg(long, default_value_t = 4)]
    k: u8,
    /// Parity shards per stripe.
    #[arg(long, default_value_t = 2)]
    m: u8,
    /// Bytes per shard.
    #[arg(long = "shard-size", default_value_t = 1 << 20)]
    shard_size_bytes: u32,
    /// Each node's capacity in shard bytes (0: no limit beyond the disk).
    #[arg(long = "capacity", default_value_t = 0)]
    capacity_bytes: u64,
    /// Overwrite an existing cluster's configs and certificates (node data is kept).
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rackpoint: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Command::Cluster(ClusterCommand::Init(args)) => return cluster_init(args),
        other => other,
    };
    init_logging();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        match command {
            Command::Cluster(_) => unreachable!("handled above"),
            Command::Status(c) => commands::status(c).await,
            Command::Put(a) => commands::put(a).await,
            Command::Get(a) => commands::get(a).await,
            Command::Ls(a) => commands::ls(a).await,
            Command::Verify(a) => commands::verify(a).await,
            Command::Rm(a) => commands::rm(a).await,
            Command::Repair(a) => lifecycle::repair(a).await,
            Command::Gc(a) => lifecycle::gc(a).await,
            Command::Demo(a) => demo::run(a).await,
        }
    })
}

/// Logs to stderr, errors only unless `RUST_LOG` says otherwise (`RUST_LOG=warn` shows nodes
/// going down and up), so that a failing command ends with exactly one line of reason.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn cluster_init(args: InitArgs) -> anyhow::Result<()> {
    let opts = InitOptions {
        nodes: args.nodes,
        racks: args.racks,
        base_port: args.base_port,
        k: args.k,
        m: args.m,
        shard_size_bytes: args.shard_size_bytes,
        capacity_bytes: args.capacity_bytes,
        force: args.force,
    };
    let map = cluster_dir::init(&args.dir, &opts)
        .with_context(|| format!("cannot make a cluster in {}", args.dir.display()))?;
    println!(
        "made a cluster of {} nodes in {} (code {}+{}, {} byte shards)",
        map.nodes.len(),
        args.dir.join(CLUSTER_FILE).display(),
        map.code.k,
        map.code.m,
        map.code.shard_size_bytes
    );
    println!("start each node with:");
    for node in &map.nodes {
        let config = node_dir(&args.dir, node.id).join(NODE_FILE);
        println!("  rackpoint-store --config {}   # {} {}", config.display(), node.addr, node.rack);
    }
    Ok(())
}
