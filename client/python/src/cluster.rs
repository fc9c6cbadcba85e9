//! `LocalCluster`: a cluster of real `rackpoint-store` processes on 127.0.0.1, for the Python
//! tests and benchmarks (nodes are killed with SIGKILL, their disks corrupted, restarted).
//! Dropping it, or `close()`, kills and reaps every node.

use std::path::PathBuf;
use std::sync::Mutex;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rackpoint_client::cluster_dir::{self, InitOptions};
use rackpoint_client::local_cluster::{find_store_binary, LocalCluster, LocalClusterError};
use rackpoint_proto::access::{Access, Grant, GrantError};
use rackpoint_proto::NodeId;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLocalCluster>()
}

fn err(e: LocalClusterError) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// Real node processes on loopback (`rackpoint.testing.LocalCluster`).
#[pyclass(frozen, name = "LocalCluster", module = "rackpoint._native")]
pub(crate) struct PyLocalCluster {
    cluster: Mutex<Option<LocalCluster>>,
    cluster_file: PathBuf,
    node_ids: Vec<u32>,
}

impl PyLocalCluster {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut LocalCluster) -> Result<T, LocalClusterError>,
    ) -> PyResult<T> {
        let mut slot = self.cluster.lock().unwrap_or_else(|poison| poison.into_inner());
        let cluster = slot.as_mut().ok_or_else(|| PyRuntimeError::new_err("cluster is closed"))?;
        f(cluster).map_err(err)
    }
}

#[pymethods]
impl PyLocalCluster {
    /// Makes a cluster folder in `dir` (free ports) and starts every node from `store_bin`
    /// (default: `$RACKPOINT_STORE_BIN`).
    #[new]
    #[pyo3(signature = (dir, nodes=6, racks=3, k=4, m=2, shard_size_bytes=1 << 20, store_bin=None))]
    #[allow(clippy::too_many_arguments)] // one per Python parameter
    fn new(
        py: Python<'_>,
        dir: PathBuf,
        nodes: usize,
        racks: usize,
        k: u8,
        m: u8,
        shard_size_bytes: u32,
        store_bin: Option<PathBuf>,
    ) -> PyResult<Self> {
        let store_bin = match store_bin {
            Some(p) => p,
            None => find_store_binary().map_err(err)?,
        };
        let opts = InitOptions { racks, k, m, shard_size_bytes, ..InitOptions::new(nodes) };
        let cluster = py.detach(|| LocalCluster::start(&dir, &opts, &store_bin)).map_err(err)?;
        let node_ids = cluster.map().nodes.iter().map(|n| n.id.0).collect();
        let cluster_file = cluster.cluster_file();
        Ok(Self { cluster: Mutex::new(Some(cluster)), cluster_file, node_ids })
    }

    /// The `cluster.toml` to give `Client`.
    #[getter]
    fn cluster_file(&self) -> PathBuf {
        self.cluster_file.clone()
    }

    /// Every node's id.
    #[getter]
    fn node_ids(&self) -> Vec<u32> {
        self.node_ids.clone()
    }

    /// Issues a client identity from the cluster's CA: `name` with `access` (`read`,
    /// `append`, `write` or `admin`) over `jobs` (comma-separated names, `prefix*` or `*`);
    /// returns the certificate and key paths, for `Client(..., cert=, key=)`.
    #[pyo3(signature = (name, jobs, access, days=1))]
    fn issue_identity(
        &self,
        name: &str,
        jobs: &str,
        access: &str,
        days: u32,
    ) -> PyResult<(PathBuf, PathBuf)> {
        let bad = |e: GrantError| PyValueError::new_err(e.to_string());
        let grant = Grant::new(
            Access::parse(access).map_err(bad)?,
            Grant::parse_patterns(jobs).map_err(bad)?,
        )
        .map_err(bad)?;
        let dir = self.cluster_file.parent().map(PathBuf::from).unwrap_or_default();
        let out = dir.join("identities");
        let (files, _) = cluster_dir::issue_client(&dir, name, &grant, days, &out)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok((files.cert, files.key))
    }

    /// Node `id`'s folder (its `data/` and `node.log`).
    fn node_dir(&self, id: u32) -> PyResult<PathBuf> {
        self.with(|c| Ok(c.node_dir(NodeId(id))))
    }

    /// Kills node `id` with SIGKILL and reaps it.
    fn kill(&self, py: Python<'_>, id: u32) -> PyResult<()> {
        py.detach(|| self.with(|c| c.kill(NodeId(id)).map(|_| ())))
    }

    /// Starts node `id` again on its data and waits until it listens.
    fn restart(&self, py: Python<'_>, id: u32) -> PyResult<()> {
        py.detach(|| self.with(|c| c.restart(NodeId(id))))
    }

    /// Whether node `id` has a live process.
    fn is_running(&self, id: u32) -> PyResult<bool> {
        self.with(|c| Ok(c.is_running(NodeId(id))))
    }

    /// Flips a byte inside every stored copy of each needle on node `id`'s disk (the node is
    /// stopped, corrupted and started again); returns the files changed.
    fn corrupt_on_disk(
        &self,
        py: Python<'_>,
        id: u32,
        needles: Vec<Vec<u8>>,
    ) -> PyResult<Vec<PathBuf>> {
        py.detach(|| {
            let refs: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
            self.with(|c| c.corrupt_on_disk(NodeId(id), &refs))
        })
    }

    /// Kills and reaps every node.
    fn close(&self, py: Python<'_>) {
        let taken = self.cluster.lock().unwrap_or_else(|poison| poison.into_inner()).take();
        py.detach(move || drop(taken));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&self, py: Python<'_>, _exc_type: Py<PyAny>, _exc: Py<PyAny>, _tb: Py<PyAny>) {
        self.close(py);
    }
}
