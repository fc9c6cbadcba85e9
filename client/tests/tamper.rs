//! Committed means immutable, end to end against real `rackpoint-store` processes (6 nodes,
//! 3 racks, k = 4, m = 2): an attacker who speaks the raw protocol copies other bytes'
//! shards under a committed part's keys (where the nodes take them: keys they do not hold)
//! and gives nodes that hold no manifest of the part a rewrite at a higher revision naming
//! them. A restore still returns the committed bytes while the other holders outnumber the
//! attacker's, and a clear error once they do not; `verify` never calls it healthy. And a
//! shard swapped on its node by a delete and a put (the one way left to change it) is never
//! read, and repair puts the committed bytes back.

mod common;

use bytes::Bytes;
use common::{client, data, job, request, six_nodes};
use rackpoint_client::codec::{Codec, ObjectLayout};
use rackpoint_client::manifest::{ChainProblem, Manifest, ShardEntry};
use rackpoint_client::repair::{RepairOptions, RepairScope};
use rackpoint_client::restore::Which;
use rackpoint_client::transport::{Transport, TransportError};
use rackpoint_client::ClientError;
use rackpoint_proto::{
    Digest, ErrorCode, ManifestKey, NodeId, Rank, Request, Response, ShardIndex, Step, StripeIndex,
};

const SHARD: u32 = 64 * 1024;

/// The committed manifest rewritten to describe `theirs`: each shard of theirs stored under
/// the committed part's key on the stripe's next node (which holds another shard of the
/// stripe, not that key). Checks on the way that the node holding a key refuses other
/// bytes under it.
async fn forge(t: &Transport, committed: &Manifest, theirs: &[u8]) -> Manifest {
    let params = committed.code.params;
    let codec = Codec::new(params).expect("codec");
    let layout = ObjectLayout::new(params, theirs.len() as u64);
    let name = committed.objects[0].name.clone();
    let mut forged = committed.clone();
    forged.objects[0].hash = Digest::of(theirs);
    for s in 0..layout.stripe_count() {
        let stripe = StripeIndex(s);
        let range = layout.stripe_range(stripe);
        let encoded =
            codec.encode_stripe(&theirs[range.start as usize..range.end as usize]).expect("encode");
        let entry = &mut forged.objects[0].stripes[s as usize];
        let nodes: Vec<NodeId> = entry.shards.iter().map(|e| e.node).collect();
        for (i, shard) in encoded.shards.into_iter().enumerate() {
            let key = committed.stripe_id(&name, stripe).shard(ShardIndex(i as u8));
            let hash = encoded.hashes[i];
            let put = Request::PutShard { key, hash };
            let refused = t.call(nodes[i], &put, Bytes::from(shard.clone())).await;
            assert!(
                matches!(refused, Err(TransportError::Remote { code: ErrorCode::Conflict, .. })),
                "the holder of a committed shard's key took other bytes: {refused:?}"
            );
            let to = nodes[(i + 1) % nodes.len()];
            t.call(to, &put, Bytes::from(shard)).await.expect("a key that node does not hold");
            entry.shards[i] = ShardEntry { node: to, hash };
        }
    }
    forged
}

