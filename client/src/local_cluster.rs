//! Real `rackpoint-store` processes on loopback, for tests, the demo and the simulator:
//! make a cluster folder, spawn one process per node, wait for each one's `listening` line,
//! and kill, pause, resume, terminate or restart nodes on demand.
//!
//! Waits are bounded and wait on real events (a line on the child's stdout, the child's
//! exit), never on sleeps. Each node's stderr is appended to `node-<id>/node.log`. Dropping
//! a [`LocalCluster`] kills (SIGKILL) and reaps every node it started.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send_signal, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::Pid;
use rackpoint_proto::limits::{LOCAL_NODE_READY_TIMEOUT_MS, LOCAL_NODE_STOP_TIMEOUT_MS};
use rackpoint_proto::{ClusterMap, NodeId};

use crate::cluster_dir::{
    self, node_dir, ClusterDirError, InitOptions, CLUSTER_FILE, NODE_DATA_DIR, NODE_FILE,
    NODE_LOG_FILE,
};
use crate::tls::ClientTls;

/// Environment variable naming the `rackpoint-store` binary to run.
pub const STORE_BIN_ENV: &str = "RACKPOINT_STORE_BIN";
/// File name of the node binary.
const STORE_BIN_NAME: &str = "rackpoint-store";
/// Longest `listening` line read from a node (anything longer is not a ready line).
const MAX_READY_LINE_BYTES: u64 = 4096;

