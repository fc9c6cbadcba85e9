//! Wire messages and their framing.
//!
//! One request per bidirectional QUIC stream, one response on the same stream. A frame is
//!
//! ```text
//! [header_len: u32 BE][payload_len: u32 BE][header][payload]
//! header, versions 1 and 2:  [version u8][postcard message]
//! header, version 3 on:      [version u8][request id u64 BE][postcard message]
//! ```
//!
//! The header is small and bounded (`MAX_HEADER_BYTES`); bulk bytes (a shard, a manifest) are
//! the raw payload after it, never inside it. Each message kind says which payload lengths it
//! allows, so a receiver knows every bound before it allocates.
//!
//! Versions: a build speaks `MIN_WIRE_VERSION..=WIRE_VERSION` ([`Versions`]). A version only
//! adds message kinds at the end of the tag list, or fields at the end of a message; encoding
//! at an older version writes exactly what that version's build wrote (a kind the version
//! does not have is [`WireError::NotInVersion`], never a misparse), and decoding at it reads
//! only its tags. A node answers in the request's version; a request of a version it does not
//! speak gets `BadVersion` in the nearest version it does, so the client reads the reply's
//! header version and falls back to it (see [`Versions::reply_version`]). Version 1 is the
//! one release before deletion marks: tags 0..=13 both ways and `Manifests` without
//! `deleting`; version 2 added `MarkDeleting` (14), `ClearDeleting` (15), `ListJobs` (16),
//! `DeletionMark` (14), `Jobs` (15) and `Manifests.deleting`; version 3 put the request id
//! ([`RequestId`]) in the header, between the version byte and the message: the client makes
//! one per request, the node answers with the same id, and both log it; 0 stands for "no
//! id", and a version 1 or 2 frame has none (encoding at those versions leaves it out).
//! Version 3 also added the signed cluster map: `GetClusterMap` (17), `PutClusterMap` (18),
//! `ClusterMap` (16), `ClusterMapStored` (17), `Hello.map_epoch`, the error codes `StaleMap`
//! and `UnsignedMap` (only ever the answer to a version 3 request), and three `Stats`
//! counters at the end.

use std::num::NonZeroU64;
use std::ops::RangeInclusive;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ids::{Digest, JobName, NodeId, Rank, Step};
use crate::key::{ManifestKey, ShardKey};
use crate::limits::{
    MAX_CLUSTER_MAP_BYTES, MAX_ERROR_MESSAGE_BYTES, MAX_HEADER_BYTES, MAX_MANIFEST_BYTES,
    MAX_PAYLOAD_BYTES, MAX_SHARD_BYTES, MIN_WIRE_VERSION, WIRE_VERSION,
};

/// Bytes of the fixed frame prefix.
pub const PREFIX_BYTES: usize = 8;

/// The wire version that put the request id in every header.
pub const REQUEST_ID_SINCE: u8 = 3;

/// Bytes of the request id in a header of wire version `REQUEST_ID_SINCE` on.
pub const REQUEST_ID_BYTES: usize = 8;

/// A request's id: made by the client for each request (a retry of the same request may keep
/// it), carried in the header of the request and of its reply from wire version 3 on, and
/// logged on both sides, so a client's failure can be found in the node's log. Never 0 (0 on
/// the wire means "no id"). Shown as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(NonZeroU64);

impl RequestId {
    /// The id `raw`; `None` for 0, which stands for "no id".
    pub fn new(raw: u64) -> Option<Self> {
        NonZeroU64::new(raw).map(Self)
    }

    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0.get()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What a header says besides its message: its wire version and, from version 3 on, the
/// request id (`None`: an older version, or id 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderMeta {
    /// The header's wire version.
    pub version: u8,
    /// The request id it carries.
    pub request_id: Option<RequestId>,
}

/// Bytes a header of wire version `version` has before its message: the version byte, and
/// the request id from version 3 on.
pub fn header_fields_bytes(version: u8) -> usize {
    if version >= REQUEST_ID_SINCE {
        1 + REQUEST_ID_BYTES
    } else {
        1
    }
}

/// The request id a header carries, read before (and whether or not) its message decodes, so
/// that a refusal of a malformed request can still name it.
pub fn header_request_id(header: &[u8]) -> Option<RequestId> {
    let version = header_version(header)?;
    if version < REQUEST_ID_SINCE {
        return None;
    }
    let raw: [u8; REQUEST_ID_BYTES] = header.get(1..1 + REQUEST_ID_BYTES)?.try_into().ok()?;
    RequestId::new(u64::from_be_bytes(raw))
}

/// What went wrong reading or writing a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The header is longer than `MAX_HEADER_BYTES`.
    #[error("header of {len} bytes is over the limit of {max}")]
    HeaderTooLarge {
        /// Declared header length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The payload is longer than the message allows.
    #[error("{kind} payload of {len} bytes is outside the allowed {min}..={max}")]
    BadPayloadLength {
        /// Message kind.
        kind: &'static str,
        /// Declared payload length.
        len: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// The header's version is not one this side speaks.
    #[error("wire version {got} is not supported (this side speaks versions {min}..={max})")]
    BadVersion {
        /// Version in the header.
        got: u8,
        /// Oldest version this side speaks.
        min: u8,
        /// Newest version this side speaks.
        max: u8,
    },
    /// The message kind does not exist in the wire version it is to be encoded in (the peer
    /// speaks an older version): nothing was sent.
    #[error("{kind} is not in wire version {version} (it came with version {since})")]
    NotInVersion {
        /// The message kind (or field) the older version lacks.
        kind: &'static str,
        /// The version it was to be encoded in.
        version: u8,
        /// The version that brought it.
        since: u8,
    },
    /// The message tag is not one we know.
    #[error("unknown message tag {tag}")]
    UnknownMessage {
        /// The tag byte.
        tag: u8,
    },
    /// The header did not decode (truncated, trailing bytes, a bad name, ...).
    #[error("malformed header: {0}")]
    Malformed(String),
}

impl WireError {
    /// The error code to send back to the peer for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::HeaderTooLarge { .. } | WireError::BadPayloadLength { .. } => {
                ErrorCode::TooLarge
            }
            WireError::BadVersion { .. } => ErrorCode::BadVersion,
            WireError::UnknownMessage { .. } | WireError::NotInVersion { .. } => {
                ErrorCode::UnknownMessage
            }
            WireError::Malformed(_) => ErrorCode::Malformed,
        }
    }
}

/// Typed error codes carried in [`Response::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The peer speaks another wire version.
    BadVersion,
    /// The message tag is unknown.
    UnknownMessage,
    /// The header did not decode, or a name in it is invalid.
    Malformed,
    /// A length is over its limit.
    TooLarge,
    /// The payload was shorter than declared.
    LengthMismatch,
    /// The payload's blake3 is not the hash the request declared.
    HashMismatch,
    /// No such shard or manifest.
    NotFound,
    /// The stored bytes no longer match their hash.
    Corrupt,
    /// The node's disk or capacity is full.
    DiskFull,
    /// The node is over a concurrency limit; retry later.
    Busy,
    /// The node is shutting down.
    ShuttingDown,
    /// Anything else; the message says what.
    Internal,
    /// The request contradicts what the node holds (a manifest of another revision or
    /// hash, a part that has a manifest here); nothing was changed.
    Conflict,
    /// The caller's certificate does not allow this request (another job, a lower access
    /// level, a node identity, expired or revoked); the message names the job, the access
    /// needed and the identity. Nothing was changed.
    PermissionDenied,
    /// The write would take the job past its byte quota on this node; nothing was stored.
    QuotaExceeded {
        /// Bytes the job's quota rule already holds on this node.
        used: u64,
        /// The rule's limit on this node.
        limit: u64,
    },
    /// A pushed cluster map's epoch is not newer than the one the node holds (an older map
    /// replayed, or a push that lost a race); nothing was changed. Wire version 3.
    StaleMap {
        /// The epoch the node holds.
        held: u64,
    },
    /// A pushed cluster map is not signed by the cluster CA (or its envelope is not one);
    /// nothing was changed. Wire version 3.
    UnsignedMap,
}

impl ErrorCode {
    /// The wire version that brought this code.
    pub fn since(&self) -> u8 {
        match self {
            ErrorCode::StaleMap { .. } | ErrorCode::UnsignedMap => 3,
            _ => 1,
        }
    }
}

/// A manifest as a node lists it, without its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The checkpoint's step.
    pub step: Step,
    /// The part's rank.
    pub rank: Rank,
    /// Parts in the checkpoint.
    pub world_size: u32,
    /// Manifest length in bytes.
    pub len: u32,
    /// blake3 of the manifest bytes (the manifest id).
    pub hash: Digest,
    /// The manifest's revision: 0 when first committed, raised by each repair that rewrote
    /// where its shards live. Readers prefer the highest revision.
    pub revision: u32,
    /// The id of the part's revision 0 (equal to `hash` at revision 0): the id the next
    /// manifest's `prev` names, so that a repair keeps the chain whole.
    pub base: Digest,
}

