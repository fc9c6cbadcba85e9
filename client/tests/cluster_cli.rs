//! The whole cluster at once, with the `rackpoint` CLI against real node processes: `ls`
//! without a job lists the jobs (an identity scoped to some jobs learns no other job's
//! name), nodes that do not answer are named; `gc --all-jobs` and `repair --all-jobs` go over
//! every job and exit with the worst job's status; and `--json` works on every command, in
//! success and in error (a command the table lacks fails the test).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{data, doc, rackpoint, rackpoint_bin, s, six_nodes, text};
use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use rackpoint_client::cluster_dir::NODE_DATA_DIR;
use rackpoint_proto::NodeId;
use serde_json::Value;

const SHARD: u32 = 64 * 1024;

/// Runs `rackpoint ARGS` against `cluster` as the identity `(cert, key)`.
fn rackpoint_as(cluster: &Path, id: &(PathBuf, PathBuf), args: &[&str]) -> Output {
    let mut c = rackpoint_bin();
    c.env("RACKPOINT_CLUSTER", cluster).arg("--cert").arg(&id.0).arg("--key").arg(&id.1);
    c.args(args).output().expect("run rackpoint")
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {} / {}", text(&out.stdout), text(&out.stderr));
}

/// Saves `FILE` as `job` `step` (rank 0 of `world_size`).
fn put(cluster: &Path, file: &Path, job: &str, step: u64, world_size: u32) {
    let (step, ws) = (step.to_string(), world_size.to_string());
    ok(&rackpoint(cluster, &["put", job, &step, s(file), "--world-size", &ws]), "put");
}

fn names(v: &Value) -> Vec<String> {
    v["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["job"].as_str().expect("name").to_owned())
        .collect()
}

fn job<'a>(v: &'a Value, name: &str) -> &'a Value {
    let jobs = v["jobs"].as_array().expect("jobs");
    jobs.iter().find(|j| j["job"] == name).unwrap_or_else(|| panic!("{name} listed: {v}"))
}

/// `rackpoint cluster cert` of a read identity over `jobs`.
fn reader(dir: &Path, name: &str, jobs: &str) -> (PathBuf, PathBuf) {
    let ids = dir.join("ids");
    let out = rackpoint_bin()
        .args(["cluster", "cert", "--dir", s(dir), "--name", name, "--jobs", jobs])
        .args(["--access", "read", "--days", "1", "--out", s(&ids)])
        .output()
        .expect("run cluster cert");
    ok(&out, "cluster cert");
    (ids.join(format!("{name}.pem")), ids.join(format!("{name}.key")))
}

fn steps_of(cluster: &Path, job: &str) -> Vec<u64> {
    let v = doc(&rackpoint(cluster, &["ls", job, "--json"]));
    let list = v["checkpoints"].as_array().expect("checkpoints");
    list.iter().map(|c| c["step"].as_u64().expect("step")).collect()
}