/// Why a local cluster or one of its nodes could not be started or controlled.
#[derive(Debug, thiserror::Error)]
pub enum LocalClusterError {
    /// The cluster folder could not be made or read.
    #[error(transparent)]
    ClusterDir(#[from] ClusterDirError),
    /// No `rackpoint-store` binary was found.
    #[error("cannot find {STORE_BIN_NAME} (set {STORE_BIN_ENV}); tried {tried:?}")]
    StoreBinaryNotFound {
        /// The places looked at.
        tried: Vec<PathBuf>,
    },
    /// The node is not in the cluster map.
    #[error("node {0} is not in the cluster")]
    UnknownNode(NodeId),
    /// The node has a live process already.
    #[error("node {0} is already running")]
    AlreadyRunning(NodeId),
    /// The node has no process.
    #[error("node {0} is not running")]
    NotRunning(NodeId),
    /// The node's process or its log file could not be set up.
    #[error("cannot start node {node} ({what}): {error}")]
    Spawn {
        /// The node.
        node: NodeId,
        /// What failed.
        what: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The node exited before it said it was listening.
    #[error("node {node} exited before ready ({status}): see {}", log.display())]
    ExitedBeforeReady {
        /// The node.
        node: NodeId,
        /// How it exited.
        status: String,
        /// Its log.
        log: PathBuf,
    },
    /// The node did not say it was listening in time (it has been killed).
    #[error("node {node} was not ready within {after_ms} ms: see {}", log.display())]
    NotReady {
        /// The node.
        node: NodeId,
        /// The bound.
        after_ms: u64,
        /// Its log.
        log: PathBuf,
    },
    /// A node's stored files could not be read or rewritten.
    #[error("cannot corrupt {}: {error}", path.display())]
    DiskIo {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Fault injection found none of the bytes it was to corrupt.
    #[error("node {node}: none of the {len} given bytes are stored under {}", dir.display())]
    BytesNotFound {
        /// The node.
        node: NodeId,
        /// The needle's length.
        len: usize,
        /// The data folder searched.
        dir: PathBuf,
    },
    /// The node printed something other than `listening <its address>`.
    #[error("node {node} printed {line:?}, expected \"listening {expected}\": see {}", log.display())]
    BadReadyLine {
        /// The node.
        node: NodeId,
        /// What it printed.
        line: String,
        /// Its address in the map.
        expected: SocketAddr,
        /// Its log.
        log: PathBuf,
    },
    /// A signal could not be sent.
    #[error("cannot send {signal} to node {node}: {error}")]
    Signal {
        /// The node.
        node: NodeId,
        /// The signal.
        signal: Signal,
        /// The OS error.
        error: nix::Error,
    },
    /// Waiting for the node's process failed.
    #[error("cannot wait for node {node}: {error}")]
    Wait {
        /// The node.
        node: NodeId,
        /// The OS error.
        error: std::io::Error,
    },
    /// The node did not exit in time after SIGTERM (it has been killed).
    #[error("node {node} did not exit within {after_ms} ms of SIGTERM (killed): see {}", log.display())]
    StopTimeout {
        /// The node.
        node: NodeId,
        /// The bound.
        after_ms: u64,
        /// Its log.
        log: PathBuf,
    },
}

/// A cluster of real `rackpoint-store` processes on 127.0.0.1.
pub struct LocalCluster {
    dir: PathBuf,
    store_bin: PathBuf,
    map: ClusterMap,
    tls: ClientTls,
    /// Each node's process, `None` while stopped. A mutex so that `is_running(&self)` can
    /// reap a process that exited by itself.
    nodes: BTreeMap<NodeId, Mutex<Option<Child>>>,
    /// Environment variables each node's process starts with (see [`LocalCluster::set_node_env`]).
    envs: BTreeMap<NodeId, BTreeMap<String, String>>,
}

/// What a node's stdout watcher reports: its first line, or that stdout ended first.
type ReadyLine = std::io::Result<String>;

impl LocalCluster {
    /// Makes a cluster folder in `dir` (see [`cluster_dir::init`]), starts every node from
    /// `store_bin`, and returns once each has printed its `listening` line (all within
    /// `LOCAL_NODE_READY_TIMEOUT_MS`).
    pub fn start(
        dir: &Path,
        opts: &InitOptions,
        store_bin: &Path,
    ) -> Result<Self, LocalClusterError> {
        cluster_dir::init(dir, opts)?;
        Self::open(dir, store_bin)
    }

    /// Starts every node of the cluster folder `dir` made earlier (by [`cluster_dir::init`]
    /// or `rackpoint cluster init`) on its existing data, and returns once each has printed
    /// its `listening` line (all within `LOCAL_NODE_READY_TIMEOUT_MS`). If one fails, the
    /// ones started are killed and the error names the node and its log.
    pub fn open(dir: &Path, store_bin: &Path) -> Result<Self, LocalClusterError> {
        let loaded = cluster_dir::load(&dir.join(CLUSTER_FILE))?;
        let (map, tls) = (loaded.map, loaded.tls);
        let nodes = map.nodes.iter().map(|n| (n.id, Mutex::new(None))).collect();
        let mut cluster = Self {
            dir: dir.to_owned(),
            store_bin: store_bin.to_owned(),
            map,
            tls,
            nodes,
            envs: BTreeMap::new(),
        };
        let ids: Vec<NodeId> = cluster.map.nodes.iter().map(|n| n.id).collect();
        let mut pending = Vec::with_capacity(ids.len());
        for id in ids {
            pending.push((id, cluster.spawn(id)?));
        }
        let deadline = Instant::now() + Duration::from_millis(LOCAL_NODE_READY_TIMEOUT_MS);
        for (id, ready) in pending {
            cluster.await_ready(id, ready, deadline)?;
        }
        Ok(cluster)
    }

    /// Reads `cluster.toml` again (after `rackpoint cluster add-node` or `decommission`):
    /// the map is the new one, and nodes it adds can be started with
    /// [`LocalCluster::restart`]. Returns the ids of the nodes added.
    pub fn reload_map(&mut self) -> Result<Vec<NodeId>, LocalClusterError> {
        let loaded = cluster_dir::load(&self.dir.join(CLUSTER_FILE))?;
        let added: Vec<NodeId> = loaded
            .map
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| !self.nodes.contains_key(id))
            .collect();
        for id in &added {
            self.nodes.insert(*id, Mutex::new(None));
        }
        self.map = loaded.map;
        Ok(added)
    }

    /// The cluster file (`DIR/cluster.toml`).
    pub fn cluster_file(&self) -> PathBuf {
        self.dir.join(CLUSTER_FILE)
    }

    /// The cluster map.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// The client identity of the cluster.
    pub fn tls(&self) -> &ClientTls {
        &self.tls
    }

    /// Node `id`'s folder (its `node.toml`, certificate, `data/` and `node.log`).
    pub fn node_dir(&self, id: NodeId) -> PathBuf {
        node_dir(&self.dir, id)
    }

    /// Rewrites node `id`'s `node.toml` through `edit` (for its next start: stop and restart
    /// it to apply).
    pub fn edit_node_config(
        &self,
        id: NodeId,
        edit: impl FnOnce(&mut rackpoint_proto::cluster::NodeConfig),
    ) -> Result<(), LocalClusterError> {
        let path = self.node_dir(id).join(NODE_FILE);
        let io = |error| ClusterDirError::Io { path: path.clone(), error };
        let text = std::fs::read_to_string(&path).map_err(io)?;
        let mut config = rackpoint_proto::cluster::NodeConfig::from_toml(&text)
            .map_err(|error| ClusterDirError::Parse { path: path.clone(), error })?;
        edit(&mut config);
        std::fs::write(&path, config.to_toml()).map_err(io)?;
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) environment variable `key` of node `id`'s process,
    /// from its next start on (say, `RACKPOINT_FAILPOINT` to arm a crash point). Nodes never
    /// inherit `RACKPOINT_FAILPOINT` from this process.
    pub fn set_node_env(&mut self, id: NodeId, key: &str, value: Option<&str>) {
        let env = self.envs.entry(id).or_default();
        match value {
            Some(v) => env.insert(key.to_owned(), v.to_owned()),
            None => env.remove(key),
        };
    }

    /// How node `id`'s process ended, if it has exited (it is reaped, not removed: a later
    /// [`LocalCluster::restart`] starts it again).
    pub fn exit_status(&self, id: NodeId) -> Option<ExitStatus> {
        let mut slot = self.slot(id).ok()?;
        slot.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub fn kill(&mut self, id: NodeId) -> Result<ExitStatus, LocalClusterError> {
        let mut child = self.take_child(id)?;
        let _ = child.kill(); // fails only if the process is already reaped; wait says how it ended
        child.wait().map_err(|error| LocalClusterError::Wait { node: id, error })
    }

    /// Starts node `id` again on its data folder and waits until it is ready. A process of
    /// the node that exited by itself is reaped first; a live one is an error.
    pub fn restart(&mut self, id: NodeId) -> Result<(), LocalClusterError> {
        if self.is_running(id) {
            return Err(LocalClusterError::AlreadyRunning(id));
        }
        if let Some(mut exited) = self.slot(id)?.take() {
            exited.wait().map_err(|error| LocalClusterError::Wait { node: id, error })?;
        }
        let ready = self.spawn(id)?;
        let deadline = Instant::now() + Duration::from_millis(LOCAL_NODE_READY_TIMEOUT_MS);
        self.await_ready(id, ready, deadline)
    }

    /// Freezes node `id` (SIGSTOP): its sockets stay open but it answers nothing.
    pub fn pause(&mut self, id: NodeId) -> Result<(), LocalClusterError> {
        self.signal(id, Signal::SIGSTOP)
    }

    /// Thaws a paused node (SIGCONT).
    pub fn resume(&mut self, id: NodeId) -> Result<(), LocalClusterError> {
        self.signal(id, Signal::SIGCONT)
    }

    /// Asks node `id` to shut down (SIGTERM, plus SIGCONT in case it is paused) and waits
    /// for it to exit, at most `LOCAL_NODE_STOP_TIMEOUT_MS`; past that it is killed and
    /// `StopTimeout` is returned.
    pub fn terminate(&mut self, id: NodeId) -> Result<ExitStatus, LocalClusterError> {
        self.signal(id, Signal::SIGTERM)?;
        self.signal(id, Signal::SIGCONT)?;
        let mut child = self.take_child(id)?;
        let bound = Duration::from_millis(LOCAL_NODE_STOP_TIMEOUT_MS);
        match wait_bounded(&mut child, bound) {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err(LocalClusterError::StopTimeout {
                node: id,
                after_ms: LOCAL_NODE_STOP_TIMEOUT_MS,
                log: self.log_path(id),
            }),
            Err(error) => Err(LocalClusterError::Wait { node: id, error }),
        }
    }

    /// Stops every running node as [`LocalCluster::terminate`] does, all at once: each is
    /// signalled first, then each is waited for. Returns the first failure, if any.
    pub fn terminate_all(&mut self) -> Result<(), LocalClusterError> {
        let running: Vec<NodeId> =
            self.nodes.keys().copied().filter(|id| self.is_running(*id)).collect();
        for &id in &running {
            self.signal(id, Signal::SIGTERM)?;
        }
        let mut first = None;
        for id in running {
            if let Err(e) = self.terminate(id) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Fault injection, as a rotting disk: flips one byte in the middle of every stored copy
    /// of each needle (say, 64 bytes from inside a shard) in node `id`'s data folder. The node is
    /// stopped with SIGTERM, started and stopped once more (so RocksDB moves its write-ahead
    /// log into table files, where the bytes then sit), corrupted, and started again. Returns
    /// the files changed; an error if some needle was nowhere.
    pub fn corrupt_on_disk(
        &mut self,
        id: NodeId,
        needles: &[&[u8]],
    ) -> Result<Vec<PathBuf>, LocalClusterError> {
        self.terminate(id)?;
        self.restart(id)?;
        self.terminate(id)?;
        let dir = self.node_dir(id).join(NODE_DATA_DIR);
        let mut changed = Vec::new();
        for needle in needles {
            let files = flip_copies(&dir, needle)?;
            if files.is_empty() {
                self.restart(id)?;
                return Err(LocalClusterError::BytesNotFound { node: id, len: needle.len(), dir });
            }
            changed.extend(files.into_iter().filter(|f| !changed.contains(f)).collect::<Vec<_>>());
        }
        self.restart(id)?;
        Ok(changed)
    }

    /// Whether node `id` has a process that has not exited (a paused node is running).
    pub fn is_running(&self, id: NodeId) -> bool {
        let Ok(mut slot) = self.slot(id) else { return false };
        match slot.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_))) | Some(Err(_)) | None => false,
        }
    }

    /// The process id of node `id`'s live process (`None` while it is stopped or exited), to
    /// read its `/proc/<pid>/status` (memory) from a test.
    pub fn pid(&self, id: NodeId) -> Option<u32> {
        if !self.is_running(id) {
            return None;
        }
        self.slot(id).ok()?.as_ref().map(Child::id)
    }

    fn slot(&self, id: NodeId) -> Result<MutexGuard<'_, Option<Child>>, LocalClusterError> {
        let slot = self.nodes.get(&id).ok_or(LocalClusterError::UnknownNode(id))?;
        Ok(slot.lock().unwrap_or_else(|poison| poison.into_inner()))
    }

