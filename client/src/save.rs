//! The save pipeline: read each object stripe by stripe, encode parity on the worker pool,
//! send the k + m shards to their placed nodes (moving a shard to the next node in placement
//! order when its node fails: a degraded write), and commit the manifest last, on m + 1 nodes
//! in distinct racks. Stripes overlap: up to `Ctx::stripes_in_flight` are being encoded or sent
//! at once, which bounds memory whatever the checkpoint's size.
//!
//! Memory per byte: a full stripe's data shards are sent as slices of the object's bytes
//! (no copy, no padding); only its `m` parity shards are new, in reused buffers
//! (`Ctx::parity_bufs`), as are file reads (`Ctx::read_bufs`, read with `pread` straight into
//! them). Each byte is hashed twice, once into the object's blake3 and once into its
//! shard's: the two cannot share a pass, since blake3 mixes a chunk's position into its
//! compression (a shard hashed alone starts at position 0, the same bytes inside the object
//! do not). Only a short last stripe is padded, through `Codec::encode_stripe`.
//!
//! Priority saves ([`priority`], a preempted node's emergency checkpoint): every save of a
//! client runs in a [`Lane`]. An ordinary save yields while a priority save of the same
//! client runs: it starts no stripe, and abandons its puts in flight (sent again
//! afterwards), so the priority save has the node slots, the nodes' budgets and the
//! bandwidth. A priority save is driven by the core's [`SaveDeadline`]: it stops sending
//! data (and gives up early when its rate says it cannot make it), takes a node that answers
//! nothing for its patience for stalled and moves that node's shards (a degraded placement,
//! reported as any other), bounds each manifest commit round by the time left, and rolls
//! back every copy that was or may have been stored when the deadline cuts the commit off:
//! it commits before its deadline or fails with [`ClientError::DeadlineExceeded`] having
//! committed nothing.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{AbortHandle, Aborted};
use futures::stream::{FuturesUnordered, StreamExt};
use rackpoint_proto::failpoint;
use rackpoint_proto::limits::MAX_WRITER_BYTES;
use rackpoint_proto::{
    Digest, ErrorCode, JobName, ManifestKey, NodeId, ObjectName, Rank, ShardIndex, Step, StripeId,
    StripeIndex,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::catalog;
use crate::codec::{Codec, ObjectLayout};
use crate::ctx::Ctx;
use crate::deadline::{SaveDeadline, Verdict};
use crate::error::{ClientError, NodeErrors, Result};
use crate::manifest::{CodeSpec, Manifest, ObjectEntry, StripeEntry};
use crate::manifest_commit::{CommitAction, ManifestCommit};
use crate::pool::{BufferPool, PooledBuf};
use crate::rollback;
use crate::stripe_write::{Action, Put, PutFailure, PutResult, StripeWrite, WriteFailure};
use crate::transport::TransportError;

/// Where an object's bytes come from.
#[derive(Debug, Clone)]
pub enum ObjectSource {
    /// Bytes in memory (cheap to clone; the save keeps a reference, never a copy).
    Memory(Bytes),
    /// A file or a stream, read stripe by stripe to its end: a regular file (which must not
    /// change while it is read), or a pipe, a FIFO, `/dev/stdin` or a process substitution
    /// (`/dev/fd/N`), whose length is the number of bytes read. Anything else (a folder, a
    /// socket, a device other than standard input) is refused with
    /// [`ClientError::UnsupportedSource`].
    File(PathBuf),
    /// The process's standard input, read to its end (a regular file there is held to the
    /// same rule as [`ObjectSource::File`]).
    Stdin,
}

/// One named object of a part.
#[derive(Debug, Clone)]
pub struct ObjectData {
    /// Its name.
    pub name: ObjectName,
    /// Its bytes.
    pub source: ObjectSource,
}

/// What to save: one rank's part of checkpoint `(job, step)`.
#[derive(Debug, Clone)]
pub struct SaveRequest {
    /// The job.
    pub job: JobName,
    /// The step.
    pub step: Step,
    /// This writer's rank.
    pub rank: Rank,
    /// How many ranks write parts of this checkpoint.
    pub world_size: u32,
    /// The objects.
    pub objects: Vec<ObjectData>,
    /// Small user metadata (data-loader offset, ...).
    pub user_meta: BTreeMap<String, String>,
}

/// What a save did.
#[derive(Debug, Clone)]
pub struct SaveReport {
    /// The committed manifest's id (blake3 of its bytes).
    pub manifest_id: Digest,
    /// Object bytes saved.
    pub bytes: u64,
    /// Shards written.
    pub shards: u64,
    /// Shards that went to a node other than their first placement (degraded writes).
    pub moved_shards: u64,
    /// Stripes with more than one shard on a node (a degraded placement: fewer than `k + m`
    /// nodes could take them). Such a stripe survives fewer node failures than `m` until
    /// `repair` spreads it out; see [`crate::redundancy`].
    pub doubled_stripes: u64,
    /// Nodes holding the manifest.
    pub manifest_nodes: Vec<NodeId>,
    /// Wall time.
    pub elapsed: Duration,
    /// Times this save gave way to a priority save of the same client (a stripe held back,
    /// a put abandoned and sent again once the priority save was done); 0 for a priority save.
    pub yielded: u64,
    /// For a priority save: the time that was left to its deadline when it committed.
    pub deadline_left: Option<Duration>,
}

/// The priority saves of one client (and its clones) running now; while there is one,
/// ordinary saves yield (see the module doc).
#[derive(Debug)]
pub(crate) struct PriorityGate(watch::Sender<usize>);

impl Default for PriorityGate {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl PriorityGate {
    /// Marks a priority save running until the guard drops.
    fn hold(self: &Arc<Self>) -> GateHold {
        self.0.send_modify(|n| *n += 1);
        GateHold(self.clone())
    }

    /// Whether a priority save is running.
    pub(crate) fn is_held(&self) -> bool {
        *self.0.borrow() > 0
    }

    /// Returns once no priority save runs.
    async fn cleared(&self) {
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Returns once a priority save runs.
    async fn held(&self) {
        let _ = self.0.subscribe().wait_for(|n| *n > 0).await;
    }
}

/// A running priority save's mark on its client's gate.
struct GateHold(Arc<PriorityGate>);

impl Drop for GateHold {
    fn drop(&mut self) {
        self.0 .0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// How a save shares its client with other saves.
#[derive(Clone)]
pub(crate) enum Lane {
    /// An ordinary save: yields to the client's priority saves, counting how often.
    Yielding(Arc<PriorityGate>, Arc<AtomicU64>),
    /// A priority save, with its deadline.
    Priority(Arc<Mutex<SaveDeadline>>),
}

impl Lane {
    /// The lane of an ordinary save of the client whose gate this is.
    pub(crate) fn ordinary(gate: &Arc<PriorityGate>) -> Self {
        Lane::Yielding(gate.clone(), Arc::default())
    }

    fn deadline(&self) -> Option<std::sync::MutexGuard<'_, SaveDeadline>> {
        match self {
            Lane::Priority(d) => Some(d.lock().unwrap_or_else(|p| p.into_inner())),
            Lane::Yielding(..) => None,
        }
    }

    /// Before a stripe starts: an ordinary save waits out a priority save; a priority save
    /// asks its deadline whether to go on.
    async fn before_stripe(&self, at: &StripeId) -> Result<()> {
        match self {
            Lane::Yielding(gate, yielded) => {
                if gate.is_held() {
                    yielded.fetch_add(1, Ordering::Relaxed);
                    gate.cleared().await;
                }
                Ok(())
            }
            Lane::Priority(_) => self.go_on(part_of(at)),
        }
    }

    /// For a priority save, its deadline's verdict now as a result.
    fn go_on(&self, part: PartId<'_>) -> Result<()> {
        let Some(mut d) = self.deadline() else { return Ok(()) };
        match d.poll(Instant::now()) {
            Verdict::Go => Ok(()),
            Verdict::GiveUp(why) => Err(deadline_exceeded(&d, part, why.to_string())),
        }
    }

    /// A stripe's `bytes` are stored.
    fn stored(&self, bytes: u64) {
        if let Some(mut d) = self.deadline() {
            d.on_stored(bytes);
        }
    }

    /// A priority save's patience now (see `SaveDeadline::patience`); `None` for an ordinary
    /// save, which waits out a request as it always has.
    fn patience(&self, ctx: &Ctx) -> Option<Duration> {
        self.deadline().map(|d| d.patience(Instant::now(), ctx.hedge_after()))
    }

    /// Stores one shard. An ordinary save's put is abandoned when a priority save starts and
    /// sent again once it is done.
    async fn put(
        &self,
        ctx: &Ctx,
        node: NodeId,
        key: rackpoint_proto::ShardKey,
        hash: Digest,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let Lane::Yielding(gate, yielded) = self else {
            return ctx.put_shard(node, key, hash, payload).await;
        };
        loop {
            if gate.is_held() {
                yielded.fetch_add(1, Ordering::Relaxed);
                gate.cleared().await;
            }
            tokio::select! {
                biased;
                r = ctx.put_shard(node, key.clone(), hash, payload.clone()) => return r,
                () = gate.held() => {}
            }
        }
    }

    /// Times this save yielded so far.
    fn yielded(&self) -> u64 {
        match self {
            Lane::Yielding(_, yielded) => yielded.load(Ordering::Relaxed),
            Lane::Priority(_) => 0,
        }
    }

    /// `work`, cut off at a priority save's deadline (`what` names it in the error).
    async fn bounded<T>(
        &self,
        part: PartId<'_>,
        what: &str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let Some(deadline) = self.deadline().map(|d| d.deadline()) else { return work.await };
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(r) => r,
            Err(_) => {
                let d = self.deadline().expect("a priority lane");
                Err(deadline_exceeded(&d, part, format!("{what} did not finish in time")))
            }
        }
    }
}

/// A part: its job, step and rank.
type PartId<'a> = (&'a JobName, Step, Rank);

fn part_of(at: &StripeId) -> PartId<'_> {
    (&at.job, at.step, at.rank)
}

/// The error of a priority save of `part` stopped by its deadline.
fn deadline_exceeded(
    d: &SaveDeadline,
    (job, step, rank): PartId<'_>,
    reason: String,
) -> ClientError {
    ClientError::DeadlineExceeded {
        job: job.clone(),
        step,
        rank,
        budget_ms: d.budget().as_millis() as u64,
        stored: d.stored(),
        reason,
    }
}

/// Object bytes of `objects`, when every length is known before reading (memory, regular
/// files).
fn known_total(objects: &[ObjectData]) -> Option<u64> {
    objects
        .iter()
        .map(|o| match &o.source {
            ObjectSource::Memory(b) => Some(b.len() as u64),
            ObjectSource::File(p) => {
                std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len())
            }
            ObjectSource::Stdin => None,
        })
        .sum()
}

