//! The data commands of the `rackpoint` CLI: status, put, get, ls, verify, rm. Each connects
//! with the global `--cluster FILE` (or `RACKPOINT_CLUSTER`), prints its result on stdout (text,
//! or one JSON document with `--json`), and returns an error on anything short of full success.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use rackpoint_client::error::PassedOver;
use rackpoint_client::repair::RepairOptions;
use rackpoint_client::restore::Which;
use rackpoint_client::save::{ObjectData, ObjectSource, SaveRequest};
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::{JobName, ObjectName, Rank, Step};

use crate::exit::{Exit, Reported, Usage};
use crate::{folder_tree, json, Global};

/// `rackpoint put`.
#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// The job.
    job: JobName,
    /// The step.
    step: u64,
    /// Files and folders to save. A file becomes an object named by its file name; a
    /// folder, every regular file below it, named by its path relative to the folder
    /// (`tokenizer/vocab.json`; `get` recreates the tree; symbolic links to files are
    /// followed, empty folders are not kept). Pipes, FIFOs and process substitutions
    /// (`<(cmd)`) are read to their end; `-` reads standard input (name its object with
    /// --name). A socket or a device is refused.
    #[arg(required = true, value_name = "FILE|DIR")]
    files: Vec<PathBuf>,
    /// The object's name: of the one read from `-` (required there), or else of the only
    /// FILE given.
    #[arg(long, value_name = "NAME")]
    name: Option<ObjectName>,
    /// This part's rank.
    #[arg(long, default_value_t = 0)]
    rank: u32,
    /// Parts in the checkpoint.
    #[arg(long, default_value_t = 1)]
    world_size: u32,
    /// User metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse_meta)]
    meta: Vec<(String, String)>,
}

/// `rackpoint get`.
#[derive(Debug, clap::Args)]
pub struct GetArgs {
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
    /// Folder to write the objects into (created, with its parents, if missing).
    #[arg(long)]
    out: PathBuf,
    /// Replace files of the same names in the folder (without it, an existing file is refused
    /// and nothing is written).
    #[arg(long)]
    force: bool,
    /// Heal on read: if some shards were missing or corrupt, rewrite them (under the repair
    /// read limit) after the files are in place, before exiting.
    #[arg(long)]
    heal: bool,
}

/// `rackpoint ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The job (without one: the jobs of the cluster this identity may see).
    job: Option<JobName>,
    /// Only this step.
    #[arg(long, requires = "job")]
    step: Option<u64>,
}

/// `rackpoint verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The job.
    job: JobName,
    /// The step (default: the newest complete checkpoint that can be restored).
    #[arg(long)]
    step: Option<u64>,
}

/// `rackpoint rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The job.
    job: JobName,
    /// The step to delete.
    #[arg(long)]
    step: u64,
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

/// Whether a `put` FILE means standard input.
fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// `put`'s objects: each FILE named by its file name, `-` by `--name` (which names the only
/// FILE when no `-` is given).
fn put_objects(files: &[PathBuf], name: Option<&ObjectName>) -> anyhow::Result<Vec<ObjectData>> {
    let stdins = files.iter().filter(|f| is_stdin(f)).count();
    if stdins > 1 {
        return Err(Usage("`-` (standard input) can be given only once".into()).into());
    }
    if stdins == 0 && name.is_some() && files.len() > 1 {
        let why = "--name names the object read from `-`, or the only FILE given";
        return Err(Usage(why.into()).into());
    }
    let mut objects = Vec::new();
    for f in files {
        if is_stdin(f) {
            let Some(name) = name else {
                let why = "`-` (standard input) needs --name NAME, the object's name";
                return Err(Usage(why.into()).into());
            };
            objects.push(ObjectData { name: name.clone(), source: ObjectSource::Stdin });
        } else if std::fs::metadata(f).is_ok_and(|m| m.is_dir()) {
            if name.is_some() && stdins == 0 {
                return Err(Usage("--name names one file, not a folder".into()).into());
            }
            let tree = folder_tree::files_below(f)?;
            if tree.is_empty() {
                bail!("{} holds no file to save", f.display());
            }
            objects.extend(
                tree.into_iter()
                    .map(|(name, path)| ObjectData { name, source: ObjectSource::File(path) }),
            );
        } else {
            let name = match name {
                Some(n) if stdins == 0 => n.clone(),
                _ => object_name(f)?,
            };
            objects.push(ObjectData { name, source: ObjectSource::File(f.clone()) });
        }
    }
    folder_tree::check_names(objects.iter().map(|o| &o.name))?;
    Ok(objects)
}

fn object_name(path: &Path) -> anyhow::Result<ObjectName> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no usable file name", path.display()))?;
    Ok(ObjectName::new(name)?)
}

