//! Request handling over the engine, without any transport: a decoded [`Request`] and its
//! payload in, a [`Reply`] (response, payload, and the memory budget the payload holds) out.
//! The QUIC glue (`service`) calls [`Handler::handle`]; unit tests call it directly.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use rackpoint_proto::access::{Access, Grant, Need, Scope};
use rackpoint_proto::failpoint;
use rackpoint_proto::limits::{
    NODE_DEFAULT_ORPHAN_GRACE_MS, NODE_MAX_INFLIGHT_BYTES, NODE_MAX_RECENT_MANIFEST_WRITES,
    NODE_ROLLBACK_WINDOW_MS, WIRE_VERSION,
};
use rackpoint_proto::wire::{Message, Versions};
use rackpoint_proto::{
    Digest, ErrorCode, JobName, ManifestKey, NodeId, NodeStats, Rank, Request, Response, ShardKey,
    Step,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::engine::{Engine, EngineError, StoredManifest, StoredShard};
use crate::identity::{Caller, Revocations};
use crate::quota::{QuotaCheckError, QuotaExceeded, Quotas};

mod cluster_map;
mod lifecycle;

pub use cluster_map::{MapKeeper, MapRefusal};

/// The tracing target of the audit lines: every refusal, and every destructive or repairing
/// request with its outcome, naming the identity.
pub const AUDIT_TARGET: &str = "rackpoint::audit";
use crate::stats::{disk_free_bytes, FoundBy, NodeCounters, NodeGauges};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The engine refused or failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A blocking engine task panicked or was cancelled.
    #[error("engine task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The in-flight budget was closed: the node is stopping.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The write would take its job past its quota here.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// A pushed cluster map was not taken.
    #[error(transparent)]
    Map(MapRefusal),
}

impl RequestError {
    /// Why the stored value is corrupt, if that is the error.
    pub fn corruption(&self) -> Option<&str> {
        match self {
            RequestError::Engine(EngineError::Corrupt { reason }) => Some(reason),
            _ => None,
        }
    }

    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RequestError::Engine(e) => e.code(),
            RequestError::Task(_) => ErrorCode::Internal,
            RequestError::ShuttingDown => ErrorCode::ShuttingDown,
            RequestError::Quota(q) => ErrorCode::QuotaExceeded { used: q.used, limit: q.limit },
            RequestError::Map(m) => m.code(),
        }
    }
}

/// The bound on payload bytes held in memory across all requests (`NODE_MAX_INFLIGHT_BYTES`):
/// a request acquires its payload's size before reading it or loading it.
#[derive(Debug, Clone)]
pub struct InflightBudget(Arc<Semaphore>, usize);

impl InflightBudget {
    /// A budget of `bytes` (at most `NODE_MAX_INFLIGHT_BYTES` is ever asked for).
    pub fn new(bytes: u64) -> Self {
        let permits = usize::try_from(bytes).unwrap_or(usize::MAX).min(Semaphore::MAX_PERMITS);
        Self(Arc::new(Semaphore::new(permits)), permits)
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        self.1.saturating_sub(self.0.available_permits()) as u64
    }

    /// Waits until `bytes` are free and holds them until the permit drops.
    pub async fn acquire(&self, bytes: u32) -> Result<OwnedSemaphorePermit, RequestError> {
        self.0.clone().acquire_many_owned(bytes).await.map_err(|_| RequestError::ShuttingDown)
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.0.available_permits()
    }
}

impl Default for InflightBudget {
    fn default() -> Self {
        Self::new(NODE_MAX_INFLIGHT_BYTES)
    }
}

/// A reply to send: the response, its payload, and the budget the payload holds until it has
/// been sent.
#[derive(Debug)]
pub struct Reply {
    /// The response header.
    pub response: Response,
    /// Raw payload after the header (empty for most responses).
    pub payload: Bytes,
    /// Budget held by `payload`; drop it once the payload is sent.
    pub permit: Option<OwnedSemaphorePermit>,
}

impl Reply {
    fn bare(response: Response) -> Self {
        Self { response, payload: Bytes::new(), permit: None }
    }

    fn with_payload(response: Response, bytes: Vec<u8>, permit: OwnedSemaphorePermit) -> Self {
        Self { response, payload: Bytes::from(bytes), permit: Some(permit) }
    }

    /// An error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::bare(Response::error(code, message))
    }

    /// Whether this reply reports success.
    pub fn is_ok(&self) -> bool {
        !matches!(self.response, Response::Error { .. })
    }
}

/// The job a request touches, for log lines (empty for none).
fn request_job(request: &Request) -> &str {
    match request.needs().scope {
        Scope::Job(job) => job.as_str(),
        Scope::Any | Scope::Cluster => "",
    }
}

/// Who this node is, as `Hello` and `Stats` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's id.
    pub node_id: NodeId,
    /// The node's failure domain.
    pub rack: String,
}

/// What the node enforces beyond the grants themselves, from its `node.toml`.
#[derive(Debug)]
pub struct NodePolicy {
    /// Certificates refused whatever they grant.
    pub revocations: Revocations,
    /// Youngest shard an orphan sweep may delete, whatever the sweep asks.
    pub min_orphan_grace_ms: u64,
    /// Byte quotas of the jobs here.
    pub quotas: Quotas,
    /// The wire versions the node speaks (`node.toml`'s `wire_version_max` caps them).
    pub wire_versions: Versions,
}

