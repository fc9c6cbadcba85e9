//! What checkpoints exist and what state they are in: lists manifests from every reachable
//! node and merges them, settles which version of a part to trust when its holders list
//! different ones (a higher revision counts only when it describes the same content),
//! drives the core's checkpoint choice (completeness, lost-stripe and deletion rules), finds and fetches a part's manifest from any replica, and
//! answers `list`, `resume`, `verify` and `delete`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use rackpoint_proto::failpoint;
use rackpoint_proto::limits::CLIENT_MAX_LISTED_MANIFESTS;
use rackpoint_proto::{
    Digest, ErrorCode, JobName, ManifestKey, NodeId, ObjectName, Rank, ShardIndex, Step,
    StripeIndex,
};

use crate::checkpoint_choice::{self, CheckpointChoice, Chosen, Decision};
use crate::ctx::Ctx;
use crate::deletion;
use crate::error::{ClientError, NodeErrors, NodeList, Result};
pub use crate::error::{PassOverReason, PassedOver};
use crate::listing::{self, Fetched, ListingQuorum, QuorumState};
use crate::manifest::{self, ChainProblem, Manifest, ObjectEntry, StripeEntry, Which};
use crate::planner::ShardFailure;
use crate::redundancy::{self, Survives};
use crate::transport::TransportError;

pub use crate::listing::{JobListing, Listing, PartEntry};

mod absence;
mod presence;

/// Lists a job's parts from every node: a driver over the pure [`ListingQuorum`] (once all
/// but m nodes have answered, the stragglers get one hedging threshold more, then are
/// suspected and left out), then settles the parts whose holders list different versions
/// ([`settle_versions`]). The result also names the steps being deleted (marked on some node
/// that answered) and the nodes that did not answer. An error only when no node answers.
pub(crate) async fn list_job(ctx: &Ctx, job: &JobName) -> Result<JobListing> {
    let ids: Vec<NodeId> = ctx.map.nodes.iter().map(|n| n.id).collect();
    let mut quorum = ListingQuorum::new(ids.clone(), usize::from(ctx.map.code.m));
    let mut pending: FuturesUnordered<_> =
        ids.into_iter().map(|n| async move { (n, list_node(ctx, n, job).await) }).collect();
    let mut errors = Vec::new();
    while let QuorumState::Waiting(until) = quorum.poll(Instant::now()) {
        let next = match until {
            Some(t) => tokio::time::timeout_at(t.into(), pending.next()).await.unwrap_or(None),
            None => pending.next().await,
        };
        let Some((node, result)) = next else {
            if pending.is_empty() {
                break;
            }
            continue;
        };
        match result {
            Ok((entries, marks)) => {
                quorum.on_marks(node, &marks);
                for c in quorum.on_answer(node, entries, Instant::now(), ctx.hedge_after()) {
                    tracing::debug!(node = %c.node, step = %c.step, rank = %c.rank, "node lists another version of this part; the versions will be compared");
                }
            }
            // Every node refuses an identity alike: that is the answer, not an outage.
            Err(e @ TransportError::Remote { code: ErrorCode::PermissionDenied, .. }) => {
                return Err(e.into())
            }
            Err(e) => {
                quorum.on_error(node);
                errors.push((node, e));
            }
        }
    }
    // Still silent after the grace: suspect them (a node that replied with an error has been
    // judged by its call already).
    for n in quorum.silent() {
        ctx.health.mark_down(n);
    }
    if quorum.answered().is_empty() {
        return Err(ClientError::NoNodeAnswered(NodeErrors(errors)));
    }
    let mut listing = quorum.finish();
    listing.parts = settle_versions(ctx, job, std::mem::take(&mut listing.parts)).await;
    Ok(listing)
}

