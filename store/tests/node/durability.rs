//! Crash safety: writes are acknowledged only once durable, so a node killed with SIGKILL in
//! the middle of concurrent writes comes back with every acknowledged shard and manifest,
//! and with each unacknowledged one either absent or whole.

use std::sync::Arc;

use bytes::Bytes;
use rackpoint_client::local_cluster::LocalCluster;
use rackpoint_client::transport::{Transport, TransportError};
use rackpoint_proto::{ErrorCode, ManifestKey, ShardKey};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use crate::common::*;

/// Writers running against the node at once.
const WRITERS: u64 = 6;
/// Acknowledged writes to wait for before stopping the node.
const ACKS_BEFORE_STOP: usize = 48;

/// One write and whether the node acknowledged it.
#[derive(Debug)]
pub enum Write {
    /// A shard write.
    Shard { key: ShardKey, bytes: Bytes, acked: bool },
    /// A manifest write.
    Manifest { key: ManifestKey, bytes: Bytes, acked: bool },
}

impl Write {
    fn acked(&self) -> bool {
        match self {
            Write::Shard { acked, .. } | Write::Manifest { acked, .. } => *acked,
        }
    }
}

/// Writer `w`: shards of checkpoint `w`, and every fourth write a manifest, until a write
/// fails. Reports every write it attempted.
async fn writer(t: Arc<Transport>, w: u64, report: mpsc::UnboundedSender<Write>) {
    for i in 0u32.. {
        let write = if i % 4 == 3 {
            let key = manifest_key(100 + w, i);
            let bytes = payload(w << 32 | u64::from(i), 2000);
            let acked = put_manifest(&t, ONE, &key, bytes.clone()).await.is_ok();
            Write::Manifest { key, bytes, acked }
        } else {
            let key = shard_key(w, i);
            let bytes = payload(w << 32 | u64::from(i), SHARD_BYTES);
            let acked = put_shard(&t, ONE, &key, bytes.clone()).await.is_ok();
            Write::Shard { key, bytes, acked }
        };
        let acked = write.acked();
        if report.send(write).is_err() || !acked {
            return;
        }
    }
}

/// Starts the writers, waits for `ACKS_BEFORE_STOP` acknowledgements, runs `stop` on the
/// node while writes are in flight, and returns every write attempted.
pub fn write_while_stopping(
    rt: &Runtime,
    cluster: &mut LocalCluster,
    stop: impl FnOnce(&mut LocalCluster),
) -> Vec<Write> {
    let t = rt.block_on(async { transport(cluster) });
    let (report, mut reports) = mpsc::unbounded_channel();
    for w in 0..WRITERS {
        rt.spawn(writer(t.clone(), w, report.clone()));
    }
    drop(report);
    let mut writes = Vec::new();
    rt.block_on(async {
        while writes.iter().filter(|w: &&Write| w.acked()).count() < ACKS_BEFORE_STOP {
            writes.push(reports.recv().await.expect("writers run until the node stops"));
        }
    });
    stop(cluster);
    rt.block_on(async {
        // Calls still waiting on the stopped node end at once when the client closes.
        t.close().await;
        while let Some(write) = reports.recv().await {
            writes.push(write);
        }
    });
    writes
}

/// Checks, on the running node, that every acknowledged write reads back byte for byte and
/// every other one is absent or whole. Returns the number of acknowledged writes.
pub fn check_writes(rt: &Runtime, cluster: &LocalCluster, writes: &[Write]) -> usize {
    rt.block_on(async {
        let t = transport(cluster);
        for write in writes {
            let (got, want, acked) = match write {
                Write::Shard { key, bytes, acked } => (get_shard(&t, ONE, key).await, bytes, acked),
                Write::Manifest { key, bytes, acked } => {
                    (get_manifest(&t, ONE, key).await, bytes, acked)
                }
            };
            match got {
                Ok(got) => assert!(got == want.to_vec(), "{write:?} came back different"),
                Err(TransportError::Remote { code: ErrorCode::NotFound, .. }) if !acked => {}
                Err(e) => panic!("{write:?}: {e}"),
            }
        }
        t.close().await;
    });
    writes.iter().filter(|w| w.acked()).count()
}

#[test]
fn acknowledged_writes_survive_kill_9_and_restart() {
    let rt = runtime();
    let (_dir, mut cluster) = start(&options(1));
    let writes = write_while_stopping(&rt, &mut cluster, |cluster| {
        let status = cluster.kill(ONE).expect("kill -9");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
    });
    assert!(!cluster.is_running(ONE));
    cluster.restart(ONE).expect("restart on the same data");
    let acked = check_writes(&rt, &cluster, &writes);
    assert!(acked >= ACKS_BEFORE_STOP, "{acked}");
}
