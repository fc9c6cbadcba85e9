//! Retention and garbage collection. [`gc`] keeps the newest `keep` complete checkpoints of a
//! job (the core's `retention` rule) and deletes every older step the way `rm` does (`catalog::delete`: a deletion mark on
//! m + 1 nodes first, so from then on no listing shows the step as complete, then its shards
//! and manifests by checkpoint range on every node, which returns their disk space, then the
//! marks once every node confirmed). It first finishes the deletes left pending (steps still
//! marked), and it deletes nothing new while a node of the map did not answer its listing
//! (a step it would delete may have manifests there), unless forced: then what the nodes
//! down hold is deleted when they return. It also removes orphans: parts that have
//! shards on some node but no manifest on any, once their newest shard is older than the
//! grace period by the node's own clock (before that a save may still be writing them).
//! Orphans are only judged on a listing that all but m nodes answered (every committed
//! manifest lies on m + 1 nodes, so such a listing sees every committed part), and a node
//! that holds a manifest of the part refuses the sweep.

use std::collections::BTreeSet;

use futures::future::join_all;
use rackpoint_proto::failpoint;
use rackpoint_proto::limits::DEFAULT_ORPHAN_GRACE_MS;
use rackpoint_proto::{JobName, ManifestKey, NodeId, PartShards, Rank, Step};

use crate::catalog;
use crate::ctx::Ctx;
use crate::deletion::{self, GcGate};
use crate::error::{ClientError, NodeList, Result};
use crate::retention::{self, Retention};
use crate::strays;
use crate::transport::TransportError;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcOptions {
    /// Complete checkpoints to keep (the newest ones). 0 keeps every checkpoint and only
    /// collects orphans.
    pub keep: usize,
    /// Orphan shards younger than this (by the node's clock) are kept.
    pub orphan_grace_ms: u64,
    /// Delete even while nodes of the map do not answer the listing (they may hold
    /// manifests of the steps deleted, or of newer ones): each step is marked first, and its
    /// delete finishes when they return (a later `gc`, `rm` or `repair`). Without it such a
    /// collection deletes nothing and fails with `GcRefused`.
    pub force: bool,
}

impl GcOptions {
    /// Keep the newest `keep` complete checkpoints, with the default orphan grace, not forced.
    pub fn keep(keep: usize) -> Self {
        Self { keep, orphan_grace_ms: DEFAULT_ORPHAN_GRACE_MS, force: false }
    }
}

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The complete checkpoints kept by the retention rule, oldest first.
    pub kept: Vec<Step>,
    /// Steps deleted, oldest first.
    pub deleted_steps: Vec<Step>,
    /// Shards removed with them, over all nodes.
    pub shards_deleted: u64,
    /// Manifests removed with them, over all nodes.
    pub manifests_deleted: u64,
    /// Orphan parts swept (on at least one node).
    pub orphan_parts: Vec<(Step, Rank)>,
    /// Orphan shards removed, over all nodes.
    pub orphan_shards_deleted: u64,
    /// Their bytes.
    pub orphan_bytes_deleted: u64,
    /// Orphan shards kept because they are younger than the grace period.
    pub orphan_shards_young: u64,
    /// Stray copies removed: shards of committed parts on nodes their manifests do not name.
    pub stray_shards_deleted: u64,
    /// Whether orphans were judged (false when too many nodes did not answer).
    pub orphans_checked: bool,
    /// Nodes that could not be reached or refused, and why (they keep their copies until a
    /// later collection).
    pub node_errors: Vec<(NodeId, String)>,
    /// Deletes left pending by an earlier `rm` or `gc` (steps still marked) that this one
    /// finished, oldest first.
    pub finished_pending: Vec<Step>,
    /// Steps whose delete is not finished on every node (they stay marked as being deleted,
    /// never listed as complete nor restored), with the nodes still to confirm it: a later
    /// `gc`, `rm` or `repair` finishes it once they answer. Empty: every delete is done.
    pub pending: Vec<(Step, Vec<NodeId>)>,
}

impl GcReport {
    /// Whether every delete this collection began or resumed is done on every node.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty()
    }
}

/// `keep_last` after a committed save: rank 0 applies retention (no orphan sweep) with
/// `keep` (0: off). Failures are logged; the save stands.
pub(crate) async fn after_save(ctx: &Ctx, job: &JobName, rank: Rank, keep: usize) {
    if keep == 0 || rank != Rank(0) {
        return;
    }
    let options = GcOptions { keep, orphan_grace_ms: u64::MAX, force: false };
    match gc_parts(ctx, job, options, false).await {
        Ok(r) if r.node_errors.is_empty() => {}
        Ok(r) => tracing::warn!(%job, errors = ?r.node_errors, "retention after save left copies"),
        Err(e) => tracing::warn!(%job, "retention after save failed: {e}"),
    }
}

/// Runs retention and orphan collection on `job` (see the module doc).
pub(crate) async fn gc(ctx: &Ctx, job: &JobName, options: GcOptions) -> Result<GcReport> {
    gc_parts(ctx, job, options, true).await
}

