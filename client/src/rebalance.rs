//! Rebalance: move stored shards onto the placement the current map gives (say, onto nodes
//! just added), a bounded number at a time under a byte-rate limit. The decision is the
//! core's `rebalance` planner (re-exported here under the same path); this module carries
//! it out, one checkpoint at a time, with repair's one path for moving a shard:
//!
//! 1. list the job's parts (steps being deleted are left alone) and read each checkpoint's
//!    manifests (the highest revision);
//! 2. plan (at most the moves left in the run's budget; the rest is reported as deferred);
//! 3. before the first move of a job, ask one node an admin-only question that changes
//!    nothing (`DeleteShard` of a version no shard has: the all-zero digest): moving another
//!    job's shards and rewriting its manifest are admin work, so a credential without it is
//!    refused here, before anything is copied;
//! 4. per part: copy each shard (`repair::carry_out`: read from its node with the digest
//!    checked on arrival, paced by the run's `Pacer`; written to its target, where the node
//!    hashes it again), at most `moves_in_flight` at once; a shard that cannot be read is
//!    skipped and reported (rebuilding it is repair's job), and so is a failed write;
//! 5. `repair::commit_moved`: the next manifest revision naming the new places is stored on
//!    m + 1 nodes in service, and only then are the old copies deleted; a part with nothing
//!    to move whose newest revision is on fewer than m + 1 nodes in service (a run killed
//!    mid-commit) gets its copies back (`repair::ensure_manifest_copies`).
//!
//! A crash anywhere leaves every checkpoint restorable: until the new revision is committed
//! the old manifest names shards that are all still where it says (the copies are extra);
//! after it, the new one names copies that were written before it. A killed run leaves at
//! most extra copies (a target's copy no manifest names, or a source's old copy), which
//! `gc` collects (`strays`, orphan sweep), and running again finishes the moves.

pub use rackpoint_core::rebalance::*;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use rackpoint_proto::limits::{
    REBALANCE_DEFAULT_BYTES_PER_SEC, REBALANCE_DEFAULT_MOVES_IN_FLIGHT, REBALANCE_MAX_MOVES,
    REBALANCE_MAX_MOVES_IN_FLIGHT, REBALANCE_MAX_SKIPS_LISTED,
};
use rackpoint_proto::{
    Digest, ErrorCode, JobName, NodeId, ObjectName, Rank, ShardIndex, Step, StripeIndex,
};

use crate::catalog::{self, PartEntry};
use crate::codec::Codec;
use crate::ctx::Ctx;
use crate::error::{ClientError, Result};
use crate::manifest::Manifest;
use crate::repair::{self, Reads, RepairOptions, StripeOutcome};
use crate::repair_plan::{stripe_id, PlacedFix};
use crate::transport::TransportError;

/// A digest no shard has (the probe of step 3 in the module doc deletes nothing with it).
const NO_SHARD_DIGEST: Digest = Digest([0; 32]);

/// Which jobs to rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceScope {
    /// Every checkpoint of one job.
    Job(JobName),
    /// Every checkpoint of every job the identity may list.
    All,
}

/// How to rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebalanceOptions {
    /// Shard bytes per second read (and so written), over all nodes (`None`: no limit).
    pub bytes_per_sec: Option<u64>,
    /// Most moves this run makes (capped by `REBALANCE_MAX_MOVES`).
    pub max_moves: usize,
    /// Moves in flight at once (1 to `REBALANCE_MAX_MOVES_IN_FLIGHT`).
    pub moves_in_flight: usize,
    /// Plan only: report what would move, move nothing.
    pub dry_run: bool,
}

impl Default for RebalanceOptions {
    fn default() -> Self {
        Self {
            bytes_per_sec: Some(REBALANCE_DEFAULT_BYTES_PER_SEC),
            max_moves: REBALANCE_MAX_MOVES,
            moves_in_flight: REBALANCE_DEFAULT_MOVES_IN_FLIGHT,
            dry_run: false,
        }
    }
}

