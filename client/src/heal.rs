//! Heal on read: a restore that found shards missing or corrupt asks for a repair of just
//! those stripes ([`crate::repair`]'s one pipeline, restricted to them), run in the
//! background under the repair read limit so that the restore returns at once. Shards on
//! nodes known down are left for an explicit `repair`, since a node down for a moment (or
//! only slow) should not have its shards moved by a reader.
//!
//! Bounded: at most [`HEAL_MAX_IN_FLIGHT`] heals run at a time and one per part; a request
//! past that is dropped with a warning, and the damage stays for the next restore or
//! `repair` to find. Finished reports are kept (at most [`HEAL_MAX_REPORTS_KEPT`]) until
//! [`Heals::wait`] collects them.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rackpoint_proto::limits::{HEAL_MAX_IN_FLIGHT, HEAL_MAX_REPORTS_KEPT};
use rackpoint_proto::{JobName, ObjectName, Rank, Step, StripeIndex};
use tokio::task::JoinSet;

use crate::ctx::Ctx;
use crate::repair::{self, PartRepair, RepairOptions};

/// What one heal on read did.
#[derive(Debug, Clone)]
pub struct HealReport {
    /// The job.
    pub job: JobName,
    /// The step.
    pub step: Step,
    /// The rank.
    pub rank: Rank,
    /// Stripes asked for.
    pub stripes: usize,
    /// The repair of those stripes, or why it could not run.
    pub result: Result<PartRepair, String>,
}

type PartId = (JobName, Step, Rank);

/// The heals of one client (shared by its clones).
#[derive(Default)]
pub(crate) struct Heals {
    /// Heal on read is on with these options; `None`: off.
    options: Mutex<Option<RepairOptions>>,
    running: Mutex<JoinSet<HealReport>>,
    parts: Arc<Mutex<BTreeSet<PartId>>>,
    done: Mutex<VecDeque<HealReport>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Heals {
    /// Turns heal on read on (with these repair options) or off.
    pub(crate) fn set(&self, options: Option<RepairOptions>) {
        *lock(&self.options) = options;
    }

    /// Asks for the damaged `stripes` of a part to be healed; whether a heal was started
    /// (not when heal on read is off, nothing is damaged, the part is being healed already,
    /// or [`HEAL_MAX_IN_FLIGHT`] heals are running).
    pub(crate) fn request(
        &self,
        ctx: &Arc<Ctx>,
        (job, step, rank): (&JobName, Step, Rank),
        stripes: &[(ObjectName, StripeIndex)],
    ) -> bool {
        let Some(options) = *lock(&self.options) else { return false };
        if stripes.is_empty() {
            return false;
        }
        let mut running = lock(&self.running);
        self.reap(&mut running);
        let part: PartId = (job.clone(), step, rank);
        if running.len() >= HEAL_MAX_IN_FLIGHT || !lock(&self.parts).insert(part.clone()) {
            tracing::warn!(job = %job, step = %step, rank = %rank, stripes = stripes.len(),
                running = running.len(), "heal on read not started: the part is being healed or too many heals run; repair will find the damage");
            return false;
        }
        let wanted: BTreeSet<(ObjectName, StripeIndex)> = stripes.iter().cloned().collect();
        let (ctx, parts) = (ctx.clone(), self.parts.clone());
        tracing::info!(job = %job, step = %step, rank = %rank, stripes = wanted.len(), "heal on read started");
        running.spawn(async move {
            let (job, step, rank) = part.clone();
            let result = repair::heal_stripes(&ctx, &job, (step, rank), &wanted, options)
                .await
                .map_err(|e| e.to_string());
            match &result {
                Ok(r) => tracing::info!(job = %job, step = %step, rank = %rank,
                    written = r.rewritten_in_place + r.moved, bytes_read = r.bytes_read,
                    complete = r.is_complete(), "heal on read done"),
                Err(e) => tracing::warn!(job = %job, step = %step, rank = %rank, error = %e, "heal on read failed"),
            }
            lock(&parts).remove(&part);
            HealReport { job, step, rank, stripes: wanted.len(), result }
        });
        true
    }

    /// Moves finished heals' reports into `done`, keeping the newest.
    fn reap(&self, running: &mut JoinSet<HealReport>) {
        while let Some(joined) = running.try_join_next() {
            self.keep(joined);
        }
    }

    fn keep(&self, joined: Result<HealReport, tokio::task::JoinError>) {
        let Ok(report) = joined else { return };
        let mut done = lock(&self.done);
        if done.len() >= HEAL_MAX_REPORTS_KEPT {
            done.pop_front();
        }
        done.push_back(report);
    }

    /// Waits for every running heal and returns the reports not collected yet, oldest first.
    pub(crate) async fn wait(&self) -> Vec<HealReport> {
        let mut running = std::mem::take(&mut *lock(&self.running));
        while let Some(joined) = running.join_next().await {
            self.keep(joined);
        }
        lock(&self.done).drain(..).collect()
    }
}
