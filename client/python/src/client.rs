//! The `Client`, `Part` and `SaveHandle` classes: the Rust client's calls over Python
//! buffer-protocol objects. Every call releases the GIL while it waits on the network. The
//! Rust client is made lazily in each process (and again in a `fork` child, see `runtime`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict, PyList};
use rackpoint_client::catalog::{CheckpointSummary, VerifyReport};
use rackpoint_client::cluster_dir::IdentityFiles;
use rackpoint_client::jobs::JobsReport;
use rackpoint_client::manifest::Manifest;
use rackpoint_client::restore::Which;
use rackpoint_client::save::{ObjectData, ObjectSource, SaveReport, SaveRequest};
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::{JobName, ObjectName, Rank, Step};

use crate::buffers::{ReadBuffer, WriteBuffer};

/// Longest deadline a priority save takes, in seconds (a day: a preemption notice is seconds
/// to minutes).
const MAX_SAVE_DEADLINE_S: f64 = 86_400.0;
use crate::errors::{invalid, to_py};
use crate::runtime;

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyClient>()?;
    m.add_class::<PyPart>()?;
    m.add_class::<PySaveHandle>()?;
    m.add_class::<PySaveReport>()?;
    m.add_class::<PyCheckpoint>()?;
    m.add_class::<PyCheckpointList>()?;
    m.add_class::<PyResumePoint>()?;
    m.add_class::<PyVerifyReport>()?;
    m.add_class::<PyJobs>()?;
    m.add_class::<PyJob>()?;
    Ok(())
}

fn job_name(job: &str) -> PyResult<JobName> {
    JobName::new(job).map_err(invalid)
}

fn which(step: Option<u64>) -> Which {
    step.map_or(Which::Latest, |s| Which::Step(Step(s)))
}

/// Runs `f` on this process's runtime with the GIL released.
fn block_on<T: Send>(
    py: Python<'_>,
    f: impl std::future::Future<Output = Result<T, ClientError>> + Send,
) -> PyResult<T> {
    let rt = runtime::get()?;
    py.detach(|| rt.block_on(f)).map_err(|e| to_py(py, e))
}

/// A client of one cluster (`Client(cluster_toml)`).
#[pyclass(frozen, name = "Client", module = "rackpoint._native")]
pub(crate) struct PyClient {
    cluster_file: PathBuf,
    /// The identity to present instead of the one the cluster file names.
    identity: Option<IdentityFiles>,
    /// The Rust client and the process that made it.
    inner: Mutex<Option<(u32, Client)>>,
}

impl PyClient {
    /// The Rust client of this process, made on first use (and again after `fork`). The lock
    /// is taken with the GIL released: a thread that holds it while connecting must be able to
    /// take the GIL back afterwards.
    fn client(&self, py: Python<'_>) -> PyResult<Client> {
        py.detach(|| {
            let pid = std::process::id();
            let mut slot = self.inner.lock().unwrap_or_else(|poison| poison.into_inner());
            if let Some((owner, client)) = slot.as_ref() {
                if *owner == pid {
                    return Ok(client.clone());
                }
            }
            // A client inherited through fork belongs to the parent's runtime: leak it.
            if let Some((_, inherited)) = slot.take() {
                std::mem::forget(inherited);
            }
            let rt = runtime::get()?;
            let _in_runtime = rt.enter();
            let client =
                Client::connect_as(&self.cluster_file, self.identity.as_ref(), Default::default())
                    .map_err(ConnectError::Client)?;
            *slot = Some((pid, client.clone()));
            Ok(client)
        })
        .map_err(|e| match e {
            ConnectError::Client(e) => to_py(py, e),
            ConnectError::Python(e) => e,
        })
    }
}

/// Why a client could not be made (converted to a Python exception once the GIL is back).
enum ConnectError {
    Client(ClientError),
    Python(PyErr),
}

impl From<PyErr> for ConnectError {
    fn from(e: PyErr) -> Self {
        ConnectError::Python(e)
    }
}

