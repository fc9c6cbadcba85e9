//! What checkpoints exist and what state they are in: lists manifests from every reachable
//! node and merges them, applies the completeness rule, fetches a part's manifest from any
//! replica, and answers `list`, `resume`, `verify` and `delete`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use rackpoint_proto::limits::{CLIENT_MAX_LISTED_MANIFESTS, MAX_LIST_ENTRIES};
use rackpoint_proto::{
    Digest, ErrorCode, JobName, ManifestKey, NodeId, ObjectName, Rank, Request, Response,
    ShardIndex, Step, StripeIndex,
};

use crate::client::Ctx;
use crate::error::{ClientError, Result};
use crate::manifest::{self, ChainProblem, Manifest};
use crate::planner::ShardFailure;
use crate::transport::TransportError;

/// One part as the nodes list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartEntry {
    /// Parts in its checkpoint.
    pub world_size: u32,
    /// Its manifest id.
    pub hash: Digest,
    /// Nodes that hold that manifest.
    pub nodes: Vec<NodeId>,
}

/// Every part of a job, by (step, rank).
pub type Listing = BTreeMap<(Step, Rank), PartEntry>;

/// Lists a job's parts from every node. Every manifest is on m + 1 nodes, so once all but m
/// nodes have answered every committed part has been seen at least once: the stragglers get
/// one hedging threshold more, then are suspected (marked down) and left out. An error only
/// when no node answers.
pub(crate) async fn list_job(ctx: &Arc<Ctx>, job: &JobName) -> Result<Listing> {
    let total = ctx.map.nodes.len();
    let enough = total.saturating_sub(usize::from(ctx.map.code.m)).max(1);
    let mut pending: FuturesUnordered<_> = ctx
        .map
        .nodes
        .iter()
        .map(|n| async move { (n.id, list_node(ctx, n.id, job).await) })
        .collect();
    let mut listing = Listing::new();
    let (mut answered, mut replied, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        let next = async {
            match grace.as_mut() {
                Some(g) => tokio::select! { r = pending.next() => r, () = g => None },
                None => pending.next().await,
            }
        };
        let Some((node, result)) = next.await else { break };
        replied.push(node);
        match result {
            Ok(entries) => {
                merge(&mut listing, node, entries);
                answered.push(node);
            }
            Err(e) => errors.push(format!("node {node}: {e}")),
        }
        if answered.len() >= enough && grace.is_none() {
            grace = Some(Box::pin(tokio::time::sleep(ctx.hedge_after())));
        }
    }
    // Still silent after the grace: suspect them (a node that replied with an error has been
    // judged by `list_node` already).
    for n in ctx.map.nodes.iter().map(|n| n.id).filter(|n| !replied.contains(n)) {
        ctx.health.mark_down(n);
    }
    if answered.is_empty() {
        return Err(ClientError::NoNodeAnswered(errors.join("; ")));
    }
    Ok(listing)
}

fn merge(listing: &mut Listing, node: NodeId, entries: Vec<rackpoint_proto::ManifestEntry>) {
    for e in entries {
        let part = listing.entry((e.step, e.rank)).or_insert_with(|| PartEntry {
            world_size: e.world_size,
            hash: e.hash,
            nodes: Vec::new(),
        });
        if part.hash == e.hash {
            part.nodes.push(node);
        } else {
            tracing::warn!(node = %node, step = %e.step, rank = %e.rank, "node holds a different manifest for this part; ignoring its copy");
        }
    }
}