/// For every part whose holders list more than one version (a revision a repair did not
/// bring to every holder, or a manifest that disagrees), fetches one manifest of each
/// version and lets [`listing::settle`] decide which to trust: the entry then names the
/// newest revision of the content a majority of the holders list, or is marked unsettled.
/// A part whose holders all list the same version, the common case, costs no fetch.
async fn settle_versions(ctx: &Ctx, job: &JobName, mut listing: Listing) -> Listing {
    let split: Vec<(Step, Rank)> =
        listing.iter().filter(|(_, p)| !p.others.is_empty()).map(|(k, _)| *k).collect();
    for (step, rank) in split {
        let Some(part) = listing.get(&(step, rank)) else { continue };
        let versions = part.versions();
        let fetches =
            versions.iter().map(|v| fetch_version(ctx, job, (step, rank), v.hash, &v.nodes));
        let fetched: Vec<Fetched> = futures::future::join_all(fetches)
            .await
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        let settled = listing::settle(part, &fetched);
        if let Some(d) = &settled.dispute {
            tracing::warn!(job = %job, step = %step, rank = %rank, settled = d.settled,
                "the part's holders disagree on what it holds: {}", d.detail);
        }
        listing.insert((step, rank), settled);
    }
    listing
}

/// Every manifest entry `node` lists for `job`, across pages, and the steps it holds
/// deletion marks for (every page names them; their union is kept).
async fn list_node(
    ctx: &Ctx,
    node: NodeId,
    job: &JobName,
) -> Result<(Vec<rackpoint_proto::ManifestEntry>, Vec<Step>), TransportError> {
    let mut all = Vec::new();
    let mut marks = BTreeSet::new();
    let mut after = None;
    loop {
        let (entries, more, deleting) = ctx.list_manifests(node, job, after).await?;
        marks.extend(deleting);
        after = entries.last().map(|e| (e.step, e.rank));
        all.extend(entries);
        if !more || after.is_none() {
            return Ok((all, marks.into_iter().collect()));
        }
        if all.len() >= CLIENT_MAX_LISTED_MANIFESTS {
            // Refuse rather than drop the newest entries (pages come oldest first).
            let reason = format!("the job has more than {CLIENT_MAX_LISTED_MANIFESTS} manifests on this node; delete old checkpoints");
            return Err(TransportError::Protocol { node, reason });
        }
    }
}

/// The id of the same rank's newest manifest before `step`, for the chain's `prev`. Refuses
/// a part that is already committed: saving it again would overwrite the shards its manifest
/// points at.
pub(crate) async fn previous_manifest_id(
    ctx: &Ctx,
    job: &JobName,
    step: Step,
    rank: Rank,
) -> Result<Option<Digest>> {
    let listing = list_job(ctx, job).await?;
    if let Some(nodes) = listing.deleting.get(&step) {
        let nodes = NodeList(nodes.clone());
        return Err(ClientError::StepBeingDeleted { job: job.clone(), step, nodes });
    }
    if listing.contains_key(&(step, rank)) {
        return Err(ClientError::AlreadyExists { job: job.clone(), step, rank });
    }
    // A part a repair rewrote answers to its revision 0's id: the chain stays whole.
    Ok(listing.iter().rev().find(|((s, r), _)| *s < step && *r == rank).map(|(_, p)| p.base))
}

/// Reads a part's manifest from the first replica that returns bytes matching its id; a part
/// whose holders disagree with no majority (an unsettled dispute) is `ManifestDisputed`.
pub(crate) async fn fetch_manifest(
    ctx: &Ctx,
    job: &JobName,
    step: Step,
    rank: Rank,
    part: &PartEntry,
) -> Result<Manifest> {
    if let Some(dispute) = part.dispute.as_ref().filter(|d| !d.settled) {
        let detail = dispute.detail.clone();
        return Err(ClientError::ManifestDisputed { job: job.clone(), step, rank, detail });
    }
    fetch_version(ctx, job, (step, rank), part.hash, &part.nodes).await
}

