//! A latency histogram with fixed memory: log-linear buckets (exact below
//! 2^[`SUB_BUCKET_BITS`] µs, then [`BUCKETS_PER_DOUBLING`] buckets per power of two), so any
//! recorded value is known to within 1/[`BUCKETS_PER_DOUBLING`] of itself (under 1.6 %)
//! whatever the number of samples. The same idea as HdrHistogram, small enough to read.

/// Values below 2^SUB_BUCKET_BITS get one bucket each.
pub const SUB_BUCKET_BITS: u32 = 7;
/// Buckets covering each power of two above the exact range.
pub const BUCKETS_PER_DOUBLING: u64 = 1 << (SUB_BUCKET_BITS - 1);
/// Largest value recorded as itself, in microseconds (about 71 minutes); larger values are
/// recorded as this.
pub const VALUE_MAX_US: u64 = (1 << 32) - 1;
/// Number of buckets, fixed by the two constants above (1728 counters, 13.5 KiB).
pub const BUCKETS: usize = bucket_index(VALUE_MAX_US) + 1;

/// The bucket holding `value`.
const fn bucket_index(value: u64) -> usize {
    if value < (1 << SUB_BUCKET_BITS) {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    // Keep the top SUB_BUCKET_BITS bits of the value: the mantissa, in [2^(B-1), 2^B).
    let shift = msb + 1 - SUB_BUCKET_BITS;
    let mantissa = value >> shift;
    (shift as u64 * BUCKETS_PER_DOUBLING + mantissa) as usize
}

/// The smallest and largest value that land in bucket `index`.
fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < (1 << SUB_BUCKET_BITS) {
        return (index, index);
    }
    // index = shift * 2^(B-1) + mantissa with mantissa >> (B-1) == 1.
    let shift = (index >> (SUB_BUCKET_BITS - 1)) - 1;
    let mantissa = index - shift * BUCKETS_PER_DOUBLING;
    let low = mantissa << shift;
    (low, low + (1 << shift) - 1)
}

/// Counts of latencies in microseconds.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    count: u64,
    sum_us: u128,
    min_us: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            count: 0,
            sum_us: 0,
            min_us: u64::MAX,
            max_us: 0,
        }
    }

    /// Records one value (clamped to [`VALUE_MAX_US`]).
    pub fn record_us(&mut self, value_us: u64) {
        let value = value_us.min(VALUE_MAX_US);
        self.counts[bucket_index(value)] += 1;
        self.count += 1;
        self.sum_us += u128::from(value);
        self.min_us = self.min_us.min(value);
        self.max_us = self.max_us.max(value);
    }

    /// Records a duration.
    pub fn record(&mut self, elapsed: std::time::Duration) {
        self.record_us(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.min_us = self.min_us.min(other.min_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Largest sample, exact.
    pub fn max_us(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max_us)
    }

    /// Mean of the samples, exact.
    pub fn mean_us(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_us as f64 / self.count as f64)
    }

    /// The value at quantile `q` (0.5 = median, 0.999 = p99.9) by the nearest-rank method:
    /// the smallest recorded value with at least `ceil(q * count)` samples at or below it,
    /// reported as the top of its bucket (never beyond the exact min and max). `None` when empty.
    pub fn value_at_quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        assert!((0.0..=1.0).contains(&q), "quantile {q} outside [0, 1]");
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (_, high) = bucket_bounds(index);
                return Some(high.clamp(self.min_us, self.max_us));
            }
        }
        unreachable!("bucket counts sum to count");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values (xorshift64*), so failures replay.
    fn values(seed: u64, n: usize, max: u64) -> Vec<u64> {
        let mut x = seed.max(1);
        (0..n)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                x.wrapping_mul(0x2545_f491_4f6c_dd1d) % max
            })
            .collect()
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn bucket_count_is_fixed() {
        assert_eq!(BUCKETS, 1728);
    }

    #[test]
    fn every_value_lies_in_its_bucket_and_buckets_are_ordered() {
        let mut previous = 0;
        for v in 0..5000 {
            assert!(bucket_index(v) >= previous, "index decreased at {v}");
            previous = bucket_index(v);
        }
        for v in (0..5000).chain(values(7, 20_000, VALUE_MAX_US)) {
            let index = bucket_index(v);
            let (low, high) = bucket_bounds(index);
            assert!(
                low <= v && v <= high,
                "{v} not in bucket {index} [{low}, {high}]"
            );
        }
        assert_eq!(bucket_bounds(BUCKETS - 1).1, VALUE_MAX_US);
    }

    #[test]
    fn bucket_width_is_within_the_relative_error_bound() {
        for index in (1 << SUB_BUCKET_BITS)..BUCKETS {
            let (low, high) = bucket_bounds(index);
            assert!(
                (high - low + 1) * BUCKETS_PER_DOUBLING <= low,
                "bucket {index} too wide"
            );
            assert_eq!(
                bucket_bounds(index - 1).1 + 1,
                low,
                "gap before bucket {index}"
            );
        }
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record_us(v);
        }
        assert_eq!(h.value_at_quantile_us(0.5), Some(50));
        assert_eq!(h.value_at_quantile_us(0.99), Some(99));
        assert_eq!(h.value_at_quantile_us(0.999), Some(100));
        assert_eq!(h.value_at_quantile_us(0.0), Some(1));
        assert_eq!(h.value_at_quantile_us(1.0), Some(100));
        assert_eq!(h.max_us(), Some(100));
        assert_eq!(h.mean_us(), Some(50.5));
    }

    #[test]
    fn quantiles_match_exact_ones_within_the_bound() {
        for seed in 1..6 {
            let samples = values(seed, 50_000, 2_000_000);
            let mut h = Histogram::new();
            samples.iter().for_each(|&v| h.record_us(v));
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            for q in [0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
                let exact = exact_quantile(&sorted, q);
                let got = h.value_at_quantile_us(q).unwrap();
                assert!(got >= exact, "seed {seed} q {q}: {got} < exact {exact}");
                let bound = exact + exact / BUCKETS_PER_DOUBLING;
                assert!(got <= bound, "seed {seed} q {q}: {got} > {bound}");
            }
        }
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let samples = values(42, 10_000, 100_000);
        let mut whole = Histogram::new();
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        for (i, &v) in samples.iter().enumerate() {
            whole.record_us(v);
            if i % 3 == 0 {
                a.record_us(v)
            } else {
                b.record_us(v)
            }
        }
        a.merge(&b);
        assert_eq!(a.count(), whole.count());
        for q in [0.5, 0.99, 0.999] {
            assert_eq!(a.value_at_quantile_us(q), whole.value_at_quantile_us(q));
        }
        assert_eq!(a.max_us(), whole.max_us());
        assert_eq!(a.mean_us(), whole.mean_us());
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let h = Histogram::new();
        assert_eq!(h.value_at_quantile_us(0.5), None);
        assert_eq!(h.max_us(), None);
        assert_eq!(h.mean_us(), None);
        let mut merged = Histogram::new();
        merged.merge(&h);
        assert_eq!(merged.count(), 0);
    }

    #[test]
    fn huge_values_are_clamped() {
        let mut h = Histogram::new();
        h.record_us(u64::MAX);
        h.record(std::time::Duration::from_secs(u64::MAX));
        assert_eq!(h.value_at_quantile_us(1.0), Some(VALUE_MAX_US));
        assert_eq!(h.count(), 2);
    }
}
