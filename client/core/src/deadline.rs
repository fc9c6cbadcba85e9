//! The deadline of a priority save, pure: whether an emergency save (a preempted node's
//! SIGTERM window) should go on, how long a node may stay silent, and whether the manifest
//! commit may still start a round. Time is a parameter; the driver is the client's
//! `save::priority`.
//!
//! - **Commit reserve.** The manifest commit is the commit point, so the object data must be
//!   stored early enough to leave it time: `max(PRIORITY_SAVE_COMMIT_RESERVE_MIN_MS,
//!   PRIORITY_SAVE_COMMIT_ROUNDS` hedging thresholds)`. Once the time left is below the
//!   reserve, no more data is sent ([`GiveUp::Expired`]).
//! - **Giving up early.** When the object bytes are known, and at least a
//!   `1/PRIORITY_SAVE_SAMPLE_DIVISOR` of them are stored, the rate so far projects the time
//!   the rest needs. If even at `PRIORITY_SAVE_GIVE_UP_FACTOR` times that rate the rest would
//!   not be stored before the reserve, the save gives up now ([`GiveUp::TooSlow`]) rather
//!   than at the deadline: the process can exit sooner, and the previous checkpoint is
//!   untouched either way.
//! - **Patience.** A node with puts outstanding that answered nothing for
//!   [`SaveDeadline::patience`] (the hedging threshold, shortened to a quarter of the data
//!   time left, never below `HEDGE_MIN_MS`) is taken for stalled and its shards move: a
//!   priority save does not wait out a request timeout.
//! - **Commit rounds.** A round of manifest puts may start only before the deadline and may
//!   take only the time left ([`SaveDeadline::commit_round`]); an outcome not known by then
//!   counts as failed, and the commit rolls back what it stored (and what it may have).
//!
//! A verdict to give up is final: every later [`SaveDeadline::poll`] repeats it.

use std::time::{Duration, Instant};

use rackpoint_proto::limits::{
    HEDGE_MIN_MS, PRIORITY_SAVE_COMMIT_RESERVE_MIN_MS, PRIORITY_SAVE_COMMIT_ROUNDS,
    PRIORITY_SAVE_GIVE_UP_FACTOR, PRIORITY_SAVE_SAMPLE_DIVISOR,
};

/// Why a priority save stops before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GiveUp {
    /// The time left (`left`) no longer covers the commit reserve (`reserve`).
    Expired {
        /// Time to the deadline.
        left: Duration,
        /// Time kept for the manifest commit.
        reserve: Duration,
    },
    /// At `PRIORITY_SAVE_GIVE_UP_FACTOR` times the rate so far, the bytes left would still
    /// not be stored in the data time left.
    TooSlow {
        /// Object bytes stored.
        stored: u64,
        /// Object bytes in all.
        total: u64,
        /// Time the rest takes at the rate so far.
        projected: Duration,
        /// Time left for data (to the deadline, less the commit reserve).
        left: Duration,
    },
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GiveUp::Expired { left, reserve } => write!(
                f,
                "{} ms left, below the {} ms kept for the manifest commit",
                left.as_millis(),
                reserve.as_millis()
            ),
            GiveUp::TooSlow { stored, total, projected, left } => write!(
                f,
                "{stored} of {total} bytes stored; the rest needs about {} ms at the rate so far, \
                 {} ms are left for data",
                projected.as_millis(),
                left.as_millis()
            ),
        }
    }
}

/// What the driver should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on sending object data.
    Go,
    /// Stop: commit nothing.
    GiveUp(GiveUp),
}

/// One priority save's deadline; see the module doc.
#[derive(Debug, Clone)]
pub struct SaveDeadline {
    started: Instant,
    deadline: Instant,
    total: Option<u64>,
    stored: u64,
    reserve: Duration,
    gave_up: Option<GiveUp>,
}

/// Time kept for the manifest commit, for a hedging threshold of `hedge_after`.
pub fn commit_reserve(hedge_after: Duration) -> Duration {
    (hedge_after * PRIORITY_SAVE_COMMIT_ROUNDS)
        .max(Duration::from_millis(PRIORITY_SAVE_COMMIT_RESERVE_MIN_MS))
}

