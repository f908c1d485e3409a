//! Latency recording and the run's shared counters. Latencies are kept in
//! microseconds in HdrHistograms; in fixed-rate runs every record is
//! measured from the moment the schedule meant to send it, so a stalled
//! broker shows up as latency instead of as fewer, faster samples
//! (coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency kept exactly: one hour.
const LATENCY_US_MAX: u64 = 3_600_000_000;

pub fn latency_histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 3)
        .expect("1 µs to 1 h at 3 significant digits is a valid histogram");
    h.auto(true);
    h
}

/// When a fixed-rate producer meant to send each of its records:
/// record `k` is due at `start + k × interval`, or, in bursts of `b`
/// records, all of burst `k / b` at once, at `start + (k / b) × b × interval`
/// (the same rate, as a metrics agent sends what each scrape gathered).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub start: Instant,
    pub interval_ns: u64,
    pub burst: u64,
}

impl Schedule {
    /// `None` when the rate is zero (as fast as possible).
    pub fn for_rate(start: Instant, records_per_s: f64) -> Option<Schedule> {
        (records_per_s > 0.0).then(|| Schedule {
            start,
            interval_ns: (1e9 / records_per_s).max(1.0) as u64,
            burst: 1,
        })
    }

    /// Due `burst` records at a time.
    pub fn in_bursts(self, burst: u64) -> Schedule {
        Schedule {
            burst: burst.max(1),
            ..self
        }
    }

    /// Shifted by `phase` (0 to 1) of a burst's period. Independent clients
    /// do not send in step; without a shift, many slow producers on the same
    /// schedule would all send at the same instants, a spike every period.
    pub fn phased(self, phase: f64) -> Schedule {
        let period = self.interval_ns.saturating_mul(self.burst) as f64;
        let shift = (period * phase.clamp(0.0, 1.0)) as u64;
        Schedule {
            start: self.start + Duration::from_nanos(shift),
            ..self
        }
    }

    pub fn due(&self, k: u64) -> Instant {
        let first_of_burst = k - k % self.burst;
        self.start + Duration::from_nanos(first_of_burst.saturating_mul(self.interval_ns))
    }

    /// How many records are due by `now` (records `0..n`).
    pub fn due_by(&self, now: Instant) -> u64 {
        if now < self.start {
            return 0;
        }
        let elapsed = now.saturating_duration_since(self.start).as_nanos() as u64;
        let period = self.interval_ns.saturating_mul(self.burst);
        (elapsed / period + 1).saturating_mul(self.burst)
    }
}

/// Records latencies in µs, clamped into the histogram's range.
pub fn record_us(h: &mut Histogram<u64>, latency: Duration, count: u64) {
    let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
    let _ = h.record_n(us, count);
}

/// The interval log holds at most this many intervals per kind.
pub const INTERVALS_MAX: usize = 600;

/// Interval histograms keep 2 significant digits: a tenth of the memory
/// of the whole-run ones, and still 1 % resolution.
fn interval_histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, LATENCY_US_MAX, 2)
        .expect("1 µs to 1 h at 2 significant digits is a valid histogram");
    h.auto(true);
    h
}

/// One-second intervals, longer for runs over ten minutes.
pub fn interval_for(duration_s: f64) -> Duration {
    Duration::from_secs_f64((duration_s / INTERVALS_MAX as f64).max(1.0))
}

/// Latencies of one kind: over the whole window, and per interval of the
/// time they were observed (for the HdrHistogram interval log).
#[derive(Debug, Clone)]
pub struct LatencySink {
    pub total: Histogram<u64>,
    pub intervals: Vec<Histogram<u64>>,
    origin: Instant,
    interval: Duration,
}

impl LatencySink {
    pub fn new(origin: Instant, interval: Duration) -> LatencySink {
        LatencySink {
            total: latency_histogram(),
            intervals: Vec::new(),
            origin,
            interval: interval.max(Duration::from_millis(1)),
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Records `count` samples of `latency` observed at `at`.
    pub fn record(&mut self, at: Instant, latency: Duration, count: u64) {
        record_us(&mut self.total, latency, count);
        let i = (at.saturating_duration_since(self.origin).as_nanos() / self.interval.as_nanos())
            as usize;
        if i < INTERVALS_MAX {
            while self.intervals.len() <= i {
                self.intervals.push(interval_histogram());
            }
            record_us(&mut self.intervals[i], latency, count);
        }
    }

    /// Adds another shard's samples (same origin and interval).
    pub fn add(&mut self, other: &LatencySink) {
        let _ = self.total.add(&other.total);
        for (i, h) in other.intervals.iter().enumerate() {
            while self.intervals.len() <= i {
                self.intervals.push(interval_histogram());
            }
            let _ = self.intervals[i].add(h);
        }
    }
}

/// Records the acknowledgement of scheduled records `k0..k1` that arrived
/// at `acked`: each from its own due time, never from when it was sent.
/// Only records due in `counted` (the window after the warm-up) are kept.
pub fn record_scheduled_ack(
    sink: &mut LatencySink,
    schedule: &Schedule,
    k0: u64,
    k1: u64,
    acked: Instant,
    counted: std::ops::Range<Instant>,
) {
    for k in k0..k1 {
        let due = schedule.due(k);
        if counted.contains(&due) {
            sink.record(acked, acked.saturating_duration_since(due), 1);
        }
    }
}

/// Percentiles in microseconds, as printed and written to JSON.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub p9999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            p9999_us: h.value_at_quantile(0.9999),
            max_us: h.max(),
        }
    }
}

/// Counters every shard bumps and the progress line reads.
#[derive(Debug, Default)]
pub struct Counters {
    pub records_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub records_out: u64,
    pub bytes_out: u64,
    pub records_in: u64,
    pub bytes_in: u64,
    pub errors: u64,
}

