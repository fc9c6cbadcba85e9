//! Rackpoint client: what a training process links in to save and restore checkpoints.
//!
//! Pure logic without I/O: `codec` (stripes, Reed-Solomon, hashes), `placement` (rendezvous
//! hashing over failure domains), `manifest` (the per-part record and its chain).
//! I/O: `certs` and `cluster_dir` (set up a cluster folder), `tls` and `transport` (QUIC
//! with mutual TLS to one node at a time), `local_cluster` (real node processes on loopback).

pub mod certs;
pub mod cluster_dir;
pub mod codec;
pub mod local_cluster;
pub mod manifest;
pub mod placement;
pub mod tls;
pub mod transport;