impl SaveDeadline {
    /// A save started at `started` that must be committed by `deadline`; `total` is its
    /// object bytes when known (a stream's are not), `hedge_after` the client's hedging
    /// threshold now.
    pub fn new(
        started: Instant,
        deadline: Instant,
        total: Option<u64>,
        hedge_after: Duration,
    ) -> Self {
        Self {
            started,
            deadline,
            total,
            stored: 0,
            reserve: commit_reserve(hedge_after),
            gave_up: None,
        }
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The time the save was given: from its start to its deadline.
    pub fn budget(&self) -> Duration {
        self.deadline.saturating_duration_since(self.started)
    }

    /// Object bytes stored so far.
    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// Object bytes in all, when known.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Time kept for the manifest commit.
    pub fn reserve(&self) -> Duration {
        self.reserve
    }

    /// `bytes` more object bytes are stored (every shard of their stripe acknowledged).
    pub fn on_stored(&mut self, bytes: u64) {
        self.stored = self.stored.saturating_add(bytes);
    }

    /// Time to the deadline at `now` (zero once it passed).
    pub fn left(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// Time left for object data at `now`: to the deadline, less the commit reserve.
    pub fn data_left(&self, now: Instant) -> Duration {
        self.left(now).saturating_sub(self.reserve)
    }

    /// Whether to go on sending object data at `now`.
    pub fn poll(&mut self, now: Instant) -> Verdict {
        if let Some(g) = &self.gave_up {
            return Verdict::GiveUp(g.clone());
        }
        let verdict = self.judge(now);
        if let Verdict::GiveUp(g) = &verdict {
            self.gave_up = Some(g.clone());
        }
        verdict
    }

    fn judge(&self, now: Instant) -> Verdict {
        let left = self.left(now);
        if left <= self.reserve {
            return Verdict::GiveUp(GiveUp::Expired { left, reserve: self.reserve });
        }
        let Some(total) = self.total else { return Verdict::Go };
        let remaining = total.saturating_sub(self.stored);
        let sample = (total / PRIORITY_SAVE_SAMPLE_DIVISOR).max(1);
        if remaining == 0 || self.stored < sample {
            return Verdict::Go;
        }
        let elapsed = now.saturating_duration_since(self.started).as_nanos();
        let projected_ns = u128::from(remaining) * elapsed / u128::from(self.stored);
        let data_left = self.data_left(now);
        if projected_ns > data_left.as_nanos() * u128::from(PRIORITY_SAVE_GIVE_UP_FACTOR) {
            let projected = Duration::from_nanos(u64::try_from(projected_ns).unwrap_or(u64::MAX));
            return Verdict::GiveUp(GiveUp::TooSlow {
                stored: self.stored,
                total,
                projected,
                left: data_left,
            });
        }
        Verdict::Go
    }

    /// How long a node with puts of this save outstanding may answer nothing before it is
    /// taken for stalled: the hedging threshold `hedge_after`, at most a quarter of the data
    /// time left, at least `HEDGE_MIN_MS` (a loaded node that keeps answering is not stalled).
    pub fn patience(&self, now: Instant, hedge_after: Duration) -> Duration {
        hedge_after.min(self.data_left(now) / 4).max(Duration::from_millis(HEDGE_MIN_MS))
    }

    /// Whether a round of manifest puts may start at `now`, and the time it may take: the
    /// time to the deadline, or `None` once it passed.
    pub fn commit_round(&self, now: Instant) -> Option<Duration> {
        let left = self.left(now);
        (!left.is_zero()).then_some(left)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn the_reserve_is_kept_for_the_commit() {
        let t0 = Instant::now();
        let hedge = Duration::from_millis(HEDGE_MIN_MS);
        let mut d = SaveDeadline::new(t0, at(t0, 10_000), Some(1000), hedge);
        assert_eq!(d.reserve(), commit_reserve(hedge));
        assert!(d.reserve() >= Duration::from_millis(PRIORITY_SAVE_COMMIT_RESERVE_MIN_MS));
        assert_eq!(d.poll(t0), Verdict::Go);
        let late = d.deadline() - d.reserve();
        assert!(matches!(d.poll(late), Verdict::GiveUp(GiveUp::Expired { .. })));
        assert!(
            matches!(d.poll(t0), Verdict::GiveUp(GiveUp::Expired { .. })),
            "a verdict to give up is final, even for an earlier now"
        );
    }

    #[test]
    fn a_save_on_pace_goes_on_and_one_far_behind_gives_up_early() {
        let t0 = Instant::now();
        let hedge = Duration::from_millis(HEDGE_MIN_MS);
        // 10 s to the deadline; a quarter stored after 1 s: the rest takes 3 s.
        let mut on_pace = SaveDeadline::new(t0, at(t0, 10_000), Some(4000), hedge);
        on_pace.on_stored(1000);
        assert_eq!(on_pace.poll(at(t0, 1000)), Verdict::Go);
        // A quarter stored after 4 s: the rest takes 12 s, over twice the ~5.5 s left.
        let mut behind = SaveDeadline::new(t0, at(t0, 10_000), Some(4000), hedge);
        behind.on_stored(1000);
        match behind.poll(at(t0, 4000)) {
            Verdict::GiveUp(g @ GiveUp::TooSlow { stored: 1000, total: 4000, .. }) => {
                let text = g.to_string();
                assert!(text.contains("1000 of 4000 bytes stored"), "{text}");
                assert!(text.contains("12000 ms"), "{text}");
            }
            other => panic!("expected TooSlow, got {other:?}"),
        }
    }

    #[test]
    fn no_projection_from_too_small_a_sample_or_unknown_bytes() {
        let t0 = Instant::now();
        let hedge = Duration::from_millis(HEDGE_MIN_MS);
        let mut few = SaveDeadline::new(t0, at(t0, 10_000), Some(16_000), hedge);
        few.on_stored(999); // under a sixteenth
        assert_eq!(few.poll(at(t0, 5000)), Verdict::Go);
        let mut stream = SaveDeadline::new(t0, at(t0, 10_000), None, hedge);
        stream.on_stored(1);
        assert_eq!(stream.poll(at(t0, 5000)), Verdict::Go);
        assert!(matches!(stream.poll(at(t0, 9900)), Verdict::GiveUp(GiveUp::Expired { .. })));
    }

    #[test]
    fn patience_shrinks_with_the_time_left_but_not_below_the_hedge_floor() {
        let t0 = Instant::now();
        let hedge = Duration::from_millis(2000);
        let d = SaveDeadline::new(t0, at(t0, 60_000), Some(1), hedge);
        assert_eq!(d.patience(t0, hedge), hedge, "plenty of time: the hedging threshold");
        let near = d.deadline() - d.reserve() - Duration::from_millis(1200);
        assert_eq!(d.patience(near, hedge), Duration::from_millis(300), "a quarter of 1.2 s");
        let last = d.deadline() - d.reserve();
        assert_eq!(d.patience(last, hedge), Duration::from_millis(HEDGE_MIN_MS));
    }

    #[test]
    fn commit_rounds_only_before_the_deadline() {
        let t0 = Instant::now();
        let d = SaveDeadline::new(t0, at(t0, 1000), None, MS);
        assert_eq!(d.commit_round(at(t0, 400)), Some(Duration::from_millis(600)));
        assert_eq!(d.commit_round(at(t0, 1000)), None);
        assert_eq!(d.commit_round(at(t0, 5000)), None);
    }

    proptest! {
        /// Whatever the progress and the times (never going back), the save sends data only
        /// while the commit reserve is still ahead, gives up early only when even at
        /// `PRIORITY_SAVE_GIVE_UP_FACTOR` times its rate it would miss, and a verdict to give
        /// up is final.
        #[test]
        fn go_only_with_the_reserve_ahead_and_giving_up_is_final(
            deadline_ms in 0u64..20_000,
            total in proptest::option::of(0u64..1 << 30),
            steps in proptest::collection::vec((0u64..2_000, 0u64..1 << 26), 1..40),
            hedge_ms in 0u64..3_000,
        ) {
            let t0 = Instant::now();
            let mut d = SaveDeadline::new(t0, at(t0, deadline_ms), total, Duration::from_millis(hedge_ms));
            let (mut now_ms, mut given_up) = (0u64, None);
            for (dt, bytes) in steps {
                now_ms += dt;
                d.on_stored(bytes);
                let now = at(t0, now_ms);
                let verdict = d.poll(now);
                if let Some(g) = &given_up {
                    prop_assert_eq!(&verdict, &Verdict::GiveUp(GiveUp::clone(g)));
                    continue;
                }
                match verdict {
                    Verdict::Go => prop_assert!(now + d.reserve() < d.deadline()),
                    Verdict::GiveUp(g) => {
                        if let GiveUp::TooSlow { stored, total, left, .. } = &g {
                            let remaining = u128::from(total - stored);
                            let elapsed = (now - t0).as_nanos();
                            let factor = u128::from(PRIORITY_SAVE_GIVE_UP_FACTOR);
                            prop_assert!(remaining * elapsed > factor * u128::from(*stored) * left.as_nanos());
                            prop_assert!(*stored >= (total / PRIORITY_SAVE_SAMPLE_DIVISOR).max(1));
                        }
                        given_up = Some(g);
                    }
                }
                if let Some(budget) = d.commit_round(now) {
                    prop_assert_eq!(now + budget, d.deadline(), "a commit round ends by the deadline");
                }
                let patience = d.patience(now, Duration::from_millis(hedge_ms));
                prop_assert!(patience >= Duration::from_millis(HEDGE_MIN_MS));
            }
        }
    }
}
