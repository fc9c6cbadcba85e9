//! Save and restore against real `rackpoint-store` processes (6 nodes, 3 racks, k = 4, m = 2):
//! identical bytes back, with nodes killed with SIGKILL, paused with SIGSTOP, and shards
//! corrupted on disk; beyond m a typed `ShardsUnavailable` (nodes down) or `NotEnoughShards`
//! (lost), never wrong bytes.

mod common;

use common::{client, data, job, request, six_nodes};
use rackpoint_client::codec::ObjectLayout;
use rackpoint_client::planner::ShardFailure;
use rackpoint_client::restore::Which;
use rackpoint_client::ClientError;
use rackpoint_proto::{limits, NodeId, Rank, ShardIndex, Step, StripeIndex};

const SHARD: u32 = 256 * 1024;

fn objects_of(seed: u64) -> Vec<(String, Vec<u8>)> {
    vec![
        ("empty".into(), Vec::new()),
        ("one-byte".into(), data(seed, 1)),
        ("weights.bin".into(), data(seed + 1, 20 * 1024 * 1024 + 12_345)),
        ("optimizer.bin".into(), data(seed + 2, 3 * SHARD as usize)),
    ]
}

fn as_refs(objs: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    objs.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect()
}

fn assert_same(
    restored: &[rackpoint_client::restore::RestoredObject],
    expected: &[(String, Vec<u8>)],
) {
    assert_eq!(restored.len(), expected.len());
    for (r, (name, bytes)) in restored.iter().zip(expected) {
        assert_eq!(r.name.as_str(), name);
        assert!(r.bytes == *bytes, "object {name} differs after restore");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_then_restore_is_identical_even_with_two_nodes_killed() {
    let mut tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("identical");
    let objs = objects_of(1);
    let report = c.save(request(&job, 10, 0, 1, &as_refs(&objs))).await.expect("save");
    assert_eq!(report.moved_shards, 0);
    let (r, restored) = c.restore(&job, Which::Step(Step(10)), Rank(0)).await.expect("restore");
    assert_same(&restored, &objs);
    assert_eq!(r.degraded_stripes, 0, "a healthy restore decodes nothing");

    tc.cluster.kill(NodeId(2)).expect("kill");
    tc.cluster.kill(NodeId(5)).expect("kill");
    let (r, restored) =
        c.restore(&job, Which::Latest, Rank(0)).await.expect("restore with 2 nodes down");
    assert_same(&restored, &objs);
    assert!(r.degraded_stripes > 0, "some stripes had shards on the killed nodes");
    assert_eq!(r.manifest.user_meta.get("data_offset").map(String::as_str), Some("10000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_down_is_unavailable_never_wrong_bytes() {
    let mut tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("too-many-down");
    let objs = vec![("weights.bin".to_string(), data(7, 4 * 1024 * 1024 + 3))];
    c.save(request(&job, 1, 0, 1, &as_refs(&objs))).await.expect("save");
    for id in [1, 3, 6] {
        tc.cluster.kill(NodeId(id)).expect("kill");
    }
    match c.restore(&job, Which::Step(Step(1)), Rank(0)).await {
        Err(ClientError::ShardsUnavailable { need, got, failures, .. }) => {
            assert_eq!(need, 4);
            assert!(got < 4);
            assert!(!failures.0.is_empty(), "the error names the failed shards and nodes");
            let nodes = failures.unanswered_nodes().0;
            assert_eq!(nodes, [NodeId(1), NodeId(3), NodeId(6)], "the nodes to bring back");
        }
        Err(ClientError::Unavailable { nodes, .. }) => {
            // All m + 1 manifest replicas were on the killed nodes: also no wrong bytes, and
            // not "no such part" either, since more than m nodes did not answer.
            assert_eq!(nodes.0, [NodeId(1), NodeId(3), NodeId(6)]);
        }
        other => panic!("expected ShardsUnavailable, got {:?}", other.map(|(r, _)| r.bytes)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_a_save_leaves_the_previous_checkpoint_restorable() {
    let mut tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("kill-during-save");
    let old = vec![("state.bin".to_string(), data(11, 2 * 1024 * 1024 + 1))];
    c.save(request(&job, 1, 0, 1, &as_refs(&old))).await.expect("first save");

    let new = vec![("state.bin".to_string(), data(12, 24 * 1024 * 1024 + 5))];
    let saving = {
        let (c, req) = (c.clone(), request(&job, 2, 0, 1, &as_refs(&new)));
        tokio::spawn(async move { c.save(req).await })
    };
    tc.cluster.kill(NodeId(4)).expect("kill during save");
    let outcome = saving.await.expect("save task");

    let (_, restored) =
        c.restore(&job, Which::Step(Step(1)), Rank(0)).await.expect("old checkpoint restores");
    assert_same(&restored, &old);
    // Five of six nodes are left: shards bound for node 4 move, doubling up on the others
    // where needed (at most m a node), and the save completes degraded.
    outcome.expect("the save completes degraded");
    let point = c.resume(&job).await.expect("resume").expect("a checkpoint");
    assert_eq!(point.step, Step(2));
    let (_, restored) =
        c.restore(&job, Which::Latest, Rank(0)).await.expect("new checkpoint restores");
    assert_same(&restored, &new);
    let more = vec![("state.bin".to_string(), data(13, 1024 * 1024 + 3))];
    let report = c
        .save(request(&job, 3, 0, 1, &as_refs(&more)))
        .await
        .expect("a save with the node already known down");
    assert!(report.manifest_nodes.iter().all(|n| *n != NodeId(4)));
    let (_, restored) = c.restore(&job, Which::Latest, Rank(0)).await.expect("restore step 3");
    assert_same(&restored, &more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_does_not_hold_the_restore() {
    let mut tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("paused");
    let objs = vec![("weights.bin".to_string(), data(21, 8 * 1024 * 1024 + 77))];
    c.save(request(&job, 3, 0, 1, &as_refs(&objs))).await.expect("save");
    tc.cluster.pause(NodeId(1)).expect("SIGSTOP");
    let (r, restored) = c.restore(&job, Which::Step(Step(3)), Rank(0)).await.expect("restore");
    assert_same(&restored, &objs);
    assert!(tc.cluster.is_running(NodeId(1)), "the node is still stopped, not dead");
    assert!(
        r.elapsed.as_millis() < u128::from(limits::CLIENT_REQUEST_TIMEOUT_MS),
        "restore hedged past the stopped node instead of waiting for its timeout ({:?})",
        r.elapsed
    );
    tc.cluster.resume(NodeId(1)).expect("SIGCONT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_sees_a_step_only_when_every_rank_committed() {
    let tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("two-ranks");
    let r0 = vec![("rank0.bin".to_string(), data(31, 300_000))];
    let r1 = vec![("rank1.bin".to_string(), data(32, 300_001))];
    c.save(request(&job, 5, 0, 2, &as_refs(&r0))).await.expect("rank 0 step 5");
    c.save(request(&job, 5, 1, 2, &as_refs(&r1))).await.expect("rank 1 step 5");
    c.save(request(&job, 6, 0, 2, &as_refs(&r0))).await.expect("rank 0 step 6");
    match c.save(request(&job, 5, 0, 2, &as_refs(&r1))).await {
        Err(ClientError::AlreadyExists { step, rank, .. }) => {
            assert_eq!((step, rank), (Step(5), Rank(0)))
        }
        other => panic!(
            "saving a committed part again must be refused, got {:?}",
            other.map(|r| r.manifest_id)
        ),
    }
    let point = c.resume(&job).await.expect("resume").expect("a checkpoint");
    assert_eq!(point.step, Step(5), "step 6 has only one of two parts");
    let listed = c.list(&job).await.expect("list");
    assert_eq!(
        listed.iter().map(|s| (s.step, s.complete)).collect::<Vec<_>>(),
        vec![(Step(5), true), (Step(6), false)]
    );
    c.save(request(&job, 6, 1, 2, &as_refs(&r1))).await.expect("rank 1 step 6");
    let point = c.resume(&job).await.expect("resume").expect("a checkpoint");
    assert_eq!(point.step, Step(6));
    assert_eq!(
        point.user_meta(Rank(1)).and_then(|m| m.get("data_offset")).map(String::as_str),
        Some("6000")
    );
    let (_, restored) = c.restore(&job, Which::Latest, Rank(1)).await.expect("restore rank 1");
    assert_same(&restored, &r1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_rotted_on_disk_on_two_nodes_restore_identically_and_verify_names_them() {
    let mut tc = six_nodes(SHARD);
    let job = job("rot");
    let obj = data(41, 4 * 1024 * 1024 + 99);
    let manifest = {
        let c = client(&tc);
        c.save(request(&job, 1, 0, 1, &[("weights.bin", &obj)])).await.expect("save");
        c.resume(&job).await.expect("resume").expect("a checkpoint").parts.remove(0)
    };
    let params = manifest.code.params;
    let layout = ObjectLayout::new(params, obj.len() as u64);
    let mut rotted = Vec::new();
    // Nodes 1 and 2 are in different racks; each holds at most one shard of a stripe, so no
    // stripe loses more than m = 2.
    for node in [NodeId(1), NodeId(2)] {
        let mut needles: Vec<&[u8]> = Vec::new();
        for (s, stripe) in manifest.objects[0].stripes.iter().enumerate() {
            for (j, shard) in stripe.shards.iter().enumerate().take(usize::from(params.k)) {
                let r = layout.data_shard_range(StripeIndex(s as u32), ShardIndex(j as u8));
                if shard.node == node && r.end - r.start >= 128 {
                    let mid = ((r.start + r.end) / 2) as usize;
                    needles.push(&obj[mid..mid + 64]);
                    rotted.push((StripeIndex(s as u32), ShardIndex(j as u8), node));
                }
            }
        }
        tc.cluster.corrupt_on_disk(node, &needles).expect("corrupt the node's shards on disk");
    }
    assert!(rotted.len() >= 2, "the object has data shards on both nodes");

    let c = client(&tc);
    let (r, restored) = c.restore(&job, Which::Step(Step(1)), Rank(0)).await.expect("restore");
    assert!(restored[0].bytes == obj, "restored bytes are identical");
    assert!(r.degraded_stripes > 0, "corrupt data shards were rebuilt from parity");

    let report = c.verify(&job, Step(1)).await.expect("verify");
    for (stripe, index, node) in &rotted {
        assert!(
            report.bad_shards.iter().any(|b| b.stripe == *stripe
                && b.index == *index
                && b.node == *node
                && b.why == ShardFailure::Corrupt),
            "verify names shard {index} of stripe {stripe} on node {node}: {:?}",
            report.bad_shards
        );
    }
    assert_eq!(report.bad_shards.len(), rotted.len(), "and nothing else");
    assert!(!report.is_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_async_returns_before_the_upload_and_the_caller_may_reuse_its_buffer() {
    let tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("async");
    let mut buffer = data(51, 6 * 1024 * 1024 + 1);
    let original = buffer.clone();
    let name = rackpoint_proto::ObjectName::new("weights.bin").expect("valid");
    let handle =
        c.save_async(request(&job, 9, 0, 1, &[]), &[(name, &buffer)]).await.expect("staged");
    buffer.iter_mut().for_each(|b| *b = 0);
    handle.wait().await.expect("upload completes");
    let (_, restored) = c.restore(&job, Which::Latest, Rank(0)).await.expect("restore");
    assert!(restored[0].bytes == original, "the staged copy was saved, not the overwritten buffer");
}
