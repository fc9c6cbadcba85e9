//! Repair: bring a checkpoint back to full redundancy. For each part it surveys every shard
//! where it lies (`VerifyShard`: one round trip per shard, no transfer), plans each stripe
//! ([`plan`]: rewrite in place, move off down, decommissioned or doubled-up nodes, or report
//! it unrecoverable), reads `k` healthy shards spread over the least-read nodes under a
//! bandwidth limit, rebuilds the stripe on the worker pool (decode, then re-encode: every
//! rebuilt shard must hash to the manifest's digest, or nothing is written), and writes the
//! lost shards to their targets. Shards go first; only when some shard moved is a new
//! manifest revision committed (`ReplaceManifest`, keeping the part's chain id as `base`), so
//! a reader sees either the old manifest (whose surviving shards still decode) or the new
//! one, never a half-repaired state. Last, a part whose manifest lies on fewer than m + 1
//! nodes in service gets its copies back. A step being deleted (marked by an `rm` or `gc`
//! that could not finish on every node) is not repaired: its delete is finished instead
//! (`catalog::delete` again: key ranges on every node, then the marks cleared).

/// The pure planner this driver carries out (the core's `repair_plan`, by its old path).
pub use rackpoint_core::repair_plan as plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use rackpoint_proto::failpoint;
use rackpoint_proto::limits::{REPAIR_DEFAULT_READ_BYTES_PER_SEC, REPAIR_SURVEY_STRIPES_IN_FLIGHT};
use rackpoint_proto::pacing::Pacer;
use rackpoint_proto::{
    Digest, ErrorCode, JobName, ManifestKey, NodeId, ObjectName, Rank, ShardIndex, ShardKey, Step,
    StripeId, StripeIndex,
};

use crate::catalog::{self, PartEntry};
use crate::codec::{Codec, ObjectLayout};
use crate::ctx::Ctx;
use crate::error::{ClientError, Result};
use crate::manifest::{Manifest, StripeEntry};
use crate::placement;
use crate::planner::ShardFailure;
use crate::transport::TransportError;
use plan::{stripe_id, FixReason, PlacedFix, ShardFix, ShardState, StripePlan};

/// Which checkpoints to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairScope {
    /// Every part of one step.
    Step(Step),
    /// Every part of every step of the job.
    All,
}

/// How to repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairOptions {
    /// Bytes per second the repair may read from the nodes, over all of them (`None`: no
    /// limit). Reads are spread over the least-read nodes.
    pub read_bytes_per_sec: Option<u64>,
    /// Whether shards on nodes known down are rebuilt elsewhere. `repair` does; heal on read
    /// does not (a node down for a moment, or only slow, should not cost it its shards):
    /// their shards are left for an explicit repair.
    pub move_off_down_nodes: bool,
}

impl RepairOptions {
    /// The default options with this read limit (`None`: no limit).
    pub fn limited_to(read_bytes_per_sec: Option<u64>) -> Self {
        Self { read_bytes_per_sec, ..Self::default() }
    }
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self {
            read_bytes_per_sec: Some(REPAIR_DEFAULT_READ_BYTES_PER_SEC),
            move_off_down_nodes: true,
        }
    }
}

/// Something a repair could not bring back: a stripe, or (without object and stripe) the
/// whole part, say when its manifest could not be read or committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeProblem {
    /// The object.
    pub object: Option<ObjectName>,
    /// The stripe.
    pub stripe: Option<StripeIndex>,
    /// What is wrong.
    pub problem: String,
}