/// Reads the manifest of id `hash` of part `(step, rank)` from the first of `nodes` that
/// returns bytes matching it.
async fn fetch_version(
    ctx: &Ctx,
    job: &JobName,
    (step, rank): (Step, Rank),
    hash: Digest,
    nodes: &[NodeId],
) -> Result<Manifest> {
    let key = ManifestKey { job: job.clone(), step, rank };
    // Ask every replica at once and take the first good answer: a dead replica not yet known
    // down must not cost a timeout.
    let mut replies: FuturesUnordered<_> = nodes
        .iter()
        .map(|&node| {
            let key = key.clone();
            async move { (node, ctx.get_manifest(node, key).await) }
        })
        .collect();
    let mut errors = Vec::new();
    while let Some((node, result)) = replies.next().await {
        match result {
            Ok(bytes) if Digest::of(&bytes) == hash => match Manifest::from_bytes(&bytes) {
                Ok(m) if m.job == *job && m.step == step && m.rank == rank => return Ok(m),
                Ok(_) => errors.push(format!("node {node}: manifest is for another part")),
                Err(e) => errors.push(format!("node {node}: {e}")),
            },
            Ok(_) => errors.push(format!("node {node}: manifest bytes do not match their id")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(ClientError::ManifestNotFound {
        job: job.clone(),
        asked: Which::Step(step),
        rank,
        detail: format!(": {}", errors.join("; ")),
    })
}

/// One checkpoint as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSummary {
    /// The step.
    pub step: Step,
    /// Parts expected.
    pub world_size: u32,
    /// Parts committed.
    pub parts: u32,
    /// All parts committed.
    pub complete: bool,
    /// Object bytes over the parts whose manifests could be read.
    pub bytes: u64,
    /// How many more node failures every part survives, counted from the shards the nodes
    /// list as present (`ListParts`: a node holding fewer of a part's shards than its manifest
    /// places there counts as holding none of them; content is not checked, `verify` does) and
    /// from the manifest's reachable copies; see [`crate::redundancy`]. `None` if it cannot be
    /// restored now: a stripe has fewer than k shards counted present, or a manifest is
    /// unreadable.
    pub survives_more_failures: Option<usize>,
    /// The same in racks.
    pub survives_rack_failures: Option<usize>,
    /// When `survives_more_failures` is `None`, the nodes that do not answer and hold its
    /// shards or manifests: those to bring back.
    pub unavailable_nodes: Vec<NodeId>,
    /// A delete of it has begun and is not finished on every node (a node that answered
    /// holds its deletion mark): never complete, never restored; `rm`, `gc` or `repair`
    /// finishes the delete once `deleting_nodes` answer.
    pub deleting: bool,
    /// When `deleting`: the nodes still to finish it (those that still list a manifest of
    /// it, and those that did not answer the listing); empty otherwise.
    pub deleting_nodes: Vec<NodeId>,
}

/// Every checkpoint of a job, oldest first, and the nodes that did not answer the listing.
/// Dereferences to the checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointList {
    /// The checkpoints, oldest first (steps being deleted among them, with `deleting`).
    pub checkpoints: Vec<CheckpointSummary>,
    /// Nodes of the map that did not answer the listing: checkpoints whose manifests are all
    /// on them are missing from `checkpoints`, and steps whose deletion marks are all on them
    /// may show as not being deleted. Empty when every node answered.
    pub unseen_nodes: Vec<NodeId>,
}

impl std::ops::Deref for CheckpointList {
    type Target = [CheckpointSummary];

    fn deref(&self) -> &[CheckpointSummary] {
        &self.checkpoints
    }
}

impl IntoIterator for CheckpointList {
    type Item = CheckpointSummary;
    type IntoIter = std::vec::IntoIter<CheckpointSummary>;

    fn into_iter(self) -> Self::IntoIter {
        self.checkpoints.into_iter()
    }
}

/// Every checkpoint of a job, oldest first.
pub(crate) async fn list(ctx: &Ctx, job: &JobName) -> Result<CheckpointList> {
    let listing = list_job(ctx, job).await?;
    // Nothing listed while more than m nodes are silent: the job may be on them.
    let nothing = listing.is_empty() && listing.deleting.is_empty();
    if let Some(e) = absence::out_of_reach(ctx, job, Which::Latest).filter(|_| nothing) {
        return Err(e);
    }
    let is_down = |n: &NodeId| ctx.health.is_down(*n);
    // After the manifests: every part listed had all its shards stored before it was.
    let presence = presence::measure(ctx, job).await;
    let silent = |n: &NodeId| !presence.answered(*n);
    let mut out = Vec::new();
    let mut steps = checkpoint_choice::by_step(&listing);
    for step in listing.deleting.keys() {
        steps.entry(*step).or_default();
    }
    for (step, parts) in steps {
        let world_size = checkpoint_choice::world_size(&parts);
        if listing.is_deleting(step) {
            // Half deleted, perhaps: nothing of it is read or counted on.
            out.push(CheckpointSummary {
                step,
                world_size,
                parts: parts.len() as u32,
                complete: false,
                bytes: 0,
                survives_more_failures: None,
                survives_rack_failures: None,
                unavailable_nodes: Vec::new(),
                deleting: true,
                deleting_nodes: deletion::pending_nodes(&listing, step),
            });
            continue;
        }
        let complete = checkpoint_choice::step_is_complete(&parts);
        let unbounded = Survives { nodes: usize::MAX, racks: usize::MAX };
        let (mut bytes, mut survives, mut unavailable_nodes) = (0, Some(unbounded), Vec::new());
        for (rank, part) in &parts {
            match fetch_manifest(ctx, job, step, *rank, part).await {
                Ok(m) => {
                    bytes += m.total_bytes();
                    let holders: Vec<NodeId> =
                        part.nodes.iter().copied().filter(|n| !is_down(n)).collect();
                    let held = |n: NodeId| presence.held(n, (step, *rank));
                    let r = redundancy::part_by_presence(&ctx.map, &m, &holders, &held);
                    survives = Survives::min_opt(survives, r);
                    let shards = m.objects.iter().flat_map(|o| &o.stripes).flat_map(|s| &s.shards);
                    unavailable_nodes.extend(shards.map(|s| s.node).filter(silent));
                }
                Err(_) => {
                    survives = None;
                    unavailable_nodes.extend(part.nodes.iter().copied().filter(is_down));
                }
            }
        }
        unavailable_nodes.sort();
        unavailable_nodes.dedup();
        let survives = survives.filter(|s| *s != unbounded || parts.is_empty());
        let survives_more_failures = survives.map(|s| s.nodes);
        out.push(CheckpointSummary {
            step,
            world_size,
            parts: parts.len() as u32,
            complete,
            bytes,
            unavailable_nodes: if survives_more_failures.is_none() {
                unavailable_nodes
            } else {
                Vec::new()
            },
            survives_more_failures,
            survives_rack_failures: survives.map(|s| s.racks),
            deleting: false,
            deleting_nodes: Vec::new(),
        });
    }
    Ok(CheckpointList { checkpoints: out, unseen_nodes: listing.unseen.clone() })
}

/// A checkpoint to resume from.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    /// Its step.
    pub step: Step,
    /// Its parts' manifests, by rank (`parts[r].rank == r`).
    pub parts: Vec<Manifest>,
    /// The newer checkpoints passed over, newest first, and why.
    pub passed_over: Vec<PassedOver>,
    /// Nodes that did not answer the listing: a newer checkpoint whose manifests are all on
    /// them was not seen. Empty when every node answered.
    pub unseen_nodes: Vec<NodeId>,
}

