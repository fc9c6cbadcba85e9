//! The restore pipeline: read the manifest from any replica, then fetch many stripes at once.
//! Each stripe is driven by the pure [`StripePlanner`]: data shards first, parity when a shard
//! is missing, corrupt, on a down node, or late past the hedging threshold; decoding only when
//! a data shard is absent. Stripes are written in order to the sink and every object's blake3
//! is checked end to end before anything is handed back (files appear only once all are good).
//!
//! Memory per byte: a healthy stripe's data shards are checked (one blake3 each) and written
//! from the received buffers straight into the caller's buffer, the result or the file (one
//! copy, none into a file: `write` from the shard buffers); only a stripe that needs parity is
//! decoded into a stripe buffer first. Received shard buffers are reused (`Transport`'s
//! receive cache) once written.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rackpoint_proto::{Digest, NodeId, ObjectName, ShardIndex, StripeId, StripeIndex};
use tokio::task::JoinHandle;

use crate::codec::{Codec, CodecError, DecodePath, ObjectLayout};
use crate::ctx::Ctx;
use crate::error::{ClientError, FailedShard, FailedShardList, Result};
pub use crate::manifest::Which;
use crate::manifest::{Manifest, ObjectEntry, StripeEntry};
use crate::planner::{Outcome, ShardFailure, StripePlanner};

/// A restored object held in memory.
#[derive(Debug, Clone)]
pub struct RestoredObject {
    /// Its name.
    pub name: ObjectName,
    /// Its bytes (checked against the manifest's blake3).
    pub bytes: Vec<u8>,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    /// The manifest restored.
    pub manifest: Manifest,
    /// Object bytes restored.
    pub bytes: u64,
    /// Stripes that needed parity (decoding).
    pub degraded_stripes: u64,
    /// Stripes where a node answered that a shard was missing or corrupt: damage that heal
    /// on read (or `repair`) fixes. A shard that was only late or on a node down is not
    /// counted.
    pub damaged_stripes: Vec<(ObjectName, StripeIndex)>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Where restored objects go.
pub(crate) enum Sink {
    /// Into memory.
    Memory(Vec<RestoredObject>),
    /// Into files `dir/<object name>`: each written to a temporary file, and all renamed into
    /// place once every object's hash matched, so a failed restore leaves no file behind.
    Dir {
        /// The folder.
        dir: PathBuf,
        /// Whether to replace existing files; if not, an existing one is refused before
        /// anything is fetched, and the renames never replace one (no-clobber).
        overwrite: bool,
        /// Objects checked and waiting for their rename: (temporary file, final path).
        ready: Vec<(tempfile::TempPath, PathBuf)>,
    },
}

impl Sink {
    /// Into files in `dir`.
    pub(crate) fn dir(dir: &Path, overwrite: bool) -> Self {
        Sink::Dir { dir: dir.to_path_buf(), overwrite, ready: Vec::new() }
    }

    /// Refuses, before anything is fetched: an object whose path below the folder crosses a
    /// symbolic link or a file (nested names such as `tokenizer/vocab.json` never write
    /// outside the folder), an object that would be a folder of another (`a` and `a/b`), and,
    /// unless asked to overwrite, an existing file.
    fn check_targets(&self, manifest: &Manifest) -> Result<()> {
        let Sink::Dir { dir, overwrite, .. } = self else { return Ok(()) };
        let names: std::collections::BTreeSet<&str> =
            manifest.objects.iter().map(|o| o.name.as_str()).collect();
        for obj in &manifest.objects {
            let name = obj.name.as_str();
            let path = dir.join(name);
            let mut folder = dir.clone();
            let components: Vec<&str> = name.split('/').collect();
            for (i, c) in components[..components.len() - 1].iter().enumerate() {
                let above = components[..=i].join("/");
                if names.contains(above.as_str()) {
                    return Err(ClientError::InvalidInput(format!(
                        "object {name} would be inside object {above}, which is a file"
                    )));
                }
                folder.push(c);
                match folder.symlink_metadata() {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        return Err(ClientError::InvalidInput(format!(
                            "{} is not a folder (a file or a symbolic link): object {name} is not restored through it",
                            folder.display()
                        )))
                    }
                    Err(_) => break, // made when the object is placed
                }
            }
            match path.symlink_metadata() {
                Ok(m) if m.file_type().is_symlink() || m.is_dir() => {
                    return Err(ClientError::InvalidInput(format!(
                        "{} is a folder or a symbolic link: object {name} is not restored over it",
                        path.display()
                    )))
                }
                Ok(_) if !overwrite => return Err(ClientError::FileExists { path }),
                _ => {}
            }
        }
        Ok(())
    }