/// Why a shard was left where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipWhy {
    /// The planner left it (see [`SkipReason`]).
    Planned(SkipReason),
    /// Its copy could not be read (node down, shard missing or corrupt): repair's job.
    Unreadable(String),
    /// Its target refused the write or did not answer.
    WriteFailed(String),
    /// It was copied but the manifest naming its new place could not be committed (the copy
    /// is an extra one that `gc` collects).
    CommitFailed(String),
    /// The part's manifest could not be read, so nothing of it was planned.
    ManifestUnreadable(String),
}

impl SkipWhy {
    /// A short name of the kind, for counts and JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            SkipWhy::Planned(SkipReason::SourceDown) => "source_down",
            SkipWhy::Planned(SkipReason::TargetDown) => "target_down",
            SkipWhy::Planned(SkipReason::RackFull) => "rack_full",
            SkipWhy::Planned(SkipReason::NoPlacement) => "no_placement",
            SkipWhy::Unreadable(_) => "unreadable",
            SkipWhy::WriteFailed(_) => "write_failed",
            SkipWhy::CommitFailed(_) => "commit_failed",
            SkipWhy::ManifestUnreadable(_) => "manifest_unreadable",
        }
    }

    /// Whether the shard waits for a node to come back (rather than for an operator).
    pub fn waits_for_a_node(&self) -> bool {
        match self {
            SkipWhy::Planned(r) => r.waits_for_a_node(),
            SkipWhy::Unreadable(_) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for SkipWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipWhy::Planned(r) => write!(f, "{r}"),
            SkipWhy::Unreadable(e) => write!(f, "cannot be read ({e}); repair rebuilds it"),
            SkipWhy::WriteFailed(e) => write!(f, "the write to its new node failed: {e}"),
            SkipWhy::CommitFailed(e) => write!(f, "its part's new manifest was not committed: {e}"),
            SkipWhy::ManifestUnreadable(e) => write!(f, "the part's manifest cannot be read: {e}"),
        }
    }
}

/// A shard (or a whole stripe or part, where those are `None`) left where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The job.
    pub job: JobName,
    /// The step.
    pub step: Step,
    /// The rank.
    pub rank: Rank,
    /// The object.
    pub object: Option<ObjectName>,
    /// The stripe.
    pub stripe: Option<StripeIndex>,
    /// The shard.
    pub shard: Option<ShardIndex>,
    /// The node it is on.
    pub node: Option<NodeId>,
    /// Why it stays.
    pub why: SkipWhy,
}

/// What a rebalance did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebalanceReport {
    /// The jobs looked at.
    pub jobs: Vec<JobName>,
    /// Parts whose manifest was planned over.
    pub parts: u64,
    /// Parts given a new manifest revision.
    pub parts_rewritten: u64,
    /// Moves planned (within the bound).
    pub planned: u64,
    /// Shards moved (copied, committed in a new manifest revision).
    pub moved: u64,
    /// Shard bytes copied for the moves committed.
    pub bytes_moved: u64,
    /// Moves committed (planned, in a dry run) per (from, to) node.
    pub flows: BTreeMap<(NodeId, NodeId), u64>,
    /// Old copies deleted from the nodes the shards left.
    pub stale_copies_deleted: u64,
    /// Old copies left because their node did not answer (`gc` collects them).
    pub stale_copies_left: u64,
    /// Manifest copies written to parts whose newest revision was on fewer than m + 1 nodes
    /// in service (a rewrite killed after its first copies).
    pub manifest_copies_added: u64,
    /// Moves past `max_moves`, left for the next run.
    pub deferred: u64,
    /// Shards left where they are, by [`SkipWhy::kind`].
    pub skipped: BTreeMap<&'static str, u64>,
    /// The first `REBALANCE_MAX_SKIPS_LISTED` of them.
    pub skips: Vec<Skip>,
    /// Nodes that did not answer the job listing (with `All`).
    pub unseen_nodes: Vec<NodeId>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

impl RebalanceReport {
    /// Shards left where they are, over every reason.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Whether everything planned was moved and nothing was skipped.
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty() && self.unseen_nodes.is_empty()
    }

    /// Whether every skip waits for a node to come back.
    pub fn only_waits_for_nodes(&self) -> bool {
        self.skips.iter().all(|s| s.why.waits_for_a_node())
    }

    fn skip(&mut self, skip: Skip) {
        *self.skipped.entry(skip.why.kind()).or_insert(0) += 1;
        if self.skips.len() < REBALANCE_MAX_SKIPS_LISTED {
            self.skips.push(skip);
        }
    }
}

