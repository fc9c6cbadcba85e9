//! `rackpoint rebalance`: move stored shards onto the placement the current map gives (say,
//! onto nodes just added to `cluster.toml`), of one job or of every job, at most `--max-moves`
//! moves under `--rate` MiB/s. Says what moved (shards per source and target node), what was
//! skipped and why, and what is left for the next run. Exit status: 0 when nothing was
//! skipped (moves deferred past `--max-moves` included), 4 when what was skipped waits only
//! for nodes to come back, 5 when the identity is not an admin (nothing is moved), else 1.

use std::collections::BTreeMap;
use std::time::Instant;

use rackpoint_client::rebalance::{RebalanceOptions, RebalanceReport, RebalanceScope};
use rackpoint_proto::limits::{
    REBALANCE_DEFAULT_BYTES_PER_SEC, REBALANCE_DEFAULT_MOVES_IN_FLIGHT, REBALANCE_MAX_MOVES,
    REBALANCE_MAX_MOVES_IN_FLIGHT,
};
use rackpoint_proto::JobName;
use serde::Serialize;

use crate::commands::emit;
use crate::exit::{Exit, Reported, Usage};
use crate::Global;

/// `rackpoint rebalance`.
#[derive(Debug, clap::Args)]
pub struct RebalanceArgs {
    /// The job whose checkpoints to rebalance (or --all-jobs).
    #[arg(required_unless_present = "all_jobs", conflicts_with = "all_jobs")]
    job: Option<JobName>,
    /// Rebalance every job this identity may list (as `repair --all-jobs`).
    #[arg(long)]
    all_jobs: bool,
    /// Most MiB per second read from the nodes (each byte read is written once), over all
    /// of them; 0: no limit.
    #[arg(long, value_name = "MIB_PER_SEC", default_value_t = REBALANCE_DEFAULT_BYTES_PER_SEC >> 20)]
    rate: u64,
    /// Most shard moves this run makes; the rest is reported and left for the next run.
    #[arg(long, value_name = "N", default_value_t = REBALANCE_MAX_MOVES)]
    max_moves: usize,
    /// Shard moves in flight at once.
    #[arg(long, value_name = "N", default_value_t = REBALANCE_DEFAULT_MOVES_IN_FLIGHT)]
    in_flight: usize,
    /// Plan and report what would move; move nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `rackpoint rebalance`.
pub async fn run(global: &Global, args: RebalanceArgs) -> anyhow::Result<()> {
    if args.max_moves > REBALANCE_MAX_MOVES {
        return Err(Usage(format!("--max-moves is at most {REBALANCE_MAX_MOVES}")).into());
    }
    if !(1..=REBALANCE_MAX_MOVES_IN_FLIGHT).contains(&args.in_flight) {
        let max = REBALANCE_MAX_MOVES_IN_FLIGHT;
        return Err(Usage(format!("--in-flight is 1 to {max}")).into());
    }
    let client = global.connect()?;
    let scope = match args.job {
        Some(job) => RebalanceScope::Job(job),
        None => RebalanceScope::All,
    };
    let options = RebalanceOptions {
        bytes_per_sec: (args.rate > 0).then(|| args.rate.saturating_mul(1 << 20)),
        max_moves: args.max_moves,
        moves_in_flight: args.in_flight,
        dry_run: args.dry_run,
    };
    let started = Instant::now();
    let report = client.rebalance(scope, options).await?;
    let secs = started.elapsed().as_secs_f64();
    let doc = RebalanceDoc::new(&report, secs);
    emit(global, &doc, || print_report(&report, secs));
    if report.is_complete() {
        return Ok(());
    }
    let exit = if report.only_waits_for_nodes() { Exit::Unavailable } else { Exit::Failure };
    let mut message = format!("{} shards were left where they are", report.skipped_total());
    if !report.unseen_nodes.is_empty() {
        let nodes: Vec<String> = report.unseen_nodes.iter().map(|n| n.to_string()).collect();
        message.push_str(&format!(
            "; node(s) {} did not answer the job listing: jobs held only there were not seen",
            nodes.join(", ")
        ));
    }
    Err(Reported { exit, message }.into())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

fn print_report(r: &RebalanceReport, secs: f64) {
    let verb = if r.dry_run { "would move" } else { "moved" };
    println!("rebalance: {} parts of {} jobs, {} moves planned", r.parts, r.jobs.len(), r.planned);
    if r.dry_run {
        println!("{verb} {} shards (dry run: nothing was moved)", r.planned);
    } else {
        println!(
            "{verb} {} shards ({:.1} MiB) in {secs:.2} s, {:.1} MiB/s; {} manifests rewritten; {} old copies deleted{}",
            r.moved,
            mib(r.bytes_moved),
            mib(r.bytes_moved) / secs.max(1e-9),
            r.parts_rewritten,
            r.stale_copies_deleted,
            match r.stale_copies_left {
                0 => String::new(),
                n => format!(", {n} left on nodes that did not answer (gc collects them)"),
            }
        );
    }
    if r.manifest_copies_added > 0 {
        println!(
            "{} manifest copies restored (a killed run had stored fewer than m + 1)",
            r.manifest_copies_added
        );
    }
    for ((from, to), n) in &r.flows {
        println!("  node {from} -> node {to}: {n} shards");
    }
    if r.deferred > 0 {
        println!("{} more moves are past --max-moves: run rebalance again", r.deferred);
    }
    if r.skipped.is_empty() {
        return;
    }
    let kinds: Vec<String> = r.skipped.iter().map(|(k, n)| format!("{n} {k}")).collect();
    println!("skipped {} shards: {}", r.skipped_total(), kinds.join(", "));
    for s in &r.skips {
        let mut at = format!("{} step {} rank {}", s.job, s.step, s.rank);
        if let (Some(o), Some(st)) = (&s.object, s.stripe) {
            at.push_str(&format!(" object {o} stripe {st}"));
        }
        if let Some(i) = s.shard {
            at.push_str(&format!(" shard {i}"));
        }
        if let Some(n) = s.node {
            at.push_str(&format!(" on node {n}"));
        }
        println!("  {at}: {}", s.why);
    }
    if r.skips.len() as u64 != r.skipped_total() {
        println!("  ... {} more not listed", r.skipped_total() - r.skips.len() as u64);
    }
}

/// `rackpoint rebalance --json`.
#[derive(Debug, Serialize)]
struct RebalanceDoc {
    command: &'static str,
    /// Nothing was skipped.
    ok: bool,
    dry_run: bool,
    jobs: Vec<String>,
    parts: u64,
    parts_rewritten: u64,
    planned: u64,
    moved: u64,
    bytes_moved: u64,
    elapsed_s: f64,
    /// MiB of shards moved per second of the run.
    mib_per_s: f64,
    stale_copies_deleted: u64,
    stale_copies_left: u64,
    manifest_copies_added: u64,
    deferred: u64,
    skipped_total: u64,
    /// Skipped shards by kind (`source_down`, `target_down`, `rack_full`, `no_placement`,
    /// `unreadable`, `write_failed`, `commit_failed`, `manifest_unreadable`).
    skipped: BTreeMap<&'static str, u64>,
    /// Shards moved (planned, in a dry run) per source and target node.
    flows: Vec<FlowDoc>,
    /// The first skipped shards, one by one.
    skips: Vec<SkipDoc>,
    unseen_nodes: Vec<u32>,
}

#[derive(Debug, Serialize)]
struct FlowDoc {
    from: u32,
    to: u32,
    shards: u64,
}

#[derive(Debug, Serialize)]
struct SkipDoc {
    job: String,
    step: u64,
    rank: u32,
    object: Option<String>,
    stripe: Option<u32>,
    shard: Option<u8>,
    node: Option<u32>,
    kind: &'static str,
    reason: String,
}

impl RebalanceDoc {
    fn new(r: &RebalanceReport, secs: f64) -> Self {
        RebalanceDoc {
            command: "rebalance",
            ok: r.is_complete(),
            dry_run: r.dry_run,
            jobs: r.jobs.iter().map(ToString::to_string).collect(),
            parts: r.parts,
            parts_rewritten: r.parts_rewritten,
            planned: r.planned,
            moved: r.moved,
            bytes_moved: r.bytes_moved,
            elapsed_s: secs,
            mib_per_s: mib(r.bytes_moved) / secs.max(1e-9),
            stale_copies_deleted: r.stale_copies_deleted,
            stale_copies_left: r.stale_copies_left,
            manifest_copies_added: r.manifest_copies_added,
            deferred: r.deferred,
            skipped_total: r.skipped_total(),
            skipped: r.skipped.clone(),
            flows: r
                .flows
                .iter()
                .map(|((from, to), n)| FlowDoc { from: from.0, to: to.0, shards: *n })
                .collect(),
            skips: r
                .skips
                .iter()
                .map(|s| SkipDoc {
                    job: s.job.to_string(),
                    step: s.step.0,
                    rank: s.rank.0,
                    object: s.object.as_ref().map(ToString::to_string),
                    stripe: s.stripe.map(|x| x.0),
                    shard: s.shard.map(|x| x.0),
                    node: s.node.map(|x| x.0),
                    kind: s.why.kind(),
                    reason: s.why.to_string(),
                })
                .collect(),
            unseen_nodes: r.unseen_nodes.iter().map(|n| n.0).collect(),
        }
    }
}
