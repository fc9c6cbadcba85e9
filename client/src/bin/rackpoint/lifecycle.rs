//! The lifecycle commands of the `rackpoint` CLI: `repair` (bring a checkpoint back to full
//! redundancy) and `gc` (keep the newest N complete checkpoints, collect orphans), of one
//! job or, with `--all-jobs`, of every job (see `all_jobs`). Like the other commands: one
//! summary on stdout, exit status 1 with one line on stderr unless the job was fully done.

use rackpoint_client::gc::{GcOptions, GcReport};
use rackpoint_client::jobs::JobOverview;
use rackpoint_client::repair::{RepairOptions, RepairReport, RepairScope};
use rackpoint_client::Client;
use rackpoint_proto::limits::{DEFAULT_ORPHAN_GRACE_MS, REPAIR_DEFAULT_READ_BYTES_PER_SEC};
use rackpoint_proto::{JobName, Step};

use crate::all_jobs;
use crate::exit::{Exit, Reported};
use crate::json_ops::{GcDoc, RepairDoc};
use crate::Global;

/// `rackpoint repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The job (or --all-jobs).
    #[arg(required_unless_present = "all_jobs", conflicts_with = "all_jobs")]
    job: Option<JobName>,
    /// The step to repair.
    #[arg(long, conflicts_with_all = ["all", "all_jobs"], required_unless_present_any = ["all", "all_jobs"])]
    step: Option<u64>,
    /// Repair every checkpoint of the job.
    #[arg(long)]
    all: bool,
    /// Repair every checkpoint of every job this identity may see (`rackpoint ls` lists
    /// them): one report per job, then a summary; exits with the worst job's status.
    #[arg(long)]
    all_jobs: bool,
    /// Most MiB per second the repair reads from the nodes (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = REPAIR_DEFAULT_READ_BYTES_PER_SEC >> 20)]
    read_limit_mib: u64,
}

/// `rackpoint gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// The job (or --all-jobs).
    #[arg(required_unless_present = "all_jobs", conflicts_with = "all_jobs")]
    job: Option<JobName>,
    /// Complete checkpoints to keep (the newest); 0 only collects orphans.
    #[arg(long)]
    keep: usize,
    /// Collect every job this identity may see (`rackpoint ls` lists them): one report per
    /// job, then a summary; exits with the worst job's status.
    #[arg(long)]
    all_jobs: bool,
    /// Orphan shards younger than this many seconds are kept (a save may still be running).
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_ORPHAN_GRACE_MS / 1000)]
    orphan_grace_secs: u64,
    /// Delete even while nodes do not answer (without it gc then deletes nothing and exits
    /// 4): each step is marked as being deleted first, and its delete finishes when they
    /// return (the next gc, rm or repair).
    #[arg(long)]
    force: bool,
}

/// `rackpoint repair`.
pub async fn repair(global: &Global, args: RepairArgs) -> anyhow::Result<()> {
    let client = global.connect()?;
    let limit = (args.read_limit_mib > 0).then_some(args.read_limit_mib << 20);
    let Some(job) = &args.job else {
        let run = |job: JobName| {
            let client = &client;
            async move { repair_job(global, client, &job, None, limit).await }
        };
        // A job with shards but no manifest has nothing to repair (gc collects it).
        let skip = |j: &JobOverview| (j.checkpoints == 0).then_some("no checkpoint, only shards");
        return all_jobs::run(global, &client, "repair", skip, run).await;
    };
    let (exit, doc) = repair_job(global, &client, job, args.step, limit).await?;
    crate::commands::emit(global, &doc, || {});
    if exit == Exit::Unavailable {
        let message = format!("the deletes of {job} listed above are not finished");
        return Err(Reported { exit, message }.into());
    }
    if exit != Exit::Success {
        let left: usize = doc.parts.iter().map(|p| p.problems.len()).sum();
        let message = format!("{left} stripes or parts are still short of full redundancy");
        return Err(Reported { exit, message }.into());
    }
    Ok(())
}

/// Repairs one job (a step of it, or all its checkpoints) and prints its text report; the
/// status it earns (0, or 1 if something is left short) and its JSON document.
async fn repair_job(
    global: &Global,
    client: &Client,
    job: &JobName,
    step: Option<u64>,
    limit: Option<u64>,
) -> anyhow::Result<(Exit, RepairDoc)> {
    let scope = match step {
        Some(step) => RepairScope::Step(Step(step)),
        None => RepairScope::All,
    };
    let started = std::time::Instant::now();
    let report = client.repair(job, scope, RepairOptions::limited_to(limit)).await?;
    let elapsed = started.elapsed();
    if !global.json {
        print_repair(job, &report, elapsed.as_secs_f64());
    }
    let exit = if let Some(line) = pending_deletes_line(&report.deletions_pending) {
        eprintln!("rackpoint: {job}: {line}");
        Exit::Unavailable
    } else if report.is_complete() {
        Exit::Success
    } else {
        Exit::Failure
    };
    Ok((exit, RepairDoc::new(job, step, &report, elapsed)))
}

