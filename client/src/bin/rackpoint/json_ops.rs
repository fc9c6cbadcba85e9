//! The `--json` documents of the commands that act on a whole checkpoint, job or cluster:
//! `ls` without a job, `rm`, `repair`, `gc` (and their `--all-jobs` forms), `cluster init`,
//! `cluster cert`, `cluster up`, the map changes (`cluster add-node`, `decommission`,
//! `push-map`) and `demo`. Like `json`'s, each maps a client report into a
//! serde struct whose schema the README documents.

use std::time::Duration;

use rackpoint_client::catalog::DeleteReport;
use rackpoint_client::gc::GcReport;
use rackpoint_client::jobs::{JobOverview, JobsReport};
use rackpoint_client::repair::{PartRepair, RepairReport};
use rackpoint_proto::{JobName, NodeId, Step};
use serde::Serialize;

use crate::exit::Exit;
use crate::json::{ErrorBody, ErrorDoc};

/// A node and why it did not do its part.
#[derive(Debug, Serialize)]
pub struct NodeErrorDoc {
    pub node: u32,
    pub error: String,
}

fn node_errors(list: &[(NodeId, String)]) -> Vec<NodeErrorDoc> {
    list.iter().map(|(n, e)| NodeErrorDoc { node: n.0, error: e.clone() }).collect()
}

/// `ls` without a job: the jobs this identity may see.
#[derive(Debug, Serialize)]
pub struct JobsDoc {
    pub command: &'static str,
    /// False only when more than m nodes did not answer (`may_miss_jobs`, exit 4).
    pub ok: bool,
    /// Every node answered.
    pub complete: bool,
    /// More than m nodes did not answer: a job whose every copy is on them is missing.
    pub may_miss_jobs: bool,
    /// The nodes that did not answer (their holdings are not counted).
    pub unseen_nodes: Vec<u32>,
    /// The same, with why.
    pub unseen: Vec<NodeErrorDoc>,
    pub jobs: Vec<JobDoc>,
}

/// One job in `ls` without a job.
#[derive(Debug, Serialize)]
pub struct JobDoc {
    pub job: String,
    /// Steps with at least one part listed.
    pub checkpoints: u64,
    /// Steps with every part listed.
    pub complete_checkpoints: u64,
    pub newest_step: Option<u64>,
    pub newest_complete_step: Option<u64>,
    /// Manifest copies stored.
    pub manifests: u64,
    pub shards: u64,
    /// Shard bytes stored, data and parity.
    pub shard_bytes: u64,
    /// The nodes that hold any of it.
    pub nodes: Vec<u32>,
}

impl From<&JobOverview> for JobDoc {
    fn from(j: &JobOverview) -> Self {
        JobDoc {
            job: j.job.to_string(),
            checkpoints: j.checkpoints,
            complete_checkpoints: j.complete_checkpoints,
            newest_step: j.newest_step.map(|s| s.0),
            newest_complete_step: j.newest_complete_step.map(|s| s.0),
            manifests: j.manifests,
            shards: j.shards,
            shard_bytes: j.shard_bytes,
            nodes: j.nodes.iter().map(|n| n.0).collect(),
        }
    }
}

impl JobsDoc {
    pub fn new(r: &JobsReport) -> Self {
        JobsDoc {
            command: "ls",
            ok: !r.may_miss_jobs,
            complete: r.is_complete(),
            may_miss_jobs: r.may_miss_jobs,
            unseen_nodes: r.unseen().iter().map(|n| n.0).collect(),
            unseen: node_errors(&r.unseen_nodes),
            jobs: r.jobs.iter().map(JobDoc::from).collect(),
        }
    }
}

