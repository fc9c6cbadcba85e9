//! The hedging policy, pure: a smoothed estimate of the typical shard request, the threshold
//! past which a fetch counts as late (a multiple of the typical fetch, never below
//! `HEDGE_MIN_MS`), and how soon a late fetch is looked at again. The restore planner and
//! the client's call path use it; the simulator drives the same numbers.
//!
//! Which latencies count is a rule of its own ([`HedgePolicy::observe`]): every shard put and
//! shard get the node answered (with the shard, or with an error of its own). Other requests
//! (listings, manifests, heartbeats) are not shard transfers, and a node-level failure's
//! latency is a timeout's, not the node's.

use std::time::Duration;

use rackpoint_proto::limits::HEDGE_MIN_MS;

/// A fetch is late once it takes this many times the typical fetch.
pub const LATE_MULTIPLE: u32 = 4;
/// Weight of the old estimate in the moving average, out of [`EWMA_DENOMINATOR`]: each new
/// sample moves the estimate by 1/8 of the difference.
pub const EWMA_OLD_WEIGHT: u64 = 7;
/// Denominator of the moving average's weights.
pub const EWMA_DENOMINATOR: u64 = 8;
/// While a fetch is late but its node still answers others, look again after this fraction
/// of the threshold (1/2): often enough to notice a stall, rarely enough to cost nothing.
pub const RECHECK_DIVISOR: u32 = 2;

/// A request as the estimate sorts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A shard put.
    ShardPut,
    /// A shard get.
    ShardGet,
    /// Anything else.
    Other,
}

/// The typical request latency, as an exponentially weighted moving average.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HedgePolicy {
    typical_us: u64,
}

impl HedgePolicy {
    /// Feeds the latency of a request of `kind` that its node answered, if that kind counts
    /// (see the module doc): the one way drivers feed the estimate.
    pub fn observe(&mut self, kind: RequestKind, latency: Duration) {
        if matches!(kind, RequestKind::ShardPut | RequestKind::ShardGet) {
            self.record(latency);
        }
    }

    /// Feeds one latency sample (the first sample sets the estimate).
    fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).min(u64::from(u32::MAX));
        self.typical_us = if self.typical_us == 0 {
            us
        } else {
            (self.typical_us * EWMA_OLD_WEIGHT + us) / EWMA_DENOMINATOR
        };
    }

    /// The typical request latency so far (zero before any sample).
    pub fn typical(&self) -> Duration {
        Duration::from_micros(self.typical_us)
    }

    /// The hedging threshold: [`LATE_MULTIPLE`] times the typical request, at least
    /// `HEDGE_MIN_MS`.
    pub fn threshold(&self) -> Duration {
        (self.typical() * LATE_MULTIPLE).max(Duration::from_millis(HEDGE_MIN_MS))
    }
}

/// How long after `now` a late fetch is looked at again, given the hedging threshold.
pub fn recheck_after(threshold: Duration) -> Duration {
    threshold / RECHECK_DIVISOR
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_threshold_is_four_typical_fetches_and_at_least_the_floor() {
        let mut p = HedgePolicy::default();
        assert_eq!(p.threshold(), Duration::from_millis(HEDGE_MIN_MS), "no sample yet");
        p.record(Duration::from_millis(100));
        assert_eq!(p.typical(), Duration::from_millis(100), "the first sample sets it");
        assert_eq!(p.threshold(), Duration::from_millis(400));
        p.record(Duration::from_millis(900));
        assert_eq!(p.typical(), Duration::from_millis(200), "7/8 old + 1/8 new");
        p.record(Duration::ZERO);
        assert_eq!(p.typical(), Duration::from_millis(175));
        let mut fast = HedgePolicy::default();
        fast.record(Duration::from_millis(1));
        assert_eq!(fast.threshold(), Duration::from_millis(HEDGE_MIN_MS));
        assert_eq!(recheck_after(Duration::from_millis(400)), Duration::from_millis(200));
    }

    #[test]
    fn shard_puts_and_gets_count_and_nothing_else() {
        let mut p = HedgePolicy::default();
        p.observe(RequestKind::Other, Duration::from_millis(500));
        assert_eq!(p.typical(), Duration::ZERO, "a listing is not a shard transfer");
        p.observe(RequestKind::ShardPut, Duration::from_millis(80));
        assert_eq!(p.typical(), Duration::from_millis(80));
        p.observe(RequestKind::ShardGet, Duration::from_millis(160));
        assert_eq!(p.typical(), Duration::from_millis(90));
    }

    proptest! {
        /// The estimate always lies between the smallest and largest sample, and the
        /// threshold never drops below the floor.
        #[test]
        fn the_estimate_stays_within_the_samples(samples in proptest::collection::vec(0u64..10_000_000, 1..50)) {
            let mut p = HedgePolicy::default();
            for us in &samples {
                p.record(Duration::from_micros(*us));
            }
            let (lo, hi) = (samples.iter().min().copied().unwrap_or(0), samples.iter().max().copied().unwrap_or(0));
            let typical = u64::try_from(p.typical().as_micros()).unwrap_or(u64::MAX);
            prop_assert!(lo <= typical && typical <= hi, "{} not in {}..={}", typical, lo, hi);
            prop_assert!(p.threshold() >= Duration::from_millis(HEDGE_MIN_MS));
        }
    }
}
