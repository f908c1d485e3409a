//! Latency histograms cheap enough for hot paths (plain cells, fixed
//! buckets, no allocation, no atomics) and the fsync latency of this
//! thread's flushers. A shard is one thread, so the thread-local histogram
//! is the shard's own; whoever exports metrics reads it on that thread.

use std::cell::Cell;
use std::time::Duration;

/// Upper bounds of the buckets in microseconds: from a fast NVMe fsync or a
/// cached read to a request parked for a long poll.
pub const LATENCY_BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Buckets: one per bound, plus one for everything above the last bound.
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Non-cumulative bucket counts and the sum of observations, for one thread.
#[derive(Default, Debug)]
pub struct LatencyHistogram {
    counts: [Cell<u64>; LATENCY_BUCKETS],
    sum_ns: Cell<u64>,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let us = elapsed.as_micros().min(u64::MAX as u128) as u64;
        // 16 comparisons at most; the common (fast) cases exit first.
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        let c = &self.counts[i];
        c.set(c.get().wrapping_add(1));
        let ns = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        self.sum_ns.set(self.sum_ns.get().wrapping_add(ns));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut counts = [0u64; LATENCY_BUCKETS];
        for (out, c) in counts.iter_mut().zip(&self.counts) {
            *out = c.get();
        }
        HistogramSnapshot {
            counts,
            sum_ns: self.sum_ns.get(),
        }
    }
}

/// A histogram's values at one moment, to send to another thread and merge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Non-cumulative: `counts[i]` observations fell in bucket `i`; the last
    /// bucket holds those above the largest bound.
    pub counts: [u64; LATENCY_BUCKETS],
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sum_ns = self.sum_ns.wrapping_add(other.sum_ns);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }
}

thread_local! {
    static FSYNC_LATENCY: LatencyHistogram = LatencyHistogram::default();
}

/// fdatasync latency of every log flushed on this thread since it started.
pub fn fsync_latency() -> HistogramSnapshot {
    FSYNC_LATENCY.with(LatencyHistogram::snapshot)
}

pub(crate) fn record_fsync(elapsed: Duration) {
    FSYNC_LATENCY.with(|h| h.observe(elapsed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_covers_them() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_micros(51));
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[LATENCY_BUCKETS - 1], 1);
        assert_eq!(s.count(), 3);
        assert_eq!(s.sum_ns, 60_000_101_000);
        let mut m = s;
        m.merge(&s);
        assert_eq!(m.count(), 6);
    }
}
