//! Rackpoint client: what a training process links in to save and restore checkpoints.
//!
//! Pure logic without I/O: `codec` (stripes, Reed-Solomon, hashes), `placement` (rendezvous
//! hashing over failure domains), `manifest` (the per-part record and its chain), `planner`
//! (which shard to fetch next during a restore), `hedge` (when a fetch is late).
//! I/O: `certs` and `cluster_dir` (set up and load a cluster folder), `tls` and `transport`
//! (QUIC with mutual TLS, one connection per node), `health` (which nodes are up), `ctx` (the
//! one call path to a node, below the pipelines), `save`, `restore` and `catalog` (the
//! pipelines), `client` (the async and blocking APIs), `local_cluster` (real node processes on
//! loopback, for tests, the demo and the simulator).

pub mod catalog;
pub mod certs;
pub mod client;
pub mod cluster_dir;
pub mod codec;
mod ctx;
pub mod error;
pub mod health;
pub mod health_view;
pub mod hedge;
pub mod listing;
pub mod local_cluster;
pub mod manifest;
pub mod placement;
pub mod planner;
pub mod restore;
pub mod save;
pub mod stripe_write;
pub mod tls;
pub mod transport;

pub use client::{BlockingClient, Client, NodeStatus, Progress, SaveHandle};
pub use error::ClientError;