/// A priority save (see the module doc): commits `req` before `deadline` or fails with
/// [`ClientError::DeadlineExceeded`] having committed nothing; the client's ordinary saves
/// yield to it while it runs.
pub(crate) async fn priority(
    ctx: &Arc<Ctx>,
    gate: &Arc<PriorityGate>,
    req: SaveRequest,
    deadline: Instant,
) -> Result<SaveReport> {
    let _hold = gate.hold();
    let machine =
        SaveDeadline::new(Instant::now(), deadline, known_total(&req.objects), ctx.hedge_after());
    save_staged(ctx, req, Vec::new(), Lane::Priority(Arc::new(Mutex::new(machine)))).await
}

/// An object `save_async` copied into staging buffers: its stripes' bytes, in order, one
/// stripe per message, as the copy goes (each a slice of a pooled staging buffer).
pub(crate) struct StagedObject {
    /// Its name.
    pub(crate) name: ObjectName,
    /// Its length.
    pub(crate) len: u64,
    /// Its stripes, in order.
    pub(crate) stripes: mpsc::UnboundedReceiver<Bytes>,
}

/// A staging buffer being filled: the buffer, bytes used, and the stripes in it so far
/// (object index, byte range in the buffer).
type Filling = (PooledBuf, usize, Vec<(usize, std::ops::Range<usize>)>);

