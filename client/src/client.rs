//! The client API: [`Client`] (async, on tokio) and [`BlockingClient`] (for training loops
//! that are not async). Every clone shares one `maps::Maps`: the `ctx::Ctx` of the newest
//! cluster map (the QUIC transport, the live health view, and the limits of this client);
//! each operation takes the newest one when it starts and keeps it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rackpoint_proto::limits::CLIENT_MAX_ASYNC_SAVES;
use rackpoint_proto::{ClusterMap, JobName, NodeId, NodeInfo, Rank, Step};
use tokio::sync::Semaphore;

use crate::catalog::{self, CheckpointList, DeleteReport, ResumePoint, VerifyReport};
use crate::cluster_dir::{self, IdentityFiles};
use crate::ctx::Ctx;
pub use crate::ctx::{ClientOptions, Progress};
use crate::error::{ClientError, Result};
use crate::gc::{self, GcOptions, GcReport};
use crate::heal::{HealReport, Heals};
use crate::manifest::Manifest;
use crate::maps::{self, Maps};
use crate::repair::{self, RepairOptions, RepairReport, RepairScope};
use crate::restore::{self, RestoreReport, RestoredObject, Sink, Which};
use crate::save::{self, Lane, PriorityGate, SaveReport, SaveRequest};
use crate::tls::ClientTls;

/// A node as `status` shows it.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The node as the map lists it.
    pub node: NodeInfo,
    /// Its counters, or why it did not answer.
    pub stats: std::result::Result<rackpoint_proto::NodeStats, String>,
}

/// The async client. Cheap to clone; every clone shares connections and health.
#[derive(Clone)]
pub struct Client {
    maps: Arc<Maps>,
    async_saves: Arc<Semaphore>,
    /// Complete checkpoints rank 0's saves keep (0: no retention); see `set_keep_last`.
    keep_last: Arc<AtomicUsize>,
    heals: Arc<Heals>,
    /// Priority saves running; ordinary saves yield to them.
    priority: Arc<PriorityGate>,
    _heartbeat: Arc<HeartbeatGuard>,
}

struct HeartbeatGuard(tokio::task::JoinHandle<()>);

impl Drop for HeartbeatGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Client {
    /// Connects with a `cluster.toml` (its TLS paths are relative to its folder). Connections
    /// open lazily, on first use of each node. Must be called inside a tokio runtime.
    pub fn connect(cluster_file: &Path) -> Result<Self> {
        Self::connect_with_options(cluster_file, ClientOptions::default())
    }

    /// [`Client::connect`] with options other than the defaults.
    pub fn connect_with_options(cluster_file: &Path, options: ClientOptions) -> Result<Self> {
        Self::connect_as(cluster_file, None, options)
    }

    /// [`Client::connect_with_options`], presenting `identity` (a certificate and key issued
    /// by `rackpoint cluster cert`) instead of the certificate the cluster file names.
    pub fn connect_as(
        cluster_file: &Path,
        identity: Option<&IdentityFiles>,
        options: ClientOptions,
    ) -> Result<Self> {
        let loaded = cluster_dir::load_as(cluster_file, identity)?;
        Self::with_map_options(loaded.map, &loaded.tls, options)
    }

    /// Connects with a cluster map and TLS material already in hand.
    pub fn with_map(map: ClusterMap, tls: &ClientTls) -> Result<Self> {
        Self::with_map_options(map, tls, ClientOptions::default())
    }

    /// [`Client::with_map`] with options other than the defaults.
    pub fn with_map_options(
        map: ClusterMap,
        tls: &ClientTls,
        options: ClientOptions,
    ) -> Result<Self> {
        let maps = Arc::new(Maps::new(Ctx::new(map, tls, &options)?, tls, &options));
        let heartbeat = tokio::spawn(maps::heartbeat_loop(Arc::downgrade(&maps)));
        Ok(Self {
            maps,
            async_saves: Arc::new(Semaphore::new(CLIENT_MAX_ASYNC_SAVES)),
            keep_last: Arc::default(),
            heals: Arc::default(),
            priority: Arc::default(),
            _heartbeat: Arc::new(HeartbeatGuard(heartbeat)),
        })
    }

    /// The cluster map in use now: the one the client was given, or a newer one learned
    /// from the nodes (its TLS paths are still the client's own).
    pub fn map(&self) -> ClusterMap {
        self.maps.current().map.clone()
    }