/// Object buffers taken from a `{name: buffer}` mapping.
fn read_objects(objects: &Bound<'_, PyDict>) -> PyResult<Vec<(ObjectName, ReadBuffer)>> {
    let mut out = Vec::with_capacity(objects.len());
    for (name, value) in objects.iter() {
        let name = ObjectName::new(name.extract::<String>()?).map_err(invalid)?;
        out.push((name, ReadBuffer::new(&value)?));
    }
    Ok(out)
}

/// The instant `seconds` from now: finite, not negative, at most `MAX_SAVE_DEADLINE_S`.
fn deadline_after(seconds: f64) -> PyResult<std::time::Instant> {
    if !(0.0..=MAX_SAVE_DEADLINE_S).contains(&seconds) {
        return Err(invalid(format!(
            "deadline_s is {seconds}: a deadline is 0 to {MAX_SAVE_DEADLINE_S} seconds from now"
        )));
    }
    Ok(std::time::Instant::now() + std::time::Duration::from_secs_f64(seconds))
}

fn save_request(
    job: &str,
    step: u64,
    rank: u32,
    world_size: u32,
    meta: Option<BTreeMap<String, String>>,
) -> PyResult<SaveRequest> {
    Ok(SaveRequest {
        job: job_name(job)?,
        step: Step(step),
        rank: Rank(rank),
        world_size,
        objects: Vec::new(),
        user_meta: meta.unwrap_or_default(),
    })
}

