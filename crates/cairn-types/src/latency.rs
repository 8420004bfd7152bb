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
        let buckets = self.buckets.iter().enumerate().map(|(i, bucket)| {
            (
                bucket_bound_nanos(i) as f64 / 1e9,
                bucket.load(Ordering::Relaxed),
            )
        });
        // The count is read after the buckets: a duration recorded meanwhile may be counted
        // there and not in a bucket, never the other way.
        write_histogram_samples(out, name, "", buckets, || {
            (
                self.count(),
                self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            )
        });
    }
}

/// Appends one histogram's samples (no HELP or TYPE line) to `out`: `buckets` as (upper bound in
/// seconds, count in that bucket alone), written cumulatively, then `+Inf`, the sum and the
/// count that `total` gives (read after the buckets; `+Inf` and the count are raised to the
/// buckets' total if it is behind). `labels` (e.g. `method="Put"`) go before `le` in each line.
pub fn write_histogram_samples(
    out: &mut String,
    name: &str,
    labels: &str,
    buckets: impl IntoIterator<Item = (f64, u64)>,
    total: impl FnOnce() -> (u64, f64),
) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0;
    for (le, n) in buckets {
        cumulative += n;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let (count, sum) = total();
    let count = count.max(cumulative);
    let labelled = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}\n{name}_sum{labelled} {sum}\n{name}_count{labelled} {count}"
    );
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