/// The shards one node holds of one part, as [`Request::ListParts`] reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartShards {
    /// The checkpoint's step.
    pub step: Step,
    /// The part's rank.
    pub rank: Rank,
    /// Shards of the part on this node.
    pub shards: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Milliseconds since the newest of them was written, by the node's clock (shards
    /// written before write times were recorded count as written at the Unix epoch).
    pub newest_age_ms: u64,
}

/// One job as a node holds it, as [`Request::ListJobs`] reports it: what this node stores,
/// not what the cluster does (every part's manifest lives on m + 1 nodes and its shards on
/// k + m; the client merges the nodes' answers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    /// The job.
    pub job: JobName,
    /// Manifests of the job on this node.
    pub manifests: u64,
    /// The newest step with a manifest on this node (`None`: shards only, no manifest).
    pub newest_step: Option<Step>,
    /// Shards of the job on this node.
    pub shards: u64,
    /// Their payload bytes.
    pub shard_bytes: u64,
}

/// Served and failed requests of one message kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RequestCounters {
    /// Message kind.
    pub kind: String,
    /// Requests answered with success.
    pub served: u64,
    /// Requests answered with an error.
    pub failed: u64,
}

/// A node's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeStats {
    /// The node's id.
    pub node_id: NodeId,
    /// Shards stored.
    pub shards: u64,
    /// Shard payload bytes stored.
    pub shard_bytes: u64,
    /// Manifests stored.
    pub manifests: u64,
    /// Corrupt shards found (by reads and by the scrubber) since start.
    pub corrupt_shards_found: u64,
    /// Shards the scrubber has re-hashed since start.
    pub scrubbed_shards: u64,
    /// Complete scrubber passes over every stored shard since start.
    pub scrub_passes: u64,
    /// Shards known corrupt now (found and not rewritten or deleted since), in key order,
    /// at most `MAX_STATS_CORRUPT_KEYS` of them.
    pub corrupt_shards: Vec<ShardKey>,
    /// Per message kind.
    pub requests: Vec<RequestCounters>,
    /// Free bytes of the file system holding the data folder, for an unprivileged writer
    /// (wire version 3 on; read as 0 from an older node).
    pub disk_free_bytes: u64,
    /// Request bytes held in the node's in-flight budget now (of `NODE_MAX_INFLIGHT_BYTES`;
    /// wire version 3 on).
    pub inflight_bytes: u64,
    /// The node started on an empty data folder that should have held shards (a replaced
    /// disk: its marker file was gone, see the node's `data_marker`); its shards must be
    /// rebuilt by `rackpoint repair` (wire version 3 on).
    pub started_empty: bool,
}

/// [`NodeStats`] as wire versions 1 and 2 write it: without the fields version 3 added.
#[derive(Serialize)]
struct NodeStatsV2<'a> {
    node_id: NodeId,
    shards: u64,
    shard_bytes: u64,
    manifests: u64,
    corrupt_shards_found: u64,
    scrubbed_shards: u64,
    scrub_passes: u64,
    corrupt_shards: &'a [ShardKey],
    requests: &'a [RequestCounters],
}

/// [`NodeStats`] as wire versions 1 and 2 write it, read back.
#[derive(Deserialize)]
struct NodeStatsV2Read {
    node_id: NodeId,
    shards: u64,
    shard_bytes: u64,
    manifests: u64,
    corrupt_shards_found: u64,
    scrubbed_shards: u64,
    scrub_passes: u64,
    corrupt_shards: Vec<ShardKey>,
    requests: Vec<RequestCounters>,
}

/// The version 3 fields of a [`NodeStats`] of an older node: zero and false.
impl From<NodeStatsV2Read> for NodeStats {
    fn from(s: NodeStatsV2Read) -> Self {
        NodeStats {
            node_id: s.node_id,
            shards: s.shards,
            shard_bytes: s.shard_bytes,
            manifests: s.manifests,
            corrupt_shards_found: s.corrupt_shards_found,
            scrubbed_shards: s.scrubbed_shards,
            scrub_passes: s.scrub_passes,
            corrupt_shards: s.corrupt_shards,
            requests: s.requests,
            disk_free_bytes: 0,
            inflight_bytes: 0,
            started_empty: false,
        }
    }
}

/// Tag of [`Response::Stats`], whose version 1 and 2 form lacks the version 3 fields.
const STATS_TAG: u8 = 7;

/// The wire version that added the fields at the end of [`NodeStats`].
const STATS_FIELDS_SINCE: u8 = 3;

/// A request from a client to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Who are you? Answered by [`Response::Hello`].
    Hello,
    /// Store a shard; payload: the shard bytes. Answered once the shard is durable.
    PutShard {
        /// Where it goes.
        key: ShardKey,
        /// blake3 of the payload; the node refuses a mismatch.
        hash: Digest,
    },
    /// Read a shard. Answered by [`Response::Shard`].
    GetShard {
        /// Which shard.
        key: ShardKey,
    },
    /// Delete every shard and manifest of a checkpoint.
    DeleteCheckpoint {
        /// The job.
        job: JobName,
        /// The checkpoint's step.
        step: Step,
    },
    /// Store a manifest; payload: the manifest bytes.
    PutManifest {
        /// Which part.
        key: ManifestKey,
        /// Parts in the checkpoint.
        world_size: u32,
        /// blake3 of the payload.
        hash: Digest,
    },
    /// Read a manifest. Answered by [`Response::Manifest`].
    GetManifest {
        /// Which part.
        key: ManifestKey,
    },
    /// List a job's manifests in (step, rank) order, starting after `after`.
    ListManifests {
        /// The job.
        job: JobName,
        /// Resume point of a previous page.
        after: Option<(Step, Rank)>,
        /// Most entries wanted (capped at `MAX_LIST_ENTRIES`).
        limit: u32,
    },
    /// The node's counters. Answered by [`Response::Stats`].
    Stats,
    /// Re-hash a shard where it lies, without sending it. Answered by
    /// [`Response::ShardVerified`], or `NotFound` / `Corrupt`.
    VerifyShard {
        /// Which shard.
        key: ShardKey,
    },
    /// Delete one part's manifest; deleting one that is not there succeeds
    /// ([`Response::ManifestDeleted`] says whether it was).
    DeleteManifest {
        /// Which part.
        key: ManifestKey,
        /// Delete only the manifest with this id; another one stays and the reply is
        /// `Conflict`.
        hash: Option<Digest>,
    },
    /// Store a rewritten manifest of a part (after a repair); payload: the manifest bytes.
    /// Stored when the node holds no manifest of the part or one of a lower revision;
    /// storing the same bytes again succeeds; anything else is `Conflict`. Answered by
    /// [`Response::ManifestStored`].
    ReplaceManifest {
        /// Which part.
        key: ManifestKey,
        /// Parts in the checkpoint.
        world_size: u32,
        /// blake3 of the payload.
        hash: Digest,
        /// The new revision, above every earlier one of the part.
        revision: u32,
        /// The id of the part's revision 0 (see [`ManifestEntry::base`]).
        base: Digest,
    },
    /// Summaries of the parts of a job that have shards on this node, in (step, rank)
    /// order, starting after `after`. Answered by [`Response::Parts`].
    ListParts {
        /// The job.
        job: JobName,
        /// Resume point of a previous page.
        after: Option<(Step, Rank)>,
        /// Most entries wanted (capped at `MAX_LIST_ENTRIES`).
        limit: u32,
    },
    /// Delete the shards of a part that has no manifest, keeping any written less than
    /// `min_age_ms` ago by the node's clock (a save may still be writing them). A node that
    /// holds a manifest of the part deletes nothing and answers `Conflict`. Answered by
    /// [`Response::OrphansDeleted`].
    DeleteOrphanShards {
        /// The part.
        key: ManifestKey,
        /// Youngest shard age that may be deleted.
        min_age_ms: u64,
    },
    /// Delete one shard, only if its stored bytes hash to `hash` (a repair removing the copy
    /// it moved elsewhere; another version stays and the reply is `Conflict`). Deleting a
    /// shard that is not there succeeds. Answered by [`Response::ShardDeleted`].
    DeleteShard {
        /// Which shard.
        key: ShardKey,
        /// The blake3 the stored shard must have.
        hash: Digest,
    },
    /// Store a durable deletion mark for checkpoint `(job, step)`: from now on every
    /// `ListManifests` page names the step as being deleted, and no manifest of it is
    /// stored. The mark outlives `DeleteCheckpoint` (and restarts) until `ClearDeleting`.
    /// Marking a step already marked succeeds. A node holds at most
    /// `MAX_DELETION_MARKS_PER_JOB` marks per job (then `TooLarge`). Answered by
    /// [`Response::DeletionMark`].
    MarkDeleting {
        /// The job.
        job: JobName,
        /// The checkpoint's step.
        step: Step,
    },
    /// Remove the deletion mark of checkpoint `(job, step)` (once every node confirmed its
    /// delete); removing one that is not there succeeds. Answered by
    /// [`Response::DeletionMark`].
    ClearDeleting {
        /// The job.
        job: JobName,
        /// The checkpoint's step.
        step: Step,
    },
    /// The jobs with manifests or shards on this node that the caller's grant reaches (an
    /// admin's: every job), in name order, starting after `after`. Answered by
    /// [`Response::Jobs`].
    ListJobs {
        /// Resume point of a previous page (its last job).
        after: Option<JobName>,
        /// Most jobs wanted (capped at `MAX_LIST_JOBS`).
        limit: u32,
    },
    /// The newest signed cluster map the node holds (`NotFound` when it holds none).
    /// Answered by [`Response::ClusterMap`]. Wire version 3.
    GetClusterMap,
    /// Store a signed cluster map; payload: its bytes (`signed_map`). Stored only if it
    /// verifies against the node's CA and `epoch` (which must be the signed one) is newer
    /// than the node's map (`StaleMap`; the same map again succeeds). Answered by
    /// [`Response::ClusterMapStored`]. Wire version 3.
    PutClusterMap {
        /// The map's epoch.
        epoch: u64,
    },
}