impl Default for NodePolicy {
    fn default() -> Self {
        Self {
            revocations: Revocations::none(),
            min_orphan_grace_ms: NODE_DEFAULT_ORPHAN_GRACE_MS,
            quotas: Quotas::default(),
            wire_versions: Versions::ALL,
        }
    }
}

/// Manifests stored a moment ago and who stored them, so that a commit short of m + 1
/// copies can take its own copies back with only `append` access (at most
/// `NODE_MAX_RECENT_MANIFEST_WRITES`, each for `NODE_ROLLBACK_WINDOW_MS`).
#[derive(Debug, Default)]
struct RecentManifestWrites(Mutex<VecDeque<(ManifestKey, Digest, String, Instant)>>);

impl RecentManifestWrites {
    fn record(&self, key: ManifestKey, hash: Digest, caller: &Caller) {
        let mut recent = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if recent.len() >= NODE_MAX_RECENT_MANIFEST_WRITES {
            recent.pop_front();
        }
        recent.push_back((key, hash, caller.fingerprint.clone(), Instant::now()));
    }

    fn stored_by(&self, key: &ManifestKey, hash: &Digest, caller: &Caller) -> bool {
        let window = Duration::from_millis(NODE_ROLLBACK_WINDOW_MS);
        let recent = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        recent.iter().rev().any(|(k, h, who, at)| {
            k == key && h == hash && *who == caller.fingerprint && at.elapsed() < window
        })
    }
}

/// Serves decoded requests over the engine.
#[derive(Debug, Clone)]
pub struct Handler {
    engine: Arc<Engine>,
    counters: Arc<NodeCounters>,
    identity: NodeIdentity,
    budget: InflightBudget,
    policy: Arc<NodePolicy>,
    recent_manifests: Arc<RecentManifestWrites>,
    /// The signed cluster map the node keeps for clients (none, and none taken, until
    /// `with_cluster_maps` names the CA maps must verify against).
    maps: Arc<MapKeeper>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, RequestError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

impl Handler {
    /// A handler over `engine`, counting into `counters`, bounding payload memory by `budget`.
    pub fn new(
        engine: Arc<Engine>,
        counters: Arc<NodeCounters>,
        identity: NodeIdentity,
        budget: InflightBudget,
    ) -> Self {
        let policy = Arc::new(NodePolicy::default());
        Self {
            engine,
            counters,
            identity,
            budget,
            policy,
            recent_manifests: Arc::default(),
            maps: Arc::default(),
        }
    }

