//! Committed means immutable, against a real node process over the raw protocol: the swap
//! attack (another part's shard copied under a committed part's key, its manifest replaced
//! by one naming that shard) is refused step by step, and nothing the node holds changes;
//! a repair's rewrite that only moves shards is still taken.

use bytes::Bytes;
use rackpoint_client::transport::{Transport, TransportError};
use rackpoint_proto::{Digest, ErrorCode, ManifestEntry, NodeId, Request, Response};

use crate::common::*;

async fn replace(
    t: &Transport,
    m: &[u8],
    (revision, base): (u32, Digest),
) -> Result<Response, TransportError> {
    let request = Request::ReplaceManifest {
        key: manifest_key(7, 0),
        world_size: 1,
        hash: digest(m),
        revision,
        base,
    };
    Ok(t.call(ONE, &request, Bytes::copy_from_slice(m)).await?.response)
}

fn conflict<T: std::fmt::Debug>(r: Result<T, TransportError>) -> String {
    match r {
        Err(TransportError::Remote { code: ErrorCode::Conflict, message, .. }) => message,
        other => panic!("expected Conflict, got {other:?}"),
    }
}

async fn listed(t: &Transport) -> Vec<ManifestEntry> {
    let request = Request::ListManifests { job: job(), after: None, limit: 10 };
    match t.call(ONE, &request, Bytes::new()).await.expect("list").response {
        Response::Manifests { entries, .. } => entries,
        other => panic!("ListManifests answered {other:?}"),
    }
}

#[test]
fn the_swap_attack_is_refused_and_a_repairs_move_is_taken() {
    let rt = runtime();
    let (_dir, cluster) = start(&options(1));
    // Part 7 is committed; part 8 is another part whose shards the attacker copies.
    let ours: Vec<Bytes> = (0..3).map(|i| payload(70 + i, SHARD_BYTES)).collect();
    let theirs: Vec<Bytes> = (0..3).map(|i| payload(80 + i, SHARD_BYTES)).collect();
    let committed = part_manifest(7, &ours).to_bytes();
    let id = digest(&committed);
    rt.block_on(async {
        let t = transport(&cluster);
        for (i, shard) in ours.iter().enumerate() {
            put_shard(&t, ONE, &part_shard_key(7, i as u8), shard.clone()).await.expect("put");
        }
        for (i, shard) in theirs.iter().enumerate() {
            put_shard(&t, ONE, &part_shard_key(8, i as u8), shard.clone()).await.expect("put");
        }
        put_manifest(&t, ONE, &manifest_key(7, 0), Bytes::from(committed.clone()))
            .await
            .expect("commit");

        // 1. The other part's shards under the committed part's keys: refused, bytes kept.
        for (i, shard) in theirs.iter().enumerate() {
            let why =
                conflict(put_shard(&t, ONE, &part_shard_key(7, i as u8), shard.clone()).await);
            assert!(why.contains("never replaced by other bytes"), "{why}");
            assert_eq!(
                get_shard(&t, ONE, &part_shard_key(7, i as u8)).await.expect("get"),
                ours[i]
            );
        }
        put_shard(&t, ONE, &part_shard_key(7, 0), ours[0].clone())
            .await
            .expect("the same bytes again");

        // 2. A manifest naming the other part's shards: as a put, and as rewrites.
        let mut swapped = part_manifest(7, &theirs);
        swapped.objects[0].stripes[0].shards[2].node = NodeId(2);
        let swapped = swapped.to_bytes();
        let why =
            conflict(put_manifest(&t, ONE, &manifest_key(7, 0), swapped.clone().into()).await);
        assert!(why.contains("never replaced by other bytes"), "{why}");
        let why = conflict(replace(&t, &swapped, (1, id)).await);
        assert!(why.contains("changes what the part holds"), "{why}");
        assert!(why.contains("object 0 (model.weights) differs in its hash"), "{why}");
        let why = conflict(replace(&t, &swapped, (9, id)).await);
        assert!(why.contains("changes what the part holds"), "a high revision is no excuse: {why}");
        let why = conflict(replace(&t, b"not a manifest", (1, id)).await);
        assert!(why.contains("not a valid manifest"), "{why}");
        let why = conflict(replace(&t, &swapped, (1, digest(b"another chain"))).await);
        assert!(why.contains("chain id"), "{why}");
        assert_eq!(get_manifest(&t, ONE, &manifest_key(7, 0)).await.expect("get"), committed);
        let entries = listed(&t).await;
        assert_eq!((entries[0].revision, entries[0].hash), (0, id), "nothing changed");

        // 3. A repair's rewrite that only moves a shard is taken, and then compared against.
        let mut moved = part_manifest(7, &ours);
        moved.objects[0].stripes[0].shards[1].node = NodeId(3);
        let moved = moved.to_bytes();
        assert_eq!(replace(&t, &moved, (1, id)).await.expect("a move"), Response::ManifestStored);
        let entries = listed(&t).await;
        assert_eq!(
            (entries[0].revision, entries[0].hash, entries[0].base),
            (1, digest(&moved), id)
        );
        let why = conflict(replace(&t, &swapped, (2, id)).await);
        assert!(why.contains("changes what the part holds"), "{why}");
        assert_eq!(get_manifest(&t, ONE, &manifest_key(7, 0)).await.expect("get"), moved);

        let s = stats(&t, ONE).await;
        assert_eq!(served_failed(&s, "PutShard"), (7, 3));
        assert_eq!(served_failed(&s, "ReplaceManifest"), (1, 5));
        t.close().await;
    });
}
