//! Compaction: drops the versions no read at or after the compaction revision can see.
//!
//! For each key the newest version at or below the compaction revision is kept (it is what a read
//! at that revision returns) unless it is a tombstone older than that revision; everything newer
//! is kept. Writes made exactly at the compaction revision, tombstones included, stay until the
//! next compaction, so a watcher may still resume from the compaction revision itself (etcd keeps
//! that tombstone for the same reason since its fix for lost delete events after compaction).

use super::keyspace::Key;
use super::{KvError, KvState};

impl KvState {
    /// Compacts the history at `revision`. Afterwards reads and watches below `revision` answer
    /// [`KvError::Compacted`]. The revision itself does not move.
    pub fn compact(&mut self, revision: i64) -> Result<(), KvError> {
        if revision <= self.compact_revision {
            return Err(KvError::Compacted);
        }
        if revision > self.revision {
            return Err(KvError::FutureRevision);
        }
        // Only keys written since the last compaction can hold more than one version, or a
        // tombstone that must go; the log names them, so compaction never scans the whole map.
        let touched_end = self.log.partition_point(|e| e.revision <= revision);
        let mut touched: Vec<Key> = self
            .log
            .range(..touched_end)
            .map(|e| e.key.clone())
            .collect();
        touched.sort_unstable();
        touched.dedup();
        let obsolete_end = self.log.partition_point(|e| e.revision < revision);
        self.log.drain(..obsolete_end);
        for key in &touched {
            self.compact_key(key, revision);
        }
        self.compact_revision = revision;
        Ok(())
    }

    fn compact_key(&mut self, key: &[u8], revision: i64) {
        // Decide on a shared borrow: a history a snapshot still shares is copied only if
        // something is actually dropped from it.
        let Some(history) = self.keys.get(key) else {
            return;
        };
        let versions = &history.versions;
        let at_or_below = versions.partition_point(|v| v.mod_revision <= revision);
        let Some(newest) = at_or_below.checked_sub(1).map(|i| &versions[i]) else {
            return;
        };
        let drop_count = if newest.mod_revision == revision {
            versions.partition_point(|v| v.mod_revision < revision)
        } else if newest.is_tombstone() {
            at_or_below
        } else {
            at_or_below - 1
        };
        if drop_count == 0 {
            return;
        }
        let freed: u64 = versions[..drop_count]
            .iter()
            .map(|v| v.size_bytes(key.len()))
            .sum();
        self.size_bytes -= freed;
        if drop_count == versions.len() {
            self.keys.remove(key);
        } else if let Some(history) = self.history_mut(key) {
            history.versions.drop_oldest(drop_count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::*;
    use cairn_proto::etcdserverpb::RangeRequest;

    #[test]
    fn compaction_drops_old_versions_and_refuses_old_reads() {
        let mut s = KvState::new();
        put(&mut s, b"k", b"1"); // 2
        put(&mut s, b"k", b"2"); // 3
        put(&mut s, b"gone", b"x"); // 4
        delete(&mut s, b"gone", b""); // 5
        put(&mut s, b"k", b"3"); // 6
        let size_before = s.approx_size_bytes();

        s.compact(5).unwrap();
        assert_eq!(s.compact_revision(), 5);
        assert!(s.approx_size_bytes() < size_before);
        // Reads at the compaction revision still work and see the kept version.
        assert_eq!(get_at(&s, b"k", 5).unwrap().value, b"2");
        assert!(get_at(&s, b"gone", 5).is_none());
        assert_eq!(get_at(&s, b"k", 6).unwrap().value, b"3");
        let old = RangeRequest {
            revision: 4,
            ..range_req(b"k", b"")
        };
        assert_eq!(s.range(&old), Err(KvError::Compacted));
        // Version numbering continues across compaction.
        assert_eq!(get(&s, b"k").unwrap().version, 3);
        assert_eq!(s.revision(), 6);

        assert_eq!(s.compact(5), Err(KvError::Compacted));
        assert_eq!(s.compact(4), Err(KvError::Compacted));
        assert_eq!(s.compact(7), Err(KvError::FutureRevision));

        s.compact(6).unwrap();
        assert!(!s.keys.contains_key(&b"gone"[..]), "the tombstone is gone");
        assert_eq!(s.keys.get(&b"k"[..]).unwrap().versions.len(), 1);
        assert_eq!(s.key_count(), 1);
    }

    #[test]
    fn tombstone_at_the_compaction_revision_survives_until_the_next() {
        let mut s = KvState::new();
        put(&mut s, b"a", b"1"); // 2
        delete(&mut s, b"a", b""); // 3
        s.compact(3).unwrap();
        assert_eq!(s.keys.get(&b"a"[..]).unwrap().versions.len(), 1);
        let events = s.events_since(b"a", b"", 3, 10).unwrap();
        assert_eq!(events.len(), 1);
        assert!(is_delete(&events[0]));
        put(&mut s, b"b", b"1"); // 4
        s.compact(4).unwrap();
        assert!(!s.keys.contains_key(&b"a"[..]));
        assert_eq!(
            s.approx_size_bytes(),
            s.keys.get(&b"b"[..]).unwrap().versions[0].size_bytes(1)
        );
    }

    #[test]
    fn untouched_keys_keep_their_single_version() {
        let mut s = KvState::new();
        put(&mut s, b"old", b"v"); // 2
        s.compact(2).unwrap();
        for i in 0..5 {
            put(&mut s, b"hot", &[i]);
        }
        s.compact(s.revision()).unwrap();
        assert_eq!(get(&s, b"old").unwrap().mod_revision, 2);
        assert_eq!(s.keys.get(&b"hot"[..]).unwrap().versions.len(), 1);
    }
}
