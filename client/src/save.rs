//! The save pipeline: read each object stripe by stripe, encode parity on the worker pool,
//! send the k + m shards to their placed nodes (moving a shard to the next node in placement
//! order when its node fails: a degraded write), and commit the manifest last, on m + 1 nodes
//! in distinct racks. Stripes overlap: up to `Ctx::stripes_in_flight` are being encoded or sent
//! at once, which bounds memory whatever the checkpoint's size.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rackpoint_proto::limits::{
    CLIENT_MAX_ATTEMPTS, CLIENT_RETRY_BASE_MS, MAX_OBJECTS_PER_PART, MAX_USER_META_ENTRIES,
    MAX_USER_META_KEY_BYTES, MAX_USER_META_VALUE_BYTES, MAX_WORLD_SIZE,
};
use rackpoint_proto::{
    Digest, ErrorCode, JobName, ManifestKey, NodeId, ObjectName, Rank, Request, Response,
    ShardIndex, ShardKey, Step, StripeIndex,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::task::JoinHandle;

use crate::catalog;
use crate::client::Ctx;
use crate::codec::{Codec, ObjectLayout};
use crate::error::{ClientError, Result};
use crate::manifest::{CodeSpec, Manifest, ObjectEntry, ShardEntry, StripeEntry};
use crate::placement::{self, StripeRef};
use crate::transport::TransportError;

/// Where an object's bytes come from.
#[derive(Debug, Clone)]
pub enum ObjectSource {
    /// Bytes in memory (cheap to clone; the save keeps a reference, never a copy).
    Memory(Bytes),
    /// A file, read stripe by stripe.
    File(PathBuf),
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
    /// Nodes holding the manifest.
    pub manifest_nodes: Vec<NodeId>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Saves one part; returns once its manifest is committed.
pub(crate) async fn save(ctx: &Arc<Ctx>, req: SaveRequest) -> Result<SaveReport> {
    let started = Instant::now();
    validate(&req)?;
    let codec = Arc::new(Codec::new(ctx.map.code)?);
    let prev = catalog::previous_manifest_id(ctx, &req.job, req.step, req.rank).await?;
    let mut objects = Vec::with_capacity(req.objects.len());
    let (mut shards, mut moved_shards) = (0u64, 0u64);
    for obj in &req.objects {
        let saved = save_object(ctx, &codec, &req, obj).await?;
        shards += saved.shards;
        moved_shards += saved.moved;
        objects.push(saved.entry);
    }
    let manifest = Manifest {
        format_version: crate::manifest::MANIFEST_FORMAT_VERSION,
        job: req.job.clone(),
        step: req.step,
        rank: req.rank,
        world_size: req.world_size,
        writer: writer_identity(),
        code: CodeSpec::for_params(ctx.map.code),
        objects,
        user_meta: req.user_meta.clone(),
        prev,
    };
    let bytes = manifest.total_bytes();
    let (manifest_id, manifest_nodes) = commit_manifest(ctx, &manifest).await?;
    let elapsed = started.elapsed();
    tracing::info!(job = %req.job, step = %req.step, rank = %req.rank, bytes, shards, moved_shards,
        ms = elapsed.as_millis() as u64, manifest = %manifest_id, "part committed");
    Ok(SaveReport { manifest_id, bytes, shards, moved_shards, manifest_nodes, elapsed })
}

fn validate(req: &SaveRequest) -> Result<()> {
    let bad = |s: String| Err(ClientError::InvalidInput(s));
    if req.world_size == 0 || req.world_size > MAX_WORLD_SIZE {
        return bad(format!("world size {} is outside 1..={MAX_WORLD_SIZE}", req.world_size));
    }
    if req.rank.0 >= req.world_size {
        return bad(format!("rank {} is not below world size {}", req.rank, req.world_size));
    }
    if req.objects.len() > MAX_OBJECTS_PER_PART {
        return bad(format!(
            "{} objects, over the limit of {MAX_OBJECTS_PER_PART}",
            req.objects.len()
        ));
    }
    let mut names = HashSet::new();
    for o in &req.objects {
        if !names.insert(&o.name) {
            return bad(format!("object name {} appears twice", o.name));
        }
    }
    if req.user_meta.len() > MAX_USER_META_ENTRIES {
        return bad(format!(
            "{} metadata entries, over the limit of {MAX_USER_META_ENTRIES}",
            req.user_meta.len()
        ));
    }
    for (k, v) in &req.user_meta {
        if k.is_empty() || k.len() > MAX_USER_META_KEY_BYTES || v.len() > MAX_USER_META_VALUE_BYTES
        {
            return bad(format!("metadata {k:?}: keys must be 1..={MAX_USER_META_KEY_BYTES} bytes, values at most {MAX_USER_META_VALUE_BYTES}"));
        }
    }
    Ok(())
}

fn writer_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    format!(
        "rackpoint-client/{} {} pid {}",
        env!("CARGO_PKG_VERSION"),
        host.trim(),
        std::process::id()
    )
}

struct SavedObject {
    entry: ObjectEntry,
    shards: u64,
    moved: u64,
}

/// The owned address of one stripe, sent to the stripe's task.
#[derive(Clone)]
struct StripeAt {
    job: JobName,
    step: Step,
    rank: Rank,
    object: ObjectName,
    stripe: StripeIndex,
}

impl StripeAt {
    fn as_ref(&self) -> StripeRef<'_> {
        StripeRef {
            job: &self.job,
            step: self.step,
            rank: self.rank,
            object: &self.object,
            stripe: self.stripe,
        }
    }
    fn key(&self, index: usize) -> ShardKey {
        ShardKey {
            job: self.job.clone(),
            step: self.step,
            rank: self.rank,
            object: self.object.clone(),
            stripe: self.stripe,
            index: ShardIndex(index as u8),
        }
    }
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
    obj: &ObjectData,
) -> Result<SavedObject> {
    let mut reader = StripeReader::open(&obj.source).await?;
    let layout = ObjectLayout::new(ctx.map.code, reader.len);
    let mut hasher = blake3::Hasher::new();
    let mut running: VecDeque<JoinHandle<Result<SavedStripe>>> = VecDeque::new();
    let mut stripes = Vec::with_capacity(layout.stripe_count() as usize);
    let mut moved = 0;
    let mut finish = |done: SavedStripe| {
        moved += done.moved;
        ctx.report_progress(done.bytes);
        stripes.push(done.entry);
    };
    for s in 0..layout.stripe_count() {
        let stripe = StripeIndex(s);
        let data = reader.read(layout.stripe_range(stripe)).await?;
        hasher.update(&data);
        let at = StripeAt {
            job: req.job.clone(),
            step: req.step,
            rank: req.rank,
            object: obj.name.clone(),
            stripe,
        };
        running.push_back(tokio::spawn(save_stripe(ctx.clone(), codec.clone(), at, data)));
        if running.len() >= ctx.stripes_in_flight() {
            finish(running.pop_front().expect("the queue was just filled").await??);
        }
    }
    while let Some(task) = running.pop_front() {
        finish(task.await??);
    }
    let shards = (stripes.len() * ctx.map.code.total()) as u64;
    let entry = ObjectEntry {
        name: obj.name.clone(),
        len: reader.len,
        hash: Digest(*hasher.finalize().as_bytes()),
        stripes,
    };
    Ok(SavedObject { entry, shards, moved })
}

