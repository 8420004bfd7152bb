//! Lease deadlines, kept by the leader only, in memory (as etcd's lessor does).
//!
//! Keep-alives renew a deadline without a Raft write; when a deadline passes, the leader proposes
//! a `LeaseRevoke` through Raft, so expiry is decided once and applied everywhere. A new leader
//! starts every lease's clock afresh (a full TTL), so no lease expires early because leadership
//! moved.
//!
//! It lives in the replica layer because the replica serves grants and keep-alives on the leader
//! (`propose`, `serve_as_leader`); the leader's lease expiry (`leader::lease_expiry`) reads it.

use crate::clock::SharedClock;
use cairn_types::limits::LEASE_REVOKES_PER_ROUND_MAX;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Leader-side lease deadlines, by the leader's clock.
pub struct LeaseKeeper {
    deadlines: Mutex<HashMap<i64, Instant>>,
    clock: SharedClock,
}

impl LeaseKeeper {
    /// A keeper going by `clock`.
    pub fn new(clock: SharedClock) -> Self {
        Self {
            deadlines: Mutex::default(),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets lease `id` to expire `ttl_secs` from now.
    pub fn renew(&self, id: i64, ttl_secs: i64) {
        let ttl = Duration::from_secs(ttl_secs.max(0) as u64);
        let deadline = self.clock.now() + ttl;
        self.lock().insert(id, deadline);
    }

    /// Seconds until lease `id` expires (rounded up), if this keeper tracks it.
    pub fn remaining_secs(&self, id: i64) -> Option<i64> {
        let d = *self.lock().get(&id)?;
        let left = d.saturating_duration_since(self.clock.now());
        Some(left.as_millis().div_ceil(1000) as i64)
    }

    /// Forgets every deadline (leadership lost).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Brings the tracked set in line with the leases that exist (`live`: id and TTL): unknown
    /// leases get a full TTL from now, vanished ones are dropped. Returns up to
    /// [`LEASE_REVOKES_PER_ROUND_MAX`] leases whose deadline has passed.
    pub fn sync_and_expired(&self, live: &[(i64, i64)]) -> Vec<i64> {
        let now = self.clock.now();
        let mut d = self.lock();
        let live_ids: std::collections::HashSet<i64> = live.iter().map(|(id, _)| *id).collect();
        d.retain(|id, _| live_ids.contains(id));
        for (id, ttl) in live {
            d.entry(*id)
                .or_insert_with(|| now + Duration::from_secs((*ttl).max(0) as u64));
        }
        let mut expired: Vec<i64> = d
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        expired.sort_unstable();
        expired.truncate(LEASE_REVOKES_PER_ROUND_MAX);
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn unknown_leases_get_a_full_ttl_and_expire_after_it() {
        let clock = ManualClock::new();
        let k = LeaseKeeper::new(clock.clone());
        assert!(k.sync_and_expired(&[(7, 5)]).is_empty());
        clock.advance(Duration::from_secs(4));
        assert!(k.sync_and_expired(&[(7, 5)]).is_empty());
        clock.advance(Duration::from_secs(2));
        assert_eq!(k.sync_and_expired(&[(7, 5)]), vec![7]);
    }

    #[test]
    fn renew_pushes_the_deadline_and_vanished_leases_are_dropped() {
        let clock = ManualClock::new();
        let k = LeaseKeeper::new(clock.clone());
        k.renew(1, 100);
        clock.advance(Duration::from_secs(90));
        assert_eq!(k.remaining_secs(1), Some(10));
        assert!(k.sync_and_expired(&[(1, 100)]).is_empty());
        k.renew(1, 100);
        clock.advance(Duration::from_secs(99));
        assert!(k.sync_and_expired(&[(1, 100)]).is_empty());
        assert!(k.sync_and_expired(&[]).is_empty());
        assert_eq!(k.remaining_secs(1), None);
    }
}
