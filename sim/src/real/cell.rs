//! One scheme's cluster of real node processes, each behind a UDP relay, shared by the
//! trials of a cell; and the registry that lets a signal stop every live cluster's nodes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rackpoint_client::cluster_dir::InitOptions;
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::tls::ClientTls;
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::{ClusterMap, NodeId};

use super::{RealError, RealOptions};
use crate::relay::Relay;
use crate::scenario::{CheckpointSpec, ClusterShape, Scheme};

/// Locks `m`, going on past a panicked holder (the state stays usable for the heal).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Runs blocking `f` (process control, file system) off the async workers.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// One scheme's cluster, behind relays, for the trials of one scenario.
pub(super) struct Cell {
    pub(super) cluster: Arc<Mutex<LocalCluster>>,
    pub(super) relays: BTreeMap<NodeId, Relay>,
    /// The map with relay addresses.
    pub(super) map: ClusterMap,
    /// That map as a cluster file, for the save worker process.
    pub(super) relay_cluster_file: PathBuf,
    tls: ClientTls,
    pub(super) shape: ClusterShape,
    /// The scheme's parity shards.
    pub(super) m: usize,
    /// Last, so that the folder is removed only after the nodes (in `cluster`) are killed.
    _dir: tempfile::TempDir,
}

impl Cell {
    /// Starts `shape`'s nodes for `scheme` in a fresh temporary folder, each behind a relay
    /// seeded from `seed`.
    pub(super) async fn start(
        scheme: &Scheme,
        shape: ClusterShape,
        spec: &CheckpointSpec,
        opts: &RealOptions,
        seed: u64,
        label: &str,
    ) -> Result<Self, RealError> {
        let tmp = tempfile::Builder::new()
            .prefix("rackpoint-sim-")
            .tempdir()
            .map_err(|error| RealError::Io { path: std::env::temp_dir(), error })?;
        let dir = tmp.path().to_owned();
        let init = init_options(scheme, shape, spec)?;
        let cluster =
            tokio::task::block_in_place(|| LocalCluster::start(&dir, &init, &opts.store_bin))?;
        let tls = cluster.tls().clone();
        let mut map = cluster.map().clone();
        let relays = start_relays(&mut map, seed).await?;
        // The relayed map beside the real one, so its TLS paths resolve the same way.
        let relay_cluster_file = dir.join("cluster-relayed.toml");
        std::fs::write(&relay_cluster_file, map.to_toml())
            .map_err(|error| RealError::Io { path: relay_cluster_file.clone(), error })?;
        let cluster = Arc::new(Mutex::new(cluster));
        register(&cluster);
        eprintln!("rackpoint-sim: {label}: {} nodes up in {}", shape.nodes, dir.display());
        Ok(Self {
            _dir: tmp,
            cluster,
            relays,
            map,
            relay_cluster_file,
            tls,
            shape,
            m: usize::from(init.m),
        })
    }

    /// A fresh client of the relayed map (no down marks from earlier clients).
    pub(super) fn client(&self) -> Result<Client, ClientError> {
        Client::with_map(self.map.clone(), &self.tls)
    }
}

/// The cluster folder's settings for `scheme` on `shape`.
fn init_options(
    scheme: &Scheme,
    shape: ClusterShape,
    spec: &CheckpointSpec,
) -> Result<InitOptions, RealError> {
    let code = scheme.code(spec.shard_size_bytes)?;
    let mut init = InitOptions::new(shape.nodes);
    init.racks = shape.racks;
    init.k = code.k;
    init.m = code.m;
    init.shard_size_bytes = code.shard_size_bytes;
    // The heal phase sweeps an interrupted save's orphans at once.
    init.node_min_orphan_grace_ms = 0;
    Ok(init)
}

/// Puts a relay in front of every node of `map`, and points the map at the relays.
async fn start_relays(
    map: &mut ClusterMap,
    seed: u64,
) -> Result<BTreeMap<NodeId, Relay>, RealError> {
    let mut relays = BTreeMap::new();
    for node in &mut map.nodes {
        let relay =
            Relay::start(node.addr, seed ^ u64::from(node.id.0)).await.map_err(RealError::Relay)?;
        node.addr = relay.addr();
        relays.insert(node.id, relay);
    }
    Ok(relays)
}

/// Every cluster real mode has started and not yet dropped, so that a signal can stop
/// their nodes (see [`stop_all_clusters`]).
static LIVE: Mutex<Vec<Weak<Mutex<LocalCluster>>>> = Mutex::new(Vec::new());

fn register(cluster: &Arc<Mutex<LocalCluster>>) {
    let mut live = lock(&LIVE);
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(cluster));
}

/// SIGKILLs and reaps every node process of every live real-mode cluster (a cluster that is
/// dropped kills its own nodes; this is for the ones a signal interrupted). Returns how many
/// node processes were stopped.
pub fn stop_all_clusters() -> usize {
    let live: Vec<Arc<Mutex<LocalCluster>>> =
        std::mem::take(&mut *lock(&LIVE)).iter().filter_map(Weak::upgrade).collect();
    let mut stopped = 0;
    for cluster in live {
        let mut c = lock(&cluster);
        let ids: Vec<NodeId> = c.map().nodes.iter().map(|n| n.id).collect();
        for id in ids {
            if c.is_running(id) && c.kill(id).is_ok() {
                stopped += 1;
            }
        }
    }
    stopped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_folder_takes_the_schemes_code_and_no_orphan_grace() {
        let scheme = Scheme::preset("rs-4+2").expect("a preset");
        let shape = ClusterShape { nodes: 9, racks: 3 };
        let spec =
            CheckpointSpec { bytes: 1 << 20, objects: 2, world_size: 1, shard_size_bytes: 4096 };
        let init = init_options(&scheme, shape, &spec).expect("a valid scheme");
        assert_eq!((init.k, init.m, init.shard_size_bytes), (4, 2, 4096));
        assert_eq!(init.racks, 3);
        assert_eq!(init.node_min_orphan_grace_ms, 0);
    }

    #[test]
    fn a_poisoned_lock_still_gives_its_value() {
        let m = Arc::new(Mutex::new(7));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = held.lock().expect("first lock");
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 7);
    }
}
