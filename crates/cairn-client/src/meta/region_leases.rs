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

/// The leases a node holds: region id → until when it may write the region.
#[derive(Debug, Default)]
pub struct RegionLeases {
    until: Mutex<HashMap<u64, Instant>>,
}

impl RegionLeases {
    /// No leases.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Instant>> {
        // A map of deadlines cannot be left half-updated by a panic.
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Extends the leases of `regions` to `until` (a lease is never shortened), and forgets
    /// leases that ran out before `now`.
    pub fn renew(&self, regions: &[u64], until: Instant, now: Instant) {
        let mut leases = self.lock();
        leases.retain(|_, u| *u > now);
        for region in regions {
            if leases.len() >= REGION_LEASES_PER_NODE_MAX && !leases.contains_key(region) {
                continue;
            }
            let u = leases.entry(*region).or_insert(until);
            *u = (*u).max(until);
        }
    }

    /// Until when `region` may be written, if it may be written at `now`.
    pub fn valid_until(&self, region: u64, now: Instant) -> Option<Instant> {
        self.lock().get(&region).copied().filter(|u| *u > now)
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
        self.lock().remove(&region);
    }

    /// The regions with a valid lease at `now`, in no particular order.
    pub fn valid_regions(&self, now: Instant) -> Vec<u64> {
        self.lock()
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
    fn a_lease_runs_out_unless_renewed_and_is_never_shortened() {
        let t0 = Instant::now();
        let leases = RegionLeases::new();
        assert!(!leases.is_valid(1, t0));
        leases.renew(&[1, 2], t0 + Duration::from_secs(4), t0);
        assert!(leases.is_valid(1, t0 + Duration::from_secs(3)));
        assert!(!leases.is_valid(1, t0 + Duration::from_secs(4)));
        // A late answer carrying an older grant does not shorten a newer one.
        leases.renew(&[1], t0 + Duration::from_secs(6), t0);
        leases.renew(&[1], t0 + Duration::from_secs(5), t0);
        assert_eq!(leases.valid_until(1, t0), Some(t0 + Duration::from_secs(6)));
        leases.revoke(1);
        assert!(!leases.is_valid(1, t0));
        // Expired leases are forgotten on the next renewal.
        leases.renew(
            &[3],
            t0 + Duration::from_secs(20),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(leases.valid_regions(t0 + Duration::from_secs(10)), vec![3]);
        assert_eq!(leases.lock().len(), 1);
    }
}