/// What a repair did to one part.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartRepair {
    /// The step.
    pub step: Step,
    /// The rank.
    pub rank: Rank,
    /// Stripes surveyed.
    pub stripes: u64,
    /// Shards surveyed (one `VerifyShard` each, or none for a node known down).
    pub shards_checked: u64,
    /// Shards found healthy where the manifest says.
    pub shards_healthy: u64,
    /// Shards written back to the node they belong on.
    pub rewritten_in_place: u64,
    /// Shards written to another node.
    pub moved: u64,
    /// Shard bytes read to rebuild.
    pub bytes_read: u64,
    /// Shard bytes written.
    pub bytes_written: u64,
    /// The manifest revision now committed, when the repair moved shards.
    pub new_revision: Option<u32>,
    /// Manifest copies written to bring the replica count back to m + 1.
    pub manifest_copies_added: usize,
    /// Old copies of moved shards deleted from the nodes they left (after the new manifest
    /// was committed).
    pub stale_copies_deleted: u64,
    /// Old copies of moved shards left where they were, because their node did not answer
    /// (down, say); a later `gc` of the checkpoint removes them with it.
    pub stale_copies_left: u64,
    /// Stripes left short of full redundancy, and why.
    pub problems: Vec<StripeProblem>,
}

impl PartRepair {
    /// Whether the part is back to full redundancy.
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Per part, in (step, rank) order.
    pub parts: Vec<PartRepair>,
    /// Steps whose pending delete the repair finished (gone from every node, marks cleared).
    pub deletions_finished: Vec<Step>,
    /// Steps whose delete is still not finished, with the nodes still to confirm it.
    pub deletions_pending: Vec<(Step, Vec<NodeId>)>,
}

impl RepairReport {
    /// Whether every part is back to full redundancy and every pending delete is done.
    pub fn is_complete(&self) -> bool {
        self.parts.iter().all(PartRepair::is_complete) && self.deletions_pending.is_empty()
    }

    /// Shards rewritten in place or moved, over all parts.
    pub fn shards_written(&self) -> u64 {
        self.parts.iter().map(|p| p.rewritten_in_place + p.moved).sum()
    }

    /// Shard bytes read, over all parts.
    pub fn bytes_read(&self) -> u64 {
        self.parts.iter().map(|p| p.bytes_read).sum()
    }
}

/// The shared state of one repair (or rebalance) run: the read pacer and what was read from
/// each node.
pub(crate) struct Reads {
    pacer: Option<Mutex<Pacer>>,
    per_node: Mutex<BTreeMap<NodeId, u64>>,
    move_off_down_nodes: bool,
}

impl Reads {
    pub(crate) fn new(options: RepairOptions) -> Self {
        let pacer = options.read_bytes_per_sec.map(|r| Mutex::new(Pacer::new(r, Instant::now())));
        Self { pacer, per_node: Mutex::default(), move_off_down_nodes: options.move_off_down_nodes }
    }

    /// Waits for the bandwidth limit to allow `len` more bytes from `node`, and counts them.
    async fn admit(&self, node: NodeId, len: usize) {
        *self.per_node.lock().unwrap_or_else(|p| p.into_inner()).entry(node).or_insert(0) +=
            len as u64;
        let due = self
            .pacer
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).reserve(len as u64));
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
    }

    fn read_from(&self, node: NodeId) -> u64 {
        self.per_node.lock().unwrap_or_else(|p| p.into_inner()).get(&node).copied().unwrap_or(0)
    }
}

