//! Keeping checkpoints whole over time, against real `rackpoint-store` processes: repair after
//! a node's data folder is wiped (then two other nodes killed: the repaired shards are real),
//! heal on read (a restore rewrites the shards it found missing, not those of a down node),
//! rot found by the scrubber and fixed by repair, retention that keeps exactly N and returns
//! disk space, orphans of a client killed mid-save collected after the grace and not before,
//! a commit that fails on m nodes rolled back, and membership changes (a 7th node, a
//! decommissioned node drained by repair).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, data, job, request, six_nodes, TestCluster};
use rackpoint_client::cluster_dir::{InitOptions, NODE_DATA_DIR};
use rackpoint_client::codec::ObjectLayout;
use rackpoint_client::gc::GcOptions;
use rackpoint_client::local_cluster::{find_store_binary, LocalCluster};
use rackpoint_client::repair::{RepairOptions, RepairScope};
use rackpoint_client::restore::Which;
use rackpoint_client::{Client, ClientError};
use rackpoint_proto::{NodeId, NodeStats, Rank, ShardIndex, Step, StripeId, StripeIndex};

const SHARD: u32 = 64 * 1024;
/// Longest a test waits for a condition it polls (generous: the machine is shared).
const DEADLINE: Duration = Duration::from_secs(90);
/// Interval between two polls of a condition.
const POLL: Duration = Duration::from_millis(20);

fn objects(seed: u64) -> Vec<(String, Vec<u8>)> {
    vec![
        ("weights.bin".into(), data(seed, 3 * 1024 * 1024 + 777)),
        ("optimizer.bin".into(), data(seed + 1, 5 * SHARD as usize + 3)),
    ]
}

fn refs(objs: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    objs.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect()
}

async fn assert_restores(
    c: &Client,
    job: &rackpoint_proto::JobName,
    step: u64,
    objs: &[(String, Vec<u8>)],
) {
    let (_, restored) = c.restore(job, Which::Step(Step(step)), Rank(0)).await.expect("restore");
    assert_eq!(restored.len(), objs.len());
    for (r, (name, bytes)) in restored.iter().zip(objs) {
        assert_eq!(r.name.as_str(), name);
        assert!(r.bytes == *bytes, "object {name} of step {step} differs after restore");
    }
}

/// Bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn cluster_disk_bytes(tc: &TestCluster) -> u64 {
    tc.cluster
        .map()
        .nodes
        .iter()
        .map(|n| disk_bytes(&tc.cluster.node_dir(n.id).join(NODE_DATA_DIR)))
        .sum()
}

async fn stats_of(c: &Client) -> Vec<NodeStats> {
    c.status().await.into_iter().filter_map(|s| s.stats.ok()).collect()
}

