//! The whole cluster at once: `ls` without a job (the jobs this identity may see, from every
//! node), and the `--all-jobs` forms of `repair` and `gc`, which run the one-job command over
//! every job of that listing, one report each, then a summary, and exit with the worst job's
//! status ([`Exit::worst`]: lost, then unavailable, then refused, then any other failure).
//! Nodes that did not answer the listing are named on stderr (and in `unseen_nodes`); with
//! more than m of them a job may be missing from the listing altogether, which makes the
//! status at least 4 (unavailable).

use std::future::Future;

use rackpoint_client::jobs::{JobOverview, JobsReport};
use rackpoint_client::Client;
use rackpoint_proto::JobName;
use serde::Serialize;

use crate::commands::emit;
use crate::exit::{self, Exit, Reported};
use crate::json_ops::{AllJobsDoc, JobResultDoc, JobsDoc};
use crate::Global;

/// The stderr line about the nodes a listing did not see, if any.
fn unseen_line(r: &JobsReport) -> Option<String> {
    if r.is_complete() {
        return None;
    }
    let nodes: Vec<String> =
        r.unseen_nodes.iter().map(|(n, e)| format!("node {n} ({e})")).collect();
    let consequence = if r.may_miss_jobs {
        "more than m nodes are silent, so jobs held only by them are missing"
    } else {
        "what they hold is not counted"
    };
    Some(format!(
        "the job listing may be incomplete: {} did not answer; {consequence}",
        nodes.join(", ")
    ))
}

fn unseen_error(r: &JobsReport) -> Reported {
    let nodes: Vec<String> = r.unseen().iter().map(|n| n.to_string()).collect();
    Reported {
        exit: Exit::Unavailable,
        message: format!(
            "the job listing may miss jobs: bring back node(s) {} and retry",
            nodes.join(", ")
        ),
    }
}

/// `rackpoint ls` without a job: exit 0, or 4 when more than m nodes did not answer.
pub async fn ls_jobs(global: &Global, client: &Client) -> anyhow::Result<()> {
    let r = client.jobs().await?;
    if let Some(line) = unseen_line(&r) {
        eprintln!("rackpoint: {line}");
    }
    emit(global, &JobsDoc::new(&r), || {
        println!(
            "{:<32} {:>11} {:>8} {:>12} {:>12} {:>16}",
            "JOB", "CHECKPOINTS", "COMPLETE", "NEWEST", "NEWEST_DONE", "STORED_BYTES"
        );
        let step = |s: Option<rackpoint_proto::Step>| s.map_or("-".to_string(), |s| s.to_string());
        for j in &r.jobs {
            println!(
                "{:<32} {:>11} {:>8} {:>12} {:>12} {:>16}",
                j.job.as_str(),
                j.checkpoints,
                j.complete_checkpoints,
                step(j.newest_step),
                step(j.newest_complete_step),
                j.shard_bytes
            );
        }
    });
    if r.may_miss_jobs {
        return Err(unseen_error(&r).into());
    }
    Ok(())
}

/// Runs `one` (the one-job command, which prints its own text report) over every job of the
/// listing but those `skip` names a reason for, then prints the summary (or with `--json`
/// one [`AllJobsDoc`]).
pub async fn run<T, F, Fut>(
    global: &Global,
    client: &Client,
    command: &'static str,
    skip: impl Fn(&JobOverview) -> Option<&'static str>,
    one: F,
) -> anyhow::Result<()>
where
    T: Serialize,
    F: Fn(JobName) -> Fut,
    Fut: Future<Output = anyhow::Result<(Exit, T)>>,
{
    let listing = client.jobs().await?;
    if let Some(line) = unseen_line(&listing) {
        eprintln!("rackpoint: {line}");
    }
    let mut worst = if listing.may_miss_jobs { Exit::Unavailable } else { Exit::Success };
    let mut results: Vec<JobResultDoc<T>> = Vec::new();
    for overview in &listing.jobs {
        let job = &overview.job;
        if let Some(why) = skip(overview) {
            if !global.json {
                println!("== {job}: skipped, {why}");
            }
            results.push(JobResultDoc::skipped(job, why));
            continue;
        }
        if !global.json {
            println!("== {job}");
        }
        match one(job.clone()).await {
            Ok((exit, doc)) => {
                worst = worst.worst(exit);
                results.push(JobResultDoc::done(job, exit, doc));
            }
            Err(e) => {
                let exit = exit::code_of(&e);
                worst = worst.worst(exit);
                if !global.json {
                    let line = exit::error_line(&e).unwrap_or_else(|| exit.kind().to_string());
                    eprintln!("rackpoint: {command} {job}: {line}");
                }
                results.push(JobResultDoc::failed(command, job, exit, &e));
            }
        }
    }
    let jobs_ok = results.iter().filter(|r| r.ok).count();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{} (exit {})", r.job, r.exit_code))
        .collect();
    let doc = AllJobsDoc {
        command,
        ok: worst == Exit::Success,
        exit_code: worst as u8,
        jobs_total: results.len(),
        jobs_ok,
        unseen_nodes: listing.unseen().iter().map(|n| n.0).collect(),
        may_miss_jobs: listing.may_miss_jobs,
        jobs: results,
    };
    emit(global, &doc, || {
        println!(
            "{command} --all-jobs: {} jobs, {jobs_ok} done{}",
            doc.jobs_total,
            if failed.is_empty() {
                String::new()
            } else {
                format!(", not done: {}", failed.join(", "))
            }
        );
    });
    if listing.may_miss_jobs && failed.is_empty() {
        return Err(unseen_error(&listing).into());
    }
    if worst != Exit::Success {
        let message = format!(
            "{command} --all-jobs: {} of {} jobs not done: {}{}",
            failed.len(),
            doc.jobs_total,
            failed.join(", "),
            if listing.may_miss_jobs { "; and the job listing may miss jobs" } else { "" }
        );
        return Err(Reported { exit: worst, message }.into());
    }
    Ok(())
}