impl Counters {
    pub fn add_out(&self, records: u64, bytes: u64) {
        self.records_out.fetch_add(records, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_in(&self, records: u64, bytes: u64) {
        self.records_in.fetch_add(records, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            records_out: self.records_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            records_in: self.records_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

impl CounterSnapshot {
    pub fn minus(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            records_out: self.records_out.saturating_sub(earlier.records_out),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            records_in: self.records_in.saturating_sub(earlier.records_in),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            errors: self.errors.saturating_sub(earlier.errors),
        }
    }
}

/// One point of throughput over time.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct RatePoint {
    pub elapsed_s: f64,
    pub records_out_per_s: f64,
    pub mb_out_per_s: f64,
    pub records_in_per_s: f64,
    pub mb_in_per_s: f64,
}

pub const MB: f64 = 1_000_000.0;

impl RatePoint {
    pub fn between(elapsed_s: f64, delta: &CounterSnapshot, seconds: f64) -> RatePoint {
        let s = seconds.max(1e-9);
        RatePoint {
            elapsed_s,
            records_out_per_s: delta.records_out as f64 / s,
            mb_out_per_s: delta.bytes_out as f64 / MB / s,
            records_in_per_s: delta.records_in as f64 / s,
            mb_in_per_s: delta.bytes_in as f64 / MB / s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_is_charged_to_every_record_scheduled_during_it() {
        // 1000 records/s; the broker stalls, so records 0..100 (due over
        // 99 ms) are all acknowledged together at 200 ms.
        let start = Instant::now();
        let s = Schedule::for_rate(start, 1000.0).expect("rate");
        let mut sink = LatencySink::new(start, Duration::from_secs(1));
        record_scheduled_ack(
            &mut sink,
            &s,
            0,
            100,
            start + Duration::from_millis(200),
            start..start + Duration::from_secs(1),
        );
        let h = &sink.total;
        assert_eq!(h.len(), 100);
        // Without correction there would be one sample (one request); with
        // it the median record waited about 150 ms.
        let p50 = h.value_at_quantile(0.5);
        assert!((145_000..=155_000).contains(&p50), "p50 {p50}");
        assert!(h.max() >= 199_000);
        assert!(h.min() >= 100_000);
    }

    #[test]
    fn warm_up_records_are_not_counted() {
        let start = Instant::now();
        let s = Schedule::for_rate(start, 100.0).expect("rate");
        let mut sink = LatencySink::new(warm_origin(start), Duration::from_secs(1));
        let warm = start + Duration::from_millis(500);
        record_scheduled_ack(
            &mut sink,
            &s,
            0,
            100,
            start + Duration::from_secs(1),
            warm..start + Duration::from_secs(2),
        );
        assert_eq!(sink.total.len(), 50);
    }

    fn warm_origin(start: Instant) -> Instant {
        start + Duration::from_millis(500)
    }

    #[test]
    fn intervals_split_by_observation_time_and_merge() {
        let start = Instant::now();
        let mut a = LatencySink::new(start, Duration::from_secs(1));
        a.record(start, Duration::from_micros(10), 3);
        a.record(
            start + Duration::from_millis(2500),
            Duration::from_micros(20),
            1,
        );
        assert_eq!(a.intervals.len(), 3);
        assert_eq!(a.intervals[1].len(), 0);
        let mut b = LatencySink::new(start, Duration::from_secs(1));
        b.record(
            start + Duration::from_millis(4100),
            Duration::from_micros(30),
            2,
        );
        a.add(&b);
        assert_eq!(a.total.len(), 6);
        assert_eq!(a.intervals.len(), 5);
        assert_eq!(a.intervals[4].len(), 2);
        assert_eq!(interval_for(10.0), Duration::from_secs(1));
        assert_eq!(interval_for(1200.0), Duration::from_secs(2));
    }

    #[test]
    fn due_by_counts_whole_intervals() {
        let start = Instant::now();
        let s = Schedule::for_rate(start, 10.0).expect("rate");
        assert_eq!(s.due_by(start), 1);
        assert_eq!(s.due_by(start + Duration::from_millis(250)), 3);
        assert!(Schedule::for_rate(start, 0.0).is_none());
        let half = s.phased(0.5);
        assert_eq!(half.due(0), start + Duration::from_millis(50));
        assert_eq!(half.due_by(start + Duration::from_millis(49)), 0);
        assert_eq!(half.due_by(start + Duration::from_millis(250)), 3);
    }

    #[test]
    fn bursts_keep_the_rate_and_share_a_due_time() {
        let start = Instant::now();
        let s = Schedule::for_rate(start, 10.0).expect("rate").in_bursts(4);
        assert_eq!(s.due_by(start), 4);
        assert_eq!(s.due_by(start + Duration::from_millis(399)), 4);
        assert_eq!(s.due_by(start + Duration::from_millis(400)), 8);
        assert_eq!(s.due(3), start);
        assert_eq!(s.due(4), start + Duration::from_millis(400));
        assert_eq!(s.due(7), start + Duration::from_millis(400));
        let later = s.phased(0.25);
        assert_eq!(later.due(0), start + Duration::from_millis(100));
        assert_eq!(later.due_by(start + Duration::from_millis(99)), 0);
    }

    #[test]
    fn percentiles_are_ordered() {
        let mut h = latency_histogram();
        for v in 1..=10_000u64 {
            record_us(&mut h, Duration::from_micros(v), 1);
        }
        let p = Percentiles::of(&h);
        assert!(p.p50_us <= p.p90_us && p.p90_us <= p.p99_us && p.p99_us <= p.p999_us);
        assert!(p.p9999_us <= p.max_us);
        assert_eq!(p.count, 10_000);
    }
}