    fn take_child(&mut self, id: NodeId) -> Result<Child, LocalClusterError> {
        self.slot(id)?.take().ok_or(LocalClusterError::NotRunning(id))
    }

    fn signal(&mut self, id: NodeId, signal: Signal) -> Result<(), LocalClusterError> {
        let slot = self.slot(id)?;
        let child = slot.as_ref().ok_or(LocalClusterError::NotRunning(id))?;
        send_signal(pid_of(child), signal).map_err(|error| LocalClusterError::Signal {
            node: id,
            signal,
            error,
        })
    }

    fn log_path(&self, id: NodeId) -> PathBuf {
        self.node_dir(id).join(NODE_LOG_FILE)
    }

    /// Spawns node `id` with stderr appended to its log, and a thread that reports the
    /// first line of its stdout (then drains the rest so the node never blocks on it).
    fn spawn(&mut self, id: NodeId) -> Result<Receiver<ReadyLine>, LocalClusterError> {
        let spawn_error =
            |what: &str, error| LocalClusterError::Spawn { node: id, what: what.to_owned(), error };
        let log_path = self.log_path(id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .map_err(|e| spawn_error(&format!("open {}", log_path.display()), e))?;
        let mut child = Command::new(&self.store_bin)
            .arg("--config")
            .arg(self.node_dir(id).join(NODE_FILE))
            .env_remove(rackpoint_proto::failpoint::ENV)
            .envs(self.envs.get(&id).into_iter().flatten())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| spawn_error(&format!("run {}", self.store_bin.display()), e))?;
        let stdout = child.stdout.take().expect("stdout is piped by the command above");
        *self.slot(id)? = Some(child);
        let (tx, rx) = mpsc::sync_channel(1);
        thread::Builder::new()
            .name(format!("node-{id}-stdout"))
            .spawn(move || watch_stdout(stdout, tx))
            .map_err(|e| spawn_error("start its stdout reader", e))?;
        Ok(rx)
    }