/// A node's reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The node's identity.
    Hello {
        /// Its id.
        node_id: NodeId,
        /// Its failure domain.
        rack: String,
        /// Configured capacity, 0 if unbounded.
        capacity_bytes: u64,
        /// Shard bytes stored.
        used_bytes: u64,
        /// The epoch of the signed cluster map the node holds (0: none); wire version 3.
        map_epoch: u64,
    },
    /// The shard is durable.
    ShardStored,
    /// The shard; payload: its bytes, which matched `hash` when read.
    Shard {
        /// The stored blake3.
        hash: Digest,
    },
    /// The checkpoint is gone from this node.
    CheckpointDeleted {
        /// Shards removed.
        shards: u64,
        /// Manifests removed.
        manifests: u64,
    },
    /// The manifest is durable.
    ManifestStored,
    /// The manifest; payload: its bytes.
    Manifest {
        /// Parts in the checkpoint.
        world_size: u32,
        /// blake3 of the bytes.
        hash: Digest,
    },
    /// A page of manifests.
    Manifests {
        /// The entries, in (step, rank) order.
        entries: Vec<ManifestEntry>,
        /// Whether more entries follow the last one.
        more: bool,
        /// Every step of the job this node holds a deletion mark for (at most
        /// `MAX_DELETION_MARKS_PER_JOB`, in order), on every page.
        deleting: Vec<Step>,
    },
    /// The node's counters (boxed: by far the largest reply).
    Stats(Box<NodeStats>),
    /// The request failed.
    Error {
        /// What kind of failure.
        code: ErrorCode,
        /// A human-readable reason.
        message: String,
    },
    /// The shard is intact: its bytes hash to `hash` and are `len` long.
    ShardVerified {
        /// The blake3 of the stored bytes, re-computed now.
        hash: Digest,
        /// Their length.
        len: u32,
    },
    /// The manifest is gone from this node.
    ManifestDeleted {
        /// Whether there was one to delete.
        existed: bool,
    },
    /// A page of part summaries.
    Parts {
        /// The entries, in (step, rank) order.
        entries: Vec<PartShards>,
        /// Whether more entries follow the last one.
        more: bool,
    },
    /// Orphan shards of a part were deleted.
    OrphansDeleted {
        /// Shards removed.
        shards: u64,
        /// Their payload bytes.
        bytes: u64,
        /// Shards kept because they were younger than the requested age.
        kept_young: u64,
    },
    /// The shard is gone from this node.
    ShardDeleted {
        /// Whether there was one to delete.
        existed: bool,
    },
    /// The deletion mark is stored (`MarkDeleting`) or gone (`ClearDeleting`).
    DeletionMark {
        /// Whether the node held the mark before the request.
        existed: bool,
    },
    /// A page of jobs.
    Jobs {
        /// The jobs, in name order.
        jobs: Vec<JobSummary>,
        /// Whether more jobs follow the last one.
        more: bool,
    },
    /// The node's signed cluster map; payload: its bytes. Wire version 3.
    ClusterMap {
        /// Its epoch (the client still verifies the signed one).
        epoch: u64,
    },
    /// The pushed cluster map is durable. Wire version 3.
    ClusterMapStored {
        /// Whether the node held this very map already.
        existed: bool,
    },
}

impl Response {
    /// An error reply; the message is cut to `MAX_ERROR_MESSAGE_BYTES`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut cut = MAX_ERROR_MESSAGE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        Response::Error { code, message }
    }
}

/// What the frame codec needs to know about a message type.
pub trait Message: Serialize + DeserializeOwned {
    /// How many variants the enum has (tags are `0..VARIANTS`).
    const VARIANTS: u8;
    /// The message kind's name, for errors and logs.
    fn kind(&self) -> &'static str;
    /// Payload lengths this message allows.
    fn payload_bounds(&self) -> RangeInclusive<u32>;
    /// How many variants wire version `version` has (its tags are `0..variants_in`).
    fn variants_in(version: u8) -> u8;
    /// The wire version that brought this message's kind.
    fn since(&self) -> u8;
    /// Appends the message (tag and fields) as wire version `version` writes it, to `out`;
    /// the version has the kind (`since() <= version`).
    fn encode_body(&self, _version: u8, out: Vec<u8>) -> Result<Vec<u8>, WireError> {
        postcard::to_extend(self, out).map_err(|e| WireError::Malformed(e.to_string()))
    }
    /// Reads a message (tag and fields) as wire version `version` writes it, and what follows
    /// it; the tag is one of the version's.
    fn decode_body(_version: u8, body: &[u8]) -> Result<(Self, &[u8]), WireError> {
        postcard::take_from_bytes::<Self>(body).map_err(|e| WireError::Malformed(e.to_string()))
    }
}

/// The wire versions one side speaks: `MIN_WIRE_VERSION..=max`, where `max` is
/// `WIRE_VERSION` unless capped (a node's `wire_version_max`, a client's
/// `RACKPOINT_WIRE_VERSION_MAX`), so that this build speaks exactly as an older one did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    max: u8,
}

impl Default for Versions {
    fn default() -> Self {
        Self::ALL
    }
}

impl Versions {
    /// Every version this build speaks.
    pub const ALL: Versions = Versions { max: WIRE_VERSION };

    /// `MIN_WIRE_VERSION..=max`; a `max` outside the versions this build speaks is
    /// `BadVersion`.
    pub fn capped(max: u8) -> Result<Self, WireError> {
        if (MIN_WIRE_VERSION..=WIRE_VERSION).contains(&max) {
            Ok(Self { max })
        } else {
            Err(WireError::BadVersion { got: max, min: MIN_WIRE_VERSION, max: WIRE_VERSION })
        }
    }

    /// The oldest version spoken.
    pub fn min(self) -> u8 {
        MIN_WIRE_VERSION
    }

    /// The newest version spoken.
    pub fn max(self) -> u8 {
        self.max
    }

    /// Whether `version` is spoken.
    pub fn contains(self, version: u8) -> bool {
        (MIN_WIRE_VERSION..=self.max).contains(&version)
    }

    /// The version to answer a request whose header says `requested`: that version when it
    /// is spoken; else the newest (a newer peer reads the reply's header version and falls
    /// back to it) or, for an older request, the oldest (the reply's `BadVersion` message
    /// names the range).
    pub fn reply_version(self, requested: u8) -> u8 {
        requested.clamp(MIN_WIRE_VERSION, self.max)
    }

    fn refuse(self, got: u8) -> WireError {
        WireError::BadVersion { got, min: MIN_WIRE_VERSION, max: self.max }
    }
}

/// The wire version a frame's header says it is in (its first byte), if it has one.
pub fn header_version(header: &[u8]) -> Option<u8> {
    header.first().copied()
}

impl Request {
    /// Every request kind's name, in tag order: the one list of kinds (`Message::kind` reads
    /// it, the node's counters report it). Its length is the enum's variant count.
    pub const KINDS: [&'static str; Request::VARIANTS as usize] = [
        "Hello",
        "PutShard",
        "GetShard",
        "DeleteCheckpoint",
        "PutManifest",
        "GetManifest",
        "ListManifests",
        "Stats",
        "VerifyShard",
        "DeleteManifest",
        "ReplaceManifest",
        "ListParts",
        "DeleteOrphanShards",
        "DeleteShard",
        "MarkDeleting",
        "ClearDeleting",
        "ListJobs",
        "GetClusterMap",
        "PutClusterMap",
    ];

