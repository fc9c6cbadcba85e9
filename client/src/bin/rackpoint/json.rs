//! The `--json` documents: one per command run, on stdout. Each is a serde struct mapped from
//! the client's report types, so the schema (documented in the README) is written down here
//! and changes only on purpose. Every document has `command` and `ok`; a failed command
//! prints an [`ErrorDoc`] unless its own report says what failed (`status`, `verify`).

use std::path::Path;

use rackpoint_client::catalog::{BadShard, CheckpointSummary, VerifyReport};
use rackpoint_client::error::{FailedShardList, PassOverReason, PassedOver};
use rackpoint_client::heal::HealReport;
use rackpoint_client::planner::ShardFailure;
use rackpoint_client::restore::{RestoreReport, Which};
use rackpoint_client::save::SaveReport;
use rackpoint_client::{ClientError, NodeStatus};
use rackpoint_proto::{JobName, NodeId, Rank, Step};
use serde::Serialize;

use crate::exit::{self, Exit};

/// Prints `doc` as one line of JSON on stdout.
pub fn print<T: Serialize>(doc: &T) {
    match serde_json::to_string(doc) {
        Ok(text) => println!("{text}"),
        // Only a map with non-string keys or a failing Serialize impl can fail; none is here.
        Err(e) => eprintln!("rackpoint: cannot write JSON: {e}"),
    }
}

/// `status`: every node of the map. `ok` only if every node answered.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    pub command: &'static str,
    pub ok: bool,
    pub nodes: Vec<NodeDoc>,
}

