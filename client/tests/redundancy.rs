//! Redundancy in nodes, measured, through the `rackpoint` CLI against real node processes
//! (6 nodes, 3 racks, k = 4, m = 2; node `i` in rack `(i - 1) mod 3`). Findings 2 and 3 of
//! issue 17, replayed:
//! - a save made while 3 of 6 nodes are down (SIGKILL) puts two shards of each stripe on a
//!   node: `put` says so (stderr and `--json`), `verify` says not healthy and survives 1 node
//!   failure (not 2); once the nodes are back and `repair` ran, healthy and 2 again;
//! - after one node's data folder is wiped and the node restarted, `ls` no longer says
//!   SURVIVES 2 for the steps that lost shards, and agrees with `verify --step`.

mod common;

use std::path::Path;

use common::{data, doc, rackpoint, six_nodes, text};
use rackpoint_client::cluster_dir::NODE_DATA_DIR;
use rackpoint_proto::NodeId;

const SHARD: u32 = 64 * 1024;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn a_save_with_three_of_six_nodes_down_says_so_and_counts_survival_in_nodes() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let file = tc.dir.path().join("optim.bin");
    // Five stripes of 4 x 64 KiB, the last one short.
    std::fs::write(&file, data(17, 4 * 4 * SHARD as usize + 12_345)).expect("write");
    // One node of each rack stays up.
    let down = [NodeId(4), NodeId(5), NodeId(6)];
    for n in down {
        tc.cluster.kill(n).expect("kill");
    }

    let put = rackpoint(&cluster, &["--json", "put", "doubled", "1", s(&file)]);
    assert!(put.status.success(), "put: {}", text(&put.stderr));
    let stderr = text(&put.stderr);
    assert!(
        stderr.contains("degraded placement: 5 stripe(s)") && stderr.contains("rackpoint repair"),
        "{stderr}"
    );
    let put = doc(&put);
    assert_eq!(put["doubled_stripes"], 5, "{put}");

    let verify = rackpoint(&cluster, &["--json", "verify", "doubled", "--step", "1"]);
    assert_eq!(verify.status.code(), Some(1), "not healthy: {}", text(&verify.stderr));
    let v = doc(&verify);
    assert_eq!(
        (&v["healthy"], &v["recoverable"], &v["lost"]),
        (&false.into(), &true.into(), &false.into()),
        "{v}"
    );
    assert_eq!(v["bad_shards"].as_array().map(Vec::len), Some(0), "every shard is there: {v}");
    assert_eq!(v["survives_more_failures"], 1, "two shards a node: one node failure, not 2: {v}");
    assert_eq!(v["survives_rack_failures"], 1, "{v}");
    let doubled = v["degraded_placement"].as_array().expect("a list");
    assert_eq!(doubled.len(), 5, "{v}");
    assert!(doubled.iter().all(|d| d["shards"] == 2 && !down.iter().any(|n| d["node"] == n.0)));
    let plain = rackpoint(&cluster, &["verify", "doubled", "--step", "1"]);
    let out = text(&plain.stdout);
    assert!(
        out.contains("degraded placement: 2 shards of rank 0 object optim.bin stripe"),
        "{out}"
    );
    assert!(out.contains("survives 1 more node failure(s)"), "{out}");
    // `ls` measures the same from shard presence.
    let ls = doc(&rackpoint(&cluster, &["--json", "ls", "doubled"]));
    assert_eq!(ls["checkpoints"][0]["survives_more_failures"], 1, "{ls}");

    for n in down {
        tc.cluster.restart(n).expect("restart");
    }
    let repair = rackpoint(&cluster, &["repair", "doubled", "--all"]);
    assert!(repair.status.success(), "repair: {} {}", text(&repair.stdout), text(&repair.stderr));
    let verify = rackpoint(&cluster, &["--json", "verify", "doubled", "--step", "1"]);
    let v = doc(&verify);
    assert!(verify.status.success(), "healthy after repair: {v}");
    assert_eq!((&v["healthy"], &v["survives_more_failures"]), (&true.into(), &2.into()), "{v}");
    assert_eq!(v["survives_rack_failures"], 1, "two shards a rack: one rack failure: {v}");
    assert_eq!(v["degraded_placement"].as_array().map(Vec::len), Some(0), "{v}");
    let ls = doc(&rackpoint(&cluster, &["--json", "ls", "doubled"]));
    assert_eq!(ls["checkpoints"][0]["survives_more_failures"], 2, "{ls}");
}

#[test]
fn ls_after_a_node_is_wiped_counts_the_shards_that_exist_and_agrees_with_verify() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let steps = ["100", "200", "300"];
    for (i, step) in steps.iter().enumerate() {
        let file = tc.dir.path().join(format!("model-{step}.bin"));
        std::fs::write(&file, data(40 + i as u64, 3 * 4 * SHARD as usize + 999)).expect("write");
        let put = rackpoint(&cluster, &["put", "wiped", step, s(&file)]);
        assert!(put.status.success(), "put {step}: {}", text(&put.stderr));
        assert!(!text(&put.stderr).contains("degraded placement"), "{}", text(&put.stderr));
    }
    let before = doc(&rackpoint(&cluster, &["--json", "ls", "wiped"]));
    for c in before["checkpoints"].as_array().expect("a list") {
        assert_eq!(c["survives_more_failures"], 2, "all shards present: {before}");
    }

    // The test owns the node process: SIGKILL, its data folder gone, started again on the
    // same port with the same identity.
    let wiped = NodeId(2);
    tc.cluster.kill(wiped).expect("kill");
    std::fs::remove_dir_all(tc.cluster.node_dir(wiped).join(NODE_DATA_DIR)).expect("wipe");
    tc.cluster.restart(wiped).expect("restart empty");

    let ls = rackpoint(&cluster, &["--json", "ls", "wiped"]);
    assert!(ls.status.success(), "ls: {}", text(&ls.stderr));
    let ls = doc(&ls);
    let listed = ls["checkpoints"].as_array().expect("a list");
    assert_eq!(listed.len(), steps.len(), "{ls}");
    for c in listed {
        let step = c["step"].as_u64().expect("a step").to_string();
        let verify = rackpoint(&cluster, &["--json", "verify", "wiped", "--step", &step]);
        assert_eq!(verify.status.code(), Some(1), "shards are missing: {}", text(&verify.stderr));
        let v = doc(&verify);
        let missing = v["bad_shards"].as_array().expect("a list");
        assert!(
            !missing.is_empty()
                && missing.iter().all(|b| b["node"] == wiped.0 && b["why"] == "missing"),
            "{v}"
        );
        assert_eq!(
            c["survives_more_failures"], v["survives_more_failures"],
            "ls agrees with verify: {c} / {v}"
        );
        assert_eq!(c["survives_rack_failures"], v["survives_rack_failures"], "{c} / {v}");
        assert_eq!(c["survives_more_failures"], 1, "not 2: step {step} lost shards: {c}");
    }
    let plain = text(&rackpoint(&cluster, &["ls", "wiped"]).stdout);
    for row in plain.lines().skip(1) {
        let survives = row.split_whitespace().nth(4).expect("a SURVIVES column");
        assert_eq!(survives, "1", "{plain}");
    }

    let repair = rackpoint(&cluster, &["repair", "wiped", "--all"]);
    assert!(repair.status.success(), "repair: {} {}", text(&repair.stdout), text(&repair.stderr));
    let ls = doc(&rackpoint(&cluster, &["--json", "ls", "wiped"]));
    for c in ls["checkpoints"].as_array().expect("a list") {
        assert_eq!(c["survives_more_failures"], 2, "repaired: {ls}");
    }
}