    /// The variant's tag (its index in [`Request::KINDS`] and on the wire).
    fn tag(&self) -> usize {
        match self {
            Request::Hello => 0,
            Request::PutShard { .. } => 1,
            Request::GetShard { .. } => 2,
            Request::DeleteCheckpoint { .. } => 3,
            Request::PutManifest { .. } => 4,
            Request::GetManifest { .. } => 5,
            Request::ListManifests { .. } => 6,
            Request::Stats => 7,
            Request::VerifyShard { .. } => 8,
            Request::DeleteManifest { .. } => 9,
            Request::ReplaceManifest { .. } => 10,
            Request::ListParts { .. } => 11,
            Request::DeleteOrphanShards { .. } => 12,
            Request::DeleteShard { .. } => 13,
            Request::MarkDeleting { .. } => 14,
            Request::ClearDeleting { .. } => 15,
            Request::ListJobs { .. } => 16,
            Request::GetClusterMap => 17,
            Request::PutClusterMap { .. } => 18,
        }
    }
}

impl Message for Request {
    const VARIANTS: u8 = 19;

    fn kind(&self) -> &'static str {
        Self::KINDS[self.tag()]
    }

    fn variants_in(version: u8) -> u8 {
        match version {
            0 | 1 => 14,
            2 => 17,
            _ => Self::VARIANTS,
        }
    }

    fn since(&self) -> u8 {
        match self.tag() {
            0..14 => 1,
            14..17 => 2,
            _ => 3,
        }
    }

    fn payload_bounds(&self) -> RangeInclusive<u32> {
        match self {
            Request::PutShard { .. } => 1..=MAX_SHARD_BYTES,
            Request::PutManifest { .. } | Request::ReplaceManifest { .. } => 1..=MAX_MANIFEST_BYTES,
            Request::PutClusterMap { .. } => 1..=MAX_CLUSTER_MAP_BYTES,
            _ => 0..=0,
        }
    }
}

/// Tag of [`Response::Manifests`], whose version 1 form has no `deleting`.
const MANIFESTS_TAG: u8 = 6;
/// Tag of [`Response::Hello`], whose version 1 and 2 form has no `map_epoch`.
const HELLO_TAG: u8 = 0;

/// [`Response::Hello`] as wire versions 1 and 2 write it.
#[derive(Serialize)]
struct HelloV2<'a> {
    node_id: NodeId,
    rack: &'a str,
    capacity_bytes: u64,
    used_bytes: u64,
}

/// [`Response::Hello`] as wire versions 1 and 2 write it, read back.
#[derive(Deserialize)]
struct HelloV2Read {
    node_id: NodeId,
    rack: String,
    capacity_bytes: u64,
    used_bytes: u64,
}

/// [`Response::Manifests`] as wire version 1 writes it.
#[derive(Serialize)]
struct ManifestsV1<'a> {
    entries: &'a [ManifestEntry],
    more: bool,
}

/// [`Response::Manifests`] as wire version 1 writes it, read back.
#[derive(Deserialize)]
struct ManifestsV1Read {
    entries: Vec<ManifestEntry>,
    more: bool,
}

impl Message for Response {
    const VARIANTS: u8 = 18;

    fn variants_in(version: u8) -> u8 {
        match version {
            0 | 1 => 14,
            2 => 16,
            _ => Self::VARIANTS,
        }
    }

    fn since(&self) -> u8 {
        match self {
            Response::DeletionMark { .. } | Response::Jobs { .. } => 2,
            Response::ClusterMap { .. } | Response::ClusterMapStored { .. } => 3,
            Response::Error { code, .. } => code.since(),
            _ => 1,
        }
    }

    fn encode_body(&self, version: u8, mut out: Vec<u8>) -> Result<Vec<u8>, WireError> {
        let malformed = |e: postcard::Error| WireError::Malformed(e.to_string());
        match self {
            Response::Manifests { entries, more, deleting } if version <= 1 => {
                // Version 1 has no deletion marks: a node leaves marked steps out of what it
                // lists to a version 1 client rather than have them dropped here unseen.
                if !deleting.is_empty() {
                    let kind = "Manifests.deleting";
                    return Err(WireError::NotInVersion { kind, version, since: 2 });
                }
                out.push(MANIFESTS_TAG);
                postcard::to_extend(&ManifestsV1 { entries, more: *more }, out).map_err(malformed)
            }
            // An older client knows no version 3 counters: they are left out, not refused.
            Response::Stats(stats) if version < STATS_FIELDS_SINCE => {
                out.push(STATS_TAG);
                let old = NodeStatsV2 {
                    node_id: stats.node_id,
                    shards: stats.shards,
                    shard_bytes: stats.shard_bytes,
                    manifests: stats.manifests,
                    corrupt_shards_found: stats.corrupt_shards_found,
                    scrubbed_shards: stats.scrubbed_shards,
                    scrub_passes: stats.scrub_passes,
                    corrupt_shards: &stats.corrupt_shards,
                    requests: &stats.requests,
                };
                postcard::to_extend(&old, out).map_err(malformed)
            }
            Response::Hello { node_id, rack, capacity_bytes, used_bytes, map_epoch }
                if version <= 2 =>
            {
                // The node answers an older client's Hello with no map (epoch 0) rather
                // than have the epoch dropped here unseen.
                if *map_epoch != 0 {
                    let kind = "Hello.map_epoch";
                    return Err(WireError::NotInVersion { kind, version, since: 3 });
                }
                out.push(HELLO_TAG);
                let v2 = HelloV2 {
                    node_id: *node_id,
                    rack,
                    capacity_bytes: *capacity_bytes,
                    used_bytes: *used_bytes,
                };
                postcard::to_extend(&v2, out).map_err(malformed)
            }
            _ => postcard::to_extend(self, out).map_err(malformed),
        }
    }

    fn decode_body(version: u8, body: &[u8]) -> Result<(Self, &[u8]), WireError> {
        let malformed = |e: postcard::Error| WireError::Malformed(e.to_string());
        match body.split_first() {
            Some((&MANIFESTS_TAG, fields)) if version <= 1 => {
                let (v1, rest) =
                    postcard::take_from_bytes::<ManifestsV1Read>(fields).map_err(malformed)?;
                let page = Response::Manifests {
                    entries: v1.entries,
                    more: v1.more,
                    deleting: Vec::new(),
                };
                Ok((page, rest))
            }
            Some((&STATS_TAG, fields)) if version < STATS_FIELDS_SINCE => {
                let (old, rest) =
                    postcard::take_from_bytes::<NodeStatsV2Read>(fields).map_err(malformed)?;
                Ok((Response::Stats(Box::new(old.into())), rest))
            }
            Some((&HELLO_TAG, fields)) if version <= 2 => {
                let (v2, rest) =
                    postcard::take_from_bytes::<HelloV2Read>(fields).map_err(malformed)?;
                let hello = Response::Hello {
                    node_id: v2.node_id,
                    rack: v2.rack,
                    capacity_bytes: v2.capacity_bytes,
                    used_bytes: v2.used_bytes,
                    map_epoch: 0,
                };
                Ok((hello, rest))
            }
            _ => postcard::take_from_bytes::<Self>(body).map_err(malformed),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "Hello",
            Response::ShardStored => "ShardStored",
            Response::Shard { .. } => "Shard",
            Response::CheckpointDeleted { .. } => "CheckpointDeleted",
            Response::ManifestStored => "ManifestStored",
            Response::Manifest { .. } => "Manifest",
            Response::Manifests { .. } => "Manifests",
            Response::Stats(_) => "Stats",
            Response::Error { .. } => "Error",
            Response::ShardVerified { .. } => "ShardVerified",
            Response::ManifestDeleted { .. } => "ManifestDeleted",
            Response::Parts { .. } => "Parts",
            Response::OrphansDeleted { .. } => "OrphansDeleted",
            Response::ShardDeleted { .. } => "ShardDeleted",
            Response::DeletionMark { .. } => "DeletionMark",
            Response::Jobs { .. } => "Jobs",
            Response::ClusterMap { .. } => "ClusterMap",
            Response::ClusterMapStored { .. } => "ClusterMapStored",
        }
    }

    fn payload_bounds(&self) -> RangeInclusive<u32> {
        match self {
            Response::Shard { .. } => 1..=MAX_SHARD_BYTES,
            Response::Manifest { .. } => 1..=MAX_MANIFEST_BYTES,
            Response::ClusterMap { .. } => 1..=MAX_CLUSTER_MAP_BYTES,
            _ => 0..=0,
        }
    }
}

/// The fixed 8-byte prefix of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramePrefix {
    /// Bytes of the header that follows.
    pub header_len: u32,
    /// Bytes of raw payload after the header.
    pub payload_len: u32,
}

