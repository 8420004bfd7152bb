//! How long the heartbeat loop waits before it opens a new stream. A pure function of the number
//! of failures in a row and the node id, so the schedule is testable without a clock.
//!
//! The jitter is derived from the node id rather than drawn at random: after a leader change a
//! thousand nodes reconnect at once, and spreading them by id keeps a run reproducible.

/// Delay after the first failed connection attempt.
pub const RECONNECT_BACKOFF_INITIAL_MS: u64 = 100;
/// Largest delay between two connection attempts.
pub const RECONNECT_BACKOFF_MAX_MS: u64 = 5_000;
/// Jitter added on top of the exponential delay, as a percentage of it, at most.
pub const RECONNECT_JITTER_PERCENT_MAX: u64 = 25;

/// Milliseconds to wait before the next connection attempt after `failures` failures in a row
/// (0 = the previous attempt did not fail: connect at once).
pub fn reconnect_delay_ms(failures: u32, node_id: u64) -> u64 {
    if failures == 0 {
        return 0;
    }
    let doublings = (failures - 1).min(63);
    let base = RECONNECT_BACKOFF_INITIAL_MS
        .checked_shl(doublings)
        .filter(|d| d >> doublings == RECONNECT_BACKOFF_INITIAL_MS)
        .unwrap_or(u64::MAX)
        .min(RECONNECT_BACKOFF_MAX_MS);
    // A cheap, well-mixed hash of (node, attempt): splitmix64's finaliser.
    let mut x = node_id ^ (u64::from(failures) << 32);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let jitter = base / 100 * (x % (RECONNECT_JITTER_PERCENT_MAX + 1));
    (base + jitter).min(RECONNECT_BACKOFF_MAX_MS)
}

/// The delay before the next attempt when each attempt goes to the next of `endpoints`
/// cluster nodes: the delay grows once per full round rather than per attempt. During a leader
/// election every node fails (a dead leader refuses connections, the others know no leader
/// yet); backing off per attempt would put seconds between tries by the time a new leader is
/// ready, and a node that reconnects late is judged down by it.
pub fn reconnect_delay_per_round_ms(failures: u32, endpoints: usize, node_id: u64) -> u64 {
    let per_round = u32::try_from(endpoints.max(1)).unwrap_or(u32::MAX);
    reconnect_delay_ms(failures.div_ceil(per_round), node_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_failure_means_no_wait() {
        assert_eq!(reconnect_delay_ms(0, 7), 0);
    }

    #[test]
    fn delay_grows_exponentially_within_the_jitter_band() {
        for (failures, base) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1_600)] {
            let d = reconnect_delay_ms(failures, 42);
            assert!(
                d >= base && d <= base + base * RECONNECT_JITTER_PERCENT_MAX / 100,
                "{failures}: {d}"
            );
        }
    }

    #[test]
    fn delay_is_capped_and_never_overflows() {
        for failures in [7, 20, 64, 1_000, u32::MAX] {
            assert!(reconnect_delay_ms(failures, 1) <= RECONNECT_BACKOFF_MAX_MS);
        }
        assert_eq!(reconnect_delay_ms(u32::MAX, 1), RECONNECT_BACKOFF_MAX_MS);
    }

    #[test]
    fn delay_grows_once_per_round_of_endpoints() {
        // Three endpoints: the first round of failures waits the initial delay each time.
        for failures in 1..=3 {
            let d = reconnect_delay_per_round_ms(failures, 3, 42);
            assert_eq!(d, reconnect_delay_ms(1, 42), "{failures}");
        }
        assert_eq!(
            reconnect_delay_per_round_ms(4, 3, 42),
            reconnect_delay_ms(2, 42)
        );
        assert_eq!(reconnect_delay_per_round_ms(0, 3, 42), 0);
        // No endpoints counts as one; the cap holds.
        assert_eq!(
            reconnect_delay_per_round_ms(2, 0, 42),
            reconnect_delay_ms(2, 42)
        );
        assert!(reconnect_delay_per_round_ms(u32::MAX, 5, 1) <= RECONNECT_BACKOFF_MAX_MS);
    }

    #[test]
    fn jitter_spreads_nodes_and_is_deterministic() {
        let delays: std::collections::BTreeSet<u64> =
            (0..100).map(|node| reconnect_delay_ms(3, node)).collect();
        assert!(delays.len() > 5, "{delays:?}");
        assert_eq!(reconnect_delay_ms(3, 9), reconnect_delay_ms(3, 9));
    }
}