/// Rebalances the jobs of `scope` (see the module doc).
pub(crate) async fn rebalance(
    ctx: &Arc<Ctx>,
    scope: RebalanceScope,
    options: RebalanceOptions,
) -> Result<RebalanceReport> {
    let mut report = RebalanceReport { dry_run: options.dry_run, ..RebalanceReport::default() };
    let jobs = match scope {
        RebalanceScope::Job(job) => vec![job],
        RebalanceScope::All => {
            let listed = crate::jobs::jobs(ctx).await?;
            report.unseen_nodes = listed.unseen();
            listed.jobs.into_iter().map(|j| j.job).collect()
        }
    };
    let reads = Reads::new(RepairOptions {
        read_bytes_per_sec: options.bytes_per_sec,
        move_off_down_nodes: false,
    });
    let budget = options.max_moves.min(REBALANCE_MAX_MOVES);
    let mut run = Run { ctx, reads, options, budget, report };
    for job in jobs {
        run.job(&job).await?;
        run.report.jobs.push(job);
    }
    Ok(run.report)
}

/// One run's state: its pacer, what is left of its budget, its report.
struct Run<'a> {
    ctx: &'a Ctx,
    reads: Reads,
    options: RebalanceOptions,
    budget: usize,
    report: RebalanceReport,
}