impl FramePrefix {
    /// Parses the prefix and checks both lengths against the global limits.
    pub fn parse(b: [u8; PREFIX_BYTES]) -> Result<Self, WireError> {
        let header_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let payload_len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        if header_len == 0 || header_len > MAX_HEADER_BYTES {
            return Err(WireError::HeaderTooLarge { len: header_len, max: MAX_HEADER_BYTES });
        }
        if payload_len > MAX_PAYLOAD_BYTES {
            return Err(WireError::BadPayloadLength {
                kind: "any",
                len: payload_len,
                min: 0,
                max: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(Self { header_len, payload_len })
    }
}

/// Encodes a frame's prefix and header for `msg` followed by `payload_len` payload bytes, in
/// the newest wire version.
pub fn encode_frame<M: Message>(msg: &M, payload_len: u32) -> Result<Vec<u8>, WireError> {
    encode_frame_at(msg, payload_len, WIRE_VERSION)
}

/// Encodes a frame's prefix and header for `msg` in wire version `version`, byte for byte as
/// that version's build wrote it, without a request id. A kind (or a field's content) the
/// version does not have is `NotInVersion`; a version this build does not speak is
/// `BadVersion`.
pub fn encode_frame_at<M: Message>(
    msg: &M,
    payload_len: u32,
    version: u8,
) -> Result<Vec<u8>, WireError> {
    encode_frame_with_id(msg, payload_len, version, None)
}

/// [`encode_frame_at`] with request id `request_id` in the header when `version` has one
/// (from version 3 on; an older version's header is written as that version's build wrote
/// it, without the id).
pub fn encode_frame_with_id<M: Message>(
    msg: &M,
    payload_len: u32,
    version: u8,
    request_id: Option<RequestId>,
) -> Result<Vec<u8>, WireError> {
    if !Versions::ALL.contains(version) {
        return Err(Versions::ALL.refuse(version));
    }
    if msg.since() > version {
        return Err(WireError::NotInVersion { kind: msg.kind(), version, since: msg.since() });
    }
    check_payload(msg, payload_len)?;
    let mut out = vec![0u8; PREFIX_BYTES];
    out.push(version);
    if version >= REQUEST_ID_SINCE {
        out.extend_from_slice(&request_id.map_or(0, RequestId::get).to_be_bytes());
    }
    let mut out = msg.encode_body(version, out)?;
    let header_len = (out.len() - PREFIX_BYTES) as u32;
    if header_len > MAX_HEADER_BYTES {
        return Err(WireError::HeaderTooLarge { len: header_len, max: MAX_HEADER_BYTES });
    }
    out[..4].copy_from_slice(&header_len.to_be_bytes());
    out[4..8].copy_from_slice(&payload_len.to_be_bytes());
    Ok(out)
}

/// Decodes a header (the bytes after the prefix) in any wire version this build speaks, and
/// checks the declared payload length against what the message allows.
pub fn decode_header<M: Message>(header: &[u8], payload_len: u32) -> Result<M, WireError> {
    decode_header_in(header, payload_len, Versions::ALL).map(|(msg, _)| msg)
}

/// Decodes a header in one of `versions` (a version outside them is `BadVersion`, a tag the
/// header's version does not have is `UnknownMessage`), checks the declared payload length,
/// and says which version it was.
pub fn decode_header_in<M: Message>(
    header: &[u8],
    payload_len: u32,
    versions: Versions,
) -> Result<(M, u8), WireError> {
    decode_header_meta(header, payload_len, versions).map(|(msg, meta)| (msg, meta.version))
}

/// [`decode_header_in`], saying also which request id the header carries.
pub fn decode_header_meta<M: Message>(
    header: &[u8],
    payload_len: u32,
    versions: Versions,
) -> Result<(M, HeaderMeta), WireError> {
    let &version = header.first().ok_or_else(|| WireError::Malformed("empty header".into()))?;
    if !versions.contains(version) {
        return Err(versions.refuse(version));
    }
    let body = header
        .get(header_fields_bytes(version)..)
        .ok_or_else(|| WireError::Malformed("header shorter than its request id".into()))?;
    let meta = HeaderMeta { version, request_id: header_request_id(header) };
    match body.first() {
        Some(&tag) if tag >= M::variants_in(version) => {
            return Err(WireError::UnknownMessage { tag })
        }
        None => return Err(WireError::Malformed("no message".into())),
        _ => {}
    }
    let (msg, rest) = M::decode_body(version, body)?;
    if !rest.is_empty() {
        return Err(WireError::Malformed(format!("{} trailing bytes in header", rest.len())));
    }
    check_payload(&msg, payload_len)?;
    Ok((msg, meta))
}

fn check_payload<M: Message>(msg: &M, len: u32) -> Result<(), WireError> {
    let b = msg.payload_bounds();
    if b.contains(&len) {
        Ok(())
    } else {
        Err(WireError::BadPayloadLength { kind: msg.kind(), len, min: *b.start(), max: *b.end() })
    }
}

/// Parses a whole frame held in memory: prefix, header, and a payload slice of exactly the
/// declared length. Used by tests and fuzzing; the transports read frames incrementally.
pub fn decode_frame<M: Message>(frame: &[u8]) -> Result<(M, &[u8]), WireError> {
    let prefix: [u8; PREFIX_BYTES] = frame
        .get(..PREFIX_BYTES)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| WireError::Malformed("truncated prefix".into()))?;
    let p = FramePrefix::parse(prefix)?;
    let header_end = PREFIX_BYTES + p.header_len as usize;
    let header = frame
        .get(PREFIX_BYTES..header_end)
        .ok_or_else(|| WireError::Malformed("truncated header".into()))?;
    let msg = decode_header::<M>(header, p.payload_len)?;
    let payload = &frame[header_end..];
    if payload.len() != p.payload_len as usize {
        return Err(WireError::Malformed(format!(
            "payload is {} bytes, header declared {}",
            payload.len(),
            p.payload_len
        )));
    }
    Ok((msg, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ObjectName, ShardIndex, StripeIndex};
    use crate::limits::{
        MAX_CLUSTER_MAP_BYTES, MAX_DELETION_MARKS_PER_JOB, MAX_LIST_ENTRIES, MAX_LIST_JOBS,
        MAX_STATS_CORRUPT_KEYS,
    };
    use proptest::prelude::*;

    proptest! {
        /// A request's kind is the name at its wire tag in `Request::KINDS`.
        #[test]
        fn request_kinds_follow_the_wire_tags((req, _) in request()) {
            let bytes = postcard::to_allocvec(&req).expect("encodes");
            prop_assert_eq!(Request::KINDS[usize::from(bytes[0])], req.kind());
        }
    }

    fn job() -> impl Strategy<Value = JobName> {
        "[A-Za-z0-9._-]{1,128}".prop_map(|s| JobName::new(s).expect("valid"))
    }
    fn digest() -> impl Strategy<Value = Digest> {
        any::<[u8; 32]>().prop_map(Digest)
    }
    fn shard_key() -> impl Strategy<Value = ShardKey> {
        (job(), any::<u64>(), any::<u32>(), "[a-z._]{1,40}", any::<u32>(), any::<u8>())
            .prop_filter("not . or ..", |t| t.3 != "." && t.3 != "..")
            .prop_map(|(job, step, rank, o, stripe, index)| ShardKey {
                job,
                step: Step(step),
                rank: Rank(rank),
                object: ObjectName::new(o).expect("valid"),
                stripe: StripeIndex(stripe),
                index: ShardIndex(index),
            })
    }
    fn manifest_key() -> impl Strategy<Value = ManifestKey> {
        (job(), any::<u64>(), any::<u32>()).prop_map(|(job, s, r)| ManifestKey {
            job,
            step: Step(s),
            rank: Rank(r),
        })
    }
    fn request() -> impl Strategy<Value = (Request, u32)> {
        prop_oneof![
            Just((Request::Hello, 0)),
            (shard_key(), digest(), 1..=MAX_SHARD_BYTES)
                .prop_map(|(key, hash, n)| (Request::PutShard { key, hash }, n)),
            shard_key().prop_map(|key| (Request::GetShard { key }, 0)),
            (job(), any::<u64>())
                .prop_map(|(job, s)| (Request::DeleteCheckpoint { job, step: Step(s) }, 0)),
            (manifest_key(), any::<u32>(), digest(), 1..=MAX_MANIFEST_BYTES).prop_map(
                |(key, world_size, hash, n)| (Request::PutManifest { key, world_size, hash }, n)
            ),
            manifest_key().prop_map(|key| (Request::GetManifest { key }, 0)),
            (job(), proptest::option::of((any::<u64>(), any::<u32>())), any::<u32>()).prop_map(
                |(job, after, limit)| (
                    Request::ListManifests {
                        job,
                        after: after.map(|(s, r)| (Step(s), Rank(r))),
                        limit
                    },
                    0
                )
            ),
            Just((Request::Stats, 0)),
            shard_key().prop_map(|key| (Request::VerifyShard { key }, 0)),
            (manifest_key(), proptest::option::of(digest()))
                .prop_map(|(key, hash)| (Request::DeleteManifest { key, hash }, 0)),
            (shard_key(), digest()).prop_map(|(key, hash)| (Request::DeleteShard { key, hash }, 0)),
            (
                manifest_key(),
                any::<u32>(),
                digest(),
                any::<u32>(),
                digest(),
                1..=MAX_MANIFEST_BYTES
            )
                .prop_map(|(key, world_size, hash, revision, base, n)| (
                    Request::ReplaceManifest { key, world_size, hash, revision, base },
                    n
                )),
            (job(), proptest::option::of((any::<u64>(), any::<u32>())), any::<u32>()).prop_map(
                |(job, after, limit)| (
                    Request::ListParts {
                        job,
                        after: after.map(|(s, r)| (Step(s), Rank(r))),
                        limit
                    },
                    0
                )
            ),
            (manifest_key(), any::<u64>())
                .prop_map(|(key, min_age_ms)| (Request::DeleteOrphanShards { key, min_age_ms }, 0)),
            (job(), any::<u64>())
                .prop_map(|(job, s)| (Request::MarkDeleting { job, step: Step(s) }, 0)),
            (job(), any::<u64>())
                .prop_map(|(job, s)| (Request::ClearDeleting { job, step: Step(s) }, 0)),
            (proptest::option::of(job()), any::<u32>())
                .prop_map(|(after, limit)| (Request::ListJobs { after, limit }, 0)),
            Just((Request::GetClusterMap, 0)),
            (any::<u64>(), 1..=MAX_CLUSTER_MAP_BYTES)
                .prop_map(|(epoch, n)| (Request::PutClusterMap { epoch }, n)),
        ]
    }
    fn part() -> impl Strategy<Value = PartShards> {
        (any::<u64>(), any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(s, r, shards, bytes, newest_age_ms)| PartShards {
                step: Step(s),
                rank: Rank(r),
                shards,
                bytes,
                newest_age_ms,
            },
        )
    }
    fn job_summary() -> impl Strategy<Value = JobSummary> {
        (job(), any::<u64>(), proptest::option::of(any::<u64>()), any::<u64>(), any::<u64>())
            .prop_map(|(job, manifests, newest, shards, shard_bytes)| JobSummary {
                job,
                manifests,
                newest_step: newest.map(Step),
                shards,
                shard_bytes,
            })
    }
    fn entry() -> impl Strategy<Value = ManifestEntry> {
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>(), digest(), any::<u32>(), digest())
            .prop_map(|(s, r, world_size, len, hash, revision, base)| ManifestEntry {
                step: Step(s),
                rank: Rank(r),
                world_size,
                len,
                hash,
                revision,
                base,
            })
    }
    fn response() -> impl Strategy<Value = (Response, u32)> {
        prop_oneof![
            (
                any::<u32>(),
                "[a-z0-9-]{1,64}",
                any::<u64>(),
                any::<u64>(),
                prop_oneof![Just(0u64), any::<u64>()]
            )
                .prop_map(|(id, rack, capacity_bytes, used_bytes, map_epoch)| (
                    Response::Hello {
                        node_id: NodeId(id),
                        rack,
                        capacity_bytes,
                        used_bytes,
                        map_epoch
                    },
                    0
                )),
            Just((Response::ShardStored, 0)),
            (digest(), 1..=MAX_SHARD_BYTES).prop_map(|(hash, n)| (Response::Shard { hash }, n)),
            (any::<u64>(), any::<u64>()).prop_map(|(shards, manifests)| (
                Response::CheckpointDeleted { shards, manifests },
                0
            )),
            Just((Response::ManifestStored, 0)),
            (any::<u32>(), digest(), 1..=MAX_MANIFEST_BYTES)
                .prop_map(|(world_size, hash, n)| (Response::Manifest { world_size, hash }, n)),
            (
                proptest::collection::vec(entry(), 0..=MAX_LIST_ENTRIES as usize),
                any::<bool>(),
                proptest::collection::vec(
                    any::<u64>().prop_map(Step),
                    0..=MAX_DELETION_MARKS_PER_JOB
                )
            )
                .prop_map(|(entries, more, deleting)| (
                    Response::Manifests { entries, more, deleting },
                    0
                )),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec(shard_key(), 0..=MAX_STATS_CORRUPT_KEYS),
            )
                .prop_map(|(a, b, corrupt_shards)| (
                    Response::Stats(Box::new(NodeStats {
                        node_id: NodeId(7),
                        shards: a,
                        shard_bytes: b,
                        manifests: a / 2,
                        corrupt_shards_found: 1,
                        scrubbed_shards: 2,
                        scrub_passes: b / 3,
                        corrupt_shards,
                        requests: Request::KINDS
                            .iter()
                            .chain(["Invalid"].iter())
                            .map(|k| RequestCounters { kind: (*k).into(), served: a, failed: b })
                            .collect(),
                        // Version 3 fields: zero, so the frame reads back the same at every
                        // version (`stats_fields_of_version_3_...` sets them).
                        ..NodeStats::default()
                    })),
                    0
                )),
            ".{0,2000}".prop_map(|m| (Response::error(ErrorCode::HashMismatch, m), 0)),
            (digest(), any::<u32>())
                .prop_map(|(hash, len)| (Response::ShardVerified { hash, len }, 0)),
            any::<bool>().prop_map(|existed| (Response::ManifestDeleted { existed }, 0)),
            any::<bool>().prop_map(|existed| (Response::ShardDeleted { existed }, 0)),
            any::<bool>().prop_map(|existed| (Response::DeletionMark { existed }, 0)),
            (proptest::collection::vec(part(), 0..=MAX_LIST_ENTRIES as usize), any::<bool>())
                .prop_map(|(entries, more)| (Response::Parts { entries, more }, 0)),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(shards, bytes, kept_young)| (
                Response::OrphansDeleted { shards, bytes, kept_young },
                0
            )),
            (proptest::collection::vec(job_summary(), 0..=MAX_LIST_JOBS as usize), any::<bool>())
                .prop_map(|(jobs, more)| (Response::Jobs { jobs, more }, 0)),
            (any::<u64>(), 1..=MAX_CLUSTER_MAP_BYTES)
                .prop_map(|(epoch, n)| (Response::ClusterMap { epoch }, n)),
            any::<bool>().prop_map(|existed| (Response::ClusterMapStored { existed }, 0)),
            any::<u64>().prop_map(|held| (Response::error(ErrorCode::StaleMap { held }, "old"), 0)),
            Just((Response::error(ErrorCode::UnsignedMap, "unsigned"), 0)),
        ]
    }