/// One node in `status`. The counters are `null` for a node that did not answer.
#[derive(Debug, Serialize)]
pub struct NodeDoc {
    pub id: u32,
    pub addr: String,
    pub rack: String,
    pub up: bool,
    pub shards: Option<u64>,
    pub shard_bytes: Option<u64>,
    pub manifests: Option<u64>,
    pub corrupt_shards_found: Option<u64>,
    /// Shards known corrupt now (at most `MAX_STATS_CORRUPT_KEYS`, of jobs the caller
    /// reaches), as `job/step/rank/object/stripe/index`.
    pub corrupt_shards: Option<Vec<String>>,
    pub scrubbed_shards: Option<u64>,
    pub scrub_passes: Option<u64>,
    /// Free bytes of the node's data file system (0 from a node of an older release).
    pub disk_free_bytes: Option<u64>,
    /// Bytes of the node's in-flight budget held now (0 from a node of an older release).
    pub inflight_bytes: Option<u64>,
    /// The node started on an emptied data folder that held shards: run `rackpoint repair`.
    pub started_empty: Option<bool>,
    /// Requests served and failed, over every kind.
    pub requests_served: Option<u64>,
    pub requests_failed: Option<u64>,
    /// Per request kind.
    pub requests: Option<Vec<RequestsDoc>>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// One request kind's counters in `status`.
#[derive(Debug, Serialize)]
pub struct RequestsDoc {
    pub kind: String,
    pub served: u64,
    pub failed: u64,
}

impl StatusDoc {
    pub fn new(nodes: &[NodeStatus]) -> Self {
        let nodes: Vec<NodeDoc> = nodes.iter().map(NodeDoc::from).collect();
        Self { command: "status", ok: nodes.iter().all(|n| n.up), nodes }
    }
}

impl From<&NodeStatus> for NodeDoc {
    fn from(n: &NodeStatus) -> Self {
        let s = n.stats.as_ref().ok();
        NodeDoc {
            id: n.node.id.0,
            addr: n.node.addr.to_string(),
            rack: n.node.rack.clone(),
            up: s.is_some(),
            shards: s.map(|s| s.shards),
            shard_bytes: s.map(|s| s.shard_bytes),
            manifests: s.map(|s| s.manifests),
            corrupt_shards_found: s.map(|s| s.corrupt_shards_found),
            corrupt_shards: s.map(|s| {
                s.corrupt_shards
                    .iter()
                    .map(|k| {
                        format!(
                            "{}/{}/{}/{}/{}/{}",
                            k.job, k.step, k.rank, k.object, k.stripe, k.index
                        )
                    })
                    .collect()
            }),
            scrubbed_shards: s.map(|s| s.scrubbed_shards),
            scrub_passes: s.map(|s| s.scrub_passes),
            disk_free_bytes: s.map(|s| s.disk_free_bytes),
            inflight_bytes: s.map(|s| s.inflight_bytes),
            started_empty: s.map(|s| s.started_empty),
            requests_served: s.map(|s| s.requests.iter().map(|c| c.served).sum()),
            requests_failed: s.map(|s| s.requests.iter().map(|c| c.failed).sum()),
            requests: s.map(|s| {
                s.requests
                    .iter()
                    .map(|c| RequestsDoc {
                        kind: c.kind.clone(),
                        served: c.served,
                        failed: c.failed,
                    })
                    .collect()
            }),
            error: n.stats.as_ref().err().cloned(),
        }
    }
}

/// `put`: the committed part.
#[derive(Debug, Serialize)]
pub struct PutDoc {
    pub command: &'static str,
    pub ok: bool,
    pub job: String,
    pub step: u64,
    pub rank: u32,
    pub world_size: u32,
    pub bytes: u64,
    pub shards: u64,
    pub moved_shards: u64,
    /// Stripes with more than one shard on a node (degraded placement; `repair` spreads them).
    pub doubled_stripes: u64,
    /// blake3 of the manifest, hex.
    pub manifest_id: String,
    pub manifest_nodes: Vec<u32>,
    pub elapsed_s: f64,
}

impl PutDoc {
    pub fn new(job: &JobName, step: Step, rank: Rank, world_size: u32, r: &SaveReport) -> Self {
        PutDoc {
            command: "put",
            ok: true,
            job: job.to_string(),
            step: step.0,
            rank: rank.0,
            world_size,
            bytes: r.bytes,
            shards: r.shards,
            moved_shards: r.moved_shards,
            doubled_stripes: r.doubled_stripes,
            manifest_id: r.manifest_id.to_hex(),
            manifest_nodes: r.manifest_nodes.iter().map(|n| n.0).collect(),
            elapsed_s: r.elapsed.as_secs_f64(),
        }
    }
}

/// `get`: the restored part and its files.
#[derive(Debug, Serialize)]
pub struct GetDoc {
    pub command: &'static str,
    pub ok: bool,
    pub job: String,
    pub step: u64,
    pub rank: u32,
    pub out: String,
    pub bytes: u64,
    /// Stripes rebuilt from parity.
    pub degraded_stripes: u64,
    /// Stripes with a shard a node reported missing or corrupt.
    pub damaged_stripes: u64,
    /// With `--heal`: what healing the damaged stripes did (absent when nothing was healed).
    pub heal: Option<HealDoc>,
    pub elapsed_s: f64,
    pub objects: Vec<ObjectDoc>,
    /// With the latest checkpoint: the newer ones passed over, newest first.
    pub passed_over: Vec<PassedOverDoc>,
}

/// What `get --heal` did.
#[derive(Debug, Serialize)]
pub struct HealDoc {
    /// Shards rewritten.
    pub shards_written: u64,
    /// Whether every damaged stripe is back to full redundancy.
    pub complete: bool,
    /// Why not, if not.
    pub problems: Vec<String>,
}

impl HealDoc {
    fn new(heals: &[HealReport]) -> Option<Self> {
        let mut doc = HealDoc { shards_written: 0, complete: true, problems: Vec::new() };
        for h in heals {
            match &h.result {
                Ok(p) => {
                    doc.shards_written += p.rewritten_in_place + p.moved;
                    doc.complete &= p.is_complete();
                    doc.problems.extend(p.problems.iter().map(|x| x.problem.clone()));
                }
                Err(e) => {
                    doc.complete = false;
                    doc.problems.push(e.clone());
                }
            }
        }
        (!heals.is_empty()).then_some(doc)
    }
}

/// One restored file.
#[derive(Debug, Serialize)]
pub struct ObjectDoc {
    pub name: String,
    pub len: u64,
    /// blake3 of its bytes, hex (checked against the manifest).
    pub blake3: String,
    pub path: String,
}

impl GetDoc {
    pub fn new(
        out: &Path,
        r: &RestoreReport,
        passed_over: Vec<PassedOverDoc>,
        heals: &[HealReport],
    ) -> Self {
        let m = &r.manifest;
        GetDoc {
            command: "get",
            ok: true,
            job: m.job.to_string(),
            step: m.step.0,
            rank: m.rank.0,
            out: out.display().to_string(),
            bytes: r.bytes,
            degraded_stripes: r.degraded_stripes,
            damaged_stripes: r.damaged_stripes.len() as u64,
            heal: HealDoc::new(heals),
            elapsed_s: r.elapsed.as_secs_f64(),
            objects: m
                .objects
                .iter()
                .map(|o| ObjectDoc {
                    name: o.name.to_string(),
                    len: o.len,
                    blake3: o.hash.to_hex(),
                    path: out.join(o.name.as_str()).display().to_string(),
                })
                .collect(),
            passed_over,
        }
    }
}

/// `ls`: a job's checkpoints, oldest first.
#[derive(Debug, Serialize)]
pub struct LsDoc {
    pub command: &'static str,
    pub ok: bool,
    pub job: String,
    pub checkpoints: Vec<CheckpointDoc>,
    /// Nodes that did not answer the listing: checkpoints whose manifests are all on them
    /// are missing from it (empty when every node answered).
    pub unseen_nodes: Vec<u32>,
}

/// One checkpoint in `ls`.
#[derive(Debug, Serialize)]
pub struct CheckpointDoc {
    pub step: u64,
    pub world_size: u32,
    pub parts: u32,
    pub complete: bool,
    pub bytes: u64,
    /// More node failures every stripe survives, from the shards the nodes list as present;
    /// `null`: it cannot be restored now.
    pub survives_more_failures: Option<usize>,
    /// The same in racks.
    pub survives_rack_failures: Option<usize>,
    /// With `survives_more_failures` `null`: the nodes that do not answer and hold its shards
    /// or manifests (bring them back); empty otherwise.
    pub unavailable_nodes: Vec<u32>,
    /// A delete of it has begun and is not finished everywhere: never complete, never
    /// restored; `rm`, `gc` or `repair` finishes it.
    pub deleting: bool,
    /// With `deleting`: the nodes still to finish it; empty otherwise.
    pub deleting_nodes: Vec<u32>,
}

impl LsDoc {
    pub fn new<'a>(
        job: &JobName,
        list: impl Iterator<Item = &'a CheckpointSummary>,
        unseen: &[NodeId],
    ) -> Self {
        let checkpoints = list
            .map(|c| CheckpointDoc {
                step: c.step.0,
                world_size: c.world_size,
                parts: c.parts,
                complete: c.complete,
                bytes: c.bytes,
                survives_more_failures: c.survives_more_failures,
                survives_rack_failures: c.survives_rack_failures,
                unavailable_nodes: c.unavailable_nodes.iter().map(|n| n.0).collect(),
                deleting: c.deleting,
                deleting_nodes: c.deleting_nodes.iter().map(|n| n.0).collect(),
            })
            .collect();
        let unseen_nodes = unseen.iter().map(|n| n.0).collect();
        LsDoc { command: "ls", ok: true, job: job.to_string(), checkpoints, unseen_nodes }
    }
}