impl ResumePoint {
    /// The user metadata rank `r` saved.
    pub fn user_meta(&self, rank: Rank) -> Option<&BTreeMap<String, String>> {
        self.parts.get(rank.0 as usize).map(|m| &m.user_meta)
    }
}

/// The newest complete checkpoint whose every stripe can be read with the nodes up, or why
/// there is none (`Unavailable`, `NoSuchJob` or `NoCheckpoint`, naming every checkpoint passed
/// over and why): a driver of the pure [`CheckpointChoice`], which asks for the manifests of
/// the steps it judges, one at a time.
pub(crate) async fn latest(ctx: &Ctx, job: &JobName) -> Result<ResumePoint> {
    let listing = list_job(ctx, job).await?;
    let unseen_nodes = listing.unseen.clone();
    let mut choice = CheckpointChoice::latest(&listing);
    loop {
        match choice.decide() {
            Decision::Read { step, rank, part } => {
                let m = fetch_manifest(ctx, job, step, rank, &part).await;
                let is_down = |n: NodeId| ctx.health.is_down(n);
                choice.on_manifest((step, rank), m.map_err(|e| e.to_string()), &is_down);
            }
            Decision::Restore(Chosen { step, parts, passed_over }) => {
                return Ok(ResumePoint { step, parts, passed_over, unseen_nodes })
            }
            Decision::Nothing(passed_over) => {
                return Err(absence::no_checkpoint(ctx, job, passed_over))
            }
        }
    }
}