/// Repairs the parts of `job` in `scope` (see the module doc).
pub(crate) async fn repair(
    ctx: &Arc<Ctx>,
    job: &JobName,
    scope: RepairScope,
    options: RepairOptions,
) -> Result<RepairReport> {
    let listing = catalog::list_job(ctx, job).await?;
    let in_scope = |s: Step| scope == RepairScope::All || scope == RepairScope::Step(s);
    let parts: Vec<((Step, Rank), &PartEntry)> = listing
        .iter()
        .filter(|((s, _), _)| in_scope(*s) && !listing.is_deleting(*s))
        .map(|(k, p)| (*k, p))
        .collect();
    let deleting: Vec<Step> = listing.deleting.keys().copied().filter(|s| in_scope(*s)).collect();
    if parts.is_empty() && deleting.is_empty() {
        if let RepairScope::Step(step) = scope {
            return Err(not_found(job, step));
        }
    }
    let reads = Reads::new(options);
    let mut report = RepairReport::default();
    for step in deleting {
        match catalog::delete(ctx, job, step, catalog::DeleteBy::Rm).await {
            Ok(done) if done.is_complete() => report.deletions_finished.push(step),
            Ok(done) => report.deletions_pending.push((step, done.pending_nodes)),
            // Too few nodes to mark it again: it stays marked where it is, nothing deleted.
            Err(ClientError::DeleteNotMarked { nodes, .. }) => {
                report.deletions_pending.push((step, nodes.0))
            }
            Err(e) => return Err(e),
        }
    }
    for ((step, rank), part) in parts {
        let repaired = match repair_part(ctx, &reads, job, step, rank, part, None).await {
            Ok(r) => r,
            Err(e) => {
                let problem = StripeProblem { object: None, stripe: None, problem: e.to_string() };
                PartRepair { step, rank, problems: vec![problem], ..PartRepair::default() }
            }
        };
        report.parts.push(repaired);
    }
    Ok(report)
}

/// Heal on read: repairs only `stripes` (object, stripe) of one part, which a restore
/// found with missing or corrupt shards. Shards on nodes known down are left alone whatever
/// `options` says (see [`RepairOptions::move_off_down_nodes`]).
pub(crate) async fn heal_stripes(
    ctx: &Arc<Ctx>,
    job: &JobName,
    (step, rank): (Step, Rank),
    stripes: &BTreeSet<(ObjectName, StripeIndex)>,
    options: RepairOptions,
) -> Result<PartRepair> {
    let listing = catalog::list_job(ctx, job).await?;
    let part = listing.get(&(step, rank)).ok_or_else(|| not_found(job, step))?;
    let reads = Reads::new(RepairOptions { move_off_down_nodes: false, ..options });
    repair_part(ctx, &reads, job, step, rank, part, Some(stripes)).await
}

fn not_found(job: &JobName, step: Step) -> ClientError {
    ClientError::ManifestNotFound {
        job: job.clone(),
        asked: crate::manifest::Which::Step(step),
        rank: Rank(0),
        detail: String::new(),
    }
}

/// The stripes of a manifest, as (object index, stripe index).
fn stripes_of(m: &Manifest) -> Vec<(usize, StripeIndex)> {
    m.objects
        .iter()
        .enumerate()
        .flat_map(|(o, obj)| (0..obj.stripes.len()).map(move |s| (o, StripeIndex(s as u32))))
        .collect()
}

fn entry_of(m: &Manifest, object: usize, stripe: StripeIndex) -> &StripeEntry {
    &m.objects[object].stripes[stripe.0 as usize]
}

/// What one stripe's repair (or one rebalance move) did.
#[derive(Debug, Default)]
pub(crate) struct StripeOutcome {
    checked: u64,
    healthy: u64,
    /// Fixes written (the moved ones change the manifest).
    pub(crate) written: Vec<ShardFix>,
    pub(crate) bytes_read: u64,
    pub(crate) bytes_written: u64,
    pub(crate) problem: Option<String>,
}