/// `rm`: what each node deleted.
#[derive(Debug, Serialize)]
pub struct RmDoc {
    pub command: &'static str,
    /// Every node of the map confirmed the delete (the step's deletion marks are cleared).
    pub ok: bool,
    pub job: String,
    pub step: u64,
    /// Shards deleted, over all nodes.
    pub shards: u64,
    /// Manifests deleted, over all nodes.
    pub manifests: u64,
    /// Nodes that could not delete their copies, and why.
    pub unreachable_nodes: Vec<NodeErrorDoc>,
    /// Nodes still to confirm the delete: the step stays marked as being deleted until they
    /// do (`rm`, `gc` or `repair` finishes it).
    pub pending_nodes: Vec<u32>,
    /// This delete finished an earlier one that was left pending.
    pub was_pending: bool,
}

impl RmDoc {
    pub fn new(job: &JobName, step: Step, r: &DeleteReport) -> Self {
        let unreachable: Vec<(NodeId, String)> =
            r.unreachable.iter().map(|(n, e)| (*n, e.to_string())).collect();
        RmDoc {
            command: "rm",
            ok: r.is_complete(),
            job: job.to_string(),
            step: step.0,
            shards: r.shards,
            manifests: r.manifests,
            unreachable_nodes: node_errors(&unreachable),
            pending_nodes: r.pending_nodes.iter().map(|n| n.0).collect(),
            was_pending: r.was_pending,
        }
    }
}

/// `repair` of one job.
#[derive(Debug, Serialize)]
pub struct RepairDoc {
    pub command: &'static str,
    /// Every part is back to full redundancy.
    pub ok: bool,
    pub job: String,
    /// The step repaired, or `null` for every checkpoint of the job.
    pub step: Option<u64>,
    pub shards_written: u64,
    pub bytes_read: u64,
    pub elapsed_s: f64,
    pub parts: Vec<PartRepairDoc>,
}

/// What a repair did to one part.
#[derive(Debug, Serialize)]
pub struct PartRepairDoc {
    pub step: u64,
    pub rank: u32,
    pub stripes: u64,
    pub shards_checked: u64,
    pub shards_healthy: u64,
    pub rewritten_in_place: u64,
    pub moved: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub new_revision: Option<u32>,
    pub manifest_copies_added: usize,
    pub stale_copies_deleted: u64,
    pub stale_copies_left: u64,
    /// Stripes (or, without object and stripe, the part) left short, and why.
    pub problems: Vec<ProblemDoc>,
}

/// One thing a repair could not bring back.
#[derive(Debug, Serialize)]
pub struct ProblemDoc {
    pub object: Option<String>,
    pub stripe: Option<u32>,
    pub problem: String,
}

impl From<&PartRepair> for PartRepairDoc {
    fn from(p: &PartRepair) -> Self {
        PartRepairDoc {
            step: p.step.0,
            rank: p.rank.0,
            stripes: p.stripes,
            shards_checked: p.shards_checked,
            shards_healthy: p.shards_healthy,
            rewritten_in_place: p.rewritten_in_place,
            moved: p.moved,
            bytes_read: p.bytes_read,
            bytes_written: p.bytes_written,
            new_revision: p.new_revision,
            manifest_copies_added: p.manifest_copies_added,
            stale_copies_deleted: p.stale_copies_deleted,
            stale_copies_left: p.stale_copies_left,
            problems: p
                .problems
                .iter()
                .map(|x| ProblemDoc {
                    object: x.object.as_ref().map(ToString::to_string),
                    stripe: x.stripe.map(|s| s.0),
                    problem: x.problem.clone(),
                })
                .collect(),
        }
    }
}

impl RepairDoc {
    pub fn new(job: &JobName, step: Option<u64>, r: &RepairReport, elapsed: Duration) -> Self {
        RepairDoc {
            command: "repair",
            ok: r.is_complete(),
            job: job.to_string(),
            step,
            shards_written: r.shards_written(),
            bytes_read: r.bytes_read(),
            elapsed_s: elapsed.as_secs_f64(),
            parts: r.parts.iter().map(PartRepairDoc::from).collect(),
        }
    }
}

