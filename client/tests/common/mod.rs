//! Shared set-up for the client's integration tests: a real cluster of `rackpoint-store`
//! processes on loopback in a temp dir, a client, and seeded test data.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use bytes::Bytes;
use rackpoint_client::cluster_dir::InitOptions;
use rackpoint_client::local_cluster::{find_store_binary, LocalCluster};
use rackpoint_client::save::{ObjectData, ObjectSource, SaveRequest};
use rackpoint_client::Client;
use rackpoint_proto::{JobName, ObjectName, Rank, Step};
use rand::{RngCore, SeedableRng};

/// A running cluster and the temp dir that holds it (dropped last).
pub struct TestCluster {
    pub cluster: LocalCluster,
    pub dir: tempfile::TempDir,
}

/// 6 nodes in 3 racks, k = 4, m = 2, with small shards so tests stay quick.
pub fn six_nodes(shard_size_bytes: u32) -> TestCluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut opts = InitOptions::new(6);
    opts.racks = 3;
    opts.k = 4;
    opts.m = 2;
    opts.shard_size_bytes = shard_size_bytes;
    // Orphan tests sweep at once rather than after the nodes' default grace of an hour.
    opts.node_min_orphan_grace_ms = 0;
    let bin =
        find_store_binary().expect("rackpoint-store is built (cargo test --workspace builds it)");
    let cluster = LocalCluster::start(dir.path(), &opts, &bin).expect("cluster starts");
    TestCluster { cluster, dir }
}

pub fn client(tc: &TestCluster) -> Client {
    Client::connect(&tc.cluster.cluster_file()).expect("client connects")
}

/// `len` seeded pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

pub fn job(name: &str) -> JobName {
    JobName::new(name).expect("valid job name")
}

pub fn request(
    job: &JobName,
    step: u64,
    rank: u32,
    world_size: u32,
    objects: &[(&str, &[u8])],
) -> SaveRequest {
    SaveRequest {
        job: job.clone(),
        step: Step(step),
        rank: Rank(rank),
        world_size,
        objects: objects
            .iter()
            .map(|(name, bytes)| ObjectData {
                name: ObjectName::new(*name).expect("valid object name"),
                source: ObjectSource::Memory(Bytes::copy_from_slice(bytes)),
            })
            .collect(),
        user_meta: BTreeMap::from([("data_offset".to_string(), format!("{}", step * 1000))]),
    }
}

/// The `rackpoint` binary with none of the caller's cluster, identity or log settings.
pub fn rackpoint_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rackpoint"));
    c.env_remove("RUST_LOG")
        .env_remove(rackpoint_proto::logs::LOG_FORMAT_ENV)
        .env_remove("RACKPOINT_CLUSTER")
        .env_remove("RACKPOINT_CERT")
        .env_remove("RACKPOINT_KEY");
    c
}

/// Runs `rackpoint ARGS` with `RACKPOINT_CLUSTER=cluster`.
pub fn rackpoint(cluster: &Path, args: &[&str]) -> Output {
    rackpoint_bin().args(args).env("RACKPOINT_CLUSTER", cluster).output().expect("run rackpoint")
}

/// Runs `rackpoint ARGS` with no cluster in the environment.
pub fn rackpoint_args(args: &[&str]) -> Output {
    rackpoint_bin().args(args).output().expect("run rackpoint")
}

/// Bytes a process printed, as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The one JSON document a `--json` run printed on stdout.
pub fn doc(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one document: {stdout} / {}", text(&out.stderr));
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}
