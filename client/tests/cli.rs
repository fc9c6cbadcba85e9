//! The `rackpoint` CLI against real node processes: put, ls, get, verify, rm, status and
//! `cluster up`, with the exit statuses scripts rely on (0 success, 1 failure with one line
//! on stderr, 2 usage, 3 lost, 4 unavailable while nodes do not answer) and the `--json`
//! documents.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{data, doc, rackpoint, rackpoint_args, rackpoint_bin, s, six_nodes, text};
use nix::sys::signal::{kill as send_signal, Signal};
use nix::unistd::Pid;
use rackpoint_proto::NodeId;
use serde_json::Value;

const SHARD: u32 = 64 * 1024;
/// Generous bound on a `cluster up` starting or stopping its nodes (the machine is shared).
const CLUSTER_UP_BOUND: Duration = Duration::from_secs(120);

/// Every file name in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
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
        Some(4),
        "node 3 is down, so its copies could not be deleted: the delete is left marked: {}",
        text(&rm.stdout)
    );
    assert!(text(&rm.stderr).contains("not finished: node(s) 3"), "{}", text(&rm.stderr));
    let ls = rackpoint(&cluster, &["ls", "cli-job"]);
    let row = text(&ls.stdout).lines().find(|l| l.trim_start().starts_with('7')).map(str::to_owned);
    assert!(
        row.as_deref().is_some_and(|r| r.contains("DELETING") && r.contains(" no ")),
        "step 7 is listed as being deleted, never complete: {}",
        text(&ls.stdout)
    );
}

/// Runs `rackpoint ARGS` with `input` on its standard input (written by a thread, so that a
/// large input cannot stall against the output pipes).
fn rackpoint_stdin(cluster: &Path, args: &[&str], input: Vec<u8>) -> Output {
    let mut child = rackpoint_bin()
        .args(args)
        .env("RACKPOINT_CLUSTER", cluster)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run rackpoint");
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input); // a put that fails early closes the pipe
    });
    let out = child.wait_with_output().expect("wait for rackpoint");
    writer.join().expect("stdin writer");
    out
}

