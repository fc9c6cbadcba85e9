//! The save pipeline: read each object stripe by stripe, encode parity on the worker pool,
//! send the k + m shards to their placed nodes (moving a shard to the next node in placement
//! order when its node fails: a degraded write), and commit the manifest last, on m + 1 nodes
//! in distinct racks. Stripes overlap: up to `Ctx::stripes_in_flight` are being encoded or sent
//! at once, which bounds memory whatever the checkpoint's size.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rackpoint_proto::limits::{CLIENT_MAX_ATTEMPTS, MAX_WRITER_BYTES};
use rackpoint_proto::{
    Digest, ErrorCode, JobName, ManifestKey, NodeId, ObjectName, Rank, Step, StripeId, StripeIndex,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::task::JoinHandle;

use crate::catalog;
use crate::codec::{Codec, EncodedStripe, ObjectLayout};
use crate::ctx::Ctx;
use crate::error::{ClientError, NodeErrors, Result};
use crate::manifest::{CodeSpec, Manifest, ObjectEntry, StripeEntry};
use crate::placement;
use crate::stripe_write::{Action, Put, PutResult, StripeWrite, WriteFailure};
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
    // The manifest's own rules, checked before any shard is sent (objects still empty).
    let placeholders = req.objects.iter().map(|o| ObjectEntry::empty(o.name.clone())).collect();
    part_manifest(ctx, &req, placeholders, None).validate()?;
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
    let manifest = part_manifest(ctx, &req, objects, prev);
    let bytes = manifest.total_bytes();
    let (manifest_id, manifest_nodes) = commit_manifest(ctx, &manifest).await?;
    let elapsed = started.elapsed();
    tracing::info!(job = %req.job, step = %req.step, rank = %req.rank, bytes, shards, moved_shards,
        ms = elapsed.as_millis() as u64, manifest = %manifest_id, "part committed");
    Ok(SaveReport { manifest_id, bytes, shards, moved_shards, manifest_nodes, elapsed })
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

/// "rackpoint-client/VERSION HOST pid PID", cut to `MAX_WRITER_BYTES` (a long host name must
/// not make the manifest invalid).
fn writer_identity(host: &str) -> String {
    let pid = std::process::id();
    let mut w = format!("rackpoint-client/{} {} pid {pid}", env!("CARGO_PKG_VERSION"), host.trim());
    let mut cut = w.len().min(MAX_WRITER_BYTES);
    while !w.is_char_boundary(cut) {
        cut -= 1;
    }
    w.truncate(cut);
    w
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
        let at = StripeId {
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

/// Encodes one stripe on the worker pool and stores its shards: a short driver over the
/// pure [`StripeWrite`] machine, which makes every decision.
async fn save_stripe(
    ctx: Arc<Ctx>,
    codec: Arc<Codec>,
    at: StripeId,
    data: Bytes,
) -> Result<SavedStripe> {
    let bytes = data.len() as u64;
    let encoded = encode(&ctx, codec, data).await?;
    let is_down = |n: NodeId| ctx.health.is_down(n);
    let hashes = encoded.hashes.clone();
    let mut write = StripeWrite::new(&ctx.map, at, ctx.map.code, encoded.hashes, &is_down)?;
    let shards: Vec<Bytes> = encoded.shards.into_iter().map(Bytes::from).collect();
    let mut inflight = FuturesUnordered::new();
    loop {
        match write.poll(&ctx.map, Instant::now(), &is_down) {
            Action::Send(puts) => {
                for put in puts {
                    let i = usize::from(put.index.0);
                    log_move(write.id(), &put);
                    let key = write.id().shard(put.index);
                    let (ctx, hash, payload) = (&ctx, hashes[i], shards[i].clone());
                    inflight.push(async move {
                        (put.index, put_result(ctx.put_shard(put.node, key, hash, payload).await))
                    });
                }
            }
            Action::Wait => match inflight.next().await {
                Some((i, result)) => write.on_result(i, result),
                None => return Err(ClientError::Task("stripe write waits on no put".into())),
            },
            Action::Sleep(until) => tokio::time::sleep_until(until.into()).await,
            Action::Done => break,
            Action::Failed(f) => return Err(write_failed(write.id(), f)),
        }
    }
    let entry = write.entry().ok_or_else(|| ClientError::Task("stripe done unstored".into()))?;
    Ok(SavedStripe { entry, moved: write.moved(), bytes })
}

/// Encodes parity on the worker pool (bounded by cores).
async fn encode(ctx: &Ctx, codec: Arc<Codec>, data: Bytes) -> Result<EncodedStripe> {
    let _slot = ctx.encode_slots.acquire().await.map_err(|e| ClientError::Task(e.to_string()))?;
    Ok(tokio::task::spawn_blocking(move || codec.encode_stripe(&data)).await??)
}

fn log_move(id: &StripeId, put: &Put) {
    if let Some(from) = put.moved_from {
        tracing::warn!(stripe = %id.stripe, object = %id.object, shard = %put.index, from = %from,
            to = %put.node, "degraded write: shard moved");
    }
}

/// A put's outcome for the machine: a failure moves the shard (node down, full, shutting
/// down) or is retried on the same node.
fn put_result(r: Result<(), TransportError>) -> PutResult {
    match r {
        Ok(()) => PutResult::Stored,
        Err(e) if moves_shard(&e) => PutResult::Refused(e.to_string()),
        Err(e) => PutResult::Failed(e.to_string()),
    }
}

/// Whether a failed put should go to another node (rather than be retried on the same one).
fn moves_shard(e: &TransportError) -> bool {
    e.is_node_failure()
        || matches!(
            e,
            TransportError::Remote { code: ErrorCode::DiskFull | ErrorCode::ShuttingDown, .. }
        )
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

/// Stores the manifest on m + 1 nodes (distinct racks first). Returns its id and the nodes.
async fn commit_manifest(ctx: &Ctx, manifest: &Manifest) -> Result<(Digest, Vec<NodeId>)> {
    let bytes = Bytes::from(manifest.to_checked_bytes()?);
    let id = Digest::of(&bytes);
    let need = (usize::from(ctx.map.code.m) + 1).min(ctx.map.nodes.len());
    let (job, step, rank) = (&manifest.job, manifest.step, manifest.rank);
    let key = ManifestKey { job: job.clone(), step, rank };
    let mut stored: Vec<NodeId> = Vec::new();
    let mut failures: Vec<(NodeId, TransportError)> = Vec::new();
    for _ in 0..CLIENT_MAX_ATTEMPTS {
        let avoid = |n: NodeId| {
            ctx.health.is_down(n) || failures.iter().any(|(f, _)| *f == n) || stored.contains(&n)
        };
        let Ok(targets) =
            placement::place_manifest(&ctx.map, job, step, rank, need - stored.len(), &avoid)
        else {
            break;
        };
        let puts = targets
            .iter()
            .map(|&n| ctx.put_manifest(n, key.clone(), manifest.world_size, id, bytes.clone()));
        for (n, r) in targets.iter().zip(futures::future::join_all(puts).await) {
            match r {
                Ok(()) => stored.push(*n),
                Err(e) => failures.push((*n, e)),
            }
        }
        if stored.len() >= need {
            return Ok((id, stored));
        }
    }
    Err(ClientError::CommitFailed {
        job: job.clone(),
        step,
        rank,
        need,
        stored: stored.len(),
        failures: NodeErrors(failures),
    })
}

#[cfg(test)]
mod tests {
    use rackpoint_proto::CodeParams;

    use super::*;

    #[test]
    fn a_long_host_name_still_gives_a_valid_manifest() {
        for host in ["gpu-node-7", &"h".repeat(300), &"é".repeat(200)] {
            let writer = writer_identity(host);
            assert!(writer.len() <= MAX_WRITER_BYTES, "{} bytes", writer.len());
            assert!(writer.starts_with("rackpoint-client/"));
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
