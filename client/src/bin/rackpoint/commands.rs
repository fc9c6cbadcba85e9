//! The data commands of the `rackpoint` CLI: status, put, get, ls, verify, rm. Each connects
//! with `--cluster FILE` or `RACKPOINT_CLUSTER`, prints results on stdout, and returns an
//! error (one line on stderr, exit status 1) on anything short of full success.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use rackpoint_client::restore::Which;
use rackpoint_client::save::{ObjectData, ObjectSource, SaveRequest};
use rackpoint_client::Client;
use rackpoint_proto::{JobName, ObjectName, Rank, Step};

/// Where the cluster is.
#[derive(Debug, clap::Args)]
pub struct ClusterArg {
    /// The cluster's cluster.toml.
    #[arg(long, env = "RACKPOINT_CLUSTER", value_name = "FILE")]
    pub cluster: PathBuf,
}

impl ClusterArg {
    fn connect(&self) -> anyhow::Result<Client> {
        Client::connect(&self.cluster)
            .with_context(|| format!("cannot use cluster {}", self.cluster.display()))
    }
}

/// `rackpoint put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// The job.
    job: JobName,
    /// The step.
    step: u64,
    /// Files to save; each becomes an object named by its file name.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// This part's rank.
    #[arg(long, default_value_t = 0)]
    rank: u32,
    /// Parts in the checkpoint.
    #[arg(long, default_value_t = 1)]
    world_size: u32,
    /// User metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    meta: Vec<String>,
}

/// `rackpoint get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// The job.
    job: JobName,
    /// The step (default: the newest complete checkpoint).
    #[arg(long, conflicts_with = "latest")]
    step: Option<u64>,
    /// The newest complete checkpoint (the default).
    #[arg(long)]
    latest: bool,
    /// The part's rank.
    #[arg(long, default_value_t = 0)]
    rank: u32,
    /// Folder to write the objects into (must exist).
    #[arg(long)]
    out: PathBuf,
}

/// `rackpoint ls` / `rackpoint verify` / `rackpoint rm`.
#[derive(Debug, clap::Args)]
pub struct JobArgs {
    #[command(flatten)]
    cluster: ClusterArg,
    /// The job.
    job: JobName,
    /// The step (`verify`: default the newest; `rm`: required).
    #[arg(long)]
    step: Option<u64>,
}

/// A progress bar on stderr when it is a terminal (none when piped or logged), fed by the
/// client's per-stripe progress. `total` is the byte count when known.
fn progress_bar(client: &Client, total: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let (bar, template) = match total {
        Some(n) => {
            (ProgressBar::new(n), "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
        }
        None => (ProgressBar::new_spinner(), "{spinner} {bytes} {binary_bytes_per_sec}"),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    let fed = bar.clone();
    client.set_progress(Some(Arc::new(move |n| fed.inc(n))));
    Some(bar)
}

fn object_name(path: &Path) -> anyhow::Result<ObjectName> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?;
    Ok(ObjectName::new(name)?)
}

fn parse_meta(meta: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    meta.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("--meta {kv:?} is not KEY=VALUE"),
        })
        .collect()
}

/// `rackpoint status`.
pub async fn status(cluster: ClusterArg) -> anyhow::Result<()> {
    let client = cluster.connect()?;
    let nodes = client.status().await;
    println!(
        "{:<6} {:<22} {:<10} {:<5} {:>10} {:>14} {:>8}",
        "NODE", "ADDRESS", "RACK", "STATE", "SHARDS", "BYTES", "CORRUPT"
    );
    let mut down = 0;
    for n in &nodes {
        match &n.stats {
            Ok(s) => println!(
                "{:<6} {:<22} {:<10} {:<5} {:>10} {:>14} {:>8}",
                n.node.id.0,
                n.node.addr,
                n.node.rack,
                "up",
                s.shards,
                s.shard_bytes,
                s.corrupt_shards_found
            ),
            Err(e) => {
                down += 1;
                println!(
                    "{:<6} {:<22} {:<10} {:<5} {e}",
                    n.node.id.0, n.node.addr, n.node.rack, "down"
                );
            }
        }
    }
    if down > 0 {
        bail!("{down} of {} nodes are down", nodes.len());
    }
    Ok(())
}