#[pymethods]
impl PyClient {
    /// `Client(cluster_toml=None, cert=None, key=None)`: `cluster_toml` (or the
    /// `RACKPOINT_CLUSTER` variable, as the CLI takes it) names the cluster's `cluster.toml`;
    /// `InvalidInput` when neither is given. `cert` and `key` (or the
    /// `RACKPOINT_CERT`/`RACKPOINT_KEY` variables) name the identity to present instead of the
    /// one the cluster file names; both or neither. An argument wins over its variable; an
    /// empty variable counts as unset.
    #[new]
    #[pyo3(signature = (cluster_toml=None, cert=None, key=None))]
    fn new(
        cluster_toml: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> PyResult<Self> {
        let from_env =
            |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let Some(cluster_toml) = cluster_toml.or_else(|| from_env("RACKPOINT_CLUSTER")) else {
            return Err(invalid(
                "no cluster given: pass Client(cluster_toml) or set RACKPOINT_CLUSTER to the cluster's cluster.toml",
            ));
        };
        let cert = cert.or_else(|| from_env("RACKPOINT_CERT"));
        let key = key.or_else(|| from_env("RACKPOINT_KEY"));
        let identity = match (cert, key) {
            (Some(cert), Some(key)) => Some(IdentityFiles { cert, key }),
            (None, None) => None,
            _ => {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "cert and key go together: give both (or RACKPOINT_CERT and RACKPOINT_KEY) or neither",
                ))
            }
        };
        Ok(Self { cluster_file: cluster_toml, identity, inner: Mutex::new(None) })
    }

    /// The cluster file this client uses.
    #[getter]
    fn cluster_file(&self) -> PathBuf {
        self.cluster_file.clone()
    }

    /// Saves one rank's part of checkpoint (job, step) from `{name: buffer}` without copying
    /// the buffers (they must not change until the call returns); returns once committed.
    ///
    /// `deadline_s` (seconds from now) makes it a priority save, for a preempted node's
    /// SIGTERM window: it commits within that time or raises `DeadlineExceeded` having
    /// committed nothing (the previous checkpoint stays the latest); this client's other
    /// saves (a `save_async` upload) give way to it meanwhile, and a node that answers
    /// nothing is not waited for (its shards go elsewhere).
    #[pyo3(signature = (job, step, rank, world_size, objects, meta=None, deadline_s=None))]
    #[allow(clippy::too_many_arguments)] // one per Python parameter
    fn save(
        &self,
        py: Python<'_>,
        job: &str,
        step: u64,
        rank: u32,
        world_size: u32,
        objects: &Bound<'_, PyDict>,
        meta: Option<BTreeMap<String, String>>,
        deadline_s: Option<f64>,
    ) -> PyResult<PySaveReport> {
        let deadline = deadline_s.map(deadline_after).transpose()?;
        let mut req = save_request(job, step, rank, world_size, meta)?;
        for (name, buf) in read_objects(objects)? {
            let source = ObjectSource::Memory(Bytes::from_owner(buf));
            req.objects.push(ObjectData { name, source });
        }
        let client = self.client(py)?;
        block_on(py, async move {
            match deadline {
                Some(deadline) => client.priority_save(req, deadline).await,
                None => client.save(req).await,
            }
        })
        .map(PySaveReport::from)
    }

    /// Copies the buffers into staging memory and returns a handle at once; the upload runs
    /// in the background (`handle.wait()` returns its report). The buffers may be reused as
    /// soon as this returns.
    #[pyo3(signature = (job, step, rank, world_size, objects, meta=None))]
    #[allow(clippy::too_many_arguments)] // one per Python parameter
    fn save_async(
        &self,
        py: Python<'_>,
        job: &str,
        step: u64,
        rank: u32,
        world_size: u32,
        objects: &Bound<'_, PyDict>,
        meta: Option<BTreeMap<String, String>>,
    ) -> PyResult<PySaveHandle> {
        let req = save_request(job, step, rank, world_size, meta)?;
        let bufs = read_objects(objects)?;
        let client = self.client(py)?;
        let handle = block_on(py, async move {
            let slices: Vec<(ObjectName, &[u8])> =
                bufs.iter().map(|(n, b)| (n.clone(), b.as_ref())).collect();
            client.save_async(req, &slices).await
        })?;
        Ok(PySaveHandle { handle: Mutex::new(Some(handle)) })
    }

    /// One part of a checkpoint (`step=None`: the newest complete one), to read objects from.
    #[pyo3(signature = (job, step=None, rank=0))]
    fn part(slf: &Bound<'_, Self>, job: &str, step: Option<u64>, rank: u32) -> PyResult<PyPart> {
        let py = slf.py();
        let job = job_name(job)?;
        let client = slf.get().client(py)?;
        let manifest =
            block_on(py, async move { client.manifest(&job, which(step), Rank(rank)).await })?;
        Ok(PyPart { client: slf.clone().unbind(), manifest: Arc::new(manifest) })
    }

    /// Every object of one part, as `{name: bytearray}` (each filled in place).
    #[pyo3(signature = (job, step=None, rank=0))]
    fn restore<'py>(
        slf: &Bound<'py, Self>,
        job: &str,
        step: Option<u64>,
        rank: u32,
    ) -> PyResult<Bound<'py, PyDict>> {
        let part = Self::part(slf, job, step, rank)?;
        let out = PyDict::new(slf.py());
        for name in part.names() {
            out.set_item(name.as_str(), part.read_new(slf.py(), &name)?)?;
        }
        Ok(out)
    }

    /// Fills `buffer` (writable, exactly the object's length) with object `object` of part
    /// (job, step, rank); returns the stripes that needed parity.
    fn restore_into(
        slf: &Bound<'_, Self>,
        job: &str,
        step: u64,
        rank: u32,
        object: &str,
        buffer: &Bound<'_, PyAny>,
    ) -> PyResult<u64> {
        Self::part(slf, job, Some(step), rank)?.read_into(slf.py(), object, buffer)
    }

    /// The newest complete checkpoint that can be read now (a `ResumePoint`: `step`,
    /// `world_size`, `parts`), or `None` when the job has no checkpoint or none complete: a
    /// new job (a name never saved to) gives `None`, not an exception, so
    /// `point = client.resume(job)`, then `start = 0 if point is None else point.step + 1`.
    /// Raises `Unavailable` (with `nodes`) when nodes that may hold one do not answer:
    /// starting afresh then would throw away a checkpoint only out of reach.
    fn resume(slf: &Bound<'_, Self>, job: &str) -> PyResult<Option<PyResumePoint>> {
        let py = slf.py();
        let job = job_name(job)?;
        let client = slf.get().client(py)?;
        let Some(point) = block_on(py, async move { client.resume(&job).await })? else {
            return Ok(None);
        };
        let world_size = point.parts.len() as u32;
        let parts = point
            .parts
            .into_iter()
            .map(|m| Py::new(py, PyPart { client: slf.clone().unbind(), manifest: Arc::new(m) }))
            .collect::<PyResult<_>>()?;
        let unseen_nodes = point.unseen_nodes.iter().map(|n| n.0).collect();
        Ok(Some(PyResumePoint { step: point.step.0, world_size, parts, unseen_nodes }))
    }

    /// Every checkpoint of a job, oldest first: a sequence of `Checkpoint` whose
    /// `unseen_nodes` names the nodes that did not answer (the listing may then miss
    /// checkpoints whose manifests are all on them).
    fn list(&self, py: Python<'_>, job: &str) -> PyResult<PyCheckpointList> {
        let job = job_name(job)?;
        let client = self.client(py)?;
        let all = block_on(py, async move { client.list(&job).await })?;
        let unseen_nodes = all.unseen_nodes.iter().map(|n| n.0).collect();
        let checkpoints = all
            .into_iter()
            .map(|c| Py::new(py, PyCheckpoint::from(c)))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyCheckpointList { checkpoints, unseen_nodes })
    }

    /// The jobs of the cluster this identity may see, and the nodes that did not answer.
    fn jobs(&self, py: Python<'_>) -> PyResult<PyJobs> {
        let client = self.client(py)?;
        let report = block_on(py, async move { client.jobs().await })?;
        PyJobs::new(py, report)
    }

    /// Reads back every shard of a checkpoint and checks the manifest chains.
    fn verify(&self, py: Python<'_>, job: &str, step: u64) -> PyResult<PyVerifyReport> {
        let job = job_name(job)?;
        let client = self.client(py)?;
        let report = block_on(py, async move { client.verify(&job, Step(step)).await })?;
        Ok(PyVerifyReport::from(report))
    }

    /// Deletes a checkpoint from every reachable node; returns (shards, manifests) deleted.
    fn delete(&self, py: Python<'_>, job: &str, step: u64) -> PyResult<(u64, u64)> {
        let job = job_name(job)?;
        let client = self.client(py)?;
        let report = block_on(py, async move { client.delete(&job, Step(step)).await })?;
        Ok((report.shards, report.manifests))
    }
}