#[test]
fn ls_without_a_job_lists_the_jobs_and_a_scoped_identity_sees_only_its_own() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let dir = tc.dir.path().to_owned();
    let file = dir.join("w.bin");
    std::fs::write(&file, data(3, 200_000)).expect("write");
    for step in [1, 2] {
        put(&cluster, &file, "alpha", step, 1);
    }
    put(&cluster, &file, "beta", 5, 1);
    put(&cluster, &file, "gamma", 7, 2); // rank 1 never saves: incomplete

    let ls = rackpoint(&cluster, &["ls"]);
    ok(&ls, "ls");
    let rows: Vec<String> = text(&ls.stdout).lines().skip(1).map(str::to_owned).collect();
    assert_eq!(rows.len(), 3, "{}", text(&ls.stdout));
    assert!(rows[0].starts_with("alpha") && rows[0].contains(" 2 "), "{rows:?}");
    assert!(text(&ls.stderr).is_empty(), "every node answered: {}", text(&ls.stderr));

    let v = doc(&rackpoint(&cluster, &["ls", "--json"]));
    assert_eq!(
        (&v["command"], &v["ok"], &v["complete"]),
        (&"ls".into(), &true.into(), &true.into())
    );
    assert_eq!(names(&v), ["alpha", "beta", "gamma"]);
    let a = job(&v, "alpha");
    assert_eq!((&a["checkpoints"], &a["complete_checkpoints"]), (&2.into(), &2.into()), "{v}");
    assert_eq!((&a["newest_step"], &a["newest_complete_step"]), (&2.into(), &2.into()), "{v}");
    // 200,000 bytes in one stripe of k = 4: 4 data shards of 50,000 bytes and 2 parity, per
    // step (a short last stripe's shards are as long as its data needs).
    assert_eq!(a["shard_bytes"], 2 * 6 * 50_000, "{v}");
    assert_eq!(a["manifests"], 2 * 3, "m + 1 copies of each manifest: {v}");
    let g = job(&v, "gamma");
    assert_eq!((&g["checkpoints"], &g["complete_checkpoints"]), (&1.into(), &0.into()), "{v}");
    assert_eq!((&g["newest_step"], &g["newest_complete_step"]), (&7.into(), &Value::Null), "{v}");
    assert_eq!(v["unseen_nodes"], serde_json::json!([]), "{v}");

    // An identity scoped to beta learns no other job's name, from any output.
    let id = reader(&dir, "beta-reader", "beta");
    let ls = rackpoint_as(&cluster, &id, &["ls", "--json"]);
    assert_eq!(names(&doc(&ls)), ["beta"]);
    let ls = rackpoint_as(&cluster, &id, &["ls"]);
    ok(&ls, "scoped ls");
    for other in ["alpha", "gamma"] {
        let all = format!("{}{}", text(&ls.stdout), text(&ls.stderr));
        assert!(!all.contains(other), "{other} leaked: {all}");
    }
    let prefix = reader(&dir, "a-reader", "al*,gamma");
    assert_eq!(
        names(&doc(&rackpoint_as(&cluster, &prefix, &["ls", "--json"]))),
        ["alpha", "gamma"]
    );

    // One node down (m = 2): every job is still listed, the node is named.
    tc.cluster.kill(NodeId(4)).expect("kill");
    let ls = rackpoint(&cluster, &["ls", "--json"]);
    ok(&ls, "ls with a node down");
    let v = doc(&ls);
    assert_eq!(names(&v), ["alpha", "beta", "gamma"], "{v}");
    assert_eq!((&v["unseen_nodes"], &v["complete"]), (&serde_json::json!([4]), &false.into()));
    assert_eq!(v["may_miss_jobs"], false);
    let line = text(&ls.stderr);
    assert!(line.contains("may be incomplete") && line.contains("node 4"), "{line}");
    // Three down, more than m: jobs may be missing altogether, exit 4 (unavailable).
    tc.cluster.kill(NodeId(5)).expect("kill");
    tc.cluster.kill(NodeId(6)).expect("kill");
    let ls = rackpoint(&cluster, &["ls", "--json"]);
    assert_eq!(ls.status.code(), Some(4), "{}", text(&ls.stderr));
    let v = doc(&ls);
    assert_eq!((&v["ok"], &v["may_miss_jobs"]), (&false.into(), &true.into()), "{v}");
    assert_eq!(v["unseen_nodes"], serde_json::json!([4, 5, 6]), "{v}");
    let ls = rackpoint(&cluster, &["ls"]);
    assert_eq!(ls.status.code(), Some(4));
    assert!(text(&ls.stderr).contains("bring back node(s) 4, 5, 6"), "{}", text(&ls.stderr));
}