    /// Learns the newest cluster map the nodes hold (once per client; every operation does
    /// this first) and returns it.
    pub async fn newest_map(&self) -> ClusterMap {
        self.ctx().await.map.clone()
    }

    /// The context of the newest map, once the first `Hello`s are heard: what an operation
    /// runs with from start to end.
    async fn ctx(&self) -> Arc<Ctx> {
        self.maps.learned().await
    }

    /// Calls `progress` with the object bytes of every stripe saved or restored from now on
    /// (by this client and its clones); `None` stops it.
    pub fn set_progress(&self, progress: Option<Progress>) {
        self.maps.current().set_progress(progress);
    }

    /// Nodes this client currently believes down.
    pub fn down_nodes(&self) -> Vec<NodeId> {
        self.maps.current().health.down_nodes()
    }

    /// Saves one rank's part; returns once its manifest is committed.
    pub async fn save(&self, req: SaveRequest) -> Result<SaveReport> {
        let (job, rank) = (req.job.clone(), req.rank);
        let ctx = self.ctx().await;
        let report = save::save(&ctx, req, Lane::ordinary(&self.priority)).await?;
        gc::after_save(&ctx, &job, rank, self.keep_last.load(Ordering::Relaxed)).await;
        Ok(report)
    }

    /// A priority save, for a preempted node's SIGTERM window: commits the part before
    /// `deadline` or fails with [`ClientError::DeadlineExceeded`] having committed nothing
    /// (the previous checkpoint stays the latest). It goes ahead of this client's other work:
    /// ordinary saves and `save_async` uploads start no stripe and abandon their puts in
    /// flight until it is done (then carry on), and no heal on read starts meanwhile. It does
    /// not wait out a node that answers nothing: such a node's shards move to others (a
    /// degraded placement, reported in [`SaveReport::moved_shards`] and `doubled_stripes`),
    /// and it gives up early when its rate so far says it cannot make the deadline (see
    /// [`crate::deadline`]). The part is an ordinary one: save it at the current step, and
    /// `resume`/`latest` pick it. Retention (`set_keep_last`) is left to the next save.
    pub async fn priority_save(&self, req: SaveRequest, deadline: Instant) -> Result<SaveReport> {
        save::priority(&self.ctx().await, &self.priority, req, deadline).await
    }

    /// After each committed save of rank 0 (by this client and its clones), keep only the
    /// newest `keep` complete checkpoints of its job (`None`: keep all). A failed retention
    /// is logged; the save stands.
    pub fn set_keep_last(&self, keep: Option<usize>) {
        self.keep_last.store(keep.unwrap_or(0), Ordering::Relaxed);
    }

    /// Brings the checkpoints in `scope` back to full redundancy (see [`crate::repair`]).
    pub async fn repair(
        &self,
        job: &JobName,
        scope: RepairScope,
        options: RepairOptions,
    ) -> Result<RepairReport> {
        repair::repair(&self.ctx().await, job, scope, options).await
    }

    /// Moves shards onto the placement the current map gives (see [`crate::rebalance`]).
    pub async fn rebalance(
        &self,
        scope: crate::rebalance::RebalanceScope,
        options: crate::rebalance::RebalanceOptions,
    ) -> Result<crate::rebalance::RebalanceReport> {
        crate::rebalance::rebalance(&self.ctx().await, scope, options).await
    }

    /// Heal on read (see [`crate::heal`]): from now on a restore by this client or its clones
    /// that finds shards missing or corrupt starts a background repair of those stripes
    /// with `options` (`None`: off, the default). The restore itself never waits for it.
    pub fn set_heal_on_read(&self, options: Option<RepairOptions>) {
        self.heals.set(options);
    }

    /// Waits for the heals on read started so far and returns the reports not collected
    /// yet, oldest first. A process that exits right after a restore calls this first, or
    /// its heals stop with it.
    pub async fn wait_for_heals(&self) -> Vec<HealReport> {
        self.heals.wait().await
    }

    /// Starts a heal of what a restore of `manifest` found damaged (when heal on read is on).
    fn heal(
        &self,
        ctx: &Arc<Ctx>,
        manifest: &Manifest,
        damaged: &[(rackpoint_proto::ObjectName, rackpoint_proto::StripeIndex)],
    ) {
        if self.priority.is_held() && !damaged.is_empty() {
            tracing::info!(job = %manifest.job, step = %manifest.step, stripes = damaged.len(),
                "heal on read not started: a priority save is running; repair will find the damage");
            return;
        }
        self.heals.request(ctx, (&manifest.job, manifest.step, manifest.rank), damaged);
    }

