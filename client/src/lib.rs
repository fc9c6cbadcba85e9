//! Rackpoint client: what a training process links in to save and restore checkpoints.
//!
//! Pure logic without I/O lives in the `rackpoint-core` crate and is re-exported here under
//! the same paths: `codec`, `placement`, `manifest`, `planner`, `stripe_write`,
//! `manifest_commit`, `listing`, `hedge`, `health_view`, `redundancy`, `checkpoint_choice`,
//! `repair_plan`, `retention`, `deadline` (and `rebalance`'s planner, re-exported inside the
//! client's `rebalance`, which carries it out).
//! I/O: `certs` and `cluster_dir` (set up and load a cluster folder), `tls` and `transport`
//! (QUIC with mutual TLS, one connection per node), `health` (which nodes are up), `pool` (reused stripe and shard buffers, and `save_async`'s
//! bounded staging), `ctx` (the
//! one call path to a node, below the pipelines), `maps` (the newest cluster map, learned
//! from the nodes' heartbeat answers and verified against the cluster CA), `save`, `restore` and `catalog` (the
//! pipelines), `repair` (back to full redundancy; its pure planner is the core's `repair_plan`, also
//! `repair::plan`), `rebalance` (shards onto the current map's placement, bounded and paced,
//! through repair's move path), `heal`
//! (heal on read: a restore's damaged stripes repaired in the background), `gc`
//! (retention and orphan collection; `strays` finds copies a killed repair left), `jobs` (the cluster's jobs, listed from every node), `rollback` (a failed commit taken back), `client` (the
//! async and blocking APIs), `local_cluster` (real node processes on loopback, for tests, the
//! demo and the simulator; feature `testkit`).

pub mod catalog;
pub mod certs;
pub mod client;
pub mod cluster_dir;
mod ctx;
pub mod error;
pub mod gc;
pub mod heal;
pub mod health;
pub mod jobs;
#[cfg(feature = "testkit")]
pub mod local_cluster;
mod maps;
mod pool;
pub mod rebalance;
pub mod repair;
pub mod restore;
mod rollback;
pub mod save;
mod strays;
pub mod tls;
pub mod transport;

pub use rackpoint_core::{
    checkpoint_choice, codec, deadline, deletion, health_view, hedge, job_list, listing, manifest,
    manifest_commit, placement, planner, redundancy, repair_plan, retention, stripe_write,
};

pub use client::{BlockingClient, Client, ClientOptions, NodeStatus, Progress, SaveHandle};
pub use error::ClientError;