/// Copies `objects` into buffers of the staging `pool` and sends each object's stripes
/// (`stripe` bytes, the last one shorter) in order to its channel in `to`. Stripes are packed
/// one after another, so small objects share a buffer, and each object's run of stripes
/// that fits a buffer is one copy. A buffer's stripes are sent once it is full (or the copy
/// is done). When no buffer is free, `go` is fired (the upload must start to free some) and
/// the copy waits: never more than the pool is allocated. Stops early, without error, if a
/// channel is closed (the save ended; its handle says why).
pub(crate) async fn stage(
    pool: &BufferPool,
    objects: &[&[u8]],
    to: &[mpsc::UnboundedSender<Bytes>],
    stripe: usize,
    go: &mut Option<oneshot::Sender<()>>,
) -> Result<()> {
    let stripe = stripe.clamp(1, pool.buf_bytes().max(1));
    let mut filling: Option<Filling> = None;
    for (i, bytes) in objects.iter().enumerate() {
        let mut at = 0;
        while at < bytes.len() {
            let need = stripe.min(bytes.len() - at);
            if filling.as_ref().is_none_or(|(b, used, _)| b.as_ref().len() - used < need) {
                if let Some(full) = filling.take() {
                    if !send_staged(full, to) {
                        return Ok(());
                    }
                }
                filling = Some((take_staging(pool, go).await?, 0, Vec::new()));
            }
            let Some((buf, used, stripes)) = filling.as_mut() else {
                return Err(ClientError::Task("no staging buffer".into()));
            };
            let room = (buf.as_ref().len() - *used) / stripe * stripe;
            let n = room.min(bytes.len() - at).max(need);
            buf.as_mut()[*used..*used + n].copy_from_slice(&bytes[at..at + n]);
            for start in (0..n).step_by(stripe) {
                stripes.push((i, *used + start..*used + (start + stripe).min(n)));
            }
            (*used, at) = (*used + n, at + n);
        }
    }
    if let Some(last) = filling {
        send_staged(last, to);
    }
    Ok(())
}

/// A staging buffer: a free one, or (firing `go` first) the next one to come back.
async fn take_staging(
    pool: &BufferPool,
    go: &mut Option<oneshot::Sender<()>>,
) -> Result<PooledBuf> {
    if let Some(buf) = pool.try_take() {
        return Ok(buf);
    }
    if let Some(go) = go.take() {
        let _ = go.send(()); // a save that already ended needs no signal
    }
    pool.take().await.map_err(|e| ClientError::Task(e.to_string()))
}

/// Sends a filled staging buffer's stripes to their objects' channels; false if one is closed.
fn send_staged((buf, used, stripes): Filling, to: &[mpsc::UnboundedSender<Bytes>]) -> bool {
    let frozen = buf.freeze(used);
    stripes.into_iter().all(|(i, range)| to[i].send(frozen.slice(range)).is_ok())
}

/// Saves one part; returns once its manifest is committed.
pub(crate) async fn save(ctx: &Arc<Ctx>, req: SaveRequest, lane: Lane) -> Result<SaveReport> {
    save_staged(ctx, req, Vec::new(), lane).await
}

/// [`save`] of `req`'s objects followed by `staged` ones.
pub(crate) async fn save_staged(
    ctx: &Arc<Ctx>,
    req: SaveRequest,
    staged: Vec<StagedObject>,
    lane: Lane,
) -> Result<SaveReport> {
    let started = Instant::now();
    // The manifest's own rules, checked before any shard is sent (objects still empty).
    let names = req.objects.iter().map(|o| &o.name).chain(staged.iter().map(|o| &o.name));
    let placeholders = names.map(|name| ObjectEntry::empty(name.clone())).collect();
    part_manifest(ctx, &req, placeholders, None).validate()?;
    let codec = Arc::new(Codec::new(ctx.map.code)?);
    let prev = catalog::previous_manifest_id(ctx, &req.job, req.step, req.rank);
    let part = (&req.job, req.step, req.rank);
    let prev = lane.bounded(part, "finding the previous manifest", prev).await?;
    let mut objects = Vec::with_capacity(req.objects.len() + staged.len());
    let (mut shards, mut moved_shards) = (0u64, 0u64);
    for obj in &req.objects {
        let reader = StripeReader::open(&obj.source).await?;
        let saved = save_object(ctx, &codec, &req, &obj.name, reader, &lane).await?;
        shards += saved.shards;
        moved_shards += saved.moved;
        objects.push(saved.entry);
    }
    for obj in staged {
        let source = ReaderSource::Staged { len: obj.len, stripes: obj.stripes };
        let reader = StripeReader { source, read: 0, done: false };
        let saved = save_object(ctx, &codec, &req, &obj.name, reader, &lane).await?;
        shards += saved.shards;
        moved_shards += saved.moved;
        objects.push(saved.entry);
    }
    let manifest = part_manifest(ctx, &req, objects, prev);
    let bytes = manifest.total_bytes();
    failpoint::hit("save.shards_done");
    let doubled_stripes = crate::redundancy::doubled_stripes(&manifest);
    let (manifest_id, manifest_nodes) = commit_manifest(ctx, &manifest, &lane).await?;
    failpoint::hit("save.committed");
    let deadline_left = lane.deadline().map(|d| d.left(Instant::now()));
    let elapsed = started.elapsed();
    tracing::info!(job = %req.job, step = %req.step, rank = %req.rank, bytes, shards, moved_shards,
        ms = elapsed.as_millis() as u64, manifest = %manifest_id, "part committed");
    if doubled_stripes > 0 {
        tracing::warn!(job = %req.job, step = %req.step, rank = %req.rank, doubled_stripes,
            "degraded placement: stripes with more than one shard on a node; run repair once the nodes are back");
    }
    Ok(SaveReport {
        manifest_id,
        bytes,
        shards,
        moved_shards,
        doubled_stripes,
        manifest_nodes,
        elapsed,
        yielded: lane.yielded(),
        deadline_left,
    })
}

fn part_manifest(
    ctx: &Ctx,
    req: &SaveRequest,
    objects: Vec<ObjectEntry>,
    prev: Option<Digest>,
) -> Manifest {
    Manifest {
        format_version: crate::manifest::MANIFEST_FORMAT_VERSION,
        job: req.job.clone(),
        step: req.step,
        rank: req.rank,
        world_size: req.world_size,
        writer: writer_identity(&std::fs::read_to_string("/etc/hostname").unwrap_or_default()),
        code: CodeSpec::for_params(ctx.map.code),
        objects,
        user_meta: req.user_meta.clone(),
        prev,
    }
}

/// "rackpoint-client/VERSION HOST pid PID", the host name cut so that the whole fits
/// `MAX_WRITER_BYTES` (a long host name must not make the manifest invalid).
fn writer_identity(host: &str) -> String {
    let head = format!("rackpoint-client/{} ", env!("CARGO_PKG_VERSION"));
    let tail = format!(" pid {}", std::process::id());
    let (host, room) = (host.trim(), MAX_WRITER_BYTES.saturating_sub(head.len() + tail.len()));
    let mut cut = host.len().min(room);
    while !host.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{head}{}{tail}", &host[..cut])
}