/// `verify`: what reading back every shard found. `ok` only if healthy.
#[derive(Debug, Serialize)]
pub struct VerifyDoc {
    pub command: &'static str,
    pub ok: bool,
    pub job: String,
    pub step: u64,
    pub world_size: u32,
    pub parts_found: Vec<u32>,
    pub shards_ok: u64,
    pub bad_shards: Vec<BadShardDoc>,
    pub chain_problems: Vec<ChainProblemDoc>,
    /// More node failures every part survives, from where its good shards are and its
    /// manifest's copies; `null`: a stripe cannot be read now.
    pub survives_more_failures: Option<usize>,
    /// The same in racks.
    pub survives_rack_failures: Option<usize>,
    /// Stripes with more than one shard on a node: not healthy until repair spreads them.
    pub degraded_placement: Vec<DoubledDoc>,
    /// Every part present, every shard good and on a node of its own, chains clean.
    pub healthy: bool,
    /// Every stripe can be rebuilt from the shards found now.
    pub recoverable: bool,
    /// A stripe is known lost: nodes answered that more than m of its shards are missing or
    /// corrupt (exit 3). Not recoverable and not lost is unavailable (exit 4).
    pub lost: bool,
    /// Nodes whose shards could not be checked because they did not answer.
    pub unavailable_nodes: Vec<u32>,
    /// Without `--step` (the latest checkpoint): the newer ones passed over, newest first.
    pub passed_over: Vec<PassedOverDoc>,
}

