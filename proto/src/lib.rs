//! Rackpoint's shared wire crate: ids and names, binary storage keys, the cluster map, wire
//! messages and their framing, error codes, every limit in one place (`limits`), and the
//! byte-rate pacer both sides use (`pacing`), and the named crash points (`failpoint`).
//!
//! Architecture invariant: this crate does no I/O and knows no async runtime (the one
//! exception: `failpoint` reads its environment variable and can kill the process). Both the node
//! (`rackpoint-store`) and the client (`rackpoint-client`) depend on it; nothing else is shared.

pub mod access;
pub mod cluster;
pub mod failpoint;
pub mod ids;
pub mod key;
pub mod limits;
pub mod logs;
pub mod pacing;
pub mod signed_map;
pub mod wire;

pub use access::{Access, Grant, JobPattern};
pub use cluster::{ClusterLayout, ClusterMap, CodeParams, NodeConfig, NodeInfo};
pub use ids::{
    Digest, JobName, NameError, NodeId, ObjectName, Rank, ShardIndex, Step, StripeId, StripeIndex,
};
pub use key::{CheckpointRange, DeletionMarkKey, ManifestKey, ShardKey, Table};
pub use wire::{
    ErrorCode, FramePrefix, JobSummary, ManifestEntry, NodeStats, PartShards, Request, Response,
    WireError,
};