/// `rackpoint put`.
pub async fn put(args: PutArgs) -> anyhow::Result<()> {
    let client = args.cluster.connect()?;
    let objects = args
        .files
        .iter()
        .map(|f| Ok(ObjectData { name: object_name(f)?, source: ObjectSource::File(f.clone()) }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let req = SaveRequest {
        job: args.job.clone(),
        step: Step(args.step),
        rank: Rank(args.rank),
        world_size: args.world_size,
        objects,
        user_meta: parse_meta(&args.meta)?,
    };
    let total = args.files.iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum();
    let bar = progress_bar(&client, Some(total));
    let r = client.save(req).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = r?;
    println!(
        "saved {} step {} rank {}: {} bytes, {} shards ({} moved), manifest {} in {:.2} s",
        args.job,
        args.step,
        args.rank,
        r.bytes,
        r.shards,
        r.moved_shards,
        r.manifest_id,
        r.elapsed.as_secs_f64()
    );
    Ok(())
}

/// `rackpoint get`.
pub async fn get(args: GetArgs) -> anyhow::Result<()> {
    let client = args.cluster.connect()?;
    let which = args.step.map_or(Which::Latest, |s| Which::Step(Step(s)));
    let bar = progress_bar(&client, None);
    let r = client.restore_to_dir(&args.job, which, Rank(args.rank), &args.out).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = r?;
    for o in &r.manifest.objects {
        println!("{}\t{}", o.len, args.out.join(o.name.as_str()).display());
    }
    eprintln!(
        "restored {} step {} rank {}: {} bytes, {} stripes rebuilt, in {:.2} s",
        args.job,
        r.manifest.step,
        args.rank,
        r.bytes,
        r.degraded_stripes,
        r.elapsed.as_secs_f64()
    );
    Ok(())
}

/// `rackpoint ls`.
pub async fn ls(args: JobArgs) -> anyhow::Result<()> {
    let client = args.cluster.connect()?;
    let list = client.list(&args.job).await?;
    println!("{:>12} {:>7} {:>9} {:>14} {:>9}", "STEP", "PARTS", "COMPLETE", "BYTES", "SURVIVES");
    for c in list.iter().filter(|c| args.step.is_none_or(|s| c.step.0 == s)) {
        let survives = c.survives_more_failures.map_or("LOST".to_string(), |n| n.to_string());
        println!(
            "{:>12} {:>7} {:>9} {:>14} {:>9}",
            c.step.0,
            format!("{}/{}", c.parts, c.world_size),
            if c.complete { "yes" } else { "no" },
            c.bytes,
            survives
        );
    }
    Ok(())
}

/// `rackpoint verify`.
pub async fn verify(args: JobArgs) -> anyhow::Result<()> {
    let client = args.cluster.connect()?;
    let step = match args.step {
        Some(s) => Step(s),
        None => {
            client
                .resume(&args.job)
                .await?
                .with_context(|| format!("job {} has no complete checkpoint", args.job))?
                .step
        }
    };
    let r = client.verify(&args.job, step).await?;
    for b in &r.bad_shards {
        println!(
            "bad shard: rank {} object {} stripe {} shard {} on node {}: {:?}",
            b.rank, b.object, b.stripe, b.index, b.node, b.why
        );
    }
    for (rank, p) in &r.chain_problems {
        println!("chain problem: rank {rank}: {p:?}");
    }
    let survives = r.survives_more_failures.map_or("no".into(), |n| n.to_string());
    println!(
        "{} step {}: {}/{} parts, {} shards good, {} bad, survives {} more failure(s)",
        args.job,
        step,
        r.parts_found.len(),
        r.world_size,
        r.shards_ok,
        r.bad_shards.len(),
        survives
    );
    if !r.is_healthy() {
        bail!("checkpoint {} step {} is not healthy (see above)", args.job, step);
    }
    Ok(())
}

/// `rackpoint rm`.
pub async fn rm(args: JobArgs) -> anyhow::Result<()> {
    let client = args.cluster.connect()?;
    let step = args.step.context("rm needs --step N")?;
    let r = client.delete(&args.job, Step(step)).await?;
    println!("deleted {} step {}: {} shards, {} manifests", args.job, step, r.shards, r.manifests);
    if !r.unreachable.is_empty() {
        let nodes: Vec<String> =
            r.unreachable.iter().map(|(n, e)| format!("node {n}: {e}")).collect();
        bail!("{} node(s) could not delete their copies: {}", nodes.len(), nodes.join("; "));
    }
    Ok(())
}