/// One shard `verify` could not use.
#[derive(Debug, Serialize)]
pub struct BadShardDoc {
    pub rank: u32,
    pub object: String,
    pub stripe: u32,
    pub shard: u8,
    pub node: u32,
    /// `node_down`, `missing`, `corrupt` or `other`.
    pub why: &'static str,
    /// The error text when `why` is `other`.
    pub detail: Option<String>,
}

/// One stripe with more than one shard on a node.
#[derive(Debug, Serialize)]
pub struct DoubledDoc {
    pub rank: u32,
    pub object: String,
    pub stripe: u32,
    pub node: u32,
    pub shards: usize,
}

/// One problem in a rank's manifest chain.
#[derive(Debug, Serialize)]
pub struct ChainProblemDoc {
    pub rank: u32,
    pub problem: String,
}

impl VerifyDoc {
    pub fn new(job: &JobName, r: &VerifyReport, passed_over: Vec<PassedOverDoc>) -> Self {
        VerifyDoc {
            command: "verify",
            ok: r.is_healthy(),
            job: job.to_string(),
            step: r.step.0,
            world_size: r.world_size,
            parts_found: r.parts_found.iter().map(|r| r.0).collect(),
            shards_ok: r.shards_ok,
            bad_shards: r.bad_shards.iter().map(BadShardDoc::from).collect(),
            chain_problems: r
                .chain_problems
                .iter()
                .map(|(rank, p)| ChainProblemDoc { rank: rank.0, problem: p.to_string() })
                .collect(),
            survives_more_failures: r.survives_more_failures,
            survives_rack_failures: r.survives_rack_failures,
            degraded_placement: r
                .degraded_placement
                .iter()
                .map(|d| DoubledDoc {
                    rank: d.rank.0,
                    object: d.object.to_string(),
                    stripe: d.stripe.0,
                    node: d.node.0,
                    shards: d.shards,
                })
                .collect(),
            healthy: r.is_healthy(),
            recoverable: r.survives_more_failures.is_some(),
            lost: r.lost,
            unavailable_nodes: unanswered(r),
            passed_over,
        }
    }
}

/// The nodes of `verify`'s bad shards that did not answer (not known lost), sorted.
pub fn unanswered(r: &VerifyReport) -> Vec<u32> {
    let mut nodes: Vec<u32> =
        r.bad_shards.iter().filter(|b| !b.why.is_loss()).map(|b| b.node.0).collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes
}

impl From<&BadShard> for BadShardDoc {
    fn from(b: &BadShard) -> Self {
        let (why, detail) = failure_kind(&b.why);
        BadShardDoc {
            rank: b.rank.0,
            object: b.object.to_string(),
            stripe: b.stripe.0,
            shard: b.index.0,
            node: b.node.0,
            why,
            detail,
        }
    }
}

/// A shard failure as a JSON kind and, for `other`, its text.
pub fn failure_kind(f: &ShardFailure) -> (&'static str, Option<String>) {
    match f {
        ShardFailure::NodeDown => ("node_down", None),
        ShardFailure::Missing => ("missing", None),
        ShardFailure::Corrupt => ("corrupt", None),
        ShardFailure::Other(text) => ("other", Some(text.clone())),
    }
}

/// Any failed command with `--json`: what failed and the exit status it ends with.
#[derive(Debug, Serialize)]
pub struct ErrorDoc {
    pub command: &'static str,
    pub ok: bool,
    pub error: ErrorBody,
}