/// One committed part: its objects' names and lengths, its metadata, and reads of any object
/// into a caller's buffer.
#[pyclass(frozen, name = "Part", module = "rackpoint._native")]
pub(crate) struct PyPart {
    client: Py<PyClient>,
    manifest: Arc<Manifest>,
}

impl PyPart {
    fn names(&self) -> Vec<ObjectName> {
        self.manifest.objects.iter().map(|o| o.name.clone()).collect()
    }

    fn read_new<'py>(
        &self,
        py: Python<'py>,
        name: &ObjectName,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let len = self.object_len(name)?;
        let client = self.client.get().client(py)?;
        let manifest = self.manifest.clone();
        PyByteArray::new_with(py, len, |bytes| {
            block_on(py, async move { client.restore_object(&manifest, name, bytes).await })
                .map(|_| ())
        })
    }

    fn object_len(&self, name: &ObjectName) -> PyResult<usize> {
        let obj = self.manifest.objects.iter().find(|o| &o.name == name).ok_or_else(|| {
            invalid(format!("step {} rank {} has no object {name}", self.step(), self.rank()))
        })?;
        usize::try_from(obj.len).map_err(invalid)
    }
}

#[pymethods]
impl PyPart {
    /// The job.
    #[getter]
    fn job(&self) -> String {
        self.manifest.job.to_string()
    }

    /// The checkpoint's step.
    #[getter]
    fn step(&self) -> u64 {
        self.manifest.step.0
    }

