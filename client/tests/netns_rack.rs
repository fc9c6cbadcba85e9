//! A rack on one machine (issue 18 item 5): `deploy/netns-rack.sh` puts each node in its own
//! network namespace with its own address on a virtual bridge, so the client's QUIC traffic
//! crosses real (virtual) interfaces, and a partition is a link taken down. Through the script
//! a person runs and the `rackpoint` CLI: save; restore exact with two hosts cut off; a host
//! whose disk was replaced comes back empty, `repair` rebuilds it and `verify` measures it; a
//! 7th host is added and `rebalance` moves shards onto it.
//!
//! Needs root and iproute2 (network namespaces); without them the test says so on stderr and
//! passes without checking anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{data, doc, rackpoint, s, text};
use rackpoint_client::cluster_dir::NODE_DATA_DIR;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/netns-rack.sh");

/// The hosts and bridge of one test, named apart from any other run's, removed on drop.
struct Rack {
    dir: tempfile::TempDir,
    prefix: String,
    net: String,
}

impl Rack {
    /// `None` when this machine cannot make network namespaces (not root, no iproute2).
    fn new() -> Option<Self> {
        let probe = format!("rpprobe{}", std::process::id() % 100_000);
        let made = Command::new("ip").args(["netns", "add", &probe]).output();
        match made {
            Ok(out) if out.status.success() => {
                let _ = Command::new("ip").args(["netns", "del", &probe]).output();
            }
            other => {
                eprintln!("netns_rack: skipped, cannot make a network namespace: {other:?}");
                return None;
            }
        }
        let id = std::process::id();
        Some(Self {
            dir: tempfile::tempdir().expect("temp dir"),
            prefix: format!("t{}", id % 100_000),
            net: format!("10.{}.{}", 200 + id % 50, (id / 50) % 250),
        })
    }

    fn cluster_dir(&self) -> PathBuf {
        self.dir.path().join("rack")
    }

    fn cluster_file(&self) -> PathBuf {
        self.cluster_dir().join("cluster.toml")
    }

