//! Issue 18, item 3, end to end with the real CLI and real nodes: a request id made by the
//! client is in the client's JSON log and in the node's, in both sides' request spans; and
//! `rackpoint status` shows what an operator needs at a glance (and `--json` all of it).

mod common;

use std::collections::BTreeSet;

use common::{doc, rackpoint, rackpoint_bin, s, six_nodes, text};
use rackpoint_proto::logs::LOG_FORMAT_ENV;
use rackpoint_proto::{NodeId, Request};
use serde_json::Value;

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// `(id, kind)` of every "request done" line, for the node `node` when the lines name nodes.
fn requests_done(lines: &[Value], node: Option<&str>) -> BTreeSet<(String, String)> {
    lines
        .iter()
        .filter(|l| l["fields"]["message"] == "request done")
        .filter(|l| node.is_none_or(|n| l["span"]["node"] == n))
        .map(|l| {
            let span = &l["span"];
            let id = span["id"].as_str().expect("the span names the request id").to_owned();
            (id, span["kind"].as_str().expect("and its kind").to_owned())
        })
        .collect()
}

#[test]
fn a_request_id_is_logged_by_the_client_and_by_the_node() {
    let mut tc = six_nodes(64 * 1024);
    let watched = NodeId(1);
    tc.cluster.terminate(watched).expect("stops");
    tc.cluster.set_node_env(watched, LOG_FORMAT_ENV, Some("json"));
    tc.cluster.set_node_env(watched, "RUST_LOG", Some("info,rackpoint_store::service=debug"));
    tc.cluster.restart(watched).expect("starts");

    let file = tc.dir.path().join("state.bin");
    std::fs::write(&file, common::data(7, 1 << 20)).expect("write");
    let put = rackpoint_bin()
        .env("RACKPOINT_CLUSTER", tc.cluster.cluster_file())
        .env(LOG_FORMAT_ENV, "json")
        .env("RUST_LOG", "rackpoint_client=debug")
        .args(["put", "ids-job", "1", s(&file)])
        .output()
        .expect("run rackpoint");
    assert!(put.status.success(), "{}", text(&put.stderr));
    let client = requests_done(&json_lines(&text(&put.stderr)), Some("1"));
    assert!(client.iter().any(|(_, kind)| kind == "PutShard"), "{client:?}");
    // Stopped (drained) first, so that every line of the requests it served is written.
    tc.cluster.terminate(watched).expect("stops");
    let log = std::fs::read_to_string(tc.cluster.node_dir(watched).join("node.log")).expect("log");
    let node = requests_done(&json_lines(&log), None);
    // Every request the client saw answered by node 1 is in node 1's log under the same id.
    let missing: Vec<_> = client.difference(&node).collect();
    assert!(missing.is_empty(), "not in the node's log: {missing:?}");
    assert!(Request::KINDS.contains(&"PutShard"));
}

#[test]
fn status_shows_the_counters_an_operator_needs() {
    let mut tc = six_nodes(64 * 1024);
    let cluster = tc.cluster.cluster_file();
    let file = tc.dir.path().join("state.bin");
    std::fs::write(&file, common::data(8, 300_000)).expect("write");
    let put = rackpoint(&cluster, &["put", "status-job", "1", s(&file)]);
    assert!(put.status.success(), "{}", text(&put.stderr));
    let table = rackpoint(&cluster, &["status"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let out = text(&table.stdout);
    let header = out.lines().next().expect("a header");
    for column in ["NODE", "STATE", "SHARDS", "BYTES", "DISK_FREE", "INFLIGHT", "CORRUPT", "FAILED"]
    {
        assert!(header.contains(column), "{header}");
    }
    assert_eq!(out.lines().filter(|l| l.contains(" up ")).count(), 6, "{out}");

    let status = doc(&rackpoint(&cluster, &["status", "--json"]));
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 6);
    let mut shards = 0;
    for n in nodes {
        assert_eq!(n["up"], true, "{n}");
        assert!(n["disk_free_bytes"].as_u64().expect("disk free") > 0, "{n}");
        assert_eq!(n["started_empty"], false);
        assert!(n["inflight_bytes"].is_u64() && n["requests_failed"].is_u64(), "{n}");
        let kinds = n["requests"].as_array().expect("per kind");
        assert_eq!(kinds.len(), Request::KINDS.len() + 1, "every kind and Invalid");
        let served: u64 = kinds.iter().map(|k| k["served"].as_u64().expect("served")).sum();
        assert_eq!(n["requests_served"].as_u64(), Some(served));
        shards += n["shards"].as_u64().expect("shards");
    }
    assert!(shards >= 6, "the put's shards are counted: {shards}");

    // A node down is down in both forms, and the command fails.
    tc.cluster.kill(NodeId(2)).expect("killed");
    let down = rackpoint(&cluster, &["status", "--json"]);
    assert_eq!(down.status.code(), Some(1));
    let status: Value = serde_json::from_slice(&down.stdout).expect("one document");
    let two = &status["nodes"][1];
    assert_eq!(
        (two["up"].clone(), two["disk_free_bytes"].clone()),
        (Value::Bool(false), Value::Null)
    );
}
