//! Region leases, the datanode's side: which regions this node may write, and until when.
//!
//! The leader grants leases on its answers to regular heartbeats
//! ([`cairn_proto::cairnpb::RegionLeaseGrant`]); the heartbeat loop records each grant here as
//! running from when the node *sent* the request, by the node's own clock, so the lease ends here
//! before the leader counts it as over. The embedding node shares one [`RegionLeases`] with its
//! heartbeat loop ([`super::HeartbeatOptions::region_leases`]) and checks it before every write:
//! a region whose lease ran out (the node lost the leader, or the leader stopped renewing it
//! because the region moved) takes no writes, so two nodes never write one region at once.

use std::collections::HashMap;
use std::sync::Mutex;

// tokio's clock: simulated time under a paused clock, the monotonic clock otherwise.
use tokio::time::Instant;

/// Regions one node keeps leases for; a grant beyond it is not recorded (the region then takes
/// no writes), which errs on the safe side.
pub const REGION_LEASES_PER_NODE_MAX: usize = 1_000_000;

/// How long a revocation is remembered: a grant answering a request sent before it is refused
/// for this long (a heartbeat answer never takes longer to arrive).
pub const REVOCATIONS_REMEMBERED_MS: u64 = 60_000;

/// The leases a node holds: region id → until when it may write the region.
#[derive(Debug, Default)]
pub struct RegionLeases {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    until: HashMap<u64, Instant>,
    /// How much slower than real time this node's clock runs (0.05: 5 % slow; negative: fast).
    clock_slowdown: f64,
    /// Region → when its lease was last revoked (for [`REVOCATIONS_REMEMBERED_MS`]).
    revoked: HashMap<u64, Instant>,
}

impl RegionLeases {
    /// No leases.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Maps of deadlines cannot be left half-updated by a panic.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes this node count its leases on a clock running `slowdown` slower than real time
    /// (0.05: 5 % slow, so a 4 s lease lasts 4.21 s; negative: fast). A real node's clock is the
    /// only one it has and this stays 0; simulations set it to check that the leader's margin
    /// covers the drift the operators' guide states.
    pub fn set_clock_drift(&self, slowdown: f64) {
        self.lock().clock_slowdown = slowdown.clamp(-0.5, 0.5);
    }

    /// Extends the leases of `regions` to `until` (a lease is never shortened), and forgets
    /// leases that ran out before `now`. `granted_at` is when the grant was asked for (the
    /// request's send time, or the instruction's arrival): a region revoked after that keeps no
    /// lease, since the grant predates the revocation (an answer overtaken by a downgrade).
    pub fn renew(&self, regions: &[u64], granted_at: Instant, until: Instant, now: Instant) {
        let mut state = self.lock();
        let slowdown = state.clock_slowdown;
        let until = if slowdown == 0.0 {
            until
        } else {
            let length = until.saturating_duration_since(granted_at);
            granted_at + length.mul_f64(1.0 / (1.0 - slowdown))
        };
        let remembered = std::time::Duration::from_millis(REVOCATIONS_REMEMBERED_MS);
        state.until.retain(|_, u| *u > now);
        state.revoked.retain(|_, at| *at + remembered > now);
        for region in regions {
            if state
                .revoked
                .get(region)
                .is_some_and(|at| *at >= granted_at)
            {
                continue;
            }
            state.revoked.remove(region);
            if state.until.len() >= REGION_LEASES_PER_NODE_MAX && !state.until.contains_key(region)
            {
                continue;
            }
            let u = state.until.entry(*region).or_insert(until);
            *u = (*u).max(until);
        }
    }

    /// Until when `region` may be written, if it may be written at `now`.
    pub fn valid_until(&self, region: u64, now: Instant) -> Option<Instant> {
        self.lock().until.get(&region).copied().filter(|u| *u > now)
    }

    /// Whether `region` may be written at `now`.
    pub fn is_valid(&self, region: u64, now: Instant) -> bool {
        self.valid_until(region, now).is_some()
    }

    /// Whether `region` may be written now.
    pub fn is_valid_now(&self, region: u64) -> bool {
        self.is_valid(region, Instant::now())
    }

    /// Ends the lease of `region` at once (the node gave up leading it: closed or downgraded).
    pub fn revoke(&self, region: u64) {
        let mut state = self.lock();
        state.until.remove(&region);
        if state.revoked.len() < REGION_LEASES_PER_NODE_MAX {
            state.revoked.insert(region, Instant::now());
        }
    }

    /// The regions with a valid lease at `now`, in no particular order.
    pub fn valid_regions(&self, now: Instant) -> Vec<u64> {
        self.lock()
            .until
            .iter()
            .filter(|(_, u)| **u > now)
            .map(|(r, _)| *r)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_drifting_clock_stretches_or_shrinks_every_lease() {
        let t0 = Instant::now();
        let slow = RegionLeases::new();
        slow.set_clock_drift(0.2);
        slow.renew(&[1], t0, t0 + Duration::from_millis(800), t0);
        assert_eq!(
            slow.valid_until(1, t0),
            Some(t0 + Duration::from_millis(1_000))
        );
        let fast = RegionLeases::new();
        fast.set_clock_drift(-0.25);
        fast.renew(&[1], t0, t0 + Duration::from_millis(1_000), t0);
        assert_eq!(
            fast.valid_until(1, t0),
            Some(t0 + Duration::from_millis(800))
        );
    }

    #[test]
    fn a_lease_runs_out_unless_renewed_and_is_never_shortened() {
        let t0 = Instant::now();
        let leases = RegionLeases::new();
        assert!(!leases.is_valid(1, t0));
        leases.renew(&[1, 2], t0, t0 + Duration::from_secs(4), t0);
        assert!(leases.is_valid(1, t0 + Duration::from_secs(3)));
        assert!(!leases.is_valid(1, t0 + Duration::from_secs(4)));
        // A late answer carrying an older grant does not shorten a newer one.
        leases.renew(&[1], t0, t0 + Duration::from_secs(6), t0);
        leases.renew(&[1], t0, t0 + Duration::from_secs(5), t0);
        assert_eq!(leases.valid_until(1, t0), Some(t0 + Duration::from_secs(6)));
        leases.revoke(1);
        assert!(!leases.is_valid(1, t0));
        // Expired leases are forgotten on the next renewal.
        let t10 = t0 + Duration::from_secs(10);
        leases.renew(&[3], t10, t0 + Duration::from_secs(20), t10);
        assert_eq!(leases.valid_regions(t10), vec![3]);
        assert_eq!(leases.lock().until.len(), 1);
    }

    #[test]
    fn a_grant_asked_for_before_a_revocation_does_not_bring_the_lease_back() {
        let leases = RegionLeases::new();
        let asked = Instant::now();
        let until = asked + Duration::from_secs(4);
        leases.renew(&[1], asked, until, asked);
        // The downgrade arrives while a heartbeat is in flight...
        leases.revoke(1);
        // ...whose answer, granted before the downgrade, arrives after it.
        leases.renew(&[1], asked, until, asked);
        assert!(!leases.is_valid(1, asked));
        // A grant asked for after the revocation (an upgrade) leases it again.
        let later = Instant::now() + Duration::from_millis(1);
        leases.renew(&[1], later, later + Duration::from_secs(4), later);
        assert!(leases.is_valid(1, later));
    }
}