    /// The rank that wrote it.
    #[getter]
    fn rank(&self) -> u32 {
        self.manifest.rank.0
    }

    /// Parts in its checkpoint.
    #[getter]
    fn world_size(&self) -> u32 {
        self.manifest.world_size
    }

    /// `{name: length in bytes}`, in the order saved.
    #[getter]
    fn objects<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for o in &self.manifest.objects {
            d.set_item(o.name.as_str(), o.len)?;
        }
        Ok(d)
    }

    /// The metadata saved with the part.
    #[getter]
    fn meta(&self) -> BTreeMap<String, String> {
        self.manifest.user_meta.clone()
    }

    /// Object `name` in a new `bytearray`.
    fn read<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyByteArray>> {
        self.read_new(py, &ObjectName::new(name).map_err(invalid)?)
    }

    /// Fills `buffer` (writable, exactly the object's length) with object `name`, checking its
    /// blake3 end to end; returns the stripes that needed parity.
    fn read_into(&self, py: Python<'_>, name: &str, buffer: &Bound<'_, PyAny>) -> PyResult<u64> {
        let name = ObjectName::new(name).map_err(invalid)?;
        let mut buf = WriteBuffer::new(buffer)?;
        let client = self.client.get().client(py)?;
        let manifest = self.manifest.clone();
        block_on(
            py,
            async move { client.restore_object(&manifest, &name, buf.as_mut_slice()).await },
        )
    }

    fn __repr__(&self) -> String {
        let m = &self.manifest;
        format!(
            "Part(job={}, step={}, rank={}/{}, objects={})",
            m.job,
            m.step,
            m.rank,
            m.world_size,
            m.objects.len()
        )
    }
}

/// A save running in the background.
#[pyclass(frozen, name = "SaveHandle", module = "rackpoint._native")]
pub(crate) struct PySaveHandle {
    handle: Mutex<Option<rackpoint_client::SaveHandle>>,
}

#[pymethods]
impl PySaveHandle {
    /// Waits for the upload and commit; returns the report (once).
    fn wait(&self, py: Python<'_>) -> PyResult<PySaveReport> {
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take()
            .ok_or_else(|| invalid("this save was already waited for"))?;
        block_on(py, handle.wait()).map(PySaveReport::from)
    }

    /// Whether the save has finished (successfully or not).
    fn done(&self) -> bool {
        self.handle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .as_ref()
            .is_none_or(|h| h.is_finished())
    }
}

/// What a save did.
#[pyclass(frozen, get_all, name = "SaveReport", module = "rackpoint._native")]
pub(crate) struct PySaveReport {
    /// The committed manifest's id (hex blake3).
    manifest_id: String,
    /// Object bytes saved.
    bytes: u64,
    /// Shards written.
    shards: u64,
    /// Shards written to a node other than their first placement.
    moved_shards: u64,
    /// Stripes with more than one shard on a node (fewer than k + m nodes were up): they
    /// survive fewer node failures until `repair` spreads them out.
    doubled_stripes: u64,
    /// Nodes holding the manifest.
    manifest_nodes: Vec<u32>,
    /// Wall time, in seconds.
    elapsed_s: f64,
    /// Times this save gave way to a priority save of the same client.
    yielded: u64,
    /// For a priority save (`deadline_s`), the seconds that were left when it committed.
    deadline_left_s: Option<f64>,
}

impl From<SaveReport> for PySaveReport {
    fn from(r: SaveReport) -> Self {
        Self {
            manifest_id: r.manifest_id.to_string(),
            bytes: r.bytes,
            shards: r.shards,
            moved_shards: r.moved_shards,
            doubled_stripes: r.doubled_stripes,
            manifest_nodes: r.manifest_nodes.iter().map(|n| n.0).collect(),
            elapsed_s: r.elapsed.as_secs_f64(),
            yielded: r.yielded,
            deadline_left_s: r.deadline_left.map(|d| d.as_secs_f64()),
        }
    }
}

