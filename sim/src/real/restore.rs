//! The restore phase of a real-mode trial: the after-save faults, how long the client took
//! to see them, the oracle's expectation, a restore by a fresh client under the
//! during-restore faults, and its outcome and shard reads.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rackpoint_client::manifest::Manifest;
use rackpoint_client::placement;
use rackpoint_client::restore::{RestoreReport, RestoredObject, Which};
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::limits::{
    CLIENT_CONNECT_TIMEOUT_MS, SIM_DETECT_POLL_MS, SIM_DETECT_TIMEOUT_MS,
    SIM_REAL_RESTORE_TIMEOUT_MS,
};
use rackpoint_proto::{ClusterMap, JobName, NodeId, Rank};

use super::cell::lock;
use super::faults::{fire_all, with_faults, FaultCtx};
use super::heal::heal_network_and_processes;
use super::{stripes_of, Trial};
use crate::oracle::{self, Expectation, StripeNodes};
use crate::report::{Outcome, TrialResult};
use crate::scenario::Phase;
use crate::workload::{Objects, PlannedSave};

/// Finds the committed part, injects the after-save faults, measures detection, asks the
/// oracle, restores `which` with a fresh client (faults during the restore), and compares.
/// `replicas` are the manifest replica nodes per step, as the saves reported them.
pub(super) async fn restore_phase(
    t: &Trial<'_>,
    replicas: &BTreeMap<u64, Vec<NodeId>>,
    which: Which,
    result: &mut TrialResult,
) {
    let Some(manifest) = committed_part(t.watcher, t.job).await else {
        result.outcome = Outcome::Error("the saved checkpoint is not listed".into());
        return;
    };
    let Some(save) = t.saves.get(&manifest.step.0) else {
        result.outcome = Outcome::Error(format!("listed step {} was never saved", manifest.step.0));
        return;
    };
    let served_before = shards_served(t.watcher).await;
    let ctx =
        FaultCtx { cell: t.cell, committed: Some((&manifest, &save.objects)), state: t.state };
    let injected = Instant::now();
    fire_all(&ctx, t.actions, Phase::AfterSave).await;
    let want = lock(t.state).unavailable();
    result.detect_ms = detect(t.watcher, &want, injected).await;
    result.expected = expectation(t, &manifest, replicas);
    result.faulty_nodes = lock(t.state).faulty_nodes();
    let restorer = match t.cell.client() {
        Ok(c) => c,
        Err(e) => {
            result.outcome = Outcome::Error(format!("client: {e}"));
            return;
        }
    };
    let started = Instant::now();
    let limit = Duration::from_millis(SIM_REAL_RESTORE_TIMEOUT_MS);
    let bounded = tokio::time::timeout(limit, restorer.restore(t.job, which, Rank(0)));
    let restored = with_faults(&ctx, t.actions, Phase::DuringRestore, bounded).await;
    result.restore_ms = Some(started.elapsed().as_secs_f64() * 1e3);
    (result.outcome, result.degraded_stripes) = classify(restored.ok(), t.saves);
    // Shard bytes read: GetShard requests served during the restore, times the shard size
    // (an upper bound for short last stripes).
    heal_network_and_processes(t.cell, t.state).await;
    let served_after = shards_served(t.watcher).await;
    let restarted = lock(t.state).restarted.clone();
    let served = shards_read(&served_before, &served_after, &restarted);
    result.bytes_read = served * u64::from(manifest.code.params.shard_size_bytes);
}

/// Rank 0's part of the newest complete checkpoint of `job`, as a resume finds it.
async fn committed_part(watcher: &Client, job: &JobName) -> Option<Manifest> {
    match watcher.resume(job).await {
        Ok(Some(point)) => point.parts.into_iter().next(),
        _ => None,
    }
}

/// What the oracle expects of the restore, from where the shards really went and what the
/// faults take (during the restore too: those are known from the schedule).
fn expectation(
    t: &Trial<'_>,
    manifest: &Manifest,
    replicas: &BTreeMap<u64, Vec<NodeId>>,
) -> Expectation {
    let damage = lock(t.state).damage(t.actions);
    let stripes: Vec<StripeNodes> = stripes_of(manifest).into_iter().map(|(_, _, s)| s).collect();
    let manifest_nodes = manifest_nodes(&t.cell.map, t.job, manifest, replicas);
    oracle::expect(t.k, &stripes, &manifest_nodes, &damage)
}