/// The error of an [`ErrorDoc`].
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// The process's exit status (1, 2, 3 or 4).
    pub exit_code: u8,
    /// `failure`, `usage`, `not_recoverable` or `unavailable`.
    pub kind: &'static str,
    /// The same line the text mode prints on stderr.
    pub message: String,
    /// With `kind` `not_recoverable`: what was lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_recoverable: Option<NotRecoverableDoc>,
    /// With `kind` `unavailable`: what cannot be read, and the nodes to bring back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<UnavailableDoc>,
}

/// What makes a checkpoint impossible to restore: nodes answered that more than m shards of
/// a stripe are missing or corrupt.
#[derive(Debug, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotRecoverableDoc {
    /// A stripe of the part asked for lost more than m shards.
    StripeLost {
        job: String,
        step: u64,
        rank: u32,
        object: String,
        stripe: u32,
        /// Shards needed (k).
        need: usize,
        /// Good shards found.
        got: usize,
        failed_shards: Vec<FailedShardDoc>,
    },
}

/// What cannot be read while nodes do not answer (nothing known lost).
#[derive(Debug, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum UnavailableDoc {
    /// A stripe of the part asked for has too few shards on nodes that answer.
    StripeUnavailable {
        job: String,
        step: u64,
        rank: u32,
        object: String,
        stripe: u32,
        need: usize,
        got: usize,
        /// The nodes to bring back.
        nodes: Vec<u32>,
        failed_shards: Vec<FailedShardDoc>,
    },
    /// The checkpoint asked for (`step`, or `null` for the latest) may be on nodes that do
    /// not answer.
    CheckpointUnavailable {
        job: String,
        step: Option<u64>,
        /// The nodes to bring back.
        nodes: Vec<u32>,
        passed_over: Vec<PassedOverDoc>,
    },
    /// A delete (`rm`, `gc`) could not store the step's deletion mark on m + 1 nodes, so
    /// nothing was deleted; or `gc` refused to delete while nodes did not answer its listing
    /// (`step` is then `null`; `--force` deletes what can be reached).
    #[serde(rename = "delete_unavailable")]
    Deletion {
        job: String,
        step: Option<u64>,
        /// The nodes to bring back.
        nodes: Vec<u32>,
        /// Whether `--force` would have gone on (a gc refusal).
        force_would_proceed: bool,
    },
}

/// A newer checkpoint passed over when looking for the latest, and why (`message` says it
/// in words, the other fields by `reason`).
#[derive(Debug, Serialize)]
pub struct PassedOverDoc {
    pub step: u64,
    #[serde(flatten)]
    pub why: PassOverDoc,
    pub message: String,
}

/// Why a checkpoint was passed over.
#[derive(Debug, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PassOverDoc {
    /// Not every rank committed its part.
    Incomplete { parts: usize, world_size: u32 },
    /// No replica of a part's manifest could be read.
    ManifestUnreadable { rank: u32 },
    /// A stripe has more than m shards on nodes that do not answer.
    Unavailable {
        rank: u32,
        object: String,
        stripe: u32,
        /// The stripe's nodes that do not answer.
        nodes: Vec<u32>,
        /// Its shards on them.
        lost: usize,
        /// Shards a stripe can lose.
        m: usize,
    },
    /// A delete of it has begun and is not finished.
    BeingDeleted {
        /// The nodes that answered holding its deletion mark.
        nodes: Vec<u32>,
    },
}

impl From<&PassedOver> for PassedOverDoc {
    fn from(p: &PassedOver) -> Self {
        let why = match &p.why {
            PassOverReason::Incomplete { parts, world_size } => {
                PassOverDoc::Incomplete { parts: *parts, world_size: *world_size }
            }
            PassOverReason::ManifestUnreadable { rank, .. } => {
                PassOverDoc::ManifestUnreadable { rank: rank.0 }
            }
            PassOverReason::Unavailable { rank, stripe } => PassOverDoc::Unavailable {
                rank: rank.0,
                object: stripe.object.to_string(),
                stripe: stripe.stripe.0,
                nodes: stripe.nodes.iter().map(|n| n.0).collect(),
                lost: stripe.lost,
                m: stripe.m,
            },
            PassOverReason::BeingDeleted { nodes } => {
                PassOverDoc::BeingDeleted { nodes: nodes.0.iter().map(|n| n.0).collect() }
            }
        };
        PassedOverDoc { step: p.step.0, why, message: p.why.to_string() }
    }
}

