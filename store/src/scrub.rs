//! The background scrubber: walks every stored shard, re-hashes it at no more than
//! `scrub_bytes_per_sec`, and reports corrupt ones (logged with their full address, counted
//! in `Stats`). It stops as soon as the node shuts down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rackpoint_proto::limits::{SCRUB_BATCH_KEYS, SCRUB_PASS_PAUSE_MS};
use rackpoint_proto::ShardKey;
use tokio::sync::watch;

use crate::engine::{Engine, EngineError};
use crate::stats::{FoundBy, NodeCounters};

/// Paces work to a byte rate: the `n`-th byte may start no earlier than `n / rate` seconds
/// after the start, so no window of time ever sees more than the rate (plus one shard).
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_sec: u64,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    /// A pacer at `bytes_per_sec` (must be positive) starting at `start`.
    pub fn new(bytes_per_sec: u64, start: Instant) -> Self {
        Self { bytes_per_sec: bytes_per_sec.max(1), start, bytes: 0 }
    }

    /// Accounts `len` more bytes and returns when the work on them may begin: once every
    /// byte before them has been paid for at the rate.
    pub fn reserve(&mut self, len: u64) -> Instant {
        let due =
            self.start + Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_sec as f64);
        self.bytes += len;
        due
    }
}

/// The scrubber of one node.
#[derive(Debug)]
pub struct Scrubber {
    engine: Arc<Engine>,
    counters: Arc<NodeCounters>,
    bytes_per_sec: u64,
}

/// How a pass ended.
enum PassEnd {
    Done,
    Shutdown,
}

/// Waits for `deadline`; false if shutdown came first.
async fn sleep_until(deadline: Instant, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep_until(deadline.into()) => true,
        _ = shutdown.wait_for(|stop| *stop) => false,
    }
}

impl Scrubber {
    /// A scrubber over `engine` at `bytes_per_sec` (must be positive; 0 means "do not run
    /// one", which the caller decides).
    pub fn new(engine: Arc<Engine>, counters: Arc<NodeCounters>, bytes_per_sec: u64) -> Self {
        Self { engine, counters, bytes_per_sec }
    }

    /// Runs passes until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(bytes_per_sec = self.bytes_per_sec, "scrubber started");
        loop {
            if let PassEnd::Shutdown = self.pass(&mut shutdown).await {
                break;
            }
            let pause = Instant::now() + Duration::from_millis(SCRUB_PASS_PAUSE_MS);
            if !sleep_until(pause, &mut shutdown).await {
                break;
            }
        }
        tracing::info!("scrubber stopped");
    }

    async fn pass(&self, shutdown: &mut watch::Receiver<bool>) -> PassEnd {
        let mut pacer = Pacer::new(self.bytes_per_sec, Instant::now());
        let mut cursor: Option<ShardKey> = None;
        loop {
            let engine = self.engine.clone();
            let after = cursor.clone();
            let scan = move || engine.scan_shards(after.as_ref(), SCRUB_BATCH_KEYS);
            let batch = match tokio::task::spawn_blocking(scan).await {
                Ok(Ok(batch)) if !batch.is_empty() => batch,
                Ok(Ok(_)) => return PassEnd::Done,
                Ok(Err(e)) => return self.scan_failed(&e.to_string()),
                Err(e) => return self.scan_failed(&e.to_string()),
            };
            for (key, len) in batch {
                if !sleep_until(pacer.reserve(u64::from(len)), shutdown).await {
                    return PassEnd::Shutdown;
                }
                self.check(&key).await;
                cursor = Some(key);
            }
        }
    }

    fn scan_failed(&self, reason: &str) -> PassEnd {
        tracing::warn!("scrubber could not list shards: {reason}");
        PassEnd::Done
    }

    async fn check(&self, key: &ShardKey) {
        let engine = self.engine.clone();
        let k = key.clone();
        let result = tokio::task::spawn_blocking(move || engine.verify_shard(&k)).await;
        match result {
            Ok(Ok(_)) => self.counters.record_scrubbed(),
            Ok(Err(EngineError::Corrupt { reason })) => {
                self.counters.record_scrubbed();
                self.counters.report_corrupt(key, FoundBy::Scrubber, &reason);
            }
            // Deleted since it was listed.
            Ok(Err(EngineError::NotFound)) => {}
            Ok(Err(e)) => {
                tracing::warn!(%key.job, %key.step, "scrubber could not read a shard: {e}")
            }
            Err(e) => tracing::warn!("scrubber task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;
    use rackpoint_proto::{Digest, JobName, ObjectName, Rank, ShardIndex, Step, StripeIndex};

    #[test]
    fn the_pacer_spaces_work_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000, t0);
        assert_eq!(p.reserve(500), t0);
        assert_eq!(p.reserve(1500), t0 + Duration::from_millis(500));
        assert_eq!(p.reserve(10), t0 + Duration::from_millis(2000));
    }

    fn key(stripe: u32) -> ShardKey {
        ShardKey {
            job: JobName::new("job").expect("valid"),
            step: Step(1),
            rank: Rank(0),
            object: ObjectName::new("o").expect("valid"),
            stripe: StripeIndex(stripe),
            index: ShardIndex(0),
        }
    }

    #[tokio::test]
    async fn a_pass_rehashes_every_shard_and_finds_the_corrupt_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default()).expect("opens"));
        for stripe in 0..(SCRUB_BATCH_KEYS as u32 + 3) {
            let b = stripe.to_be_bytes();
            engine.put_shard(&key(stripe), Digest(*blake3::hash(&b).as_bytes()), &b).expect("put");
        }
        engine.overwrite_bytes_for_test(&key(7).encode(), b"rot!");
        let counters = Arc::new(NodeCounters::default());
        let scrubber = Scrubber::new(engine.clone(), counters.clone(), u64::MAX);
        let (_tx, mut rx) = watch::channel(false);
        assert!(matches!(scrubber.pass(&mut rx).await, PassEnd::Done));
        let s = counters.snapshot(rackpoint_proto::NodeId(1), engine.counts());
        assert_eq!(s.scrubbed_shards, SCRUB_BATCH_KEYS as u64 + 3);
        assert_eq!(s.corrupt_shards_found, 1);
    }

    #[tokio::test]
    async fn the_scrubber_stops_on_shutdown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Arc::new(Engine::open(dir.path(), EngineOptions::default()).expect("opens"));
        let b = vec![1u8; 4096];
        engine.put_shard(&key(0), Digest(*blake3::hash(&b).as_bytes()), &b).expect("put");
        engine.put_shard(&key(1), Digest(*blake3::hash(&b).as_bytes()), &b).expect("put");
        // One byte per second: the second shard would be due in over an hour.
        let scrubber = Scrubber::new(engine, Arc::default(), 1);
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(scrubber.run(rx));
        tx.send(true).expect("the scrubber is listening");
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the scrubber stops promptly")
            .expect("no panic");
    }
}
