//! The cluster's jobs, pure: merges what each node says it holds of each job (its
//! `ListJobs` pages) and the manifests of each job listed by the nodes that hold them into
//! one overview per job, and keeps the nodes that did not answer, which the overview cannot
//! speak for.
//!
//! A node's counts are its own: every part's manifest lives on m + 1 nodes and its shards on
//! k + m, so checkpoints are counted from the union of the listed parts (a step counts once,
//! complete when every rank of its world size is listed), never from summed counters.
//! Manifests, shards and bytes are summed over the nodes that answered: what is stored,
//! copies, parity and orphans included.

use std::collections::{BTreeMap, BTreeSet};

use rackpoint_proto::{JobName, JobSummary, ManifestEntry, NodeId, Rank, Step};

use crate::manifest::is_complete;

/// One job of the cluster, as the nodes that answered hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOverview {
    /// The job.
    pub job: JobName,
    /// Steps with at least one listed part.
    pub checkpoints: u64,
    /// Of them, steps with every rank of their world size listed.
    pub complete_checkpoints: u64,
    /// The newest step with a manifest on a node that answered (`None`: shards only, for
    /// example an interrupted save's orphans).
    pub newest_step: Option<Step>,
    /// The newest complete step.
    pub newest_complete_step: Option<Step>,
    /// Manifest copies stored (each part's manifest is on up to m + 1 nodes).
    pub manifests: u64,
    /// Shards stored.
    pub shards: u64,
    /// Their payload bytes: data and parity, as stored.
    pub shard_bytes: u64,
    /// The nodes that hold any of it, in id order.
    pub nodes: Vec<NodeId>,
}

#[derive(Debug, Default)]
struct JobState {
    summaries: BTreeMap<NodeId, JobSummary>,
    /// Listed parts: step -> (largest world size listed, ranks listed).
    parts: BTreeMap<Step, (u32, BTreeSet<Rank>)>,
}

/// Merges the nodes' answers; see the module doc.
#[derive(Debug, Default)]
pub struct JobMerge {
    jobs: BTreeMap<JobName, JobState>,
    unseen: BTreeMap<NodeId, String>,
}

impl JobMerge {
    /// An empty merge.
    pub fn new() -> Self {
        Self::default()
    }

    /// A page of jobs one node holds.
    pub fn on_jobs(&mut self, node: NodeId, jobs: Vec<JobSummary>) {
        for summary in jobs {
            let state = self.jobs.entry(summary.job.clone()).or_default();
            state.summaries.insert(node, summary);
        }
    }

    /// A node did not answer (or broke off): what it holds is not in the overview.
    pub fn on_unseen(&mut self, node: NodeId, why: String) {
        self.unseen.entry(node).or_insert(why);
    }

    /// The nodes that answered and hold manifests of `job`: the ones to list them from.
    pub fn manifest_holders(&self, job: &JobName) -> Vec<NodeId> {
        self.jobs.get(job).map_or_else(Vec::new, |s| {
            s.summaries
                .iter()
                .filter(|(n, summary)| summary.manifests > 0 && !self.unseen.contains_key(n))
                .map(|(n, _)| *n)
                .collect()
        })
    }

    /// The jobs seen so far, in name order.
    pub fn jobs(&self) -> Vec<JobName> {
        self.jobs.keys().cloned().collect()
    }

    /// The manifests of `job` one node listed.
    pub fn on_manifests(&mut self, job: &JobName, entries: &[ManifestEntry]) {
        let Some(state) = self.jobs.get_mut(job) else { return };
        for e in entries {
            let (world_size, ranks) = state.parts.entry(e.step).or_default();
            *world_size = (*world_size).max(e.world_size);
            ranks.insert(e.rank);
        }
    }