/// The passed-over list of a resume point.
pub fn passed_over(list: &[PassedOver]) -> Vec<PassedOverDoc> {
    list.iter().map(PassedOverDoc::from).collect()
}

/// A shard a restore could not use.
#[derive(Debug, Serialize)]
pub struct FailedShardDoc {
    pub shard: u8,
    pub node: u32,
    /// As in `verify`'s `bad_shards`.
    pub why: &'static str,
    pub detail: Option<String>,
}

impl NotRecoverableDoc {
    fn from_chain(e: &anyhow::Error) -> Option<Self> {
        e.chain().find_map(|c| c.downcast_ref::<ClientError>()).and_then(|c| match c {
            ClientError::NotEnoughShards {
                job,
                step,
                rank,
                object,
                stripe,
                need,
                got,
                failures,
            } => Some(NotRecoverableDoc::StripeLost {
                job: job.to_string(),
                step: step.0,
                rank: rank.0,
                object: object.to_string(),
                stripe: stripe.0,
                need: *need,
                got: *got,
                failed_shards: failed_shards(failures),
            }),
            _ => None,
        })
    }
}

fn failed_shards(failures: &FailedShardList) -> Vec<FailedShardDoc> {
    failures
        .0
        .iter()
        .map(|f| {
            let (why, detail) = failure_kind(&f.why);
            FailedShardDoc { shard: f.index.0, node: f.node.0, why, detail }
        })
        .collect()
}

impl UnavailableDoc {
    fn from_chain(e: &anyhow::Error) -> Option<Self> {
        e.chain().find_map(|c| c.downcast_ref::<ClientError>()).and_then(|c| match c {
            ClientError::ShardsUnavailable {
                job,
                step,
                rank,
                object,
                stripe,
                need,
                got,
                failures,
            } => Some(UnavailableDoc::StripeUnavailable {
                job: job.to_string(),
                step: step.0,
                rank: rank.0,
                object: object.to_string(),
                stripe: stripe.0,
                need: *need,
                got: *got,
                nodes: failures.unanswered_nodes().0.iter().map(|n| n.0).collect(),
                failed_shards: failed_shards(failures),
            }),
            ClientError::Unavailable { job, asked, nodes, passed_over: list } => {
                Some(UnavailableDoc::CheckpointUnavailable {
                    job: job.to_string(),
                    step: match asked {
                        Which::Step(s) => Some(s.0),
                        Which::Latest => None,
                    },
                    nodes: nodes.0.iter().map(|n| n.0).collect(),
                    passed_over: passed_over(&list.0),
                })
            }
            ClientError::DeleteNotMarked { job, step, nodes, .. } => {
                Some(UnavailableDoc::Deletion {
                    job: job.to_string(),
                    step: Some(step.0),
                    nodes: nodes.0.iter().map(|n| n.0).collect(),
                    force_would_proceed: false,
                })
            }
            ClientError::GcRefused { job, nodes, .. } => Some(UnavailableDoc::Deletion {
                job: job.to_string(),
                step: None,
                nodes: nodes.0.iter().map(|n| n.0).collect(),
                force_would_proceed: true,
            }),
            _ => None,
        })
    }
}

impl ErrorDoc {
    pub fn new(command: &'static str, e: &anyhow::Error, exit: Exit) -> Self {
        let message = exit::error_line(e).unwrap_or_else(|| exit.kind().to_string());
        let mut doc = Self::with(command, exit, message);
        match exit {
            Exit::NotRecoverable => doc.error.not_recoverable = NotRecoverableDoc::from_chain(e),
            Exit::Unavailable => doc.error.unavailable = UnavailableDoc::from_chain(e),
            _ => {}
        }
        doc
    }

    /// A command line clap refused (the command is not known yet).
    pub fn usage(message: &str) -> Self {
        Self::with("", Exit::Usage, message.to_string())
    }

    fn with(command: &'static str, exit: Exit, message: String) -> Self {
        ErrorDoc {
            command,
            ok: false,
            error: ErrorBody {
                exit_code: exit as u8,
                kind: exit.kind(),
                message,
                not_recoverable: None,
                unavailable: None,
            },
        }
    }
}
