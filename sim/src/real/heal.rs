//! The heal phase of a real-mode trial: every fault undone, the client's repair over the
//! trial's job, the newest committed step restored and verified, and the trial's
//! checkpoints deleted so the next trial starts from a healthy cluster.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rackpoint_client::gc::GcOptions;
use rackpoint_client::repair::{RepairOptions, RepairReport, RepairScope};
use rackpoint_client::restore::Which;
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::limits::SIM_REAL_RESTORE_TIMEOUT_MS;
use rackpoint_proto::{JobName, Rank, Step};

use super::cell::{blocking, lock, Cell};
use super::disk::set_capacity;
use super::faults::FaultState;
use super::restore::same_objects;
use super::Trial;
use crate::report::{HealOutcome, RepairOutcome};
use crate::scenario::HealSpec;
use crate::workload::PlannedSave;

/// Undoes every fault that holds a node down: slow cycles, freezes, relays, kills, disks.
pub(super) async fn heal_network_and_processes(cell: &Cell, state: &Mutex<FaultState>) {
    let (slow, frozen, killed, filled) = {
        let mut s = lock(state);
        (
            std::mem::take(&mut s.slow),
            std::mem::take(&mut s.frozen),
            s.killed.clone(),
            std::mem::take(&mut s.filled),
        )
    };
    for (stop, task) in slow {
        stop.store(true, Ordering::SeqCst);
        let _ = task.await;
    }
    for id in frozen {
        let _ = lock(&cell.cluster).resume(id);
    }
    for relay in cell.relays.values() {
        relay.clear();
    }
    lock(state).partitioned.clear();
    for id in killed {
        let c = cell.cluster.clone();
        if blocking(move || lock(&c).restart(id)).await.is_ok() {
            let mut s = lock(state);
            s.killed.remove(&id);
            s.restarted.insert(id);
        }
    }
    for id in filled {
        if set_capacity(cell, id, 0).await.is_ok() {
            lock(state).restarted.insert(id);
        }
    }
}

/// The heal phase: everything back (restarts, thaws, relays cleared, disks given back),
/// then (as `spec` asks) the client's repair over the trial's job, then the newest
/// committed step must restore exactly and `verify` must find full redundancy; last, the
/// trial's checkpoints (and the orphans of an interrupted save) are deleted so the cell's
/// cluster can serve the next trial.
pub(super) async fn heal(spec: &HealSpec, t: &Trial<'_>) -> HealOutcome {
    heal_network_and_processes(t.cell, t.state).await;
    let mut out = HealOutcome {
        cluster_back: false,
        verified_step: None,
        restores_after_heal: false,
        repair: None,
        full_redundancy: false,
        bad_shards: 0,
        note: String::new(),
    };
    let still_down = lock(t.state).killed.clone();
    out.cluster_back = still_down.is_empty();
    let mut notes = Vec::new();
    if !out.cluster_back {
        notes.push(format!("nodes {still_down:?} did not restart"));
    }
    // A fresh client: the trial's clients still hold the faults' down marks.
    let Ok(client) = t.cell.client() else {
        out.note = "no client".into();
        return out;
    };
    let committed = committed_steps(&client, t.job, &mut notes).await;
    let newest = newest_saved(&committed, t.saves);
    out.verified_step = newest;
    if newest.is_none() && !t.saves.is_empty() {
        notes.push("no committed step to heal".into());
    }
    if let (true, Some(_)) = (spec.repair, newest) {
        out.repair = Some(repair(&client, t.job, &mut notes).await);
    }
    if let (true, Some(step)) = (spec.verify, newest) {
        verify(&client, t.job, step, t.saves, &mut out, &mut notes).await;
    }
    clear_trial(&client, t.job, t.saves, &committed).await;
    out.note = notes.join("; ");
    out
}

/// The steps of `job` listed complete (an interrupted save of a killed client is not).
async fn committed_steps(client: &Client, job: &JobName, notes: &mut Vec<String>) -> Vec<u64> {
    match bounded(client.list(job)).await {
        Ok(list) => list.into_iter().filter(|c| c.complete).map(|c| c.step.0).collect(),
        Err(e) => {
            notes.push(format!("list: {e}"));
            Vec::new()
        }
    }
}

/// The newest of the `committed` steps that the trial saved.
fn newest_saved(committed: &[u64], saves: &BTreeMap<u64, PlannedSave>) -> Option<u64> {
    committed.iter().copied().filter(|s| saves.contains_key(s)).max()
}

/// The client's repair of every part of `job`, timed.
async fn repair(client: &Client, job: &JobName, notes: &mut Vec<String>) -> RepairOutcome {
    let options = RepairOptions::limited_to(None);
    let started = Instant::now();
    let repaired = bounded(client.repair(job, RepairScope::All, options)).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    match repaired {
        Ok(report) => repair_outcome(ms, &report, notes),
        Err(e) => {
            notes.push(format!("repair: {e}"));
            RepairOutcome { ms, error: Some(e.to_string()), ..RepairOutcome::default() }
        }
    }
}

