//! SIGTERM to a real-mode `rackpoint-sim run` leaves no node process behind: the test starts
//! the simulator on the small real scenario, waits for its "nodes up in DIR" line on stderr,
//! finds the `rackpoint-store` processes started for DIR in /proc, sends SIGTERM, and checks
//! that the simulator exits as a SIGTERM would (143) with a line saying why, and that every
//! one of those node processes is gone.
//!
//! Needs the `rackpoint-store` binary built beside the test (or `RACKPOINT_STORE_BIN`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rackpoint_client::local_cluster::find_store_binary;

/// Processes whose command line names `dir` (the node processes of that cluster folder).
fn processes_under(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc is readable") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains("rackpoint-store") && cmdline.contains(&needle) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// Whether process `pid` still exists with `cmdline` (and is not a zombie).
fn alive(pid: u32, cmdline: &str) -> bool {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let Ok(raw) = std::fs::read(proc_dir.join("cmdline")) else { return false };
    let zombie = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false);
    String::from_utf8_lossy(&raw).replace('\0', " ") == cmdline && !zombie
}

#[test]
fn sigterm_stops_every_node_the_run_started() {
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke-kill.toml");
    let mut sim = Command::new(env!("CARGO_BIN_EXE_rackpoint-sim"))
        .arg("run")
        .arg(&scenario)
        .args(["--mode", "real", "--trials", "1000"])
        .env("RACKPOINT_STORE_BIN", find_store_binary().expect("rackpoint-store is built"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rackpoint-sim starts");
    let mut stderr = BufReader::new(sim.stderr.take().expect("stderr is piped"));
    let mut seen = String::new();
    let dir = loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).expect("stderr reads");
        assert!(n > 0, "rackpoint-sim ended before its nodes were up:\n{seen}");
        seen.push_str(&line);
        if let Some((_, dir)) = line.trim_end().split_once(" nodes up in ") {
            break PathBuf::from(dir);
        }
    };
    let nodes = processes_under(&dir);
    assert_eq!(nodes.len(), 6, "the smoke scenario's first cell runs 6 nodes: {nodes:?}");
    let pid = Pid::from_raw(i32::try_from(sim.id()).expect("pids fit in i32"));
    kill(pid, Signal::SIGTERM).expect("SIGTERM is sent");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("stderr reads to its end");
    let status = sim.wait().expect("rackpoint-sim is reaped");
    assert_eq!(status.code(), Some(143), "exits as SIGTERM would; stderr:\n{seen}{rest}");
    assert!(rest.contains("interrupted by SIGTERM"), "says why: {rest}");
    let left: Vec<&(u32, String)> = nodes.iter().filter(|(p, c)| alive(*p, c)).collect();
    assert!(left.is_empty(), "node processes left running: {left:?}");
    assert!(processes_under(&dir).is_empty(), "no node of {} is running", dir.display());
}