/// One checkpoint as `list` shows it.
#[pyclass(frozen, get_all, name = "Checkpoint", module = "rackpoint._native")]
pub(crate) struct PyCheckpoint {
    step: u64,
    world_size: u32,
    parts: u32,
    complete: bool,
    bytes: u64,
    /// More node failures every stripe survives, from the shards the nodes list as present;
    /// `None` if it cannot be restored now.
    survives_more_failures: Option<usize>,
    /// The same in racks.
    survives_rack_failures: Option<usize>,
    /// With `survives_more_failures` `None`: the nodes that do not answer and hold its shards.
    unavailable_nodes: Vec<u32>,
    /// A delete of it has begun and is not finished on every node: never complete, never
    /// restored (the CLI's `gc`, `rm` or `repair` finishes it).
    deleting: bool,
    /// With `deleting`: the nodes still to finish it.
    deleting_nodes: Vec<u32>,
}

/// What `Client.list` returns: the checkpoints, oldest first (a sequence), and the nodes
/// that did not answer the listing.
#[pyclass(frozen, name = "CheckpointList", module = "rackpoint._native")]
pub(crate) struct PyCheckpointList {
    checkpoints: Vec<Py<PyCheckpoint>>,
    /// Nodes that did not answer: checkpoints whose manifests are all on them are missing.
    #[pyo3(get)]
    unseen_nodes: Vec<u32>,
}

#[pymethods]
impl PyCheckpointList {
    fn __len__(&self) -> usize {
        self.checkpoints.len()
    }

    fn __getitem__(&self, py: Python<'_>, index: isize) -> PyResult<Py<PyCheckpoint>> {
        let len = self.checkpoints.len() as isize;
        let i = if index < 0 { index + len } else { index };
        if !(0..len).contains(&i) {
            return Err(pyo3::exceptions::PyIndexError::new_err("checkpoint index out of range"));
        }
        Ok(self.checkpoints[i as usize].clone_ref(py))
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let items: Vec<Py<PyCheckpoint>> =
            self.checkpoints.iter().map(|c| c.clone_ref(py)).collect();
        Ok(PyList::new(py, items)?.call_method0("__iter__")?.unbind())
    }

    /// Whether the listing is complete: every node answered.
    #[getter]
    fn complete(&self) -> bool {
        self.unseen_nodes.is_empty()
    }

    fn __repr__(&self) -> String {
        format!(
            "CheckpointList({} checkpoints, unseen_nodes={:?})",
            self.checkpoints.len(),
            self.unseen_nodes
        )
    }
}

impl From<CheckpointSummary> for PyCheckpoint {
    fn from(c: CheckpointSummary) -> Self {
        Self {
            step: c.step.0,
            world_size: c.world_size,
            parts: c.parts,
            complete: c.complete,
            bytes: c.bytes,
            survives_more_failures: c.survives_more_failures,
            survives_rack_failures: c.survives_rack_failures,
            unavailable_nodes: c.unavailable_nodes.iter().map(|n| n.0).collect(),
            deleting: c.deleting,
            deleting_nodes: c.deleting_nodes.iter().map(|n| n.0).collect(),
        }
    }
}

#[pymethods]
impl PyCheckpoint {
    fn __repr__(&self) -> String {
        format!(
            "Checkpoint(step={}, parts={}/{}, complete={}, bytes={}{})",
            self.step,
            self.parts,
            self.world_size,
            self.complete,
            self.bytes,
            if self.deleting { ", deleting" } else { "" }
        )
    }
}

/// The cluster's jobs as `Client.jobs()` lists them.
#[pyclass(frozen, get_all, name = "Jobs", module = "rackpoint._native")]
pub(crate) struct PyJobs {
    /// One per job, in name order.
    jobs: Vec<Py<PyJob>>,
    /// Nodes that did not answer: what they hold is not counted.
    unseen_nodes: Vec<u32>,
    /// More than m nodes did not answer: jobs held only by them are missing.
    may_miss_jobs: bool,
}