    /// The same handler enforcing `policy`.
    pub fn with_policy(mut self, policy: NodePolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The payload memory budget (the glue acquires from it before reading a payload).
    pub fn budget(&self) -> &InflightBudget {
        &self.budget
    }

    /// The node's counters.
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// The node's store (the metrics endpoint reads its per-job usage).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Every counter of the node now, unfiltered: what `Stats` answers an admin, and what the
    /// metrics endpoint exports (one source for both).
    pub fn stats(&self) -> NodeStats {
        let gauges = NodeGauges {
            disk_free_bytes: disk_free_bytes(self.engine.dir()),
            inflight_bytes: self.budget.in_use(),
        };
        self.counters.snapshot(self.identity.node_id, self.engine.counts(), gauges)
    }

    /// Checks that `caller` may send `request` (its certificate unexpired and not revoked,
    /// its grant reaching the request's job at the level the request needs), before its
    /// payload is read. A refusal is a `PermissionDenied` reply naming the job, the access
    /// needed and the identity, and an audit line.
    pub fn admit(&self, caller: &Caller, request: &Request) -> Result<(), Reply> {
        let Some(reason) = self.refusal(caller, request) else { return Ok(()) };
        let job = request_job(request);
        tracing::warn!(target: AUDIT_TARGET, identity = %caller.name, serial = %caller.serial,
            kind = request.kind(), job, "refused: {reason}");
        Err(Reply::error(ErrorCode::PermissionDenied, reason))
    }

    fn refusal(&self, caller: &Caller, request: &Request) -> Option<String> {
        let need = request.needs();
        let kind = request.kind();
        if caller.expired_at(SystemTime::now()) {
            return Some(format!("{kind} refused: the certificate of {caller} has expired"));
        }
        if self.policy.revocations.is_revoked(caller) {
            return Some(format!("{kind} refused: the certificate of {caller} is revoked"));
        }
        let Some(grant) = &caller.grant else {
            return Some(format!(
                "{kind} needs {need}; {caller} is not a client identity (a node's certificate, \
                 or one without an access grant)"
            ));
        };
        if grant.permits(&need) || self.may_roll_back(caller, grant, request) {
            return None;
        }
        Some(format!("{kind} needs {need}; {caller} has {grant}"))
    }

    /// An `append` identity may delete exactly the manifest it stored a moment ago (a commit
    /// short of m + 1 copies rolls back), and nothing else.
    fn may_roll_back(&self, caller: &Caller, grant: &Grant, request: &Request) -> bool {
        let Request::DeleteManifest { key, hash: Some(hash) } = request else { return false };
        let need = Need { access: Access::Append, scope: Scope::Job(&key.job) };
        grant.permits(&need) && self.recent_manifests.stored_by(key, hash, caller)
    }

    /// Serves one request whose payload has been read in full, if `caller` may send it;
    /// counts it as served or failed. Errors become error replies; destructive requests
    /// leave an audit line with their outcome.
    pub async fn handle(&self, caller: &Caller, request: Request, payload: Bytes) -> Reply {
        self.handle_at(caller, request, payload, WIRE_VERSION).await
    }

    /// The wire versions this node speaks.
    pub fn wire_versions(&self) -> Versions {
        self.policy.wire_versions
    }

    /// [`Handler::handle`] for a request that came in wire version `version`: the reply is
    /// one that version has (a version 1 caller knows no deletion marks, so a listing leaves
    /// out the steps being deleted rather than show them as checkpoints).
    pub async fn handle_at(
        &self,
        caller: &Caller,
        request: Request,
        payload: Bytes,
        version: u8,
    ) -> Reply {
        let kind = request.kind();
        let started = Instant::now();
        if let Err(refused) = self.admit(caller, &request) {
            self.counters.record_request(kind, false, started.elapsed());
            return refused;
        }
        let audit = request.is_destructive().then(|| format!("{request:?}"));
        let reply = self.dispatch(caller, request, payload, version).await;
        let reply = reply.unwrap_or_else(|e| Reply::error(e.code(), e.to_string()));
        self.counters.record_request(kind, reply.is_ok(), started.elapsed());
        if let Some(request) = audit {
            let outcome = format!("{:?}", reply.response);
            tracing::info!(target: AUDIT_TARGET, identity = %caller.name, serial = %caller.serial,
                kind, outcome, "{request}");
        }
        reply
    }

    async fn dispatch(
        &self,
        caller: &Caller,
        request: Request,
        payload: Bytes,
        version: u8,
    ) -> Result<Reply, RequestError> {
        match request {
            Request::Hello => Ok(Reply::bare(self.hello(version))),
            Request::PutShard { key, hash } => self.put_shard(key, hash, payload).await,
            Request::GetShard { key } => self.get_shard(key).await,
            Request::DeleteCheckpoint { job, step } => self.delete_checkpoint(job, step).await,
            Request::PutManifest { key, world_size, hash } => {
                let reply = self.put_manifest(key.clone(), world_size, hash, payload).await?;
                self.recent_manifests.record(key, hash, caller);
                Ok(reply)
            }
            Request::GetManifest { key } => self.get_manifest(key).await,
            Request::ListManifests { job, after, limit } => {
                self.list_manifests(job, after, limit, version).await
            }
            Request::Stats => {
                let mut stats = self.stats();
                // Corrupt keys name jobs: a caller sees only those of jobs it reaches.
                let reaches = |job: &JobName| caller.grant.as_ref().is_some_and(|g| g.covers(job));
                stats.corrupt_shards.retain(|key| reaches(&key.job));
                Ok(Reply::bare(Response::Stats(Box::new(stats))))
            }
            Request::VerifyShard { key } => self.verify_shard(key).await,
            Request::DeleteManifest { key, hash } => self.delete_manifest(key, hash).await,
            Request::ReplaceManifest { key, world_size, hash, revision, base } => {
                self.replace_manifest(key, (world_size, hash), (revision, base), payload).await
            }
            Request::ListParts { job, after, limit } => self.list_parts(job, after, limit).await,
            Request::DeleteOrphanShards { key, min_age_ms } => {
                let min_age_ms = min_age_ms.max(self.policy.min_orphan_grace_ms);
                self.delete_orphan_shards(key, min_age_ms).await
            }
            Request::DeleteShard { key, hash } => self.delete_shard(key, hash).await,
            Request::MarkDeleting { job, step } => self.deletion_mark(job, step, true).await,
            Request::ClearDeleting { job, step } => self.deletion_mark(job, step, false).await,
            Request::ListJobs { after, limit } => self.list_jobs(caller, after, limit).await,
            Request::GetClusterMap => self.get_cluster_map().await,
            Request::PutClusterMap { epoch } => self.put_cluster_map(epoch, payload).await,
        }
    }

    fn hello(&self, version: u8) -> Response {
        Response::Hello {
            node_id: self.identity.node_id,
            rack: self.identity.rack.clone(),
            capacity_bytes: self.engine.capacity_bytes(),
            used_bytes: self.engine.counts().shard_bytes,
            map_epoch: self.map_epoch_for(version),
        }
    }

    async fn put_shard(
        &self,
        key: ShardKey,
        hash: Digest,
        payload: Bytes,
    ) -> Result<Reply, RequestError> {
        let (engine, policy, k) = (self.engine.clone(), self.policy.clone(), key.clone());
        let stored = blocking(move || {
            let previous = engine.shard_len(&k)?.map_or(0, u64::from);
            let growth = (payload.len() as u64).saturating_sub(previous);
            let reservation = match policy.quotas.reserve(&engine, &k.job, growth) {
                Ok(reservation) => reservation,
                Err(QuotaCheckError::Exceeded(refused)) => return Ok(Err(refused)),
                Err(QuotaCheckError::Engine(e)) => return Err(e),
            };
            engine.put_shard(&k, hash, &payload)?;
            if let Some(reservation) = reservation {
                reservation.keep();
            }
            Ok(Ok(()))
        });
        stored.await??;
        failpoint::hit("node.shard_put.before_ack");
        self.counters.forget_corrupt(&key);
        Ok(Reply::bare(Response::ShardStored))
    }

    /// Reserves budget for a stored value of `len` bytes, loads it, and tops the
    /// reservation up if the value grew in between (a concurrent overwrite).
    async fn load_within_budget<T: Send + 'static>(
        &self,
        len: u32,
        load: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
        loaded_len: impl Fn(&T) -> usize,
    ) -> Result<(T, OwnedSemaphorePermit), RequestError> {
        let mut permit = self.budget.acquire(len).await?;
        let value = blocking(load).await?;
        let extra = loaded_len(&value).saturating_sub(len as usize);
        if extra > 0 {
            let extra = u32::try_from(extra).unwrap_or(u32::MAX);
            permit.merge(self.budget.acquire(extra).await?);
        }
        Ok((value, permit))
    }

