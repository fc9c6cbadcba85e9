//! One way to call a node. [`Ctx`] is what every pipeline shares (the cluster map, the QUIC
//! transport, the live health view, this client's limits) and [`Ctx::call`] is the one path
//! every request takes: it waits for one of the node's request slots, tracks the request in
//! the health view (any answer is progress; a node-level failure, `is_node_failure`, marks
//! the node down: `health_view`'s rules), feeds the latency estimate that sets the hedging
//! threshold (what counts is `HedgePolicy::observe`'s rule), and on a node-level failure
//! drops the node's connection. The
//! typed wrappers (`put_shard`, `get_shard`, the manifest calls, `delete_checkpoint`, `stats`,
//! `hello`, and the maintenance calls `verify_shard`, `delete_manifest`, `replace_manifest`,
//! `list_parts`, `delete_orphan_shards`, `list_jobs`, and the cluster map's
//! `get_cluster_map` and `put_cluster_map`) turn an unexpected reply into
//! [`TransportError::UnexpectedReply`].
//!
//! A `Ctx` has one cluster map for its whole life: a newer map (see `maps`) makes a new
//! `Ctx`, and an operation keeps the one it started with.
//!
//! The pipelines (`save`, `restore`, `catalog`) and the public API (`client`) sit above this
//! module; nothing here knows about them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rackpoint_proto::limits::{
    CLIENT_DEFAULT_STAGING_BYTES, CLIENT_MAX_INFLIGHT_BYTES, CLIENT_MAX_REQUESTS_PER_NODE,
    CLIENT_MAX_STRIPES_IN_FLIGHT, CLIENT_REQUEST_TIMEOUT_MS, CLIENT_STAGING_BUFFER_BYTES,
    HEARTBEAT_TIMEOUT_MS, MAX_LIST_ENTRIES, MAX_LIST_JOBS,
};
use rackpoint_proto::wire::Message;
use rackpoint_proto::{
    ClusterMap, Digest, ErrorCode, JobName, JobSummary, ManifestEntry, ManifestKey, NodeId,
    NodeStats, PartShards, Rank, Request, Response, ShardKey, Step,
};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::health::Health;
use crate::hedge::{HedgePolicy, RequestKind};
use crate::planner::ShardFailure;
use crate::pool::BufferPool;
use crate::tls::ClientTls;
use crate::transport::{next_request_id, Reply, Transport, TransportError};

/// A callback told of object bytes saved or restored as stripes complete.
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// What every pipeline shares; see the module doc.
pub(crate) struct Ctx {
    pub(crate) map: ClusterMap,
    transport: Transport,
    pub(crate) health: Arc<Health>,
    /// Bounds concurrent encode and decode work to the machine's cores.
    pub(crate) encode_slots: Semaphore,
    /// The typical shard request latency, which sets the hedging threshold.
    hedge: Mutex<HedgePolicy>,
    /// Caps requests in flight to each node (`CLIENT_MAX_REQUESTS_PER_NODE`), so that one
    /// node's replies come back steadily instead of all at once, late.
    node_slots: HashMap<NodeId, Semaphore>,
    /// Told of object bytes saved or restored, stripe by stripe (for progress bars).
    progress: RwLock<Option<Progress>>,
    /// Parity shards of full stripes being saved (one shard each), reused.
    pub(crate) parity_bufs: BufferPool,
    /// Stripes read from files by a save (one stripe each), reused.
    pub(crate) read_bufs: BufferPool,
    /// `save_async`'s staging (one stripe each), bounded by `ClientOptions::staging_bytes`.
    pub(crate) staging: BufferPool,
}

/// The staging pool's (buffer bytes, buffers) for `staging_bytes` of stripes of `stripe`
/// bytes: buffers of `CLIENT_STAGING_BUFFER_BYTES` (or the whole pool, if smaller) in whole
/// stripes, at least one stripe and one buffer.
pub(crate) fn staging_shape(stripe: u64, staging_bytes: u64) -> (usize, usize) {
    let stripe = stripe.max(1);
    let stripes = |bytes: u64| (bytes / stripe).max(1);
    let buf = stripes(CLIENT_STAGING_BUFFER_BYTES.min(staging_bytes)) * stripe;
    let count = (stripes(staging_bytes) * stripe / buf).max(1);
    (usize::try_from(buf).unwrap_or(usize::MAX), usize::try_from(count).unwrap_or(1))
}