/// `gc` of one job.
#[derive(Debug, Serialize)]
pub struct GcDoc {
    pub command: &'static str,
    /// Every node that holds a deleted step's copies deleted them.
    pub ok: bool,
    pub job: String,
    pub keep: usize,
    pub kept: Vec<u64>,
    pub deleted_steps: Vec<u64>,
    pub shards_deleted: u64,
    pub manifests_deleted: u64,
    /// False when too many nodes did not answer to judge orphans.
    pub orphans_checked: bool,
    pub orphan_parts: Vec<StepRankDoc>,
    pub orphan_shards_deleted: u64,
    pub orphan_bytes_deleted: u64,
    pub orphan_shards_young: u64,
    pub node_errors: Vec<NodeErrorDoc>,
}

/// A part.
#[derive(Debug, Serialize)]
pub struct StepRankDoc {
    pub step: u64,
    pub rank: u32,
}

impl GcDoc {
    pub fn new(job: &JobName, keep: usize, r: &GcReport) -> Self {
        GcDoc {
            command: "gc",
            ok: r.node_errors.is_empty(),
            job: job.to_string(),
            keep,
            kept: r.kept.iter().map(|s| s.0).collect(),
            deleted_steps: r.deleted_steps.iter().map(|s| s.0).collect(),
            shards_deleted: r.shards_deleted,
            manifests_deleted: r.manifests_deleted,
            orphans_checked: r.orphans_checked,
            orphan_parts: r
                .orphan_parts
                .iter()
                .map(|(s, r)| StepRankDoc { step: s.0, rank: r.0 })
                .collect(),
            orphan_shards_deleted: r.orphan_shards_deleted,
            orphan_bytes_deleted: r.orphan_bytes_deleted,
            orphan_shards_young: r.orphan_shards_young,
            node_errors: node_errors(&r.node_errors),
        }
    }
}

/// `repair --all-jobs` and `gc --all-jobs`: one result per job and the summary.
#[derive(Debug, Serialize)]
pub struct AllJobsDoc<T: Serialize> {
    pub command: &'static str,
    /// Every job done and every node seen well enough (`exit_code` 0).
    pub ok: bool,
    /// The status the command exits with: the worst of the jobs' (see the README).
    pub exit_code: u8,
    /// Jobs listed.
    pub jobs_total: usize,
    /// Of them, done in full.
    pub jobs_ok: usize,
    /// The listing's nodes that did not answer.
    pub unseen_nodes: Vec<u32>,
    /// More than m of them: jobs may be missing from the listing (exit 4 at least).
    pub may_miss_jobs: bool,
    pub jobs: Vec<JobResultDoc<T>>,
}

/// One job's result in an [`AllJobsDoc`].
#[derive(Debug, Serialize)]
pub struct JobResultDoc<T: Serialize> {
    pub job: String,
    pub ok: bool,
    pub exit_code: u8,
    /// The document the one-job command prints, when it ran to the end.
    pub result: Option<T>,
    /// Why it failed, when it did not.
    pub error: Option<ErrorBody>,
    /// Why it was not run (`repair` skips a job with shards but no checkpoint).
    pub skipped: Option<String>,
}

impl<T: Serialize> JobResultDoc<T> {
    pub fn done(job: &JobName, exit: Exit, result: T) -> Self {
        let exit_code = exit as u8;
        JobResultDoc {
            job: job.to_string(),
            ok: exit_code == 0,
            exit_code,
            result: Some(result),
            error: None,
            skipped: None,
        }
    }

    pub fn skipped(job: &JobName, why: &str) -> Self {
        JobResultDoc {
            job: job.to_string(),
            ok: true,
            exit_code: 0,
            result: None,
            error: None,
            skipped: Some(why.to_string()),
        }
    }

    pub fn failed(command: &'static str, job: &JobName, exit: Exit, e: &anyhow::Error) -> Self {
        JobResultDoc {
            job: job.to_string(),
            ok: false,
            exit_code: exit as u8,
            result: None,
            error: Some(ErrorDoc::new(command, e, exit).error),
            skipped: None,
        }
    }
}

/// `cluster init`.
#[derive(Debug, Serialize)]
pub struct InitDoc {
    pub command: &'static str,
    pub ok: bool,
    pub dir: String,
    pub cluster_file: String,
    pub k: u8,
    pub m: u8,
    pub shard_size_bytes: u32,
    pub nodes: Vec<InitNodeDoc>,
}