    proptest! {
        #[test]
        fn every_request_round_trips((req, n) in request()) {
            let frame = encode_frame(&req, n).expect("encodes");
            prop_assert!(frame.len() - PREFIX_BYTES <= MAX_HEADER_BYTES as usize);
            let p = FramePrefix::parse(frame[..8].try_into().expect("8 bytes")).expect("prefix");
            prop_assert_eq!(p.payload_len, n);
            let back: Request = decode_header(&frame[PREFIX_BYTES..], n).expect("decodes");
            prop_assert_eq!(back, req);
        }

        #[test]
        fn every_response_round_trips((resp, n) in response()) {
            let frame = encode_frame(&resp, n).expect("encodes");
            let back: Response = decode_header(&frame[PREFIX_BYTES..], n).expect("decodes");
            prop_assert_eq!(back, resp);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame::<Request>(&b);
            let _ = decode_frame::<Response>(&b);
            let _ = decode_header::<Request>(&b, 0);
            let _ = decode_header::<Response>(&b, 100);
        }

        #[test]
        fn mutated_frames_never_panic((req, _) in request(), pos in any::<usize>(), byte in any::<u8>()) {
            let mut frame = encode_frame(&req, 0).or_else(|_| encode_frame(&req, 1)).expect("encodes");
            let i = pos % frame.len();
            frame[i] = byte;
            let _ = decode_frame::<Request>(&frame);
        }
    }

