//! The maintenance requests against a real node process: `VerifyShard` re-hashes a shard
//! where it lies (good and rotted on disk), `DeleteManifest` and `ReplaceManifest` follow
//! their rules and survive SIGKILL, the scrubber finds a shard rotted on disk and lists it
//! in `Stats`, and orphan shards are deleted only past the grace period and never beside a
//! manifest of their part.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rackpoint_client::cluster_dir::NODE_FILE;
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::transport::{Transport, TransportError};
use rackpoint_proto::{
    ErrorCode, ManifestKey, NodeStats, PartShards, Rank, Request, Response, ShardKey, Step,
};

use crate::common::*;

/// Longest a test waits for a scrub pass (generous: the machine is shared).
const SCRUB_DEADLINE: Duration = Duration::from_secs(60);
/// Interval between two `Stats` polls while waiting for a scrub pass.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

async fn call(t: &Transport, request: Request) -> Result<Response, TransportError> {
    Ok(t.call(ONE, &request, Bytes::new()).await?.response)
}

async fn verify(t: &Transport, key: &ShardKey) -> Result<Response, TransportError> {
    call(t, Request::VerifyShard { key: key.clone() }).await
}

fn error_code(result: Result<Response, TransportError>) -> Option<ErrorCode> {
    match result {
        Err(TransportError::Remote { code, .. }) => Some(code),
        _ => None,
    }
}

/// Sets `option = value` in the node's `node.toml`, for its next start.
fn set_node_option(cluster: &LocalCluster, option: &str, value: &str) {
    let path = cluster.node_dir(ONE).join(NODE_FILE);
    let text = std::fs::read_to_string(&path).expect("node.toml");
    let line = format!("{option} = {value}");
    let mut lines: Vec<&str> =
        text.lines().filter(|l| !l.starts_with(&format!("{option} "))).collect();
    // Top-level keys go before any table.
    let at = lines.iter().position(|l| l.starts_with('[')).unwrap_or(lines.len());
    lines.insert(at, &line);
    std::fs::write(&path, lines.join("\n")).expect("write node.toml");
}

