//! Issue 18, item 2: a rolling upgrade, run with real node and CLI processes. The release
//! before the previous one spoke wire version 1 only, the previous one 1 and 2; this build
//! speaks 1 to 3 (3: the request id in the header). The last test runs this build against
//! the previous release's version 2 both ways; the first against version 1. The old side is
//! played by
//! this build's binaries capped at version 1 (a node's `wire_version_max = 1` in `node.toml`,
//! a client's `RACKPOINT_WIRE_VERSION_MAX=1`): capped, they write and accept exactly the
//! version 1 frames the previous release did (byte for byte: `proto/tests/wire_releases.rs` reads
//! and rewrites every frame that release wrote for its fuzz corpus), and a capped node answers
//! a newer request with `BadVersion` in version 1 as that release's node did. What a capped
//! binary does not stand for: the previous release's own client logic for features it did not
//! have (a capped `rm` is refused here, where that release deleted without marks).
//!
//! The run: six nodes of the old release, k = 4, m = 2. The new client and the old one each
//! save and restore the other's checkpoint; the new client's `rm` is refused with nothing
//! deleted (no node can hold a deletion mark) and its job listing names the missing request.
//! Then the nodes are upgraded m at a time while both clients go on saving and restoring;
//! `rm` works once m + 1 nodes are new, and once all are, the old client still saves,
//! restores and lists (without the steps being deleted).

mod common;

use std::path::Path;
use std::process::Output;

use bytes::Bytes;
use common::{data, rackpoint_bin, s, six_nodes, text, TestCluster};
use rackpoint_client::transport::{Transport, WIRE_VERSION_MAX_ENV};
use rackpoint_proto::limits::WIRE_VERSION;
use rackpoint_proto::{NodeId, Request, Response};

const SHARD: u32 = 64 * 1024;
const JOB: &str = "upgrade-job";

/// Which client runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// This build as the release speaking wire version 1 only.
    Old,
    /// This build as the previous release: wire versions 1 and 2 (no request id).
    Previous,
    /// This build.
    New,
}

fn cli(side: Side, cluster: &Path, args: &[&str]) -> Output {
    let mut c = rackpoint_bin();
    c.env("RACKPOINT_CLUSTER", cluster).env_remove(WIRE_VERSION_MAX_ENV);
    match side {
        Side::Old => c.env(WIRE_VERSION_MAX_ENV, "1"),
        Side::Previous => c.env(WIRE_VERSION_MAX_ENV, "2"),
        Side::New => &mut c,
    };
    c.args(args).output().expect("run rackpoint")
}