/// Settings of one client (and its clones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Staging memory of `save_async` (see `CLIENT_DEFAULT_STAGING_BYTES`): buffers of
    /// `CLIENT_STAGING_BUFFER_BYTES` in whole stripes, as many as fit (at least one).
    pub staging_bytes: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self { staging_bytes: CLIENT_DEFAULT_STAGING_BYTES }
    }
}

impl Ctx {
    /// A context for `map`; connections open lazily. Must be called inside a tokio runtime.
    pub(crate) fn new(
        map: ClusterMap,
        tls: &ClientTls,
        options: &ClientOptions,
    ) -> Result<Self, TransportError> {
        let transport = Transport::new(&map, tls)?;
        let (stripe, shard) = (map.code.stripe_bytes(), map.code.shard_size_bytes as usize);
        let stripe_buf = usize::try_from(stripe).unwrap_or(usize::MAX);
        let (staging_buf, staging_bufs) = staging_shape(stripe, options.staging_bytes);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let node_slots = map
            .nodes
            .iter()
            .map(|n| (n.id, Semaphore::new(CLIENT_MAX_REQUESTS_PER_NODE)))
            .collect();
        Ok(Self {
            map,
            transport,
            health: Arc::new(Health::default()),
            encode_slots: Semaphore::new(workers),
            hedge: Mutex::default(),
            node_slots,
            progress: RwLock::new(None),
            parity_bufs: BufferPool::caching(shard, 0),
            read_bufs: BufferPool::caching(stripe_buf, 0),
            staging: BufferPool::bounded(staging_buf, staging_bufs),
        }
        .with_cache_bounds())
    }

    /// Caching pools keep as many free buffers as the stripes in flight use.
    fn with_cache_bounds(mut self) -> Self {
        let stripes = self.stripes_in_flight();
        let (shard, stripe) = (self.parity_bufs.buf_bytes(), self.read_bufs.buf_bytes());
        self.parity_bufs = BufferPool::caching(shard, stripes * usize::from(self.map.code.m));
        self.read_bufs = BufferPool::caching(stripe, stripes);
        self
    }

    /// Stripes a save or restore keeps in flight: the byte budget over the bytes one stripe
    /// holds in memory (its data plus its k + m shards), at least 1.
    pub(crate) fn stripes_in_flight(&self) -> usize {
        let c = self.map.code;
        let per_stripe = (2 * u64::from(c.k) + u64::from(c.m)) * u64::from(c.shard_size_bytes);
        ((CLIENT_MAX_INFLIGHT_BYTES / per_stripe) as usize).clamp(1, CLIENT_MAX_STRIPES_IN_FLIGHT)
    }

    /// The UDP receive buffer the kernel gave the client's socket.
    pub(crate) fn udp_recv_buffer_bytes(&self) -> usize {
        self.transport.udp_recv_buffer_bytes()
    }

    /// Hands received shard buffers back to the transport for later replies.
    pub(crate) fn recycle(&self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        self.transport.recycle(bufs);
    }

    /// Closes every connection, telling the nodes (see `Transport::close`).
    pub(crate) async fn close(&self) {
        self.transport.close().await;
    }

    /// The hedging threshold now (see [`crate::hedge`]).
    pub(crate) fn hedge_after(&self) -> Duration {
        self.hedge.lock().unwrap_or_else(|e| e.into_inner()).threshold()
    }

    pub(crate) fn set_progress(&self, progress: Option<Progress>) {
        *self.progress.write().unwrap_or_else(|e| e.into_inner()) = progress;
    }

