//! Fault injection on real node processes and their relays: what each fault kind does
//! (SIGKILL, a wiped data folder, restarts, SIGSTOP, partitions, delays, losses, straggler
//! cycles), when the faults of a phase fire, and what they have done so far.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackpoint_client::cluster_dir::NODE_DATA_DIR;
use rackpoint_client::local_cluster::{LocalCluster, LocalClusterError};
use rackpoint_client::manifest::Manifest;
use rackpoint_proto::NodeId;

use super::cell::{blocking, lock, Cell};
use super::disk;
use crate::oracle::Damage;
use crate::scenario::{FaultKind, Phase};
use crate::schedule::Action;
use crate::workload::Objects;

/// What the faults have done so far in a trial, for the oracle and the heal phase.
#[derive(Default)]
pub(super) struct FaultState {
    pub(super) killed: BTreeSet<NodeId>,
    /// Killed nodes whose data folder was deleted (they restart empty).
    pub(super) wiped: BTreeSet<NodeId>,
    pub(super) frozen: BTreeSet<NodeId>,
    pub(super) partitioned: BTreeSet<NodeId>,
    pub(super) restarted: BTreeSet<NodeId>,
    pub(super) filled: BTreeSet<NodeId>,
    /// Corrupted shards as (stripe in checkpoint order, shard index).
    pub(super) corrupt: BTreeSet<(usize, u8)>,
    pub(super) corrupt_nodes: BTreeSet<NodeId>,
    /// Straggler cycles running: their stop flag and task.
    pub(super) slow: Vec<(Arc<AtomicBool>, tokio::task::JoinHandle<()>)>,
    /// Faults that could not be injected.
    pub(super) errors: Vec<String>,
}

impl FaultState {
    /// Nodes that do not answer now: killed, frozen or cut off.
    pub(super) fn unavailable(&self) -> BTreeSet<NodeId> {
        self.killed.iter().chain(&self.frozen).chain(&self.partitioned).copied().collect()
    }

    /// Nodes a fault took away or corrupted.
    pub(super) fn faulty_nodes(&self) -> usize {
        self.unavailable().union(&self.corrupt_nodes).count()
    }

    /// The damage a restore meets: what the faults so far did, plus the nodes that the
    /// faults scheduled during the restore take away (known from the schedule).
    pub(super) fn damage(&self, actions: &[Action]) -> Damage {
        let mut damage = Damage { unavailable: self.unavailable(), corrupt: self.corrupt.clone() };
        for a in actions.iter().filter(|a| a.fault.phase == Phase::DuringRestore) {
            if takes_node_away(a.fault.kind) {
                damage.unavailable.extend(&a.nodes);
            }
        }
        damage
    }
}

/// Whether a fault of `kind` leaves its nodes not answering.
fn takes_node_away(kind: FaultKind) -> bool {
    matches!(
        kind,
        FaultKind::Kill
            | FaultKind::KillRack
            | FaultKind::Wipe
            | FaultKind::Freeze
            | FaultKind::Partition
    )
}

/// The trial-local context a fault needs when it fires.
pub(super) struct FaultCtx<'a> {
    pub(super) cell: &'a Cell,
    /// The committed manifest with its objects, once there is one (on-disk corruption
    /// needs it).
    pub(super) committed: Option<(&'a Manifest, &'a Objects)>,
    pub(super) state: &'a Mutex<FaultState>,
}

impl FaultCtx<'_> {
    /// Records a fault that could not be injected.
    pub(super) fn note(&self, error: String) {
        lock(self.state).errors.push(error);
    }
}

/// Fires the faults of `phase` at their times from now (concurrently with `work`), and
/// returns `work`'s result once it and every fault are done.
pub(super) async fn with_faults<T>(
    ctx: &FaultCtx<'_>,
    actions: &[Action],
    phase: Phase,
    work: impl std::future::Future<Output = T>,
) -> T {
    let mut timed: Vec<&Action> = actions
        .iter()
        .filter(|a| a.fault.phase == phase && a.fault.kind != FaultKind::KillClient)
        .collect();
    timed.sort_by_key(|a| a.at_ms);
    let faults = async {
        let start = tokio::time::Instant::now();
        for a in timed {
            tokio::time::sleep_until(start + Duration::from_millis(a.at_ms)).await;
            fire(ctx, a).await;
        }
    };
    let (out, ()) = tokio::join!(work, faults);
    out
}

