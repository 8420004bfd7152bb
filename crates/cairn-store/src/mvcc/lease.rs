//! Lease records: grant, revoke (deleting the attached keys at one revision) and lookups.
//!
//! Only the replicated part of a lease lives here (id, granted TTL, attached keys); expiry and
//! keep-alives run on the leader's clock in the server, which proposes a revoke when one expires.

use super::keyspace::{Key, TxnWriter};
use super::{Applied, KvError, KvState};

/// The largest TTL a lease may be granted with, as etcd's `MaxLeaseTTL` (about 285 years).
pub const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;

/// Every lease by id. Persistent, as the key map is, so a snapshot takes it in O(1).
pub(super) type LeaseMap = imbl::OrdMap<i64, LeaseRecord>;

/// A lease as the state machine knows it. Cloning is O(1) (the key set is persistent), which
/// is what copying a node of [`LeaseMap`] after a snapshot does to each record in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LeaseRecord {
    pub ttl_secs: i64,
    /// The keys whose current version carries this lease.
    pub keys: imbl::OrdSet<Key>,
}

/// What [`KvState::lease`] tells about one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    /// The TTL the lease was granted with.
    pub ttl_secs: i64,
    /// The attached keys, in key order.
    pub keys: Vec<Vec<u8>>,
}

impl KvState {
    /// Records a new lease. The id is chosen by the proposer (etcd picks one when the client
    /// sends 0), so 0 itself is refused like etcd's lessor does.
    pub fn lease_grant(&mut self, id: i64, ttl_secs: i64) -> Result<(), KvError> {
        if id == 0 {
            return Err(KvError::LeaseNotFound);
        }
        if ttl_secs > LEASE_TTL_MAX_SECS {
            return Err(KvError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(KvError::LeaseExists);
        }
        self.leases.insert(
            id,
            LeaseRecord {
                ttl_secs,
                keys: imbl::OrdSet::new(),
            },
        );
        Ok(())
    }

    /// Removes a lease and deletes its keys, all at one new revision, in key order (as etcd's
    /// lessor does). The revision stays put when the lease had no keys.
    pub fn lease_revoke(&mut self, id: i64) -> Result<Applied<()>, KvError> {
        let record = self.leases.remove(&id).ok_or(KvError::LeaseNotFound)?;
        let mut w = TxnWriter::new(self.revision);
        for key in &record.keys {
            let existed = self.write_delete(&mut w, key);
            debug_assert!(existed, "a lease only holds live keys");
        }
        let events = self.finish(w);
        Ok(Applied {
            response: (),
            events,
            revision: self.revision,
        })
    }

    /// The lease `id`, if granted and not revoked.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|record| LeaseInfo {
            id,
            ttl_secs: record.ttl_secs,
            keys: record.keys.iter().map(|k| k.to_vec()).collect(),
        })
    }

    /// The TTL lease `id` was granted with, if it exists; unlike [`Self::lease`], without
    /// copying its keys.
    pub fn lease_ttl(&self, id: i64) -> Option<i64> {
        self.leases.get(&id).map(|record| record.ttl_secs)
    }

    /// Every lease's id and granted TTL, ascending by id: one walk of the lease table, no keys
    /// copied (the leader's expiry reads this under the state lock every round).
    pub fn lease_ttls(&self) -> Vec<(i64, i64)> {
        self.leases
            .iter()
            .map(|(id, record)| (*id, record.ttl_secs))
            .collect()
    }

    /// Whether the lease `id` exists.
    pub fn lease_exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// How many leases exist.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// The ids of all leases, ascending.
    pub fn lease_ids(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }

    /// Ties `key` to lease `id` (0: no lease).
    pub(super) fn attach_lease(&mut self, id: i64, key: &Key) {
        if id == 0 {
            return;
        }
        match self.leases.get_mut(&id) {
            Some(record) => {
                record.keys.insert(key.clone());
            }
            // Puts check their lease before writing, so this cannot happen.
            None => debug_assert!(false, "attach to unknown lease {id}"),
        }
    }

    /// Unties `key` from lease `id` (0: no lease).
    pub(super) fn detach_lease(&mut self, id: i64, key: &Key) {
        if id == 0 {
            return;
        }
        if let Some(record) = self.leases.get_mut(&id) {
            record.keys.remove(&key[..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::*;

    #[test]
    fn grant_refuses_duplicates_zero_and_huge_ttls() {
        let mut s = KvState::new();
        s.lease_grant(7, 10).unwrap();
        assert_eq!(s.lease_grant(7, 10), Err(KvError::LeaseExists));
        assert_eq!(s.lease_grant(0, 10), Err(KvError::LeaseNotFound));
        assert_eq!(
            s.lease_grant(8, LEASE_TTL_MAX_SECS + 1),
            Err(KvError::LeaseTtlTooLarge)
        );
        assert_eq!(s.lease_ids(), vec![7]);
        s.lease_grant(3, 60).unwrap();
        assert_eq!(s.lease_ttls(), vec![(3, 60), (7, 10)]);
        assert_eq!((s.lease_ttl(7), s.lease_ttl(8)), (Some(10), None));
        s.lease_revoke(3).unwrap();
        assert_eq!(s.lease_count(), 1);
        assert!(s.lease_exists(7) && !s.lease_exists(8));
        assert_eq!(s.revision(), 1, "granting writes no revision");
    }

    #[test]
    fn revoke_deletes_attached_keys_at_one_revision() {
        let mut s = KvState::new();
        s.lease_grant(5, 30).unwrap();
        put_lease(&mut s, b"b", b"1", 5);
        put_lease(&mut s, b"a", b"2", 5);
        put(&mut s, b"c", b"3");
        assert_eq!(s.revision(), 4);
        let info = s.lease(5).unwrap();
        assert_eq!(info.keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(info.ttl_secs, 30);

        let applied = s.lease_revoke(5).unwrap();
        assert_eq!(applied.revision, 5);
        assert_eq!(s.revision(), 5);
        let keys: Vec<_> = applied.events.iter().map(ev_key).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(applied.events.iter().all(|e| is_delete(e)
            && e.kv.as_ref().unwrap().mod_revision == 5
            && e.prev_kv.as_ref().unwrap().lease == 5));
        assert!(get(&s, b"a").is_none() && get(&s, b"b").is_none());
        assert!(get(&s, b"c").is_some());
        assert!(s.lease(5).is_none());
        assert_eq!(s.lease_revoke(5), Err(KvError::LeaseNotFound));
    }

    #[test]
    fn revoke_without_keys_keeps_the_revision() {
        let mut s = KvState::new();
        s.lease_grant(5, 30).unwrap();
        let applied = s.lease_revoke(5).unwrap();
        assert_eq!(applied.revision, 1);
        assert!(applied.events.is_empty());
    }

    #[test]
    fn keys_move_between_leases_and_leave_on_delete() {
        let mut s = KvState::new();
        s.lease_grant(1, 30).unwrap();
        s.lease_grant(2, 30).unwrap();
        put_lease(&mut s, b"k", b"v", 1);
        put_lease(&mut s, b"k", b"v", 2);
        assert!(s.lease(1).unwrap().keys.is_empty());
        assert_eq!(s.lease(2).unwrap().keys, vec![b"k".to_vec()]);
        put(&mut s, b"k", b"v");
        assert!(s.lease(2).unwrap().keys.is_empty());
        put_lease(&mut s, b"k", b"v", 1);
        delete(&mut s, b"k", b"");
        assert!(s.lease(1).unwrap().keys.is_empty());
        // Revoking now touches nothing: the key is gone already.
        let rev = s.revision();
        assert_eq!(s.lease_revoke(1).unwrap().revision, rev);
    }
}