    async fn get_shard(&self, key: ShardKey) -> Result<Reply, RequestError> {
        let result = self.load_shard(&key).await;
        if let Some(reason) = result.as_ref().err().and_then(RequestError::corruption) {
            self.counters.report_corrupt(&key, FoundBy::Read, reason);
        }
        result
    }

    async fn load_shard(&self, key: &ShardKey) -> Result<Reply, RequestError> {
        let (engine, k) = (self.engine.clone(), key.clone());
        let len = blocking(move || engine.shard_len(&k)).await?.ok_or(EngineError::NotFound)?;
        let (engine, k) = (self.engine.clone(), key.clone());
        let load = move || engine.get_shard(&k);
        let (shard, permit) =
            self.load_within_budget(len, load, |s: &StoredShard| s.bytes.len()).await?;
        Ok(Reply::with_payload(Response::Shard { hash: shard.hash }, shard.bytes, permit))
    }

    async fn delete_checkpoint(&self, job: JobName, step: Step) -> Result<Reply, RequestError> {
        let engine = self.engine.clone();
        let j = job.clone();
        let deleted = blocking(move || engine.delete_checkpoint(&j, step)).await?;
        self.policy.quotas.forget(&job);
        self.counters.forget_corrupt_where(|k| k.job == job && k.step == step);
        Ok(Reply::bare(Response::CheckpointDeleted {
            shards: deleted.shards,
            manifests: deleted.manifests,
        }))
    }

    async fn put_manifest(
        &self,
        key: ManifestKey,
        world_size: u32,
        hash: Digest,
        payload: Bytes,
    ) -> Result<Reply, RequestError> {
        let engine = self.engine.clone();
        blocking(move || engine.put_manifest(&key, world_size, hash, &payload)).await?;
        Ok(Reply::bare(Response::ManifestStored))
    }

    async fn get_manifest(&self, key: ManifestKey) -> Result<Reply, RequestError> {
        let result = self.load_manifest(&key).await;
        if let Some(reason) = result.as_ref().err().and_then(RequestError::corruption) {
            let (job, step, rank) = (&key.job, key.step, key.rank);
            tracing::error!(%job, %step, %rank, "corrupt manifest: {reason}");
        }
        result
    }

    async fn load_manifest(&self, key: &ManifestKey) -> Result<Reply, RequestError> {
        let (engine, k) = (self.engine.clone(), key.clone());
        let len = blocking(move || engine.manifest_len(&k)).await?.ok_or(EngineError::NotFound)?;
        let (engine, k) = (self.engine.clone(), key.clone());
        let load = move || engine.get_manifest(&k);
        let (manifest, permit) =
            self.load_within_budget(len, load, |m: &StoredManifest| m.bytes.len()).await?;
        let response = Response::Manifest { world_size: manifest.world_size, hash: manifest.hash };
        Ok(Reply::with_payload(response, manifest.bytes, permit))
    }

    /// A page of the job's manifests and its marked steps; at a wire version without marks
    /// (1), the page without the manifests of marked steps instead (pages that would be empty
    /// for that are skipped, so a caller that stops at an empty page misses nothing).
    async fn list_manifests(
        &self,
        job: JobName,
        after: Option<(Step, Rank)>,
        limit: u32,
        version: u8,
    ) -> Result<Reply, RequestError> {
        let engine = self.engine.clone();
        let list = move || {
            let deleting = engine.deletion_marks(&job)?;
            let mut after = after;
            loop {
                let page = engine.list_manifests(&job, after, limit)?;
                if version >= 2 || deleting.is_empty() {
                    return Ok((page.entries, page.more, deleting));
                }
                after = page.entries.last().map(|e| (e.step, e.rank));
                let mut entries = page.entries;
                entries.retain(|e| !deleting.contains(&e.step));
                if !entries.is_empty() || !page.more || after.is_none() {
                    return Ok((entries, page.more, Vec::new()));
                }
            }
        };
        let (entries, more, deleting) = blocking(list).await?;
        Ok(Reply::bare(Response::Manifests { entries, more, deleting }))
    }

    /// Stores (`mark`) or removes the deletion mark of `(job, step)`.
    async fn deletion_mark(
        &self,
        job: JobName,
        step: Step,
        mark: bool,
    ) -> Result<Reply, RequestError> {
        let engine = self.engine.clone();
        let existed = blocking(move || {
            if mark {
                engine.mark_deleting(&job, step)
            } else {
                engine.clear_deleting(&job, step)
            }
        })
        .await?;
        Ok(Reply::bare(Response::DeletionMark { existed }))
    }