/// [`latest`], with "no such job" and "no complete checkpoint" as `None` (logged with the
/// checkpoints passed over); unavailable is an error: the checkpoint may be on nodes down.
pub(crate) async fn resume(ctx: &Ctx, job: &JobName) -> Result<Option<ResumePoint>> {
    match latest(ctx, job).await {
        Ok(point) => Ok(Some(point)),
        Err(ClientError::NoCheckpoint { passed_over, .. }) => {
            if !passed_over.0.is_empty() {
                tracing::info!(job = %job, passed_over = %passed_over, "no checkpoint to resume from");
            }
            Ok(None)
        }
        Err(ClientError::NoSuchJob { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Finds the manifest of `(job, which, rank)`.
pub(crate) async fn find_manifest(
    ctx: &Ctx,
    job: &JobName,
    which: Which,
    rank: Rank,
) -> Result<Manifest> {
    let step = match which {
        Which::Latest => {
            let point = latest(ctx, job).await?;
            let world_size = point.parts.len();
            return point.parts.into_iter().find(|m| m.rank == rank).ok_or_else(|| {
                ClientError::ManifestNotFound {
                    job: job.clone(),
                    asked: which,
                    rank,
                    detail: format!(
                        " (step {} has {world_size} parts; the rank is not below that)",
                        point.step
                    ),
                }
            });
        }
        Which::Step(step) => step,
    };
    let listing = list_job(ctx, job).await?;
    if let Some(nodes) = listing.deleting.get(&step) {
        let nodes = NodeList(nodes.clone());
        return Err(ClientError::StepBeingDeleted { job: job.clone(), step, nodes });
    }
    let part = listing
        .get(&(step, rank))
        .ok_or_else(|| absence::not_listed(ctx, &listing, job, which, rank))?;
    fetch_manifest(ctx, job, step, rank, part).await
}

/// A shard that `verify` found missing, corrupt or unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadShard {
    /// Its part.
    pub rank: Rank,
    /// Its object.
    pub object: ObjectName,
    /// Its stripe.
    pub stripe: StripeIndex,
    /// Its index.
    pub index: ShardIndex,
    /// The node it is on.
    pub node: NodeId,
    /// What is wrong.
    pub why: ShardFailure,
}

/// What `verify` found for one checkpoint.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The step.
    pub step: Step,
    /// Parts expected.
    pub world_size: u32,
    /// Ranks whose manifests were read.
    pub parts_found: Vec<Rank>,
    /// Shards their node re-hashed to the manifest's digest.
    pub shards_ok: u64,
    /// Every other shard.
    pub bad_shards: Vec<BadShard>,
    /// Chain problems per rank (gaps, reorders, tampering, and holders that disagree on what
    /// the part holds: `ChainProblem::Disputed`).
    pub chain_problems: Vec<(Rank, ChainProblem)>,
    /// How many more node failures every part survives, from where the shards found good
    /// are and the manifest's reachable copies (see [`crate::redundancy`]); `None` if a
    /// stripe cannot be read now (lost, or on nodes that do not answer).
    pub survives_more_failures: Option<usize>,
    /// The same in racks (`None` with `survives_more_failures`).
    pub survives_rack_failures: Option<usize>,
    /// Stripes with more than one shard on a node (a save made while fewer than `k + m`
    /// nodes were up): not fully healthy until `repair` spreads them out.
    pub degraded_placement: Vec<DoubledStripe>,
    /// Whether a stripe is known lost: nodes answered that more than m of its shards are
    /// missing or corrupt. (`survives_more_failures` is `None` without this when the shards
    /// short are on nodes that do not answer: unavailable, not lost.)
    pub lost: bool,
}

/// A stripe with more than one shard on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoubledStripe {
    /// Its part.
    pub rank: Rank,
    /// Its object.
    pub object: ObjectName,
    /// Its stripe.
    pub stripe: StripeIndex,
    /// The node holding the most of its shards.
    pub node: NodeId,
    /// How many of its shards that node holds (more than one).
    pub shards: usize,
}

impl std::fmt::Display for DoubledStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} shards of rank {} object {} stripe {} on node {}",
            self.shards, self.rank, self.object, self.stripe, self.node
        )
    }
}

