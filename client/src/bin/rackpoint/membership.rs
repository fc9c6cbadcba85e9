//! `rackpoint cluster add-node`, `cluster decommission` and `cluster push-map`: the admin
//! tool changes the cluster map in a cluster folder (epoch + 1, signed with the CA key in
//! its `authority/`, see `cluster_dir::add_node`) and pushes the signed map to every node it
//! reaches, as the folder's admin identity. A node that missed it gets it at the next push
//! (or at its next start, from its folder's map file); clients learn it from any node that
//! has it. `cluster pull` writes the newest map a client learns back to its cluster file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use rackpoint_client::cluster_dir::{
    self, node_dir, AddNodeOptions, MapChange, CLUSTER_FILE, NODE_FILE, NODE_LOG_FILE,
};
use rackpoint_client::transport::TransportError;
use rackpoint_client::Client;
use rackpoint_proto::{ClusterMap, ErrorCode, NodeId};

use crate::exit::{Exit, Reported};
use crate::json;
use crate::json_ops::{MapChangeDoc, MapNodeDoc, MapPushDoc, PullDoc};
use crate::Global;

/// Why a map change failed although its files were written.
const NO_NODE_TOOK_IT: &str = "no node took the cluster map";

/// `rackpoint cluster add-node`.
#[derive(Debug, Args)]
pub struct AddNodeArgs {
    /// The cluster folder (its authority/ca.key issues the node's certificate).
    #[arg(long)]
    dir: PathBuf,
    /// The node's rack (default: the rack with the fewest nodes in service).
    #[arg(long)]
    rack: Option<String>,
    /// The node's QUIC address (default: a free port on 127.0.0.1, for a local cluster).
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<SocketAddr>,
}

/// `rackpoint cluster decommission`.
#[derive(Debug, Args)]
pub struct DecommissionArgs {
    /// The cluster folder.
    #[arg(long)]
    dir: PathBuf,
    /// The node to take out of service.
    #[arg(long)]
    node: u32,
}

/// `rackpoint cluster push-map`.
#[derive(Debug, Args)]
pub struct PushMapArgs {
    /// The cluster folder.
    #[arg(long)]
    dir: PathBuf,
}

pub fn add_node(args: AddNodeArgs, json: bool) -> anyhow::Result<()> {
    let opts = AddNodeOptions { rack: args.rack.clone(), addr: args.addr };
    let change = cluster_dir::add_node(&args.dir, &opts)
        .with_context(|| format!("cannot add a node to {}", args.dir.display()))?;
    let pushed = push(&args.dir, &change.map, &change.signed, Some(change.node.id))?;
    let folder = node_dir(&args.dir, change.node.id);
    let start = format!(
        "rackpoint-store --config {} 2>>{}",
        folder.join(NODE_FILE).display(),
        folder.join(NODE_LOG_FILE).display()
    );
    let doc = change_doc("cluster add-node", &args.dir, &change, pushed, Some(start.clone()));
    if json {
        return finish_json(doc);
    }
    let n = &change.node;
    println!(
        "added node {} ({}, {}) to {}: map epoch {}",
        n.id,
        n.addr,
        n.rack,
        args.dir.join(CLUSTER_FILE).display(),
        change.map.epoch
    );
    println!(
        "  its folder {} holds node.toml, its certificate from the cluster CA, and the signed map",
        folder.display()
    );
    print_pushes(&doc.pushed);
    println!("start the node with:\n  {start}");
    println!(
        "(on its own host: copy {} there and run rackpoint-store --config node.toml in it)",
        folder.display()
    );
    println!("clients take the new map from any node at their next heartbeat; new saves place shards on it");
    finish_text(&doc)
}

pub fn decommission(args: DecommissionArgs, json: bool) -> anyhow::Result<()> {
    let change = cluster_dir::decommission(&args.dir, NodeId(args.node))
        .with_context(|| format!("cannot decommission node {}", args.node))?;
    let pushed = push(&args.dir, &change.map, &change.signed, None)?;
    let doc = change_doc("cluster decommission", &args.dir, &change, pushed, None);
    if json {
        return finish_json(doc);
    }
    println!(
        "decommissioned node {} in {}: map epoch {}",
        args.node,
        args.dir.join(CLUSTER_FILE).display(),
        change.map.epoch
    );
    print_pushes(&doc.pushed);
    println!(
        "new saves place nothing on node {}; it still serves what it holds. Move its shards off \
         with:\n  rackpoint --cluster {} repair --all-jobs",
        args.node,
        args.dir.join(CLUSTER_FILE).display()
    );
    finish_text(&doc)
}

pub fn push_map(args: PushMapArgs, json: bool) -> anyhow::Result<()> {
    let (map, signed) = cluster_dir::signed_map(&args.dir)
        .with_context(|| format!("cannot sign the map of {}", args.dir.display()))?;
    let pushed = push(&args.dir, &map, &signed, None)?;
    let doc = MapChangeDoc {
        command: "cluster push-map",
        ok: took_it(&pushed),
        cluster_file: args.dir.join(CLUSTER_FILE).display().to_string(),
        epoch: map.epoch,
        node: None,
        pushed,
        start: None,
        error: None,
    };
    if json {
        return finish_json(doc);
    }
    println!("pushed map epoch {} of {}", map.epoch, doc.cluster_file);
    print_pushes(&doc.pushed);
    finish_text(&doc)
}

