//! The phi-accrual failure detector (Hayashibara et al., as Akka and Cassandra use it): from the
//! arrival times of a node's heartbeats it keeps the mean and deviation of the gaps between them,
//! and turns the silence since the last one into a suspicion level `phi`: the chance that a
//! heartbeat this late is merely late is `10^-phi`. A node is judged failed when `phi` passes a
//! threshold.
//!
//! What the settings trade (defaults at a 3 s heartbeat interval, see
//! [`FailureDetectorSettings`]): the judgement falls at about `mean gap + acceptable pause +
//! k x deviation` after the last heartbeat, where `k` grows with the threshold (about 5.6 at
//! phi 8) and the deviation is at least `min_std_dev`. Regular heartbeats have a tiny real
//! deviation, so `min_std_dev` and `acceptable_pause` decide: 3 s + 0.3 s + 5.6 x 0.2 s ≈ 4.4 s
//! after the last heartbeat, that is about 1.4 s after one was due. A heartbeat more than ~1.4 s
//! late (a long pause, a congested network) is then a false alarm; raise `acceptable_pause` to
//! tolerate longer pauses at the cost of slower failover.
//!
//! Only gaps between real arrivals are learned: the first estimate seeds the history until
//! [`PHI_SEEDS_REPLACED_AFTER`] real gaps replace it (kept longer, its wide spread would hold
//! every young node's judgement back by a second or more), an arrival a new leader merely assumes
//! at its start teaches no gap, and neither does the silence of a node judged failed.
//!
//! Pure: arrival times come in as `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Gaps between heartbeats remembered per node (the window the mean and deviation cover).
pub const PHI_SAMPLES_MAX: usize = 200;
/// Real gaps after which the first estimate's seed gaps leave the history.
pub const PHI_SEEDS_REPLACED_AFTER: usize = 3;

/// How the detector judges; [`crate::ServerConfig`] holds the operator's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureDetectorSettings {
    /// Suspicion level at which a node is judged failed.
    pub threshold: f64,
    /// Smallest deviation assumed, however regular the heartbeats were.
    pub min_std_dev: Duration,
    /// Silence beyond the usual gap that is not held against a node at all.
    pub acceptable_pause: Duration,
    /// The gap assumed before two heartbeats have arrived.
    pub first_heartbeat_estimate: Duration,
}

/// One node's heartbeat history and suspicion level.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    settings: FailureDetectorSettings,
    /// Gaps between heartbeats, ms, oldest first.
    gaps: VecDeque<f64>,
    sum: f64,
    sum_of_squares: f64,
    last: Option<Instant>,
    /// Seed gaps at the front of `gaps` (from the first estimate), until real ones replace them.
    seeds: usize,
    /// The gap up to the next arrival is not learned (the last one was assumed, or the node was
    /// judged failed).
    skip_next_gap: bool,
}

impl PhiAccrual {
    /// A detector that has heard nothing yet.
    pub fn new(settings: FailureDetectorSettings) -> Self {
        PhiAccrual {
            settings,
            gaps: VecDeque::new(),
            sum: 0.0,
            sum_of_squares: 0.0,
            last: None,
            seeds: 0,
            skip_next_gap: false,
        }
    }

    fn push(&mut self, gap_ms: f64) {
        if self.gaps.len() >= PHI_SAMPLES_MAX {
            self.pop_oldest();
        }
        self.gaps.push_back(gap_ms);
        self.sum += gap_ms;
        self.sum_of_squares += gap_ms * gap_ms;
    }

    fn pop_oldest(&mut self) {
        if let Some(old) = self.gaps.pop_front() {
            self.sum -= old;
            self.sum_of_squares -= old * old;
            self.seeds = self.seeds.saturating_sub(1);
        }
    }