/// The nodes holding `manifest`'s copies: as its save reported them, or else where
/// placement puts its `m + 1` copies.
fn manifest_nodes(
    map: &ClusterMap,
    job: &JobName,
    manifest: &Manifest,
    replicas: &BTreeMap<u64, Vec<NodeId>>,
) -> Vec<NodeId> {
    let step = manifest.step;
    if let Some(nodes) = replicas.get(&step.0) {
        return nodes.clone();
    }
    let copies = usize::from(manifest.code.params.m) + 1;
    placement::place_manifest(map, job, step, Rank(0), copies, &|_| false).unwrap_or_default()
}

/// Polls `client`'s health view until it holds every node of `want` (bounded); the
/// milliseconds since `since` it took.
async fn detect(client: &Client, want: &BTreeSet<NodeId>, since: Instant) -> Option<f64> {
    if want.is_empty() {
        return None;
    }
    let deadline = since + Duration::from_millis(SIM_DETECT_TIMEOUT_MS);
    loop {
        let down: BTreeSet<NodeId> = client.down_nodes().into_iter().collect();
        if want.is_subset(&down) {
            return Some(since.elapsed().as_secs_f64() * 1e3);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(SIM_DETECT_POLL_MS)).await;
    }
}

/// `GetShard` requests each answering node has served since it started.
async fn shards_served(client: &Client) -> BTreeMap<NodeId, u64> {
    let bound = Duration::from_millis(CLIENT_CONNECT_TIMEOUT_MS + 1000);
    let Ok(all) = tokio::time::timeout(bound, client.status()).await else {
        return BTreeMap::new();
    };
    all.into_iter()
        .filter_map(|s| {
            let stats = s.stats.ok()?;
            let served =
                stats.requests.iter().find(|r| r.kind == "GetShard").map_or(0, |r| r.served);
            Some((s.node.id, served))
        })
        .collect()
}

/// Shards served between the counts `before` and `after` (a node restarted in between
/// counts from zero; one that did not answer after counts none).
fn shards_read(
    before: &BTreeMap<NodeId, u64>,
    after: &BTreeMap<NodeId, u64>,
    restarted: &BTreeSet<NodeId>,
) -> u64 {
    after
        .iter()
        .map(|(id, n)| {
            let base =
                if restarted.contains(id) { 0 } else { before.get(id).copied().unwrap_or(0) };
            n.saturating_sub(base)
        })
        .sum()
}

/// Whether `got` is exactly `want`: the same names with the same bytes, in order.
pub(super) fn same_objects(want: &Objects, got: &[RestoredObject]) -> bool {
    want.len() == got.len() && want.iter().zip(got).all(|((n, b), r)| *n == r.name && *b == r.bytes)
}

/// A restore's outcome and its degraded stripes, against what each step saved (`None`: the
/// restore hung past its bound).
fn classify(
    restored: Option<Result<(RestoreReport, Vec<RestoredObject>), ClientError>>,
    saves: &BTreeMap<u64, PlannedSave>,
) -> (Outcome, u64) {
    let (report, got) = match restored {
        None => {
            let hung = format!("restore hung past {SIM_REAL_RESTORE_TIMEOUT_MS} ms");
            return (Outcome::Error(hung), 0);
        }
        Some(Err(e)) => return (refusal(e), 0),
        Some(Ok(restored)) => restored,
    };
    let step = report.manifest.step.0;
    let outcome = match saves.get(&step) {
        None => Outcome::WrongBytes(format!("restored step {step} was never saved")),
        Some(save) if same_objects(&save.objects, &got) => Outcome::Restored,
        Some(_) => {
            Outcome::WrongBytes(format!("step {step}: restored objects differ from the saved ones"))
        }
    };
    (outcome, report.degraded_stripes)
}

