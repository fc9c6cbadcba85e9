//! `rackpoint`: the command-line tool of a Rackpoint cluster. For now it sets up a local
//! cluster folder (`rackpoint cluster init`); each command group is one subcommand enum.

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
    match cli.command {
        Command::Cluster(ClusterCommand::Init(args)) => cluster_init(args),
    }
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
