//! Rackpoint's shared wire crate: ids and names, binary storage keys, the cluster map, wire
//! messages and their framing, error codes, and every limit in one place (`limits`).
//!
//! Architecture invariant: this crate does no I/O and knows no async runtime. Both the node
//! (`rackpoint-store`) and the client (`rackpoint-client`) depend on it; nothing else is shared.

pub mod cluster;
pub mod ids;
pub mod key;
pub mod limits;
pub mod wire;

pub use cluster::{ClusterMap, CodeParams, NodeConfig, NodeInfo};
pub use ids::{
    Digest, JobName, NameError, NodeId, ObjectName, Rank, ShardIndex, Step, StripeId, StripeIndex,
};
pub use key::{CheckpointRange, ManifestKey, ShardKey};
pub use wire::{ErrorCode, FramePrefix, ManifestEntry, NodeStats, Request, Response, WireError};