impl VerifyReport {
    /// Whether every part is present, every shard good and on a node of its own, and the
    /// chains clean.
    pub fn is_healthy(&self) -> bool {
        manifest::is_complete(self.world_size, self.parts_found.iter().copied())
            && self.bad_shards.is_empty()
            && self.chain_problems.is_empty()
            && self.degraded_placement.is_empty()
    }

    /// Folds what one stripe or manifest survives into the report's figures.
    fn fold(&mut self, s: Option<Survives>) {
        let now = self.survives_more_failures.zip(self.survives_rack_failures);
        let now = now.map(|(nodes, racks)| Survives { nodes, racks });
        let folded = Survives::min_opt(now, s);
        self.survives_more_failures = folded.map(|s| s.nodes);
        self.survives_rack_failures = folded.map(|s| s.racks);
    }
}

/// Has every shard of a checkpoint re-hashed where it lies (`VerifyShard`: a round trip per
/// shard, no transfer) against the manifest's digest, and checks the manifest chains and
/// that every part's holders agree on its content (a part none of whose versions may be
/// trusted is not read, so not among `parts_found`).
pub(crate) async fn verify(ctx: &Ctx, job: &JobName, step: Step) -> Result<VerifyReport> {
    let listing = list_job(ctx, job).await?;
    let parts: Vec<(Rank, PartEntry)> = listing
        .iter()
        .filter(|((s, _), _)| *s == step)
        .map(|((_, r), p)| (*r, p.clone()))
        .collect();
    if parts.is_empty() {
        return Err(absence::not_listed(ctx, &listing, job, Which::Step(step), Rank(0)));
    }
    let world_size = parts.iter().map(|(_, p)| p.world_size).max().unwrap_or(0);
    let mut report = VerifyReport {
        step,
        world_size,
        parts_found: Vec::new(),
        shards_ok: 0,
        bad_shards: Vec::new(),
        chain_problems: Vec::new(),
        survives_more_failures: Some(usize::from(ctx.map.code.m)),
        survives_rack_failures: Some(usize::from(ctx.map.code.m)),
        degraded_placement: Vec::new(),
        lost: false,
    };
    for (rank, part) in &parts {
        if let Some(dispute) = &part.dispute {
            let detail = dispute.detail.clone();
            report.chain_problems.push((*rank, ChainProblem::Disputed { step, detail }));
        }
        // The rank's chain holds this step's manifest too: read each manifest once.
        let chain = rank_chain(ctx, job, *rank, &listing).await?;
        // Not in the chain: its holders disagree and none may be trusted (reported above).
        let Some(m) = chain.iter().find(|(_, m)| m.step == step).map(|(_, m)| m) else {
            continue;
        };
        report.parts_found.push(*rank);
        let holders: Vec<NodeId> =
            part.nodes.iter().copied().filter(|n| !ctx.health.is_down(*n)).collect();
        report.fold(redundancy::manifest_copies(&ctx.map, &holders));
        verify_part_shards(ctx, m, &mut report).await;
        let bases = listing.values().filter(|p| p.revision > 0).map(|p| (p.hash, p.base)).collect();
        let problems = manifest::verify_chain_with_bases(&chain, &bases);
        report.chain_problems.extend(problems.into_iter().map(|p| (*rank, p)));
    }
    Ok(report)
}

async fn rank_chain(
    ctx: &Ctx,
    job: &JobName,
    rank: Rank,
    listing: &Listing,
) -> Result<Vec<(Digest, Manifest)>> {
    let mut chain = Vec::new();
    // A part none of whose versions may be trusted is left out (the chain shows the gap).
    let readable = |p: &PartEntry| p.dispute.as_ref().is_none_or(|d| d.settled);
    for ((step, r), part) in listing.iter().filter(|((_, r), p)| *r == rank && readable(p)) {
        chain.push((part.hash, fetch_manifest(ctx, job, *step, *r, part).await?));
    }
    Ok(chain)
}