    /// A heartbeat arrived at `now`.
    pub fn heartbeat(&mut self, now: Instant) {
        match self.last {
            None if self.gaps.is_empty() => {
                // Seed the history with the estimate (and a deviation of a quarter of it), as
                // Akka does, so the second heartbeat is not judged against nothing.
                let estimate = self.settings.first_heartbeat_estimate.as_secs_f64() * 1000.0;
                let spread = estimate / 4.0;
                self.push(estimate - spread);
                self.push(estimate + spread);
                self.seeds = 2;
            }
            None => {}
            Some(_) if self.skip_next_gap => {}
            Some(last) => {
                self.push(now.saturating_duration_since(last).as_secs_f64() * 1000.0);
                if self.seeds > 0 && self.gaps.len() - self.seeds >= PHI_SEEDS_REPLACED_AFTER {
                    while self.seeds > 0 {
                        self.pop_oldest();
                    }
                }
            }
        }
        self.skip_next_gap = false;
        self.last = Some(now);
    }

    /// Counts the node as heard from at `now` (a new leader's start) without learning the gap
    /// to its next real heartbeat, which says nothing about its rhythm.
    pub fn assume_heard(&mut self, now: Instant) {
        self.skip_next_gap = true;
        self.heartbeat(now);
        self.skip_next_gap = true;
    }

    /// The silence up to the next heartbeat is not learned (the node was judged failed: that
    /// gap is an outage, not its rhythm).
    pub fn skip_next_gap(&mut self) {
        self.skip_next_gap = true;
    }

    /// When the last heartbeat arrived, if any did.
    pub fn last_heartbeat(&self) -> Option<Instant> {
        self.last
    }

    /// The mean gap and the deviation the detector judges by (at least `min_std_dev`), ms.
    pub fn gap_stats(&self) -> (f64, f64) {
        let n = self.gaps.len().max(1) as f64;
        let mean = self.sum / n;
        let variance = (self.sum_of_squares / n - mean * mean).max(0.0);
        let min_std = self.settings.min_std_dev.as_secs_f64() * 1000.0;
        (mean, variance.sqrt().max(min_std).max(f64::EPSILON))
    }

    /// The suspicion level at `now`; 0 before the first heartbeat.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let (mean, std_dev) = self.gap_stats();
        let mean = mean + self.settings.acceptable_pause.as_secs_f64() * 1000.0;
        let elapsed = now.saturating_duration_since(last).as_secs_f64() * 1000.0;
        phi_of(elapsed, mean, std_dev)
    }

    /// Whether the node is judged failed at `now`.
    pub fn failed(&self, now: Instant) -> bool {
        self.phi(now) >= self.settings.threshold
    }
}