async fn repair_part(
    ctx: &Arc<Ctx>,
    reads: &Reads,
    job: &JobName,
    step: Step,
    rank: Rank,
    part: &PartEntry,
    only: Option<&BTreeSet<(ObjectName, StripeIndex)>>,
) -> Result<PartRepair> {
    let manifest = catalog::fetch_manifest(ctx, job, step, rank, part).await?;
    let codec = Arc::new(Codec::new(manifest.code.params)?);
    let mut stripes = stripes_of(&manifest);
    if let Some(only) = only {
        stripes.retain(|&(o, s)| only.contains(&(manifest.objects[o].name.clone(), s)));
    }
    let in_flight = REPAIR_SURVEY_STRIPES_IN_FLIGHT.min(ctx.stripes_in_flight()).max(1);
    let outcomes: Vec<((usize, StripeIndex), Result<StripeOutcome>)> = stream::iter(stripes)
        .map(|(o, s)| {
            let (manifest, codec) = (&manifest, codec.clone());
            async move { ((o, s), repair_stripe(ctx, reads, manifest, &codec, o, s).await) }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let mut report = PartRepair { step, rank, ..PartRepair::default() };
    let mut moved: Vec<PlacedFix> = Vec::new();
    for ((o, s), outcome) in outcomes {
        let out = outcome?;
        report.stripes += 1;
        report.shards_checked += out.checked;
        report.shards_healthy += out.healthy;
        report.bytes_read += out.bytes_read;
        report.bytes_written += out.bytes_written;
        for fix in out.written {
            if fix.to == fix.from {
                report.rewritten_in_place += 1;
            } else {
                report.moved += 1;
                moved.push((o, s, fix));
            }
        }
        if let Some(problem) = out.problem {
            let object = Some(manifest.objects[o].name.clone());
            report.problems.push(StripeProblem { object, stripe: Some(s), problem });
        }
    }
    report.problems.sort_by(|a, b| (&a.object, a.stripe).cmp(&(&b.object, b.stripe)));
    failpoint::hit("repair.shards_written");
    let committed = if moved.is_empty() {
        None
    } else {
        Some(commit_moved(ctx, &manifest, part, &moved).await?)
    };
    report.new_revision = committed.as_ref().map(|c| c.revision);
    report.manifest_copies_added = match committed {
        Some(c) => {
            (report.stale_copies_deleted, report.stale_copies_left) =
                (c.stale_deleted, c.stale_left);
            let key = ManifestKey { job: job.clone(), step, rank };
            let copies = (key, part.world_size, c.revision, part.base);
            restore_manifest_copies(ctx, copies, c.bytes, &c.holders).await
        }
        None => ensure_manifest_copies(ctx, &manifest, part).await,
    };
    Ok(report)
}

/// Brings the part's newest manifest revision (`manifest`, as `part` lists it) back to m + 1
/// copies on nodes in service, where it is on fewer (a rewrite killed after its first
/// copies); returns the copies added. Repair and rebalance both call it.
pub(crate) async fn ensure_manifest_copies(
    ctx: &Ctx,
    manifest: &Manifest,
    part: &PartEntry,
) -> usize {
    let key = ManifestKey { job: manifest.job.clone(), step: manifest.step, rank: manifest.rank };
    let copies = (key, part.world_size, part.revision, part.base);
    restore_manifest_copies(ctx, copies, Bytes::from(manifest.to_bytes()), &part.nodes).await
}

/// Carries out `fixes` of one stripe: reads its `sources` (`copy`: the shards being moved
/// themselves; otherwise healthy shards to rebuild from) under the run's read limit and writes
/// each fix's shard to its target. The one way a shard is copied, moved or rebuilt: repair
/// and rebalance both call it. What it read, wrote and could not do goes to `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn carry_out(
    ctx: &Ctx,
    reads: &Reads,
    codec: &Arc<Codec>,
    m: &Manifest,
    (object, stripe): (usize, StripeIndex),
    fixes: &[ShardFix],
    (sources, copy): (&[ShardIndex], bool),
    out: &mut StripeOutcome,
) {
    let id = stripe_id(m, object, stripe);
    let entry = entry_of(m, object, stripe);
    let layout = ObjectLayout::new(m.code.params, m.objects[object].len);
    match rebuild(ctx, reads, codec, &layout, &id, entry, sources, copy).await {
        Ok((shards, bytes_read)) => {
            out.bytes_read += bytes_read;
            write_fixes(ctx, &id, entry, fixes, &shards, out).await;
        }
        Err(problem) => out.problem = Some(problem),
    }
}

/// A part's moves, committed: the new manifest revision, its bytes and the nodes holding it,
/// and the moved shards' old copies deleted and left (their node did not answer).
pub(crate) struct Committed {
    pub(crate) revision: u32,
    bytes: Bytes,
    holders: Vec<NodeId>,
    pub(crate) stale_deleted: u64,
    pub(crate) stale_left: u64,
}

/// Commits the manifest revision naming the `moved` shards' new places on m + 1 nodes in
/// service (or fails, deleting nothing), then deletes their old copies: the one way a part's
/// shards change node (repair and rebalance).
pub(crate) async fn commit_moved(
    ctx: &Ctx,
    manifest: &Manifest,
    part: &PartEntry,
    moved: &[PlacedFix],
) -> Result<Committed> {
    let (revision, bytes, holders) = commit_moves(ctx, manifest, part, moved).await?;
    failpoint::hit("repair.before_stale_delete");
    let (stale_deleted, stale_left) = delete_stale_copies(ctx, manifest, moved).await;
    Ok(Committed { revision, bytes, holders, stale_deleted, stale_left })
}

/// Surveys one stripe, plans it and carries the plan out.
async fn repair_stripe(
    ctx: &Ctx,
    reads: &Reads,
    m: &Manifest,
    codec: &Arc<Codec>,
    object: usize,
    stripe: StripeIndex,
) -> Result<StripeOutcome> {
    let id = stripe_id(m, object, stripe);
    let entry = entry_of(m, object, stripe);
    let states = survey_stripe(ctx, &id, entry).await;
    let mut out = StripeOutcome {
        checked: states.iter().filter(|(_, asked)| *asked).count() as u64,
        healthy: states.iter().filter(|(s, _)| *s == ShardState::Healthy).count() as u64,
        ..StripeOutcome::default()
    };
    let leave_down = !reads.move_off_down_nodes;
    let states: Vec<ShardState> = states
        .into_iter()
        .map(
            |(s, _)| {
                if leave_down && s == ShardState::Unreachable {
                    ShardState::Unknown
                } else {
                    s
                }
            },
        )
        .collect();
    let unknown = states.iter().filter(|s| **s == ShardState::Unknown).count();
    let is_down = |n: NodeId| ctx.health.is_down(n);
    let code = m.code.params;
    match plan::plan_stripe(&ctx.map, &id, code, entry, &states, &is_down) {
        StripePlan::Healthy => {}
        StripePlan::Unsurveyed { unknown } => {
            out.problem = Some(format!(
                "not enough shards known healthy: {unknown} could not be checked (node busy or down); run repair again"
            ));
        }
        StripePlan::Unrecoverable { need, got } => {
            out.problem = Some(format!("unrecoverable: {got} healthy shards, {need} needed"));
        }
        StripePlan::NoRoom { shards } => {
            out.problem =
                Some(format!("{shards} shards need a node but none in service can take them"));
        }
        StripePlan::Fix { fixes, sources, copy, unplaced } => {
            let at = (object, stripe);
            carry_out(ctx, reads, codec, m, at, &fixes, (&sources, copy), &mut out).await;
            if unplaced > 0 && out.problem.is_none() {
                out.problem = Some(format!(
                    "{unplaced} shards need a node but none in service can take them"
                ));
            }
        }
    }
    if unknown > 0 && out.problem.is_none() {
        out.problem = Some(format!(
            "{unknown} shards could not be checked (node busy or down); run repair again"
        ));
    }
    Ok(out)
}

/// The state of every shard of a stripe, and whether a request was sent for it (a node known
/// down is not asked).
async fn survey_stripe(ctx: &Ctx, id: &StripeId, entry: &StripeEntry) -> Vec<(ShardState, bool)> {
    let checks = entry.shards.iter().enumerate().map(|(i, shard)| {
        let key = id.shard(ShardIndex(i as u8));
        async move {
            if ctx.health.is_down(shard.node) {
                return (ShardState::Unreachable, false);
            }
            let state = match ctx.verify_shard(shard.node, key).await {
                Ok((hash, _)) if hash == shard.hash => ShardState::Healthy,
                Ok(_) | Err(ShardFailure::Corrupt) => ShardState::Corrupt,
                Err(ShardFailure::Missing) => ShardState::Missing,
                Err(ShardFailure::NodeDown) => ShardState::Unreachable,
                // The node answered (busy, say): it is up, so its shards stay where they are.
                Err(ShardFailure::Other(_)) => ShardState::Unknown,
            };
            (state, true)
        }
    });
    futures::future::join_all(checks).await
}

/// Reads the sources and returns every shard of the stripe that can be written (`copy`: the
/// sources themselves; otherwise all `k + m`, rebuilt and checked against the manifest), and
/// the bytes read. An error names why nothing can be written.
#[allow(clippy::too_many_arguments)]
async fn rebuild(
    ctx: &Ctx,
    reads: &Reads,
    codec: &Arc<Codec>,
    layout: &ObjectLayout,
    id: &StripeId,
    entry: &StripeEntry,
    sources: &[ShardIndex],
    copy: bool,
) -> std::result::Result<(Vec<Option<Vec<u8>>>, u64), String> {
    let k = usize::from(codec.params().k);
    let want = if copy { sources.len() } else { k };
    let shard_len = layout.shard_len(id.stripe);
    let node_of = |i: ShardIndex| entry.shards[usize::from(i.0)].node;
    let mut remaining: Vec<ShardIndex> = sources.to_vec();
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; entry.shards.len()];
    let (mut got, mut bytes_read) = (0usize, 0u64);
    while got < want && !remaining.is_empty() {
        let picked = plan::pick_sources(&remaining, want - got, &node_of, &|n| reads.read_from(n));
        remaining.retain(|i| !picked.contains(i));
        let fetches = picked.iter().map(|&i| {
            let (node, hash) = (node_of(i), entry.shards[usize::from(i.0)].hash);
            async move {
                reads.admit(node, shard_len).await;
                (i, ctx.get_shard(node, id.shard(i), Some(hash)).await)
            }
        });
        for (i, r) in futures::future::join_all(fetches).await {
            if let Ok(bytes) = r {
                bytes_read += bytes.len() as u64;
                shards[usize::from(i.0)] = Some(bytes);
                got += 1;
            }
        }
    }
    if got < want {
        return Err(format!("read {got} of the {want} healthy shards needed"));
    }
    if copy {
        return Ok((shards, bytes_read));
    }
    let expected: Vec<Digest> = entry.shards.iter().map(|s| s.hash).collect();
    let rebuilt = reencode(ctx, codec, layout, id.stripe, shards, expected).await?;
    Ok((rebuilt.into_iter().map(Some).collect(), bytes_read))
}