    /// Renames every checked object into place. If one rename fails, the files this call
    /// placed are removed again (without `overwrite` they are new files) and the temporary
    /// files left are dropped, which removes them.
    fn publish(&mut self) -> Result<()> {
        let Sink::Dir { dir, overwrite, ready } = self else { return Ok(()) };
        let mut placed: Vec<PathBuf> = Vec::with_capacity(ready.len());
        let mut made = MadeFolders::default();
        for (tmp, path) in std::mem::take(ready) {
            let renamed = made
                .parents_of(dir, &path)
                .map_err(|error| ClientError::Io { path: path.clone(), error });
            let renamed = renamed.and_then(|()| {
                let r = if *overwrite { tmp.persist(&path) } else { tmp.persist_noclobber(&path) };
                r.map_err(|e| match e.error.kind() {
                    std::io::ErrorKind::AlreadyExists if !*overwrite => {
                        ClientError::FileExists { path: path.clone() }
                    }
                    _ => ClientError::Io { path: path.clone(), error: e.error },
                })
            });
            if let Err(e) = renamed {
                if !*overwrite {
                    for p in &placed {
                        let _ = std::fs::remove_file(p); // best effort: the rename error is the one to report
                    }
                }
                return Err(e);
            }
            placed.push(path);
        }
        made.keep();
        Ok(())
    }
}

/// The folders a restore made for nested object names (`a/b/c` needs `a` and `a/b`), removed
/// again, deepest first, when dropped unless kept: a failed restore leaves no empty folder.
#[derive(Default)]
struct MadeFolders(Vec<PathBuf>);