async fn list_node(
    ctx: &Arc<Ctx>,
    node: NodeId,
    job: &JobName,
) -> Result<Vec<rackpoint_proto::ManifestEntry>, TransportError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let req = Request::ListManifests { job: job.clone(), after, limit: MAX_LIST_ENTRIES };
        let reply = match ctx.transport.call(node, &req, Bytes::new()).await {
            Ok(r) => r,
            Err(e) => {
                if e.is_node_failure() {
                    ctx.node_failed(node);
                }
                return Err(e);
            }
        };
        ctx.health.mark_up(node);
        let Response::Manifests { entries, more } = reply.response else {
            return Err(TransportError::Protocol {
                node,
                reason: format!("unexpected reply {:?}", reply.response),
            });
        };
        after = entries.last().map(|e| (e.step, e.rank));
        all.extend(entries);
        if !more || after.is_none() {
            return Ok(all);
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
    ctx: &Arc<Ctx>,
    job: &JobName,
    step: Step,
    rank: Rank,
) -> Result<Option<Digest>> {
    let listing = list_job(ctx, job).await?;
    if listing.contains_key(&(step, rank)) {
        return Err(ClientError::AlreadyExists { job: job.clone(), step, rank });
    }
    Ok(listing.iter().rev().find(|((s, r), _)| *s < step && *r == rank).map(|(_, p)| p.hash))
}