    proptest! {
        /// A kind an older version has is written at it exactly as at the newest but for the
        /// version byte, and reads back; a kind it lacks is `NotInVersion`, and its newest
        /// body read as the older version is an unknown tag, never a misparse.
        #[test]
        fn older_versions_write_the_kinds_they_have_and_refuse_the_others((req, n) in request()) {
            let newest = encode_frame_at(&req, n, WIRE_VERSION).expect("encodes");
            for version in MIN_WIRE_VERSION..WIRE_VERSION {
                match encode_frame_at(&req, n, version) {
                    Ok(old) => {
                        prop_assert!(req.since() <= version);
                        prop_assert_eq!(old[PREFIX_BYTES], version);
                        prop_assert_eq!(&old, &as_version(&newest, WIRE_VERSION, version));
                        let (back, v) =
                            decode_header_in::<Request>(&old[PREFIX_BYTES..], n, Versions::ALL)
                                .expect("decodes");
                        prop_assert_eq!((back, v), (req.clone(), version));
                    }
                    Err(e) => {
                        prop_assert!(req.since() > version);
                        let not_in =
                            WireError::NotInVersion { kind: req.kind(), version, since: req.since() };
                        prop_assert_eq!(e, not_in);
                        let as_old = as_version(&newest, WIRE_VERSION, version);
                        let tag = as_old[tag_at(version)];
                        prop_assert_eq!(
                            decode_header_in::<Request>(&as_old[PREFIX_BYTES..], n, Versions::ALL),
                            Err(WireError::UnknownMessage { tag })
                        );
                    }
                }
            }
        }

        /// Every reply an older version has round-trips at it; a field's content it lacks
        /// (deletion marks before 2, a map epoch before 3) is `NotInVersion`, never dropped.
        #[test]
        fn every_older_response_round_trips_at_its_version((resp, n) in response()) {
            let marks = matches!(&resp, Response::Manifests { deleting, .. } if !deleting.is_empty());
            let epoch = matches!(&resp, Response::Hello { map_epoch, .. } if *map_epoch != 0);
            for version in MIN_WIRE_VERSION..WIRE_VERSION {
                let has = resp.since() <= version && !(marks && version < 2) && !(epoch && version < 3);
                match encode_frame_at(&resp, n, version) {
                    Ok(frame) => {
                        prop_assert!(has);
                        let (back, v) =
                            decode_header_in::<Response>(&frame[PREFIX_BYTES..], n, Versions::ALL)
                                .expect("decodes");
                        prop_assert_eq!((back, v), (resp.clone(), version));
                    }
                    Err(WireError::NotInVersion { version: got, .. }) => {
                        prop_assert!(!has && got == version);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }
    }

    #[test]
    fn an_older_hello_has_no_map_epoch() {
        let hello = |map_epoch| Response::Hello {
            node_id: NodeId(3),
            rack: "r".into(),
            capacity_bytes: 0,
            used_bytes: 1,
            map_epoch,
        };
        let at_2 = encode_frame_at(&hello(0), 0, 2).expect("encodes");
        // version, tag 0, node id 3, "r", 0, 1; nothing after.
        assert_eq!(&at_2[PREFIX_BYTES..], &[2, 0, 3, 1, b'r', 0, 1]);
        let at_3 = encode_frame_at(&hello(9), 0, 3).expect("encodes");
        // version, no request id (8 zero bytes), then the version 2 message and the epoch.
        assert_eq!(&at_3[PREFIX_BYTES..], &[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 1, b'r', 0, 1, 9]);
        let as_2 = as_version(&at_3, 3, 2);
        assert!(matches!(decode_frame::<Response>(&as_2), Err(WireError::Malformed(_))));
        assert!(matches!(
            encode_frame_at(&hello(9), 0, 2),
            Err(WireError::NotInVersion { kind: "Hello.map_epoch", version: 2, since: 3 })
        ));
        let stale = Response::error(ErrorCode::StaleMap { held: 4 }, "older");
        assert!(matches!(encode_frame_at(&stale, 0, 2), Err(WireError::NotInVersion { .. })));
        let map = Request::PutClusterMap { epoch: 1 };
        assert!(encode_frame(&map, 0).is_err(), "a map push carries the map");
        assert!(encode_frame(&map, MAX_CLUSTER_MAP_BYTES + 1).is_err());
    }

    #[test]
    fn a_version_1_manifest_page_has_no_deleting_field() {
        let page = Response::Manifests { entries: Vec::new(), more: true, deleting: Vec::new() };
        let at_1 = encode_frame_at(&page, 0, 1).expect("encodes");
        // version, tag 6, zero entries, more = true; nothing after.
        assert_eq!(&at_1[PREFIX_BYTES..], &[1, 6, 0, 1]);
        let at_2 = encode_frame_at(&page, 0, 2).expect("encodes");
        assert_eq!(&at_2[PREFIX_BYTES..], &[2, 6, 0, 1, 0]);
        // A version 2 page read as version 1 has a trailing byte: refused, not misread.
        let mut as_1 = at_2.clone();
        as_1[PREFIX_BYTES] = 1;
        assert!(matches!(decode_frame::<Response>(&as_1), Err(WireError::Malformed(_))));
    }

    #[test]
    fn a_capped_side_refuses_newer_headers_and_answers_in_its_newest() {
        let v1 = Versions::capped(1).expect("spoken");
        assert_eq!((v1.min(), v1.max()), (MIN_WIRE_VERSION, 1));
        let frame = encode_frame(&Request::Stats, 0).expect("encodes");
        assert_eq!(
            decode_header_in::<Request>(&frame[PREFIX_BYTES..], 0, v1),
            Err(WireError::BadVersion { got: WIRE_VERSION, min: MIN_WIRE_VERSION, max: 1 })
        );
        assert_eq!(v1.reply_version(WIRE_VERSION), 1);
        assert_eq!(v1.reply_version(1), 1);
        assert_eq!(Versions::ALL.reply_version(1), 1);
        assert_eq!(Versions::ALL.reply_version(200), WIRE_VERSION);
        assert_eq!(Versions::ALL.reply_version(0), MIN_WIRE_VERSION);
        assert!(Versions::capped(0).is_err() && Versions::capped(WIRE_VERSION + 1).is_err());
        assert_eq!(
            encode_frame_at(&Request::Stats, 0, WIRE_VERSION + 1),
            Err(WireError::BadVersion {
                got: WIRE_VERSION + 1,
                min: MIN_WIRE_VERSION,
                max: WIRE_VERSION
            })
        );
    }

    /// Where a frame of wire version `version` has its message tag.
    fn tag_at(version: u8) -> usize {
        PREFIX_BYTES + header_fields_bytes(version)
    }

    /// `frame`, written at version `from`, with its header framed as version `to` frames the
    /// same message bytes (the header fields `to` has all zero): what a peer of `to` would
    /// make of the message.
    fn as_version(frame: &[u8], from: u8, to: u8) -> Vec<u8> {
        let header_len = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
        let message_len = header_len - header_fields_bytes(from);
        let new_len = u32::try_from(header_fields_bytes(to) + message_len).expect("small");
        let mut out = new_len.to_be_bytes().to_vec();
        out.extend_from_slice(&frame[4..PREFIX_BYTES]);
        out.push(to);
        out.resize(tag_at(to), 0);
        out.extend_from_slice(&frame[tag_at(from)..]);
        out
    }

    fn request_id() -> impl Strategy<Value = Option<RequestId>> {
        proptest::option::of(any::<u64>()).prop_map(|raw| raw.and_then(RequestId::new))
    }

    proptest! {
        /// At every version, a frame reads back as the message, its version and its request
        /// id, which only version 3 on carries (an older header has none and is written as
        /// that version's build wrote it).
        #[test]
        fn every_frame_round_trips_with_its_request_id_at_every_version(
            (req, n) in request(),
            (resp, rn) in response(),
            id in request_id(),
        ) {
            for version in MIN_WIRE_VERSION..=WIRE_VERSION {
                let carried = if version >= REQUEST_ID_SINCE { id } else { None };
                let want = HeaderMeta { version, request_id: carried };
                if let Ok(frame) = encode_frame_with_id(&req, n, version, id) {
                    prop_assert_eq!(&frame, &encode_frame_with_id(&req, n, version, carried).expect("encodes"));
                    let back = decode_header_meta::<Request>(&frame[PREFIX_BYTES..], n, Versions::ALL);
                    prop_assert_eq!(back, Ok((req.clone(), want)));
                    prop_assert_eq!(header_request_id(&frame[PREFIX_BYTES..]), carried);
                }
                if let Ok(frame) = encode_frame_with_id(&resp, rn, version, id) {
                    let back = decode_header_meta::<Response>(&frame[PREFIX_BYTES..], rn, Versions::ALL);
                    prop_assert_eq!(back, Ok((resp.clone(), want)));
                }
            }
        }

        /// A version 3 frame is the version 2 frame with the version byte raised and the
        /// request id (big-endian, 0 for none) put before the message.
        #[test]
        fn version_3_frames_are_version_2_frames_with_the_request_id((req, n) in request(), id in request_id()) {
            prop_assume!(req.since() <= 2, "a kind version 2 has");
            let at_2 = encode_frame_at(&req, n, 2).expect("a kind version 2 has");
            let at_3 = encode_frame_with_id(&req, n, 3, id).expect("encodes");
            prop_assert_eq!(at_3[PREFIX_BYTES], 3);
            let raw = id.map_or(0, RequestId::get).to_be_bytes();
            prop_assert_eq!(&at_3[PREFIX_BYTES + 1..tag_at(3)], &raw[..]);
            prop_assert_eq!(&at_3[tag_at(3)..], &at_2[tag_at(2)..]);
            let header_len = u32::from_be_bytes(at_3[..4].try_into().expect("4 bytes"));
            prop_assert_eq!(header_len as usize, at_2.len() - PREFIX_BYTES + REQUEST_ID_BYTES);
        }
    }

    #[test]
    fn stats_fields_of_version_3_are_left_out_below_it_and_read_back_as_zero() {
        let stats = NodeStats {
            node_id: NodeId(3),
            shards: 5,
            requests: vec![RequestCounters { kind: "Hello".into(), served: 1, failed: 2 }],
            disk_free_bytes: 1 << 40,
            inflight_bytes: 4096,
            started_empty: true,
            ..NodeStats::default()
        };
        let reply = Response::Stats(Box::new(stats.clone()));
        let at_3 = encode_frame_at(&reply, 0, 3).expect("encodes");
        let back = decode_header_in::<Response>(&at_3[PREFIX_BYTES..], 0, Versions::ALL);
        assert_eq!(back, Ok((reply.clone(), 3)));
        let older =
            NodeStats { disk_free_bytes: 0, inflight_bytes: 0, started_empty: false, ..stats };
        for version in [1, 2] {
            let frame = encode_frame_at(&reply, 0, version).expect("encodes");
            let back = decode_header_in::<Response>(&frame[PREFIX_BYTES..], 0, Versions::ALL);
            assert_eq!(back, Ok((Response::Stats(Box::new(older.clone())), version)));
            // The older form is the version 3 body without its last three fields.
            let v3_body = &at_3[tag_at(3)..];
            let body = &frame[tag_at(version)..];
            assert!(v3_body.starts_with(body) && v3_body.len() > body.len());
        }
    }

    #[test]
    fn a_request_id_is_read_even_from_a_header_whose_message_is_bad() {
        let id = RequestId::new(0x0123_4567_89ab_cdef);
        let mut frame = encode_frame_with_id(&Request::Stats, 0, 3, id).expect("encodes");
        frame[tag_at(3)] = 200;
        let header = &frame[PREFIX_BYTES..];
        assert_eq!(
            decode_header::<Request>(header, 0),
            Err(WireError::UnknownMessage { tag: 200 })
        );
        assert_eq!(header_request_id(header), id);
        assert_eq!(id.map(|id| id.to_string()).as_deref(), Some("0123456789abcdef"));
        // A version 3 header cut inside its id is malformed, and names no id.
        for cut in 1..=REQUEST_ID_BYTES {
            let short = &header[..cut];
            assert_eq!(header_request_id(short), None);
            assert!(matches!(decode_header::<Request>(short, 0), Err(WireError::Malformed(_))));
        }
        // Id 0 is "no id"; versions 1 and 2 carry none.
        assert_eq!(RequestId::new(0), None);
        let v2 = encode_frame_with_id(&Request::Stats, 0, 2, id).expect("encodes");
        assert_eq!(v2, encode_frame_at(&Request::Stats, 0, 2).expect("encodes"));
        assert_eq!(header_request_id(&v2[PREFIX_BYTES..]), None);
    }

    fn key() -> ShardKey {
        ShardKey {
            job: JobName::new("j").expect("valid"),
            step: Step(1),
            rank: Rank(0),
            object: ObjectName::new("o").expect("valid"),
            stripe: StripeIndex(0),
            index: ShardIndex(0),
        }
    }

    #[test]
    fn wrong_payload_lengths_are_refused() {
        assert!(matches!(
            encode_frame(&Request::Stats, 1),
            Err(WireError::BadPayloadLength { kind: "Stats", .. })
        ));
        let verify = Request::VerifyShard { key: key() };
        assert!(encode_frame(&verify, 1).is_err(), "VerifyShard carries no payload");
        let mkey = ManifestKey { job: key().job, step: Step(1), rank: Rank(0) };
        let replace = Request::ReplaceManifest {
            key: mkey,
            world_size: 1,
            hash: Digest::default(),
            revision: 1,
            base: Digest::default(),
        };
        assert!(encode_frame(&replace, 0).is_err(), "an empty manifest is refused");
        assert!(encode_frame(&replace, MAX_MANIFEST_BYTES + 1).is_err());
        let put = Request::PutShard { key: key(), hash: Digest::default() };
        assert!(encode_frame(&put, 0).is_err(), "an empty shard is refused");
        let frame = encode_frame(&put, 10).expect("encodes");
        let err = decode_header::<Request>(&frame[PREFIX_BYTES..], MAX_SHARD_BYTES + 1);
        assert_eq!(err.map_err(|e| e.code()), Err(ErrorCode::TooLarge));
    }

    #[test]
    fn every_request_kind_is_listed_once_in_tag_order() {
        let mut seen = std::collections::HashSet::new();
        for kind in Request::KINDS {
            assert!(seen.insert(kind), "{kind} is listed twice");
        }
        let frame = encode_frame(&Request::VerifyShard { key: key() }, 0).expect("encodes");
        assert_eq!(frame[tag_at(WIRE_VERSION)], 8, "VerifyShard's tag");
        assert_eq!(Request::VerifyShard { key: key() }.kind(), Request::KINDS[8]);
    }

    #[test]
    fn the_largest_new_replies_fit_in_a_header() {
        let long_key = ShardKey {
            job: JobName::new("j".repeat(crate::limits::MAX_JOB_NAME_BYTES)).expect("valid"),
            object: ObjectName::new("o".repeat(crate::limits::MAX_OBJECT_NAME_BYTES))
                .expect("valid"),
            stripe: StripeIndex(u32::MAX),
            ..key()
        };
        let stats = NodeStats {
            shards: u64::MAX,
            corrupt_shards: vec![long_key; MAX_STATS_CORRUPT_KEYS],
            requests: Request::KINDS
                .iter()
                .map(|k| RequestCounters { kind: (*k).into(), served: u64::MAX, failed: u64::MAX })
                .collect(),
            ..NodeStats::default()
        };
        encode_frame(&Response::Stats(Box::new(stats)), 0).expect("the fullest Stats fits");
        let part = PartShards {
            step: Step(u64::MAX),
            rank: Rank(u32::MAX),
            shards: u64::MAX,
            bytes: u64::MAX,
            newest_age_ms: u64::MAX,
        };
        let parts = Response::Parts { entries: vec![part; MAX_LIST_ENTRIES as usize], more: true };
        encode_frame(&parts, 0).expect("the fullest Parts page fits");
        let entry = ManifestEntry {
            step: Step(u64::MAX),
            rank: Rank(u32::MAX),
            world_size: u32::MAX,
            len: u32::MAX,
            hash: Digest([0xff; 32]),
            revision: u32::MAX,
            base: Digest([0xff; 32]),
        };
        let page = Response::Manifests {
            entries: vec![entry; MAX_LIST_ENTRIES as usize],
            more: true,
            deleting: vec![Step(u64::MAX); MAX_DELETION_MARKS_PER_JOB],
        };
        encode_frame(&page, 0).expect("the fullest manifest page, every mark with it, fits");
        let summary = JobSummary {
            job: JobName::new("j".repeat(crate::limits::MAX_JOB_NAME_BYTES)).expect("valid"),
            manifests: u64::MAX,
            newest_step: Some(Step(u64::MAX)),
            shards: u64::MAX,
            shard_bytes: u64::MAX,
        };
        let jobs = Response::Jobs { jobs: vec![summary; MAX_LIST_JOBS as usize], more: true };
        encode_frame(&jobs, 0).expect("the fullest Jobs page fits");
    }

    #[test]
    fn prefix_limits() {
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(&(MAX_HEADER_BYTES + 1).to_be_bytes());
        assert!(matches!(FramePrefix::parse(p), Err(WireError::HeaderTooLarge { .. })));
        let mut p = [0u8; 8];
        p[..4].copy_from_slice(&10u32.to_be_bytes());
        p[4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(FramePrefix::parse(p), Err(WireError::BadPayloadLength { .. })));
    }

    #[test]
    fn version_tag_and_trailing_bytes_are_checked() {
        let mut frame = encode_frame(&Request::Stats, 0).expect("encodes");
        frame[PREFIX_BYTES] = 9;
        assert_eq!(
            decode_frame::<Request>(&frame).map(|_| ()),
            Err(WireError::BadVersion { got: 9, min: MIN_WIRE_VERSION, max: WIRE_VERSION })
        );
        let mut frame = encode_frame(&Request::Stats, 0).expect("encodes");
        frame[tag_at(WIRE_VERSION)] = 42;
        assert_eq!(
            decode_frame::<Request>(&frame).map(|_| ()),
            Err(WireError::UnknownMessage { tag: 42 })
        );
        let mut frame = encode_frame(&Request::Stats, 0).expect("encodes");
        frame.push(0);
        frame[3] += 1;
        assert!(matches!(decode_frame::<Request>(&frame), Err(WireError::Malformed(_))));
    }

    #[test]
    fn a_bad_job_name_in_a_header_is_malformed() {
        let frame = encode_frame(
            &Request::DeleteCheckpoint { job: JobName::new("ok").expect("valid"), step: Step(1) },
            0,
        )
        .expect("encodes");
        let mut bad = frame.clone();
        // "ok" starts after the tag and the string's length byte.
        bad[tag_at(WIRE_VERSION) + 2] = b' ';
        assert!(matches!(decode_frame::<Request>(&bad), Err(WireError::Malformed(_))));
    }
}