struct SavedObject {
    entry: ObjectEntry,
    shards: u64,
    moved: u64,
}

struct SavedStripe {
    entry: StripeEntry,
    moved: u64,
    /// Object bytes the stripe carries.
    bytes: u64,
}

async fn save_object(
    ctx: &Arc<Ctx>,
    codec: &Arc<Codec>,
    req: &SaveRequest,
    name: &ObjectName,
    mut reader: StripeReader,
    lane: &Lane,
) -> Result<SavedObject> {
    // A stream's length is known only at its end: stripes are cut as the bytes come
    // (`ObjectLayout`'s geometry: full stripes, a short one last) and the length is what was
    // read. Memory stays bounded by the stripes in flight; the manifest is written last anyway.
    let (stripe_bytes, max_len) =
        (ctx.map.code.stripe_bytes(), ObjectLayout::max_len(ctx.map.code));
    let mut hasher = blake3::Hasher::new();
    let mut running = Running(VecDeque::new());
    let mut stripes = Vec::new();
    let mut moved = 0;
    let mut finish = |done: SavedStripe| {
        moved += done.moved;
        lane.stored(done.bytes);
        ctx.report_progress(done.bytes);
        stripes.push(done.entry);
    };
    let mut count = 0u32;
    while let Some(data) = reader.next(&ctx.read_bufs, stripe_bytes).await? {
        if reader.read > max_len {
            let len = reader.read;
            return Err(crate::codec::CodecError::ObjectTooLarge { len, max_len }.into());
        }
        hasher.update(&data);
        let at = StripeId {
            job: req.job.clone(),
            step: req.step,
            rank: req.rank,
            object: name.clone(),
            stripe: StripeIndex(count),
        };
        count += 1; // at most u32::MAX stripes: the length was checked against max_len
        lane.before_stripe(&at).await?;
        let task = save_stripe(ctx.clone(), codec.clone(), at, data, lane.clone());
        running.0.push_back(tokio::spawn(task));
        if running.0.len() >= ctx.stripes_in_flight() {
            finish(running.0.pop_front().expect("the queue was just filled").await??);
        }
    }
    reader.finish().await?;
    while let Some(task) = running.0.pop_front() {
        finish(task.await??);
    }
    let shards = (stripes.len() * ctx.map.code.total()) as u64;
    let entry = ObjectEntry {
        name: name.clone(),
        len: reader.read,
        hash: Digest(*hasher.finalize().as_bytes()),
        stripes,
    };
    Ok(SavedObject { entry, shards, moved })
}

/// An object's stripes being stored; those still running when the save fails are stopped.
struct Running(VecDeque<JoinHandle<Result<SavedStripe>>>);

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Reads an object's stripes in order, to its end: from memory (no copy), from a file or a
/// stream (sequential reads into reused buffers) or from `save_async`'s staging.
struct StripeReader {
    source: ReaderSource,
    /// Bytes handed out so far: the object's length once `next` has said `None`.
    read: u64,
    /// The end was reached (a short read: a terminal may give more after an end of file).
    done: bool,
}

enum ReaderSource {
    Memory(Bytes),
    File {
        path: PathBuf,
        file: Arc<std::fs::File>,
        /// For a regular file, what it was when opened; `None` for a stream.
        regular: Option<FileState>,
    },
    Staged {
        len: u64,
        stripes: mpsc::UnboundedReceiver<Bytes>,
    },
}

/// A regular file as opened: the read must give exactly `len - offset` bytes, and the file
/// must still have this length and modification time at the end, or the object is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileState {
    len: u64,
    offset: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileState {
    fn of(meta: &std::fs::Metadata, offset: u64) -> Self {
        FileState { len: meta.len(), offset, modified: meta.modified().ok() }
    }

    /// Bytes a read from the offset to the end gives.
    fn due(&self) -> u64 {
        self.len.saturating_sub(self.offset)
    }
}

/// What an object may be read from: a regular file, or a stream read to its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Regular,
    Stream,
}

/// Whether a file of type `ft` can be an object's source (`is_stdin`: it is the process's
/// standard input, a terminal or a socket then being a stream too), or what it is if not.
fn source_kind(ft: &std::fs::FileType, is_stdin: bool) -> Result<SourceKind, &'static str> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        Ok(SourceKind::Regular)
    } else if ft.is_dir() {
        Err("a directory")
    } else if ft.is_fifo() || (is_stdin && (ft.is_char_device() || ft.is_socket())) {
        Ok(SourceKind::Stream)
    } else if ft.is_char_device() {
        Err("a character device")
    } else if ft.is_block_device() {
        Err("a block device")
    } else if ft.is_socket() {
        Err("a socket")
    } else {
        Err("neither a file nor a stream")
    }
}

/// The name standard input goes by in errors.
const STDIN_NAME: &str = "standard input";

/// A handle of the process's standard input (a duplicate of fd 0: reads move its offset).
fn stdin_file() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?))
}

/// Opens `source` (a path, or standard input when `None`) after checking what it is, so that
/// a folder, a socket or a device is refused by name (and a FIFO is opened knowingly: the
/// open waits for its writer). Blocking.
fn open_source(
    path: Option<&std::path::Path>,
) -> Result<(PathBuf, std::fs::File, Option<FileState>)> {
    use std::io::Seek;
    use std::os::unix::fs::MetadataExt;
    let shown = path.map_or_else(|| PathBuf::from(STDIN_NAME), std::path::Path::to_path_buf);
    let io = |error| ClientError::Io { path: shown.clone(), error };
    let refuse = |what| ClientError::UnsupportedSource { path: shown.clone(), what };
    let stdin = stdin_file().and_then(|f| f.metadata()).ok();
    let same_as_stdin = |m: &std::fs::Metadata| {
        stdin.as_ref().is_some_and(|s| s.dev() == m.dev() && s.ino() == m.ino())
    };
    let file = match path {
        None => stdin_file().map_err(io)?,
        Some(p) => {
            // Follows symlinks (`/dev/stdin`, `/dev/fd/63`); looked at before the open.
            let meta = std::fs::metadata(p).map_err(io)?;
            source_kind(&meta.file_type(), same_as_stdin(&meta)).map_err(refuse)?;
            std::fs::File::open(p).map_err(io)?
        }
    };
    // What was opened decides (the path may have changed in between).
    let opened = file.metadata().map_err(io)?;
    let is_stdin = path.is_none() || same_as_stdin(&opened);
    let regular = match source_kind(&opened.file_type(), is_stdin).map_err(refuse)? {
        SourceKind::Regular => {
            let offset = (&file).stream_position().map_err(io)?;
            Some(FileState::of(&opened, offset))
        }
        SourceKind::Stream => None,
    };
    Ok((shown, file, regular))
}

