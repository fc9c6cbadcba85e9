//! Requests over QUIC with mutual TLS: every message kind round-trips, and `Stats` counts
//! what was stored and served.

use bytes::Bytes;
use rackpoint_client::transport::TransportError;
use rackpoint_proto::{ErrorCode, NodeId, Request, Response, Step};

use crate::common::*;

#[test]
fn shards_and_manifests_round_trip_and_stats_count_them() {
    let rt = runtime();
    let (_dir, cluster) = start(&options(1));
    rt.block_on(async {
        let t = transport(&cluster);
        let hello = t.call(ONE, &Request::Hello, Bytes::new()).await.expect("Hello").response;
        let Response::Hello { node_id, rack, used_bytes, .. } = hello else { panic!("{hello:?}") };
        assert_eq!((node_id, rack.as_str(), used_bytes), (ONE, "rack-0", 0));

        let shards: Vec<_> =
            (0..3).map(|i| (shard_key(7, i), payload(u64::from(i), SHARD_BYTES))).collect();
        for (key, bytes) in &shards {
            let reply = put_shard(&t, ONE, key, bytes.clone()).await.expect("put");
            assert_eq!(reply.response, Response::ShardStored);
        }
        for (key, bytes) in &shards {
            assert_eq!(get_shard(&t, ONE, key).await.expect("get"), bytes.to_vec());
        }
        let manifest = payload(99, 1000);
        put_manifest(&t, ONE, &manifest_key(7, 0), manifest.clone()).await.expect("manifest");
        assert_eq!(
            get_manifest(&t, ONE, &manifest_key(7, 0)).await.expect("get"),
            manifest.to_vec()
        );

        let missing = get_shard(&t, ONE, &shard_key(8, 0)).await.expect_err("missing");
        assert!(
            matches!(missing, TransportError::Remote { code: ErrorCode::NotFound, .. }),
            "{missing}"
        );

        let list = Request::ListManifests { job: job(), after: None, limit: 10 };
        let listed = t.call(ONE, &list, Bytes::new()).await.expect("list").response;
        let Response::Manifests { entries, more, deleting } = listed else { panic!("{listed:?}") };
        assert!(!more && deleting.is_empty());
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].step, entries[0].len), (Step(7), 1000));
        assert_eq!(entries[0].hash, digest(&manifest));

        let s = stats(&t, ONE).await;
        assert_eq!(s.node_id, ONE);
        assert_eq!((s.shards, s.shard_bytes, s.manifests), (3, 3 * SHARD_BYTES as u64, 1));
        assert_eq!(served_failed(&s, "PutShard"), (3, 0));
        assert_eq!(served_failed(&s, "GetShard"), (3, 1));
        assert_eq!(served_failed(&s, "PutManifest"), (1, 0));
        assert_eq!(served_failed(&s, "GetManifest"), (1, 0));
        assert_eq!(served_failed(&s, "ListManifests"), (1, 0));
        assert_eq!(served_failed(&s, "Hello"), (1, 0));

        let delete = Request::DeleteCheckpoint { job: job(), step: Step(7) };
        let deleted = t.call(ONE, &delete, Bytes::new()).await.expect("delete").response;
        assert_eq!(deleted, Response::CheckpointDeleted { shards: 3, manifests: 1 });
        let gone = get_shard(&t, ONE, &shards[0].0).await.expect_err("deleted");
        assert!(matches!(gone, TransportError::Remote { code: ErrorCode::NotFound, .. }));
        let s = stats(&t, ONE).await;
        assert_eq!((s.shards, s.shard_bytes, s.manifests), (0, 0, 0));
        t.close().await;
    });
}

#[test]
fn many_concurrent_requests_share_one_connection_per_node() {
    let rt = runtime();
    let (_dir, cluster) = start(&options(3));
    rt.block_on(async {
        let t = transport(&cluster);
        let mut tasks = Vec::new();
        for i in 0..96u32 {
            let t = t.clone();
            let node = NodeId(i % 3 + 1);
            tasks.push(tokio::spawn(async move {
                let key = shard_key(1, i);
                let bytes = payload(u64::from(i), SHARD_BYTES);
                put_shard(&t, node, &key, bytes.clone()).await.expect("put");
                assert_eq!(get_shard(&t, node, &key).await.expect("get"), bytes.to_vec());
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        for id in 1..=3 {
            let s = stats(&t, NodeId(id)).await;
            assert_eq!(s.shards, 32, "node {id}");
            assert_eq!(served_failed(&s, "PutShard"), (32, 0));
        }
        t.close().await;
    });
}

#[test]
fn a_full_node_refuses_with_disk_full_and_keeps_what_it_has() {
    let rt = runtime();
    let opts = rackpoint_client::cluster_dir::InitOptions {
        capacity_bytes: 4 * SHARD_BYTES as u64,
        ..options(1)
    };
    let (_dir, cluster) = start(&opts);
    rt.block_on(async {
        let t = transport(&cluster);
        let shards: Vec<_> =
            (0..4).map(|i| (shard_key(3, i), payload(u64::from(i), SHARD_BYTES))).collect();
        for (key, bytes) in &shards {
            put_shard(&t, ONE, key, bytes.clone()).await.expect("fits");
        }
        let err = put_shard(&t, ONE, &shard_key(3, 4), payload(4, SHARD_BYTES))
            .await
            .expect_err("over capacity");
        assert!(matches!(err, TransportError::Remote { code: ErrorCode::DiskFull, .. }), "{err}");
        assert!(!err.is_node_failure());
        // A smaller shard does not fit either, and nothing stored is lost.
        let err = put_shard(&t, ONE, &shard_key(3, 5), payload(5, 100)).await.expect_err("full");
        assert!(matches!(err, TransportError::Remote { code: ErrorCode::DiskFull, .. }), "{err}");
        for (key, bytes) in &shards {
            assert_eq!(get_shard(&t, ONE, key).await.expect("still readable"), bytes.to_vec());
        }
        let s = stats(&t, ONE).await;
        assert_eq!((s.shards, s.shard_bytes), (4, 4 * SHARD_BYTES as u64));
        assert_eq!(served_failed(&s, "PutShard"), (4, 2));
        // Deleting frees capacity again.
        let delete = Request::DeleteCheckpoint { job: job(), step: Step(3) };
        t.call(ONE, &delete, Bytes::new()).await.expect("delete");
        put_shard(&t, ONE, &shard_key(3, 4), payload(4, SHARD_BYTES)).await.expect("fits again");
        t.close().await;
    });
}