impl Run<'_> {
    async fn job(&mut self, job: &JobName) -> Result<()> {
        let listing = catalog::list_job(self.ctx, job).await?;
        let mut steps: BTreeMap<Step, Vec<(Rank, &PartEntry)>> = BTreeMap::new();
        for (&(step, rank), part) in listing.iter().filter(|((s, _), _)| !listing.is_deleting(*s)) {
            steps.entry(step).or_default().push((rank, part));
        }
        let mut admin_checked = false;
        for (step, parts) in steps {
            let mut manifests = Vec::with_capacity(parts.len());
            let mut entries = Vec::with_capacity(parts.len());
            for (rank, part) in parts {
                match catalog::fetch_manifest(self.ctx, job, step, rank, part).await {
                    Ok(m) => {
                        manifests.push(m);
                        entries.push(part);
                    }
                    Err(e) => self.report.skip(Skip {
                        job: job.clone(),
                        step,
                        rank,
                        object: None,
                        stripe: None,
                        shard: None,
                        node: None,
                        why: SkipWhy::ManifestUnreadable(e.to_string()),
                    }),
                }
            }
            self.report.parts += manifests.len() as u64;
            let is_down = |n: NodeId| self.ctx.health.is_down(n);
            let plan = plan(&self.ctx.map, &manifests, &is_down, self.budget);
            self.budget -= plan.moves.len();
            self.report.planned += plan.moves.len() as u64;
            self.report.deferred += plan.deferred as u64;
            for s in &plan.skipped {
                let m = &manifests[s.part];
                let (object, stripe) = (Some(m.objects[s.object].name.clone()), Some(s.stripe));
                let (shard, node) = (s.index, s.node);
                let (job, step, rank) = (m.job.clone(), m.step, m.rank);
                let why = SkipWhy::Planned(s.reason);
                self.report.skip(Skip { job, step, rank, object, stripe, shard, node, why });
            }
            if self.options.dry_run {
                for mv in &plan.moves {
                    *self.report.flows.entry((mv.fix.from, mv.fix.to)).or_insert(0) += 1;
                }
                continue;
            }
            let mut by_part: BTreeMap<usize, Vec<ShardMove>> = BTreeMap::new();
            for mv in plan.moves {
                by_part.entry(mv.part).or_default().push(mv);
            }
            for (part, moves) in &by_part {
                if !admin_checked {
                    self.check_admin(&manifests[*part], &moves[0]).await?;
                    admin_checked = true;
                }
                self.move_part(&manifests[*part], entries[*part], moves).await?;
            }
            for (i, (m, part)) in manifests.iter().zip(&entries).enumerate() {
                if !by_part.contains_key(&i) {
                    let added = repair::ensure_manifest_copies(self.ctx, m, part).await;
                    self.report.manifest_copies_added += added as u64;
                }
            }
        }
        Ok(())
    }

    /// Step 3 of the module doc: refused unless the identity may rewrite manifests and
    /// delete shards.
    async fn check_admin(&self, m: &Manifest, mv: &ShardMove) -> Result<()> {
        let key = stripe_id(m, mv.object, mv.stripe).shard(mv.fix.index);
        match self.ctx.delete_shard(mv.fix.to, key, NO_SHARD_DIGEST).await {
            Err(e @ TransportError::Remote { code: ErrorCode::PermissionDenied, .. }) => {
                Err(ClientError::from(e))
            }
            // Any other answer (done, another version held, or no answer: that move then
            // fails on its own) says nothing against the identity.
            _ => Ok(()),
        }
    }

    /// Steps 4 and 5 of the module doc for one part.
    async fn move_part(
        &mut self,
        m: &Manifest,
        part: &PartEntry,
        moves: &[ShardMove],
    ) -> Result<()> {
        let codec = Arc::new(Codec::new(m.code.params)?);
        let in_flight = self.options.moves_in_flight.clamp(1, REBALANCE_MAX_MOVES_IN_FLIGHT);
        let (ctx, reads, codec) = (self.ctx, &self.reads, &codec);
        let outcomes: Vec<(ShardMove, StripeOutcome)> = stream::iter(moves.iter().copied())
            .map(|mv| async move {
                let mut out = StripeOutcome::default();
                let (at, fixes, sources) = ((mv.object, mv.stripe), [mv.fix], [mv.fix.index]);
                repair::carry_out(ctx, reads, codec, m, at, &fixes, (&sources, true), &mut out)
                    .await;
                (mv, out)
            })
            .buffer_unordered(in_flight)
            .collect()
            .await;
        let mut copied: Vec<PlacedFix> = Vec::with_capacity(outcomes.len());
        let mut bytes = 0u64;
        for (mv, out) in outcomes {
            let why = match out.problem {
                None if out.written.len() == 1 => {
                    copied.push((mv.object, mv.stripe, mv.fix));
                    bytes += out.bytes_written;
                    continue;
                }
                None => SkipWhy::WriteFailed("nothing written".to_owned()),
                Some(p) if out.bytes_read == 0 => SkipWhy::Unreadable(p),
                Some(p) => SkipWhy::WriteFailed(p),
            };
            self.report.skip(skip_of(m, &(mv.object, mv.stripe, mv.fix), why));
        }
        if copied.is_empty() {
            return Ok(());
        }
        copied.sort_by_key(|(o, s, f)| (*o, *s, f.index));
        match repair::commit_moved(ctx, m, part, &copied).await {
            Ok(done) => {
                self.report.parts_rewritten += 1;
                self.report.moved += copied.len() as u64;
                self.report.bytes_moved += bytes;
                self.report.stale_copies_deleted += done.stale_deleted;
                self.report.stale_copies_left += done.stale_left;
                for (_, _, f) in &copied {
                    *self.report.flows.entry((f.from, f.to)).or_insert(0) += 1;
                }
                tracing::info!(job = %m.job, step = %m.step, rank = %m.rank, moved = copied.len(),
                    revision = done.revision, "part rebalanced");
            }
            Err(e @ ClientError::PermissionDenied { .. }) => return Err(e),
            Err(e) => {
                let text = e.to_string();
                for placed in &copied {
                    self.report.skip(skip_of(m, placed, SkipWhy::CommitFailed(text.clone())));
                }
            }
        }
        Ok(())
    }
}

fn skip_of(m: &Manifest, (object, stripe, fix): &PlacedFix, why: SkipWhy) -> Skip {
    Skip {
        job: m.job.clone(),
        step: m.step,
        rank: m.rank,
        object: Some(m.objects[*object].name.clone()),
        stripe: Some(*stripe),
        shard: Some(fix.index),
        node: Some(fix.from),
        why,
    }
}
