//! Rackpoint's storage node: a shard and manifest store on RocksDB, served over QUIC with
//! mutual TLS, with a background scrubber.
//!
//! - [`engine`]: the store on RocksDB (the only module that knows RocksDB), synchronous.
//! - [`handler`]: request handling over the engine, without transport.
//! - [`service`]: the QUIC glue: endpoint, connections, one request per stream.
//! - [`tls`]: the node's certificate and required client authentication.
//! - [`identity`]: the caller read out of its certificate (grant, expiry), revocations.
//! - [`quota`]: per-job byte quotas of this node.
//! - [`scrub`]: background re-hashing of stored shards at a bounded rate.
//! - [`stats`]: request and corruption counters.
//! - [`metrics`]: the Prometheus endpoint (`GET /metrics`), read from those counters.
//! - [`data_marker`]: the marker beside the data folder that tells a replaced disk.
//! - [`config`]: reading `node.toml`.
//! - [`node`]: a running node: start, serve, stop with drain.
//!
//! The binary `rackpoint-store --config node.toml` prints `listening <ip:port>` on stdout
//! once it serves, logs to stderr, and exits 0 after SIGTERM/SIGINT once drained.

pub mod config;
pub mod data_marker;
mod der;
pub mod engine;
pub mod handler;
pub mod identity;
pub mod metrics;
pub mod node;
pub mod quota;
pub mod scrub;
pub mod service;
pub mod stats;
pub mod tls;

#[cfg(test)]
mod testing;

pub use config::{load_node_config, ConfigFileError};
pub use engine::{Engine, EngineError, EngineOptions, ValueStorage};
pub use handler::{Handler, InflightBudget, NodeIdentity, Reply};
pub use node::{Node, StartError, StopReport};
