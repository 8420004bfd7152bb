//! Load patterns: how busy a simulated node and each of its regions are at a given moment.
//! Pure functions of (seed, node, region, time), so two runs with the same seed report the same
//! numbers and a test can ask for any moment without waiting for it.

use std::f64::consts::TAU;

/// Period of the sine pattern.
pub const SINE_PERIOD_MS: u64 = 60_000;
/// Length of one window of the spiky pattern; a window is either calm or a spike.
pub const SPIKE_WINDOW_MS: u64 = 10_000;
/// One window in this many is a spike, on average.
pub const SPIKE_ONE_IN: u64 = 8;
/// Load factor during a spike.
pub const SPIKE_FACTOR: f64 = 5.0;
/// Read capacity units per second of a region of weight 1 at load factor 1.
pub const REGION_RCUS_PER_SEC: f64 = 20.0;
/// Write capacity units per second of a region of weight 1 at load factor 1.
pub const REGION_WCUS_PER_SEC: f64 = 10.0;
/// Approximate size of a region of weight 1.
pub const REGION_BYTES: u64 = 64 * 1024 * 1024;
/// Average row size used to derive row counts from sizes.
pub const ROW_BYTES: u64 = 128;
/// Bytes written to disk per write capacity unit.
pub const BYTES_PER_WCU: u64 = 4 * 1024;

/// The shape of the load over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadPattern {
    /// The same load all the time.
    Constant,
    /// A slow wave between 0.5 and 1.5 times the base load, each node in its own phase.
    Sine,
    /// Calm (factor 1), with occasional windows at [`SPIKE_FACTOR`], different per node.
    Spiky,
}

impl std::str::FromStr for LoadPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "constant" => Ok(LoadPattern::Constant),
            "sine" => Ok(LoadPattern::Sine),
            "spiky" => Ok(LoadPattern::Spiky),
            other => Err(format!(
                "unknown load pattern {other:?} (constant, sine or spiky)"
            )),
        }
    }
}

/// splitmix64's finaliser: a well-mixed 64-bit hash of `x`.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A number in [0, 1) determined by the three inputs.
fn unit(seed: u64, a: u64, b: u64) -> f64 {
    let h = mix(seed ^ mix(a ^ mix(b)));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl LoadPattern {
    /// The load factor of node `node` at `t_ms` (milliseconds since the simulation started).
    pub fn factor(self, seed: u64, node: u64, t_ms: u64) -> f64 {
        match self {
            LoadPattern::Constant => 1.0,
            LoadPattern::Sine => {
                let phase = unit(seed, node, 0);
                let angle = TAU * ((t_ms % SINE_PERIOD_MS) as f64 / SINE_PERIOD_MS as f64 + phase);
                1.0 + 0.5 * angle.sin()
            }
            LoadPattern::Spiky => {
                let window = t_ms / SPIKE_WINDOW_MS;
                if mix(seed ^ mix(node ^ mix(window))).is_multiple_of(SPIKE_ONE_IN) {
                    SPIKE_FACTOR
                } else {
                    1.0
                }
            }
        }
    }
}

/// The share of its node's load a region carries, in [0.5, 1.5); fixed for the region.
pub fn region_weight(seed: u64, region_id: u64) -> f64 {
    0.5 + unit(seed, region_id, 1)
}

/// Capacity units consumed at `per_sec` over `interval_ms`, rounded down.
pub fn units(per_sec: f64, interval_ms: u64) -> u64 {
    (per_sec * interval_ms as f64 / 1000.0).max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_is_always_one() {
        for t in [0, 1, 59_999, 1 << 40] {
            assert_eq!(LoadPattern::Constant.factor(3, 1001, t), 1.0);
        }
    }

    #[test]
    fn sine_stays_in_band_and_varies_over_a_period() {
        let values: Vec<f64> = (0..60)
            .map(|s| LoadPattern::Sine.factor(7, 1001, s * 1_000))
            .collect();
        assert!(values.iter().all(|v| (0.5..=1.5).contains(v)), "{values:?}");
        let (min, max) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        assert!(max - min > 0.9, "{min} {max}");
        // Periodic.
        assert_eq!(
            LoadPattern::Sine.factor(7, 1001, 5_000),
            LoadPattern::Sine.factor(7, 1001, 5_000 + SINE_PERIOD_MS)
        );
    }

    #[test]
    fn spiky_has_some_spikes_and_is_flat_within_a_window() {
        let windows: Vec<f64> = (0..400)
            .map(|w| LoadPattern::Spiky.factor(1, 1002, w * SPIKE_WINDOW_MS))
            .collect();
        let spikes = windows.iter().filter(|f| **f == SPIKE_FACTOR).count();
        assert!(
            (20..=80).contains(&spikes),
            "{spikes} spikes in 400 windows"
        );
        assert!(windows.iter().all(|f| *f == 1.0 || *f == SPIKE_FACTOR));
        let t = 3 * SPIKE_WINDOW_MS;
        assert_eq!(
            LoadPattern::Spiky.factor(1, 1002, t),
            LoadPattern::Spiky.factor(1, 1002, t + SPIKE_WINDOW_MS - 1)
        );
    }

    #[test]
    fn patterns_are_deterministic_in_seed_and_differ_between_seeds() {
        for pattern in [LoadPattern::Sine, LoadPattern::Spiky] {
            let run = |seed| -> Vec<f64> {
                (0..50)
                    .map(|i| pattern.factor(seed, 1000 + i, i * 7_777))
                    .collect()
            };
            assert_eq!(run(1), run(1));
            assert_ne!(run(1), run(2), "{pattern:?}");
        }
    }

    #[test]
    fn region_weights_are_in_range_and_units_scale_with_time() {
        for r in 0..1_000 {
            let w = region_weight(9, r);
            assert!((0.5..1.5).contains(&w));
        }
        assert_eq!(units(10.0, 3_000), 30);
        assert_eq!(units(10.0, 0), 0);
        assert_eq!(units(-1.0, 1_000), 0);
    }

    #[test]
    fn pattern_names_parse() {
        assert_eq!("sine".parse(), Ok(LoadPattern::Sine));
        assert!("wavy".parse::<LoadPattern>().is_err());
    }
}