    /// Retention and orphan collection for `job` (see [`crate::gc`]).
    pub async fn gc(&self, job: &JobName, options: GcOptions) -> Result<GcReport> {
        gc::gc(&*self.ctx().await, job, options).await
    }

    /// Copies `objects` into staging memory and returns; the upload goes on in the
    /// background and the caller may reuse its buffers at once. The staging memory is a
    /// pool of stripe-sized buffers reused from save to save ([`ClientOptions::staging_bytes`],
    /// default `CLIENT_DEFAULT_STAGING_BYTES`; [`Client::prefault_staging`] warms it up front).
    /// The call waits while `CLIENT_MAX_ASYNC_SAVES` saves are already in flight, and, when
    /// the objects do not fit the staging left, while earlier stripes are being stored:
    /// then the upload starts at once and the copy goes on as buffers come back (memory never
    /// grows past the pool). `req.objects` are saved first, then `objects`.
    pub async fn save_async(
        &self,
        req: SaveRequest,
        objects: &[(rackpoint_proto::ObjectName, &[u8])],
    ) -> Result<SaveHandle> {
        let permit = self
            .async_saves
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| ClientError::Task(e.to_string()))?;
        let mut staged = Vec::with_capacity(objects.len());
        let mut senders = Vec::with_capacity(objects.len());
        for (name, bytes) in objects {
            let (tx, stripes) = tokio::sync::mpsc::unbounded_channel();
            staged.push(save::StagedObject {
                name: name.clone(),
                len: bytes.len() as u64,
                stripes,
            });
            senders.push(tx);
        }
        // The upload waits until the copy is done, or cannot go on without it (staging
        // exhausted): it would only slow the copy down by sharing the cores with it.
        let (go, started) = tokio::sync::oneshot::channel::<()>();
        let ctx = self.ctx().await;
        let (task_ctx, keep_last) = (ctx.clone(), self.keep_last.clone());
        let lane = Lane::ordinary(&self.priority);
        let task = tokio::spawn(async move {
            let _permit = permit;
            let _ = started.await; // a dropped sender also means go
            let (job, rank) = (req.job.clone(), req.rank);
            let report = save::save_staged(&task_ctx, req, staged, lane).await?;
            gc::after_save(&task_ctx, &job, rank, keep_last.load(Ordering::Relaxed)).await;
            Ok(report)
        });
        let mut go = Some(go);
        let stripe = ctx.map.code.stripe_bytes();
        let stripe = usize::try_from(stripe).map_err(|e| ClientError::Task(e.to_string()))?;
        let slices: Vec<&[u8]> = objects.iter().map(|(_, b)| *b).collect();
        save::stage(&ctx.staging, &slices, &senders, stripe, &mut go).await?;
        drop((go, senders));
        Ok(SaveHandle { task })
    }

    /// Allocates `save_async`'s whole staging pool now, every page touched, so that even the
    /// first `save_async` copies into warm memory. Returns the bytes allocated by this call.
    pub async fn prefault_staging(&self) -> Result<u64> {
        let pool = self.ctx().await.staging.clone();
        let buf_bytes = pool.buf_bytes() as u64;
        let made = tokio::task::spawn_blocking(move || pool.prefault()).await?;
        Ok(made as u64 * buf_bytes)
    }

    /// The UDP receive buffer the kernel gave this client's socket, in bytes as `SO_RCVBUF`
    /// reads back (see [`crate::tls::client_endpoint_sized`]).
    pub fn udp_recv_buffer_bytes(&self) -> usize {
        self.maps.current().udp_recv_buffer_bytes()
    }

    /// `save_async`'s staging pool: (bytes per buffer, most buffers, buffers allocated).
    pub fn staging_pool(&self) -> (usize, usize, usize) {
        let ctx = self.maps.current();
        let pool = &ctx.staging;
        (pool.buf_bytes(), pool.max(), pool.allocated())
    }

    /// Restores one part into memory.
    pub async fn restore(
        &self,
        job: &JobName,
        which: Which,
        rank: Rank,
    ) -> Result<(RestoreReport, Vec<RestoredObject>)> {
        let ctx = self.ctx().await;
        let manifest = catalog::find_manifest(&ctx, job, which, rank).await?;
        let mut sink = Sink::Memory(Vec::new());
        let report = restore::restore_part(&ctx, manifest, &mut sink).await?;
        self.heal(&ctx, &report.manifest, &report.damaged_stripes);
        let Sink::Memory(objects) = sink else { unreachable!("the sink was made as Memory") };
        Ok((report, objects))
    }

    /// The manifest of one part (what [`Client::restore_object`] reads from).
    pub async fn manifest(&self, job: &JobName, which: Which, rank: Rank) -> Result<Manifest> {
        catalog::find_manifest(&*self.ctx().await, job, which, rank).await
    }

    /// Restores one named object of a part into `into` (exactly the object's length), in
    /// place, checking its blake3 end to end. Returns the stripes that needed decoding.
    pub async fn restore_object(
        &self,
        manifest: &Arc<Manifest>,
        object: &rackpoint_proto::ObjectName,
        into: &mut [u8],
    ) -> Result<u64> {
        let ctx = self.ctx().await;
        let restored = restore::restore_object_into(&ctx, manifest, object, into).await?;
        let damaged: Vec<_> = restored.damaged.into_iter().map(|s| (object.clone(), s)).collect();
        self.heal(&ctx, manifest, &damaged);
        Ok(restored.decoded)
    }

    /// Restores one part into files `dir/<object name>` (`dir` must exist). Every file
    /// appears only once every object of the part is restored and checked; on failure none
    /// does. An existing file is an error ([`ClientError::FileExists`], before anything is
    /// fetched) unless `overwrite`.
    pub async fn restore_to_dir(
        &self,
        job: &JobName,
        which: Which,
        rank: Rank,
        dir: &Path,
        overwrite: bool,
    ) -> Result<RestoreReport> {
        restore::check_out_dir(dir)?;
        let ctx = self.ctx().await;
        let manifest = catalog::find_manifest(&ctx, job, which, rank).await?;
        let report = restore::restore_part(&ctx, manifest, &mut Sink::dir(dir, overwrite)).await?;
        self.heal(&ctx, &report.manifest, &report.damaged_stripes);
        Ok(report)
    }

    /// The newest complete checkpoint that can be read with the nodes up, with every part's
    /// manifest and the newer checkpoints passed over (`ResumePoint::passed_over`); `None`
    /// when the job has no checkpoint or none complete (start afresh). An error when nodes
    /// that may hold one do not answer ([`ClientError::Unavailable`]): starting afresh then
    /// would throw away a checkpoint that is only out of reach.
    pub async fn resume(&self, job: &JobName) -> Result<Option<ResumePoint>> {
        catalog::resume(&*self.ctx().await, job).await
    }

    /// Like [`Client::resume`], but "none" is an error: `NoSuchJob` (no checkpoint at all),
    /// `NoCheckpoint` (none complete) or `Unavailable` (nodes that may hold one do not
    /// answer), each naming every checkpoint passed over and why (incomplete, unreadable
    /// manifest, or a stripe with more than m shards on nodes that do not answer).
    pub async fn latest(&self, job: &JobName) -> Result<ResumePoint> {
        catalog::latest(&*self.ctx().await, job).await
    }

    /// Every checkpoint of a job, oldest first (steps being deleted among them, marked
    /// `deleting`), and the nodes that did not answer (`CheckpointList::unseen_nodes`: the
    /// listing may miss checkpoints whose manifests are all on them).
    pub async fn list(&self, job: &JobName) -> Result<CheckpointList> {
        catalog::list(&*self.ctx().await, job).await
    }

    /// The jobs of the cluster this identity may see (an admin's: all), each with its
    /// checkpoints, stored bytes and newest step, and the nodes that did not answer (see
    /// [`crate::jobs`]).
    pub async fn jobs(&self) -> Result<crate::jobs::JobsReport> {
        crate::jobs::jobs(&*self.ctx().await).await
    }

    /// Reads back every shard of a checkpoint and checks the manifest chains.
    pub async fn verify(&self, job: &JobName, step: Step) -> Result<VerifyReport> {
        catalog::verify(&*self.ctx().await, job, step).await
    }

    /// Closes this client's connections (those of every clone), telling each node at once:
    /// call it before the process exits, or each node keeps the connection, which counts
    /// against `NODE_MAX_CONNECTIONS_PER_IDENTITY`, until its idle timeout.
    pub async fn close(&self) {
        self.maps.current().close().await;
    }

    /// Deletes a checkpoint so that the delete cannot half-happen: its deletion mark goes to
    /// every node that answers first (`DeleteNotMarked`, nothing deleted, unless m + 1 store
    /// it), then its shards and manifests on every node, then the marks once every node
    /// confirmed. `DeleteReport::pending_nodes` names the nodes still to confirm: the step
    /// stays marked (never listed complete nor restored) until a later `delete`, `gc` or
    /// `repair` finishes it.
    pub async fn delete(&self, job: &JobName, step: Step) -> Result<DeleteReport> {
        catalog::delete(&*self.ctx().await, job, step, catalog::DeleteBy::Rm).await
    }

    /// Pushes a signed cluster map of `epoch` (made by the admin tool, see
    /// `cluster_dir::add_node`) to every node of this client's map, all at once; each
    /// node's answer: whether it held that map already, or why it did not take it
    /// (`StaleMap`: it holds a newer one; `PermissionDenied`: this identity is no admin).
    pub async fn push_cluster_map(
        &self,
        epoch: u64,
        signed: &[u8],
    ) -> Vec<(NodeId, std::result::Result<bool, crate::transport::TransportError>)> {
        let ctx = self.maps.current();
        let signed = bytes::Bytes::copy_from_slice(signed);
        let pushes = ctx.map.nodes.iter().map(|n| {
            let (ctx, signed) = (&ctx, signed.clone());
            async move { (n.id, ctx.put_cluster_map(n.id, epoch, signed).await) }
        });
        futures::future::join_all(pushes).await
    }

    /// Every node's counters, or why it did not answer.
    pub async fn status(&self) -> Vec<NodeStatus> {
        let ctx = self.ctx().await;
        let calls = ctx.map.nodes.iter().map(|n| async {
            let stats = ctx.stats(n.id).await.map_err(|e| e.to_string());
            NodeStatus { node: n.clone(), stats }
        });
        futures::future::join_all(calls).await
    }
}