    /// Waits (until `deadline`) for node `id`'s ready line and checks it names the node's
    /// address. On any failure the node is killed and reaped.
    fn await_ready(
        &mut self,
        id: NodeId,
        ready: Receiver<ReadyLine>,
        deadline: Instant,
    ) -> Result<(), LocalClusterError> {
        let expected = self.map.node(id).ok_or(LocalClusterError::UnknownNode(id))?.addr;
        let log = self.log_path(id);
        let outcome = ready.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let failure = match outcome {
            Ok(Ok(line)) if ready_addr(&line) == Some(expected) => return Ok(()),
            Ok(Ok(line)) => LocalClusterError::BadReadyLine { node: id, line, expected, log },
            Err(RecvTimeoutError::Timeout) => {
                LocalClusterError::NotReady { node: id, after_ms: LOCAL_NODE_READY_TIMEOUT_MS, log }
            }
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                let status = self.reap_after_early_exit(id);
                return Err(LocalClusterError::ExitedBeforeReady { node: id, status, log });
            }
        };
        let _ = self.kill(id); // the failure above is the error worth reporting
        Err(failure)
    }

    /// Describes how a node that closed its stdout before being ready ended, reaping it
    /// (and killing it if it lingers past the stop bound).
    fn reap_after_early_exit(&mut self, id: NodeId) -> String {
        let Ok(mut child) = self.take_child(id) else { return "not running".into() };
        match wait_bounded(&mut child, Duration::from_millis(LOCAL_NODE_STOP_TIMEOUT_MS)) {
            Ok(Some(status)) => status.to_string(),
            Ok(None) => "closed its stdout and did not exit; killed".into(),
            Err(e) => format!("cannot wait for it: {e}"),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for slot in self.nodes.values_mut() {
            let slot = slot.get_mut().unwrap_or_else(|poison| poison.into_inner());
            if let Some(mut child) = slot.take() {
                // Best effort in a destructor: a failed kill means the process is gone.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The address in a `listening <ip:port>` line.
fn ready_addr(line: &str) -> Option<SocketAddr> {
    line.trim_end().strip_prefix("listening ")?.parse().ok()
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("Linux pids fit in i32 (pid_max <= 2^22)"))
}

/// Sends the first line of a node's stdout (bounded), then reads the rest to the end so
/// that the node never blocks writing to a full pipe.
fn watch_stdout(stdout: ChildStdout, ready: SyncSender<ReadyLine>) {
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    let first = (&mut reader).take(MAX_READY_LINE_BYTES).read_until(b'\n', &mut line);
    match first {
        Ok(0) => return, // stdout closed: dropping `ready` tells the waiter
        Ok(_) => {
            let _ = ready.send(Ok(String::from_utf8_lossy(&line).into_owned()));
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
}

/// Waits for `child` to exit for at most `bound`. `Ok(None)`: it did not, and has been
/// killed and reaped.
///
/// A helper thread waits for the exit *without reaping* (`waitid` with `WNOWAIT`), so the
/// pid cannot be reused before this function reaps it through `child`: a late SIGKILL can
/// never hit another process.
fn wait_bounded(child: &mut Child, bound: Duration) -> std::io::Result<Option<ExitStatus>> {
    let pid = pid_of(child);
    let (tx, rx) = mpsc::sync_channel(1);
    thread::Builder::new().name(format!("wait-{pid}")).spawn(move || {
        let _ = tx.send(waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT));
    })?;
    match rx.recv_timeout(bound) {
        Ok(_) | Err(RecvTimeoutError::Disconnected) => child.wait().map(Some),
        Err(RecvTimeoutError::Timeout) => {
            child.kill()?;
            child.wait()?;
            Ok(None)
        }
    }
}

/// The `rackpoint-store` binary: `$RACKPOINT_STORE_BIN` if set, else `rackpoint-store`
/// beside the current executable or in its parent folder (cargo puts test binaries in
/// `target/<profile>/deps`, next to which the binaries are).
pub fn find_store_binary() -> Result<PathBuf, LocalClusterError> {
    if let Some(path) = std::env::var_os(STORE_BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(LocalClusterError::StoreBinaryNotFound { tried: vec![path] })
        };
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let tried: Vec<PathBuf> =
        exe.ancestors().skip(1).take(2).map(|dir| dir.join(STORE_BIN_NAME)).collect();
    match tried.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(LocalClusterError::StoreBinaryNotFound { tried }),
    }
}

#[cfg(test)]
mod tests;

/// `len` bytes from a splitmix64 stream seeded with `seed`: fast, reproducible, and
/// incompressible enough for storage measurements.
pub fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>, LocalClusterError> {
    let io = |error| LocalClusterError::DiskIo { path: dir.to_path_buf(), error };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            out.extend(files_under(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// Flips one byte in the middle of every copy of `needle` in the files under `dir`; returns
/// the files changed.
fn flip_copies(dir: &Path, needle: &[u8]) -> Result<Vec<PathBuf>, LocalClusterError> {
    let mut changed = Vec::new();
    if needle.is_empty() {
        return Ok(changed);
    }
    for file in files_under(dir)? {
        let io = |error| LocalClusterError::DiskIo { path: file.clone(), error };
        let mut bytes = std::fs::read(&file).map_err(io)?;
        let mut hit = false;
        let mut i = 0;
        while let Some(at) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
            bytes[i + at + needle.len() / 2] ^= 0x5a;
            i += at + needle.len();
            hit = true;
        }
        if hit {
            std::fs::write(&file, &bytes).map_err(io)?;
            changed.push(file);
        }
    }
    Ok(changed)
}
