//! `rackpoint cluster init` (make a local cluster folder), `rackpoint cluster up` (run its
//! nodes as child processes in the foreground until Ctrl-C or SIGTERM), `rackpoint cluster
//! cert` (issue a client identity), and the map changes of `membership` (`add-node`,
//! `decommission`, `push-map`); each with `--json` too.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rackpoint_client::cluster_dir::{
    self, node_dir, InitOptions, CLUSTER_FILE, NODE_FILE, NODE_LOG_FILE,
};
use rackpoint_client::local_cluster::{find_store_binary, LocalCluster};
use rackpoint_proto::access::{Access, Grant, JobPattern};
use rackpoint_proto::limits::DEFAULT_CLIENT_CERT_DAYS;
use rackpoint_proto::NodeId;

use crate::exit::Usage;
use crate::json;
use crate::json_ops::{CertDoc, InitDoc, InitNodeDoc, UpDoc, UpNodeDoc};
use crate::Global;
use tokio::signal::unix::{signal, SignalKind};

/// `rackpoint cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make a local cluster folder: CA, node and client certificates, node configs on
    /// 127.0.0.1, and cluster.toml.
    Init(InitArgs),
    /// Run every node of a cluster folder (from `cluster init`) as child processes in the
    /// foreground; Ctrl-C or SIGTERM stops them all.
    Up(UpArgs),
    /// Issue a client certificate from the cluster's CA: NAME.pem and NAME.key (0600), for
    /// the jobs and the access level given.
    Cert(CertArgs),
    /// Add a node: its certificate from the cluster's CA, its folder node-<id>/, the map at
    /// the next epoch (signed by the CA) pushed to every node.
    AddNode(crate::membership::AddNodeArgs),
    /// Take a node out of service: flagged in the map at the next epoch, pushed to every
    /// node; new saves place nothing on it, `repair` moves its shards off.
    Decommission(crate::membership::DecommissionArgs),
    /// Push the cluster folder's map (signed by its CA) to every node again.
    PushMap(crate::membership::PushMapArgs),
    /// Learn the newest map the nodes hold (checked against the cluster CA) and write it to
    /// the --cluster file, keeping its TLS paths.
    Pull,
}

/// `rackpoint cluster cert`.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// The cluster folder made by `cluster init` (its authority/ca.key signs).
    #[arg(long)]
    dir: PathBuf,
    /// The identity's name (its certificate's common name and its files' names).
    #[arg(long)]
    name: String,
    /// The jobs it reaches: names, prefixes ending in '*' (`llm-*`), or '*' for every job.
    #[arg(long, value_name = "PATTERN[,PATTERN...]", required_unless_present = "access")]
    jobs: Option<String>,
    /// What it may do: read (get, ls, verify); append (read, and save new checkpoints);
    /// write (append, and rm and gc of its jobs); admin (every job, repair, orphan sweeps).
    #[arg(long, value_parser = ["read", "append", "write", "admin"])]
    access: String,
    /// Days the certificate stays valid.
    #[arg(long, default_value_t = DEFAULT_CLIENT_CERT_DAYS)]
    days: u32,
    /// Folder to write NAME.pem and NAME.key in (default: the cluster folder).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `rackpoint cluster init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder to make the cluster in (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Number of nodes (ids 1..=N).
    #[arg(long)]
    nodes: usize,
    /// Number of racks (failure domains); node i is in rack-((i - 1) mod R).
    #[arg(long, default_value_t = 3)]
    racks: usize,
    /// Node i listens on BASE_PORT + i - 1 (default: free ports chosen now); with --hosts,
    /// every node listens on its own host at BASE_PORT.
    #[arg(long)]
    base_port: Option<u16>,
    /// The nodes' hosts, one address per node in id order (node i listens on the i-th at
    /// --base-port); default: every node on 127.0.0.1.
    #[arg(long, value_name = "IP[,IP...]", value_delimiter = ',', requires = "base_port")]
    hosts: Vec<std::net::IpAddr>,
    /// Each node serves Prometheus metrics (`GET /metrics`) on its host at this TCP port
    /// (nodes on one host: node i at METRICS_PORT + i - 1); default: no metrics endpoint.
    #[arg(long)]
    metrics_port: Option<u16>,
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