impl MadeFolders {
    /// Makes the missing folders between `dir` and `path`'s parent, one at a time (never
    /// through a symbolic link: `create_dir` fails on an existing entry of any kind, and an
    /// existing one must be a real folder).
    fn parents_of(&mut self, dir: &Path, path: &Path) -> std::io::Result<()> {
        let Some(parent) = path.parent() else { return Ok(()) };
        let Ok(below) = parent.strip_prefix(dir) else { return Ok(()) };
        let mut folder = dir.to_path_buf();
        for c in below.components() {
            folder.push(c);
            match std::fs::create_dir(&folder) {
                Ok(()) => self.0.push(folder.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if !folder.symlink_metadata()?.is_dir() {
                        let why = format!("{} is not a folder", folder.display());
                        return Err(std::io::Error::other(why));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for MadeFolders {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d); // only empty ones go
        }
    }
}

/// Restores every object of `manifest` into `sink`.
pub(crate) async fn restore_part(
    ctx: &Arc<Ctx>,
    manifest: Manifest,
    sink: &mut Sink,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let codec = Arc::new(Codec::new(manifest.code.params)?);
    let manifest = Arc::new(manifest);
    sink.check_targets(&manifest)?;
    let (mut degraded_stripes, mut damaged_stripes) = (0, Vec::new());
    for (i, obj) in manifest.objects.iter().enumerate() {
        let mut out = ObjectOut::open(sink, obj).await?;
        let restored = restore_object(ctx, &codec, &manifest, i, &mut out).await?;
        degraded_stripes += restored.decoded;
        damaged_stripes.extend(restored.damaged.into_iter().map(|s| (obj.name.clone(), s)));
        out.finish(sink, obj).await?;
    }
    sink.publish()?;
    let elapsed = started.elapsed();
    let bytes = manifest.total_bytes();
    tracing::info!(job = %manifest.job, step = %manifest.step, rank = %manifest.rank, bytes, degraded_stripes,
        damaged_stripes = damaged_stripes.len(), ms = elapsed.as_millis() as u64, "part restored");
    let manifest = Arc::try_unwrap(manifest).unwrap_or_else(|m| (*m).clone());
    Ok(RestoreReport { manifest, bytes, degraded_stripes, damaged_stripes, elapsed })
}

/// Where [`restore_object`] writes an object's stripes, in order.
trait StripeOut {
    /// Writes one stripe's bytes; hands back the buffers they were in, for reuse.
    async fn write(&mut self, stripe: StripeBytes) -> Result<Vec<Vec<u8>>>;
}

impl StripeOut for ObjectOut {
    async fn write(&mut self, stripe: StripeBytes) -> Result<Vec<Vec<u8>>> {
        ObjectOut::write(self, stripe).await
    }
}

/// One stripe's object bytes: `pieces` one after another, cut to `len` (a healthy stripe's
/// data shards, the last one padded; or one decoded buffer).
struct StripeBytes {
    pieces: Vec<Vec<u8>>,
    len: usize,
}

impl StripeBytes {
    /// The object bytes, piece by piece.
    fn slices(&self) -> impl Iterator<Item = &[u8]> {
        let mut left = self.len;
        self.pieces.iter().map(move |p| {
            let take = p.len().min(left);
            left -= take;
            &p[..take]
        })
    }
}

/// A caller's buffer of exactly the object's length, filled in place and hashed as it fills.
struct SliceOut<'a> {
    buf: &'a mut [u8],
    at: usize,
    hasher: blake3::Hasher,
}

impl StripeOut for SliceOut<'_> {
    async fn write(&mut self, stripe: StripeBytes) -> Result<Vec<Vec<u8>>> {
        for data in stripe.slices() {
            let end = self.at + data.len();
            let dst = self.buf.get_mut(self.at..end).ok_or_else(|| {
                ClientError::Task(format!("stripe ends at byte {end}, past the object's length"))
            })?;
            dst.copy_from_slice(data);
            self.hasher.update(data);
            self.at = end;
        }
        Ok(stripe.pieces)
    }
}

/// Restores object `name` of `manifest` into `into`, which must be exactly as long as the
/// object; the object's blake3 is checked end to end (on a mismatch `into` holds bytes that
/// must not be used).
pub(crate) async fn restore_object_into(
    ctx: &Arc<Ctx>,
    manifest: &Arc<Manifest>,
    name: &ObjectName,
    into: &mut [u8],
) -> Result<ObjectRestore> {
    let (i, obj) =
        manifest.objects.iter().enumerate().find(|(_, o)| &o.name == name).ok_or_else(|| {
            ClientError::InvalidInput(format!(
                "{} step {} rank {} has no object {name}",
                manifest.job, manifest.step, manifest.rank
            ))
        })?;
    if obj.len != into.len() as u64 {
        return Err(ClientError::InvalidInput(format!(
            "object {name} is {} bytes; the buffer given is {}",
            obj.len,
            into.len()
        )));
    }
    let codec = Arc::new(Codec::new(manifest.code.params)?);
    let mut out = SliceOut { buf: into, at: 0, hasher: blake3::Hasher::new() };
    let restored = restore_object(ctx, &codec, manifest, i, &mut out).await?;
    if out.hasher.finalize().as_bytes() != &obj.hash.0 {
        return Err(ClientError::ObjectHashMismatch { object: name.clone() });
    }
    Ok(restored)
}

/// One object being written: checked incrementally, published only when its hash matches.
enum ObjectOut {
    Memory {
        bytes: Vec<u8>,
        hasher: blake3::Hasher,
    },
    /// A uniquely named temporary file in the output folder, removed when dropped unless
    /// persisted under the object's name. Written with plain `write` calls on the worker
    /// pool, straight from the stripe's buffers (`None` only while a write runs).
    File {
        tmp: tempfile::TempPath,
        file: Option<std::fs::File>,
        hasher: blake3::Hasher,
    },
}

impl ObjectOut {
    async fn open(sink: &Sink, obj: &ObjectEntry) -> Result<Self> {
        match sink {
            Sink::Memory(_) => {
                let mut bytes = Vec::new();
                bytes.try_reserve_exact(obj.len as usize).map_err(|e| {
                    ClientError::InvalidInput(format!(
                        "object {} of {} bytes does not fit in memory: {e}",
                        obj.name, obj.len
                    ))
                })?;
                Ok(ObjectOut::Memory { bytes, hasher: blake3::Hasher::new() })
            }
            Sink::Dir { dir, .. } => {
                let (file, tmp) = tempfile::Builder::new()
                    .prefix(".rackpoint-partial-")
                    .tempfile_in(dir)
                    .map_err(|error| ClientError::Io { path: dir.clone(), error })?
                    .into_parts();
                Ok(ObjectOut::File { tmp, file: Some(file), hasher: blake3::Hasher::new() })
            }
        }
    }