/// Fires every fault of `phase` now, one after the other.
pub(super) async fn fire_all(ctx: &FaultCtx<'_>, actions: &[Action], phase: Phase) {
    for a in actions.iter().filter(|a| a.fault.phase == phase) {
        fire(ctx, a).await;
    }
}

/// Fires one fault now.
async fn fire(ctx: &FaultCtx<'_>, a: &Action) {
    match a.fault.kind {
        FaultKind::Kill | FaultKind::KillRack => kill(ctx, &a.nodes).await,
        FaultKind::Wipe => wipe(ctx, &a.nodes).await,
        FaultKind::Restart => restart(ctx, &a.nodes).await,
        FaultKind::Freeze => freeze(ctx, &a.nodes),
        FaultKind::Partition | FaultKind::Delay | FaultKind::Drop => relay_fault(ctx, a),
        FaultKind::Corrupt => disk::corrupt(ctx, a).await,
        FaultKind::Slow => slow(ctx, a),
        FaultKind::FillDisk => disk::fill(ctx, a).await,
        FaultKind::KillClient => {}
    }
}

/// SIGKILLs each node (one already down counts as killed).
async fn kill(ctx: &FaultCtx<'_>, nodes: &[NodeId]) {
    for &id in nodes {
        let c = ctx.cell.cluster.clone();
        match blocking(move || lock(&c).kill(id)).await {
            Ok(_) | Err(LocalClusterError::NotRunning(_)) => {
                lock(ctx.state).killed.insert(id);
            }
            Err(e) => ctx.note(format!("kill {id}: {e}")),
        }
    }
}