    /// Runs the script with this rack's names and the binaries under test.
    fn script(&self, args: &[&str]) -> Output {
        let bin = Path::new(env!("CARGO_BIN_EXE_rackpoint")).parent().expect("bin folder");
        Command::new("bash")
            .arg(SCRIPT)
            .args(args)
            .env("RP_PREFIX", &self.prefix)
            .env("RP_NET", &self.net)
            .env("RACKPOINT_BIN", bin)
            .output()
            .expect("run netns-rack.sh")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.script(args);
        assert!(out.status.success(), "netns-rack.sh {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

impl Drop for Rack {
    fn drop(&mut self) {
        let dir = self.cluster_dir();
        let out = self.script(&["down", s(&dir)]);
        if !out.status.success() {
            eprintln!("netns-rack.sh down: {}", text(&out.stderr));
        }
    }
}

#[test]
fn a_rack_of_namespaces_saves_restores_through_a_partition_and_repairs() {
    let Some(rack) = Rack::new() else { return };
    let dir = rack.cluster_dir();
    let up = rack.ok(&["up", s(&dir), "6", "3"]);
    // Every node listens on its own host's address, not loopback.
    for i in 1..=6 {
        let addr = format!("{}.{i}:7100", rack.net);
        assert!(up.contains(&format!("node {i} serving on {addr}")), "{up}");
    }
    let cluster = rack.cluster_file();
    let status = rackpoint(&cluster, &["--json", "status"]);
    assert!(status.status.success(), "status: {}", text(&status.stderr));

    // Two objects, 1 MiB shards, k = 4: several stripes each.
    let weights = rack.dir.path().join("weights.bin");
    let optim = rack.dir.path().join("optim.bin");
    std::fs::write(&weights, data(5, 9 << 20)).expect("write");
    std::fs::write(&optim, data(6, (3 << 20) + 4321)).expect("write");
    let put = rackpoint(&cluster, &["put", "netjob", "100", s(&weights), s(&optim)]);
    assert!(put.status.success(), "put: {}", text(&put.stderr));

    // A partition: hosts 2 and 5 (two racks) cut off; m = 2, so the restore is exact.
    rack.ok(&["cut", "2"]);
    rack.ok(&["cut", "5"]);
    let out = rack.dir.path().join("restored-cut");
    let get = rackpoint(&cluster, &["get", "netjob", "--latest", "--out", s(&out)]);
    assert!(get.status.success(), "get with 2 hosts cut off: {}", text(&get.stderr));
    assert_same(&weights, &out.join("weights.bin"));
    assert_same(&optim, &out.join("optim.bin"));
    let status = doc(&rackpoint(&cluster, &["--json", "status"]));
    let down: Vec<u64> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["up"] == false)
        .filter_map(|n| n["id"].as_u64())
        .collect();
    assert_eq!(down, vec![2, 5], "the cut hosts and only they are down: {status}");
    rack.ok(&["heal", "2"]);
    rack.ok(&["heal", "5"]);

    // Host 3's disk replaced: killed, data folder gone, started empty.
    rack.ok(&["kill", s(&dir), "3"]);
    std::fs::remove_dir_all(dir.join("node-3").join(NODE_DATA_DIR)).expect("wipe node 3");
    rack.ok(&["start", s(&dir), "3"]);
    let verify = rackpoint(&cluster, &["--json", "verify", "netjob", "--step", "100"]);
    assert_eq!(verify.status.code(), Some(1), "not healthy: {}", text(&verify.stderr));
    let v = doc(&verify);
    assert_eq!(v["survives_more_failures"], 1, "node 3's shards are gone: {v}");
    let repair = rackpoint(&cluster, &["repair", "netjob", "--all"]);
    assert!(repair.status.success(), "repair: {}", text(&repair.stderr));
    let verify = rackpoint(&cluster, &["--json", "verify", "netjob", "--step", "100"]);
    assert!(verify.status.success(), "healthy after repair: {}", text(&verify.stderr));
    assert_eq!(doc(&verify)["survives_more_failures"], 2);

    // A 7th host joins: its certificate from the cluster's CA, the signed map pushed to the
    // six; rebalance moves stored shards onto it across the bridge.
    rack.ok(&["host", "7"]);
    let addr = format!("{}.7:7100", rack.net);
    let add = rackpoint(&cluster, &["cluster", "add-node", "--dir", s(&dir), "--addr", &addr]);
    assert!(add.status.success(), "add-node: {}", text(&add.stderr));
    rack.ok(&["start", s(&dir), "7"]);
    let rebalance = rackpoint(&cluster, &["--json", "rebalance", "--all-jobs"]);
    assert!(rebalance.status.success(), "rebalance: {}", text(&rebalance.stderr));
    let moved = doc(&rebalance)["moved"].as_u64().expect("moved");
    assert!(moved > 0, "shards moved onto host 7");
    let status = doc(&rackpoint(&cluster, &["--json", "status"]));
    let on_seven = status["nodes"].as_array().expect("nodes").iter().find(|n| n["id"] == 7);
    assert_eq!(on_seven.and_then(|n| n["shards"].as_u64()), Some(moved), "{status}");
    let verify = rackpoint(&cluster, &["verify", "netjob", "--step", "100"]);
    assert!(verify.status.success(), "healthy after rebalance: {}", text(&verify.stderr));

    // Restored again, with every host back and the shards spread over seven, exact.
    let out = rack.dir.path().join("restored-after-rebalance");
    let get = rackpoint(&cluster, &["get", "netjob", "--step", "100", "--out", s(&out)]);
    assert!(get.status.success(), "get: {}", text(&get.stderr));
    assert_same(&weights, &out.join("weights.bin"));
    assert_same(&optim, &out.join("optim.bin"));
}

fn assert_same(want: &Path, got: &Path) {
    let (a, b) = (std::fs::read(want).expect("read"), std::fs::read(got).expect("read restored"));
    assert!(
        a == b,
        "{} differs from {} ({} vs {} bytes)",
        got.display(),
        want.display(),
        b.len(),
        a.len()
    );
}