/// One `--meta KEY=VALUE` (a usage error otherwise).
fn parse_meta(kv: &str) -> Result<(String, String), String> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{kv:?} is not KEY=VALUE")),
    }
}

/// Prints `doc` with `--json`, else runs `text`.
pub fn emit<T: serde::Serialize>(global: &Global, doc: &T, text: impl FnOnce()) {
    if global.json {
        json::print(doc);
    } else {
        text();
    }
}

/// `rackpoint status`: per node up or down, shards, bytes, disk free, in-flight bytes, corrupt
/// shards found, requests failed (of all kinds), and a warning column (`EMPTY!`: the node
/// started on an emptied data folder and needs `rackpoint repair`). `--json` has every
/// counter, per request kind too. A node of an older release reports no disk free or
/// in-flight bytes (shown as 0).
pub async fn status(global: &Global) -> anyhow::Result<()> {
    let client = global.connect()?;
    let nodes = client.status().await;
    let doc = json::StatusDoc::new(&nodes);
    emit(global, &doc, || {
        let row = |cells: [&str; 11]| {
            println!(
                "{:<6} {:<22} {:<10} {:<5} {:>9} {:>14} {:>15} {:>10} {:>8} {:>9} {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                cells[6],
                cells[7],
                cells[8],
                cells[9],
                cells[10]
            )
        };
        row([
            "NODE",
            "ADDRESS",
            "RACK",
            "STATE",
            "SHARDS",
            "BYTES",
            "DISK_FREE",
            "INFLIGHT",
            "CORRUPT",
            "FAILED",
            "",
        ]);
        for n in &nodes {
            let (id, addr) = (n.node.id.0.to_string(), n.node.addr.to_string());
            match &n.stats {
                Ok(s) => {
                    let failed: u64 = s.requests.iter().map(|c| c.failed).sum();
                    let warning = if s.started_empty { "EMPTY! run rackpoint repair" } else { "" };
                    row([
                        &id,
                        &addr,
                        &n.node.rack,
                        "up",
                        &s.shards.to_string(),
                        &s.shard_bytes.to_string(),
                        &s.disk_free_bytes.to_string(),
                        &s.inflight_bytes.to_string(),
                        &s.corrupt_shards_found.to_string(),
                        &failed.to_string(),
                        warning,
                    ])
                }
                Err(e) => println!("{id:<6} {addr:<22} {:<10} {:<5} {e}", n.node.rack, "down"),
            }
        }
    });
    let down = doc.nodes.iter().filter(|n| !n.up).count();
    if down > 0 {
        let message = format!("{down} of {} nodes are down", nodes.len());
        return Err(Reported { exit: Exit::Failure, message }.into());
    }
    Ok(())
}

/// `rackpoint put`.
pub async fn put(global: &Global, args: PutArgs) -> anyhow::Result<()> {
    let objects = put_objects(&args.files, args.name.as_ref())?;
    let client = global.connect()?;
    let (step, rank) = (Step(args.step), Rank(args.rank));
    let req = SaveRequest {
        job: args.job.clone(),
        step,
        rank,
        world_size: args.world_size,
        objects,
        user_meta: args.meta.into_iter().collect(),
    };
    // A stream's length is known only at its end: then the bar counts bytes without a total.
    let sizes: Option<Vec<u64>> = req
        .objects
        .iter()
        .map(|o| match &o.source {
            ObjectSource::File(f) => {
                std::fs::metadata(f).ok().filter(|m| m.is_file()).map(|m| m.len())
            }
            _ => None,
        })
        .collect();
    let bar = progress_bar(&client, sizes.map(|s| s.iter().sum()));
    let r = client.save(req).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = r?;
    if r.doubled_stripes > 0 {
        // On stderr in both modes: the save succeeded, with less margin than a full one.
        eprintln!(
            "warning: degraded placement: {} stripe(s) of {} step {step} rank {rank} have more than one shard on a node (fewer than k + m nodes were up); they survive fewer node failures until `rackpoint repair` spreads them out once the nodes are back",
            r.doubled_stripes, args.job
        );
    }
    emit(global, &json::PutDoc::new(&args.job, step, rank, args.world_size, &r), || {
        println!(
            "saved {} step {step} rank {rank}: {} bytes, {} shards ({} moved), manifest {} in {:.2} s",
            args.job,
            r.bytes,
            r.shards,
            r.moved_shards,
            r.manifest_id,
            r.elapsed.as_secs_f64()
        );
    });
    Ok(())
}