/// The outcome of a restore that returned an error.
fn refusal(e: ClientError) -> Outcome {
    match e {
        // A clean refusal, lost or only unavailable (nodes that hold shards do not answer).
        ClientError::NotEnoughShards { .. } | ClientError::ShardsUnavailable { .. } => {
            Outcome::NotEnoughShards(e.to_string())
        }
        ClientError::ManifestNotFound { .. }
        | ClientError::NoCheckpoint { .. }
        | ClientError::NoSuchJob { .. }
        | ClientError::Unavailable { .. } => Outcome::NotFound(e.to_string()),
        e => Outcome::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackpoint_proto::Step;

    use crate::real::tests::{manifest_of, objects};
    use crate::scenario::CheckpointSpec;
    use crate::workload::trial_saves;

    fn n(id: u32) -> NodeId {
        NodeId(id)
    }

    fn restored(objects: &Objects) -> Vec<RestoredObject> {
        objects
            .iter()
            .map(|(name, bytes)| RestoredObject { name: name.clone(), bytes: bytes.clone() })
            .collect()
    }

    fn report(step: u64, degraded: u64) -> RestoreReport {
        let (mut manifest, _) = manifest_of(2, 1, 256, &objects(&[600]), 3);
        manifest.step = Step(step);
        RestoreReport {
            manifest,
            bytes: 600,
            degraded_stripes: degraded,
            damaged_stripes: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    fn saves() -> BTreeMap<u64, PlannedSave> {
        let spec = CheckpointSpec { bytes: 900, objects: 2, world_size: 1, shard_size_bytes: 64 };
        trial_saves(&spec, 21, true)
    }

    #[test]
    fn the_saved_bytes_of_the_restored_step_are_a_restore() {
        let saves = saves();
        for step in [1, 2] {
            let got = restored(&saves[&step].objects);
            assert_eq!(classify(Some(Ok((report(step, 3), got))), &saves), (Outcome::Restored, 3));
        }
    }

    #[test]
    fn other_bytes_another_steps_bytes_or_an_unsaved_step_are_wrong_bytes() {
        let saves = saves();
        let mut flipped = restored(&saves[&2].objects);
        flipped[1].bytes[7] ^= 1;
        let other_step = restored(&saves[&1].objects);
        let mut renamed = restored(&saves[&2].objects);
        renamed.swap(0, 1);
        for got in [flipped, other_step, renamed, Vec::new()] {
            let (outcome, _) = classify(Some(Ok((report(2, 0), got))), &saves);
            assert!(matches!(outcome, Outcome::WrongBytes(_)), "{outcome:?}");
        }
        let got = restored(&saves[&1].objects);
        let (outcome, _) = classify(Some(Ok((report(9, 0), got))), &saves);
        assert_eq!(outcome, Outcome::WrongBytes("restored step 9 was never saved".into()));
    }

    #[test]
    fn a_hang_and_the_refusals_are_told_apart() {
        let saves = saves();
        let (hung, degraded) = classify(None, &saves);
        assert!(matches!(hung, Outcome::Error(ref e) if e.contains("hung")), "{hung:?}");
        assert_eq!(degraded, 0);
        let job = JobName::new("sim-t0").expect("valid");
        let no_job = ClientError::NoSuchJob { job: job.clone() };
        assert!(matches!(classify(Some(Err(no_job)), &saves).0, Outcome::NotFound(_)));
        let no_manifest = ClientError::ManifestNotFound {
            job,
            asked: Which::Latest,
            rank: Rank(0),
            detail: String::new(),
        };
        assert!(matches!(classify(Some(Err(no_manifest)), &saves).0, Outcome::NotFound(_)));
        let other = ClientError::InvalidInput("test".into());
        assert!(matches!(classify(Some(Err(other)), &saves).0, Outcome::Error(_)));
    }

    #[test]
    fn shards_read_count_from_zero_on_a_restarted_node() {
        let before = BTreeMap::from([(n(1), 10), (n(2), 5), (n(3), 7)]);
        let after = BTreeMap::from([(n(1), 14), (n(2), 2), (n(4), 3)]);
        // Node 1 served 4; node 2 restarted and served 2; node 3 did not answer after;
        // node 4 did not answer before.
        assert_eq!(shards_read(&before, &after, &BTreeSet::from([n(2)])), 4 + 2 + 3);
        // Without the restart known, a lower count is no reads, never a wrap.
        assert_eq!(shards_read(&before, &after, &BTreeSet::new()), 4 + 3);
    }

    #[test]
    fn reported_manifest_replicas_win_over_placement() {
        let (manifest, _) = manifest_of(2, 1, 256, &objects(&[600]), 3);
        let job = JobName::new("sim-t0").expect("valid");
        let nodes = (1..=5)
            .map(|i| rackpoint_proto::NodeInfo {
                id: n(i),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                rack: format!("rack-{}", i % 3),
                decommissioned: false,
            })
            .collect();
        let tls = rackpoint_proto::cluster::ClientTlsPaths {
            ca: "ca.pem".into(),
            cert: "client.pem".into(),
            key: "client.key".into(),
        };
        let map = ClusterMap { epoch: 0, code: manifest.code.params, tls, nodes };
        let replicas = BTreeMap::from([(1, vec![n(3), n(1)])]);
        assert_eq!(manifest_nodes(&map, &job, &manifest, &replicas), vec![n(3), n(1)]);
        // Unreported: the m + 1 = 2 copies where placement puts them, on distinct nodes.
        let placed = manifest_nodes(&map, &job, &manifest, &BTreeMap::new());
        assert_eq!(placed.len(), 2);
        assert_ne!(placed[0], placed[1]);
    }
}