    async fn write(&mut self, stripe: StripeBytes) -> Result<Vec<Vec<u8>>> {
        match self {
            ObjectOut::Memory { bytes, hasher } => {
                for data in stripe.slices() {
                    hasher.update(data);
                    bytes.extend_from_slice(data);
                }
                Ok(stripe.pieces)
            }
            ObjectOut::File { tmp, file, hasher } => {
                for data in stripe.slices() {
                    hasher.update(data);
                }
                let io = |error| ClientError::Io { path: tmp.to_path_buf(), error };
                let mut f = file.take().ok_or_else(|| io(std::io::Error::other("closed")))?;
                let (f, pieces) = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    let written: std::io::Result<()> =
                        stripe.slices().try_for_each(|data| f.write_all(data));
                    written.map(|()| (f, stripe.pieces))
                })
                .await?
                .map_err(io)?;
                *file = Some(f);
                Ok(pieces)
            }
        }
    }

    async fn finish(self, sink: &mut Sink, obj: &ObjectEntry) -> Result<()> {
        let mismatch = |h: &blake3::Hasher| h.finalize().as_bytes() != &obj.hash.0;
        match (self, sink) {
            (ObjectOut::Memory { bytes, hasher }, Sink::Memory(out)) => {
                if mismatch(&hasher) {
                    return Err(ClientError::ObjectHashMismatch { object: obj.name.clone() });
                }
                out.push(RestoredObject { name: obj.name.clone(), bytes });
                Ok(())
            }
            (ObjectOut::File { tmp, file, hasher }, Sink::Dir { dir, ready, .. }) => {
                let io = |error| ClientError::Io { path: tmp.to_path_buf(), error };
                let file = file.ok_or_else(|| io(std::io::Error::other("closed")))?;
                tokio::task::spawn_blocking(move || file.sync_all()).await?.map_err(io)?;
                if mismatch(&hasher) {
                    // Dropping `tmp` removes the temporary file.
                    return Err(ClientError::ObjectHashMismatch { object: obj.name.clone() });
                }
                ready.push((tmp, dir.join(obj.name.as_str())));
                Ok(())
            }
            _ => unreachable!("an ObjectOut is opened from the sink it finishes into"),
        }
    }
}

/// What restoring one object found.
#[derive(Debug, Default)]
pub(crate) struct ObjectRestore {
    /// Stripes that needed decoding.
    pub(crate) decoded: u64,
    /// Stripes with a shard a node reported missing or corrupt (see
    /// [`RestoreReport::damaged_stripes`]).
    pub(crate) damaged: Vec<StripeIndex>,
}

/// Restores one object, many stripes at once, writing them in order.
async fn restore_object(
    ctx: &Arc<Ctx>,
    codec: &Arc<Codec>,
    manifest: &Arc<Manifest>,
    obj: usize,
    out: &mut impl StripeOut,
) -> Result<ObjectRestore> {
    let layout = ObjectLayout::new(manifest.code.params, manifest.objects[obj].len);
    let mut running: VecDeque<JoinHandle<Result<FetchedStripe>>> = VecDeque::new();
    let mut found = ObjectRestore::default();
    for s in 0..layout.stripe_count() {
        let task =
            fetch_stripe(ctx.clone(), codec.clone(), manifest.clone(), obj, layout, StripeIndex(s));
        running.push_back(tokio::spawn(task));
        if running.len() >= ctx.stripes_in_flight() {
            let done = running.pop_front().expect("the queue was just filled").await??;
            write_stripe(ctx, out, done, &mut found).await?;
        }
    }
    while let Some(task) = running.pop_front() {
        write_stripe(ctx, out, task.await??, &mut found).await?;
    }
    Ok(found)
}