async fn replace(
    t: &Transport,
    node: NodeId,
    key: &ManifestKey,
    forged: &[u8],
    base: Digest,
) -> Result<Response, TransportError> {
    let request = Request::ReplaceManifest {
        key: key.clone(),
        world_size: 1,
        hash: Digest::of(forged),
        revision: 5,
        base,
    };
    Ok(t.call(node, &request, Bytes::copy_from_slice(forged)).await?.response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_higher_revision_never_yields_other_bytes() {
    let tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("swap");
    let ours = data(1, 3 * 4 * SHARD as usize + 100);
    let theirs = data(2, ours.len());
    let saved = c.save(request(&job, 1, 0, 1, &[("weights.bin", &ours)])).await.expect("save");
    let holders = saved.manifest_nodes.clone();
    let strangers: Vec<NodeId> = (1..=6).map(NodeId).filter(|n| !holders.contains(n)).collect();
    assert_eq!((holders.len(), strangers.len()), (3, 3));

    let t = Transport::new(tc.cluster.map(), tc.cluster.tls()).expect("transport");
    let key = ManifestKey { job: job.clone(), step: Step(1), rank: Rank(0) };
    let got = t.call(holders[0], &Request::GetManifest { key: key.clone() }, Bytes::new()).await;
    let committed = Manifest::from_bytes(&got.expect("get").payload).expect("a manifest");
    let id = committed.id();
    let forged = forge(&t, &committed, &theirs).await.to_bytes();

    // A node holding the part refuses the rewrite: it changes what the part holds.
    let refused = replace(&t, holders[0], &key, &forged, id).await;
    assert!(
        matches!(&refused, Err(TransportError::Remote { code: ErrorCode::Conflict, message, .. })
            if message.contains("changes what the part holds")),
        "{refused:?}"
    );
    // A node holding nothing of it takes it (as a repair's new holder would).
    replace(&t, strangers[0], &key, &forged, id).await.expect("a new holder takes it");

    // One node's revision 5 against three holders of revision 0: the committed bytes.
    let (_, restored) =
        c.restore(&job, Which::Step(Step(1)), Rank(0)).await.expect("the committed part");
    assert!(restored[0].bytes == ours, "a restore returned other bytes");
    let (_, latest) = c.restore(&job, Which::Latest, Rank(0)).await.expect("the latest");
    assert!(latest[0].bytes == ours, "a restore of the latest returned other bytes");
    let report = c.verify(&job, Step(1)).await.expect("verify");
    assert!(!report.is_healthy(), "{report:?}");
    let disputed = report.chain_problems.iter().find_map(|(_, p)| match p {
        ChainProblem::Disputed { detail, .. } => Some(detail.clone()),
        _ => None,
    });
    let detail = disputed.expect("the dispute is reported");
    assert!(
        detail.contains(&format!("node {} lists revision 5", strangers[0]))
            && detail.contains("describes other content"),
        "{detail}"
    );
    assert!(report.bad_shards.is_empty(), "the committed part's shards are whole: {report:?}");

    // Three against three: no content has a majority, so nothing is read.
    for n in &strangers[1..] {
        replace(&t, *n, &key, &forged, id).await.expect("a new holder takes it");
    }
    match c.restore(&job, Which::Step(Step(1)), Rank(0)).await {
        Err(ClientError::ManifestDisputed { job: j, step, rank, detail }) => {
            assert_eq!((j, step, rank), (job.clone(), Step(1), Rank(0)));
            assert!(detail.contains("majority of its 6 holders"), "{detail}");
        }
        Ok((_, objects)) => {
            panic!(
                "restored {} the committed bytes",
                if objects[0].bytes == ours { "" } else { "NOT" }
            )
        }
        Err(e) => panic!("expected ManifestDisputed, got {e}"),
    }
    let latest = c.restore(&job, Which::Latest, Rank(0)).await.expect_err("nothing to trust");
    assert!(matches!(latest, ClientError::NoCheckpoint { .. }), "{latest}");
    let report = c.verify(&job, Step(1)).await.expect("verify");
    assert!(!report.is_healthy(), "{report:?}");
    assert!(report.parts_found.is_empty(), "the part was not read: {report:?}");
    assert!(
        report.chain_problems.iter().any(|(_, p)| matches!(p, ChainProblem::Disputed { .. })),
        "{report:?}"
    );
    t.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_swapped_by_delete_and_put_is_never_read_and_repair_puts_it_back() {
    let tc = six_nodes(SHARD);
    let c = client(&tc);
    let job = job("swap-shard");
    let ours = data(3, 4 * SHARD as usize);
    let saved = c.save(request(&job, 1, 0, 1, &[("weights.bin", &ours)])).await.expect("save");
    let t = Transport::new(tc.cluster.map(), tc.cluster.tls()).expect("transport");
    let key = ManifestKey { job: job.clone(), step: Step(1), rank: Rank(0) };
    let got = t.call(saved.manifest_nodes[0], &Request::GetManifest { key }, Bytes::new()).await;
    let committed = Manifest::from_bytes(&got.expect("get").payload).expect("a manifest");
    let name = committed.objects[0].name.clone();
    let shard = committed.stripe_id(&name, StripeIndex(0)).shard(ShardIndex(0));
    let ShardEntry { node, hash } = committed.objects[0].stripes[0].shards[0];
    let other = Bytes::from(data(4, SHARD as usize));
    let put = Request::PutShard { key: shard.clone(), hash: Digest::of(&other) };
    let refused = t.call(node, &put, other.clone()).await;
    assert!(matches!(refused, Err(TransportError::Remote { code: ErrorCode::Conflict, .. })));
    t.call(node, &Request::DeleteShard { key: shard.clone(), hash }, Bytes::new())
        .await
        .expect("delete");
    t.call(node, &put, other).await.expect("an empty key takes any bytes");

    let (_, restored) = c.restore(&job, Which::Step(Step(1)), Rank(0)).await.expect("restore");
    assert!(restored[0].bytes == ours, "a restore returned other bytes");
    let report = c.verify(&job, Step(1)).await.expect("verify");
    assert_eq!(report.bad_shards.len(), 1, "{report:?}");
    assert!(!report.is_healthy());

    // The node refuses the committed bytes over the swapped ones; repair deletes exactly the
    // version its manifest does not name, and writes them.
    let repaired =
        c.repair(&job, RepairScope::Step(Step(1)), RepairOptions::default()).await.expect("repair");
    assert!(repaired.is_complete(), "{repaired:?}");
    assert_eq!(repaired.parts[0].rewritten_in_place, 1, "{repaired:?}");
    let reply = t.call(node, &Request::VerifyShard { key: shard }, Bytes::new()).await;
    assert_eq!(reply.expect("verify").response, Response::ShardVerified { hash, len: SHARD });
    assert!(c.verify(&job, Step(1)).await.expect("verify").is_healthy());
    t.close().await;
}