fn print_repair(job: &JobName, report: &RepairReport, secs: f64) {
    for p in &report.parts {
        println!(
            "step {} rank {}: {} shards checked, {} healthy, {} rewritten, {} moved{}{}",
            p.step,
            p.rank,
            p.shards_checked,
            p.shards_healthy,
            p.rewritten_in_place,
            p.moved,
            p.new_revision.map_or(String::new(), |r| format!(", manifest revision {r}")),
            match p.manifest_copies_added {
                0 => String::new(),
                n => format!(", {n} manifest copies restored"),
            }
        );
        for problem in &p.problems {
            let at = match (&problem.object, problem.stripe) {
                (Some(o), Some(s)) => format!("object {o} stripe {s}"),
                _ => "part".to_owned(),
            };
            println!("  {at}: {}", problem.problem);
        }
    }
    println!(
        "repaired {job}: {} shards written, {} MiB read in {secs:.2} s",
        report.shards_written(),
        report.bytes_read() >> 20
    );
    if !report.deletions_finished.is_empty() {
        let steps: Vec<String> = report.deletions_finished.iter().map(|s| s.to_string()).collect();
        println!("finished the pending deletes of steps {}", steps.join(" "));
    }
}

/// `rackpoint gc`.
pub async fn gc(global: &Global, args: GcArgs) -> anyhow::Result<()> {
    let client = global.connect()?;
    let options = GcOptions {
        keep: args.keep,
        orphan_grace_ms: args.orphan_grace_secs.saturating_mul(1000),
        force: args.force,
    };
    let Some(job) = &args.job else {
        let run = |job: JobName| {
            let client = &client;
            async move { gc_job(global, client, &job, options).await }
        };
        return all_jobs::run(global, &client, "gc", |_| None, run).await;
    };
    let (exit, doc) = gc_job(global, &client, job, options).await?;
    crate::commands::emit(global, &doc, || {});
    if exit == Exit::Unavailable {
        let message = format!("the deletes of {job} listed above are not finished");
        return Err(Reported { exit, message }.into());
    }
    if exit != Exit::Success {
        let errors: Vec<String> =
            doc.node_errors.iter().map(|e| format!("node {}: {}", e.node, e.error)).collect();
        let message = format!("some nodes keep copies: {}", errors.join("; "));
        return Err(Reported { exit, message }.into());
    }
    Ok(())
}

/// Collects one job and prints its text report; the status it earns (0, or 1 if nodes keep
/// copies) and its JSON document.
async fn gc_job(
    global: &Global,
    client: &Client,
    job: &JobName,
    options: GcOptions,
) -> anyhow::Result<(Exit, GcDoc)> {
    let r = client.gc(job, options).await?;
    if !global.json {
        print_gc(&r);
    }
    let exit = if let Some(line) = pending_deletes_line(&r.pending) {
        eprintln!("rackpoint: {job}: {line}");
        Exit::Unavailable
    } else if r.node_errors.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    };
    Ok((exit, GcDoc::new(job, options.keep, &r)))
}

fn print_gc(r: &GcReport) {
    let steps = |s: &[Step]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" ");
    println!("kept {} complete checkpoints: {}", r.kept.len(), steps(&r.kept));
    println!(
        "deleted {} steps ({}): {} shards, {} manifests",
        r.deleted_steps.len(),
        steps(&r.deleted_steps),
        r.shards_deleted,
        r.manifests_deleted
    );
    if r.orphans_checked {
        println!(
            "orphans: {} parts swept, {} shards ({} MiB) deleted, {} younger than the grace kept",
            r.orphan_parts.len(),
            r.orphan_shards_deleted,
            r.orphan_bytes_deleted >> 20,
            r.orphan_shards_young
        );
    } else {
        println!("orphans: not judged (too many nodes did not answer)");
    }
    if !r.finished_pending.is_empty() {
        println!("finished the pending deletes of steps {}", steps(&r.finished_pending));
    }
}

/// The line that names the steps whose deletes some nodes have not confirmed yet.
fn pending_deletes_line(pending: &[(Step, Vec<rackpoint_proto::NodeId>)]) -> Option<String> {
    if pending.is_empty() {
        return None;
    }
    let each: Vec<String> = pending
        .iter()
        .map(|(s, nodes)| format!("step {s} on node(s) {}", node_list(nodes)))
        .collect();
    Some(format!(
        "deletes not finished: {}; those steps stay marked as being deleted (never listed as complete nor restored) and the next gc, rm or repair finishes them once the nodes answer",
        each.join("; ")
    ))
}

fn node_list(nodes: &[rackpoint_proto::NodeId]) -> String {
    nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}
