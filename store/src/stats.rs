//! The node's counters beyond what the engine counts: requests served and failed per message
//! kind with their latency, request bytes in and reply bytes out, and corrupt shards found (by
//! reads and by the scrubber), each corrupt shard counted once and logged with its full
//! address. `Stats` replies and the metrics endpoint both read them here.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rackpoint_proto::limits::{MAX_STATS_CORRUPT_KEYS, MAX_TRACKED_CORRUPT_SHARDS};
use rackpoint_proto::wire::RequestCounters;
use rackpoint_proto::{NodeId, NodeStats, Request, ShardKey};

use crate::engine::EngineCounts;

/// The kind recorded for requests whose header did not decode.
pub const INVALID_KIND: &str = "Invalid";

/// Every kind counted, in the order `Stats` reports them: the request kinds
/// (`Request::KINDS`), then requests that did not decode.
const KINDS: [&str; Request::KINDS.len() + 1] = {
    let mut all = [INVALID_KIND; Request::KINDS.len() + 1];
    let mut i = 0;
    while i < Request::KINDS.len() {
        all[i] = Request::KINDS[i];
        i += 1;
    }
    all
};

/// Upper bounds, in microseconds, of the request latency histogram's buckets (a last one,
/// unbounded, takes the rest): from a cached `Hello` to a 16 MiB shard on a slow disk.
pub const LATENCY_BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

#[derive(Debug, Default)]
struct KindCounters {
    served: AtomicU64,
    failed: AtomicU64,
    /// Requests per latency bucket (`LATENCY_BUCKETS_US`, then the unbounded one).
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

/// The latency of one kind's requests (served and failed), as the metrics endpoint reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// The request kind.
    pub kind: &'static str,
    /// Requests per bucket of `LATENCY_BUCKETS_US`, then those above the last bound (not
    /// cumulative).
    pub buckets: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// The sum of their latencies in microseconds.
    pub sum_us: u64,
}

/// What a node measures at the moment it is asked rather than counts: see
/// [`NodeCounters::snapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeGauges {
    /// Free bytes of the data folder's file system.
    pub disk_free_bytes: u64,
    /// Bytes of the in-flight budget held now.
    pub inflight_bytes: u64,
}

/// Free bytes of the file system holding `dir` for an unprivileged writer (0 if it cannot be
/// asked).
pub fn disk_free_bytes(dir: &Path) -> u64 {
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => s.blocks_available().saturating_mul(s.fragment_size()),
        Err(e) => {
            tracing::debug!(dir = %dir.display(), "cannot read the free space: {e}");
            0
        }
    }
}

/// Who found a corrupt shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// A client's `GetShard`.
    Read,
    /// The background scrubber.
    Scrubber,
    /// A client's `VerifyShard`.
    Verify,
}

/// The node's request and corruption counters; share it behind an `Arc`.
#[derive(Debug, Default)]
pub struct NodeCounters {
    requests: [KindCounters; KINDS.len()],
    corrupt_found: AtomicU64,
    scrubbed: AtomicU64,
    scrub_passes: AtomicU64,
    corrupt_keys: Mutex<BTreeSet<ShardKey>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    started_empty: AtomicBool,
}