/// Reads an object's stripes in order, from memory (no copy) or from a file.
struct StripeReader {
    len: u64,
    source: ReaderSource,
}

enum ReaderSource {
    Memory(Bytes),
    File { path: PathBuf, file: tokio::fs::File },
}

impl StripeReader {
    async fn open(source: &ObjectSource) -> Result<Self> {
        match source {
            ObjectSource::Memory(b) => {
                Ok(Self { len: b.len() as u64, source: ReaderSource::Memory(b.clone()) })
            }
            ObjectSource::File(path) => {
                let io = |error| ClientError::Io { path: path.clone(), error };
                let file = tokio::fs::File::open(path).await.map_err(io)?;
                let len = file.metadata().await.map_err(io)?.len();
                Ok(Self { len, source: ReaderSource::File { path: path.clone(), file } })
            }
        }
    }

    async fn read(&mut self, range: std::ops::Range<u64>) -> Result<Bytes> {
        match &mut self.source {
            ReaderSource::Memory(b) => Ok(b.slice(range.start as usize..range.end as usize)),
            ReaderSource::File { path, file } => {
                let io = |error| ClientError::Io { path: path.clone(), error };
                let mut buf = vec![0u8; (range.end - range.start) as usize];
                file.seek(std::io::SeekFrom::Start(range.start)).await.map_err(io)?;
                file.read_exact(&mut buf).await.map_err(io)?;
                Ok(Bytes::from(buf))
            }
        }
    }
}

