//! The issue-16 attacks replayed with the `rackpoint` CLI against real node processes: a job's
//! certificate from `rackpoint cluster cert` cannot delete, collect or overwrite another job's
//! checkpoints, a storage node's key is no client identity, and each refusal is one line with
//! exit status 5; the owner's checkpoint restores byte-identical afterwards.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{data, six_nodes};
use rackpoint_proto::NodeId;

const SHARD: u32 = 64 * 1024;
/// The exit status of a refusal (README, "Exit status").
const REFUSED: i32 = 5;

fn rackpoint(cluster: &Path, identity: Option<&(PathBuf, PathBuf)>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rackpoint"));
    c.env_remove("RUST_LOG").env_remove("RACKPOINT_CERT").env_remove("RACKPOINT_KEY");
    c.env("RACKPOINT_CLUSTER", cluster);
    if let Some((cert, key)) = identity {
        c.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    c.args(args).output().expect("run rackpoint")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `rackpoint cluster cert` into `dir/ids`; returns the certificate and key paths.
fn cert(dir: &Path, name: &str, jobs: &str, access: &str) -> (PathBuf, PathBuf) {
    let ids = dir.join("ids");
    let out = Command::new(env!("CARGO_BIN_EXE_rackpoint"))
        .args(["cluster", "cert", "--dir"])
        .arg(dir)
        .args(["--name", name, "--jobs", jobs, "--access", access, "--days", "7", "--out"])
        .arg(&ids)
        .output()
        .expect("run cluster cert");
    assert!(out.status.success(), "cluster cert: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("serial") && stdout.contains("blake3:"), "{stdout}");
    let files = (ids.join(format!("{name}.pem")), ids.join(format!("{name}.key")));
    assert_eq!(std::fs::metadata(&files.1).expect("key").mode() & 0o777, 0o600);
    files
}

fn assert_refused(out: &Output, what: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(REFUSED), "{what}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    assert!(stderr.contains("permission denied"), "{what}: {stderr}");
}

#[test]
fn another_jobs_certificate_cannot_delete_collect_or_replace_its_checkpoints() {
    let tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let dir = tc.dir.path();
    let victim = cert(dir, "victim", "jobB", "write");
    let attacker = cert(dir, "attacker", "jobA", "write");
    let reader = cert(dir, "auditor", "job*", "read");

    let file = dir.join("weights.bin");
    let bytes = data(16, 300_000);
    std::fs::write(&file, &bytes).expect("write");
    let f = file.to_str().expect("utf-8");
    for step in ["100", "200"] {
        let put = rackpoint(&cluster, Some(&victim), &["put", "jobB", step, f]);
        assert!(put.status.success(), "the owner saves: {}", text(&put.stderr));
    }

    assert_refused(&rackpoint(&cluster, Some(&attacker), &["rm", "jobB", "--step", "100"]), "rm");
    assert_refused(&rackpoint(&cluster, Some(&attacker), &["gc", "jobB", "--keep", "1"]), "gc");
    let evil = dir.join("evil.bin");
    std::fs::write(&evil, b"attacker's bytes").expect("write");
    let e = evil.to_str().expect("utf-8");
    let max = u64::MAX.to_string();
    assert_refused(&rackpoint(&cluster, Some(&attacker), &["put", "jobB", &max, e]), "put");
    assert_refused(&rackpoint(&cluster, Some(&reader), &["put", "jobB", "300", e]), "read put");
    assert_refused(
        &rackpoint(&cluster, Some(&reader), &["rm", "jobB", "--step", "200"]),
        "read rm",
    );

    // A storage node's key: the TLS handshake refuses it as a client.
    let node = tc.cluster.node_dir(NodeId(1));
    let as_node = (node.join("node.pem"), node.join("node.key"));
    let ls = rackpoint(&cluster, Some(&as_node), &["ls", "jobB"]);
    assert!(!ls.status.success(), "a node's key listed a job: {}", text(&ls.stdout));

    // The owner's checkpoints are untouched: both listed, the latest is its own bytes.
    let ls = rackpoint(&cluster, Some(&reader), &["ls", "jobB", "--json"]);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&ls.stdout).expect("json");
    let steps: Vec<u64> = doc["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .map(|c| c["step"].as_u64().expect("step"))
        .collect();
    assert_eq!(steps, [100, 200]);
    let out = dir.join("restored");
    let o = out.to_str().expect("utf-8");
    let get = rackpoint(&cluster, Some(&reader), &["get", "jobB", "--latest", "--out", o]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert_eq!(std::fs::read(out.join("weights.bin")).expect("restored"), bytes);
}
