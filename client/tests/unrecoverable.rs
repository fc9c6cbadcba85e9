//! Beyond m losses, against real `rackpoint-store` processes killed with SIGKILL (6 nodes,
//! 3 racks, k = 4, m = 2): the errors name the checkpoint, the object, the stripe and the
//! nodes, so that a person (or the CLI) can say what was lost.

mod common;

use common::{client, data, job, request, six_nodes};
use rackpoint_client::catalog::PassOverReason;
use rackpoint_client::restore::Which;
use rackpoint_client::ClientError;
use rackpoint_proto::{NodeId, Rank, Step};

const SHARD: u32 = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_checkpoint_beyond_m_losses_names_its_step_stripe_and_nodes() {
    let mut tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("beyond-m");
    let bytes = data(71, 2 * 1024 * 1024 + 5);
    let report = c.save(request(&job, 4, 0, 1, &[("weights.bin", &bytes)])).await.expect("save");
    // Three of six nodes die; one manifest replica stays, so the part is still listed. Every
    // stripe has a shard on each of the six nodes, so every stripe lost three (m = 2).
    let keep = report.manifest_nodes[0];
    let victims: Vec<NodeId> = (1..=6).map(NodeId).filter(|n| *n != keep).take(3).collect();
    for v in &victims {
        tc.cluster.kill(*v).expect("kill");
    }

    match c.latest(&job).await {
        Err(ClientError::NoCheckpoint { passed_over, .. }) => {
            let first = passed_over.0.first().expect("the step is named");
            assert_eq!(first.step, Step(4));
            let PassOverReason::Unrecoverable { rank, stripe } = &first.why else {
                panic!("expected an unrecoverable stripe, got {:?}", first.why);
            };
            assert_eq!(*rank, Rank(0));
            assert_eq!(stripe.object.as_str(), "weights.bin");
            assert!(stripe.lost > stripe.m, "{stripe}");
            assert!(stripe.nodes.iter().all(|n| victims.contains(n)), "{stripe}");
        }
        other => panic!("expected NoCheckpoint, got {:?}", other.map(|p| p.step)),
    }
    let latest = c.restore(&job, Which::Latest, Rank(0)).await.expect_err("not restorable");
    let text = latest.to_string();
    assert!(text.contains("step 4: rank 0: object weights.bin stripe"), "{text}");

    match c.restore(&job, Which::Step(Step(4)), Rank(0)).await {
        Err(ClientError::NotEnoughShards { job: j, step, rank, object, failures, .. }) => {
            assert_eq!((j, step, rank), (job.clone(), Step(4), Rank(0)));
            assert_eq!(object.as_str(), "weights.bin");
            assert!(failures.0.iter().all(|f| victims.contains(&f.node)), "{failures}");
        }
        other => panic!("expected NotEnoughShards, got {:?}", other.map(|(r, _)| r.bytes)),
    }
    assert!(c.resume(&job).await.expect("resume").is_none(), "resume finds nothing either");
}