/// Polls `Stats` until a whole scrub pass is done (bounded by `SCRUB_DEADLINE`).
async fn after_a_scrub_pass(t: &Transport) -> NodeStats {
    let deadline = Instant::now() + SCRUB_DEADLINE;
    loop {
        let s = stats(t, ONE).await;
        if s.scrub_passes >= 1 {
            return s;
        }
        assert!(Instant::now() < deadline, "no scrub pass within {SCRUB_DEADLINE:?}: {s:?}");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[test]
fn verify_shard_rehashes_in_place_and_reports_rot() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    let (victim, bystander) = (shard_key(3, 0), shard_key(3, 1));
    let victim_bytes = payload(30, SHARD_BYTES);
    let bystander_bytes = payload(31, SHARD_BYTES);
    rt.block_on(async {
        let t = transport(&cluster);
        put_shard(&t, ONE, &victim, victim_bytes.clone()).await.expect("put");
        put_shard(&t, ONE, &bystander, bystander_bytes.clone()).await.expect("put");
        let good = verify(&t, &victim).await.expect("verifies");
        let want = Response::ShardVerified { hash: digest(&victim_bytes), len: SHARD_BYTES as u32 };
        assert_eq!(good, want);
        assert_eq!(error_code(verify(&t, &shard_key(4, 0)).await), Some(ErrorCode::NotFound));
        t.close().await;
    });
    // Only VerifyShard finds the rot here: no scrubber races it.
    set_node_option(&cluster, "scrub_bytes_per_sec", "0");
    let needle = &victim_bytes[SHARD_BYTES / 2..SHARD_BYTES / 2 + 64];
    cluster.corrupt_on_disk(ONE, &[needle]).expect("the shard's bytes are on disk");
    rt.block_on(async {
        let t = transport(&cluster);
        assert_eq!(error_code(verify(&t, &victim).await), Some(ErrorCode::Corrupt));
        let other = verify(&t, &bystander).await.expect("the other shard is intact");
        assert!(matches!(other, Response::ShardVerified { hash, .. } if hash == digest(&bystander_bytes)));
        let s = stats(&t, ONE).await;
        assert!(s.corrupt_shards.contains(&victim), "Stats lists the rotted shard: {s:?}");
        assert!(!s.corrupt_shards.contains(&bystander));
        assert_eq!(served_failed(&s, "VerifyShard"), (1, 1));
        put_shard(&t, ONE, &victim, victim_bytes.clone()).await.expect("a rewrite repairs it");
        verify(&t, &victim).await.expect("verifies after the rewrite");
        assert!(stats(&t, ONE).await.corrupt_shards.is_empty(), "no longer listed");
        t.close().await;
    });
}

#[test]
fn manifest_delete_and_replace_follow_their_rules_and_survive_sigkill() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    let key = manifest_key(5, 0);
    let shards: Vec<Bytes> = (0..3).map(|i| payload(50 + i, 64)).collect();
    let first = part_manifest(5, &shards);
    let mut moved = first.clone();
    moved.objects[0].stripes[0].shards[2].node = rackpoint_proto::NodeId(2);
    let (first, repaired) = (Bytes::from(first.to_bytes()), Bytes::from(moved.to_bytes()));
    let replace = |bytes: &Bytes, revision| Request::ReplaceManifest {
        key: key.clone(),
        world_size: 1,
        hash: digest(bytes),
        revision,
        base: digest(&first),
    };
    rt.block_on(async {
        let t = transport(&cluster);
        put_manifest(&t, ONE, &key, first.clone()).await.expect("put");
        t.call(ONE, &replace(&repaired, 1), repaired.clone()).await.expect("a higher revision");
        let older = t.call(ONE, &replace(&first, 0), first.clone()).await.map(|r| r.response);
        assert_eq!(error_code(older), Some(ErrorCode::Conflict), "never downgraded");
        let put_again = put_manifest(&t, ONE, &key, first.clone()).await.map(|r| r.response);
        assert_eq!(error_code(put_again), Some(ErrorCode::Conflict), "a put never undoes a repair");
        t.close().await;
    });
    cluster.kill(ONE).expect("SIGKILL");
    cluster.restart(ONE).expect("restart");
    rt.block_on(async {
        let t = transport(&cluster);
        let listed = call(&t, Request::ListManifests { job: job(), after: None, limit: 10 }).await;
        let Ok(Response::Manifests { entries, .. }) = listed else { panic!("{listed:?}") };
        assert_eq!((entries.len(), entries[0].revision), (1, 1));
        assert_eq!((entries[0].hash, entries[0].base), (digest(&repaired), digest(&first)));
        assert_eq!(get_manifest(&t, ONE, &key).await.expect("get"), repaired.to_vec());

        let wrong = Request::DeleteManifest { key: key.clone(), hash: Some(digest(&first)) };
        assert_eq!(error_code(call(&t, wrong).await), Some(ErrorCode::Conflict));
        let right = Request::DeleteManifest { key: key.clone(), hash: Some(digest(&repaired)) };
        assert_eq!(
            call(&t, right).await.expect("deletes"),
            Response::ManifestDeleted { existed: true }
        );
        let again = Request::DeleteManifest { key: key.clone(), hash: None };
        assert_eq!(
            call(&t, again).await.expect("idempotent"),
            Response::ManifestDeleted { existed: false }
        );
        let gone = get_manifest(&t, ONE, &key).await.map(|_| ());
        assert!(matches!(gone, Err(TransportError::Remote { code: ErrorCode::NotFound, .. })));
        assert_eq!(stats(&t, ONE).await.manifests, 0);
        t.close().await;
    });
}