/// Reads a part's manifest from the first replica that returns bytes matching its id.
pub(crate) async fn fetch_manifest(
    ctx: &Arc<Ctx>,
    job: &JobName,
    step: Step,
    rank: Rank,
    part: &PartEntry,
) -> Result<Manifest> {
    let key = ManifestKey { job: job.clone(), step, rank };
    let request = Request::GetManifest { key };
    // Ask every replica at once and take the first good answer: a dead replica not yet known
    // down must not cost a timeout.
    let mut replies: FuturesUnordered<_> = part
        .nodes
        .iter()
        .map(|&node| {
            let request = &request;
            async move { (node, ctx.transport.call(node, request, Bytes::new()).await) }
        })
        .collect();
    let mut errors = Vec::new();
    while let Some((node, result)) = replies.next().await {
        match result {
            Ok(reply) if blake3::hash(&reply.payload).as_bytes() == &part.hash.0 => {
                match Manifest::from_bytes(&reply.payload) {
                    Ok(m) if m.job == *job && m.step == step && m.rank == rank => return Ok(m),
                    Ok(_) => errors.push(format!("node {node}: manifest is for another part")),
                    Err(e) => errors.push(format!("node {node}: {e}")),
                }
            }
            Ok(_) => errors.push(format!("node {node}: manifest bytes do not match their id")),
            Err(e) => {
                if e.is_node_failure() {
                    ctx.node_failed(node);
                }
                errors.push(format!("node {node}: {e}"));
            }
        }
    }
    Err(ClientError::ManifestNotFound {
        job: job.clone(),
        step,
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
    /// How many more node failures every stripe survives, given the nodes down now; `None`
    /// if some stripe is already unrecoverable or a manifest is unreadable.
    pub survives_more_failures: Option<usize>,
}

/// Every checkpoint of a job, oldest first.
pub(crate) async fn list(ctx: &Arc<Ctx>, job: &JobName) -> Result<Vec<CheckpointSummary>> {
    let listing = list_job(ctx, job).await?;
    let mut out = Vec::new();
    for (step, parts) in by_step(&listing) {
        let world_size = parts.iter().map(|(_, p)| p.world_size).max().unwrap_or(0);
        let complete = manifest::is_complete(world_size, parts.iter().map(|(r, _)| *r));
        let (mut bytes, mut survives) = (0, Some(usize::MAX));
        for (rank, part) in &parts {
            match fetch_manifest(ctx, job, step, *rank, part).await {
                Ok(m) => {
                    bytes += m.total_bytes();
                    let r = m.remaining_redundancy(&|n| ctx.health.is_down(n));
                    survives = survives.zip(r).map(|(a, b)| a.min(b));
                }
                Err(_) => survives = None,
            }
        }
        let survives_more_failures = survives.filter(|s| *s != usize::MAX || parts.is_empty());
        out.push(CheckpointSummary {
            step,
            world_size,
            parts: parts.len() as u32,
            complete,
            bytes,
            survives_more_failures,
        });
    }
    Ok(out)
}

fn by_step(listing: &Listing) -> BTreeMap<Step, Vec<(Rank, PartEntry)>> {
    let mut steps: BTreeMap<Step, Vec<(Rank, PartEntry)>> = BTreeMap::new();
    for ((step, rank), part) in listing {
        steps.entry(*step).or_default().push((*rank, part.clone()));
    }
    steps
}

/// A checkpoint to resume from.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    /// Its step.
    pub step: Step,
    /// Its parts' manifests, by rank (`parts[r].rank == r`).
    pub parts: Vec<Manifest>,
}

impl ResumePoint {
    /// The user metadata rank `r` saved.
    pub fn user_meta(&self, rank: Rank) -> Option<&BTreeMap<String, String>> {
        self.parts.get(rank.0 as usize).map(|m| &m.user_meta)
    }
}

/// The newest complete checkpoint whose every stripe is still recoverable.
pub(crate) async fn resume(ctx: &Arc<Ctx>, job: &JobName) -> Result<Option<ResumePoint>> {
    let listing = list_job(ctx, job).await?;
    let mut passed_over = Vec::new();
    for (step, parts) in by_step(&listing).into_iter().rev() {
        let world_size = parts.iter().map(|(_, p)| p.world_size).max().unwrap_or(0);
        if !manifest::is_complete(world_size, parts.iter().map(|(r, _)| *r)) {
            passed_over.push(format!("step {step}: {} of {world_size} parts", parts.len()));
            continue;
        }
        match recoverable_parts(ctx, job, step, &parts).await {
            Ok(manifests) => return Ok(Some(ResumePoint { step, parts: manifests })),
            Err(why) => passed_over.push(format!("step {step}: {why}")),
        }
    }
    if !passed_over.is_empty() {
        tracing::info!(job = %job, passed_over = %passed_over.join("; "), "resume passed over newer checkpoints");
    }
    Ok(None)
}

async fn recoverable_parts(
    ctx: &Arc<Ctx>,
    job: &JobName,
    step: Step,
    parts: &[(Rank, PartEntry)],
) -> Result<Vec<Manifest>, String> {
    let mut manifests = Vec::with_capacity(parts.len());
    for (rank, part) in parts {
        let m = fetch_manifest(ctx, job, step, *rank, part).await.map_err(|e| e.to_string())?;
        if m.remaining_redundancy(&|n| ctx.health.is_down(n)).is_none() {
            return Err(format!("rank {rank} has a stripe with more than m shards on down nodes"));
        }
        manifests.push(m);
    }
    Ok(manifests)
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
    /// Shards read back with the right hash.
    pub shards_ok: u64,
    /// Every other shard.
    pub bad_shards: Vec<BadShard>,
    /// Chain problems per rank (gaps, reorders, tampering).
    pub chain_problems: Vec<(Rank, ChainProblem)>,
    /// How many more shard losses the weakest stripe survives; `None` if one is lost.
    pub survives_more_failures: Option<usize>,
}

impl VerifyReport {
    /// Whether every part is present, every shard good and the chains clean.
    pub fn is_healthy(&self) -> bool {
        manifest::is_complete(self.world_size, self.parts_found.iter().copied())
            && self.bad_shards.is_empty()
            && self.chain_problems.is_empty()
    }
}

/// Reads back every shard of a checkpoint, checks every hash, and the manifest chains.
pub(crate) async fn verify(ctx: &Arc<Ctx>, job: &JobName, step: Step) -> Result<VerifyReport> {
    let listing = list_job(ctx, job).await?;
    let parts: Vec<(Rank, PartEntry)> = listing
        .iter()
        .filter(|((s, _), _)| *s == step)
        .map(|((_, r), p)| (*r, p.clone()))
        .collect();
    if parts.is_empty() {
        return Err(ClientError::ManifestNotFound {
            job: job.clone(),
            step,
            rank: Rank(0),
            detail: String::new(),
        });
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
    };
    for (rank, _) in &parts {
        // The rank's chain holds this step's manifest too: read each manifest once.
        let chain = rank_chain(ctx, job, *rank, &listing).await?;
        let m = chain
            .iter()
            .find(|m| m.step == step)
            .expect("the chain is read from the listing that holds this part");
        report.parts_found.push(*rank);
        verify_part_shards(ctx, m, &mut report).await;
        report
            .chain_problems
            .extend(manifest::verify_chain(&chain).into_iter().map(|p| (*rank, p)));
    }
    Ok(report)
}

async fn rank_chain(
    ctx: &Arc<Ctx>,
    job: &JobName,
    rank: Rank,
    listing: &Listing,
) -> Result<Vec<Manifest>> {
    let mut chain = Vec::new();
    for ((step, r), part) in listing.iter().filter(|((_, r), _)| *r == rank) {
        chain.push(fetch_manifest(ctx, job, *step, *r, part).await?);
    }
    Ok(chain)
}

async fn verify_part_shards(ctx: &Arc<Ctx>, m: &Manifest, report: &mut VerifyReport) {
    let k = usize::from(m.code.params.k);
    for obj in &m.objects {
        for (s, stripe) in obj.stripes.iter().enumerate() {
            let stripe_index = StripeIndex(s as u32);
            let checks = stripe.shards.iter().enumerate().map(|(i, shard)| {
                let key = rackpoint_proto::ShardKey {
                    job: m.job.clone(),
                    step: m.step,
                    rank: m.rank,
                    object: obj.name.clone(),
                    stripe: stripe_index,
                    index: ShardIndex(i as u8),
                };
                async move {
                    // A node known down is reported unreachable without costing a timeout per shard.
                    if ctx.health.is_down(shard.node) {
                        return Err(ShardFailure::NodeDown);
                    }
                    crate::restore::get_shard(ctx, key, shard.node, shard.hash).await
                }
            });
            let results = futures::future::join_all(checks).await;
            let mut good: usize = 0;
            for (i, r) in results.into_iter().enumerate() {
                match r {
                    Ok(_) => good += 1,
                    Err(why) => report.bad_shards.push(BadShard {
                        rank: m.rank,
                        object: obj.name.clone(),
                        stripe: stripe_index,
                        index: ShardIndex(i as u8),
                        node: stripe.shards[i].node,
                        why,
                    }),
                }
            }
            report.shards_ok += good as u64;
            let left = good.checked_sub(k);
            report.survives_more_failures =
                report.survives_more_failures.zip(left).map(|(a, b)| a.min(b));
        }
    }
}

/// What `delete` did.
#[derive(Debug, Clone, Default)]
pub struct DeleteReport {
    /// Shards removed over all nodes.
    pub shards: u64,
    /// Manifests removed over all nodes.
    pub manifests: u64,
    /// Nodes that could not be reached (they keep their copies until a later delete or GC).
    pub unreachable: Vec<(NodeId, String)>,
}

/// Deletes a checkpoint from every node.
pub(crate) async fn delete(ctx: &Arc<Ctx>, job: &JobName, step: Step) -> Result<DeleteReport> {
    let req = Request::DeleteCheckpoint { job: job.clone(), step };
    let calls = ctx.map.nodes.iter().map(|n| ctx.transport.call(n.id, &req, Bytes::new()));
    let mut report = DeleteReport::default();
    for (node, r) in ctx.map.nodes.iter().map(|n| n.id).zip(futures::future::join_all(calls).await)
    {
        match r.map(|reply| reply.response) {
            Ok(Response::CheckpointDeleted { shards, manifests }) => {
                report.shards += shards;
                report.manifests += manifests;
            }
            Ok(other) => report.unreachable.push((node, format!("unexpected reply {other:?}"))),
            Err(TransportError::Remote { code: ErrorCode::NotFound, .. }) => {}
            Err(e) => report.unreachable.push((node, e.to_string())),
        }
    }
    Ok(report)
}
