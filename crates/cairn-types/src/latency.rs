//! A latency histogram that any thread records into without a lock (a log writer between two
//! syncs, an async task answering a forwarded request), rendered in Prometheus text format.
//!
//! Its buckets are etcd's for its peer round trips (`etcd_network_peer_round_trip_time_seconds`):
//! exponential from 100 µs, doubling, so that a loopback hop, a disk sync and a slow election
//! each land in a bucket of their own.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets of a [`LatencyHistogram`] (the last one's upper bound is 3.2768 s; slower goes to
/// `+Inf` only).
pub const LATENCY_BUCKETS: usize = 16;
/// The first bucket's upper bound, in nanoseconds; each next one doubles it.
const FIRST_BUCKET_NANOS: u64 = 100_000;

/// The upper bound of bucket `i`, in nanoseconds.
const fn bucket_bound_nanos(i: usize) -> u64 {
    FIRST_BUCKET_NANOS << i
}

/// Counts of durations by bucket, with their count and sum.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; LATENCY_BUCKETS],
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(i) = (0..LATENCY_BUCKETS).find(|&i| nanos <= bucket_bound_nanos(i)) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Durations recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Appends the histogram as the Prometheus family `name` (cumulative buckets, sum in
    /// seconds, count) to `out`.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = bucket_bound_nanos(i) as f64 / 1e9;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        // Read after the buckets: a duration recorded meanwhile may be counted here and not in
        // a bucket, never the other way (`+Inf` stays at least every bucket).
        let count = self.count().max(cumulative);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_cumulative_buckets_and_the_sum_is_in_seconds() {
        let h = LatencyHistogram::new();
        h.record(Duration::from_micros(80));
        h.record(Duration::from_micros(100));
        h.record(Duration::from_micros(150));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(10));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "Test.");
        assert!(out.starts_with("# HELP x_seconds Test.\n# TYPE x_seconds histogram\n"));
        assert!(out.contains("x_seconds_bucket{le=\"0.0001\"} 2\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0002\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0016\"} 3\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"0.0032\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"3.2768\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_seconds_count 5\n"), "{out}");
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("x_seconds_sum "))
            .and_then(|v| v.parse().ok())
            .expect("a sum line");
        assert!((sum - 10.00333).abs() < 1e-9, "{sum}");
        assert_eq!(h.count(), 5);
    }
}