    pub(crate) fn report_progress(&self, bytes: u64) {
        if let Some(p) = self.progress.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            p(bytes);
        }
    }

    /// The one path of every request to a node (see the module doc). A `Hello` is a probe:
    /// it takes no request slot (a busy node must still be heard) and has the heartbeat's
    /// shorter timeout.
    pub(crate) async fn call(
        &self,
        node: NodeId,
        req: &Request,
        payload: Bytes,
    ) -> Result<Reply, TransportError> {
        let probe = matches!(req, Request::Hello);
        let _slot = match self.node_slots.get(&node).filter(|_| !probe) {
            Some(slots) => Some(slots.acquire().await.map_err(|e| TransportError::Protocol {
                node,
                reason: format!("request slots closed: {e}"),
            })?),
            None => None,
        };
        let timeout_ms = if probe { HEARTBEAT_TIMEOUT_MS } else { CLIENT_REQUEST_TIMEOUT_MS };
        let started = Instant::now();
        let outstanding = self.health.begin(node);
        // The node logs the same id in its request span (wire version 3 on).
        let id = next_request_id();
        let span = tracing::debug_span!("request", %id, %node, kind = req.kind());
        let timeout = Duration::from_millis(timeout_ms);
        let result = self
            .transport
            .call_with_id(node, req, payload, timeout, id)
            .instrument(span.clone())
            .await;
        span.in_scope(|| match &result {
            Ok(_) => {
                tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "request done")
            }
            Err(e) => tracing::debug!(error = %e, "request failed"),
        });
        match &result {
            Err(e) if e.is_node_failure() => {
                outstanding.node_failed();
                // A fresh connection next time (after a restart, say) instead of waiting out
                // the old one's idle timeout.
                self.transport.forget(node);
            }
            _ => {
                outstanding.answered();
                let kind = match req {
                    Request::PutShard { .. } => RequestKind::ShardPut,
                    Request::GetShard { .. } => RequestKind::ShardGet,
                    _ => RequestKind::Other,
                };
                let mut hedge = self.hedge.lock().unwrap_or_else(|e| e.into_inner());
                hedge.observe(kind, started.elapsed());
            }
        }
        result
    }

    /// Stores a shard; returns once the node says it is durable.
    pub(crate) async fn put_shard(
        &self,
        node: NodeId,
        key: ShardKey,
        hash: Digest,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let reply = self.call(node, &Request::PutShard { key, hash }, payload).await?;
        expect(node, "ShardStored", reply, |r| match r.response {
            Response::ShardStored => Ok(()),
            _ => Err(r),
        })
    }

    /// Reads a shard. With `expected`, its bytes must hash to it (else `Corrupt`); without,
    /// the caller checks them (the decoder hashes each shard once).
    pub(crate) async fn get_shard(
        &self,
        node: NodeId,
        key: ShardKey,
        expected: Option<Digest>,
    ) -> Result<Vec<u8>, ShardFailure> {
        let reply = self.call(node, &Request::GetShard { key }, Bytes::new()).await;
        let bytes = reply
            .and_then(|reply| {
                expect(node, "Shard", reply, |r| match r.response {
                    Response::Shard { .. } => Ok(r.payload),
                    _ => Err(r),
                })
            })
            .map_err(|e| shard_failure(&e))?;
        match expected {
            Some(hash) if Digest::of(&bytes) != hash => Err(ShardFailure::Corrupt),
            _ => Ok(bytes),
        }
    }

    /// Stores a part's manifest bytes (`hash` is their blake3, the manifest id).
    pub(crate) async fn put_manifest(
        &self,
        node: NodeId,
        key: ManifestKey,
        world_size: u32,
        hash: Digest,
        bytes: Bytes,
    ) -> Result<(), TransportError> {
        let req = Request::PutManifest { key, world_size, hash };
        let reply = self.call(node, &req, bytes).await?;
        expect(node, "ManifestStored", reply, |r| match r.response {
            Response::ManifestStored => Ok(()),
            _ => Err(r),
        })
    }

    /// Reads a part's manifest bytes (unchecked: the caller compares them with the id).
    pub(crate) async fn get_manifest(
        &self,
        node: NodeId,
        key: ManifestKey,
    ) -> Result<Vec<u8>, TransportError> {
        let reply = self.call(node, &Request::GetManifest { key }, Bytes::new()).await?;
        expect(node, "Manifest", reply, |r| match r.response {
            Response::Manifest { .. } => Ok(r.payload),
            _ => Err(r),
        })
    }

    /// One page of a job's manifests after `after`, and whether more follow.
    pub(crate) async fn list_manifests(
        &self,
        node: NodeId,
        job: &JobName,
        after: Option<(Step, Rank)>,
    ) -> Result<(Vec<ManifestEntry>, bool, Vec<Step>), TransportError> {
        let req = Request::ListManifests { job: job.clone(), after, limit: MAX_LIST_ENTRIES };
        let reply = self.call(node, &req, Bytes::new()).await?;
        expect(node, "Manifests", reply, |r| match r.response {
            Response::Manifests { entries, more, deleting } => Ok((entries, more, deleting)),
            response => Err(Reply { response, payload: r.payload }),
        })
    }

    /// One page of the jobs a node holds that this identity may see, after `after`, and
    /// whether more follow.
    pub(crate) async fn list_jobs(
        &self,
        node: NodeId,
        after: Option<JobName>,
    ) -> Result<(Vec<JobSummary>, bool), TransportError> {
        let req = Request::ListJobs { after, limit: MAX_LIST_JOBS };
        let reply = self.call(node, &req, Bytes::new()).await?;
        expect(node, "Jobs", reply, |r| match r.response {
            Response::Jobs { jobs, more } => Ok((jobs, more)),
            response => Err(Reply { response, payload: r.payload }),
        })
    }

    /// Stores (`mark`) or clears the deletion mark of `(job, step)` on `node`; whether the
    /// node held it before.
    pub(crate) async fn deletion_mark(
        &self,
        node: NodeId,
        job: &JobName,
        step: Step,
        mark: bool,
    ) -> Result<bool, TransportError> {
        let req = if mark {
            Request::MarkDeleting { job: job.clone(), step }
        } else {
            Request::ClearDeleting { job: job.clone(), step }
        };
        let reply = match self.call(node, &req, Bytes::new()).await {
            // A node of a wire version without marks (an older release) holds none to clear.
            Err(TransportError::PeerTooOld { .. }) if !mark => return Ok(false),
            reply => reply?,
        };
        expect(node, "DeletionMark", reply, |r| match r.response {
            Response::DeletionMark { existed } => Ok(existed),
            _ => Err(r),
        })
    }

    /// Deletes a checkpoint from one node; returns the shards and manifests it removed.
    pub(crate) async fn delete_checkpoint(
        &self,
        node: NodeId,
        job: &JobName,
        step: Step,
    ) -> Result<(u64, u64), TransportError> {
        let req = Request::DeleteCheckpoint { job: job.clone(), step };
        let reply = self.call(node, &req, Bytes::new()).await?;
        expect(node, "CheckpointDeleted", reply, |r| match r.response {
            Response::CheckpointDeleted { shards, manifests } => Ok((shards, manifests)),
            _ => Err(r),
        })
    }

    /// A node's counters.
    pub(crate) async fn stats(&self, node: NodeId) -> Result<NodeStats, TransportError> {
        let reply = self.call(node, &Request::Stats, Bytes::new()).await?;
        expect(node, "Stats", reply, |r| match r.response {
            Response::Stats(s) => Ok(*s),
            response => Err(Reply { response, payload: r.payload }),
        })
    }

    /// Has a node re-hash a shard where it lies; its digest and length (no bytes travel).
    pub(crate) async fn verify_shard(
        &self,
        node: NodeId,
        key: ShardKey,
    ) -> Result<(Digest, u32), ShardFailure> {
        let reply = self.call(node, &Request::VerifyShard { key }, Bytes::new()).await;
        reply
            .and_then(|reply| {
                expect(node, "ShardVerified", reply, |r| match r.response {
                    Response::ShardVerified { hash, len } => Ok((hash, len)),
                    _ => Err(r),
                })
            })
            .map_err(|e| shard_failure(&e))
    }

    /// Deletes a part's manifest from one node (only manifest `hash`, when given); whether
    /// there was one.
    pub(crate) async fn delete_manifest(
        &self,
        node: NodeId,
        key: ManifestKey,
        hash: Option<Digest>,
    ) -> Result<bool, TransportError> {
        let reply = self.call(node, &Request::DeleteManifest { key, hash }, Bytes::new()).await?;
        expect(node, "ManifestDeleted", reply, |r| match r.response {
            Response::ManifestDeleted { existed } => Ok(existed),
            _ => Err(r),
        })
    }

    /// Deletes one shard from one node, only the version whose blake3 is `hash`; whether
    /// there was one.
    pub(crate) async fn delete_shard(
        &self,
        node: NodeId,
        key: ShardKey,
        hash: Digest,
    ) -> Result<bool, TransportError> {
        let reply = self.call(node, &Request::DeleteShard { key, hash }, Bytes::new()).await?;
        expect(node, "ShardDeleted", reply, |r| match r.response {
            Response::ShardDeleted { existed } => Ok(existed),
            _ => Err(r),
        })
    }

    /// Stores a repair's rewrite of a part's manifest at `revision`, naming the part's
    /// revision-0 id `base`.
    pub(crate) async fn replace_manifest(
        &self,
        node: NodeId,
        key: ManifestKey,
        world_size: u32,
        hash: Digest,
        (revision, base): (u32, Digest),
        bytes: Bytes,
    ) -> Result<(), TransportError> {
        let req = Request::ReplaceManifest { key, world_size, hash, revision, base };
        let reply = self.call(node, &req, bytes).await?;
        expect(node, "ManifestStored", reply, |r| match r.response {
            Response::ManifestStored => Ok(()),
            _ => Err(r),
        })
    }

    /// One page of the part summaries (shards, bytes, newest write age) of a job on one
    /// node, and whether more follow.
    pub(crate) async fn list_parts(
        &self,
        node: NodeId,
        job: &JobName,
        after: Option<(Step, Rank)>,
    ) -> Result<(Vec<PartShards>, bool), TransportError> {
        let req = Request::ListParts { job: job.clone(), after, limit: MAX_LIST_ENTRIES };
        let reply = self.call(node, &req, Bytes::new()).await?;
        expect(node, "Parts", reply, |r| match r.response {
            Response::Parts { entries, more } => Ok((entries, more)),
            response => Err(Reply { response, payload: r.payload }),
        })
    }

    /// Deletes a manifest-less part's shards older than `min_age_ms` from one node;
    /// (shards, bytes) removed and shards kept as too young.
    pub(crate) async fn delete_orphan_shards(
        &self,
        node: NodeId,
        key: ManifestKey,
        min_age_ms: u64,
    ) -> Result<(u64, u64, u64), TransportError> {
        let req = Request::DeleteOrphanShards { key, min_age_ms };
        let reply = self.call(node, &req, Bytes::new()).await?;
        expect(node, "OrphansDeleted", reply, |r| match r.response {
            Response::OrphansDeleted { shards, bytes, kept_young } => {
                Ok((shards, bytes, kept_young))
            }
            _ => Err(r),
        })
    }

    /// Asks a node who it is (the heartbeat's probe); the epoch of the cluster map it holds
    /// (0: none, or a node of a wire version before maps).
    pub(crate) async fn hello(&self, node: NodeId) -> Result<u64, TransportError> {
        let reply = self.call(node, &Request::Hello, Bytes::new()).await?;
        expect(node, "Hello", reply, |r| match r.response {
            Response::Hello { map_epoch, .. } => Ok(map_epoch),
            _ => Err(r),
        })
    }

    /// The signed cluster map a node holds, unverified (the caller checks the signature).
    pub(crate) async fn get_cluster_map(&self, node: NodeId) -> Result<Vec<u8>, TransportError> {
        let reply = self.call(node, &Request::GetClusterMap, Bytes::new()).await?;
        expect(node, "ClusterMap", reply, |r| match r.response {
            Response::ClusterMap { .. } => Ok(r.payload),
            _ => Err(r),
        })
    }

    /// Pushes a signed cluster map of `epoch` to a node; whether it held that map already.
    pub(crate) async fn put_cluster_map(
        &self,
        node: NodeId,
        epoch: u64,
        signed: Bytes,
    ) -> Result<bool, TransportError> {
        let reply = self.call(node, &Request::PutClusterMap { epoch }, signed).await?;
        expect(node, "ClusterMapStored", reply, |r| match r.response {
            Response::ClusterMapStored { existed } => Ok(existed),
            _ => Err(r),
        })
    }

    /// The progress callback set now, to hand on to the context of a newer map.
    pub(crate) fn progress(&self) -> Option<Progress> {
        self.progress.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Takes what `pick` wants from a reply, or names the reply that came instead.
fn expect<T>(
    node: NodeId,
    expected: &'static str,
    reply: Reply,
    pick: impl FnOnce(Reply) -> Result<T, Reply>,
) -> Result<T, TransportError> {
    pick(reply).map_err(|r| TransportError::UnexpectedReply {
        node,
        expected,
        got: r.response.kind(),
    })
}

/// Why a shard read failed, as the planner and `verify` see it.
fn shard_failure(e: &TransportError) -> ShardFailure {
    match e {
        TransportError::Remote { code: ErrorCode::NotFound, .. } => ShardFailure::Missing,
        TransportError::Remote { code: ErrorCode::Corrupt, .. } => ShardFailure::Corrupt,
        e if e.is_node_failure() => ShardFailure::NodeDown,
        e => ShardFailure::Other(e.to_string()),
    }
}