impl NodeCounters {
    /// Counts one request of `kind` (a `Request::kind` name or [`INVALID_KIND`]) that took
    /// `elapsed` from its first byte read to its reply.
    pub fn record_request(&self, kind: &str, served: bool, elapsed: Duration) {
        let i = KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len() - 1);
        let c = &self.requests[i];
        let counter = if served { &c.served } else { &c.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_US.partition_point(|bound| *bound < us);
        c.latency[bucket].fetch_add(1, Ordering::Relaxed);
        c.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Counts `bytes` read off the wire for requests (prefix, header and payload).
    pub fn record_bytes_in(&self, bytes: u64) {
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `bytes` of replies written (prefix, header and payload).
    pub fn record_bytes_out(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Request bytes read and reply bytes written since start.
    pub fn bytes_in_out(&self) -> (u64, u64) {
        (self.bytes_in.load(Ordering::Relaxed), self.bytes_out.load(Ordering::Relaxed))
    }

    /// Records that the node started on an empty data folder that should have held shards.
    pub fn set_started_empty(&self) {
        self.started_empty.store(true, Ordering::Relaxed);
    }

    /// Every kind's latency, in the order `Stats` lists the kinds.
    pub fn latencies(&self) -> Vec<LatencySnapshot> {
        KINDS
            .iter()
            .zip(&self.requests)
            .map(|(kind, c)| LatencySnapshot {
                kind,
                buckets: std::array::from_fn(|i| c.latency[i].load(Ordering::Relaxed)),
                sum_us: c.latency_sum_us.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Counts one shard re-hashed by the scrubber.
    pub fn record_scrubbed(&self) {
        self.scrubbed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one complete scrubber pass over every stored shard.
    pub fn record_scrub_pass(&self) {
        self.scrub_passes.fetch_add(1, Ordering::Relaxed);
    }

    fn corrupt_keys(&self) -> MutexGuard<'_, BTreeSet<ShardKey>> {
        self.corrupt_keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs a corrupt shard with its full address and counts it once (a shard found again
    /// is logged, not counted again). Returns whether it was new.
    pub fn report_corrupt(&self, key: &ShardKey, found_by: FoundBy, reason: &str) -> bool {
        let new = {
            let mut keys = self.corrupt_keys();
            keys.len() >= MAX_TRACKED_CORRUPT_SHARDS || keys.insert(key.clone())
        };
        if new {
            self.corrupt_found.fetch_add(1, Ordering::Relaxed);
        }
        tracing::error!(
            job = %key.job, step = %key.step, rank = %key.rank, object = %key.object,
            stripe = %key.stripe, index = %key.index, ?found_by, new,
            "corrupt shard: {reason}"
        );
        new
    }

    /// Forgets that a shard was corrupt once it has been rewritten, so that a later
    /// corruption of the new bytes counts again.
    pub fn forget_corrupt(&self, key: &ShardKey) {
        if self.corrupt_found.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.corrupt_keys().remove(key);
    }

    /// Forgets every corrupt shard for which `gone` is true (deleted with its checkpoint or
    /// as an orphan).
    pub fn forget_corrupt_where(&self, mut gone: impl FnMut(&ShardKey) -> bool) {
        if self.corrupt_found.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.corrupt_keys().retain(|k| !gone(k));
    }

    /// The `Stats` reply: these counters joined with the engine's and the gauges.
    pub fn snapshot(&self, node_id: NodeId, engine: EngineCounts, gauges: NodeGauges) -> NodeStats {
        NodeStats {
            node_id,
            shards: engine.shards,
            shard_bytes: engine.shard_bytes,
            manifests: engine.manifests,
            corrupt_shards_found: self.corrupt_found.load(Ordering::Relaxed),
            scrubbed_shards: self.scrubbed.load(Ordering::Relaxed),
            scrub_passes: self.scrub_passes.load(Ordering::Relaxed),
            corrupt_shards: self
                .corrupt_keys()
                .iter()
                .take(MAX_STATS_CORRUPT_KEYS)
                .cloned()
                .collect(),
            requests: KINDS
                .iter()
                .zip(&self.requests)
                .map(|(kind, c)| RequestCounters {
                    kind: (*kind).to_owned(),
                    served: c.served.load(Ordering::Relaxed),
                    failed: c.failed.load(Ordering::Relaxed),
                })
                .collect(),
            disk_free_bytes: gauges.disk_free_bytes,
            inflight_bytes: gauges.inflight_bytes,
            started_empty: self.started_empty.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackpoint_proto::{JobName, ObjectName, Rank, ShardIndex, Step, StripeIndex};

    fn key(index: u8) -> ShardKey {
        ShardKey {
            job: JobName::new("j").expect("valid"),
            step: Step(1),
            rank: Rank(0),
            object: ObjectName::new("o").expect("valid"),
            stripe: StripeIndex(0),
            index: ShardIndex(index),
        }
    }

    fn counters_of<'a>(s: &'a NodeStats, kind: &str) -> &'a RequestCounters {
        s.requests.iter().find(|c| c.kind == kind).expect("every kind is listed")
    }

    #[test]
    fn requests_are_counted_per_kind() {
        let c = NodeCounters::default();
        let ms = Duration::from_millis;
        c.record_request("PutShard", true, ms(1));
        c.record_request("PutShard", true, ms(3));
        c.record_request("PutShard", false, ms(20_000));
        c.record_request(INVALID_KIND, false, Duration::ZERO);
        let s = c.snapshot(NodeId(4), EngineCounts::default(), NodeGauges::default());
        assert_eq!(s.requests.len(), KINDS.len());
        assert_eq!(
            (counters_of(&s, "PutShard").served, counters_of(&s, "PutShard").failed),
            (2, 1)
        );
        assert_eq!(counters_of(&s, INVALID_KIND).failed, 1);
        assert_eq!(counters_of(&s, "Stats").served, 0);
        let latencies = c.latencies();
        let put = latencies.iter().find(|l| l.kind == "PutShard").expect("listed");
        // 1 ms is within the 1,000 us bound; 3 ms within 5,000; 20 s above every bound.
        let at = |bound: u64| LATENCY_BUCKETS_US.iter().position(|b| *b == bound).expect("a bound");
        assert_eq!((put.buckets[at(1_000)], put.buckets[at(5_000)]), (1, 1));
        assert_eq!(put.buckets[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(put.buckets.iter().sum::<u64>(), 3);
        assert_eq!(put.sum_us, 20_004_000);
        assert_eq!(latencies.len(), s.requests.len());
    }

    #[test]
    fn a_corrupt_shard_counts_once_until_rewritten() {
        let c = NodeCounters::default();
        assert!(c.report_corrupt(&key(0), FoundBy::Scrubber, "test"));
        assert!(!c.report_corrupt(&key(0), FoundBy::Read, "test"));
        assert!(c.report_corrupt(&key(1), FoundBy::Read, "test"));
        c.forget_corrupt(&key(0));
        assert!(c.report_corrupt(&key(0), FoundBy::Scrubber, "test"));
        let s = c.snapshot(NodeId(1), EngineCounts::default(), NodeGauges::default());
        assert_eq!(s.corrupt_shards_found, 3);
        assert_eq!(s.corrupt_shards, [key(0), key(1)], "the keys known corrupt now");
        c.forget_corrupt_where(|k| k.index.0 == 1);
        let s = c.snapshot(NodeId(1), EngineCounts::default(), NodeGauges::default());
        assert_eq!((s.corrupt_shards_found, s.corrupt_shards), (3, vec![key(0)]));
    }

    #[test]
    fn stats_list_a_bounded_number_of_corrupt_keys() {
        let c = NodeCounters::default();
        for i in 0..(MAX_STATS_CORRUPT_KEYS as u8 + 5) {
            c.report_corrupt(&key(i), FoundBy::Verify, "test");
        }
        let s = c.snapshot(NodeId(1), EngineCounts::default(), NodeGauges::default());
        assert_eq!(s.corrupt_shards_found, MAX_STATS_CORRUPT_KEYS as u64 + 5);
        assert_eq!(s.corrupt_shards.len(), MAX_STATS_CORRUPT_KEYS);
        assert_eq!(s.corrupt_shards[0], key(0));
        assert_eq!(KINDS[..Request::KINDS.len()], Request::KINDS);
    }
}
