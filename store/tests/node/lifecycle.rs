//! The process contract: SIGTERM in the middle of writes drains and exits 0 with every
//! acknowledged write kept; a second process on a data dir in use is refused; a bad
//! config exits non-zero with a one-line reason.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rackpoint_client::cluster_dir::NODE_FILE;

use crate::common::*;
use crate::durability::{check_writes, write_while_stopping};

#[test]
fn sigterm_drains_exits_0_and_keeps_acknowledged_writes() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    let writes = write_while_stopping(&rt, &mut cluster, |cluster| {
        let status = cluster.terminate(ONE).expect("exits after SIGTERM");
        assert!(status.success(), "exit status {status}");
    });
    cluster.restart(ONE).expect("restart");
    check_writes(&rt, &cluster, &writes);
    let status = cluster.terminate(ONE).expect("idle node exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}

/// Runs `rackpoint-store --config config` to its exit (bounded) and returns whether it
/// succeeded and what it printed on stdout and stderr.
fn run_to_exit(config: &Path) -> (bool, String, String) {
    let mut child = Command::new(store_bin())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    // stderr reaches its end when the process exits; a process that serves instead would
    // keep it open and fail this bound.
    let stderr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(text) => text,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{} did not exit", config.display());
        }
    };
    let status = child.wait().expect("wait");
    let mut out = String::new();
    let _ = stdout.read_to_string(&mut out);
    (status.success(), out, stderr)
}

#[test]
fn a_second_process_on_the_same_data_dir_is_refused() {
    let (_dir, cluster) = start(&options(1));
    let node_dir = cluster.node_dir(ONE);
    let config = std::fs::read_to_string(node_dir.join(NODE_FILE)).expect("node.toml");
    let addr = cluster.map().node(ONE).expect("node").addr.to_string();
    // Same data dir and certificates, another port: only the data dir is shared.
    let second = node_dir.join("second.toml");
    std::fs::write(&second, config.replace(&addr, "127.0.0.1:0")).expect("write");
    let (ok, stdout, stderr) = run_to_exit(&second);
    assert!(!ok, "a second process must not serve the same data");
    assert!(stdout.is_empty(), "it never said it was listening: {stdout}");
    assert!(stderr.contains("lock"), "the reason names the lock: {stderr}");
    assert!(cluster.is_running(ONE), "the first process goes on");
}

#[test]
fn a_bad_config_exits_non_zero_with_a_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "id = 1\nlisten = \"nonsense\"\n").expect("write");
    let (ok, stdout, stderr) = run_to_exit(&config);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(stderr.contains("node.toml"), "{stderr}");
    let (ok, _, stderr) = run_to_exit(&dir.path().join("missing.toml"));
    assert!(!ok);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn the_harness_finds_the_store_binary_beside_the_test_binary() {
    use rackpoint_client::local_cluster::{find_store_binary, STORE_BIN_ENV};
    let found = find_store_binary().expect("found");
    let expected = match std::env::var_os(STORE_BIN_ENV) {
        Some(path) => path.into(),
        None => store_bin(),
    };
    assert_eq!(found.canonicalize().expect("exists"), expected.canonicalize().expect("exists"));
}
