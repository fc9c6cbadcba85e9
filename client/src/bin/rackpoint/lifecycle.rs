//! The lifecycle commands of the `rackpoint` CLI: `repair` (bring a checkpoint back to full
//! redundancy) and `gc` (keep the newest N complete checkpoints, collect orphans). Like the
//! other commands: one summary on stdout, exit status 1 with one line on stderr unless the
//! job was fully done.

use anyhow::bail;
use rackpoint_client::gc::GcOptions;
use rackpoint_client::repair::{RepairOptions, RepairScope};
use rackpoint_proto::limits::{DEFAULT_ORPHAN_GRACE_MS, REPAIR_DEFAULT_READ_BYTES_PER_SEC};
use rackpoint_proto::{JobName, Step};

use crate::exit::{Exit, Reported};
use crate::Global;

/// `rackpoint repair`.
#[derive(Debug, clap::Args)]
pub struct RepairArgs {
    /// The job.
    job: JobName,
    /// The step to repair.
    #[arg(long, conflicts_with = "all", required_unless_present = "all")]
    step: Option<u64>,
    /// Repair every checkpoint of the job.
    #[arg(long)]
    all: bool,
    /// Most MiB per second the repair reads from the nodes (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = REPAIR_DEFAULT_READ_BYTES_PER_SEC >> 20)]
    read_limit_mib: u64,
}

/// `rackpoint gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// The job.
    job: JobName,
    /// Complete checkpoints to keep (the newest); 0 only collects orphans.
    #[arg(long)]
    keep: usize,
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
    let scope = match args.step {
        Some(step) => RepairScope::Step(Step(step)),
        None => RepairScope::All,
    };
    let limit = (args.read_limit_mib > 0).then_some(args.read_limit_mib << 20);
    let started = std::time::Instant::now();
    let report = client.repair(&args.job, scope, RepairOptions::limited_to(limit)).await?;
    let secs = started.elapsed().as_secs_f64();
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
        "repaired {}: {} shards written, {} MiB read in {secs:.2} s",
        args.job,
        report.shards_written(),
        report.bytes_read() >> 20
    );
    if !report.deletions_finished.is_empty() {
        let steps: Vec<String> = report.deletions_finished.iter().map(|s| s.to_string()).collect();
        println!("finished the pending deletes of steps {}", steps.join(" "));
    }
    if !report.deletions_pending.is_empty() {
        let each: Vec<String> = report
            .deletions_pending
            .iter()
            .map(|(s, nodes)| format!("step {s} on node(s) {}", node_list(nodes)))
            .collect();
        let message = format!(
            "deletes not finished: {} (bring the nodes back and run repair, gc or rm again)",
            each.join("; ")
        );
        return Err(Reported { exit: Exit::Unavailable, message }.into());
    }
    if !report.is_complete() {
        let left: usize = report.parts.iter().map(|p| p.problems.len()).sum();
        bail!("{left} stripes or parts are still short of full redundancy");
    }
    Ok(())
}

/// `rackpoint gc`.
pub async fn gc(global: &Global, args: GcArgs) -> anyhow::Result<()> {
    let client = global.connect()?;
    let options = GcOptions {
        keep: args.keep,
        orphan_grace_ms: args.orphan_grace_secs.saturating_mul(1000),
        force: args.force,
    };
    let r = client.gc(&args.job, options).await?;
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
    if !r.pending.is_empty() {
        let each: Vec<String> = r
            .pending
            .iter()
            .map(|(s, nodes)| format!("step {s} on node(s) {}", node_list(nodes)))
            .collect();
        let message = format!(
            "deletes not finished: {}; those steps stay marked as being deleted (never listed as complete nor restored) and the next gc, rm or repair finishes them once the nodes answer",
            each.join("; ")
        );
        return Err(Reported { exit: Exit::Unavailable, message }.into());
    }
    if !r.node_errors.is_empty() {
        let errors: Vec<String> =
            r.node_errors.iter().map(|(n, e)| format!("node {n}: {e}")).collect();
        bail!("some nodes keep copies: {}", errors.join("; "));
    }
    Ok(())
}

fn node_list(nodes: &[rackpoint_proto::NodeId]) -> String {
    nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}