/// Reads into `buf` until it is full or the end: the bytes read (fewer only at the end).
fn read_full(mut file: &std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

impl StripeReader {
    async fn open(source: &ObjectSource) -> Result<Self> {
        let path = match source {
            ObjectSource::Memory(b) => {
                let source = ReaderSource::Memory(b.clone());
                return Ok(Self { source, read: 0, done: false });
            }
            ObjectSource::File(path) => Some(path.clone()),
            ObjectSource::Stdin => None,
        };
        let (path, file, regular) =
            tokio::task::spawn_blocking(move || open_source(path.as_deref())).await??;
        let source = ReaderSource::File { path, file: Arc::new(file), regular };
        Ok(Self { source, read: 0, done: false })
    }

    /// The next stripe's bytes (`stripe` of them, fewer only for the last), or `None` at the
    /// end.
    async fn next(&mut self, bufs: &BufferPool, stripe: u64) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let stripe = usize::try_from(stripe).map_err(|e| ClientError::Task(e.to_string()))?;
        let bytes = match &mut self.source {
            ReaderSource::Memory(b) => {
                let start = usize::try_from(self.read).unwrap_or(usize::MAX).min(b.len());
                b.slice(start..(start + stripe).min(b.len()))
            }
            ReaderSource::File { path, file, regular } => {
                let io = |error| ClientError::Io { path: path.clone(), error };
                let (file, mut buf) = (file.clone(), bufs.take_cached());
                let read = tokio::task::spawn_blocking(move || {
                    let into = buf.as_mut().get_mut(..stripe).ok_or_else(|| {
                        std::io::Error::other("a stripe is larger than a read buffer")
                    })?;
                    read_full(&file, into).map(|n| (buf, n))
                });
                let (buf, n) = read.await?.map_err(io)?;
                if let Some(at_open) = regular {
                    let read = self.read + n as u64;
                    if read > at_open.due() {
                        return Err(changed(
                            path,
                            format!("{} bytes at open, more read", at_open.len),
                        ));
                    }
                }
                buf.freeze(n)
            }
            ReaderSource::Staged { len, stripes } => {
                let due = (*len - self.read).min(stripe as u64) as usize;
                if due == 0 {
                    Bytes::new()
                } else {
                    match stripes.recv().await {
                        Some(b) if b.len() == due => b,
                        Some(b) => {
                            return Err(ClientError::Task(format!(
                                "staged stripe of {} bytes where {due} were due",
                                b.len()
                            )))
                        }
                        None => {
                            return Err(ClientError::Task("the staging copy ended early".into()))
                        }
                    }
                }
            }
        };
        self.read += bytes.len() as u64;
        self.done = bytes.len() < stripe;
        Ok((!bytes.is_empty()).then_some(bytes))
    }

    /// At the end: a regular file must have given exactly the bytes it had when opened, and
    /// still have that length and modification time, or nothing of it may be committed.
    async fn finish(&self) -> Result<()> {
        let ReaderSource::File { path, file, regular: Some(at_open) } = &self.source else {
            return Ok(());
        };
        let (at_open, file) = (*at_open, file.clone());
        let now = tokio::task::spawn_blocking(move || file.metadata()).await?;
        let now = now.map_err(|error| ClientError::Io { path: path.clone(), error })?;
        let now = FileState::of(&now, at_open.offset);
        if self.read != at_open.due() || now.len != at_open.len {
            let detail = format!(
                "{} bytes at open, {} read, {} now",
                at_open.len,
                at_open.offset + self.read,
                now.len
            );
            return Err(changed(path, detail));
        }
        if now.modified != at_open.modified {
            return Err(changed(path, "modified during the read".into()));
        }
        Ok(())
    }
}

fn changed(path: &std::path::Path, detail: String) -> ClientError {
    ClientError::SourceChanged { path: path.to_path_buf(), detail }
}

/// Encodes one stripe on the worker pool and stores its shards: a short driver over the
/// pure [`StripeWrite`] machine, which makes every decision.
async fn save_stripe(
    ctx: Arc<Ctx>,
    codec: Arc<Codec>,
    at: StripeId,
    data: Bytes,
    lane: Lane,
) -> Result<SavedStripe> {
    let bytes = data.len() as u64;
    let (shards, hashes) = encode(&ctx, codec, data).await?;
    failpoint::hit("save.before_put");
    let is_down = |n: NodeId| ctx.health.is_down(n);
    let mut write = StripeWrite::new(&ctx.map, at, ctx.map.code, hashes.clone(), &is_down)?;
    let mut inflight = FuturesUnordered::new();
    // Puts in flight: node, when sent, and the handle that abandons it.
    let mut out: BTreeMap<u8, (NodeId, Instant, AbortHandle)> = BTreeMap::new();
    loop {
        let action = write.poll(&ctx.map, Instant::now(), &is_down);
        if !matches!(action, Action::Done | Action::Failed(_)) {
            lane.go_on(part_of(write.id()))?;
        }
        match action {
            Action::Send(puts) => {
                for put in puts {
                    let i = usize::from(put.index.0);
                    log_move(write.id(), &put);
                    let key = write.id().shard(put.index);
                    let (ctx, lane, hash, payload) = (&ctx, &lane, hashes[i], shards[i].clone());
                    let (send, abort) = futures::future::abortable(async move {
                        lane.put(ctx, put.node, key, hash, payload).await
                    });
                    out.insert(put.index.0, (put.node, Instant::now(), abort));
                    inflight.push(async move { (put.index, send.await) });
                }
            }
            Action::Wait => match next_put(&ctx, &lane, &mut inflight, &out).await {
                Next::Recheck => {}
                Next::Put(i, Err(Aborted)) => {
                    out.remove(&i.0);
                    let why = "node stalled: a priority save does not wait for it";
                    write.on_result(i, PutResult::Refused(why.into()));
                }
                Next::Put(i, Ok(result)) => {
                    out.remove(&i.0);
                    if let Some(refusal) =
                        result.as_ref().err().and_then(|e| refused(&write.id().job, e))
                    {
                        return Err(refusal);
                    }
                    if result.is_ok() {
                        failpoint::hit("save.shard_acked");
                    }
                    write.on_result(i, put_result(result))
                }
                Next::Empty => {
                    return Err(ClientError::Task("stripe write waits on no put".into()))
                }
            },
            Action::Sleep(until) => tokio::time::sleep_until(until.into()).await,
            Action::Done => break,
            Action::Failed(f) => return Err(write_failed(write.id(), f)),
        }
    }
    let entry = write.entry().ok_or_else(|| ClientError::Task("stripe done unstored".into()))?;
    Ok(SavedStripe { entry, moved: write.moved(), bytes })
}