    /// The overviews, in name order, and the nodes not seen with why, in id order. A job
    /// only an unseen node lists is not there: the caller says the listing may be short.
    pub fn finish(self) -> (Vec<JobOverview>, Vec<(NodeId, String)>) {
        let unseen = self.unseen;
        let jobs = self
            .jobs
            .into_iter()
            .filter_map(|(job, state)| {
                let held: Vec<&JobSummary> = state
                    .summaries
                    .iter()
                    .filter(|(n, _)| !unseen.contains_key(n))
                    .map(|(_, s)| s)
                    .collect();
                if held.is_empty() {
                    return None;
                }
                let complete: Vec<Step> = state
                    .parts
                    .iter()
                    .filter(|(_, (world_size, ranks))| {
                        is_complete(*world_size, ranks.iter().copied())
                    })
                    .map(|(step, _)| *step)
                    .collect();
                let listed_newest = state.parts.keys().next_back().copied();
                let held_newest = held.iter().filter_map(|s| s.newest_step).max();
                Some(JobOverview {
                    checkpoints: state.parts.len() as u64,
                    complete_checkpoints: complete.len() as u64,
                    newest_step: listed_newest.max(held_newest),
                    newest_complete_step: complete.last().copied(),
                    manifests: held.iter().map(|s| s.manifests).sum(),
                    shards: held.iter().map(|s| s.shards).sum(),
                    shard_bytes: held.iter().map(|s| s.shard_bytes).sum(),
                    nodes: state
                        .summaries
                        .keys()
                        .filter(|n| !unseen.contains_key(n))
                        .copied()
                        .collect(),
                    job,
                })
            })
            .collect();
        (jobs, unseen.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackpoint_proto::Digest;

    fn job(name: &str) -> JobName {
        JobName::new(name).expect("valid")
    }

    fn summary(name: &str, manifests: u64, newest: Option<u64>, bytes: u64) -> JobSummary {
        JobSummary {
            job: job(name),
            manifests,
            newest_step: newest.map(Step),
            shards: bytes / 10,
            shard_bytes: bytes,
        }
    }

    fn entry(step: u64, rank: u32, world_size: u32) -> ManifestEntry {
        ManifestEntry {
            step: Step(step),
            rank: Rank(rank),
            world_size,
            len: 1,
            hash: Digest::default(),
            revision: 0,
            base: Digest::default(),
        }
    }

    #[test]
    fn checkpoints_count_steps_once_whatever_their_copies() {
        let mut m = JobMerge::new();
        let (a, b, c) = (NodeId(1), NodeId(2), NodeId(3));
        m.on_jobs(a, vec![summary("llm", 3, Some(20), 100), summary("orphans", 0, None, 50)]);
        m.on_jobs(b, vec![summary("llm", 2, Some(20), 100)]);
        m.on_jobs(c, vec![summary("vision", 1, Some(7), 10)]);
        assert_eq!(m.manifest_holders(&job("llm")), vec![a, b]);
        assert!(m.manifest_holders(&job("orphans")).is_empty());
        // Step 10 of world size 2 has both ranks on some node; step 20 only rank 0.
        m.on_manifests(&job("llm"), &[entry(10, 0, 2), entry(10, 1, 2), entry(20, 0, 2)]);
        m.on_manifests(&job("llm"), &[entry(10, 1, 2), entry(20, 0, 2)]);
        m.on_manifests(&job("vision"), &[entry(7, 0, 1)]);
        let (jobs, unseen) = m.finish();
        assert!(unseen.is_empty());
        let names: Vec<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
        assert_eq!(names, vec!["llm", "orphans", "vision"]);
        let llm = &jobs[0];
        assert_eq!((llm.checkpoints, llm.complete_checkpoints), (2, 1));
        assert_eq!((llm.newest_step, llm.newest_complete_step), (Some(Step(20)), Some(Step(10))));
        assert_eq!((llm.manifests, llm.shard_bytes, llm.nodes.clone()), (5, 200, vec![a, b]));
        let orphans = &jobs[1];
        assert_eq!((orphans.checkpoints, orphans.newest_step, orphans.shard_bytes), (0, None, 50));
    }

    #[test]
    fn an_unseen_node_counts_for_nothing_and_is_named() {
        let mut m = JobMerge::new();
        m.on_jobs(NodeId(1), vec![summary("a", 1, Some(1), 10)]);
        m.on_jobs(NodeId(2), vec![summary("a", 1, Some(2), 10), summary("b", 1, Some(1), 10)]);
        // Node 2 answered its first page, then broke off.
        m.on_unseen(NodeId(2), "timed out".into());
        m.on_unseen(NodeId(2), "again".into());
        assert_eq!(m.manifest_holders(&job("a")), vec![NodeId(1)]);
        let (jobs, unseen) = m.finish();
        assert_eq!(jobs.len(), 1, "b is held only by the unseen node");
        assert_eq!((jobs[0].shard_bytes, jobs[0].newest_step), (10, Some(Step(1))));
        assert_eq!(unseen, vec![(NodeId(2), "timed out".to_string())]);
    }
}