/// A save running in the background.
#[derive(Debug)]
pub struct SaveHandle {
    task: tokio::task::JoinHandle<Result<SaveReport>>,
}

impl SaveHandle {
    /// Waits for the upload and commit.
    pub async fn wait(self) -> Result<SaveReport> {
        self.task.await?
    }

    /// Whether the save has finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// The blocking client: the same calls, for code that is not async. Owns its runtime.
pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl BlockingClient {
    /// Connects with a `cluster.toml`.
    pub fn connect(cluster_file: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("rackpoint-client")
            .build()
            .map_err(ClientError::Runtime)?;
        let client = rt.block_on(async { Client::connect(cluster_file) })?;
        Ok(Self { rt, client })
    }

    /// The async client inside, for mixing styles.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// See [`Client::save`].
    pub fn save(&self, req: SaveRequest) -> Result<SaveReport> {
        self.rt.block_on(self.client.save(req))
    }

    /// See [`Client::priority_save`].
    pub fn priority_save(&self, req: SaveRequest, deadline: Instant) -> Result<SaveReport> {
        self.rt.block_on(self.client.priority_save(req, deadline))
    }

    /// See [`Client::save_async`]; the returned handle is waited on with [`BlockingClient::wait`].
    pub fn save_async(
        &self,
        req: SaveRequest,
        objects: &[(rackpoint_proto::ObjectName, &[u8])],
    ) -> Result<SaveHandle> {
        self.rt.block_on(self.client.save_async(req, objects))
    }

    /// Waits for a background save.
    pub fn wait(&self, handle: SaveHandle) -> Result<SaveReport> {
        self.rt.block_on(handle.wait())
    }

    /// See [`Client::restore`].
    pub fn restore(
        &self,
        job: &JobName,
        which: Which,
        rank: Rank,
    ) -> Result<(RestoreReport, Vec<RestoredObject>)> {
        self.rt.block_on(self.client.restore(job, which, rank))
    }

    /// See [`Client::resume`].
    pub fn resume(&self, job: &JobName) -> Result<Option<ResumePoint>> {
        self.rt.block_on(self.client.resume(job))
    }

    /// See [`Client::latest`].
    pub fn latest(&self, job: &JobName) -> Result<ResumePoint> {
        self.rt.block_on(self.client.latest(job))
    }
}