    /// The jobs the caller's grant reaches (an admin's: all), looked up only in the name
    /// ranges the grant covers: another job's name is never read, let alone sent.
    async fn list_jobs(
        &self,
        caller: &Caller,
        after: Option<JobName>,
        limit: u32,
    ) -> Result<Reply, RequestError> {
        // `admit` refused a caller without a grant; none reaches nothing.
        let Some(grant) = caller.grant.clone() else {
            return Ok(Reply::bare(Response::Jobs { jobs: Vec::new(), more: false }));
        };
        let engine = self.engine.clone();
        let mut page =
            blocking(move || engine.list_jobs(&grant.job_ranges(), after.as_ref(), limit)).await?;
        // The ranges hold exactly the covered names; this keeps it so whatever they become.
        page.jobs.retain(|j| caller.grant.as_ref().is_some_and(|g| g.covers(&j.job)));
        Ok(Reply::bare(Response::Jobs { jobs: page.jobs, more: page.more }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;
    use rackpoint_proto::{ObjectName, ShardIndex, StripeIndex};

    struct Fixture {
        _dir: tempfile::TempDir,
        engine: Arc<Engine>,
        handler: Handler,
    }

    fn fixture(capacity_bytes: u64) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = EngineOptions { capacity_bytes, ..EngineOptions::default() };
        let engine = Arc::new(Engine::open(dir.path(), options).expect("engine opens"));
        let identity = NodeIdentity { node_id: NodeId(7), rack: "rack-a".into() };
        let policy = NodePolicy { min_orphan_grace_ms: 0, ..NodePolicy::default() };
        let handler =
            Handler::new(engine.clone(), Arc::default(), identity, InflightBudget::default())
                .with_policy(policy);
        Fixture { _dir: dir, engine, handler }
    }

    fn admin() -> Caller {
        Caller::in_process("test-admin", Grant::admin())
    }

    fn job() -> JobName {
        JobName::new("job").expect("valid")
    }

    fn shard_key(index: u8) -> ShardKey {
        ShardKey {
            job: job(),
            step: Step(5),
            rank: Rank(1),
            object: ObjectName::new("optim").expect("valid"),
            stripe: StripeIndex(2),
            index: ShardIndex(index),
        }
    }

    fn digest(b: &[u8]) -> Digest {
        Digest(*blake3::hash(b).as_bytes())
    }

    fn error_code(reply: &Reply) -> Option<ErrorCode> {
        match &reply.response {
            Response::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    async fn put(h: &Handler, key: ShardKey, bytes: &'static [u8]) -> Reply {
        let request = Request::PutShard { key, hash: digest(bytes) };
        h.handle(&admin(), request, Bytes::from_static(bytes)).await
    }

    fn stats(reply: Reply) -> rackpoint_proto::NodeStats {
        match reply.response {
            Response::Stats(s) => *s,
            other => panic!("expected stats, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn put_then_get_returns_the_bytes_and_holds_budget_until_sent() {
        let f = fixture(0);
        let h = &f.handler;
        assert_eq!(put(h, shard_key(0), b"shard bytes").await.response, Response::ShardStored);
        let before = h.budget().available();
        let reply = h.handle(&admin(), Request::GetShard { key: shard_key(0) }, Bytes::new()).await;
        assert_eq!(reply.response, Response::Shard { hash: digest(b"shard bytes") });
        assert_eq!(&reply.payload[..], b"shard bytes");
        assert_eq!(h.budget().available(), before - 11);
        drop(reply);
        assert_eq!(h.budget().available(), before);
        let missing =
            h.handle(&admin(), Request::GetShard { key: shard_key(1) }, Bytes::new()).await;
        assert_eq!(error_code(&missing), Some(ErrorCode::NotFound));
    }

    #[tokio::test]
    async fn a_wrong_hash_is_refused_and_counted_as_failed() {
        let f = fixture(0);
        let request = Request::PutShard { key: shard_key(0), hash: digest(b"other") };
        let reply = f.handler.handle(&admin(), request, Bytes::from_static(b"bytes")).await;
        assert_eq!(error_code(&reply), Some(ErrorCode::HashMismatch));
        let s = stats(f.handler.handle(&admin(), Request::Stats, Bytes::new()).await);
        let put = s.requests.iter().find(|c| c.kind == "PutShard").expect("listed");
        assert_eq!((put.served, put.failed), (0, 1));
        assert_eq!(s.shards, 0);
    }

    #[tokio::test]
    async fn corrupt_shards_are_refused_and_counted() {
        let f = fixture(0);
        put(&f.handler, shard_key(0), b"good bytes").await;
        f.engine.overwrite_bytes_for_test(&shard_key(0).encode(), b"bad bytes!");
        for _ in 0..2 {
            let reply = f
                .handler
                .handle(&admin(), Request::GetShard { key: shard_key(0) }, Bytes::new())
                .await;
            assert_eq!(error_code(&reply), Some(ErrorCode::Corrupt));
            assert!(reply.payload.is_empty());
        }
        let s = stats(f.handler.handle(&admin(), Request::Stats, Bytes::new()).await);
        assert_eq!(s.corrupt_shards_found, 1, "one shard, found twice, counts once");
        assert_eq!(f.handler.budget().available(), NODE_MAX_INFLIGHT_BYTES as usize);
    }

    #[tokio::test]
    async fn capacity_gives_disk_full_and_hello_reports_usage() {
        let f = fixture(16);
        assert!(put(&f.handler, shard_key(0), b"0123456789").await.is_ok());
        let full = put(&f.handler, shard_key(1), b"0123456789").await;
        assert_eq!(error_code(&full), Some(ErrorCode::DiskFull));
        let hello = f.handler.handle(&admin(), Request::Hello, Bytes::new()).await.response;
        let expected = Response::Hello {
            node_id: NodeId(7),
            rack: "rack-a".into(),
            capacity_bytes: 16,
            used_bytes: 10,
            map_epoch: 0,
        };
        assert_eq!(hello, expected);
    }

    #[tokio::test]
    async fn manifests_put_get_list_and_delete() {
        let f = fixture(0);
        let h = &f.handler;
        let key = ManifestKey { job: job(), step: Step(5), rank: Rank(1) };
        let m: &'static [u8] = b"manifest bytes";
        let request = Request::PutManifest { key: key.clone(), world_size: 2, hash: digest(m) };
        assert_eq!(
            h.handle(&admin(), request, Bytes::from_static(m)).await.response,
            Response::ManifestStored
        );
        let got = h.handle(&admin(), Request::GetManifest { key: key.clone() }, Bytes::new()).await;
        assert_eq!(got.response, Response::Manifest { world_size: 2, hash: digest(m) });
        assert_eq!(&got.payload[..], m);
        let list = Request::ListManifests { job: job(), after: None, limit: 10 };
        let Response::Manifests { entries, more, .. } =
            h.handle(&admin(), list, Bytes::new()).await.response
        else {
            panic!("expected a manifest page");
        };
        assert_eq!((entries.len(), entries[0].world_size, more), (1, 2, false));
        put(h, shard_key(0), b"x").await;
        let delete = Request::DeleteCheckpoint { job: job(), step: Step(5) };
        let deleted = h.handle(&admin(), delete, Bytes::new()).await.response;
        assert_eq!(deleted, Response::CheckpointDeleted { shards: 1, manifests: 1 });
        let gone = h.handle(&admin(), Request::GetManifest { key }, Bytes::new()).await;
        assert_eq!(error_code(&gone), Some(ErrorCode::NotFound));
    }

    #[tokio::test]
    async fn verify_shard_answers_the_digest_and_lists_rot_in_stats() {
        let f = fixture(0);
        let h = &f.handler;
        put(h, shard_key(0), b"good bytes").await;
        let verify = || Request::VerifyShard { key: shard_key(0) };
        let reply = h.handle(&admin(), verify(), Bytes::new()).await;
        assert_eq!(
            reply.response,
            Response::ShardVerified { hash: digest(b"good bytes"), len: 10 }
        );
        assert!(reply.payload.is_empty(), "nothing but the digest travels");
        f.engine.overwrite_bytes_for_test(&shard_key(0).encode(), b"bad bytes!");
        assert_eq!(
            error_code(&h.handle(&admin(), verify(), Bytes::new()).await),
            Some(ErrorCode::Corrupt)
        );
        let s = stats(h.handle(&admin(), Request::Stats, Bytes::new()).await);
        assert_eq!((s.corrupt_shards_found, s.corrupt_shards), (1, vec![shard_key(0)]));
        let delete = Request::DeleteCheckpoint { job: job(), step: Step(5) };
        h.handle(&admin(), delete, Bytes::new()).await;
        let s = stats(h.handle(&admin(), Request::Stats, Bytes::new()).await);
        assert!(s.corrupt_shards.is_empty(), "a deleted shard is no longer listed");
    }

    #[tokio::test]
    async fn delete_shard_removes_only_the_version_named() {
        let f = fixture(0);
        let h = &f.handler;
        put(h, shard_key(0), b"moved away").await;
        let delete = |hash| Request::DeleteShard { key: shard_key(0), hash };
        let other = h.handle(&admin(), delete(digest(b"another version")), Bytes::new()).await;
        assert_eq!(error_code(&other), Some(ErrorCode::Conflict));
        assert_eq!(stats(h.handle(&admin(), Request::Stats, Bytes::new()).await).shards, 1);
        let gone = h.handle(&admin(), delete(digest(b"moved away")), Bytes::new()).await.response;
        assert_eq!(gone, Response::ShardDeleted { existed: true });
        let s = stats(h.handle(&admin(), Request::Stats, Bytes::new()).await);
        assert_eq!((s.shards, s.shard_bytes), (0, 0));
        let again = h.handle(&admin(), delete(digest(b"moved away")), Bytes::new()).await.response;
        assert_eq!(again, Response::ShardDeleted { existed: false });
    }

    fn caller(access: Access, jobs: &str) -> Caller {
        let grant = Grant::new(access, Grant::parse_patterns(jobs).expect("patterns"));
        Caller::in_process(&format!("{access}-on-{jobs}"), grant.expect("grant"))
    }

    #[tokio::test]
    async fn requests_are_refused_outside_the_callers_jobs_and_level() {
        let f = fixture(0);
        let h = &f.handler;
        let stranger = caller(Access::Write, "other-*");
        let request = Request::PutShard { key: shard_key(0), hash: digest(b"x") };
        let refused = h.handle(&stranger, request, Bytes::from_static(b"x")).await;
        assert_eq!(error_code(&refused), Some(ErrorCode::PermissionDenied));
        let Response::Error { message, .. } = &refused.response else { unreachable!() };
        assert!(message.contains("job job") && message.contains("other-*"), "{message}");
        let reader = caller(Access::Read, "job");
        let put = Request::PutShard { key: shard_key(0), hash: digest(b"x") };
        assert_eq!(
            error_code(&h.handle(&reader, put.clone(), Bytes::from_static(b"x")).await),
            Some(ErrorCode::PermissionDenied)
        );
        let appender = caller(Access::Append, "job");
        assert!(h.handle(&appender, put, Bytes::from_static(b"x")).await.is_ok());
        let rm = Request::DeleteCheckpoint { job: job(), step: Step(5) };
        assert_eq!(
            error_code(&h.handle(&appender, rm.clone(), Bytes::new()).await),
            Some(ErrorCode::PermissionDenied)
        );
        assert!(h.handle(&caller(Access::Write, "j*"), rm, Bytes::new()).await.is_ok());
        let s = stats(h.handle(&admin(), Request::Stats, Bytes::new()).await);
        let put = s.requests.iter().find(|c| c.kind == "PutShard").expect("listed");
        assert_eq!((put.served, put.failed), (1, 2), "refusals count as failed");
    }

    #[tokio::test]
    async fn an_appender_takes_back_only_the_manifest_it_stored() {
        let f = fixture(0);
        let h = &f.handler;
        let (me, other) = (caller(Access::Append, "job"), caller(Access::Append, "j*"));
        let key = ManifestKey { job: job(), step: Step(5), rank: Rank(1) };
        let m: &'static [u8] = b"manifest bytes";
        let put = Request::PutManifest { key: key.clone(), world_size: 1, hash: digest(m) };
        assert!(h.handle(&me, put, Bytes::from_static(m)).await.is_ok());
        let undo = |hash| Request::DeleteManifest { key: key.clone(), hash };
        for (who, request) in [(&other, undo(Some(digest(m)))), (&me, undo(None))] {
            let reply = h.handle(who, request, Bytes::new()).await;
            assert_eq!(error_code(&reply), Some(ErrorCode::PermissionDenied));
        }
        let reply = h.handle(&me, undo(Some(digest(m))), Bytes::new()).await;
        assert_eq!(reply.response, Response::ManifestDeleted { existed: true });
    }

    #[tokio::test]
    async fn stats_show_only_the_corrupt_shards_of_the_callers_jobs() {
        let f = fixture(0);
        let h = &f.handler;
        put(h, shard_key(0), b"good bytes").await;
        f.engine.overwrite_bytes_for_test(&shard_key(0).encode(), b"bad bytes!");
        h.handle(&admin(), Request::VerifyShard { key: shard_key(0) }, Bytes::new()).await;
        let own = stats(h.handle(&caller(Access::Read, "job"), Request::Stats, Bytes::new()).await);
        assert_eq!(own.corrupt_shards, vec![shard_key(0)]);
        let other = stats(h.handle(&caller(Access::Read, "x"), Request::Stats, Bytes::new()).await);
        assert!(other.corrupt_shards.is_empty(), "another job's keys are not shown");
        assert_eq!(other.corrupt_shards_found, 1, "counts are the node's");
    }

    #[tokio::test]
    async fn expired_certificates_and_node_identities_are_refused() {
        let f = fixture(0);
        let h = &f.handler;
        let mut expired = admin();
        expired.not_after = 0;
        let mut node = admin();
        node.grant = None;
        for (who, word) in [(&expired, "expired"), (&node, "not a client identity")] {
            let reply = h.handle(who, Request::Hello, Bytes::new()).await;
            let Response::Error { code, message } = &reply.response else {
                panic!("served: {reply:?}")
            };
            assert_eq!(*code, ErrorCode::PermissionDenied);
            assert!(message.contains(word), "{message}");
        }
    }

    #[tokio::test]
    async fn list_jobs_shows_a_caller_only_the_jobs_its_grant_reaches() {
        let f = fixture(0);
        let h = &f.handler;
        for name in ["job", "secret-a", "secret-b"] {
            let key = ManifestKey {
                job: JobName::new(name).expect("valid"),
                step: Step(1),
                rank: Rank(0),
            };
            let m = Bytes::from(format!("manifest of {name}"));
            let put = Request::PutManifest { key, world_size: 1, hash: digest(&m) };
            assert!(h.handle(&admin(), put, m).await.is_ok());
        }
        let list = |after: Option<&str>| Request::ListJobs {
            after: after.map(|a| JobName::new(a).expect("valid")),
            limit: 10,
        };
        let names = |reply: Reply| match reply.response {
            Response::Jobs { jobs, more } => {
                (jobs.into_iter().map(|j| j.job.to_string()).collect::<Vec<_>>(), more)
            }
            other => panic!("expected jobs, got {other:?}"),
        };
        let all = names(h.handle(&admin(), list(None), Bytes::new()).await);
        assert_eq!(all, (vec!["job".into(), "secret-a".into(), "secret-b".into()], false));
        let reader = caller(Access::Read, "job");
        assert_eq!(
            names(h.handle(&reader, list(None), Bytes::new()).await),
            (vec!["job".into()], false)
        );
        // A resume point of another job's name tells the caller nothing either.
        let after = names(h.handle(&reader, list(Some("secret-a")), Bytes::new()).await);
        assert_eq!(after, (vec![], false));
        let mut node = admin();
        node.grant = None;
        let refused = h.handle(&node, list(None), Bytes::new()).await;
        assert_eq!(error_code(&refused), Some(ErrorCode::PermissionDenied));
    }

    #[tokio::test]
    async fn a_marked_step_is_listed_as_deleting_and_takes_no_manifest_until_cleared() {
        let f = fixture(0);
        let h = &f.handler;
        let mark = Request::MarkDeleting { job: job(), step: Step(5) };
        let reply = h.handle(&caller(Access::Append, "job"), mark.clone(), Bytes::new()).await;
        assert_eq!(error_code(&reply), Some(ErrorCode::PermissionDenied), "append never marks");
        let reply = h.handle(&caller(Access::Write, "job"), mark.clone(), Bytes::new()).await;
        assert_eq!(reply.response, Response::DeletionMark { existed: false });
        let list = Request::ListManifests { job: job(), after: None, limit: 10 };
        let Response::Manifests { deleting, .. } =
            h.handle(&admin(), list.clone(), Bytes::new()).await.response
        else {
            panic!("expected a manifest page");
        };
        assert_eq!(deleting, [Step(5)]);
        let key = ManifestKey { job: job(), step: Step(5), rank: Rank(0) };
        let m: &'static [u8] = b"manifest bytes";
        let put = Request::PutManifest { key, world_size: 1, hash: digest(m) };
        let refused = h.handle(&admin(), put.clone(), Bytes::from_static(m)).await;
        assert_eq!(error_code(&refused), Some(ErrorCode::Conflict));
        let Response::Error { message, .. } = &refused.response else { unreachable!() };
        assert!(message.contains("being deleted"), "{message}");
        let clear = Request::ClearDeleting { job: job(), step: Step(5) };
        let reply = h.handle(&admin(), clear, Bytes::new()).await;
        assert_eq!(reply.response, Response::DeletionMark { existed: true });
        assert!(h.handle(&admin(), put, Bytes::from_static(m)).await.is_ok());
    }

    /// Wire version 1 has no deletion marks: a version 1 listing leaves the marked steps out
    /// (a page that would hold only them is skipped, never sent empty with more to come).
    #[tokio::test]
    async fn a_version_1_listing_leaves_out_the_steps_being_deleted() {
        let f = fixture(0);
        let h = &f.handler;
        for step in 1..=6 {
            let key = ManifestKey { job: job(), step: Step(step), rank: Rank(0) };
            let m: &'static [u8] = b"manifest bytes";
            let put = Request::PutManifest { key, world_size: 1, hash: digest(m) };
            assert!(h.handle(&admin(), put, Bytes::from_static(m)).await.is_ok());
        }
        for step in [2, 3, 4] {
            let mark = Request::MarkDeleting { job: job(), step: Step(step) };
            assert!(h.handle(&admin(), mark, Bytes::new()).await.is_ok());
        }
        let mut after = None;
        let mut steps = Vec::new();
        loop {
            let list = Request::ListManifests { job: job(), after, limit: 1 };
            let Response::Manifests { entries, more, deleting } =
                h.handle_at(&admin(), list, Bytes::new(), 1).await.response
            else {
                panic!("expected a manifest page");
            };
            assert!(deleting.is_empty(), "version 1 has no marks to name");
            assert!(!entries.is_empty(), "no empty page");
            steps.extend(entries.iter().map(|e| e.step.0));
            after = entries.last().map(|e| (e.step, e.rank));
            if !more {
                break;
            }
        }
        assert_eq!(steps, [1, 5, 6]);
        let list = Request::ListManifests { job: job(), after: None, limit: 10 };
        let Response::Manifests { entries, deleting, .. } =
            h.handle(&admin(), list, Bytes::new()).await.response
        else {
            panic!("expected a manifest page");
        };
        assert_eq!((entries.len(), deleting), (6, vec![Step(2), Step(3), Step(4)]));
    }

    #[tokio::test]
    async fn orphan_sweeps_forget_the_corrupt_shards_they_delete() {
        let f = fixture(0);
        let h = &f.handler;
        put(h, shard_key(0), b"orphan").await;
        f.engine.overwrite_bytes_for_test(&shard_key(0).encode(), b"rotten");
        h.handle(&admin(), Request::VerifyShard { key: shard_key(0) }, Bytes::new()).await;
        let key = ManifestKey { job: job(), step: Step(5), rank: Rank(1) };
        let sweep = Request::DeleteOrphanShards { key, min_age_ms: 0 };
        let reply = h.handle(&admin(), sweep, Bytes::new()).await.response;
        assert_eq!(reply, Response::OrphansDeleted { shards: 1, bytes: 6, kept_young: 0 });
        let s = stats(h.handle(&admin(), Request::Stats, Bytes::new()).await);
        assert_eq!((s.shards, s.corrupt_shards.len()), (0, 0));
    }
}
