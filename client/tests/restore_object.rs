//! `Client::restore_object`: one named object of any rank's part, filled into a caller's buffer
//! in place, with two nodes killed; a buffer of the wrong length and an unknown name are refused
//! before anything is fetched.

mod common;

use std::sync::Arc;

use common::{client, data, job, request, six_nodes};
use rackpoint_client::restore::Which;
use rackpoint_client::ClientError;
use rackpoint_proto::{NodeId, ObjectName, Rank, Step};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_object_of_another_ranks_part_lands_in_a_callers_buffer() {
    let mut tc = six_nodes(4096);
    let c = client(&tc);
    let j = job("object-job");
    let (a, b) = (data(71, 100_003), data(72, 7));
    c.save(request(&j, 3, 0, 2, &[("a", &data(73, 10))])).await.expect("save rank 0");
    c.save(request(&j, 3, 1, 2, &[("a", &a), ("b", &b)])).await.expect("save rank 1");
    let part = c.manifest(&j, Which::Step(Step(3)), Rank(1)).await.expect("manifest of rank 1");
    let part = Arc::new(part);
    for id in [1, 2] {
        tc.cluster.kill(NodeId(id)).expect("kill");
    }
    let name = |s: &str| ObjectName::new(s).expect("valid name");
    let mut into = vec![0u8; a.len()];
    c.restore_object(&part, &name("a"), &mut into).await.expect("restore a");
    assert!(into == a, "object a differs");
    let mut into = vec![0u8; b.len()];
    c.restore_object(&part, &name("b"), &mut into).await.expect("restore b");
    assert_eq!(into, b);

    let mut short = vec![0u8; a.len() - 1];
    let err = c.restore_object(&part, &name("a"), &mut short).await.expect_err("short buffer");
    assert!(matches!(err, ClientError::InvalidInput(_)), "{err}");
    let err = c.restore_object(&part, &name("c"), &mut short).await.expect_err("unknown object");
    assert!(matches!(err, ClientError::InvalidInput(_)), "{err}");
}