/// Decodes the stripe from the shards read and encodes it again on the worker pool; every
/// shard must hash to the manifest's digest.
async fn reencode(
    ctx: &Ctx,
    codec: &Arc<Codec>,
    layout: &ObjectLayout,
    stripe: StripeIndex,
    shards: Vec<Option<Vec<u8>>>,
    expected: Vec<Digest>,
) -> std::result::Result<Vec<Vec<u8>>, String> {
    let _slot = ctx.encode_slots.acquire().await.map_err(|e| e.to_string())?;
    let (codec, layout) = (codec.clone(), *layout);
    let work = move || -> std::result::Result<Vec<Vec<u8>>, String> {
        let data =
            codec.decode_stripe(&layout, stripe, shards, &expected).map_err(|e| e.to_string())?;
        let encoded = codec.encode_stripe(&data).map_err(|e| e.to_string())?;
        if let Some(i) = (0..expected.len()).find(|&i| encoded.hashes[i] != expected[i]) {
            return Err(format!("rebuilt shard {i} does not hash to the manifest's digest"));
        }
        Ok(encoded.shards)
    };
    tokio::task::spawn_blocking(work).await.map_err(|e| e.to_string())?
}

/// Writes one rebuilt shard (of the manifest's digest `hash`) to `node`. A node holding other
/// bytes under the key never replaces them (`Conflict`): that version is one no trusted
/// manifest names (a part's content, every shard's digest included, never changes; say, a
/// crashed earlier save's orphan, or bytes put there by hand), so exactly that version is
/// deleted and the write made again, once.
async fn put_fix(
    ctx: &Ctx,
    node: NodeId,
    key: ShardKey,
    hash: Digest,
    bytes: Bytes,
) -> std::result::Result<(), String> {
    match ctx.put_shard(node, key.clone(), hash, bytes.clone()).await {
        Err(TransportError::Remote { code: ErrorCode::Conflict, message, .. }) => {
            let held = match ctx.verify_shard(node, key.clone()).await {
                Ok((held, _)) if held != hash => held,
                // Someone else (another repair) wrote the right bytes meanwhile.
                Ok(_) => return Ok(()),
                Err(e) => return Err(format!("{message}; its version could not be read: {e:?}")),
            };
            tracing::warn!(%node, shard = ?key, %held, "deleting a version of a shard that its part's manifest does not name, to write the right one");
            ctx.delete_shard(node, key.clone(), held).await.map_err(|e| e.to_string())?;
            ctx.put_shard(node, key, hash, bytes).await.map_err(|e| e.to_string())
        }
        r => r.map_err(|e| e.to_string()),
    }
}