fn ok(side: Side, cluster: &Path, args: &[&str]) -> Output {
    let out = cli(side, cluster, args);
    assert!(
        out.status.success(),
        "{side:?} client: rackpoint {args:?} failed: {} {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Restarts node `id` speaking at most wire version `max` (`None`: every version of this
/// build): stopped with SIGTERM, its `node.toml` edited, started on the same data folder.
fn run_node_at(tc: &mut TestCluster, id: NodeId, max: Option<u8>) {
    tc.cluster.terminate(id).expect("node stops");
    tc.cluster.edit_node_config(id, |c| c.wire_version_max = max).expect("node.toml edited");
    tc.cluster.restart(id).expect("node starts");
}

/// The wire version a fresh client ends up speaking with each node (its newest, unless the
/// node answered in an older one).
fn spoken_versions(tc: &TestCluster, rt: &tokio::runtime::Runtime) -> Vec<u8> {
    rt.block_on(async {
        let t = Transport::new(tc.cluster.map(), tc.cluster.tls()).expect("transport");
        let mut versions = Vec::new();
        for node in &tc.cluster.map().nodes {
            let reply = t.call(node.id, &Request::Hello, Bytes::new()).await.expect("Hello");
            assert!(
                matches!(reply.response, Response::Hello { node_id, .. } if node_id == node.id)
            );
            versions.push(t.wire_version(node.id).expect("a node of the map"));
        }
        t.close().await;
        versions
    })
}

/// `side` saves `step` of one object of seeded bytes and returns them.
fn put(tc: &TestCluster, side: Side, step: u64) -> Vec<u8> {
    let bytes = data(step, 300_000 + step as usize * 97);
    let file = tc.dir.path().join(format!("in-{step}.bin"));
    std::fs::write(&file, &bytes).expect("write");
    let cluster = tc.cluster.cluster_file();
    ok(side, &cluster, &["put", JOB, &step.to_string(), s(&file), "--name", "state.bin"]);
    bytes
}

/// `side` restores `step` and checks it is `want`, byte for byte.
fn get(tc: &TestCluster, side: Side, step: u64, want: &[u8]) {
    let out = tc.dir.path().join(format!("out-{step}-{side:?}"));
    let cluster = tc.cluster.cluster_file();
    let step_arg = step.to_string();
    ok(side, &cluster, &["get", JOB, "--step", &step_arg, "--out", s(&out), "--force"]);
    let got = std::fs::read(out.join("state.bin")).expect("restored file");
    assert!(got == want, "{side:?} client restored step {step} byte for byte");
}

/// Steps `side`'s `ls JOB` lists.
fn listed(tc: &TestCluster, side: Side) -> Vec<u64> {
    let out = ok(side, &tc.cluster.cluster_file(), &["--json", "ls", JOB]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    doc["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .map(|c| c["step"].as_u64().expect("a step"))
        .collect()
}

#[test]
fn a_rolling_upgrade_keeps_every_old_and_new_pair_saving_and_restoring() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ids: Vec<NodeId> = tc.cluster.map().nodes.iter().map(|n| n.id).collect();
    let m = usize::from(tc.cluster.map().code.m);
    assert_eq!(spoken_versions(&tc, &rt), vec![WIRE_VERSION; ids.len()]);

    // The previous release everywhere.
    for &id in &ids {
        run_node_at(&mut tc, id, Some(1));
    }
    assert_eq!(spoken_versions(&tc, &rt), vec![1; ids.len()], "the new client falls back to 1");
    let mut saved = vec![(1, put(&tc, Side::Old, 1)), (2, put(&tc, Side::New, 2))];
    for (step, bytes) in &saved {
        get(&tc, Side::Old, *step, bytes);
        get(&tc, Side::New, *step, bytes);
    }
    assert_eq!(listed(&tc, Side::New), [1, 2]);

    // No old node can hold a deletion mark: the new `rm` deletes nothing, exits 4 and says why.
    let rm = cli(Side::New, &cluster, &["rm", JOB, "--step", "1"]);
    let why = text(&rm.stderr);
    assert_eq!(rm.status.code(), Some(4), "{why}");
    assert!(why.contains("wire version 1") && why.contains("MarkDeleting"), "{why}");
    assert!(why.contains("upgrade the node"), "{why}");
    get(&tc, Side::New, 1, &saved[0].1);
    // The job listing needs ListJobs, which version 1 lacks: an error naming it, not a guess.
    let ls = cli(Side::New, &cluster, &["ls"]);
    assert_ne!(ls.status.code(), Some(0), "{}", text(&ls.stdout));
    assert!(text(&ls.stderr).contains("ListJobs"), "{}", text(&ls.stderr));

    // Upgrade m nodes at a time; saves and restores go on from both sides after each batch.
    let mut step = 3;
    for (i, batch) in ids.chunks(m).enumerate() {
        for &id in batch {
            run_node_at(&mut tc, id, None);
        }
        let new_nodes = (i + 1) * m;
        let versions = spoken_versions(&tc, &rt);
        assert_eq!(versions.iter().filter(|v| **v == WIRE_VERSION).count(), new_nodes);
        saved.push((step, put(&tc, Side::Old, step)));
        saved.push((step + 1, put(&tc, Side::New, step + 1)));
        step += 2;
        for (st, bytes) in saved.iter().rev().take(3) {
            get(&tc, Side::Old, *st, bytes);
            get(&tc, Side::New, *st, bytes);
        }
        ok(Side::New, &cluster, &["status"]);
        ok(Side::Old, &cluster, &["status"]);
        if new_nodes < m + 1 {
            // Fewer than m + 1 nodes can hold a mark: still refused, nothing deleted.
            let rm = cli(Side::New, &cluster, &["rm", JOB, "--step", "1"]);
            assert_eq!(rm.status.code(), Some(4), "{}", text(&rm.stderr));
            get(&tc, Side::Old, 1, &saved[0].1);
        }
    }
    assert_eq!(spoken_versions(&tc, &rt), vec![WIRE_VERSION; ids.len()]);

    // Every node new: `rm` marks, deletes and clears; the old client still saves, restores
    // and lists, and never sees the deleted step.
    ok(Side::New, &cluster, &["rm", JOB, "--step", "1"]);
    saved.remove(0);
    saved.push((step, put(&tc, Side::Old, step)));
    for (st, bytes) in &saved {
        get(&tc, Side::Old, *st, bytes);
    }
    let steps: Vec<u64> = saved.iter().map(|(st, _)| *st).collect();
    assert_eq!(listed(&tc, Side::Old), steps);
    assert_eq!(listed(&tc, Side::New), steps);
    let rm = cli(Side::Old, &cluster, &["rm", JOB, "--step", "2"]);
    assert_ne!(rm.status.code(), Some(0), "a capped client cannot mark: it deletes nothing");
    get(&tc, Side::New, 2, &saved[0].1);
}

/// The previous release (wire versions 1 and 2, no request id) and this one, both ways: its
/// nodes serve this client (which falls back to 2, deletion marks and all), this build's
/// nodes serve its client, and a mix of both kinds of node serves both clients.
#[test]
fn the_previous_release_and_this_one_save_restore_and_delete_both_ways() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let ids: Vec<NodeId> = tc.cluster.map().nodes.iter().map(|n| n.id).collect();
    let m = usize::from(tc.cluster.map().code.m);
    for &id in &ids {
        run_node_at(&mut tc, id, Some(2));
    }
    assert_eq!(spoken_versions(&tc, &rt), vec![2; ids.len()], "the new client falls back to 2");
    let mut saved = vec![(1, put(&tc, Side::Previous, 1)), (2, put(&tc, Side::New, 2))];
    for (step, bytes) in &saved {
        get(&tc, Side::Previous, *step, bytes);
        get(&tc, Side::New, *step, bytes);
    }
    // Version 2 has deletion marks: the new client's rm works on the previous release's nodes.
    ok(Side::New, &cluster, &["rm", JOB, "--step", "1"]);
    saved.remove(0);
    assert_eq!(listed(&tc, Side::Previous), [2]);
    ok(Side::New, &cluster, &["status"]);

    // m nodes upgraded: a mixed cluster serves both clients.
    for &id in &ids[..m] {
        run_node_at(&mut tc, id, None);
    }
    let versions = spoken_versions(&tc, &rt);
    assert_eq!(versions.iter().filter(|v| **v == WIRE_VERSION).count(), m, "{versions:?}");
    assert_eq!(versions.iter().filter(|v| **v == 2).count(), ids.len() - m, "{versions:?}");
    saved.push((3, put(&tc, Side::Previous, 3)));
    saved.push((4, put(&tc, Side::New, 4)));
    for (step, bytes) in &saved {
        get(&tc, Side::Previous, *step, bytes);
        get(&tc, Side::New, *step, bytes);
    }
    ok(Side::Previous, &cluster, &["rm", JOB, "--step", "3"]);
    saved.retain(|(step, _)| *step != 3);
    let steps: Vec<u64> = saved.iter().map(|(step, _)| *step).collect();
    assert_eq!(listed(&tc, Side::New), steps);
    assert_eq!(listed(&tc, Side::Previous), steps);
    ok(Side::Previous, &cluster, &["status"]);
}