impl PyJobs {
    fn new(py: Python<'_>, r: JobsReport) -> PyResult<Self> {
        let jobs = r
            .jobs
            .iter()
            .map(|j| {
                let job = PyJob {
                    job: j.job.to_string(),
                    checkpoints: j.checkpoints,
                    complete_checkpoints: j.complete_checkpoints,
                    newest_step: j.newest_step.map(|s| s.0),
                    newest_complete_step: j.newest_complete_step.map(|s| s.0),
                    shard_bytes: j.shard_bytes,
                    nodes: j.nodes.iter().map(|n| n.0).collect(),
                };
                Py::new(py, job)
            })
            .collect::<PyResult<_>>()?;
        let unseen_nodes = r.unseen().iter().map(|n| n.0).collect();
        Ok(Self { jobs, unseen_nodes, may_miss_jobs: r.may_miss_jobs })
    }
}

/// One job of the cluster.
#[pyclass(frozen, get_all, name = "Job", module = "rackpoint._native")]
pub(crate) struct PyJob {
    job: String,
    checkpoints: u64,
    complete_checkpoints: u64,
    newest_step: Option<u64>,
    newest_complete_step: Option<u64>,
    /// Shard bytes stored, data and parity.
    shard_bytes: u64,
    nodes: Vec<u32>,
}

#[pymethods]
impl PyJob {
    fn __repr__(&self) -> String {
        format!(
            "Job({:?}, checkpoints={}, complete={}, newest_step={:?}, shard_bytes={})",
            self.job,
            self.checkpoints,
            self.complete_checkpoints,
            self.newest_step,
            self.shard_bytes
        )
    }
}

/// A checkpoint to resume from: its step and every rank's part.
#[pyclass(frozen, get_all, name = "ResumePoint", module = "rackpoint._native")]
pub(crate) struct PyResumePoint {
    step: u64,
    world_size: u32,
    /// `parts[r]` is rank r's part.
    parts: Vec<Py<PyPart>>,
    /// Nodes that did not answer the listing: a newer checkpoint whose manifests are all on
    /// them was not seen (empty when every node answered).
    unseen_nodes: Vec<u32>,
}

/// What `verify` found.
#[pyclass(frozen, get_all, name = "VerifyReport", module = "rackpoint._native")]
pub(crate) struct PyVerifyReport {
    step: u64,
    world_size: u32,
    parts_found: Vec<u32>,
    shards_ok: u64,
    /// One text per missing, corrupt or unreachable shard.
    bad_shards: Vec<String>,
    /// One text per broken link of a rank's manifest chain.
    chain_problems: Vec<String>,
    /// More node failures every part survives, from where its good shards are.
    survives_more_failures: Option<usize>,
    /// The same in racks.
    survives_rack_failures: Option<usize>,
    /// One text per stripe with more than one shard on a node (repair spreads them).
    degraded_placement: Vec<String>,
    /// Every part present, every shard good and on a node of its own, every chain intact.
    healthy: bool,
    /// A stripe is known lost: nodes answered that more than m of its shards are missing or
    /// corrupt. (`survives_more_failures` is `None` without it: unavailable, not lost.)
    lost: bool,
}

impl From<VerifyReport> for PyVerifyReport {
    fn from(r: VerifyReport) -> Self {
        Self {
            healthy: r.is_healthy(),
            lost: r.lost,
            step: r.step.0,
            world_size: r.world_size,
            parts_found: r.parts_found.iter().map(|p| p.0).collect(),
            shards_ok: r.shards_ok,
            bad_shards: r
                .bad_shards
                .iter()
                .map(|b| {
                    format!(
                        "rank {} object {} stripe {} shard {} on node {}: {:?}",
                        b.rank, b.object, b.stripe, b.index, b.node, b.why
                    )
                })
                .collect(),
            chain_problems: r
                .chain_problems
                .iter()
                .map(|(rank, p)| format!("rank {rank}: {p}"))
                .collect(),
            survives_more_failures: r.survives_more_failures,
            survives_rack_failures: r.survives_rack_failures,
            degraded_placement: r.degraded_placement.iter().map(|d| d.to_string()).collect(),
        }
    }
}