/// `rackpoint cluster up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The cluster folder (holding cluster.toml and node-<i>/).
    #[arg(long)]
    dir: PathBuf,
}

/// How often `cluster up` looks for a node that exited by itself.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

impl ClusterCommand {
    /// The name used in JSON documents.
    pub fn json_name(&self) -> &'static str {
        match self {
            ClusterCommand::Init(_) => "cluster init",
            ClusterCommand::Up(_) => "cluster up",
            ClusterCommand::Cert(_) => "cluster cert",
            ClusterCommand::AddNode(_) => "cluster add-node",
            ClusterCommand::Decommission(_) => "cluster decommission",
            ClusterCommand::PushMap(_) => "cluster push-map",
            ClusterCommand::Pull => "cluster pull",
        }
    }
}

pub fn run(command: ClusterCommand, global: &Global) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init(args) => init(args, global.json),
        ClusterCommand::Up(args) => up(args, global.json),
        ClusterCommand::Cert(args) => cert(args, global.json),
        ClusterCommand::AddNode(args) => crate::membership::add_node(args, global.json),
        ClusterCommand::Decommission(args) => crate::membership::decommission(args, global.json),
        ClusterCommand::PushMap(args) => crate::membership::push_map(args, global.json),
        ClusterCommand::Pull => crate::membership::pull(global, global.json),
    }
}

fn cert(args: CertArgs, json: bool) -> anyhow::Result<()> {
    let access = Access::parse(&args.access).map_err(|e| Usage(e.to_string()))?;
    let jobs = match (&args.jobs, access) {
        (Some(list), _) => Grant::parse_patterns(list).map_err(|e| Usage(e.to_string()))?,
        (None, Access::Admin) => vec![JobPattern::All],
        (None, _) => return Err(Usage("--jobs is required below admin access".into()).into()),
    };
    let grant = Grant::new(access, jobs).map_err(|e| Usage(e.to_string()))?;
    let out = args.out.as_deref().unwrap_or(&args.dir);
    let (files, issued) = cluster_dir::issue_client(&args.dir, &args.name, &grant, args.days, out)
        .context("cannot issue the certificate")?;
    if json {
        json::print(&CertDoc {
            command: "cluster cert",
            ok: true,
            name: args.name.clone(),
            access: grant.access.to_string(),
            jobs: grant.jobs.iter().map(ToString::to_string).collect(),
            days: args.days,
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
            serial: issued.serial.to_string(),
            fingerprint: issued.fingerprint.to_string(),
        });
        return Ok(());
    }
    println!(
        "issued {:?}: {grant}, valid {} days\n  certificate {}\n  key         {} (0600)\n  serial      {}\n  fingerprint {}",
        args.name,
        args.days,
        files.cert.display(),
        files.key.display(),
        issued.serial,
        issued.fingerprint
    );
    println!("revoke it by adding its serial to the `revoked` list of every node.toml");
    Ok(())
}

fn init(args: InitArgs, json: bool) -> anyhow::Result<()> {
    let opts = InitOptions {
        nodes: args.nodes,
        racks: args.racks,
        base_port: args.base_port,
        hosts: args.hosts,
        metrics_port: args.metrics_port,
        k: args.k,
        m: args.m,
        shard_size_bytes: args.shard_size_bytes,
        capacity_bytes: args.capacity_bytes,
        force: args.force,
        ..InitOptions::new(args.nodes)
    };
    let map = cluster_dir::init(&args.dir, &opts)
        .with_context(|| format!("cannot make a cluster in {}", args.dir.display()))?;
    if json {
        json::print(&InitDoc {
            command: "cluster init",
            ok: true,
            dir: args.dir.display().to_string(),
            cluster_file: args.dir.join(CLUSTER_FILE).display().to_string(),
            k: map.code.k,
            m: map.code.m,
            shard_size_bytes: map.code.shard_size_bytes,
            nodes: map
                .nodes
                .iter()
                .map(|n| InitNodeDoc {
                    id: n.id.0,
                    addr: n.addr.to_string(),
                    rack: n.rack.clone(),
                    config: node_dir(&args.dir, n.id).join(NODE_FILE).display().to_string(),
                })
                .collect(),
        });
        return Ok(());
    }
    println!(
        "made a cluster of {} nodes in {} (code {}+{}, {} byte shards)",
        map.nodes.len(),
        args.dir.join(CLUSTER_FILE).display(),
        map.code.k,
        map.code.m,
        map.code.shard_size_bytes
    );
    println!("run every node with:\n  rackpoint cluster up --dir {}", args.dir.display());
    println!("or start each node (on its own host) with:");
    for node in &map.nodes {
        let config = node_dir(&args.dir, node.id).join(NODE_FILE);
        println!("  rackpoint-store --config {}   # {} {}", config.display(), node.addr, node.rack);
    }
    Ok(())
}