/// `rackpoint cluster pull`: learns the newest map from the nodes (signed by the cluster
/// CA, newer than the file's) and writes it to the `--cluster` file, keeping its TLS paths.
pub fn pull(global: &Global, json: bool) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (file_epoch, map) = rt.block_on(async {
        let client = global.connect()?;
        let file_epoch = client.map().epoch;
        let map = client.newest_map().await;
        client.close().await;
        anyhow::Ok((file_epoch, map))
    })?;
    let file = global.cluster.clone().unwrap_or_default();
    let written = map.epoch > file_epoch;
    if written {
        cluster_dir::write_cluster_file(&file, &map)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    let doc = PullDoc {
        command: "cluster pull",
        ok: true,
        cluster_file: file.display().to_string(),
        file_epoch,
        epoch: map.epoch,
        written,
        nodes: map.nodes.len(),
    };
    if json {
        json::print(&doc);
    } else if written {
        println!(
            "{}: map epoch {file_epoch} -> {} ({} nodes)",
            doc.cluster_file, map.epoch, doc.nodes
        );
    } else {
        println!("{}: map epoch {} is the newest the nodes hold", doc.cluster_file, map.epoch);
    }
    Ok(())
}

fn change_doc(
    command: &'static str,
    dir: &Path,
    change: &MapChange,
    pushed: Vec<MapPushDoc>,
    start: Option<String>,
) -> MapChangeDoc {
    let n = &change.node;
    MapChangeDoc {
        command,
        ok: took_it(&pushed),
        cluster_file: dir.join(CLUSTER_FILE).display().to_string(),
        epoch: change.map.epoch,
        node: Some(MapNodeDoc {
            id: n.id.0,
            addr: n.addr.to_string(),
            rack: n.rack.clone(),
            decommissioned: n.decommissioned,
            dir: node_dir(dir, n.id).display().to_string(),
        }),
        pushed,
        start,
        error: None,
    }
}

/// Whether some node has the map now (or there was none to push to).
fn took_it(pushed: &[MapPushDoc]) -> bool {
    pushed.is_empty() || pushed.iter().any(|p| matches!(p.outcome, "stored" | "held"))
}

/// Pushes the signed map to every node of `map` but `skip`, as the folder's admin identity.
fn push(
    dir: &Path,
    map: &ClusterMap,
    signed: &[u8],
    skip: Option<NodeId>,
) -> anyhow::Result<Vec<MapPushDoc>> {
    let admin =
        cluster_dir::load(&dir.join(CLUSTER_FILE)).context("cannot load the admin identity")?;
    let mut targets = map.clone();
    targets.nodes.retain(|n| Some(n.id) != skip);
    if targets.nodes.is_empty() {
        return Ok(Vec::new());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let client = Client::with_map(targets, &admin.tls).context("cannot use the cluster")?;
        let outcomes = client.push_cluster_map(map.epoch, signed).await;
        client.close().await;
        Ok(outcomes.into_iter().map(|(node, outcome)| push_doc(node, map.epoch, outcome)).collect())
    })
}

fn push_doc(node: NodeId, epoch: u64, outcome: Result<bool, TransportError>) -> MapPushDoc {
    let (outcome, error) = match outcome {
        Ok(false) => ("stored", None),
        Ok(true) => ("held", None),
        Err(e @ TransportError::Remote { code: ErrorCode::StaleMap { held }, .. })
            if held > epoch =>
        {
            ("newer", Some(e.to_string()))
        }
        Err(e) if e.is_node_failure() => ("unreachable", Some(e.to_string())),
        Err(e) => ("refused", Some(e.to_string())),
    };
    MapPushDoc { node: node.0, outcome, error }
}

fn print_pushes(pushed: &[MapPushDoc]) {
    let took = pushed.iter().filter(|p| matches!(p.outcome, "stored" | "held")).count();
    println!("pushed the map to {} node(s): {took} have it", pushed.len());
    for p in pushed.iter().filter(|p| !matches!(p.outcome, "stored" | "held")) {
        println!("  node {} {}: {}", p.node, p.outcome, p.error.as_deref().unwrap_or(""));
    }
    if took < pushed.len() {
        println!("nodes that missed it take it at the next `rackpoint cluster push-map`");
    }
}

fn finish_json(mut doc: MapChangeDoc) -> anyhow::Result<()> {
    if doc.ok {
        json::print(&doc);
        return Ok(());
    }
    let message = NO_NODE_TOOK_IT.to_owned();
    let e = anyhow::anyhow!(message.clone());
    doc.error = Some(json::ErrorDoc::new(doc.command, &e, Exit::Failure).error);
    json::print(&doc);
    Err(Reported { exit: Exit::Failure, message }.into())
}

fn finish_text(doc: &MapChangeDoc) -> anyhow::Result<()> {
    if !doc.ok {
        bail!("{NO_NODE_TOOK_IT} (the files are written: run `rackpoint cluster push-map` once nodes are up)");
    }
    Ok(())
}