async fn verify_part_shards(ctx: &Ctx, m: &Manifest, report: &mut VerifyReport) {
    for obj in &m.objects {
        for (s, stripe) in obj.stripes.iter().enumerate() {
            verify_stripe(ctx, m, obj, StripeIndex(s as u32), stripe, report).await;
        }
    }
}

/// Reads back every shard of one stripe, checking each hash, into `report`.
async fn verify_stripe(
    ctx: &Ctx,
    m: &Manifest,
    obj: &ObjectEntry,
    s: StripeIndex,
    stripe: &StripeEntry,
    report: &mut VerifyReport,
) {
    let id = m.stripe_id(&obj.name, s);
    let checks = stripe.shards.iter().enumerate().map(|(i, shard)| {
        let key = id.shard(ShardIndex(i as u8));
        async move {
            // A node known down is reported unreachable without costing a timeout per shard.
            if ctx.health.is_down(shard.node) {
                return Err(ShardFailure::NodeDown);
            }
            match ctx.verify_shard(shard.node, key).await? {
                (hash, _) if hash == shard.hash => Ok(()),
                _ => Err(ShardFailure::Corrupt),
            }
        }
    });
    let (mut good, first_bad) = (Vec::new(), report.bad_shards.len());
    for (i, r) in futures::future::join_all(checks).await.into_iter().enumerate() {
        match r {
            Ok(_) => good.push(stripe.shards[i].node),
            Err(why) => report.bad_shards.push(BadShard {
                rank: m.rank,
                object: obj.name.clone(),
                stripe: s,
                index: ShardIndex(i as u8),
                node: stripe.shards[i].node,
                why,
            }),
        }
    }
    report.shards_ok += good.len() as u64;
    let k = usize::from(m.code.params.k);
    let failures = report.bad_shards[first_bad..].iter().map(|b| &b.why);
    report.lost |= crate::planner::known_lost(stripe.shards.len(), k, failures);
    report.fold(redundancy::stripe(&ctx.map, k, &good));
    if let Some((node, shards)) = redundancy::crowded_node(stripe) {
        let (rank, object) = (m.rank, obj.name.clone());
        report.degraded_placement.push(DoubledStripe { rank, object, stripe: s, node, shards });
    }
}

/// What `delete` did.
#[derive(Debug, Clone, Default)]
pub struct DeleteReport {
    /// Shards removed over all nodes.
    pub shards: u64,
    /// Manifests removed over all nodes.
    pub manifests: u64,
    /// Nodes that stored the step's deletion mark before anything was deleted.
    pub marked_on: Vec<NodeId>,
    /// Whether a node held the mark already: an earlier delete of the step was pending.
    pub was_pending: bool,
    /// Nodes of the map that did not confirm the delete (or the clearing of its mark): the
    /// step stays marked as being deleted, never listed as complete nor restored, and a
    /// later `rm`, `gc` or `repair` finishes the delete when they answer. Empty: done.
    pub pending_nodes: Vec<NodeId>,
    /// Each node that failed a request of the delete, and why.
    pub unreachable: Vec<(NodeId, String)>,
}

impl DeleteReport {
    /// Whether the step is gone from every node of the map and its marks are cleared.
    pub fn is_complete(&self) -> bool {
        self.pending_nodes.is_empty()
    }
}

