//! Lease deadlines, kept by the leader only, in memory (as etcd's lessor does).
//!
//! Keep-alives renew a deadline without a Raft write; when a deadline passes, the leader proposes
//! a `LeaseRevoke` through Raft, so expiry is decided once and applied everywhere. A new leader
//! starts every lease's clock afresh (a full TTL), so no lease expires early because leadership
//! moved.

use cairn_types::limits::LEASE_REVOKES_PER_ROUND_MAX;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Leader-side lease deadlines.
#[derive(Default)]
pub struct LeaseKeeper {
    deadlines: Mutex<HashMap<i64, Instant>>,
}

impl LeaseKeeper {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Instant>> {
        self.deadlines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets lease `id` to expire `ttl_secs` from now.
    pub fn renew(&self, id: i64, ttl_secs: i64) {
        let ttl = Duration::from_secs(ttl_secs.max(0) as u64);
        self.lock().insert(id, Instant::now() + ttl);
    }

    /// Seconds until lease `id` expires (rounded up), if this keeper tracks it.
    pub fn remaining_secs(&self, id: i64) -> Option<i64> {
        let d = *self.lock().get(&id)?;
        let left = d.saturating_duration_since(Instant::now());
        Some(left.as_millis().div_ceil(1000) as i64)
    }

    /// Forgets every deadline (leadership lost).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Brings the tracked set in line with the leases that exist (`live`: id and TTL): unknown
    /// leases get a full TTL from now, vanished ones are dropped. Returns up to
    /// [`LEASE_REVOKES_PER_ROUND_MAX`] leases whose deadline has passed.
    pub fn sync_and_expired(&self, live: &[(i64, i64)], now: Instant) -> Vec<i64> {
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

    #[test]
    fn unknown_leases_get_a_full_ttl_and_expire_after_it() {
        let k = LeaseKeeper::default();
        let t0 = Instant::now();
        assert!(k.sync_and_expired(&[(7, 5)], t0).is_empty());
        assert!(k
            .sync_and_expired(&[(7, 5)], t0 + Duration::from_secs(4))
            .is_empty());
        assert_eq!(
            k.sync_and_expired(&[(7, 5)], t0 + Duration::from_secs(6)),
            vec![7]
        );
    }

    #[test]
    fn renew_pushes_the_deadline_and_vanished_leases_are_dropped() {
        let k = LeaseKeeper::default();
        k.renew(1, 100);
        assert!(k.remaining_secs(1).unwrap() >= 99);
        let now = Instant::now();
        assert!(k.sync_and_expired(&[], now).is_empty());
        assert_eq!(k.remaining_secs(1), None);
    }
}
