//! The client's error type: every failure of save, restore, list and verify, with the
//! arithmetic and the nodes involved, so that a message says what failed and what to do.

use std::path::PathBuf;

use rackpoint_proto::{JobName, NodeId, ObjectName, Rank, ShardIndex, Step, StripeIndex};

use crate::manifest::Which;
use crate::planner::ShardFailure;
use crate::transport::TransportError;

/// One shard that could not be used, for error reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedShard {
    /// Its index in the stripe.
    pub index: ShardIndex,
    /// The node it was on.
    pub node: NodeId,
    /// What went wrong.
    pub why: ShardFailure,
}

impl std::fmt::Display for FailedShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} on node {}: {:?}", self.index, self.node, self.why)
    }
}

fn list<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("; ")
}

/// Requests that failed, one per node, for error reports; prints as one line (each
/// transport error names its node).
#[derive(Debug, Clone, Default)]
pub struct NodeErrors(pub Vec<(NodeId, TransportError)>);

impl std::fmt::Display for NodeErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let errors: Vec<&TransportError> = self.0.iter().map(|(_, e)| e).collect();
        f.write_str(&list(&errors))
    }
}

pub use crate::checkpoint_choice::{NodeList, PassOverReason, PassedOver, PassedOverList};

/// Everything a client call can fail with. Three kinds of "cannot restore" are told apart:
/// `NotEnoughShards` (lost: nodes answered that more than m shards of a stripe are missing or
/// corrupt), `ShardsUnavailable` and `Unavailable` (nodes that hold what is needed do not
/// answer: nothing is known lost, bringing them back makes it readable) and `NoSuchJob`.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster folder or its files could not be used.
    #[error(transparent)]
    Cluster(#[from] crate::cluster_dir::ClusterDirError),
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A node request failed and no fallback remained.
    #[error(transparent)]
    Transport(crate::transport::TransportError),
    /// Not enough nodes are up to place shards.
    #[error(transparent)]
    Placement(#[from] crate::placement::PlacementError),
    /// The erasure code refused its input.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// A manifest did not decode or validate.
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    /// The request itself is invalid.
    #[error("invalid request: {0}")]
    InvalidInput(String),
    /// A stripe is lost: nodes answered that more than m of its shards are missing or
    /// corrupt, so no node coming back can rebuild it.
    #[error("{job} step {step} rank {rank} object {object} stripe {stripe}: need {need} shards, only {got} usable ({failures}); more than m shards are missing or corrupt: lost")]
    NotEnoughShards {
        /// The checkpoint's job.
        job: JobName,
        /// The checkpoint's step.
        step: Step,
        /// The part.
        rank: Rank,
        /// The object.
        object: ObjectName,
        /// The stripe.
        stripe: StripeIndex,
        /// Shards needed (k).
        need: usize,
        /// Good shards found.
        got: usize,
        /// Every failed shard, `failures` in text.
        failures: FailedShardList,
    },
    /// A stripe cannot be read now, but is not known lost: nodes holding its other shards do
    /// not answer (down, stopped, unreachable). Bringing them back makes it readable.
    #[error("{job} step {step} rank {rank} object {object} stripe {stripe}: need {need} shards, only {got} usable ({failures}); unavailable, not lost: bring back node(s) {} and retry", failures.unanswered_nodes())]
    ShardsUnavailable {
        /// The checkpoint's job.
        job: JobName,
        /// The checkpoint's step.
        step: Step,
        /// The part.
        rank: Rank,
        /// The object.
        object: ObjectName,
        /// The stripe.
        stripe: StripeIndex,
        /// Shards needed (k).
        need: usize,
        /// Good shards found.
        got: usize,
        /// Every failed shard; those not known lost name the nodes to bring back
        /// ([`FailedShardList::unanswered_nodes`]).
        failures: FailedShardList,
    },
    /// What was asked for cannot be found or read while some nodes do not answer, and nothing
    /// is known lost: the newest complete checkpoint (or the part asked for) may be on them.
    #[error("job {job}, {asked}: unavailable while node(s) {nodes} do not answer; nothing is known lost: bring them back and retry{passed_over}")]
    Unavailable {
        /// The job.
        job: JobName,
        /// A step, or the latest.
        asked: Which,
        /// The nodes that do not answer.
        nodes: NodeList,
        /// Checkpoints passed over, newest first, and why.
        passed_over: PassedOverList,
    },
    /// No node holds a checkpoint of the job (enough nodes answered that none can hide one).
    #[error("no such job: {job} has no checkpoint")]
    NoSuchJob {
        /// The job.
        job: JobName,
    },
    /// A shard could not be stored on any node.
    #[error("object {object} stripe {stripe} shard {index}: could not be stored after {attempts} attempts: {last}")]
    ShardWriteFailed {
        /// The object.
        object: ObjectName,
        /// The stripe.
        stripe: StripeIndex,
        /// The shard.
        index: ShardIndex,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The manifest could not be made durable on enough nodes: the part is not committed.
    #[error("manifest of {job} step {step} rank {rank} stored on {stored} of the {need} nodes required ({failures}); the part is not committed")]
    CommitFailed {
        /// The job.
        job: JobName,
        /// The step.
        step: Step,
        /// The rank.
        rank: Rank,
        /// Replicas required (m + 1).
        need: usize,
        /// Replicas stored.
        stored: usize,
        /// Each node that did not store it, and why.
        failures: NodeErrors,
    },
    /// No manifest of that part could be found on any reachable node.
    #[error("no manifest for {job} {asked} rank {rank} on any reachable node{detail}")]
    ManifestNotFound {
        /// The job.
        job: JobName,
        /// The step asked for, or the latest.
        asked: Which,
        /// The rank.
        rank: Rank,
        /// What the nodes said, if anything.
        detail: String,
    },
    /// The part's holders list manifests that describe different content and no content is
    /// listed by a majority of them: nothing of the part is read (never other bytes).
    #[error("{job} step {step} rank {rank}: its holders disagree on what the part holds and no version is listed by a majority of them; nothing of it is read ({detail})")]
    ManifestDisputed {
        /// The job.
        job: JobName,
        /// The step.
        step: Step,
        /// The rank.
        rank: Rank,
        /// Every version listed, with its nodes.
        detail: String,
    },
    /// The part is already committed; saving it again would overwrite its shards.
    #[error("{job} step {step} rank {rank} is already saved; delete it first (rackpoint rm) or save another step")]
    AlreadyExists {
        /// The job.
        job: JobName,
        /// The step.
        step: Step,
        /// The rank.
        rank: Rank,
    },
    /// The job has checkpoints, but none complete: a rank never committed its part, or a
    /// manifest could not be read from any replica. (Nodes that do not answer make it
    /// `Unavailable` instead.)
    #[error("job {job} has no complete checkpoint{passed_over}")]
    NoCheckpoint {
        /// The job.
        job: JobName,
        /// Every checkpoint passed over, newest first, and why.
        passed_over: PassedOverList,
    },
    /// No node answered a listing.
    #[error("no node answered ({0})")]
    NoNodeAnswered(NodeErrors),
    /// The step is being deleted (nodes hold its deletion mark): it is not restored, and no
    /// part of it is saved until its delete finishes.
    #[error("{job} step {step} is being deleted (node(s) {nodes} hold its deletion mark); it is neither restored nor saved again until `rackpoint gc`, `rm` or `repair` finishes the delete; save another step")]
    StepBeingDeleted {
        /// The job.
        job: JobName,
        /// The step.
        step: Step,
        /// The nodes that hold its mark.
        nodes: NodeList,
    },
    /// A delete could not store the step's deletion mark on m + 1 nodes (enough that every
    /// later listing sees one): nothing was deleted.
    #[error("{job} step {step}: the deletion mark was stored on {marked} of the {need} nodes a delete needs first, so nothing was deleted: bring back node(s) {nodes} and retry ({failures})")]
    DeleteNotMarked {
        /// The job.
        job: JobName,
        /// The step.
        step: Step,
        /// Nodes that stored the mark.
        marked: usize,
        /// Nodes that must (m + 1).
        need: usize,
        /// The nodes that did not store it.
        nodes: NodeList,
        /// Why each of them did not.
        failures: NodeErrors,
    },
    /// `gc` would delete steps while nodes did not answer its listing (they may hold
    /// manifests it cannot see): nothing was deleted.
    #[error("gc of {job} refused: node(s) {nodes} did not answer, and the steps it would delete ({}) may have manifests there; nothing was deleted: bring them back, or pass --force to delete what can be reached now (the rest is marked and finished when they return)", steps.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "))]
    GcRefused {
        /// The job.
        job: JobName,
        /// The nodes that did not answer.
        nodes: NodeList,
        /// The steps retention chose.
        steps: Vec<Step>,
    },
    /// The restored object's blake3 is not the manifest's: nothing was returned.
    #[error(
        "object {object}: restored bytes do not match the manifest's blake3; nothing was written"
    )]
    ObjectHashMismatch {
        /// The object.
        object: ObjectName,
    },
    /// A local file could not be read or written. (The OS error is in the text, not also
    /// chained as a source, so that a printed chain says it once.)
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// An object's source is neither a regular file nor a stream (a pipe, a FIFO, standard
    /// input): nothing was saved.
    #[error("{}: is {what}, not a regular file or a stream (a pipe, a FIFO, standard input); nothing was saved", path.display())]
    UnsupportedSource {
        /// The path given.
        path: PathBuf,
        /// What it is ("a directory", "a socket", ...).
        what: &'static str,
    },
    /// A regular file changed while it was read (its length or modification time is not what
    /// it was when opened): its bytes may not be what any one moment of the file held, so
    /// the part was not committed.
    #[error("{} changed while it was read ({detail}); nothing was committed", path.display())]
    SourceChanged {
        /// The file.
        path: PathBuf,
        /// Lengths at open, read and now, or what else changed.
        detail: String,
    },
    /// A restored object would replace an existing file and overwriting was not asked for:
    /// nothing was written.
    #[error("{} already exists; nothing was restored", path.display())]
    FileExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The blocking client's runtime could not be started.
    #[error("cannot start the client's runtime: {0}")]
    Runtime(std::io::Error),
    /// A background task ended abnormally.
    #[error("background task failed: {0}")]
    Task(String),
    /// A node refused the request for this identity: its certificate does not reach the
    /// job at the access needed, or is a node's, expired or revoked. Nothing was changed.
    #[error("permission denied by node {node}: {message}")]
    PermissionDenied {
        /// The node that refused.
        node: NodeId,
        /// Its reason, naming the job, the access needed and the identity.
        message: String,
    },
    /// A priority save could not commit before its deadline. Nothing was committed (every
    /// manifest copy it stored, or may have, was rolled back): the checkpoint before it is
    /// still the latest. The shards it stored are orphans that `gc` removes after its grace.
    #[error("{job} step {step} rank {rank}: the priority save could not commit within its {budget_ms} ms ({reason}); {stored} object bytes were stored, nothing was committed: the previous checkpoint is still the latest")]
    DeadlineExceeded {
        /// The job.
        job: JobName,
        /// The step.
        step: Step,
        /// The rank.
        rank: Rank,
        /// The time the save was given, from its start to its deadline.
        budget_ms: u64,
        /// Object bytes stored (every shard of their stripes acknowledged) before it stopped.
        stored: u64,
        /// Why it stopped.
        reason: String,
    },
    /// A node refused a write that would take the job past its byte quota there; nothing
    /// committed was touched.
    #[error("job {job}: node {node} refused the write: its quota there is {limit} bytes and {used} are used")]
    QuotaExceeded {
        /// The job.
        job: JobName,
        /// The node that refused.
        node: NodeId,
        /// Bytes the job's quota rule holds on that node.
        used: u64,
        /// The rule's limit on that node.
        limit: u64,
    },
}