/// Deletes a checkpoint so that the delete cannot half-happen (see `deletion`): marks the
/// step on every node that answers (failing, with nothing deleted, unless m + 1 stored the
/// mark), deletes its key ranges on every node of the map, and clears the marks only when
/// every one of them confirmed.
pub(crate) async fn delete(
    ctx: &Ctx,
    job: &JobName,
    step: Step,
    by: DeleteBy,
) -> Result<DeleteReport> {
    let map: Vec<NodeId> = ctx.map.nodes.iter().map(|n| n.id).collect();
    let mut report = DeleteReport::default();
    let marks = on_every_node(ctx, &map, |n| ctx.deletion_mark(n, job, step, true)).await?;
    let mut acks = Vec::new();
    let mut failures = Vec::new();
    for (node, r) in marks {
        match r {
            Ok(existed) => acks.push((node, existed)),
            Err(e) => {
                report.unreachable.push((node, e.to_string()));
                failures.push((node, e));
            }
        }
    }
    report.marked_on = acks.iter().map(|(n, _)| *n).collect();
    report.was_pending = acks.iter().any(|(_, existed)| *existed);
    let m = usize::from(ctx.map.code.m);
    if !deletion::may_delete(acks.len(), m) {
        // Show the step as it was: take back only the marks this delete made.
        let back = deletion::marks_to_take_back(&acks);
        let _ = on_every_node(ctx, &back, |n| ctx.deletion_mark(n, job, step, false)).await;
        let mut nodes: Vec<NodeId> = failures.iter().map(|(n, _)| *n).collect();
        nodes.sort();
        return Err(ClientError::DeleteNotMarked {
            job: job.clone(),
            step,
            marked: acks.len(),
            need: deletion::marks_needed(m),
            nodes: NodeList(nodes),
            failures: NodeErrors(failures),
        });
    }
    by.marked();
    let deletes = on_every_node(ctx, &map, |n| async move {
        ctx.delete_checkpoint(n, job, step).await.inspect(|_| by.node_deleted())
    })
    .await?;
    let mut confirmed = BTreeSet::new();
    for (node, r) in deletes {
        match r {
            Ok((shards, manifests)) => {
                report.shards += shards;
                report.manifests += manifests;
                confirmed.insert(node);
            }
            Err(TransportError::Remote { code: ErrorCode::NotFound, .. }) => {
                confirmed.insert(node);
            }
            Err(e) => report.unreachable.push((node, e.to_string())),
        }
    }
    report.pending_nodes = deletion::unconfirmed(&map, &confirmed);
    if report.pending_nodes.is_empty() {
        let clears = on_every_node(ctx, &map, |n| ctx.deletion_mark(n, job, step, false)).await?;
        for (node, r) in clears {
            if let Err(e) = r {
                report.unreachable.push((node, e.to_string()));
                report.pending_nodes.push(node);
            }
        }
    }
    Ok(report)
}

/// Which command a delete runs for: its crash points are that command's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeleteBy {
    /// `rm` (and a repair finishing a pending delete).
    Rm,
    /// `gc`.
    Gc,
}

impl DeleteBy {
    /// The step is marked on m + 1 nodes; nothing of it is deleted yet.
    fn marked(self) {
        match self {
            DeleteBy::Rm => failpoint::hit("rm.before_delete"),
            DeleteBy::Gc => failpoint::hit("gc.before_delete"),
        }
    }

    /// One node deleted the step.
    fn node_deleted(self) {
        match self {
            DeleteBy::Rm => failpoint::hit("rm.node_deleted"),
            DeleteBy::Gc => failpoint::hit("gc.node_deleted"),
        }
    }
}

/// Runs `call` on each of `nodes` at once (a node known down is not asked: it fails at once
/// as not answering); a refusal of this identity is the answer for all of them.
async fn on_every_node<T, F, Fut>(
    ctx: &Ctx,
    nodes: &[NodeId],
    call: F,
) -> Result<Vec<(NodeId, std::result::Result<T, TransportError>)>>
where
    F: Fn(NodeId) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, TransportError>>,
{
    let calls = nodes.iter().map(|&n| {
        let down = ctx.health.is_down(n);
        let fut = (!down).then(|| call(n));
        async move {
            match fut {
                Some(f) => (n, f.await),
                None => {
                    let reason = "the node is down (it did not answer this client)".into();
                    (n, Err(TransportError::ConnectionLost { node: n, reason }))
                }
            }
        }
    });
    let results = futures::future::join_all(calls).await;
    for (_, r) in &results {
        if let Err(e @ TransportError::Remote { code: ErrorCode::PermissionDenied, .. }) = r {
            return Err(e.clone().into());
        }
    }
    Ok(results)
}