#[test]
fn the_scrubber_finds_a_shard_rotted_on_disk() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    let shards: Vec<_> =
        (0..8).map(|i| (shard_key(6, i), payload(60 + u64::from(i), SHARD_BYTES))).collect();
    rt.block_on(async {
        let t = transport(&cluster);
        for (key, bytes) in &shards {
            put_shard(&t, ONE, key, bytes.clone()).await.expect("put");
        }
        t.close().await;
    });
    set_node_option(&cluster, "scrub_start_jitter_ms", "0");
    let (victim, victim_bytes) = &shards[5];
    let needle = &victim_bytes[1000..1064];
    cluster.corrupt_on_disk(ONE, &[needle]).expect("the shard's bytes are on disk");
    rt.block_on(async {
        let t = transport(&cluster);
        let s = after_a_scrub_pass(&t).await;
        assert_eq!(s.corrupt_shards, std::slice::from_ref(victim), "{s:?}");
        assert_eq!(s.corrupt_shards_found, 1);
        assert!(s.scrubbed_shards >= shards.len() as u64, "{s:?}");
        t.close().await;
    });
    let log = std::fs::read_to_string(cluster.node_dir(ONE).join("node.log")).expect("node.log");
    assert!(log.contains("corrupt shard") && log.contains("Scrubber"), "the log names it");
}

fn list_parts(entries: Response) -> Vec<PartShards> {
    match entries {
        Response::Parts { entries, more: false } => entries,
        other => panic!("expected one page of parts, got {other:?}"),
    }
}

#[test]
fn orphans_go_only_past_the_grace_and_never_beside_a_manifest() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    let orphan = ManifestKey { job: job(), step: Step(9), rank: Rank(0) };
    let committed = ManifestKey { rank: Rank(1), ..orphan.clone() };
    let shard = |part: &ManifestKey, i| ShardKey { rank: part.rank, ..shard_key(9, i) };
    rt.block_on(async {
        let t = transport(&cluster);
        for i in 0..4 {
            put_shard(&t, ONE, &shard(&orphan, i), payload(u64::from(i), SHARD_BYTES))
                .await
                .expect("put");
        }
        put_shard(&t, ONE, &shard(&committed, 0), payload(9, SHARD_BYTES)).await.expect("put");
        put_manifest(&t, ONE, &committed, payload(10, 500)).await.expect("manifest");
        let parts = list_parts(
            call(&t, Request::ListParts { job: job(), after: None, limit: 10 })
                .await
                .expect("list"),
        );
        let summary: Vec<_> = parts.iter().map(|p| (p.rank.0, p.shards, p.bytes)).collect();
        let sb = SHARD_BYTES as u64;
        assert_eq!(summary, [(0, 4, 4 * sb), (1, 1, sb)]);
        let age = parts[0].newest_age_ms;

        // A grace longer than the shards' age keeps them all: the save may still be running.
        let young =
            Request::DeleteOrphanShards { key: orphan.clone(), min_age_ms: age + 3_600_000 };
        let kept = call(&t, young).await.expect("sweep");
        assert_eq!(kept, Response::OrphansDeleted { shards: 0, bytes: 0, kept_young: 4 });
        let beside = Request::DeleteOrphanShards { key: committed.clone(), min_age_ms: 0 };
        assert_eq!(error_code(call(&t, beside).await), Some(ErrorCode::Conflict));

        // Their age as the node reported it has passed for certain: now they go.
        let old = Request::DeleteOrphanShards { key: orphan.clone(), min_age_ms: age };
        let swept = call(&t, old).await.expect("sweep");
        assert_eq!(swept, Response::OrphansDeleted { shards: 4, bytes: 4 * sb, kept_young: 0 });
        t.close().await;
    });
    cluster.kill(ONE).expect("SIGKILL");
    cluster.restart(ONE).expect("restart");
    rt.block_on(async {
        let t = transport(&cluster);
        let parts = list_parts(
            call(&t, Request::ListParts { job: job(), after: None, limit: 10 })
                .await
                .expect("list"),
        );
        assert_eq!(parts.iter().map(|p| p.rank).collect::<Vec<_>>(), [Rank(1)]);
        let s = stats(&t, ONE).await;
        assert_eq!((s.shards, s.shard_bytes, s.manifests), (1, SHARD_BYTES as u64, 1));
        assert!(get_shard(&t, ONE, &shard(&committed, 0)).await.is_ok());
        t.close().await;
    });
}