#[test]
fn gc_all_jobs_keeps_the_newest_of_every_job() {
    let tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let file = tc.dir.path().join("w.bin");
    std::fs::write(&file, data(4, 100_000)).expect("write");
    for step in [1, 2, 3] {
        put(&cluster, &file, "one", step, 1);
    }
    for step in [10, 20] {
        put(&cluster, &file, "two", step, 1);
    }
    put(&cluster, &file, "three", 100, 1);
    let gc = rackpoint(&cluster, &["gc", "--all-jobs", "--keep", "1"]);
    ok(&gc, "gc --all-jobs");
    let out = text(&gc.stdout);
    for name in ["one", "three", "two"] {
        assert!(out.contains(&format!("== {name}")), "a report per job: {out}");
    }
    assert!(out.contains("gc --all-jobs: 3 jobs, 3 done"), "{out}");
    assert_eq!(steps_of(&cluster, "one"), [3]);
    assert_eq!(steps_of(&cluster, "two"), [20]);
    assert_eq!(steps_of(&cluster, "three"), [100]);

    put(&cluster, &file, "one", 4, 1);
    let v = doc(&rackpoint(&cluster, &["gc", "--all-jobs", "--keep", "1", "--json"]));
    assert_eq!((&v["command"], &v["ok"], &v["exit_code"]), (&"gc".into(), &true.into(), &0.into()));
    assert_eq!((&v["jobs_total"], &v["jobs_ok"]), (&3.into(), &3.into()), "{v}");
    let one = job(&v, "one");
    assert_eq!(one["result"]["deleted_steps"], serde_json::json!([3]), "{v}");
    assert_eq!(steps_of(&cluster, "one"), [4]);
    // `gc` needs a job or --all-jobs, not both.
    assert_eq!(rackpoint(&cluster, &["gc", "--keep", "1"]).status.code(), Some(2));
    assert_eq!(
        rackpoint(&cluster, &["gc", "one", "--all-jobs", "--keep", "1"]).status.code(),
        Some(2)
    );
}

#[test]
fn repair_all_jobs_brings_every_job_back_after_a_wiped_node() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let file = tc.dir.path().join("w.bin");
    std::fs::write(&file, data(5, 300_000)).expect("write");
    put(&cluster, &file, "red", 1, 1);
    put(&cluster, &file, "red", 2, 1);
    put(&cluster, &file, "blue", 9, 1);
    let wiped = NodeId(2);
    tc.cluster.kill(wiped).expect("kill");
    let data_dir = tc.cluster.node_dir(wiped).join(NODE_DATA_DIR);
    std::fs::remove_dir_all(data_dir).expect("wipe");
    tc.cluster.restart(wiped).expect("restart empty");
    let verify = rackpoint(&cluster, &["verify", "red", "--step", "1"]);
    assert_eq!(verify.status.code(), Some(1), "not healthy before: {}", text(&verify.stdout));

    let repair = rackpoint(&cluster, &["repair", "--all-jobs"]);
    ok(&repair, "repair --all-jobs");
    let out = text(&repair.stdout);
    assert!(out.contains("== blue") && out.contains("== red"), "{out}");
    assert!(out.contains("repair --all-jobs: 2 jobs, 2 done"), "{out}");
    for (name, step) in [("red", "1"), ("red", "2"), ("blue", "9")] {
        let verify = rackpoint(&cluster, &["verify", name, "--step", step, "--json"]);
        ok(&verify, "verify after repair");
        assert_eq!(doc(&verify)["survives_more_failures"], 2, "{name} {step}");
    }
    let v = doc(&rackpoint(&cluster, &["repair", "--all-jobs", "--json"]));
    assert_eq!((&v["ok"], &v["jobs_total"], &v["exit_code"]), (&true.into(), &2.into(), &0.into()));
    assert_eq!(job(&v, "red")["result"]["shards_written"], 0, "nothing left to do: {v}");

    // More than m nodes down: the listing may miss jobs and nothing can be rebuilt; the
    // status is the worst of the jobs' and the listing's, 4 (unavailable), in text and JSON.
    for n in [4, 5, 6] {
        tc.cluster.kill(NodeId(n)).expect("kill");
    }
    let repair = rackpoint(&cluster, &["repair", "--all-jobs", "--json"]);
    let v = doc(&repair);
    assert_eq!(repair.status.code(), Some(4), "{v}");
    assert_eq!(
        (&v["ok"], &v["exit_code"], &v["may_miss_jobs"]),
        (&false.into(), &4.into(), &true.into())
    );
}