async fn save_stripe(
    ctx: Arc<Ctx>,
    codec: Arc<Codec>,
    at: StripeAt,
    data: Bytes,
) -> Result<SavedStripe> {
    let bytes = data.len() as u64;
    let encoded = {
        let _slot =
            ctx.encode_slots.acquire().await.map_err(|e| ClientError::Task(e.to_string()))?;
        tokio::task::spawn_blocking(move || codec.encode_stripe(&data)).await??
    };
    let code = ctx.map.code;
    let is_down = |n: NodeId| ctx.health.is_down(n);
    let first = match placement::place_stripe(&ctx.map, &at.as_ref(), code, &is_down) {
        Ok(nodes) => nodes,
        // Fewer than k + m nodes up: double up (at most m shards a node) rather than fail.
        Err(_) => placement::place_degraded(
            &ctx.map,
            &at.as_ref(),
            code,
            &vec![None; code.total()],
            &is_down,
        )?,
    };
    let mut nodes = first.clone();
    let shards: Vec<Bytes> = encoded.shards.into_iter().map(Bytes::from).collect();
    let mut pending: Vec<usize> = (0..shards.len()).collect();
    let mut attempt = 0;
    // Nodes that refused a shard of this stripe (full, shutting down, unreachable): never
    // chosen again for it, so a shard cannot bounce between two full nodes.
    let mut refused: Vec<NodeId> = Vec::new();
    while !pending.is_empty() {
        let puts = pending
            .iter()
            .map(|&i| put_shard(&ctx, at.key(i), encoded.hashes[i], shards[i].clone(), nodes[i]));
        let results = futures::future::join_all(puts).await;
        let failed: Vec<(usize, TransportError)> =
            pending.iter().zip(results).filter_map(|(&i, r)| r.err().map(|e| (i, e))).collect();
        attempt += 1;
        if let Some((i, e)) = failed.first().filter(|_| attempt >= CLIENT_MAX_ATTEMPTS) {
            return Err(write_failed(&at, *i, attempt, e.to_string()));
        }
        for (i, e) in &failed {
            if moves_shard(e) {
                if e.is_node_failure() {
                    ctx.node_failed(nodes[*i]);
                }
                refused.push(nodes[*i]);
                let is_down = |n: NodeId| refused.contains(&n) || ctx.health.is_down(n);
                nodes[*i] =
                    replacement(&ctx.map, &at, code, &nodes, *i, &is_down).ok_or_else(|| {
                        write_failed(&at, *i, attempt, format!("{e}; no other node can take it"))
                    })?;
                tracing::warn!(stripe = %at.stripe, object = %at.object, shard = i, to = %nodes[*i], error = %e, "degraded write: shard moved");
            }
        }
        if failed.iter().any(|(_, e)| !moves_shard(e)) {
            tokio::time::sleep(Duration::from_millis(CLIENT_RETRY_BASE_MS << attempt)).await;
        }
        pending = failed.into_iter().map(|(i, _)| i).collect();
    }
    let moved = nodes.iter().zip(&first).filter(|(a, b)| a != b).count() as u64;
    let shards =
        nodes.iter().zip(&encoded.hashes).map(|(&node, &hash)| ShardEntry { node, hash }).collect();
    Ok(SavedStripe { entry: StripeEntry { shards }, moved, bytes })
}

