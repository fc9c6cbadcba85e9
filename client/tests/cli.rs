//! The `rackpoint` CLI against real node processes: put, ls, get, verify, rm, status, with
//! the exit statuses scripts rely on (0 only on full success, 1 with one line on stderr).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{data, six_nodes};
use rackpoint_proto::NodeId;

const SHARD: u32 = 64 * 1024;

fn rackpoint(cluster: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rackpoint"))
        .args(args)
        .env("RACKPOINT_CLUSTER", cluster)
        .env_remove("RUST_LOG")
        .output()
        .expect("run rackpoint")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn put_ls_get_verify_rm_round_trip_with_scriptable_exit_codes() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let files = tc.dir.path().join("in");
    let out = tc.dir.path().join("out");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::create_dir_all(&out).expect("mkdir");
    let weights = data(61, 700_001);
    std::fs::write(files.join("weights.bin"), &weights).expect("write");
    std::fs::write(files.join("empty.bin"), b"").expect("write");
    let (w, e) = (files.join("weights.bin"), files.join("empty.bin"));

    let put = rackpoint(
        &cluster,
        &[
            "put",
            "cli-job",
            "7",
            w.to_str().expect("utf-8"),
            e.to_str().expect("utf-8"),
            "--meta",
            "data_offset=70",
        ],
    );
    assert!(put.status.success(), "put: {}", text(&put.stderr));
    assert!(text(&put.stdout).contains("saved cli-job step 7"), "{}", text(&put.stdout));

    let ls = rackpoint(&cluster, &["ls", "cli-job"]);
    assert!(ls.status.success(), "ls: {}", text(&ls.stderr));
    let row = text(&ls.stdout)
        .lines()
        .find(|l| l.trim_start().starts_with('7'))
        .map(str::to_owned)
        .expect("a row for step 7");
    assert!(row.contains("1/1") && row.contains("yes"), "{row}");

    let get =
        rackpoint(&cluster, &["get", "cli-job", "--latest", "--out", out.to_str().expect("utf-8")]);
    assert!(get.status.success(), "get: {}", text(&get.stderr));
    assert_eq!(std::fs::read(out.join("weights.bin")).expect("restored file"), weights);
    assert_eq!(std::fs::read(out.join("empty.bin")).expect("restored file"), b"");

    let verify = rackpoint(&cluster, &["verify", "cli-job", "--step", "7"]);
    assert!(verify.status.success(), "verify: {} {}", text(&verify.stdout), text(&verify.stderr));

    tc.cluster.kill(NodeId(3)).expect("kill");
    let verify = rackpoint(&cluster, &["verify", "cli-job", "--step", "7"]);
    assert_eq!(verify.status.code(), Some(1), "a node down makes the checkpoint not healthy");
    assert_eq!(
        text(&verify.stderr).lines().count(),
        1,
        "one line of reason: {}",
        text(&verify.stderr)
    );
    let status = rackpoint(&cluster, &["status"]);
    assert_eq!(status.status.code(), Some(1), "status fails while a node is down");
    assert!(text(&status.stdout).contains("down"), "{}", text(&status.stdout));

    let get_missing = rackpoint(
        &cluster,
        &["get", "cli-job", "--step", "8", "--out", out.to_str().expect("utf-8")],
    );
    assert_eq!(get_missing.status.code(), Some(1));
    assert!(text(&get_missing.stderr).contains("no manifest"), "{}", text(&get_missing.stderr));

    let rm = rackpoint(&cluster, &["rm", "cli-job", "--step", "7"]);
    assert_eq!(
        rm.status.code(),
        Some(1),
        "node 3 is down, so its copies could not be deleted: {}",
        text(&rm.stdout)
    );
    let ls = rackpoint(&cluster, &["ls", "cli-job"]);
    assert!(
        !text(&ls.stdout).lines().any(|l| l.trim_start().starts_with('7')),
        "step 7 is gone from the reachable nodes: {}",
        text(&ls.stdout)
    );
}

#[test]
fn bad_input_is_refused_with_one_line() {
    let tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let bad_job = rackpoint(&cluster, &["ls", "bad job"]);
    assert_eq!(bad_job.status.code(), Some(2), "clap refuses an invalid job name as a usage error");
    let missing = rackpoint(&cluster, &["put", "job", "1", "/nonexistent/file.bin"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(text(&missing.stderr).lines().count(), 1, "{}", text(&missing.stderr));
    let no_cluster = rackpoint(Path::new("/nonexistent/cluster.toml"), &["status"]);
    assert_eq!(no_cluster.status.code(), Some(1));
    assert!(
        text(&no_cluster.stderr).contains("/nonexistent/cluster.toml"),
        "{}",
        text(&no_cluster.stderr)
    );
}