/// What a stripe's wait for its puts ended with.
enum Next {
    /// A put's outcome (`Aborted`: abandoned, its node stalled).
    Put(ShardIndex, std::result::Result<Result<(), TransportError>, Aborted>),
    /// A priority save's recheck: its puts on stalled nodes were abandoned.
    Recheck,
    /// No put is in flight.
    Empty,
}

/// Waits for the next put of a stripe. An ordinary save waits as long as the put takes; a
/// priority save looks again every half patience, and abandons the puts to nodes that
/// answered nothing for its patience (marked down by the health view's stall rule, or down
/// already), so that their shards move.
async fn next_put<F>(
    ctx: &Ctx,
    lane: &Lane,
    inflight: &mut FuturesUnordered<F>,
    out: &BTreeMap<u8, (NodeId, Instant, AbortHandle)>,
) -> Next
where
    F: std::future::Future<
        Output = (ShardIndex, std::result::Result<Result<(), TransportError>, Aborted>),
    >,
{
    let Some(patience) = lane.patience(ctx) else {
        return inflight.next().await.map_or(Next::Empty, |(i, r)| Next::Put(i, r));
    };
    let recheck = crate::hedge::recheck_after(patience);
    match tokio::time::timeout(recheck, inflight.next()).await {
        Ok(Some((i, r))) => Next::Put(i, r),
        Ok(None) => Next::Empty,
        Err(_) => {
            let now = Instant::now();
            let late: Vec<NodeId> = out
                .values()
                .filter(|(_, sent, _)| now.saturating_duration_since(*sent) >= patience)
                .map(|(n, _, _)| *n)
                .collect();
            ctx.health.suspect_stalled(late, now, patience);
            for (node, _, abort) in out.values() {
                if ctx.health.is_down(*node) {
                    abort.abort();
                }
            }
            Next::Recheck
        }
    }
}

/// Encodes parity and hashes every shard on the worker pool (bounded by cores): the `k + m`
/// shards and their blake3s. A full stripe's data shards are slices of `data` and its parity
/// goes into reused buffers; a short last stripe is padded by `Codec::encode_stripe`.
async fn encode(ctx: &Ctx, codec: Arc<Codec>, data: Bytes) -> Result<(Vec<Bytes>, Vec<Digest>)> {
    let _slot = ctx.encode_slots.acquire().await.map_err(|e| ClientError::Task(e.to_string()))?;
    let code = ctx.map.code;
    if data.len() as u64 != code.stripe_bytes() {
        let encoded = tokio::task::spawn_blocking(move || codec.encode_stripe(&data)).await??;
        return Ok((encoded.shards.into_iter().map(Bytes::from).collect(), encoded.hashes));
    }
    let len = code.shard_size_bytes as usize;
    let mut bufs: Vec<PooledBuf> = (0..code.m).map(|_| ctx.parity_bufs.take_cached()).collect();
    let encoded = tokio::task::spawn_blocking(move || {
        let mut shards: Vec<Bytes> =
            (0..usize::from(code.k)).map(|j| data.slice(j * len..(j + 1) * len)).collect();
        let data_shards: Vec<&[u8]> = shards.iter().map(|s| &s[..]).collect();
        let mut parity: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b.as_mut()[..len]).collect();
        codec.encode_parity(&data_shards, &mut parity)?;
        shards.extend(bufs.into_iter().map(|b| b.freeze(len)));
        let hashes = shards.iter().map(|s| Digest::of(s)).collect();
        Ok::<_, crate::codec::CodecError>((shards, hashes))
    });
    Ok(encoded.await??)
}

fn log_move(id: &StripeId, put: &Put) {
    if let Some(from) = put.moved_from {
        tracing::warn!(stripe = %id.stripe, object = %id.object, shard = %put.index, from = %from,
            to = %put.node, "degraded write: shard moved");
    }
}

/// A put's outcome for the machine; which failures move the shard is
/// [`PutFailure::result`]'s rule.
fn put_result(r: Result<(), TransportError>) -> PutResult {
    match r {
        Ok(()) => PutResult::Stored,
        Err(e) => put_failure(&e).result(e.to_string()),
    }
}

/// A refusal for this identity or job (permission, quota), which no other node or retry
/// would change: the save stops with it.
fn refused(job: &JobName, e: &TransportError) -> Option<ClientError> {
    match e {
        TransportError::Remote { node, code: ErrorCode::QuotaExceeded { used, limit }, .. } => {
            Some(ClientError::QuotaExceeded {
                job: job.clone(),
                node: *node,
                used: *used,
                limit: *limit,
            })
        }
        TransportError::Remote { code: ErrorCode::PermissionDenied, .. } => {
            Some(ClientError::from(e.clone()))
        }
        _ => None,
    }
}

/// A failed put's kind, as the stripe-write machine sorts it.
fn put_failure(e: &TransportError) -> PutFailure {
    match e {
        TransportError::Remote { code: ErrorCode::DiskFull, .. } => PutFailure::DiskFull,
        TransportError::Remote { code: ErrorCode::ShuttingDown, .. } => PutFailure::ShuttingDown,
        TransportError::Remote { code: ErrorCode::Conflict, .. } => PutFailure::Conflict,
        e if e.is_node_failure() => PutFailure::NodeDown,
        _ => PutFailure::Other,
    }
}

fn write_failed(id: &StripeId, f: WriteFailure) -> ClientError {
    ClientError::ShardWriteFailed {
        object: id.object.clone(),
        stripe: id.stripe,
        index: f.index,
        attempts: f.attempts,
        last: f.last,
    }
}

