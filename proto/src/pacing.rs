//! Pacing work to a byte rate, shared by the node's scrubber and the client's repair reads.
//! Pure: the caller passes the start instant and sleeps until the instants it is given.

use std::time::{Duration, Instant};

/// Paces work to a byte rate: the `n`-th byte may start no earlier than `n / rate` seconds
/// after the start, so no window of time ever sees more than the rate (plus one item).
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_sec: u64,
    start: Instant,
    bytes: u64,
}

impl Pacer {
    /// A pacer at `bytes_per_sec` (at least 1) starting at `start`.
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

    /// The configured rate.
    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spaces_work_at_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1000, t0);
        assert_eq!(p.reserve(500), t0);
        assert_eq!(p.reserve(1500), t0 + Duration::from_millis(500));
        assert_eq!(p.reserve(10), t0 + Duration::from_millis(2000));
        assert_eq!(Pacer::new(0, t0).bytes_per_sec(), 1);
    }
}