/// SIGKILLs each node and deletes its data folder, so it restarts empty.
async fn wipe(ctx: &FaultCtx<'_>, nodes: &[NodeId]) {
    for &id in nodes {
        let c = ctx.cell.cluster.clone();
        let wiped = blocking(move || {
            let mut c = lock(&c);
            match c.kill(id) {
                Ok(_) | Err(LocalClusterError::NotRunning(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
            let data = c.node_dir(id).join(NODE_DATA_DIR);
            std::fs::remove_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))
        })
        .await;
        match wiped {
            Ok(()) => {
                let mut s = lock(ctx.state);
                s.killed.insert(id);
                s.wiped.insert(id);
            }
            Err(e) => ctx.note(format!("wipe {id}: {e}")),
        }
    }
}

/// Restarts each node, or every killed node when the fault names none.
async fn restart(ctx: &FaultCtx<'_>, nodes: &[NodeId]) {
    let ids: Vec<NodeId> = if nodes.is_empty() {
        lock(ctx.state).killed.iter().copied().collect()
    } else {
        nodes.to_vec()
    };
    for id in ids {
        let c = ctx.cell.cluster.clone();
        match blocking(move || lock(&c).restart(id)).await {
            Ok(()) => {
                let mut s = lock(ctx.state);
                s.killed.remove(&id);
                s.restarted.insert(id);
            }
            Err(e) => ctx.note(format!("restart {id}: {e}")),
        }
    }
}

/// SIGSTOPs each node.
fn freeze(ctx: &FaultCtx<'_>, nodes: &[NodeId]) {
    for &id in nodes {
        match lock(&ctx.cell.cluster).pause(id) {
            Ok(()) => {
                lock(ctx.state).frozen.insert(id);
            }
            Err(e) => ctx.note(format!("freeze {id}: {e}")),
        }
    }
}

/// Partitions, delays or drops the traffic of each node at its relay (dropping all of it
/// counts as a partition).
fn relay_fault(ctx: &FaultCtx<'_>, a: &Action) {
    for id in &a.nodes {
        let Some(relay) = ctx.cell.relays.get(id) else { continue };
        match a.fault.kind {
            FaultKind::Partition => {
                relay.set_partitioned(true);
                lock(ctx.state).partitioned.insert(*id);
            }
            FaultKind::Delay => relay.set_delay(Duration::from_millis(a.fault.delay_ms)),
            _ => {
                relay.set_drop_probability(a.fault.drop_probability);
                if a.fault.drop_probability >= 1.0 {
                    lock(ctx.state).partitioned.insert(*id);
                }
            }
        }
    }
}

/// Starts a straggler cycle on each node (stopped by the heal).
fn slow(ctx: &FaultCtx<'_>, a: &Action) {
    for &id in &a.nodes {
        let stop = Arc::new(AtomicBool::new(false));
        let cycle =
            cycle_stop(ctx.cell.cluster.clone(), id, a.fault.run_ms, a.fault.stop_ms, stop.clone());
        let task = tokio::spawn(cycle);
        lock(ctx.state).slow.push((stop, task));
    }
}

/// A straggler: the node runs `run_ms`, stops `stop_ms`, until told to stop (then runs).
async fn cycle_stop(
    cluster: Arc<Mutex<LocalCluster>>,
    id: NodeId,
    run_ms: u64,
    stop_ms: u64,
    done: Arc<AtomicBool>,
) {
    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(run_ms)).await;
        if done.load(Ordering::SeqCst) || lock(&cluster).pause(id).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(stop_ms)).await;
        if lock(&cluster).resume(id).is_err() {
            break;
        }
    }
    let _ = lock(&cluster).resume(id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Fault;

    fn n(id: u32) -> NodeId {
        NodeId(id)
    }

    fn action(kind: FaultKind, phase: Phase, nodes: &[u32]) -> Action {
        Action {
            fault: Fault::new(kind, phase),
            at_ms: 0,
            nodes: nodes.iter().map(|&i| n(i)).collect(),
        }
    }

    #[test]
    fn unavailable_is_killed_frozen_and_cut_off_but_not_corrupt_or_slow() {
        let mut s = FaultState::default();
        s.killed.insert(n(1));
        s.frozen.insert(n(2));
        s.partitioned.insert(n(3));
        s.restarted.insert(n(4));
        s.filled.insert(n(5));
        s.corrupt_nodes.insert(n(6));
        s.corrupt.insert((0, 1));
        assert_eq!(s.unavailable(), BTreeSet::from([n(1), n(2), n(3)]));
        assert_eq!(s.faulty_nodes(), 4);
        s.corrupt_nodes.insert(n(1));
        assert_eq!(s.faulty_nodes(), 4, "a node counts once");
    }

    #[test]
    fn the_damage_adds_the_nodes_the_restore_phase_takes_away() {
        let mut s = FaultState::default();
        s.killed.insert(n(1));
        s.corrupt.insert((3, 0));
        let actions = [
            action(FaultKind::Freeze, Phase::DuringRestore, &[2]),
            action(FaultKind::Partition, Phase::DuringRestore, &[3]),
            action(FaultKind::Delay, Phase::DuringRestore, &[4]),
            action(FaultKind::Slow, Phase::DuringRestore, &[5]),
            action(FaultKind::Kill, Phase::DuringSave, &[6]),
            action(FaultKind::Wipe, Phase::DuringRestore, &[7]),
        ];
        let d = s.damage(&actions);
        assert_eq!(d.unavailable, BTreeSet::from([n(1), n(2), n(3), n(7)]));
        assert_eq!(d.corrupt, BTreeSet::from([(3, 0)]));
    }

    #[test]
    fn only_faults_that_silence_a_node_take_it_away() {
        for kind in [FaultKind::Kill, FaultKind::KillRack, FaultKind::Wipe, FaultKind::Freeze] {
            assert!(takes_node_away(kind), "{kind:?}");
        }
        assert!(takes_node_away(FaultKind::Partition));
        for kind in [
            FaultKind::Restart,
            FaultKind::Delay,
            FaultKind::Drop,
            FaultKind::Corrupt,
            FaultKind::Slow,
            FaultKind::FillDisk,
            FaultKind::KillClient,
        ] {
            assert!(!takes_node_away(kind), "{kind:?}");
        }
    }
}