/// Writes each fix's shard to its target; a failed write is a problem of the stripe (the
/// manifest keeps naming the old place for it).
async fn write_fixes(
    ctx: &Ctx,
    id: &StripeId,
    entry: &StripeEntry,
    fixes: &[ShardFix],
    shards: &[Option<Vec<u8>>],
    out: &mut StripeOutcome,
) {
    failpoint::hit("repair.before_put");
    let puts = fixes.iter().map(|fix| {
        let i = usize::from(fix.index.0);
        let bytes = shards[i].clone().map(Bytes::from);
        let hash = entry.shards[i].hash;
        async move {
            let Some(bytes) = bytes else { return (fix, Err("no bytes to write".to_owned())) };
            let len = bytes.len() as u64;
            let r = put_fix(ctx, fix.to, id.shard(fix.index), hash, bytes).await;
            (fix, r.map(|()| len))
        }
    });
    let mut failed = Vec::new();
    for (fix, r) in futures::future::join_all(puts).await {
        match r {
            Ok(len) => {
                out.bytes_written += len;
                out.written.push(*fix);
            }
            Err(e) => failed.push(format!("shard {} to node {}: {e}", fix.index, fix.to)),
        }
    }
    if !failed.is_empty() {
        out.problem = Some(format!("writes failed: {}", failed.join("; ")));
    }
    tracing::debug!(stripe = %id, written = out.written.len(), reasons = ?fixes.iter().map(|f| f.reason).collect::<Vec<FixReason>>(), "stripe repaired");
}

