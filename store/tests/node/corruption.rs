//! Corruption on disk: bytes of a stored shard flipped in the node's files while it is
//! stopped are reported as `Corrupt` (never served), counted in `Stats`, and do not
//! affect other shards.

use rackpoint_client::transport::TransportError;
use rackpoint_proto::ErrorCode;

use crate::common::*;

#[test]
fn flipped_bytes_on_disk_are_reported_as_corrupt() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    let victim = shard_key(2, 0);
    let bystander = shard_key(2, 1);
    let victim_bytes = payload(20, SHARD_BYTES);
    let bystander_bytes = payload(21, SHARD_BYTES);
    rt.block_on(async {
        let t = transport(&cluster);
        put_shard(&t, ONE, &victim, victim_bytes.clone()).await.expect("put");
        put_shard(&t, ONE, &bystander, bystander_bytes.clone()).await.expect("put");
        t.close().await;
    });
    let needle = &victim_bytes[SHARD_BYTES / 2..SHARD_BYTES / 2 + 64];
    let changed = cluster.corrupt_on_disk(ONE, &[needle]).expect("the shard's bytes are on disk");
    assert!(
        changed.len() == 1 && changed[0].extension().is_some_and(|e| e == "seg"),
        "the bytes were written once, to the checkpoint's segment file (not also a WAL): {changed:?}"
    );
    rt.block_on(async {
        let t = transport(&cluster);
        let err = get_shard(&t, ONE, &victim).await.expect_err("corrupt");
        assert!(matches!(err, TransportError::Remote { code: ErrorCode::Corrupt, .. }), "{err}");
        assert!(!err.is_node_failure());
        let other = get_shard(&t, ONE, &bystander).await.expect("another shard is intact");
        assert_eq!(other, bystander_bytes.to_vec());
        let s = stats(&t, ONE).await;
        assert!(s.corrupt_shards_found >= 1, "{s:?}");
        t.close().await;
    });
}
