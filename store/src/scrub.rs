//! The background scrubber: walks every stored shard, re-hashes it, and reports corrupt ones
//! (logged with their full address, counted and listed in `Stats`). Two bounds pace it: a
//! byte rate (`scrub_bytes_per_sec`) and a tranquilizer (after each shard it sleeps
//! `SCRUB_TRANQUILITY` times its recent average step, so it never takes more than a fifth
//! of the disk's time however slow the disk is at the moment). The first pass starts after
//! a random delay so that nodes started together do not scrub in step. It stops as soon as
//! the node shuts down.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rackpoint_proto::limits::{
    SCRUB_BATCH_KEYS, SCRUB_PASS_PAUSE_MS, SCRUB_TRANQUILITY, SCRUB_TRANQUILIZER_WINDOW,
};
use rackpoint_proto::pacing::Pacer;
use rackpoint_proto::ShardKey;
use tokio::sync::watch;

use crate::engine::{Engine, EngineError};
use crate::stats::{FoundBy, NodeCounters};

/// Garage's tranquilizer: remembers the last `SCRUB_TRANQUILIZER_WINDOW` step times and
/// asks for a pause of `tranquility` times their average after each step, so the work
/// takes at most `1 / (1 + tranquility)` of the time whatever a step costs.
#[derive(Debug, Clone)]
pub struct Tranquilizer {
    tranquility: u32,
    steps: VecDeque<Duration>,
    sum: Duration,
}

impl Tranquilizer {
    /// A tranquilizer with no steps observed yet.
    pub fn new(tranquility: u32) -> Self {
        Self {
            tranquility,
            steps: VecDeque::with_capacity(SCRUB_TRANQUILIZER_WINDOW),
            sum: Duration::ZERO,
        }
    }

    /// Records one step's duration and returns the pause to take before the next.
    pub fn observe(&mut self, step: Duration) -> Duration {
        if self.steps.len() == SCRUB_TRANQUILIZER_WINDOW {
            let oldest = self.steps.pop_front().unwrap_or_default();
            self.sum = self.sum.saturating_sub(oldest);
        }
        self.steps.push_back(step);
        self.sum += step;
        let average = self.sum / self.steps.len() as u32;
        average.saturating_mul(self.tranquility)
    }
}

/// A random delay in `[0, max_ms]` (std's per-process random hash keys as the source).
fn random_delay(max_ms: u64) -> Duration {
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(max_ms);
    Duration::from_millis(h.finish() % (max_ms + 1))
}

/// The scrubber of one node.
#[derive(Debug)]
pub struct Scrubber {
    engine: Arc<Engine>,
    counters: Arc<NodeCounters>,
    bytes_per_sec: u64,
    start_jitter_ms: u64,
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
        Self { engine, counters, bytes_per_sec, start_jitter_ms: 0 }
    }

    /// Starts the first pass after a random delay of at most `ms`.
    pub fn with_start_jitter(self, ms: u64) -> Self {
        Self { start_jitter_ms: ms, ..self }
    }

    /// Runs passes until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let delay = random_delay(self.start_jitter_ms);
        tracing::info!(
            bytes_per_sec = self.bytes_per_sec,
            tranquility = SCRUB_TRANQUILITY,
            start_delay_ms = delay.as_millis() as u64,
            "scrubber started"
        );
        if !sleep_until(Instant::now() + delay, &mut shutdown).await {
            return;
        }
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
        let mut tranquilizer = Tranquilizer::new(SCRUB_TRANQUILITY);
        let mut not_before = Instant::now();
        let mut cursor: Option<ShardKey> = None;
        loop {
            let engine = self.engine.clone();
            let after = cursor.clone();
            let scan = move || engine.scan_shards(after.as_ref(), SCRUB_BATCH_KEYS);
            let batch = match tokio::task::spawn_blocking(scan).await {
                Ok(Ok(batch)) if !batch.is_empty() => batch,
                Ok(Ok(_)) => {
                    self.counters.record_scrub_pass();
                    return PassEnd::Done;
                }
                Ok(Err(e)) => return self.scan_failed(&e.to_string()),
                Err(e) => return self.scan_failed(&e.to_string()),
            };
            for (key, len) in batch {
                let due = pacer.reserve(u64::from(len)).max(not_before);
                if !sleep_until(due, shutdown).await {
                    return PassEnd::Shutdown;
                }
                let started = Instant::now();
                self.check(&key).await;
                not_before = Instant::now() + tranquilizer.observe(started.elapsed());
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
    fn the_tranquilizer_pauses_a_multiple_of_the_recent_average() {
        let ms = Duration::from_millis;
        let mut t = Tranquilizer::new(4);
        assert_eq!(t.observe(ms(10)), ms(40));
        assert_eq!(t.observe(ms(30)), ms(80), "average of 10 and 30, times 4");
        for _ in 0..SCRUB_TRANQUILIZER_WINDOW {
            t.observe(ms(5));
        }
        assert_eq!(t.observe(ms(5)), ms(20), "old steps leave the window");
        assert_eq!(Tranquilizer::new(0).observe(ms(100)), Duration::ZERO);
    }

    #[test]
    fn the_start_delay_stays_within_the_jitter() {
        assert_eq!(random_delay(0), Duration::ZERO);
        let delays: Vec<_> = (0..64).map(|_| random_delay(1000)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(1000)));
        assert!(delays.iter().any(|d| *d != delays[0]), "the delay varies: {delays:?}");
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
        let s = counters.snapshot(rackpoint_proto::NodeId(1), engine.counts(), Default::default());
        assert_eq!(s.scrubbed_shards, SCRUB_BATCH_KEYS as u64 + 3);
        assert_eq!((s.corrupt_shards_found, s.scrub_passes), (1, 1));
        assert_eq!(s.corrupt_shards, [key(7)]);
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