/// Commits the manifest with the moved shards at the next revision, on the current holders
/// and the part's replica set; returns the revision, the bytes and the nodes that took them.
async fn commit_moves(
    ctx: &Ctx,
    old: &Manifest,
    part: &PartEntry,
    moved: &[PlacedFix],
) -> Result<(u32, Bytes, Vec<NodeId>)> {
    let new = plan::with_moves(old, moved);
    let bytes = Bytes::from(new.to_checked_bytes()?);
    let hash = Digest::of(&bytes);
    let revision = part.revision + 1;
    let key = ManifestKey { job: old.job.clone(), step: old.step, rank: old.rank };
    let mut targets = manifest_targets(ctx, &key, usize::from(ctx.map.code.m) + 1);
    for n in &part.nodes {
        if !targets.contains(n) && !ctx.health.is_down(*n) {
            targets.push(*n);
        }
    }
    let puts = targets.iter().map(|&n| {
        let (key, bytes) = (key.clone(), bytes.clone());
        async move {
            let r =
                ctx.replace_manifest(n, key, part.world_size, hash, (revision, part.base), bytes);
            r.await.inspect(|_| failpoint::hit("repair.manifest_stored"))
        }
    });
    let mut stored = Vec::new();
    let mut failures = Vec::new();
    for (n, r) in targets.iter().zip(futures::future::join_all(puts).await) {
        match r {
            Ok(()) => stored.push(*n),
            Err(e) => failures.push((*n, e)),
        }
    }
    let need = usize::from(ctx.map.code.m) + 1;
    let in_service = stored.iter().filter(|&&n| plan::in_service(&ctx.map, n, &|_| false)).count();
    if in_service < need {
        return Err(ClientError::CommitFailed {
            job: key.job,
            step: key.step,
            rank: key.rank,
            need,
            stored: in_service,
            failures: crate::error::NodeErrors(failures),
        });
    }
    Ok((revision, bytes, stored))
}