/// The stderr line of a listing that some nodes did not answer (nothing when all did).
pub fn warn_unseen(unseen: &[rackpoint_proto::NodeId]) {
    if unseen.is_empty() {
        return;
    }
    let nodes: Vec<String> = unseen.iter().map(|n| n.to_string()).collect();
    let (word, verb) = if nodes.len() == 1 { ("node", "does") } else { ("nodes", "do") };
    eprintln!(
        "warning: {word} {} {verb} not answer; this listing may be incomplete (checkpoints whose manifests are all there are not shown)",
        nodes.join(", ")
    );
}

/// The step asked for, or else the newest complete checkpoint that can be restored, with the
/// newer ones passed over (named on stderr in text mode).
async fn pick_step(
    global: &Global,
    client: &Client,
    job: &JobName,
    step: Option<u64>,
) -> anyhow::Result<(Step, Vec<PassedOver>)> {
    if let Some(s) = step {
        return Ok((Step(s), Vec::new()));
    }
    let point = client.latest(job).await?;
    warn_unseen(&point.unseen_nodes);
    if !global.json {
        for p in &point.passed_over {
            eprintln!("passed over {p}");
        }
    }
    Ok((point.step, point.passed_over))
}

/// `rackpoint get`.
pub async fn get(global: &Global, args: GetArgs) -> anyhow::Result<()> {
    let client = global.connect()?;
    let (step, passed_over) = pick_step(global, &client, &args.job, args.step).await?;
    let made = MadeDirs::create(&args.out)?;
    let bar = progress_bar(&client, None);
    let which = Which::Step(step);
    if args.heal {
        client.set_heal_on_read(Some(RepairOptions::default()));
    }
    let r = client.restore_to_dir(&args.job, which, Rank(args.rank), &args.out, args.force).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let r = match r {
        Ok(r) => r,
        Err(e @ ClientError::FileExists { .. }) => bail!("{e} (pass --force to overwrite)"),
        Err(e) => return Err(e.into()),
    };
    made.keep();
    let heals = client.wait_for_heals().await;
    let doc = json::GetDoc::new(&args.out, &r, json::passed_over(&passed_over), &heals);
    emit(global, &doc, || {
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
        for h in &heals {
            match &h.result {
                Ok(p) => eprintln!(
                    "healed {} damaged stripes: {} shards rewritten{}",
                    h.stripes,
                    p.rewritten_in_place + p.moved,
                    if p.is_complete() { "" } else { " (some stripes left short; run repair)" }
                ),
                Err(e) => eprintln!("heal on read failed: {e} (run repair)"),
            }
        }
    });
    Ok(())
}

/// The folders `get --out` made (deepest first); removed again when dropped unless kept, so
/// a failed restore leaves nothing behind.
struct MadeDirs(Vec<PathBuf>);

impl MadeDirs {
    /// Makes `dir` and its missing parents.
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && d.symlink_metadata().is_err())
            .map(Path::to_path_buf)
            .collect();
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(MadeDirs(missing))
    }

    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for MadeDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            // Only empty folders go (a restore removes its temporary files before this runs).
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// `rackpoint ls`.
pub async fn ls(global: &Global, args: LsArgs) -> anyhow::Result<()> {
    let client = global.connect()?;
    let Some(job) = args.job else {
        return crate::all_jobs::ls_jobs(global, &client).await;
    };
    let args = LsOfJob { job, step: args.step };
    let list = client.list(&args.job).await?;
    warn_unseen(&list.unseen_nodes);
    if list.is_empty() {
        return Err(ClientError::NoSuchJob { job: args.job }.into());
    }
    let shown = || list.iter().filter(|c| args.step.is_none_or(|s| c.step.0 == s));
    emit(global, &json::LsDoc::new(&args.job, shown(), &list.unseen_nodes), || {
        // SURVIVES: node failures, RACKS: rack failures, counted from the shards the nodes
        // list as present; `verify` re-hashes them.
        println!(
            "{:>12} {:>7} {:>9} {:>14} {:>11} {:>5}",
            "STEP", "PARTS", "COMPLETE", "BYTES", "SURVIVES", "RACKS"
        );
        for c in shown() {
            // `ls` reads no shard: what it cannot count on is out of reach, not known lost.
            let (survives, racks) = match (c.survives_more_failures, c.unavailable_nodes.is_empty())
            {
                _ if c.deleting => ("DELETING".to_string(), "-".to_string()),
                (Some(n), _) => {
                    (n.to_string(), c.survives_rack_failures.map_or("-".into(), |r| r.to_string()))
                }
                (None, false) => ("UNAVAILABLE".to_string(), "-".to_string()),
                (None, true) => ("UNREADABLE".to_string(), "-".to_string()),
            };
            println!(
                "{:>12} {:>7} {:>9} {:>14} {:>11} {:>5}",
                c.step.0,
                format!("{}/{}", c.parts, c.world_size),
                if c.complete { "yes" } else { "no" },
                c.bytes,
                survives,
                racks
            );
        }
    });
    for c in shown().filter(|c| c.deleting) {
        let nodes: Vec<String> = c.deleting_nodes.iter().map(|n| n.to_string()).collect();
        eprintln!(
            "step {} is being deleted; not finished on node(s) {} (rackpoint gc, rm or repair finishes it once they answer)",
            c.step,
            nodes.join(", ")
        );
    }
    Ok(())
}