/// `-log10(P(gap > elapsed))` for gaps normally distributed with `mean` and `std_dev`, using the
/// logistic approximation of the normal distribution's tail (Akka's), which stays finite far
/// out in the tail where `1 - cdf` would round to 0.
fn phi_of(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let y = (elapsed - mean) / std_dev;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p_later = if elapsed > mean {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    -p_later.max(f64::MIN_POSITIVE).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(3);

    fn settings() -> FailureDetectorSettings {
        FailureDetectorSettings {
            threshold: 8.0,
            min_std_dev: Duration::from_millis(200),
            acceptable_pause: Duration::from_millis(300),
            first_heartbeat_estimate: INTERVAL,
        }
    }

    /// A detector that heard `n` heartbeats `INTERVAL` apart, the last at the returned instant.
    fn regular(n: u32, jitter_ms: u64) -> (PhiAccrual, Instant) {
        let mut d = PhiAccrual::new(settings());
        let mut t = Instant::now();
        for i in 0..n {
            // Alternate early and late by `jitter_ms`.
            let jitter = Duration::from_millis(if i % 2 == 0 { jitter_ms } else { 0 });
            t += INTERVAL + jitter;
            d.heartbeat(t);
        }
        (d, t)
    }

    /// How long after the last heartbeat the node is first judged failed (100 ms steps).
    fn judged_after(d: &PhiAccrual, last: Instant) -> Duration {
        (1..600)
            .map(|i| Duration::from_millis(100 * i))
            .find(|after| d.failed(last + *after))
            .expect("judged within a minute")
    }

    #[test]
    fn silence_raises_phi_and_a_heartbeat_resets_it() {
        let (mut d, last) = regular(20, 0);
        assert!(d.phi(last) < 0.1);
        assert!(
            d.phi(last + INTERVAL) < 1.0,
            "a heartbeat on time is no cause for alarm"
        );
        let later = d.phi(last + INTERVAL + Duration::from_secs(1));
        let much_later = d.phi(last + INTERVAL + Duration::from_secs(2));
        assert!(later < much_later, "{later} < {much_later}");
        assert!(d.failed(last + 3 * INTERVAL));
        d.heartbeat(last + 3 * INTERVAL);
        assert!(!d.failed(last + 3 * INTERVAL));
    }

    #[test]
    fn the_defaults_judge_a_silent_node_about_one_and_a_half_seconds_after_a_missed_beat() {
        let (d, last) = regular(50, 0);
        let after = judged_after(&d, last);
        assert!(
            after >= INTERVAL + Duration::from_millis(1_000)
                && after <= INTERVAL + Duration::from_millis(1_800),
            "judged {after:?} after the last heartbeat"
        );
    }

    #[test]
    fn normal_jitter_raises_no_alarm() {
        // Heartbeats up to 200 ms apart from the interval.
        let (d, last) = regular(50, 200);
        assert!(!d.failed(last + INTERVAL + Duration::from_millis(400)));
        // Jittery arrivals widen the deviation: judged later than with regular ones.
        let (steady, steady_last) = regular(50, 0);
        assert!(judged_after(&d, last) >= judged_after(&steady, steady_last));
    }

    #[test]
    fn one_heartbeat_is_judged_by_the_first_estimate() {
        let mut d = PhiAccrual::new(settings());
        let t = Instant::now();
        assert_eq!(
            d.phi(t + Duration::from_secs(60)),
            0.0,
            "nothing heard: no judgement"
        );
        d.heartbeat(t);
        assert!(!d.failed(t + INTERVAL));
        assert!(d.failed(t + 4 * INTERVAL));
    }

    #[test]
    fn a_young_node_is_judged_as_soon_as_a_seasoned_one() {
        // The seeds' wide spread leaves once three real gaps came in.
        let (young, young_last) = regular(4, 0);
        let (old, old_last) = regular(50, 0);
        assert_eq!(young.seeds, 0);
        assert_eq!(
            judged_after(&young, young_last),
            judged_after(&old, old_last)
        );
        // Before that the estimate's spread still counts: judged later.
        let (fresh, fresh_last) = regular(2, 0);
        assert!(judged_after(&fresh, fresh_last) > judged_after(&old, old_last));
    }

    #[test]
    fn assumed_arrivals_and_outages_teach_no_gap() {
        let (mut d, last) = regular(20, 0);
        let before = d.gap_stats();
        let judged = judged_after(&d, last);
        // A new leader assumes the node heard at its start, 1.1 s before its real heartbeat.
        let t = last + Duration::from_millis(1_900);
        d.assume_heard(t);
        d.heartbeat(t + Duration::from_millis(1_100));
        assert_eq!(d.gap_stats(), before, "the assumed gap is not learned");
        // Judged failed after a 30 s silence: the outage is not learned either.
        let back = t + Duration::from_millis(1_100) + Duration::from_secs(30);
        d.skip_next_gap();
        d.heartbeat(back);
        assert_eq!(d.gap_stats(), before);
        assert_eq!(judged_after(&d, back), judged);
        // The next regular gap is.
        d.heartbeat(back + INTERVAL);
        assert_eq!(d.gaps.len(), 20);
    }

    #[test]
    fn the_history_is_bounded() {
        let (d, _) = regular(PHI_SAMPLES_MAX as u32 * 3, 0);
        assert_eq!(d.gaps.len(), PHI_SAMPLES_MAX);
    }
}