/// Starts every node, prints where each listens and its process id, then waits for Ctrl-C
/// or SIGTERM and stops them all (exit 0). A node that exits by itself (a crash, or a
/// `kill -9` of a fault drill) is reported on stderr with how to start it again (and, with
/// `--json`, as an `exited` document), and the others keep running; when every node has
/// exited, `up` exits 1.
fn up(args: UpArgs, json: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Handlers first, so that a signal during start-up is not lost.
    let (mut term, mut int) = rt.block_on(async {
        let term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        anyhow::Ok((term, int))
    })?;
    let bin = find_store_binary()?;
    let mut cluster = LocalCluster::open(&args.dir, &bin)
        .with_context(|| format!("cannot start the cluster in {}", args.dir.display()))?;
    let ids: Vec<NodeId> = cluster.map().nodes.iter().map(|n| n.id).collect();
    let file = args.dir.join(CLUSTER_FILE);
    let nodes: Vec<UpNodeDoc> = cluster
        .map()
        .nodes
        .iter()
        .map(|n| UpNodeDoc {
            id: n.id.0,
            addr: n.addr.to_string(),
            rack: n.rack.clone(),
            pid: cluster.pid(n.id).unwrap_or_default(),
            log: cluster.node_dir(n.id).join(NODE_LOG_FILE).display().to_string(),
        })
        .collect();
    let pids: BTreeMap<NodeId, u32> = nodes.iter().map(|n| (NodeId(n.id), n.pid)).collect();
    let up_doc = |event, nodes, exited_node| UpDoc {
        command: "cluster up",
        ok: true,
        event,
        cluster_file: file.display().to_string(),
        nodes,
        exited_node,
    };
    if json {
        json::print(&up_doc("up", nodes, None));
    } else {
        for n in &nodes {
            println!(
                "node {} listening {} ({}) pid {}, log {}",
                n.id, n.addr, n.rack, n.pid, n.log
            );
        }
        println!("{} nodes up; use --cluster {}; Ctrl-C stops them", ids.len(), file.display());
    }
    let mut running: Vec<NodeId> = ids.clone();
    let signalled = rt.block_on(async {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        while !running.is_empty() {
            tokio::select! {
                _ = term.recv() => return true,
                _ = int.recv() => return true,
                _ = tick.tick() => {}
            }
            let (alive, exited): (Vec<NodeId>, Vec<NodeId>) =
                running.iter().partition(|id| cluster.is_running(**id));
            running = alive;
            for id in exited {
                // `kill` of an exited node only reaps it and says how it ended.
                let status = cluster.kill(id).map_or_else(|e| e.to_string(), |s| s.to_string());
                let dir = cluster.node_dir(id);
                eprintln!(
                    "node {id} (pid {}) exited by itself ({status}); {} node(s) keep running; \
                     see {}; start it again with: rackpoint-store --config {} 2>>{}",
                    pids.get(&id).copied().unwrap_or_default(),
                    running.len(),
                    dir.join(NODE_LOG_FILE).display(),
                    dir.join(NODE_FILE).display(),
                    dir.join(NODE_LOG_FILE).display(),
                );
                if json {
                    json::print(&up_doc("exited", Vec::new(), Some(id.0)));
                }
            }
        }
        false
    });
    if !signalled {
        bail!("every node has exited; see each node's node.log");
    }
    cluster.terminate_all()?;
    if json {
        json::print(&up_doc("stopped", Vec::new(), None));
    } else {
        println!("stopped {} nodes", running.len());
    }
    Ok(())
}
