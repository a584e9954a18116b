//! How long the writer is held: the distribution of its store transactions and of its idle
//! work (DuckDB checkpoints while the queue is empty).
//!
//! Every commit waits for the transaction in flight, so these two distributions are what a
//! publish's tail latency is made of. The writer records each duration as it happens
//! ([`Pauses::record`]); `/metrics` exposes them as Prometheus histograms and `bench` reports
//! a window of them (a [`PauseSnapshot`] difference).
//!
//! Invariant: recording is a few relaxed atomic adds, never a lock, so measuring the writer
//! does not slow it; a snapshot taken while the writer records may be off by the one duration
//! in flight, never by more.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The buckets' upper bounds in microseconds (0.25 ms doubling to about 4 s); one more bucket
/// holds everything longer.
pub const BOUNDS_US: [u64; 15] = [
    250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 512_000,
    1_024_000, 2_048_000, 4_096_000,
];
const BUCKETS: usize = BOUNDS_US.len() + 1;

/// One distribution of durations, updated in place.
#[derive(Debug, Default)]
pub struct Pauses {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Pauses {
    /// Counts one duration.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> PauseSnapshot {
        PauseSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
            max_us: self.max_us.load(Ordering::Relaxed),
        }
    }
}

/// The writer's two distributions.
#[derive(Debug, Default)]
pub struct WriterPauses {
    /// Each store transaction (one batch: BEGIN to COMMIT, or a refused attempt at one).
    pub commits: Pauses,
    /// Each round of idle work that found something to do (a DuckDB checkpoint).
    pub idle: Pauses,
}

/// A distribution at one moment (or, from [`PauseSnapshot::since`], over a window).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PauseSnapshot {
    /// How many durations fell in each bucket (not cumulative), the last one unbounded.
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
    /// The longest since the process started (a window cannot know its own).
    pub max_us: u64,
}

impl PauseSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What was counted after `earlier` (a snapshot of the same [`Pauses`]).
    pub fn since(&self, earlier: &PauseSnapshot) -> PauseSnapshot {
        PauseSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].saturating_sub(earlier.buckets[i])),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            max_us: self.max_us,
        }
    }

    /// The upper bound of the bucket holding the `q` quantile (`None`: nothing counted, or
    /// it lies past the last bound).
    pub fn quantile_bound_us(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return BOUNDS_US.get(i).copied();
            }
        }
        None
    }

    /// How many lasted longer than `bound_us` (one of [`BOUNDS_US`]).
    pub fn longer_than(&self, bound_us: u64) -> u64 {
        let first = BOUNDS_US.partition_point(|&b| b <= bound_us);
        self.buckets[first..].iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    #[test]
    fn durations_land_in_their_buckets_bounds_inclusive() {
        let p = Pauses::default();
        for d in [ms(0.1), ms(0.25), ms(0.26), ms(3.0), ms(70.0), ms(9_000.0)] {
            p.record(d);
        }
        let s = p.snapshot();
        assert_eq!(s.count(), 6);
        assert_eq!(s.buckets[0], 2, "0.1 ms and exactly 0.25 ms");
        assert_eq!(s.buckets[1], 1, "0.26 ms");
        assert_eq!(s.buckets[4], 1, "3 ms is in (2, 4]");
        assert_eq!(s.buckets[9], 1, "70 ms is in (64, 128]");
        assert_eq!(s.buckets[BUCKETS - 1], 1, "past the last bound");
        assert_eq!(s.max_us, 9_000_000);
        assert_eq!(s.sum_us, 100 + 250 + 260 + 3_000 + 70_000 + 9_000_000);
    }

    #[test]
    fn a_window_counts_only_what_came_after() {
        let p = Pauses::default();
        for _ in 0..99 {
            p.record(ms(1.5));
        }
        let before = p.snapshot();
        for _ in 0..98 {
            p.record(ms(0.4));
        }
        p.record(ms(20.0));
        p.record(ms(50.0));
        let w = p.snapshot().since(&before);
        assert_eq!(w.count(), 100);
        assert_eq!(w.quantile_bound_us(0.5), Some(500));
        assert_eq!(w.quantile_bound_us(0.98), Some(500));
        assert_eq!(w.quantile_bound_us(0.99), Some(32_000));
        assert_eq!(w.quantile_bound_us(1.0), Some(64_000));
        assert_eq!(w.longer_than(16_000), 2);
        assert_eq!(w.longer_than(32_000), 1);
        assert_eq!(w.longer_than(64_000), 0);
        assert_eq!(PauseSnapshot::default().quantile_bound_us(0.5), None);
    }
}