/// The nodes to roll a commit back on: those that stored a copy and those whose put was cut
/// off (they may have).
fn with_unknown(stored: &[NodeId], unknown: &[NodeId]) -> Vec<NodeId> {
    let mut back = stored.to_vec();
    back.extend(unknown.iter().filter(|n| !stored.contains(n)));
    back
}

/// Stores the manifest on m + 1 nodes (distinct racks first), as [`ManifestCommit`]
/// decides: each round's puts in parallel. Returns its id and the nodes. For a priority
/// save, a round starts only before the deadline and takes at most the time left; a put not
/// answered by then counts as failed, and if the deadline ends the commit, every copy that
/// was or may have been stored is rolled back.
async fn commit_manifest(
    ctx: &Ctx,
    manifest: &Manifest,
    lane: &Lane,
) -> Result<(Digest, Vec<NodeId>)> {
    let bytes = Bytes::from(manifest.to_checked_bytes()?);
    let id = Digest::of(&bytes);
    let (job, step, rank) = (&manifest.job, manifest.step, manifest.rank);
    let key = ManifestKey { job: job.clone(), step, rank };
    let mut commit = ManifestCommit::new(&ctx.map, job.clone(), step, rank);
    let mut failures: Vec<(NodeId, TransportError)> = Vec::new();
    // Puts cut off by the deadline: the node may have stored the copy.
    let mut unknown: Vec<NodeId> = Vec::new();
    loop {
        let action = commit.poll(&ctx.map, &|n| ctx.health.is_down(n));
        match action {
            CommitAction::Send(targets) => {
                let round = lane.deadline().map(|d| match d.commit_round(Instant::now()) {
                    Some(left) => Ok(left),
                    None => {
                        let reason = "the deadline came during the manifest commit".into();
                        Err(deadline_exceeded(&d, (job, step, rank), reason))
                    }
                });
                let round = match round.transpose() {
                    Ok(round) => round,
                    Err(e) => {
                        failpoint::hit("save.rollback");
                        let back = with_unknown(commit.stored(), &unknown);
                        rollback::roll_back(ctx, &key, id, &back).await;
                        return Err(e);
                    }
                };
                let puts = targets.iter().map(|&n| {
                    let put =
                        ctx.put_manifest(n, key.clone(), manifest.world_size, id, bytes.clone());
                    async move {
                        let r = match round {
                            None => put.await,
                            Some(left) => tokio::time::timeout(left, put).await.unwrap_or(Err(
                                TransportError::Timeout {
                                    node: n,
                                    after_ms: left.as_millis() as u64,
                                },
                            )),
                        };
                        r.inspect(|_| failpoint::hit("save.manifest_stored"))
                    }
                });
                for (n, r) in targets.iter().zip(futures::future::join_all(puts).await) {
                    commit.on_result(*n, r.is_ok());
                    if let Err(e) = r {
                        if round.is_some() && matches!(e, TransportError::Timeout { .. }) {
                            unknown.push(*n);
                        }
                        failures.push((*n, e));
                    }
                }
            }
            CommitAction::Wait => {
                return Err(ClientError::Task("manifest commit: a put went unanswered".into()));
            }
            CommitAction::Committed(nodes) => return Ok((id, nodes)),
            CommitAction::RollBack(stored) => {
                // Atomic commit: the copies that were stored are taken back, so no part is
                // visible.
                failpoint::hit("save.rollback");
                let back = with_unknown(&stored, &unknown);
                rollback::roll_back(ctx, &key, id, &back).await;
                return Err(ClientError::CommitFailed {
                    job: job.clone(),
                    step,
                    rank,
                    need: commit.need(),
                    stored: stored.len(),
                    failures: NodeErrors(failures),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rackpoint_proto::CodeParams;

    use super::*;

    /// Runs `stage` of `objects` (stripes of 4 bytes) into `pool` while a consumer drains the
    /// channels (dropping each stripe, as a stored stripe is); returns what each object got
    /// and whether `go` fired.
    async fn staged(pool: &BufferPool, objects: &[Vec<u8>]) -> (Vec<Vec<Bytes>>, bool) {
        let (senders, receivers): (Vec<_>, Vec<_>) =
            objects.iter().map(|_| mpsc::unbounded_channel::<Bytes>()).unzip();
        let (go, fired) = oneshot::channel();
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            for mut rx in receivers {
                let mut stripes = Vec::new();
                while let Some(b) = rx.recv().await {
                    stripes.push(Bytes::copy_from_slice(&b)); // the staging slice is dropped
                }
                got.push(stripes);
            }
            got
        });
        let slices: Vec<&[u8]> = objects.iter().map(Vec::as_slice).collect();
        let mut go = Some(go);
        stage(pool, &slices, &senders, 4, &mut go).await.expect("staged");
        drop((senders, go));
        (consumer.await.expect("joined"), fired.await.is_ok())
    }

    fn object(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[tokio::test]
    async fn staging_packs_objects_into_stripes_that_match_the_layout() {
        let pool = BufferPool::bounded(12, 2);
        let objects = vec![object(10, 1), object(3, 2), Vec::new(), object(5, 3)];
        let (got, fired) = staged(&pool, &objects).await;
        for (obj, stripes) in objects.iter().zip(&got) {
            let lens: Vec<usize> = stripes.iter().map(Bytes::len).collect();
            let want: Vec<usize> = obj.chunks(4).map(<[u8]>::len).collect();
            assert_eq!(lens, want, "one message per stripe of the layout");
            assert_eq!(stripes.concat(), *obj);
        }
        assert!(!fired, "everything fit: the upload is not started early");
        assert_eq!(pool.allocated(), 2, "the 3-byte object did not fit the first buffer's 2");
    }

    #[tokio::test]
    async fn an_object_larger_than_the_staging_pool_streams_through_it() {
        let pool = BufferPool::bounded(8, 1);
        let objects = vec![object(41, 7)];
        let (got, fired) = staged(&pool, &objects).await;
        assert_eq!(got[0].concat(), objects[0]);
        assert!(fired, "the upload was started when the pool ran out");
        assert_eq!(pool.allocated(), 1, "it waited for the one buffer, never allocated more");
    }

    #[tokio::test]
    async fn staging_stops_when_the_save_is_gone() {
        let pool = BufferPool::bounded(8, 1);
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        let big = object(1000, 1);
        stage(&pool, &[&big], &[tx], 4, &mut None).await.expect("stops without error");
        assert_eq!(pool.allocated(), 1);
    }

    /// Reads `reader` to its end in stripes of `stripe` bytes, then checks its end.
    async fn read_all(reader: &mut StripeReader, stripe: u64) -> Result<Vec<u8>> {
        let pool = BufferPool::caching(stripe as usize, 2);
        let mut all = Vec::new();
        while let Some(b) = reader.next(&pool, stripe).await? {
            assert!(!b.is_empty() && b.len() as u64 <= stripe, "{} bytes", b.len());
            all.extend_from_slice(&b);
        }
        reader.finish().await?;
        assert_eq!(reader.read, all.len() as u64);
        Ok(all)
    }

    async fn open_file(path: &std::path::Path) -> Result<StripeReader> {
        StripeReader::open(&ObjectSource::File(path.to_path_buf())).await
    }

    #[tokio::test]
    async fn files_and_memory_are_read_to_their_end_in_stripes() {
        let dir = tempfile::tempdir().expect("temp dir");
        for len in [0, 1, 3, 4, 5, 8, 13] {
            let bytes = object(len, 9);
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &bytes).expect("write");
            let mut file = open_file(&path).await.expect("open");
            assert_eq!(read_all(&mut file, 4).await.expect("read"), bytes, "file of {len}");
            let mut mem = StripeReader::open(&ObjectSource::Memory(bytes.clone().into()))
                .await
                .expect("open");
            assert_eq!(read_all(&mut mem, 4).await.expect("read"), bytes, "memory of {len}");
        }
    }

    #[tokio::test]
    async fn a_file_that_changes_while_it_is_read_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("growing");
        let changed = |r: Result<Vec<u8>>| match r {
            Err(ClientError::SourceChanged { path: p, detail }) => {
                assert_eq!(p, path);
                detail
            }
            other => panic!("expected SourceChanged, got {other:?}"),
        };
        // Longer than at open: refused as soon as more is read than was there.
        std::fs::write(&path, object(10, 1)).expect("write");
        let mut r = open_file(&path).await.expect("open");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        std::io::Write::write_all(&mut f, b"12345").expect("append");
        assert!(changed(read_all(&mut r, 4).await).contains("10 bytes at open"));
        // Shorter: the read ends early, and the end says so.
        std::fs::write(&path, object(10, 1)).expect("write");
        let mut r = open_file(&path).await.expect("open");
        let pool = BufferPool::caching(4, 1);
        assert!(r.next(&pool, 4).await.expect("read").is_some());
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(6).expect("cut");
        let detail = changed(read_all(&mut r, 4).await);
        assert_eq!(detail, "10 bytes at open, 6 read, 6 now");
        // Same length, rewritten: its modification time gives it away.
        std::fs::write(&path, object(10, 1)).expect("write");
        let mut r = open_file(&path).await.expect("open");
        let f = std::fs::OpenOptions::new().write(true).open(&path).expect("open");
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).expect("touch");
        assert_eq!(changed(read_all(&mut r, 4).await), "modified during the read");
    }

    #[tokio::test]
    async fn a_folder_or_a_device_is_not_a_source() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (path, what) in
            [(dir.path(), "a directory"), (std::path::Path::new("/dev/zero"), "a character device")]
        {
            match open_file(path).await {
                Err(e @ ClientError::UnsupportedSource { .. }) => {
                    let ClientError::UnsupportedSource { what: w, .. } = &e else { unreachable!() };
                    assert_eq!(*w, what);
                    assert!(e.to_string().contains("nothing was saved"), "{e}");
                }
                other => panic!(
                    "{}: expected UnsupportedSource, got {:?}",
                    path.display(),
                    other.map(|r| r.read)
                ),
            }
        }
        let ft = |p: &str| std::fs::metadata(p).expect("stat").file_type();
        assert_eq!(
            source_kind(&ft("/dev/null"), true),
            Ok(SourceKind::Stream),
            "stdin may be a device"
        );
        assert_eq!(source_kind(&ft("/dev/null"), false), Err("a character device"));
    }

    #[test]
    fn a_shard_refused_for_other_bytes_under_its_key_moves_to_another_node() {
        let remote = |code| {
            put_result(Err(TransportError::Remote { node: NodeId(3), code, message: "no".into() }))
        };
        assert!(matches!(remote(ErrorCode::Conflict), PutResult::Refused(_)));
        assert!(matches!(remote(ErrorCode::DiskFull), PutResult::Refused(_)));
        assert!(matches!(remote(ErrorCode::ShuttingDown), PutResult::Refused(_)));
        assert!(matches!(remote(ErrorCode::Internal), PutResult::Failed(_)), "retried in place");
        assert!(matches!(remote(ErrorCode::HashMismatch), PutResult::Failed(_)));
        assert_eq!(put_result(Ok(())), PutResult::Stored);
        let timeout = TransportError::Timeout { node: NodeId(3), after_ms: 5 };
        assert_eq!(put_failure(&timeout), PutFailure::NodeDown, "a node-level failure");
        assert!(matches!(put_result(Err(timeout)), PutResult::Refused(_)));
        let broken = TransportError::Protocol { node: NodeId(3), reason: "bad frame".into() };
        assert!(matches!(put_result(Err(broken)), PutResult::Failed(_)), "retried in place");
    }

    #[test]
    fn a_long_host_name_still_gives_a_valid_manifest() {
        for host in ["gpu-node-7", &"h".repeat(300), &"é".repeat(200)] {
            let writer = writer_identity(host);
            assert!(writer.len() <= MAX_WRITER_BYTES, "{} bytes", writer.len());
            assert!(writer.starts_with("rackpoint-client/"));
            assert!(writer.ends_with(&format!(" pid {}", std::process::id())), "{writer}");
            let manifest = Manifest {
                format_version: crate::manifest::MANIFEST_FORMAT_VERSION,
                job: JobName::new("job").expect("valid"),
                step: Step(1),
                rank: Rank(0),
                world_size: 1,
                writer,
                code: CodeSpec::for_params(CodeParams::new(4, 2, 64).expect("valid")),
                objects: vec![ObjectEntry::empty(ObjectName::new("o").expect("valid"))],
                user_meta: BTreeMap::new(),
                prev: None,
            };
            let bytes = manifest.to_checked_bytes().expect("the writer fits");
            assert_eq!(Manifest::from_bytes(&bytes), Ok(manifest), "and readers accept it");
        }
    }
}