/// The cluster's shard count once it has not changed over `SETTLED_POLLS` polls in a row.
async fn settled_shard_count(c: &Client) -> u64 {
    const SETTLED_POLLS: usize = 20;
    let deadline = Instant::now() + DEADLINE;
    let (mut last, mut same) = (u64::MAX, 0);
    loop {
        let now: u64 = stats_of(c).await.iter().map(|s| s.shards).sum();
        same = if now == last { same + 1 } else { 0 };
        if same == SETTLED_POLLS {
            return now;
        }
        last = now;
        assert!(Instant::now() < deadline, "the shard count never settled");
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `check` until it is true, at most `DEADLINE`.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_repaired_and_its_repaired_shards_carry_a_restore() {
    let mut tc = six_nodes(SHARD);
    let job = job("wiped");
    let objs = objects(100);
    client(&tc).save(request(&job, 1, 0, 1, &refs(&objs))).await.expect("save");

    let wiped = NodeId(3);
    tc.cluster.kill(wiped).expect("kill");
    std::fs::remove_dir_all(tc.cluster.node_dir(wiped).join(NODE_DATA_DIR)).expect("wipe");
    tc.cluster.restart(wiped).expect("restart empty");
    // A fresh client: it has not seen node 3 down, so the repair writes its shards back to it.
    let c = client(&tc);
    let before = c.verify(&job, Step(1)).await.expect("verify");
    assert!(!before.bad_shards.is_empty(), "the wiped node lost its shards");
    assert!(before.bad_shards.iter().all(|b| b.node == wiped));

    let report =
        c.repair(&job, RepairScope::Step(Step(1)), RepairOptions::default()).await.expect("repair");
    assert!(report.is_complete(), "{report:?}");
    let part = &report.parts[0];
    assert_eq!(part.rewritten_in_place as usize, before.bad_shards.len(), "{part:?}");
    assert_eq!((part.moved, part.new_revision), (0, None), "nothing had to move");
    let after = c.verify(&job, Step(1)).await.expect("verify");
    assert!(after.is_healthy(), "{after:?}");
    assert_eq!(after.survives_more_failures, Some(2), "full redundancy is back");

    // Two other nodes die: every stripe that had a shard on the wiped node now needs it.
    for id in [NodeId(1), NodeId(5)] {
        tc.cluster.kill(id).expect("kill");
    }
    assert_restores(&client(&tc), &job, 1, &objs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_heals_the_shards_it_found_missing_and_leaves_a_down_node_alone() {
    let mut tc = six_nodes(SHARD);
    let job = job("heal");
    let objs = objects(150);
    client(&tc).save(request(&job, 1, 0, 1, &refs(&objs))).await.expect("save");

    let (down, wiped) = (NodeId(2), NodeId(3));
    tc.cluster.kill(down).expect("kill");
    tc.cluster.kill(wiped).expect("kill");
    std::fs::remove_dir_all(tc.cluster.node_dir(wiped).join(NODE_DATA_DIR)).expect("wipe");
    tc.cluster.restart(wiped).expect("restart empty");
    let c = client(&tc);
    c.set_heal_on_read(Some(RepairOptions::default()));
    let (report, restored) = c.restore(&job, Which::Step(Step(1)), Rank(0)).await.expect("restore");
    for (r, (name, bytes)) in restored.iter().zip(&objs) {
        assert!(r.bytes == *bytes, "object {name} differs after a restore with 2 nodes out");
    }
    let on_wiped = |o: usize, s: usize| {
        report.manifest.objects[o].stripes[s].shards.iter().any(|sh| sh.node == wiped)
    };
    let expected: Vec<(String, u32)> = (0..report.manifest.objects.len())
        .flat_map(|o| (0..report.manifest.objects[o].stripes.len()).map(move |s| (o, s)))
        .filter(|&(o, s)| on_wiped(o, s))
        .map(|(o, s)| (report.manifest.objects[o].name.to_string(), s as u32))
        .collect();
    let damaged: Vec<(String, u32)> =
        report.damaged_stripes.iter().map(|(o, s)| (o.to_string(), s.0)).collect();
    // Every stripe read a shard of the wiped node only if it needed it; those that did are
    // the damaged ones, and none is counted for the node that is down.
    assert!(!damaged.is_empty(), "the restore met the wiped node's missing shards");
    assert!(damaged.iter().all(|d| expected.contains(d)), "{damaged:?} not all on node {wiped}");

    let heals = c.wait_for_heals().await;
    assert_eq!(heals.len(), 1, "one heal for the part: {heals:?}");
    let healed = heals[0].result.as_ref().expect("the heal ran");
    assert_eq!(healed.moved, 0, "nothing moves off the down node: {healed:?}");
    assert_eq!(healed.rewritten_in_place as usize, damaged.len(), "{healed:?}");
    let verify = c.verify(&job, Step(1)).await.expect("verify");
    let still_bad: Vec<(String, u32)> = verify
        .bad_shards
        .iter()
        .filter(|b| b.node == wiped)
        .map(|b| (b.object.to_string(), b.stripe.0))
        .collect();
    assert!(
        still_bad.iter().all(|b| !damaged.contains(b)),
        "the healed stripes are whole on node {wiped}: {still_bad:?}"
    );
    assert!(verify.bad_shards.iter().all(|b| b.node == wiped || b.node == down));

    // With node 2 back and the healed shards in place, two other nodes die: the stripes
    // healed on read need their rewritten shards on node 3 to restore.
    tc.cluster.restart(down).expect("restart");
    let c = client(&tc);
    let repaired =
        c.repair(&job, RepairScope::All, RepairOptions::default()).await.expect("repair");
    assert!(repaired.is_complete(), "{repaired:?}");
    assert_eq!(
        repaired.parts[0].rewritten_in_place as usize,
        expected.len() - damaged.len(),
        "repair writes only what heal on read did not"
    );
    for id in [NodeId(1), NodeId(5)] {
        tc.cluster.kill(id).expect("kill");
    }
    assert_restores(&client(&tc), &job, 1, &objs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rot_found_by_the_scrubber_is_fixed_by_repair() {
    let mut tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("rot");
    let objs = objects(200);
    c.save(request(&job, 1, 0, 1, &refs(&objs))).await.expect("save");
    let (report, _) = c.restore(&job, Which::Step(Step(1)), Rank(0)).await.expect("restore");
    // Data shard 1 of stripe 2 of the first object is a slice of the object's own bytes.
    let (object, stripe, index) = (0usize, StripeIndex(2), ShardIndex(1));
    let entry = &report.manifest.objects[object];
    let node = entry.stripes[stripe.0 as usize].shards[usize::from(index.0)].node;
    let layout = ObjectLayout::new(report.manifest.code.params, entry.len);
    let range = layout.data_shard_range(stripe, index);
    let middle = (range.start + range.end) as usize / 2;
    let needle = &objs[object].1[middle..middle + 64];
    tc.cluster.edit_node_config(node, |c| c.scrub_start_jitter_ms = 0).expect("node.toml");
    tc.cluster.corrupt_on_disk(node, &[needle]).expect("the shard's bytes are on disk");

    let key = StripeId {
        job: job.clone(),
        step: Step(1),
        rank: Rank(0),
        object: entry.name.clone(),
        stripe,
    }
    .shard(index);
    let c = client(&tc);
    until("the scrubber to list the rotted shard", || async {
        stats_of(&c)
            .await
            .iter()
            .any(|s| s.node_id == node && s.scrub_passes >= 1 && s.corrupt_shards.contains(&key))
    })
    .await;
    let repaired =
        c.repair(&job, RepairScope::All, RepairOptions::default()).await.expect("repair");
    assert!(repaired.is_complete(), "{repaired:?}");
    assert_eq!(repaired.parts[0].rewritten_in_place, 1, "{repaired:?}");
    let verify = c.verify(&job, Step(1)).await.expect("verify");
    assert!(verify.is_healthy() && verify.survives_more_failures == Some(2), "{verify:?}");
    let s = stats_of(&c).await.into_iter().find(|s| s.node_id == node).expect("the node answers");
    assert!(s.corrupt_shards.is_empty(), "the rewritten shard is no longer listed: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_keeps_exactly_n_and_the_disk_space_comes_back() {
    let tc = six_nodes(SHARD);
    let job = job("retention");
    let saved: Vec<_> = (1..=5)
        .map(|s| (s, vec![("state.bin".to_string(), data(300 + s, 4 * 1024 * 1024))]))
        .collect();
    for (step, objs) in &saved {
        // Each checkpoint's shards go to its own segment file on every node.
        client(&tc).save(request(&job, *step, 0, 1, &refs(objs))).await.expect("save");
    }
    let c = client(&tc);
    let disk_before = cluster_disk_bytes(&tc);
    let stored_before: u64 = stats_of(&c).await.iter().map(|s| s.shard_bytes).sum();

    let report = c.gc(&job, GcOptions::keep(2)).await.expect("gc");
    assert_eq!(report.kept, [Step(4), Step(5)]);
    assert_eq!(report.deleted_steps, [Step(1), Step(2), Step(3)]);
    assert!(report.node_errors.is_empty(), "{report:?}");
    let steps: Vec<Step> = c.list(&job).await.expect("list").iter().map(|s| s.step).collect();
    assert_eq!(steps, [Step(4), Step(5)], "exactly N left");
    let stored_after: u64 = stats_of(&c).await.iter().map(|s| s.shard_bytes).sum();
    assert!(
        stored_after * 5 < stored_before * 2 + 5,
        "{stored_after} of {stored_before} shard bytes left"
    );
    let freed = stored_before - stored_after;
    let disk_after = cluster_disk_bytes(&tc);
    assert!(
        disk_after + freed / 2 < disk_before,
        "disk: {disk_before} before, {disk_after} after, {freed} freed"
    );
    for (step, objs) in &saved[3..] {
        assert_restores(&c, &job, *step, objs).await;
    }
    let again = c.gc(&job, GcOptions::keep(2)).await.expect("gc again");
    assert!(again.deleted_steps.is_empty(), "idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_last_applies_retention_after_each_save() {
    let tc = six_nodes(SHARD);
    let c = client(&tc);
    c.set_keep_last(Some(2));
    let job = job("keep-last");
    for step in 1..=4 {
        let objs = vec![("s.bin".to_string(), data(400 + step, 200_000))];
        c.save(request(&job, step, 0, 1, &refs(&objs))).await.expect("save");
    }
    let steps: Vec<Step> = c.list(&job).await.expect("list").iter().map(|s| s.step).collect();
    assert_eq!(steps, [Step(3), Step(4)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_of_a_client_killed_mid_save_goes_after_the_grace_and_not_before() {
    let tc = six_nodes(256 * 1024);
    let c = client(&tc);
    let big = tc.dir.path().join("big.bin");
    std::fs::write(&big, data(500, 256 * 1024 * 1024)).expect("write the input");
    let mut saver = Command::new(env!("CARGO_BIN_EXE_rackpoint"))
        .args(["put", "orphans", "9"])
        .arg(&big)
        .env("RACKPOINT_CLUSTER", tc.cluster.cluster_file())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run rackpoint put");
    until("the save to store shards", || async {
        stats_of(&c).await.iter().map(|s| s.shards).sum::<u64>() > 0
    })
    .await;
    saver.kill().expect("SIGKILL the saving client");
    let status = saver.wait().expect("reap");
    assert!(!status.success(), "the save was cut short");
    let job = job("orphans");
    assert!(c.list(&job).await.expect("list").is_empty(), "no manifest: nothing listed");
    // Streams the client sent before it died may still be landing on the nodes: count the
    // shards once the count has held still for a while (no client is left to send more).
    let stored = settled_shard_count(&c).await;
    assert!(stored > 0);

    // Within the grace (an hour): the save might still be running, so nothing goes.
    let young = c
        .gc(&job, GcOptions { keep: 0, orphan_grace_ms: 3_600_000, force: false })
        .await
        .expect("gc");
    assert!(young.orphans_checked);
    assert_eq!((young.orphan_shards_deleted, young.orphan_shards_young), (0, stored), "{young:?}");
    assert_eq!(stats_of(&c).await.iter().map(|s| s.shards).sum::<u64>(), stored);

    // Past the grace (a millisecond: every shard was written before the kill), they go.
    let old =
        c.gc(&job, GcOptions { keep: 0, orphan_grace_ms: 1, force: false }).await.expect("gc");
    assert_eq!(old.orphan_shards_deleted, stored, "{old:?}");
    assert_eq!(old.orphan_parts, [(Step(9), Rank(0))]);
    let left: Vec<_> = stats_of(&c).await.iter().map(|s| (s.shards, s.shard_bytes)).collect();
    assert!(left.iter().all(|&(n, b)| n == 0 && b == 0), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_on_m_nodes_leaves_nothing_listed() {
    // 3 nodes, k = 1, m = 2: every node holds a shard of the stripe and a manifest copy.
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = InitOptions { k: 1, m: 2, shard_size_bytes: SHARD, racks: 3, ..InitOptions::new(3) };
    let bin = find_store_binary().expect("rackpoint-store is built");
    let cluster =
        Arc::new(Mutex::new(LocalCluster::start(dir.path(), &opts, &bin).expect("starts")));
    let c = Client::connect(&cluster.lock().expect("lock").cluster_file()).expect("client");
    let job = job("rolled-back");
    // The one stripe is stored on all three nodes; then, before the commit, two nodes die.
    let killer = cluster.clone();
    c.set_progress(Some(Arc::new(move |_| {
        let mut cluster = killer.lock().expect("lock");
        for id in [NodeId(2), NodeId(3)] {
            if cluster.is_running(id) {
                cluster.kill(id).expect("kill");
            }
        }
    })));
    let objs = vec![("one-stripe.bin".to_string(), data(600, SHARD as usize))];
    match c.save(request(&job, 1, 0, 1, &refs(&objs))).await {
        Err(ClientError::CommitFailed { need, stored, .. }) => assert_eq!((need, stored), (3, 1)),
        other => panic!("expected CommitFailed, got {other:?}"),
    }
    c.set_progress(None);
    assert!(c.list(&job).await.expect("list").is_empty(), "the one copy stored was rolled back");
    {
        let mut cluster = cluster.lock().expect("lock");
        cluster.restart(NodeId(2)).expect("restart");
        cluster.restart(NodeId(3)).expect("restart");
    }
    let c = Client::connect(&cluster.lock().expect("lock").cluster_file()).expect("client");
    assert!(c.list(&job).await.expect("list").is_empty(), "nothing listed on any node");
    assert!(matches!(c.resume(&job).await, Ok(None)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seventh_node_takes_new_stripes_and_a_decommissioned_node_is_drained() {
    // Seven nodes run; the first clients know only six of them.
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = InitOptions { k: 4, m: 2, shard_size_bytes: SHARD, racks: 3, ..InitOptions::new(7) };
    let bin = find_store_binary().expect("rackpoint-store is built");
    let mut cluster = LocalCluster::start(dir.path(), &opts, &bin).expect("starts");
    let full = cluster.map().clone();
    let mut six = full.clone();
    six.nodes.retain(|n| n.id != NodeId(7));
    let job = job("membership");
    let old = objects(700);
    let c6 = Client::with_map(six, cluster.tls()).expect("client");
    c6.save(request(&job, 1, 0, 1, &refs(&old))).await.expect("save on six nodes");

    // Node 7 joins the map: new stripes reach it.
    let c7 = Client::with_map(full.clone(), cluster.tls()).expect("client");
    let shards_on_7 =
        |stats: &[NodeStats]| stats.iter().find(|s| s.node_id == NodeId(7)).map_or(0, |s| s.shards);
    assert_eq!(shards_on_7(&stats_of(&c7).await), 0);
    let new = objects(701);
    c7.save(request(&job, 2, 0, 1, &refs(&new))).await.expect("save on seven nodes");
    assert!(shards_on_7(&stats_of(&c7).await) > 0, "the new node received stripes");

    // Node 2 is decommissioned: no new shards, and repair moves its shards elsewhere.
    let mut retiring = full;
    retiring.nodes.iter_mut().find(|n| n.id == NodeId(2)).expect("node 2").decommissioned = true;
    let c = Client::with_map(retiring, cluster.tls()).expect("client");
    let before =
        stats_of(&c).await.into_iter().find(|s| s.node_id == NodeId(2)).expect("node 2").shards;
    let third = objects(702);
    c.save(request(&job, 3, 0, 1, &refs(&third))).await.expect("save");
    let after =
        stats_of(&c).await.into_iter().find(|s| s.node_id == NodeId(2)).expect("node 2").shards;
    assert_eq!(before, after, "a decommissioned node gets no new shards");
    let report = c.repair(&job, RepairScope::All, RepairOptions::default()).await.expect("repair");
    assert!(report.is_complete(), "{report:?}");
    assert!(report.parts.iter().any(|p| p.moved > 0 && p.new_revision == Some(1)), "{report:?}");
    let moved: u64 = report.parts.iter().map(|p| p.moved).sum();
    let deleted: u64 = report.parts.iter().map(|p| p.stale_copies_deleted).sum();
    assert_eq!(deleted, moved, "every moved shard's old copy is deleted: {report:?}");
    let left_on_2 =
        stats_of(&c).await.into_iter().find(|s| s.node_id == NodeId(2)).expect("node 2").shards;
    assert_eq!(left_on_2, 0, "the drained node keeps no stale copies");
    for step in [1, 2, 3] {
        let (r, _) = c.restore(&job, Which::Step(Step(step)), Rank(0)).await.expect("restore");
        let on_2 = r
            .manifest
            .objects
            .iter()
            .flat_map(|o| &o.stripes)
            .flat_map(|s| &s.shards)
            .filter(|s| s.node == NodeId(2))
            .count();
        assert_eq!(on_2, 0, "step {step}'s manifest names the decommissioned node");
    }
    let verify = c.verify(&job, Step(1)).await.expect("verify");
    assert!(verify.chain_problems.is_empty(), "the chain survives the rewrite: {verify:?}");

    // The decommissioned node goes away for good, and one more node dies: all restore.
    cluster.kill(NodeId(2)).expect("kill");
    cluster.kill(NodeId(4)).expect("kill");
    let c = Client::with_map(cluster.map().clone(), cluster.tls()).expect("client");
    for (step, objs) in [(1, &old), (2, &new), (3, &third)] {
        assert_restores(&c, &job, step, objs).await;
    }
}
