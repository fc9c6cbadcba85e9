//! Harness tests with small shell scripts standing in for `rackpoint-store` (the harness,
//! not the node, is under test here; `store/tests` runs the real node). All scenarios run
//! in one test so that no other test thread forks while a script is open for writing
//! (which would make exec fail with ETXTBSY).

use super::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;

const READY_THEN_WAIT: &str = r#"#!/bin/sh
addr=$(sed -n 's/^listen = "\(.*\)"$/\1/p' "$2")
echo "node starting with $1 $2" >&2
echo "listening $addr"
exec sleep 600
"#;

const EXIT_EARLY: &str = "#!/bin/sh\necho 'cannot open data dir' >&2\nexit 3\n";

const WRONG_LINE: &str = "#!/bin/sh\necho 'listening 10.9.9.9:1'\nexec sleep 600\n";

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn opts(nodes: usize) -> InitOptions {
    InitOptions { shard_size_bytes: 4096, ..InitOptions::new(nodes) }
}

#[test]
fn the_harness_starts_signals_and_reaps_node_processes() {
    let bins = tempfile::tempdir().expect("temp dir");
    let ready = script(bins.path(), "ready.sh", READY_THEN_WAIT);
    let early = script(bins.path(), "early.sh", EXIT_EARLY);
    let wrong = script(bins.path(), "wrong.sh", WRONG_LINE);

    lifecycle(&ready);
    exits_before_ready(&early);
    wrong_ready_line(&wrong);
    missing_binary();
}

fn lifecycle(bin: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = LocalCluster::start(dir.path(), &opts(3), bin).expect("start");
    let (one, two, three) = (NodeId(1), NodeId(2), NodeId(3));
    assert!(cluster.map().nodes.iter().all(|n| cluster.is_running(n.id)));
    assert_eq!(cluster.cluster_file(), dir.path().join(CLUSTER_FILE));
    assert_eq!(cluster.node_dir(two), dir.path().join("node-2"));
    let log = std::fs::read_to_string(cluster.node_dir(one).join(NODE_LOG_FILE)).expect("log");
    assert!(log.contains("--config") && log.contains("node-1/node.toml"), "{log}");

    let status = cluster.kill(one).expect("kill");
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    assert!(!cluster.is_running(one));
    assert!(matches!(cluster.kill(one), Err(LocalClusterError::NotRunning(_))));
    cluster.restart(one).expect("restart");
    assert!(cluster.is_running(one));
    assert!(matches!(cluster.restart(one), Err(LocalClusterError::AlreadyRunning(_))));

    cluster.pause(two).expect("pause");
    assert!(cluster.is_running(two), "a paused node still runs");
    cluster.resume(two).expect("resume");

    cluster.pause(three).expect("pause");
    let status = cluster.terminate(three).expect("terminate reaches a paused node");
    assert_eq!(status.signal(), Some(Signal::SIGTERM as i32));
    assert!(!cluster.is_running(three));
    assert!(matches!(cluster.pause(NodeId(9)), Err(LocalClusterError::UnknownNode(_))));

    let pids: Vec<Pid> = cluster
        .nodes
        .values()
        .filter_map(|slot| slot.lock().expect("no panics").as_ref().map(pid_of))
        .collect();
    assert_eq!(pids.len(), 2);
    drop(cluster);
    for pid in pids {
        assert_eq!(send_signal(pid, None), Err(nix::errno::Errno::ESRCH), "{pid} reaped");
    }
}

fn exits_before_ready(bin: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = LocalCluster::start(dir.path(), &opts(2), bin).err().expect("fails");
    let LocalClusterError::ExitedBeforeReady { node, status, log } = &err else { panic!("{err}") };
    assert_eq!(*node, NodeId(1));
    assert!(status.contains('3'), "{status}");
    assert!(err.to_string().contains("node-1/node.log"), "{err}");
    let text = std::fs::read_to_string(log).expect("log");
    assert!(text.contains("cannot open data dir"), "{text}");
}

fn wrong_ready_line(bin: &Path) {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = LocalCluster::start(dir.path(), &opts(1), bin).err().expect("fails");
    assert!(
        matches!(&err, LocalClusterError::BadReadyLine { line, .. } if line.contains("10.9.9.9")),
        "{err}"
    );
}

fn missing_binary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err =
        LocalCluster::start(dir.path(), &opts(1), &dir.path().join("nope")).err().expect("fails");
    assert!(matches!(err, LocalClusterError::Spawn { .. }), "{err}");
}