#[test]
fn put_reads_pipes_fifos_and_standard_input_to_their_end() {
    let tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let root = tc.dir.path();
    // Three full stripes (k * SHARD bytes each) and a short one.
    let optim = data(91, 3 * 4 * SHARD as usize + 12_345);
    let file = root.join("optim.bin");
    std::fs::write(&file, &optim).expect("write");
    let saved = |out: &Output, step: &str| {
        assert!(out.status.success(), "put {step}: {}", text(&out.stderr));
        let d = doc(out);
        assert_eq!(
            (&d["step"], &d["bytes"]),
            (&step.parse::<u64>().expect("step").into(), &optim.len().into()),
            "{d}"
        );
    };

    // `cat optim.bin | rackpoint put myjob 401 /dev/stdin`
    let args = ["--json", "put", "myjob", "401", "/dev/stdin", "--name", "optim.bin"];
    saved(&rackpoint_stdin(&cluster, &args, optim.clone()), "401");
    // `rackpoint put myjob 402 <(cat optim.bin)`, through a real shell.
    let line = format!(
        "exec {} --json put myjob 402 <(cat {}) --name optim.bin",
        env!("CARGO_BIN_EXE_rackpoint"),
        s(&file)
    );
    let bash = Command::new("bash")
        .args(["-c", &line])
        .env("RACKPOINT_CLUSTER", &cluster)
        .env_remove("RUST_LOG")
        .output()
        .expect("run bash");
    saved(&bash, "402");
    // `cat optim.bin | rackpoint put myjob 403 -`
    let args = ["--json", "put", "myjob", "403", "-", "--name", "optim.bin"];
    saved(&rackpoint_stdin(&cluster, &args, optim.clone()), "403");
    // A FIFO, its writer started before the put.
    let fifo = root.join("optim.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("run mkfifo");
    assert!(made.success());
    let writer = {
        let (fifo, bytes) = (fifo.clone(), optim.clone());
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).expect("open fifo");
            f.write_all(&bytes).expect("write fifo");
        })
    };
    let put =
        rackpoint(&cluster, &["--json", "put", "myjob", "404", s(&fifo), "--name", "optim.bin"]);
    writer.join().expect("fifo writer");
    saved(&put, "404");

    let ls = doc(&rackpoint(&cluster, &["ls", "myjob", "--json"]));
    let rows: Vec<(u64, u64)> = ls["checkpoints"]
        .as_array()
        .expect("checkpoints")
        .iter()
        .map(|c| (c["step"].as_u64().expect("step"), c["bytes"].as_u64().expect("bytes")))
        .collect();
    let len = optim.len() as u64;
    assert_eq!(rows, [(401, len), (402, len), (403, len), (404, len)], "{ls}");
    for step in ["401", "402", "403", "404"] {
        let out = root.join(format!("out-{step}"));
        let get = rackpoint(&cluster, &["get", "myjob", "--step", step, "--out", s(&out)]);
        assert!(get.status.success(), "get {step}: {}", text(&get.stderr));
        assert!(std::fs::read(out.join("optim.bin")).expect("restored") == optim, "step {step}");
    }

    // What is neither a file nor a stream is refused, by name, and nothing is saved: in a
    // folder (saved as a tree, client/tests/folders.rs) only regular files are taken, so this
    // one, which holds a FIFO, is refused naming it.
    let tree = root.join("tree");
    std::fs::create_dir_all(&tree).expect("mkdir");
    std::fs::write(tree.join("a.bin"), b"a").expect("write");
    let made = Command::new("mkfifo").arg(tree.join("b.fifo")).status().expect("run mkfifo");
    assert!(made.success());
    let folder = rackpoint(&cluster, &["put", "myjob", "405", s(&tree)]);
    assert_eq!(folder.status.code(), Some(1), "{}", text(&folder.stderr));
    let line = text(&folder.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("b.fifo") && line.contains("not a regular file"), "{line}");
    let device = rackpoint(&cluster, &["put", "myjob", "405", "/dev/zero", "--name", "z"]);
    assert_eq!(device.status.code(), Some(1), "{}", text(&device.stderr));
    assert!(text(&device.stderr).contains("is a character device"), "{}", text(&device.stderr));
    let ls = rackpoint(&cluster, &["ls", "myjob", "--step", "405"]);
    assert!(!text(&ls.stdout).contains("405"), "{}", text(&ls.stdout));
    // `-` needs a name; only one `-`; --name with several files names nothing.
    for args in [
        &["put", "myjob", "406", "-"][..],
        &["put", "myjob", "406", "-", "-", "--name", "x"],
        &["put", "myjob", "406", s(&file), s(&file), "--name", "x"],
    ] {
        let out = rackpoint_stdin(&cluster, args, Vec::new());
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn shell_habits_global_options_anywhere_get_out_folders_and_reasons_said_once() {
    let tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let c = s(&cluster);
    let root = tc.dir.path();

    // Global options before or after the subcommand, with no RACKPOINT_CLUSTER.
    for args in [["--cluster", c, "status"], ["status", "--cluster", c]] {
        let out = rackpoint_args(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("up"), "{}", text(&out.stdout));
    }
    for args in [["--json", "--cluster", c, "ls", "j"], ["ls", "j", "--json", "--cluster", c]] {
        let out = rackpoint_args(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        let d = doc(&out);
        assert_eq!((&d["command"], &d["error"]["kind"]), (&"ls".into(), &"failure".into()));
        assert_eq!(d["error"]["message"], "no such job: j has no checkpoint", "{d}");
    }
    let no_cluster = rackpoint_args(&["status"]);
    assert_eq!(no_cluster.status.code(), Some(2), "{}", text(&no_cluster.stderr));
    assert!(text(&no_cluster.stderr).contains("--cluster"), "{}", text(&no_cluster.stderr));

    // Usage errors exit 2.
    assert_eq!(rackpoint(&cluster, &["ls", "bad job"]).status.code(), Some(2));
    assert_eq!(
        rackpoint(&cluster, &["put", "j", "1", "x", "--meta", "novalue"]).status.code(),
        Some(2)
    );
    assert_eq!(rackpoint(&cluster, &["rm", "j"]).status.code(), Some(2), "rm needs --step");

    // A missing file: one line, the OS reason once.
    let missing = rackpoint(&cluster, &["put", "j", "1", "/nonexistent/file.bin"]);
    assert_eq!(missing.status.code(), Some(1));
    let line = text(&missing.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("/nonexistent/file.bin"), "{line}");
    assert_eq!(line.matches("No such file or directory").count(), 1, "{line}");
    let no_cluster = rackpoint(Path::new("/nonexistent/cluster.toml"), &["status"]);
    assert_eq!(no_cluster.status.code(), Some(1));
    let line = text(&no_cluster.stderr);
    assert!(line.contains("/nonexistent/cluster.toml"), "{line}");
    assert!(line.matches("os error").count() <= 1, "{line}");

    // Save two objects.
    let input = root.join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let weights = data(71, 300_003);
    std::fs::write(input.join("weights.bin"), &weights).expect("write");
    std::fs::write(input.join("rng.bin"), b"0123456").expect("write");
    let (w, r) = (input.join("weights.bin"), input.join("rng.bin"));
    let put = rackpoint(&cluster, &["put", "habits", "5", s(&w), s(&r)]);
    assert!(put.status.success(), "put: {}", text(&put.stderr));

    // get --out makes the folder and its parents.
    let out = root.join("a/b/c");
    let get = rackpoint(&cluster, &["get", "habits", "--out", s(&out)]);
    assert!(get.status.success(), "get: {}", text(&get.stderr));
    assert_eq!(std::fs::read(out.join("weights.bin")).expect("restored"), weights);
    assert_eq!(names_in(&out), ["rng.bin", "weights.bin"]);

    // An existing file is refused, named, and nothing at all is written.
    std::fs::write(out.join("weights.bin"), b"mine").expect("write");
    std::fs::remove_file(out.join("rng.bin")).expect("rm");
    let refused = rackpoint(&cluster, &["get", "habits", "--out", s(&out)]);
    assert_eq!(refused.status.code(), Some(1));
    let line = text(&refused.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains(s(&out.join("weights.bin"))) && line.contains("--force"), "{line}");
    assert_eq!(std::fs::read(out.join("weights.bin")).expect("kept"), b"mine");
    assert_eq!(names_in(&out), ["weights.bin"], "no other file, no temporary file");

    // --force replaces it.
    let forced = rackpoint(&cluster, &["get", "habits", "--out", s(&out), "--force"]);
    assert!(forced.status.success(), "get --force: {}", text(&forced.stderr));
    assert_eq!(std::fs::read(out.join("weights.bin")).expect("restored"), weights);
    assert_eq!(names_in(&out), ["rng.bin", "weights.bin"]);

    // A failed get leaves no folder it made behind.
    let fresh = root.join("x/y");
    let failed = rackpoint(&cluster, &["get", "habits", "--step", "6", "--out", s(&fresh)]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(text(&failed.stderr).contains("no manifest"), "{}", text(&failed.stderr));
    assert!(!root.join("x").exists(), "the folders get made are removed again");

    // A folder that cannot be made: the reason once.
    std::fs::write(root.join("plain"), b"").expect("write");
    let blocked = rackpoint(&cluster, &["get", "habits", "--out", s(&root.join("plain/sub"))]);
    assert_eq!(blocked.status.code(), Some(1));
    let line = text(&blocked.stderr);
    assert!(line.contains("plain/sub") && line.matches("os error").count() == 1, "{line}");
}

#[test]
fn json_documents_and_the_not_recoverable_exit_status() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let root = tc.dir.path();
    let input = root.join("in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let weights = data(81, 600_001);
    std::fs::write(input.join("weights.bin"), &weights).expect("write");
    let w = input.join("weights.bin");

    let put = rackpoint(&cluster, &["--json", "put", "jj", "7", s(&w), "--meta", "k=v"]);
    assert!(put.status.success(), "put: {}", text(&put.stderr));
    let p = doc(&put);
    assert_eq!(
        (&p["command"], &p["ok"], &p["job"], &p["step"]),
        (&"put".into(), &true.into(), &"jj".into(), &7.into())
    );
    assert_eq!(p["bytes"], 600_001);
    assert_eq!(p["manifest_id"].as_str().map(str::len), Some(64));
    let manifest_nodes: Vec<u32> = p["manifest_nodes"]
        .as_array()
        .expect("manifest_nodes")
        .iter()
        .map(|n| n.as_u64().expect("node id") as u32)
        .collect();
    assert_eq!(manifest_nodes.len(), 3, "m + 1 replicas");

    let status = doc(&rackpoint(&cluster, &["status", "--json"]));
    assert_eq!(status["ok"], true);
    let nodes = status["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 6);
    assert!(nodes.iter().all(|n| n["up"] == true && n["shards"].as_u64().is_some()), "{status}");

    let ls = doc(&rackpoint(&cluster, &["ls", "jj", "--json"]));
    let cps = ls["checkpoints"].as_array().expect("checkpoints");
    assert_eq!(cps.len(), 1);
    assert_eq!(
        (&cps[0]["step"], &cps[0]["complete"], &cps[0]["survives_more_failures"]),
        (&7.into(), &true.into(), &2.into())
    );

    let out = root.join("out");
    let get = rackpoint(&cluster, &["get", "jj", "--out", s(&out), "--json"]);
    assert!(get.status.success(), "get: {}", text(&get.stderr));
    let g = doc(&get);
    assert_eq!(
        (&g["command"], &g["step"], &g["bytes"]),
        (&"get".into(), &7.into(), &600_001.into())
    );
    assert_eq!(g["objects"][0]["name"], "weights.bin");
    assert_eq!(g["objects"][0]["blake3"], blake3::hash(&weights).to_hex().as_str());
    assert_eq!(g["objects"][0]["path"], s(&out.join("weights.bin")));

    let v = doc(&rackpoint(&cluster, &["verify", "jj", "--json"]));
    assert_eq!(
        (&v["ok"], &v["healthy"], &v["recoverable"], &v["step"]),
        (&true.into(), &true.into(), &true.into(), &7.into())
    );
    assert_eq!(v["bad_shards"].as_array().map(Vec::len), Some(0));

    // A newer checkpoint missing a part is passed over by --latest, and said so.
    let put9 = rackpoint(&cluster, &["put", "jj", "9", s(&w), "--world-size", "2"]);
    assert!(put9.status.success(), "put: {}", text(&put9.stderr));
    let latest = rackpoint(&cluster, &["get", "jj", "--latest", "--out", s(&root.join("l1"))]);
    assert!(latest.status.success(), "get --latest: {}", text(&latest.stderr));
    let said = text(&latest.stderr);
    assert!(said.contains("passed over step 9: 1 of 2 parts committed"), "{said}");
    assert!(said.contains("restored jj step 7"), "{said}");
    let latest = doc(&rackpoint(&cluster, &["get", "jj", "--out", s(&root.join("l2")), "--json"]));
    assert_eq!(latest["step"], 7);
    let p = &latest["passed_over"][0];
    assert_eq!((&p["step"], &p["reason"]), (&9.into(), &"incomplete".into()), "{latest}");
    assert_eq!((&p["parts"], &p["world_size"]), (&1.into(), &2.into()), "{latest}");

    let missing = rackpoint(&cluster, &["get", "jj", "--step", "8", "--out", s(&out), "--json"]);
    assert_eq!(missing.status.code(), Some(1));
    let e = doc(&missing);
    assert_eq!(
        (&e["command"], &e["ok"], &e["error"]["exit_code"], &e["error"]["kind"]),
        (&"get".into(), &false.into(), &1.into(), &"failure".into())
    );
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("no manifest")), "{e}");
    let usage = rackpoint(&cluster, &["ls", "--json", "bad job"]);
    assert_eq!(usage.status.code(), Some(2));
    assert_eq!(doc(&usage)["error"]["kind"], "usage");

    // Kill the 3 nodes that hold no manifest replica: every stripe (k + m = 6 nodes) loses 3
    // shards, more than m = 2, while the manifests stay readable.
    let victims: Vec<NodeId> =
        (1..=6).map(NodeId).filter(|n| !manifest_nodes.contains(&n.0)).collect();
    assert_eq!(victims.len(), 3);
    for v in &victims {
        tc.cluster.kill(*v).expect("kill");
    }
    let status = rackpoint(&cluster, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(1), "nodes are down");
    let st = doc(&status);
    assert_eq!(
        st["ok"], false,
        "the status document itself says so, and no error document follows"
    );
    let down: Vec<u64> = st["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["up"] == false && n["error"].is_string())
        .map(|n| n["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(down, victims.iter().map(|v| u64::from(v.0)).collect::<Vec<_>>());

    // The victims' data is intact: every command says "unavailable" (exit 4) and names them.
    let victim_list = victims.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
    let victim_ids: Vec<u64> = victims.iter().map(|v| u64::from(v.0)).collect();
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array().expect("a list").iter().map(|n| n.as_u64().expect("an id")).collect()
    };
    let lost_out = root.join("lost");
    let down = rackpoint(&cluster, &["get", "jj", "--step", "7", "--out", s(&lost_out)]);
    assert_eq!(down.status.code(), Some(4), "unavailable: {}", text(&down.stderr));
    let line = text(&down.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("jj step 7 rank 0 object weights.bin stripe 0"), "{line}");
    assert!(
        line.contains(&format!("unavailable, not lost: bring back node(s) {victim_list}")),
        "{line}"
    );
    assert!(!lost_out.exists(), "a failed get leaves nothing behind");

    let down = rackpoint(&cluster, &["get", "jj", "--step", "7", "--out", s(&lost_out), "--json"]);
    assert_eq!(down.status.code(), Some(4));
    let e = doc(&down);
    assert_eq!((&e["error"]["exit_code"], &e["error"]["kind"]), (&4.into(), &"unavailable".into()));
    assert!(e["error"].get("not_recoverable").is_none(), "{e}");
    let un = &e["error"]["unavailable"];
    assert_eq!(un["reason"], "stripe_unavailable", "{e}");
    assert_eq!((&un["job"], &un["step"], &un["rank"]), (&"jj".into(), &7.into(), &0.into()), "{e}");
    assert_eq!((&un["object"], &un["stripe"]), (&"weights.bin".into(), &0.into()), "{e}");
    assert_eq!(ids(&un["nodes"]), victim_ids, "{e}");
    assert!(
        un["failed_shards"].as_array().is_some_and(|f| f.iter().all(|f| f["why"] == "node_down")),
        "{e}"
    );

    let latest = rackpoint(&cluster, &["get", "jj", "--latest", "--out", s(&lost_out)]);
    assert_eq!(latest.status.code(), Some(4), "{}", text(&latest.stderr));
    let line = text(&latest.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    for part in [
        "job jj, the latest complete checkpoint: unavailable while node(s)",
        "nothing is known lost",
        "step 9: 1 of 2 parts",
        "step 7: rank 0: object weights.bin stripe 0 has 3 shards on nodes that do not answer",
    ] {
        assert!(line.contains(part), "says {part:?}: {line}");
    }
    let latest = rackpoint(&cluster, &["get", "jj", "--out", s(&lost_out), "--json"]);
    assert_eq!(latest.status.code(), Some(4));
    let e = doc(&latest);
    let un = &e["error"]["unavailable"];
    assert_eq!(
        (&un["reason"], &un["job"], &un["step"]),
        (&"checkpoint_unavailable".into(), &"jj".into(), &Value::Null),
        "{e}"
    );
    assert_eq!(ids(&un["nodes"]), victim_ids, "{e}");
    let seven = un["passed_over"]
        .as_array()
        .expect("passed_over")
        .iter()
        .find(|p| p["step"] == 7)
        .unwrap_or_else(|| panic!("step 7 is passed over: {e}"));
    assert_eq!(
        (&seven["reason"], &seven["object"], &seven["stripe"]),
        (&"unavailable".into(), &"weights.bin".into(), &0.into()),
        "{e}"
    );
    assert_eq!(ids(&seven["nodes"]), victim_ids, "{e}");

    let verify = rackpoint(&cluster, &["verify", "jj", "--step", "7", "--json"]);
    assert_eq!(verify.status.code(), Some(4));
    let v = doc(&verify);
    assert_eq!(
        (&v["ok"], &v["recoverable"], &v["lost"], &v["survives_more_failures"]),
        (&false.into(), &false.into(), &false.into(), &Value::Null)
    );
    assert_eq!(ids(&v["unavailable_nodes"]), victim_ids, "{v}");
    assert!(
        v["bad_shards"].as_array().is_some_and(|b| b.iter().all(|b| b["why"] == "node_down")),
        "{v}"
    );
    let ls = rackpoint(&cluster, &["ls", "jj"]);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    let row = text(&ls.stdout).lines().find(|l| l.trim_start().starts_with('7')).map(str::to_owned);
    assert!(row.as_ref().is_some_and(|r| r.contains("UNAVAILABLE")), "{}", text(&ls.stdout));
    assert!(!text(&ls.stdout).contains("LOST"), "{}", text(&ls.stdout));
    let ls = doc(&rackpoint(&cluster, &["ls", "jj", "--json"]));
    let seven = ls["checkpoints"].as_array().expect("checkpoints").iter().find(|c| c["step"] == 7);
    let seven = seven.unwrap_or_else(|| panic!("step 7 is listed: {ls}"));
    assert_eq!(seven["survives_more_failures"], Value::Null, "{ls}");
    assert_eq!(ids(&seven["unavailable_nodes"]), victim_ids, "{ls}");

    // Their data folders wiped, the victims come back empty: now nodes answer that the shards
    // are missing, and the checkpoint is lost (exit 3).
    for v in &victims {
        let data = tc.cluster.node_dir(*v).join(rackpoint_client::cluster_dir::NODE_DATA_DIR);
        std::fs::remove_dir_all(data).expect("wipe");
        tc.cluster.restart(*v).expect("restart empty");
    }
    let lost = rackpoint(&cluster, &["get", "jj", "--step", "7", "--out", s(&lost_out)]);
    assert_eq!(lost.status.code(), Some(3), "lost: {}", text(&lost.stderr));
    let line = text(&lost.stderr);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("jj step 7 rank 0 object weights.bin stripe 0"), "{line}");
    assert!(line.contains("more than m shards are missing or corrupt: lost"), "{line}");
    for v in &victims {
        assert!(line.contains(&format!("node {v}")), "names the node {v}: {line}");
    }
    assert!(!lost_out.exists(), "a failed get leaves nothing behind");

    let lost = rackpoint(&cluster, &["get", "jj", "--step", "7", "--out", s(&lost_out), "--json"]);
    assert_eq!(lost.status.code(), Some(3));
    let e = doc(&lost);
    assert_eq!(
        (&e["error"]["exit_code"], &e["error"]["kind"]),
        (&3.into(), &"not_recoverable".into())
    );
    let nr = &e["error"]["not_recoverable"];
    assert_eq!(nr["reason"], "stripe_lost", "{e}");
    assert_eq!((&nr["job"], &nr["step"], &nr["rank"]), (&"jj".into(), &7.into(), &0.into()), "{e}");
    assert_eq!((&nr["object"], &nr["stripe"]), (&"weights.bin".into(), &0.into()), "{e}");
    let mut failed: Vec<u64> = nr["failed_shards"]
        .as_array()
        .expect("failed_shards")
        .iter()
        .filter(|f| f["why"] == "missing")
        .map(|f| f["node"].as_u64().expect("node"))
        .collect();
    failed.sort_unstable();
    failed.dedup();
    assert_eq!(failed, victim_ids, "{e}");

    let latest = rackpoint(&cluster, &["get", "jj", "--latest", "--out", s(&lost_out)]);
    assert_eq!(latest.status.code(), Some(3), "lost: {}", text(&latest.stderr));
    let verify = rackpoint(&cluster, &["verify", "jj", "--step", "7", "--json"]);
    assert_eq!(verify.status.code(), Some(3));
    let v = doc(&verify);
    assert_eq!(
        (&v["ok"], &v["recoverable"], &v["lost"]),
        (&false.into(), &false.into(), &true.into())
    );
    assert!(
        v["bad_shards"].as_array().is_some_and(|b| b.iter().all(|b| b["why"] == "missing")),
        "{v}"
    );
}

#[test]
fn stopped_nodes_are_unavailable_and_what_does_not_exist_is_named() {
    let mut tc = six_nodes(SHARD);
    let cluster = tc.cluster.cluster_file();
    let root = tc.dir.path();
    let optim = data(101, 500_001);
    let file = root.join("optim.bin");
    std::fs::write(&file, &optim).expect("write");
    let put = rackpoint(&cluster, &["--json", "put", "llm", "402", s(&file)]);
    assert!(put.status.success(), "put: {}", text(&put.stderr));
    let manifest_nodes: Vec<u64> = doc(&put)["manifest_nodes"]
        .as_array()
        .expect("manifest_nodes")
        .iter()
        .map(|n| n.as_u64().expect("node id"))
        .collect();

    // A mistyped job is no such job (exit 1), and so is a step that does not exist for rm.
    let out = root.join("out");
    for args in [
        &["get", "lmm", "--latest", "--out", s(&out)][..],
        &["get", "lmm", "--step", "402", "--out", s(&out)],
        &["ls", "lmm"],
        &["verify", "lmm"],
    ] {
        let r = rackpoint(&cluster, args);
        assert_eq!(r.status.code(), Some(1), "{args:?}: {}", text(&r.stderr));
        let line = text(&r.stderr);
        assert_eq!(line.trim(), "rackpoint: no such job: lmm has no checkpoint", "{args:?}");
    }
    for (job, step) in [("llm", "999"), ("lmm", "402")] {
        let rm = rackpoint(&cluster, &["rm", job, "--step", step]);
        assert_eq!(rm.status.code(), Some(1), "rm {job} {step}: {}", text(&rm.stdout));
        assert!(text(&rm.stderr).contains("no such checkpoint"), "{}", text(&rm.stderr));
    }

    // Three nodes stopped (SIGSTOP): sockets open, data intact, nothing answers.
    let victims: Vec<NodeId> =
        (1..=6).map(NodeId).filter(|n| !manifest_nodes.contains(&u64::from(n.0))).collect();
    for v in &victims {
        tc.cluster.pause(*v).expect("pause");
    }
    let victim_list = victims.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
    let get = rackpoint(&cluster, &["get", "llm", "--latest", "--out", s(&out)]);
    assert_eq!(get.status.code(), Some(4), "{}", text(&get.stderr));
    let line = text(&get.stderr);
    assert!(
        line.contains(&format!("unavailable while node(s) {victim_list} do not answer")),
        "{line}"
    );
    assert!(!line.contains("lost 3") && !line.contains("LOST"), "{line}");
    let get = rackpoint(&cluster, &["get", "llm", "--step", "402", "--out", s(&out)]);
    assert_eq!(get.status.code(), Some(4), "{}", text(&get.stderr));
    assert!(
        text(&get.stderr).contains(&format!("bring back node(s) {victim_list}")),
        "{}",
        text(&get.stderr)
    );
    let ls = rackpoint(&cluster, &["ls", "llm"]);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    assert!(
        text(&ls.stdout).contains("UNAVAILABLE") && !text(&ls.stdout).contains("LOST"),
        "{}",
        text(&ls.stdout)
    );
    // With more than m nodes silent, a job not found may be on them: not "no such job".
    let typo = rackpoint(&cluster, &["get", "lmm", "--out", s(&out)]);
    assert_eq!(typo.status.code(), Some(4), "{}", text(&typo.stderr));
    assert!(!out.exists(), "failed gets leave nothing behind");

    // Thawed, the same checkpoint restores byte for byte: it was never lost.
    for v in &victims {
        tc.cluster.resume(*v).expect("resume");
    }
    let get = rackpoint(&cluster, &["get", "llm", "--latest", "--out", s(&out)]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    assert!(std::fs::read(out.join("optim.bin")).expect("restored") == optim);
}

/// `rackpoint cluster up` running in the background, its stdout lines on a channel.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    errors: mpsc::Receiver<String>,
}

/// Sends every line `from` gives on a channel, until it ends.
fn lines_of(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

impl Up {
    fn start(dir: &Path) -> Up {
        let mut child = rackpoint_bin()
            .args(["cluster", "up", "--dir", s(dir)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run rackpoint cluster up");
        let lines = lines_of(child.stdout.take().expect("piped"));
        let errors = lines_of(child.stderr.take().expect("piped"));
        Up { child, lines, errors }
    }

    /// The node lines (`node N listening ADDR (RACK) pid PID, log ...`) printed before the
    /// "nodes up" line, as (address, pid).
    fn wait_up_pids(&self) -> Vec<(SocketAddr, u32)> {
        let mut nodes = Vec::new();
        loop {
            let line =
                self.lines.recv_timeout(CLUSTER_UP_BOUND).expect("cluster up prints its nodes");
            if line.contains("nodes up") {
                return nodes;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let addr = words[3].parse().unwrap_or_else(|e| panic!("{e}: {line}"));
            let pid =
                words[6].trim_end_matches(',').parse().unwrap_or_else(|e| panic!("{e}: {line}"));
            nodes.push((addr, pid));
        }
    }

    /// The next stderr line (bounded wait).
    fn next_error(&self) -> String {
        self.errors.recv_timeout(CLUSTER_UP_BOUND).expect("cluster up reports on stderr")
    }

    /// The `listening` addresses printed before the "nodes up" line.
    fn wait_up(&self) -> Vec<SocketAddr> {
        self.wait_up_pids().into_iter().map(|(addr, _)| addr).collect()
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        send_signal(pid, signal).expect("signal cluster up");
    }

    /// Waits (bounded) for the process to exit; its status, stderr and the stdout lines after
    /// the ones read so far.
    fn wait(self) -> (ExitStatus, String, Vec<String>) {
        let (tx, rx) = mpsc::channel();
        let mut child = self.child;
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx.recv_timeout(CLUSTER_UP_BOUND).expect("cluster up exits").expect("wait");
        let mut stderr = String::new();
        while let Ok(line) = self.errors.recv_timeout(CLUSTER_UP_BOUND) {
            stderr.push_str(&line);
            stderr.push('\n');
        }
        // The rest of stdout, up to its end (the reader thread then drops the sender).
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(CLUSTER_UP_BOUND) {
            rest.push(line);
        }
        (status, stderr, rest)
    }
}

/// Whether nothing listens on `addr` (a UDP bind there succeeds).
fn port_free(addr: SocketAddr) -> bool {
    UdpSocket::bind(addr).is_ok()
}

#[test]
fn cluster_up_runs_the_nodes_in_the_foreground_and_stops_them_on_a_signal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cdir: PathBuf = dir.path().join("rp");
    let init = rackpoint_args(&[
        "cluster",
        "init",
        "--dir",
        s(&cdir),
        "--nodes",
        "3",
        "--k",
        "2",
        "--m",
        "1",
    ]);
    assert!(init.status.success(), "init: {}", text(&init.stderr));
    assert!(text(&init.stdout).contains("rackpoint cluster up --dir"), "{}", text(&init.stdout));
    let cluster = cdir.join("cluster.toml");

    let mut addrs = Vec::new();
    for stop in [Signal::SIGINT, Signal::SIGTERM] {
        let up = Up::start(&cdir);
        addrs = up.wait_up();
        assert_eq!(addrs.len(), 3);
        let status = rackpoint(&cluster, &["status", "--json"]);
        assert!(status.status.success(), "{}", text(&status.stderr));
        let nodes = doc(&status)["nodes"].as_array().expect("nodes").clone();
        let listed: Vec<SocketAddr> = nodes
            .iter()
            .map(|n| n["addr"].as_str().expect("addr").parse().expect("addr"))
            .collect();
        assert_eq!(listed, addrs, "printed where each node listens");
        up.signal(stop);
        let (code, stderr, rest) = up.wait();
        assert_eq!(code.code(), Some(0), "{stop}: exit 0: {stderr}");
        assert!(rest.iter().any(|l| l.contains("stopped 3 nodes")), "{rest:?}");
        assert!(addrs.iter().all(|a| port_free(*a)), "every node stopped after {stop}");
    }

    // A node killed under `cluster up` is reported (pid, how it ended, how to start it
    // again) and the others keep serving; a signal then stops the rest.
    let up = Up::start(&cdir);
    let nodes = up.wait_up_pids();
    let victim = Pid::from_raw(i32::try_from(nodes[1].1).expect("pid"));
    send_signal(victim, Signal::SIGKILL).expect("kill node 2");
    let report = up.next_error();
    assert!(report.contains(&format!("node 2 (pid {}) exited by itself", nodes[1].1)), "{report}");
    assert!(report.contains("2 node(s) keep running"), "{report}");
    assert!(
        report.contains("rackpoint-store --config") && report.contains("node-2/node.toml"),
        "{report}"
    );
    let status = rackpoint(&cluster, &["status", "--json"]);
    let listed = doc(&status)["nodes"].as_array().expect("nodes").clone();
    let up_ids: Vec<u64> =
        listed.iter().filter(|n| n["up"] == true).map(|n| n["id"].as_u64().expect("id")).collect();
    assert_eq!(up_ids, vec![1, 3], "the others keep serving: {listed:?}");
    up.signal(Signal::SIGTERM);
    let (code, stderr, rest) = up.wait();
    assert_eq!(code.code(), Some(0), "{stderr}");
    assert!(rest.iter().any(|l| l.contains("stopped 2 nodes")), "{rest:?}");
    assert!(addrs.iter().all(|a| port_free(*a)), "every node stopped");

    // A node that cannot start (its port is taken) fails `cluster up` clearly, and the nodes
    // started are stopped.
    let taken = UdpSocket::bind(addrs[1]).expect("take node 2's port");
    let (code, stderr, _) = Up::start(&cdir).wait();
    assert_eq!(code.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("node 2") && stderr.contains("node-2/node.log"), "{stderr}");
    drop(taken);
    assert!(addrs.iter().all(|a| port_free(*a)), "no node left running");

    let missing = rackpoint_args(&["cluster", "up", "--dir", s(&dir.path().join("none"))]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cluster.toml"), "{}", text(&missing.stderr));
}