impl From<crate::transport::TransportError> for ClientError {
    /// A refusal for the caller's identity is its own variant; every other transport
    /// failure stays a transport error.
    fn from(e: crate::transport::TransportError) -> Self {
        use crate::transport::TransportError;
        use rackpoint_proto::ErrorCode;
        match e {
            TransportError::Remote { node, code: ErrorCode::PermissionDenied, message } => {
                ClientError::PermissionDenied { node, message }
            }
            e => ClientError::Transport(e),
        }
    }
}

/// A list of failed shards that prints as one line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailedShardList(pub Vec<FailedShard>);

impl FailedShardList {
    /// The nodes of the shards that failed without being known lost (down, or another
    /// error), sorted: the nodes to bring back.
    pub fn unanswered_nodes(&self) -> NodeList {
        let mut nodes: Vec<NodeId> =
            self.0.iter().filter(|f| !f.why.is_loss()).map(|f| f.node).collect();
        nodes.sort();
        nodes.dedup();
        NodeList(nodes)
    }
}

impl std::fmt::Display for FailedShardList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&list(&self.0))
    }
}

impl From<tokio::task::JoinError> for ClientError {
    fn from(e: tokio::task::JoinError) -> Self {
        ClientError::Task(e.to_string())
    }
}

/// `Result` with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