/// One node `cluster init` made.
#[derive(Debug, Serialize)]
pub struct InitNodeDoc {
    pub id: u32,
    pub addr: String,
    pub rack: String,
    /// Its `node.toml`.
    pub config: String,
}

/// `cluster cert`.
#[derive(Debug, Serialize)]
pub struct CertDoc {
    pub command: &'static str,
    pub ok: bool,
    pub name: String,
    pub access: String,
    pub jobs: Vec<String>,
    pub days: u32,
    pub cert: String,
    pub key: String,
    pub serial: String,
    pub fingerprint: String,
}

/// `cluster up`: printed once every node listens (`event` `up`), and again when it stops
/// (`event` `stopped`).
#[derive(Debug, Serialize)]
pub struct UpDoc {
    pub command: &'static str,
    pub ok: bool,
    /// `up`, `exited` (a node exited by itself; the others keep running) or `stopped`.
    pub event: &'static str,
    pub cluster_file: String,
    pub nodes: Vec<UpNodeDoc>,
    /// With `exited`: the node that exited by itself.
    pub exited_node: Option<u32>,
}

/// One node `cluster up` runs.
#[derive(Debug, Serialize)]
pub struct UpNodeDoc {
    pub id: u32,
    pub addr: String,
    pub rack: String,
    /// Its process id.
    pub pid: u32,
    pub log: String,
}

/// `cluster add-node`, `cluster decommission` and `cluster push-map`: the map written and
/// what each node did with it.
#[derive(Debug, Serialize)]
pub struct MapChangeDoc {
    pub command: &'static str,
    /// True when at least one node took the map (or there was none to push to).
    pub ok: bool,
    pub cluster_file: String,
    /// The map's epoch.
    pub epoch: u64,
    /// The node added or decommissioned (none for `push-map`).
    pub node: Option<MapNodeDoc>,
    /// One entry per node pushed to (a new node is not: it has the map in its folder).
    pub pushed: Vec<MapPushDoc>,
    /// `add-node`: the command that starts the new node.
    pub start: Option<String>,
    /// When no node took the map (the files are written all the same).
    pub error: Option<ErrorBody>,
}

/// The node a map change was about.
#[derive(Debug, Serialize)]
pub struct MapNodeDoc {
    pub id: u32,
    pub addr: String,
    pub rack: String,
    pub decommissioned: bool,
    /// Its folder.
    pub dir: String,
}

/// `cluster pull`: the newest map the nodes hold, written to the cluster file if newer.
#[derive(Debug, Serialize)]
pub struct PullDoc {
    pub command: &'static str,
    pub ok: bool,
    pub cluster_file: String,
    /// The file's epoch before.
    pub file_epoch: u64,
    /// The newest epoch learned (verified against the cluster CA).
    pub epoch: u64,
    /// Whether the file was rewritten.
    pub written: bool,
    pub nodes: usize,
}

/// What one node did with a pushed map.
#[derive(Debug, Serialize)]
pub struct MapPushDoc {
    pub node: u32,
    /// `stored` (taken now), `held` (it had this map), `newer` (it holds a newer epoch),
    /// `unreachable` (it gets the map at the next push, or at start from its folder's
    /// file), or `refused` (say, another map of the same epoch).
    pub outcome: &'static str,
    pub error: Option<String>,
}

/// `demo`: what the run measured.
#[derive(Debug, Serialize)]
pub struct DemoDoc {
    pub command: &'static str,
    pub ok: bool,
    pub bytes: u64,
    pub save_s: f64,
    pub restore_s: f64,
    /// Nodes killed with SIGKILL before the second restore.
    pub killed_nodes: Vec<u32>,
    pub degraded_restore_s: f64,
    /// Stripes rebuilt from parity by the second restore.
    pub degraded_stripes: u64,
    /// Every object restored byte-identical.
    pub identical: bool,
    pub survives_more_failures: Option<usize>,
}