/// `ls` of one job.
struct LsOfJob {
    job: JobName,
    step: Option<u64>,
}

/// `rackpoint verify`: exit 1 if the checkpoint is not healthy, 3 if a stripe is lost, 4 if a
/// stripe cannot be read while nodes do not answer.
pub async fn verify(global: &Global, args: VerifyArgs) -> anyhow::Result<()> {
    let client = global.connect()?;
    let (step, passed_over) = pick_step(global, &client, &args.job, args.step).await?;
    let r = client.verify(&args.job, step).await?;
    let doc = json::VerifyDoc::new(&args.job, &r, json::passed_over(&passed_over));
    emit(global, &doc, || {
        for b in &r.bad_shards {
            println!(
                "bad shard: rank {} object {} stripe {} shard {} on node {}: {:?}",
                b.rank, b.object, b.stripe, b.index, b.node, b.why
            );
        }
        for (rank, p) in &r.chain_problems {
            println!("chain problem: rank {rank}: {p}");
        }
        if let Some(first) = r.degraded_placement.first() {
            let more = match r.degraded_placement.len() - 1 {
                0 => String::new(),
                n => format!(" (and {n} more stripe(s) alike)"),
            };
            println!(
                "degraded placement: {first}{more}; run `rackpoint repair` to spread it once k + m nodes are up"
            );
        }
        let survives = match (r.survives_more_failures, r.survives_rack_failures) {
            (Some(n), Some(k)) => format!("{n} more node failure(s), {k} rack failure(s)"),
            _ => "no more node failure".into(),
        };
        println!(
            "{} step {}: {}/{} parts, {} shards good, {} bad, survives {}",
            args.job,
            step,
            r.parts_found.len(),
            r.world_size,
            r.shards_ok,
            r.bad_shards.len(),
            survives
        );
    });
    if doc.lost {
        let message = format!("checkpoint {} step {step} is lost: nodes answered that more than m shards of a stripe are missing or corrupt (see above)", args.job);
        return Err(Reported { exit: Exit::NotRecoverable, message }.into());
    }
    if !doc.recoverable {
        let nodes: Vec<String> = doc.unavailable_nodes.iter().map(u32::to_string).collect();
        let message = format!(
            "checkpoint {} step {step} cannot be read now, but nothing is known lost: bring back node(s) {} and retry",
            args.job,
            nodes.join(", ")
        );
        return Err(Reported { exit: Exit::Unavailable, message }.into());
    }
    if !doc.healthy {
        let message = format!("checkpoint {} step {step} is not healthy (see above)", args.job);
        return Err(Reported { exit: Exit::Failure, message }.into());
    }
    Ok(())
}

/// `rackpoint rm`.
pub async fn rm(global: &Global, args: RmArgs) -> anyhow::Result<()> {
    let client = global.connect()?;
    let step = Step(args.step);
    let r = client.delete(&args.job, step).await?;
    if r.shards == 0 && r.manifests == 0 && r.is_complete() && !r.was_pending {
        bail!("no such checkpoint: {} step {step} is on no node; nothing was deleted", args.job);
    }
    let was = if r.was_pending { " (finishing an earlier delete)" } else { "" };
    emit(global, &crate::json_ops::RmDoc::new(&args.job, step, &r), || {
        println!(
            "deleted {} step {step}{was}: {} shards, {} manifests",
            args.job, r.shards, r.manifests
        );
    });
    if !r.is_complete() {
        let nodes: Vec<String> = r.pending_nodes.iter().map(|n| n.to_string()).collect();
        let errors: Vec<String> =
            r.unreachable.iter().map(|(n, e)| format!("node {n}: {e}")).collect();
        let message = format!(
            "the delete of {} step {step} is not finished: node(s) {} did not confirm it; the step stays marked as being deleted (never listed as complete nor restored) and `rackpoint rm`, `gc` or `repair` finishes it once they answer ({})",
            args.job,
            nodes.join(", "),
            errors.join("; ")
        );
        return Err(Reported { exit: Exit::Unavailable, message }.into());
    }
    Ok(())
}