/// Once the manifest naming the new places is committed: deletes each moved shard's old copy
/// from the node it left (only that version, by its digest), so no node keeps bytes that no
/// manifest points at. A reader still holding the old manifest finds the copy gone and reads
/// parity instead: never wrong bytes. Returns (deleted, left where they were).
async fn delete_stale_copies(ctx: &Ctx, old: &Manifest, moved: &[PlacedFix]) -> (u64, u64) {
    let deletes = moved.iter().filter(|(_, _, f)| !ctx.health.is_down(f.from)).map(|(o, s, f)| {
        let key = stripe_id(old, *o, *s).shard(f.index);
        let hash = entry_of(old, *o, *s).shards[usize::from(f.index.0)].hash;
        async move { ctx.delete_shard(f.from, key, hash).await }
    });
    let results = futures::future::join_all(deletes).await;
    let deleted = results.iter().filter(|r| r.is_ok()).count() as u64;
    let left = moved.len() as u64 - deleted;
    if left > 0 {
        tracing::info!(job = %old.job, step = %old.step, rank = %old.rank, left,
            "old copies of moved shards left on nodes that did not answer; gc of the checkpoint removes them");
    }
    (deleted, left)
}

/// The part's manifest replica set among the nodes in service.
fn manifest_targets(ctx: &Ctx, key: &ManifestKey, copies: usize) -> Vec<NodeId> {
    let unusable = |n: NodeId| !plan::in_service(&ctx.map, n, &|d| ctx.health.is_down(d));
    placement::place_manifest(&ctx.map, &key.job, key.step, key.rank, copies, &unusable)
        .unwrap_or_default()
}

/// Writes the manifest to nodes of its replica set that lack it until m + 1 nodes in service
/// hold it; returns the copies added.
async fn restore_manifest_copies(
    ctx: &Ctx,
    (key, world_size, revision, base): (ManifestKey, u32, u32, Digest),
    bytes: Bytes,
    holders: &[NodeId],
) -> usize {
    let need = usize::from(ctx.map.code.m) + 1;
    let serving = |n: &&NodeId| plan::in_service(&ctx.map, **n, &|d| ctx.health.is_down(d));
    let held = holders.iter().filter(serving).count();
    if held >= need {
        return 0;
    }
    let hash = Digest::of(&bytes);
    let up = ctx.map.nodes.iter().filter(|n| serving(&&n.id)).count();
    let all = manifest_targets(ctx, &key, up);
    let missing: Vec<NodeId> =
        all.into_iter().filter(|n| !holders.contains(n)).take(need - held).collect();
    let puts = missing.iter().map(|&n| {
        let (key, bytes) = (key.clone(), bytes.clone());
        async move { ctx.replace_manifest(n, key, world_size, hash, (revision, base), bytes).await }
    });
    futures::future::join_all(puts).await.into_iter().filter(Result::is_ok).count()
}
