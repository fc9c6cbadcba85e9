//! Beyond m, against real `rackpoint-store` processes (6 nodes, 3 racks, k = 4, m = 2): nodes
//! that do not answer (killed with SIGKILL, data intact) make a checkpoint unavailable, not
//! lost; nodes that answer that the shards are gone (wiped data folders) make it lost. Either
//! way the errors name the checkpoint, the object, the stripe and the nodes, so that a person
//! (or the CLI) can say what to do.

mod common;

use common::{client, data, job, request, six_nodes};
use rackpoint_client::catalog::PassOverReason;
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::restore::Which;
use rackpoint_client::ClientError;
use rackpoint_proto::{NodeId, Rank, Step};

const SHARD: u32 = 256 * 1024;

/// Three nodes other than `keep` (a manifest replica, which keeps the part listed).
fn three_but(keep: NodeId) -> Vec<NodeId> {
    (1..=6).map(NodeId).filter(|n| *n != keep).take(3).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_down_is_unavailable_naming_them_not_lost() {
    let mut tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("beyond-m");
    let bytes = data(71, 2 * 1024 * 1024 + 5);
    let report = c.save(request(&job, 4, 0, 1, &[("weights.bin", &bytes)])).await.expect("save");
    // Three of six nodes die; one manifest replica stays, so the part is still listed. Every
    // stripe has a shard on each of the six nodes, so every stripe has three (m = 2) out of
    // reach; their data is intact.
    let victims = three_but(report.manifest_nodes[0]);
    for v in &victims {
        tc.cluster.kill(*v).expect("kill");
    }

    match c.latest(&job).await {
        Err(ClientError::Unavailable { nodes, passed_over, .. }) => {
            assert_eq!(nodes.0, victims, "the nodes to bring back");
            let first = passed_over.0.first().expect("the step is named");
            assert_eq!(first.step, Step(4));
            let PassOverReason::Unavailable { rank, stripe } = &first.why else {
                panic!("expected an unavailable stripe, got {:?}", first.why);
            };
            assert_eq!(*rank, Rank(0));
            assert_eq!(stripe.object.as_str(), "weights.bin");
            assert!(stripe.lost > stripe.m, "{stripe}");
            assert!(stripe.nodes.iter().all(|n| victims.contains(n)), "{stripe}");
        }
        other => panic!("expected Unavailable, got {:?}", other.map(|p| p.step)),
    }
    let latest = c.restore(&job, Which::Latest, Rank(0)).await.expect_err("not readable now");
    let text = latest.to_string();
    assert!(text.contains("step 4: rank 0: object weights.bin stripe"), "{text}");
    assert!(text.contains("nothing is known lost"), "{text}");

    match c.restore(&job, Which::Step(Step(4)), Rank(0)).await {
        Err(ClientError::ShardsUnavailable { job: j, step, rank, object, failures, .. }) => {
            assert_eq!((j, step, rank), (job.clone(), Step(4), Rank(0)));
            assert_eq!(object.as_str(), "weights.bin");
            assert_eq!(failures.unanswered_nodes().0, victims, "the nodes to bring back");
            assert!(failures.0.iter().all(|f| victims.contains(&f.node)), "{failures}");
        }
        other => panic!("expected ShardsUnavailable, got {:?}", other.map(|(r, _)| r.bytes)),
    }
    match c.resume(&job).await {
        Err(ClientError::Unavailable { .. }) => {}
        other => {
            panic!("resume must not say 'start afresh': {:?}", other.map(|p| p.map(|p| p.step)))
        }
    }

    // Back up, the same checkpoint restores: it was never lost.
    for v in &victims {
        tc.cluster.restart(*v).expect("restart");
    }
    let c = client(&tc);
    let (_, objects) = c.restore(&job, Which::Latest, Rank(0)).await.expect("restore");
    assert_eq!(objects[0].bytes, bytes);
}

/// Kills node `id`, removes its data folder, and starts it again empty.
fn wipe(cluster: &mut LocalCluster, id: NodeId) {
    cluster.kill(id).expect("kill");
    let data = cluster.node_dir(id).join(rackpoint_client::cluster_dir::NODE_DATA_DIR);
    std::fs::remove_dir_all(data).expect("wipe");
    cluster.restart(id).expect("restart empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wiped_nodes_lose_the_checkpoint_and_a_missing_job_is_no_such_job() {
    let mut tc = six_nodes(SHARD);
    let job = job("wiped-3");
    let bytes = data(72, 1024 * 1024 + 3);
    let report =
        client(&tc).save(request(&job, 4, 0, 1, &[("weights.bin", &bytes)])).await.expect("save");
    let victims = three_but(report.manifest_nodes[0]);
    for v in &victims {
        wipe(&mut tc.cluster, *v);
    }
    let c = client(&tc);
    match c.restore(&job, Which::Latest, Rank(0)).await {
        Err(ClientError::NotEnoughShards { step, object, failures, .. }) => {
            assert_eq!((step, object.as_str()), (Step(4), "weights.bin"));
            let gone: Vec<_> = failures.0.iter().filter(|f| f.why.is_loss()).collect();
            assert!(gone.len() > 2, "the nodes answered missing: {failures}");
            assert!(gone.iter().all(|f| victims.contains(&f.node)), "{failures}");
        }
        other => panic!("expected NotEnoughShards, got {:?}", other.map(|(r, _)| r.bytes)),
    }
    let verify = c.verify(&job, Step(4)).await.expect("verify");
    assert!(verify.lost && verify.survives_more_failures.is_none(), "{verify:?}");

    let none = rackpoint_proto::JobName::new("no-such-job").expect("name");
    match c.latest(&none).await {
        Err(e @ ClientError::NoSuchJob { .. }) => {
            assert_eq!(e.to_string(), "no such job: no-such-job has no checkpoint");
        }
        other => panic!("expected NoSuchJob, got {:?}", other.map(|p| p.step)),
    }
    assert!(c.resume(&none).await.expect("resume").is_none(), "a new job starts afresh");
    match c.restore(&none, Which::Step(Step(1)), Rank(0)).await {
        Err(ClientError::NoSuchJob { .. }) => {}
        other => panic!("expected NoSuchJob, got {:?}", other.map(|(r, _)| r.bytes)),
    }
}