/// Retention, then (with `orphans`) orphan collection.
async fn gc_parts(ctx: &Ctx, job: &JobName, options: GcOptions, orphans: bool) -> Result<GcReport> {
    let listing = catalog::list_job(ctx, job).await?;
    // A step being deleted is never a complete checkpoint to keep, nor one to delete anew.
    let Retention { kept, deleted } = retention::plan(&listing, options.keep);
    if let GcGate::Refuse { unseen } = deletion::gc_gate(&deleted, &listing.unseen, options.force) {
        return Err(ClientError::GcRefused {
            job: job.clone(),
            nodes: NodeList(unseen),
            steps: deleted,
        });
    }
    let mut report = GcReport { kept, ..GcReport::default() };
    for step in listing.deleting.keys().copied() {
        if delete_step(ctx, job, step, &mut report).await? {
            report.finished_pending.push(step);
        }
    }
    for step in deleted {
        delete_step(ctx, job, step, &mut report).await?;
        report.deleted_steps.push(step);
    }
    if orphans {
        collect_orphans(ctx, job, options.orphan_grace_ms, &mut report).await?;
    }
    report.node_errors.sort_by_key(|(n, _)| *n);
    report.node_errors.dedup();
    Ok(report)
}

/// Deletes one step as `rm` does (marks, key ranges on every node, then the marks cleared
/// once every node confirmed); true when it is done everywhere, else the step is recorded
/// as pending. An error when the mark could not be stored on m + 1 nodes (nothing of the
/// step was deleted) or the nodes refuse this identity.
async fn delete_step(ctx: &Ctx, job: &JobName, step: Step, report: &mut GcReport) -> Result<bool> {
    let r = catalog::delete(ctx, job, step, catalog::DeleteBy::Gc).await?;
    report.shards_deleted += r.shards;
    report.manifests_deleted += r.manifests;
    report.node_errors.extend(r.unreachable);
    if !r.pending_nodes.is_empty() {
        report.pending.push((step, r.pending_nodes));
        return Ok(false);
    }
    Ok(true)
}

/// Every part summary one node lists for `job`, across pages.
async fn node_parts(
    ctx: &Ctx,
    node: NodeId,
    job: &JobName,
) -> std::result::Result<Vec<PartShards>, TransportError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (entries, more) = ctx.list_parts(node, job, after).await?;
        after = entries.last().map(|p| (p.step, p.rank));
        all.extend(entries);
        if !more || after.is_none() {
            return Ok(all);
        }
    }
}

/// Sweeps the orphan parts of `job` on every node, judged on a fresh listing of manifests
/// and part summaries from all but at most m nodes.
async fn collect_orphans(
    ctx: &Ctx,
    job: &JobName,
    grace_ms: u64,
    report: &mut GcReport,
) -> Result<()> {
    let summaries = join_all(
        ctx.map.nodes.iter().map(|n| async move { (n.id, node_parts(ctx, n.id, job).await) }),
    )
    .await;
    // The manifests are listed after the parts: a part committed in between is seen.
    let listing = catalog::list_job(ctx, job).await?;
    let answered = summaries.iter().filter(|(_, r)| r.is_ok()).count();
    let enough = ctx.map.nodes.len().saturating_sub(usize::from(ctx.map.code.m)).max(1);
    if answered < enough {
        for (n, r) in &summaries {
            if let Err(e) = r {
                report.node_errors.push((*n, e.to_string()));
            }
        }
        return Ok(());
    }
    report.orphans_checked = true;
    report.stray_shards_deleted =
        strays::sweep(ctx, job, &summaries, &listing, grace_ms, &mut report.node_errors).await;
    let mut swept: BTreeSet<(Step, Rank)> = BTreeSet::new();
    let mut sweeps = Vec::new();
    for (node, parts) in summaries {
        let Ok(parts) = parts else { continue };
        for p in parts {
            let committed = listing.contains_key(&(p.step, p.rank));
            if committed || report.deleted_steps.contains(&p.step) {
                continue;
            }
            if p.newest_age_ms < grace_ms {
                report.orphan_shards_young += p.shards;
                continue;
            }
            let key = ManifestKey { job: job.clone(), step: p.step, rank: p.rank };
            sweeps.push((node, key));
        }
    }
    let calls = sweeps.into_iter().map(|(node, key)| async move {
        let r = ctx.delete_orphan_shards(node, key.clone(), grace_ms).await;
        if matches!(r, Ok((shards, _, _)) if shards > 0) {
            failpoint::hit("gc.orphan_swept");
        }
        (node, key, r)
    });
    for (node, key, r) in join_all(calls).await {
        match r {
            Ok((shards, bytes, young)) => {
                report.orphan_shards_deleted += shards;
                report.orphan_bytes_deleted += bytes;
                report.orphan_shards_young += young;
                if shards > 0 {
                    swept.insert((key.step, key.rank));
                }
            }
            Err(e) => report.node_errors.push((node, e.to_string())),
        }
    }
    report.orphan_parts = swept.into_iter().collect();
    Ok(())
}
