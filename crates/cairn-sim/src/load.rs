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

/// Tables whose load a scenario may scale at once ([`TableLoad`]).
pub const TABLE_LOAD_FACTORS_MAX: usize = 1_024;
/// The largest factor a table's load may be scaled by.
pub const TABLE_LOAD_FACTOR_MAX: f64 = 1_000.0;

/// Per-table load factors a scenario sets (one table's load jumps tenfold); a table without
/// one has factor 1. Shared by every node of a fleet.
#[derive(Debug, Default)]
pub struct TableLoad(std::sync::RwLock<std::collections::HashMap<u64, f64>>);

impl TableLoad {
    /// Scales table `table_id`'s load by `factor` (1 removes the scaling). At most
    /// [`TABLE_LOAD_FACTORS_MAX`] tables, factors in 0..=[`TABLE_LOAD_FACTOR_MAX`].
    pub fn set(&self, table_id: u64, factor: f64) -> Result<(), String> {
        if !(0.0..=TABLE_LOAD_FACTOR_MAX).contains(&factor) {
            return Err(format!(
                "table load factor {factor} is outside 0..={TABLE_LOAD_FACTOR_MAX}"
            ));
        }
        let mut map = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if factor == 1.0 {
            map.remove(&table_id);
        } else if map.len() >= TABLE_LOAD_FACTORS_MAX && !map.contains_key(&table_id) {
            return Err(format!(
                "at most {TABLE_LOAD_FACTORS_MAX} tables may have a load factor (table_load_factors_max)"
            ));
        } else {
            map.insert(table_id, factor);
        }
        Ok(())
    }

    /// Table `table_id`'s load factor.
    pub fn factor(&self, table_id: u64) -> f64 {
        let map = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&table_id).copied().unwrap_or(1.0)
    }
}

/// Write and read capacity units per second region `region_id` carries at load factor 1, its
/// table scaled by `table_load`: what its leader reports, per second.
pub fn region_load_per_sec(seed: u64, region_id: u64, table_load: &TableLoad) -> (f64, f64) {
    let w = region_weight(seed, region_id) * table_load.factor(region_id >> 32);
    (REGION_WCUS_PER_SEC * w, REGION_RCUS_PER_SEC * w)
}

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
    fn a_table_load_factor_scales_its_regions_only_and_is_bounded() {
        let load = TableLoad::default();
        let (hot, other) = ((7u64 << 32) | 1, (8u64 << 32) | 1);
        let before = (
            region_load_per_sec(3, hot, &load),
            region_load_per_sec(3, other, &load),
        );
        load.set(7, 10.0).unwrap();
        assert_eq!(region_load_per_sec(3, hot, &load).0, before.0 .0 * 10.0);
        assert_eq!(region_load_per_sec(3, other, &load), before.1);
        load.set(7, 1.0).unwrap();
        assert_eq!(region_load_per_sec(3, hot, &load), before.0);
        assert!(load.set(7, -1.0).is_err());
        assert!(load.set(7, f64::NAN).is_err());
        for t in 0..TABLE_LOAD_FACTORS_MAX as u64 {
            load.set(100 + t, 2.0).unwrap();
        }
        let err = load.set(1, 2.0).unwrap_err();
        assert!(err.contains("table_load_factors_max"), "{err}");
        load.set(100, 3.0).expect("an existing table may change");
    }

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