/// The subcommands `rackpoint HELP_ARGS --help` lists (clap's "Commands:" section).
fn listed_commands(help_args: &[&str]) -> Vec<String> {
    let out = rackpoint_bin().args(help_args).arg("--help").output().expect("run --help");
    let help = text(&out.stdout);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// Checks a `--json` run: exactly one document on stdout naming `command`, whose `ok` and
/// (for an error) `error.exit_code` agree with the exit status.
fn check_json(out: &Output, command: &str, want_success: bool) -> Value {
    let v = doc(out);
    assert_eq!(v["command"], command, "{v}");
    assert_eq!(out.status.success(), want_success, "{command}: {v} / {}", text(&out.stderr));
    assert_eq!(v["ok"], want_success, "{command}: {v}");
    if !want_success {
        let code = out.status.code().expect("exit code");
        assert_eq!(v["error"]["exit_code"], code, "{command}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    v
}

#[test]
fn every_command_prints_one_json_document_in_success_and_in_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("c");
    let cluster = dir.join("cluster.toml");
    let file = tmp.path().join("w.bin");
    std::fs::write(&file, data(6, 50_000)).expect("write");
    let missing = tmp.path().join("no-such-cluster.toml");
    let out_dir = tmp.path().join("out");
    let f = s(&file);
    let mut covered: BTreeSet<String> = BTreeSet::new();

    // cluster init, cert and up: success, then an error each.
    let init = rackpoint_bin()
        .args(["cluster", "init", "--dir", s(&dir), "--nodes", "6", "--json"])
        .args(["--shard-size", &SHARD.to_string()])
        .output()
        .expect("init");
    let v = check_json(&init, "cluster init", true);
    assert_eq!(v["nodes"].as_array().map(Vec::len), Some(6), "{v}");
    let again = rackpoint_bin()
        .args(["cluster", "init", "--dir", s(&dir), "--nodes", "6", "--json"])
        .output()
        .expect("init");
    check_json(&again, "cluster init", false);
    covered.insert("cluster init".into());
    let cert = |extra: &[&str]| {
        rackpoint_bin()
            .args(["cluster", "cert", "--dir", s(&dir), "--name", "r", "--access", "read"])
            .args(extra)
            .arg("--json")
            .output()
            .expect("cert")
    };
    let v = check_json(&cert(&["--jobs", "j"]), "cluster cert", true);
    assert!(v["fingerprint"].as_str().is_some_and(|f| f.starts_with("blake3:")), "{v}");
    check_json(&cert(&[]), "cluster cert", false);
    covered.insert("cluster cert".into());
    let down = rackpoint_bin()
        .args(["cluster", "up", "--dir", s(&tmp.path().join("nothing")), "--json"])
        .output()
        .expect("up");
    check_json(&down, "cluster up", false);
    let mut up = rackpoint_bin()
        .args(["cluster", "up", "--dir", s(&dir), "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cluster up");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("read");
    let v: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(
        (&v["command"], &v["event"], &v["ok"]),
        (&"cluster up".into(), &"up".into(), &true.into())
    );
    covered.insert("cluster up".into());

    // The data commands: (name, a success, an error and whether the error runs against a
    // cluster file that is not there), in this order.
    let o = s(&out_dir);
    let table: Vec<(&str, Vec<&str>, Vec<&str>, bool)> = vec![
        ("status", vec!["status"], vec!["status"], true),
        ("put", vec!["put", "j", "1", f], vec!["put", "j", "2", "/no/such/file"], false),
        ("get", vec!["get", "j", "--out", o], vec!["get", "nosuchjob", "--out", o], false),
        ("ls", vec!["ls", "j"], vec!["ls", "nosuchjob"], false),
        ("ls", vec!["ls"], vec!["ls"], true),
        ("verify", vec!["verify", "j", "--step", "1"], vec!["verify", "nosuchjob"], false),
        ("repair", vec!["repair", "j", "--all"], vec!["repair", "j", "--all"], true),
        ("repair", vec!["repair", "--all-jobs"], vec!["repair", "--all-jobs"], true),
        ("gc", vec!["gc", "j", "--keep", "1"], vec!["gc", "j", "--keep", "1"], true),
        (
            "gc",
            vec!["gc", "--all-jobs", "--keep", "1"],
            vec!["gc", "--all-jobs", "--keep", "1"],
            true,
        ),
        ("rebalance", vec!["rebalance", "j"], vec!["rebalance", "--all-jobs"], true),
        ("rm", vec!["rm", "j", "--step", "1"], vec!["rm", "j", "--step", "999"], false),
    ];
    for (name, success, error, on_missing) in &table {
        let good = rackpoint(&cluster, &[success.as_slice(), &["--json"]].concat());
        check_json(&good, name, true);
        let target = if *on_missing { &missing } else { &cluster };
        let bad = rackpoint(target, &[error.as_slice(), &["--json"]].concat());
        check_json(&bad, name, false);
        covered.insert((*name).into());
    }

    let demo = rackpoint_bin()
        .args(["demo", "--size-mib", "1", "--dir", s(&tmp.path().join("demo")), "--json"])
        .output()
        .expect("demo");
    let v = check_json(&demo, "demo", true);
    assert_eq!(v["identical"], true, "{v}");
    let demo = rackpoint_bin()
        .args(["demo", "--size-mib", "1", "--dir", "/proc/no-such-dir", "--json"])
        .output()
        .expect("demo");
    check_json(&demo, "demo", false);
    covered.insert("demo".into());

    // The map changes, against the running cluster (node 7 is added, not started), and
    // against a folder that is no cluster or a node that is not in it.
    let (d, nothing) = (s(&dir), tmp.path().join("nothing"));
    let changes: [(&str, Vec<&str>, Vec<&str>); 3] = [
        ("cluster add-node", vec!["--dir", d], vec!["--dir", s(&nothing)]),
        ("cluster push-map", vec!["--dir", d], vec!["--dir", s(&nothing)]),
        ("cluster decommission", vec!["--dir", d, "--node", "6"], vec!["--dir", d, "--node", "99"]),
    ];
    for (name, success, error) in changes {
        let sub = name.trim_start_matches("cluster ");
        for (args, ok) in [(success, true), (error, false)] {
            let out = rackpoint_bin().args(["cluster", sub]).args(args).arg("--json").output();
            check_json(&out.expect("runs"), name, ok);
        }
        covered.insert(name.into());
    }

    // A stale copy of the cluster file learns the map those changes made.
    let stale = tmp.path().join("stale.toml");
    let text = std::fs::read_to_string(&cluster).expect("read").replace("epoch = 2", "epoch = 0");
    std::fs::write(
        &stale,
        text.replace("ca.pem", &format!("{d}/ca.pem"))
            .replace("\"admin.", &format!("\"{d}/admin.")),
    )
    .expect("write");
    let v = check_json(&rackpoint(&stale, &["cluster", "pull", "--json"]), "cluster pull", true);
    assert_eq!(
        (&v["file_epoch"], &v["epoch"], &v["written"]),
        (&0.into(), &2.into(), &true.into()),
        "{v}"
    );
    check_json(&rackpoint(&missing, &["cluster", "pull", "--json"]), "cluster pull", false);
    covered.insert("cluster pull".into());

    // A usage error is one document too.
    let usage = rackpoint_bin().args(["ls", "--bogus", "--json"]).output().expect("usage");
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(doc(&usage)["error"]["kind"], "usage");

    send_signal(Pid::from_raw(up.id() as i32), Signal::SIGTERM).expect("SIGTERM");
    let last = lines.next().expect("a second line").expect("read");
    let v: Value = serde_json::from_str(&last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!((&v["event"], &v["ok"]), (&"stopped".into(), &true.into()), "{v}");
    assert!(up.wait().expect("wait").success());

    // Every command the CLI lists is in the table above.
    let mut listed: BTreeSet<String> = BTreeSet::new();
    for c in listed_commands(&[]) {
        if c == "cluster" {
            listed
                .extend(listed_commands(&["cluster"]).into_iter().map(|s| format!("cluster {s}")));
        } else {
            listed.insert(c);
        }
    }
    assert_eq!(listed, covered, "a command without a --json case in this test");
}