/// The node shard `i` moves to: the next node in placement order outside the stripe, or, when
/// none is left, a node of the stripe that can take one more shard (`place_degraded`).
fn replacement(
    map: &rackpoint_proto::ClusterMap,
    at: &StripeAt,
    code: rackpoint_proto::CodeParams,
    nodes: &[NodeId],
    i: usize,
    is_down: &dyn Fn(NodeId) -> bool,
) -> Option<NodeId> {
    placement::replacement(map, &at.as_ref(), code, nodes, is_down).or_else(|| {
        let pinned: Vec<Option<NodeId>> =
            nodes.iter().enumerate().map(|(j, n)| (j != i).then_some(*n)).collect();
        placement::place_degraded(map, &at.as_ref(), code, &pinned, is_down).ok().map(|p| p[i])
    })
}

/// Whether a failed put should go to another node (rather than be retried on the same one).
fn moves_shard(e: &TransportError) -> bool {
    e.is_node_failure()
        || matches!(
            e,
            TransportError::Remote { code: ErrorCode::DiskFull | ErrorCode::ShuttingDown, .. }
        )
}

fn write_failed(at: &StripeAt, index: usize, attempts: u32, last: String) -> ClientError {
    ClientError::ShardWriteFailed {
        object: at.object.clone(),
        stripe: at.stripe,
        index: ShardIndex(index as u8),
        attempts,
        last,
    }
}

async fn put_shard(
    ctx: &Ctx,
    key: ShardKey,
    hash: Digest,
    payload: Bytes,
    node: NodeId,
) -> Result<(), TransportError> {
    let reply = ctx.call_shard(node, &Request::PutShard { key, hash }, payload).await?;
    expect_reply(node, reply.response, |r| matches!(r, Response::ShardStored))
}

/// Turns an unexpected (non-error) reply into a protocol error.
fn expect_reply(
    node: NodeId,
    r: Response,
    ok: impl Fn(&Response) -> bool,
) -> Result<(), TransportError> {
    if ok(&r) {
        Ok(())
    } else {
        Err(TransportError::Protocol { node, reason: format!("unexpected reply {r:?}") })
    }
}

/// Stores the manifest on m + 1 nodes (distinct racks first). Returns its id and the nodes.
async fn commit_manifest(ctx: &Arc<Ctx>, manifest: &Manifest) -> Result<(Digest, Vec<NodeId>)> {
    let bytes = Bytes::from(manifest.to_bytes());
    let id = Digest(*blake3::hash(&bytes).as_bytes());
    let need = (usize::from(ctx.map.code.m) + 1).min(ctx.map.nodes.len());
    let key = ManifestKey { job: manifest.job.clone(), step: manifest.step, rank: manifest.rank };
    let request = Request::PutManifest { key, world_size: manifest.world_size, hash: id };
    let mut stored: Vec<NodeId> = Vec::new();
    let mut failures: BTreeMap<NodeId, String> = BTreeMap::new();
    for _ in 0..CLIENT_MAX_ATTEMPTS {
        let avoid =
            |n: NodeId| ctx.health.is_down(n) || failures.contains_key(&n) || stored.contains(&n);
        let (job, step, rank) = (&manifest.job, manifest.step, manifest.rank);
        let Ok(targets) =
            placement::place_manifest(&ctx.map, job, step, rank, need - stored.len(), &avoid)
        else {
            break;
        };
        let puts = targets.iter().map(|&n| {
            let (request, bytes) = (&request, bytes.clone());
            async move {
                let reply = ctx.transport.call(n, request, bytes).await?;
                expect_reply(n, reply.response, |r| matches!(r, Response::ManifestStored))
            }
        });
        for (n, r) in targets.iter().zip(futures::future::join_all(puts).await) {
            match r {
                Ok(()) => stored.push(*n),
                Err(e) => {
                    if e.is_node_failure() {
                        ctx.node_failed(*n);
                    }
                    failures.insert(*n, e.to_string());
                }
            }
        }
        if stored.len() >= need {
            return Ok((id, stored));
        }
    }
    Err(ClientError::CommitFailed {
        job: manifest.job.clone(),
        step: manifest.step,
        rank: manifest.rank,
        need,
        stored: stored.len(),
        failures: failures
            .iter()
            .map(|(n, e)| format!("node {n}: {e}"))
            .collect::<Vec<_>>()
            .join("; "),
    })
}
