//! Corruption on disk: bytes of a stored shard flipped in the node's RocksDB files while it
//! is stopped are reported as `Corrupt` (never served), counted in `Stats`, and do not
//! affect other shards.

use std::path::{Path, PathBuf};

use rackpoint_client::cluster_dir::NODE_DATA_DIR;
use rackpoint_client::transport::TransportError;
use rackpoint_proto::ErrorCode;

use crate::common::*;

/// Every file under `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Flips one byte in the middle of every copy of `needle` in the files under `dir`;
/// returns the files changed.
fn flip_copies(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut changed = Vec::new();
    for file in files(dir) {
        let mut bytes = std::fs::read(&file).expect("read");
        let mut hit = false;
        let mut i = 0;
        while let Some(at) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
            bytes[i + at + needle.len() / 2] ^= 0x5a;
            i += at + needle.len();
            hit = true;
        }
        if hit {
            std::fs::write(&file, &bytes).expect("write");
            changed.push(file);
        }
    }
    changed
}

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
    // Stop, start and stop again: the restart replays the write-ahead log into table files,
    // so the shard's bytes now sit in an SST file rather than only in the log.
    assert!(cluster.terminate(ONE).expect("SIGTERM").success());
    cluster.restart(ONE).expect("restart");
    assert!(cluster.terminate(ONE).expect("SIGTERM").success());
    let data = cluster.node_dir(ONE).join(NODE_DATA_DIR);
    let needle = &victim_bytes[SHARD_BYTES / 2..SHARD_BYTES / 2 + 64];
    let changed = flip_copies(&data, needle);
    assert!(!changed.is_empty(), "the shard's bytes are somewhere in {}", data.display());
    assert!(
        changed.iter().all(|f| f.extension().is_some_and(|e| e == "sst" || e == "blob")),
        "the bytes were only in table files: {changed:?}"
    );
    cluster.restart(ONE).expect("restart on the corrupted data");
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