/// Writes a fetched stripe out in order, counting what it needed into `found`.
async fn write_stripe(
    ctx: &Ctx,
    out: &mut impl StripeOut,
    done: FetchedStripe,
    found: &mut ObjectRestore,
) -> Result<()> {
    let len = done.bytes.len as u64;
    ctx.recycle(out.write(done.bytes).await?);
    ctx.report_progress(len);
    found.decoded += u64::from(done.decoded);
    if done.damaged {
        found.damaged.push(done.stripe);
    }
    Ok(())
}

/// One stripe's object bytes, whether they needed decoding, and whether a node reported one
/// of its shards missing or corrupt.
struct FetchedStripe {
    stripe: StripeIndex,
    bytes: StripeBytes,
    decoded: bool,
    damaged: bool,
}

/// Fetches and, if needed, decodes one stripe: a driver over the pure [`StripePlanner`],
/// which decides every fetch.
async fn fetch_stripe(
    ctx: Arc<Ctx>,
    codec: Arc<Codec>,
    manifest: Arc<Manifest>,
    obj: usize,
    layout: ObjectLayout,
    s: StripeIndex,
) -> Result<FetchedStripe> {
    let object = &manifest.objects[obj];
    let entry: &StripeEntry = &object.stripes[s.0 as usize];
    let nodes: Vec<NodeId> = entry.shards.iter().map(|sh| sh.node).collect();
    let hashes: Vec<Digest> = entry.shards.iter().map(|sh| sh.hash).collect();
    let id = manifest.stripe_id(&object.name, s);
    let k = usize::from(manifest.code.params.k);
    let mut planner = StripePlanner::new(k, nodes.clone(), ctx.hedge_after());
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; nodes.len()];
    let mut inflight = FuturesUnordered::new();
    let fetch = |i: ShardIndex| {
        let (ctx, node, key) = (ctx.clone(), nodes[usize::from(i.0)], id.shard(i));
        // Unchecked here: the decoder hashes each shard once.
        async move { (i, ctx.get_shard(node, key, None).await) }
    };
    let is_down = |n: NodeId| ctx.health.is_down(n);
    inflight.extend(planner.start(Instant::now(), &is_down).into_iter().map(fetch));
    loop {
        match planner.outcome() {
            Outcome::Ready => match decode(&ctx, &codec, layout, s, shards, &hashes).await? {
                Decoded::Done(stripe) => {
                    let lost = planner.failures().iter().any(|(_, _, why)| {
                        matches!(why, ShardFailure::Missing | ShardFailure::Corrupt)
                    });
                    return Ok(FetchedStripe { damaged: stripe.damaged || lost, ..stripe });
                }
                Decoded::Corrupt(back, corrupt) => {
                    shards = back;
                    for c in corrupt {
                        shards[usize::from(c.0)] = None;
                        let more =
                            planner.on_failed(c, ShardFailure::Corrupt, Instant::now(), &is_down);
                        inflight.extend(more.into_iter().map(fetch));
                    }
                    continue;
                }
            },
            Outcome::Impossible => return Err(not_enough_shards(id, k, &planner)),
            Outcome::Pending => {}
        }
        let deadline = planner.next_deadline(Instant::now());
        tokio::select! {
            Some((i, result)) = inflight.next() => match result {
                Ok(bytes) => {
                    shards[usize::from(i.0)] = Some(bytes);
                    planner.on_arrived(i);
                }
                Err(why) => inflight.extend(planner.on_failed(i, why, Instant::now(), &is_down).into_iter().map(fetch)),
            },
            () = sleep_until(deadline) => {
                suspect_stalled(&ctx, &planner, s);
                inflight.extend(planner.on_tick(Instant::now(), &is_down).into_iter().map(fetch));
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => futures::future::pending().await,
    }
}

/// A late fetch on a node that answered nothing for a whole threshold: suspect the node, so
/// this and later stripes plan around it until it answers again (the rule is
/// `HealthView::suspect_stalled`'s).
fn suspect_stalled(ctx: &Ctx, planner: &StripePlanner, s: StripeIndex) {
    let now = Instant::now();
    for node in ctx.health.suspect_stalled(planner.late_nodes(now), now, ctx.hedge_after()) {
        tracing::warn!(node = %node, stripe = %s, "node stalled: hedging with parity");
    }
}

/// The stripe cannot be read: lost if nodes answered that more than m of its shards are
/// missing or corrupt, else only unavailable, naming the nodes to bring back; with which
/// checkpoint, object and stripe, and every failed shard's node.
fn not_enough_shards(id: StripeId, k: usize, planner: &StripePlanner) -> ClientError {
    let failures = FailedShardList(
        planner
            .failures()
            .into_iter()
            .map(|(index, node, why)| FailedShard { index, node, why })
            .collect(),
    );
    let got = planner.arrived().count();
    if planner.is_lost() {
        return ClientError::NotEnoughShards {
            job: id.job,
            step: id.step,
            rank: id.rank,
            object: id.object,
            stripe: id.stripe,
            need: k,
            got,
            failures,
        };
    }
    ClientError::ShardsUnavailable {
        job: id.job,
        step: id.step,
        rank: id.rank,
        object: id.object,
        stripe: id.stripe,
        need: k,
        got,
        failures,
    }
}

/// What decoding a stripe gave.
enum Decoded {
    /// The stripe's bytes.
    Done(FetchedStripe),
    /// Too few good shards: these were corrupt (the shards are handed back).
    Corrupt(Vec<Option<Vec<u8>>>, Vec<ShardIndex>),
}

/// Checks the fetched shards' hashes and rebuilds the stripe's bytes: a copy when every data
/// shard is here and good, Reed-Solomon on the worker pool otherwise. Each shard is hashed
/// here once (not also on arrival).
async fn decode(
    ctx: &Ctx,
    codec: &Arc<Codec>,
    layout: ObjectLayout,
    s: StripeIndex,
    mut shards: Vec<Option<Vec<u8>>>,
    hashes: &[Digest],
) -> Result<Decoded> {
    let range = layout.stripe_range(s);
    let len = (range.end - range.start) as usize;
    let k = usize::from(layout.params().k);
    if healthy(&shards[..k], layout.shard_len(s), hashes) {
        // Every data shard is here and good: its bytes are the stripe's, no copy needed.
        let pieces = shards.drain(..k).flatten().collect();
        ctx.recycle(shards.into_iter().flatten());
        let bytes = StripeBytes { pieces, len };
        return Ok(Decoded::Done(FetchedStripe {
            stripe: s,
            bytes,
            decoded: false,
            damaged: false,
        }));
    }
    let mut out = vec![0u8; len];
    let (result, shards, out) = if shards[..k].iter().any(Option::is_none) {
        let _slot =
            ctx.encode_slots.acquire().await.map_err(|e| ClientError::Task(e.to_string()))?;
        let (codec, hashes) = (codec.clone(), hashes.to_vec());
        tokio::task::spawn_blocking(move || {
            let r = codec.decode_stripe_into(&layout, s, &mut shards, &hashes, &mut out);
            (r, shards, out)
        })
        .await?
    } else {
        let r = codec.decode_stripe_into(&layout, s, &mut shards, hashes, &mut out);
        (r, shards, out)
    };
    match result {
        Ok(report) => {
            let decoded = report.path == DecodePath::Reconstructed;
            let damaged = !report.corrupt.is_empty();
            ctx.recycle(shards.into_iter().flatten());
            let bytes = StripeBytes { pieces: vec![out], len };
            Ok(Decoded::Done(FetchedStripe { stripe: s, bytes, decoded, damaged }))
        }
        Err(CodecError::NotEnoughShards { corrupt, .. }) if !corrupt.is_empty() => {
            Ok(Decoded::Corrupt(shards, corrupt))
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether every data shard is present with the stripe's shard length and its recorded
/// blake3 (each hashed once, here), so that the stripe needs no decoding.
fn healthy(data: &[Option<Vec<u8>>], shard_len: usize, hashes: &[Digest]) -> bool {
    data.len() <= hashes.len()
        && data.iter().zip(hashes).all(|(shard, hash)| {
            shard.as_ref().is_some_and(|b| b.len() == shard_len && Digest::of(b) == *hash)
        })
}

/// Checks that `dir` exists and is a folder before anything is fetched.
pub(crate) fn check_out_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ClientError::InvalidInput(format!("{} is not a folder", dir.display()))),
        Err(error) => Err(ClientError::Io { path: dir.to_path_buf(), error }),
    }
}

#[cfg(test)]
mod sink_tests {
    use super::*;

    /// A checked object waiting for its rename in `dir`.
    fn ready(dir: &Path, name: &str, bytes: &[u8]) -> (tempfile::TempPath, PathBuf) {
        let mut tmp = tempfile::NamedTempFile::new_in(dir).expect("temp file");
        std::io::Write::write_all(&mut tmp, bytes).expect("write");
        (tmp.into_temp_path(), dir.join(name))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_file_that_appears_before_the_rename_is_not_replaced_and_nothing_is_left() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = Sink::dir(dir.path(), false);
        let Sink::Dir { ready: queue, .. } = &mut sink else { unreachable!("made as Dir") };
        queue.push(ready(dir.path(), "a.bin", b"a"));
        queue.push(ready(dir.path(), "b.bin", b"b"));
        std::fs::write(dir.path().join("b.bin"), b"theirs").expect("write");
        let err = sink.publish().expect_err("b.bin is in the way");
        assert!(
            matches!(&err, ClientError::FileExists { path } if path.ends_with("b.bin")),
            "{err}"
        );
        assert_eq!(std::fs::read(dir.path().join("b.bin")).expect("kept"), b"theirs");
        assert_eq!(names(dir.path()), ["b.bin"], "a.bin taken back, temporary files gone");
    }

    #[test]
    fn nested_names_get_their_folders_and_a_failed_publish_takes_them_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sink = Sink::dir(dir.path(), false);
        let Sink::Dir { ready: queue, .. } = &mut sink else { unreachable!("made as Dir") };
        queue.push(ready(dir.path(), "tok/en/vocab.json", b"v"));
        queue.push(ready(dir.path(), "cfg.json", b"c"));
        std::fs::write(dir.path().join("cfg.json"), b"theirs").expect("write");
        sink.publish().expect_err("cfg.json is in the way");
        assert_eq!(names(dir.path()), ["cfg.json"], "tok/en made and taken back");

        let mut sink = Sink::dir(dir.path(), false);
        let Sink::Dir { ready: queue, .. } = &mut sink else { unreachable!("made as Dir") };
        queue.push(ready(dir.path(), "tok/en/vocab.json", b"v"));
        sink.publish().expect("publish");
        assert_eq!(std::fs::read(dir.path().join("tok/en/vocab.json")).expect("read"), b"v");
    }

    #[test]
    fn a_symbolic_link_on_the_way_is_never_followed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let outside = tempfile::tempdir().expect("temp dir");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("tok")).expect("symlink");
        let mut sink = Sink::dir(dir.path(), true);
        let Sink::Dir { ready: queue, .. } = &mut sink else { unreachable!("made as Dir") };
        queue.push(ready(dir.path(), "tok/vocab.json", b"v"));
        sink.publish().expect_err("tok is a link");
        assert!(names(outside.path()).is_empty(), "nothing written through the link");
    }

    #[test]
    fn overwrite_replaces_existing_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.bin"), b"old").expect("write");
        let mut sink = Sink::dir(dir.path(), true);
        let Sink::Dir { ready: queue, .. } = &mut sink else { unreachable!("made as Dir") };
        queue.push(ready(dir.path(), "a.bin", b"new"));
        sink.publish().expect("publish");
        assert_eq!(std::fs::read(dir.path().join("a.bin")).expect("read"), b"new");
        assert_eq!(names(dir.path()), ["a.bin"]);
    }
}