/// A repair report as the heal outcome counts it; its problems go to `notes`.
fn repair_outcome(ms: f64, r: &RepairReport, notes: &mut Vec<String>) -> RepairOutcome {
    for p in r.parts.iter().flat_map(|p| &p.problems) {
        notes.push(format!("repair: {}", p.problem));
    }
    RepairOutcome {
        ms,
        complete: r.is_complete(),
        shards_written: r.shards_written(),
        moved: r.parts.iter().map(|p| p.moved).sum(),
        bytes_written: r.parts.iter().map(|p| p.bytes_written).sum(),
        bytes_read: r.bytes_read(),
        manifest_copies_added: r.parts.iter().map(|p| p.manifest_copies_added).sum(),
        error: None,
    }
}

/// Restores `step` again (it must give the saved bytes) and verifies it (every shard good,
/// clean chains, no stripe doubled on a node).
async fn verify(
    client: &Client,
    job: &JobName,
    step: u64,
    saves: &BTreeMap<u64, PlannedSave>,
    out: &mut HealOutcome,
    notes: &mut Vec<String>,
) {
    let got = bounded(client.restore(job, Which::Step(Step(step)), Rank(0))).await;
    out.restores_after_heal = match &got {
        Ok((_, objs)) => saves.get(&step).is_some_and(|s| same_objects(&s.objects, objs)),
        Err(e) => {
            notes.push(format!("restore after heal: {e}"));
            false
        }
    };
    match bounded(client.verify(job, Step(step))).await {
        Ok(report) => {
            out.bad_shards = report.bad_shards.len() as u64;
            out.full_redundancy = report.is_healthy();
            if !out.full_redundancy {
                notes.push(format!(
                    "verify: {} bad shard(s), {} chain problem(s), {} stripe(s) doubled on a node",
                    out.bad_shards,
                    report.chain_problems.len(),
                    report.degraded_placement.len()
                ));
            }
        }
        Err(e) => notes.push(format!("verify: {e}")),
    }
}

/// Deletes the trial's checkpoints; when one of them never committed, sweeps the shards it
/// left (they have no manifest) at once, with no grace.
async fn clear_trial(
    client: &Client,
    job: &JobName,
    saves: &BTreeMap<u64, PlannedSave>,
    committed: &[u64],
) {
    for &step in saves.keys() {
        let _ = bounded(client.delete(job, Step(step))).await;
    }
    if saves.keys().any(|s| !committed.contains(s)) {
        let sweep = GcOptions { keep: 0, orphan_grace_ms: 0, force: false };
        let _ = bounded(client.gc(job, sweep)).await;
    }
}

/// `work`, bounded by the real-mode restore bound (a hung heal step is an error, not a hang).
async fn bounded<T>(
    work: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_millis(SIM_REAL_RESTORE_TIMEOUT_MS), work).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("hung past {SIM_REAL_RESTORE_TIMEOUT_MS} ms")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackpoint_client::repair::{PartRepair, StripeProblem};

    use crate::scenario::CheckpointSpec;
    use crate::workload::trial_saves;

    #[test]
    fn the_newest_committed_step_the_trial_saved_is_healed() {
        let spec = CheckpointSpec { bytes: 100, objects: 1, world_size: 1, shard_size_bytes: 64 };
        let saves = trial_saves(&spec, 1, true);
        assert_eq!(newest_saved(&[1, 2], &saves), Some(2));
        // The killed client's save did not commit: the baseline is healed.
        assert_eq!(newest_saved(&[1], &saves), Some(1));
        // A step the trial did not save (an earlier trial's, say) is not.
        assert_eq!(newest_saved(&[1, 7], &saves), Some(1));
        assert_eq!(newest_saved(&[], &saves), None);
    }

    #[test]
    fn a_repair_report_is_summed_over_its_parts_with_its_problems_noted() {
        let problem = StripeProblem { object: None, stripe: None, problem: "too few".into() };
        let part = |moved, in_place, problems: Vec<StripeProblem>| PartRepair {
            moved,
            rewritten_in_place: in_place,
            bytes_read: 100,
            bytes_written: 10 * (moved + in_place),
            manifest_copies_added: 1,
            problems,
            ..PartRepair::default()
        };
        let report = RepairReport {
            parts: vec![part(2, 1, Vec::new()), part(0, 4, vec![problem])],
            deletions_finished: Vec::new(),
            deletions_pending: Vec::new(),
        };
        let mut notes = Vec::new();
        let got = repair_outcome(12.5, &report, &mut notes);
        assert_eq!(notes, ["repair: too few"]);
        assert_eq!(
            got,
            RepairOutcome {
                ms: 12.5,
                complete: false,
                shards_written: 7,
                moved: 2,
                bytes_written: 70,
                bytes_read: 200,
                manifest_copies_added: 2,
                error: None,
            }
        );
    }
}
