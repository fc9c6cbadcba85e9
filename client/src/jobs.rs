//! The cluster's jobs: asks every node for the jobs it holds that this identity may see
//! (`ListJobs`, paged), then lists each job's manifests from the nodes that hold them, and
//! merges the answers with the pure [`JobMerge`]. A job appears if any node that answered
//! lists it; the nodes that did not answer are named, since what they hold is not counted
//! (and a job all of whose copies are on them is missing).

use std::collections::{BTreeMap, BTreeSet};

use futures::stream::{self, StreamExt};
use rackpoint_proto::limits::{CLIENT_MAX_LISTED_JOBS, CLIENT_MAX_LISTED_MANIFESTS};
use rackpoint_proto::{ErrorCode, JobName, JobSummary, ManifestEntry, NodeId, Step};

use crate::ctx::Ctx;
use crate::error::{ClientError, NodeErrors, Result};
use crate::transport::TransportError;

pub use crate::job_list::{JobMerge, JobOverview};

/// Manifest listings (one job on one node) in flight at once.
const LISTINGS_IN_FLIGHT: usize = 16;

/// The jobs of the cluster this identity may see.
#[derive(Debug, Clone)]
pub struct JobsReport {
    /// One overview per job, in name order.
    pub jobs: Vec<JobOverview>,
    /// The nodes that did not answer (their holdings are not counted, and a job only they
    /// hold is missing), with why, in id order.
    pub unseen_nodes: Vec<(NodeId, String)>,
    /// Whether more than m nodes did not answer: then a job whose every manifest copy is on
    /// them may be missing altogether (with m or fewer, every job with a committed part is
    /// listed, though its counts leave out what the silent nodes hold).
    pub may_miss_jobs: bool,
}

impl JobsReport {
    /// The ids of the nodes that did not answer.
    pub fn unseen(&self) -> Vec<NodeId> {
        self.unseen_nodes.iter().map(|(n, _)| *n).collect()
    }

    /// Whether every node answered, so that the listing is whole.
    pub fn is_complete(&self) -> bool {
        self.unseen_nodes.is_empty()
    }

    /// The overview of `job`, if listed.
    pub fn job(&self, job: &JobName) -> Option<&JobOverview> {
        self.jobs.iter().find(|j| &j.job == job)
    }
}

/// Lists the cluster's jobs (see the module doc). An error only when every node refuses
/// this identity or none answers.
pub(crate) async fn jobs(ctx: &Ctx) -> Result<JobsReport> {
    let ids: Vec<NodeId> = ctx.map.nodes.iter().map(|n| n.id).collect();
    let answers =
        futures::future::join_all(ids.iter().map(|&n| async move { (n, node_jobs(ctx, n).await) }))
            .await;
    let mut merge = JobMerge::new();
    let mut errors = Vec::new();
    for (node, answer) in answers {
        match answer {
            Ok(jobs) => merge.on_jobs(node, jobs),
            // Every node refuses an identity alike: that is the answer, not an outage.
            Err(e @ TransportError::Remote { code: ErrorCode::PermissionDenied, .. }) => {
                return Err(e.into())
            }
            Err(e) => {
                merge.on_unseen(node, e.to_string());
                errors.push((node, e));
            }
        }
    }
    if errors.len() == ids.len() {
        return Err(ClientError::NoNodeAnswered(NodeErrors(errors)));
    }
    let listings: Vec<(JobName, NodeId)> = merge
        .jobs()
        .into_iter()
        .flat_map(|job| merge.manifest_holders(&job).into_iter().map(move |n| (job.clone(), n)))
        .collect();
    let mut listed = stream::iter(listings)
        .map(|(job, node)| async move {
            let entries = node_manifests(ctx, node, &job).await;
            (job, node, entries)
        })
        .buffer_unordered(LISTINGS_IN_FLIGHT);
    let mut answers = Vec::new();
    while let Some(answer) = listed.next().await {
        answers.push(answer);
    }
    // A step any node marks as being deleted is no checkpoint of its job any more.
    let mut marked: BTreeMap<JobName, BTreeSet<Step>> = BTreeMap::new();
    for (job, _, answer) in &answers {
        if let Ok((_, deleting)) = answer {
            marked.entry(job.clone()).or_default().extend(deleting.iter().copied());
        }
    }
    for (job, node, answer) in answers {
        match answer {
            Ok((entries, _)) => {
                let gone = marked.get(&job);
                let live: Vec<ManifestEntry> = entries
                    .into_iter()
                    .filter(|e| !gone.is_some_and(|g| g.contains(&e.step)))
                    .collect();
                merge.on_manifests(&job, &live)
            }
            Err(e) => merge.on_unseen(node, e.to_string()),
        }
    }
    let (jobs, unseen_nodes) = merge.finish();
    let may_miss_jobs = unseen_nodes.len() > usize::from(ctx.map.code.m);
    Ok(JobsReport { jobs, unseen_nodes, may_miss_jobs })
}

/// Every job one node holds that this identity may see, page by page.
async fn node_jobs(ctx: &Ctx, node: NodeId) -> Result<Vec<JobSummary>, TransportError> {
    let mut all: Vec<JobSummary> = Vec::new();
    loop {
        let after = all.last().map(|j| j.job.clone());
        let (jobs, more) = ctx.list_jobs(node, after.clone()).await?;
        if jobs.first().is_some_and(|j| after.as_ref().is_some_and(|a| j.job <= *a)) {
            let reason = "the node's job pages are not in name order".to_string();
            return Err(TransportError::Protocol { node, reason });
        }
        let empty = jobs.is_empty();
        all.extend(jobs);
        if !more || empty {
            return Ok(all);
        }
        if all.len() >= CLIENT_MAX_LISTED_JOBS {
            let reason = format!("the node lists more than {CLIENT_MAX_LISTED_JOBS} jobs");
            return Err(TransportError::Protocol { node, reason });
        }
    }
}

/// Every manifest entry of `job` on one node, page by page, and the steps it marks as being
/// deleted.
async fn node_manifests(
    ctx: &Ctx,
    node: NodeId,
    job: &JobName,
) -> Result<(Vec<ManifestEntry>, Vec<Step>), TransportError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (entries, more, deleting) = ctx.list_manifests(node, job, after).await?;
        after = entries.last().map(|e| (e.step, e.rank));
        all.extend(entries);
        if !more || after.is_none() {
            return Ok((all, deleting));
        }
        if all.len() >= CLIENT_MAX_LISTED_MANIFESTS {
            let reason = format!(
                "job {job} has more than {CLIENT_MAX_LISTED_MANIFESTS} manifests on this node"
            );
            return Err(TransportError::Protocol { node, reason });
        }
    }
}
