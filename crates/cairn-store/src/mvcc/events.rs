//! Watch catch-up: the events of a key range from a start revision on, rebuilt from the history.
//!
//! A watcher that resumes (or starts in the past) gets what it missed from here, then follows the
//! live [`Applied::events`](super::Applied) stream. Events come in (revision, order within the
//! txn) order, each with `prev_kv` when the key existed just before that revision and that
//! version is still retained.

use cairn_proto::mvccpb::Event;

use super::keyspace::{KeyHistory, KeyRange, Version};
use super::{KvError, KvState};

impl KvState {
    /// All events in the range with revision `>= start_revision`, at most `events_max` of them,
    /// cut only between revisions: the revisions returned are always complete, and the first
    /// one is returned whole even when it alone exceeds `events_max`. Resume from the revision
    /// after the last event returned.
    ///
    /// Follows etcd's rule for watchers: a start below the compaction revision is
    /// [`KvError::Compacted`] (so is 0 once anything was compacted); starting exactly at it is
    /// fine. A start above the current revision yields nothing yet.
    pub fn events_since(
        &self,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
        events_max: usize,
    ) -> Result<Vec<Event>, KvError> {
        if start_revision < self.compact_revision {
            return Err(KvError::Compacted);
        }
        let start = start_revision.max(1);
        let mut batch = RevisionBatcher::new(events_max);
        if start > self.revision {
            return Ok(batch.finish());
        }
        let range = KeyRange::new(key, range_end);
        if range.is_single() {
            // One key: its own history is shorter than the log.
            if let Some(history) = self.keys.get(key) {
                let from = history.versions.partition_point(|v| v.mod_revision < start);
                for version in &history.versions[from..] {
                    if !batch.push(version.mod_revision, || event(key, history, version)) {
                        break;
                    }
                }
            }
        } else {
            let from = self.log.partition_point(|e| e.revision < start);
            for entry in self.log.range(from..) {
                if !range.contains(&entry.key) {
                    continue;
                }
                let Some(history) = self.keys.get(&entry.key[..]) else {
                    debug_assert!(false, "log entry without its key");
                    continue;
                };
                let Some(version) = history.find(entry.revision, entry.sub) else {
                    debug_assert!(false, "log entry without its version");
                    continue;
                };
                if !batch.push(entry.revision, || event(&entry.key, history, version)) {
                    break;
                }
            }
        }
        Ok(batch.finish())
    }
}

fn event(key: &[u8], history: &KeyHistory, version: &Version) -> Event {
    version.to_event(key, history.visible_at(version.mod_revision - 1))
}

/// Collects events a revision at a time, so a cut never splits one.
struct RevisionBatcher {
    events_max: usize,
    done: Vec<Event>,
    pending: Vec<Event>,
    pending_revision: i64,
    full: bool,
}

impl RevisionBatcher {
    fn new(events_max: usize) -> Self {
        RevisionBatcher {
            events_max,
            done: Vec::new(),
            pending: Vec::new(),
            pending_revision: 0,
            full: false,
        }
    }

    /// Adds the event of `revision` (built only if it can still be returned); false once the
    /// batch is full and the caller can stop.
    fn push(&mut self, revision: i64, make: impl FnOnce() -> Event) -> bool {
        if revision != self.pending_revision {
            self.flush();
            if self.full {
                return false;
            }
            self.pending_revision = revision;
        }
        self.pending.push(make());
        true
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.done.is_empty() || self.done.len() + self.pending.len() <= self.events_max {
            self.done.append(&mut self.pending);
            if self.done.len() >= self.events_max {
                self.full = true;
            }
        } else {
            self.pending.clear();
            self.full = true;
        }
    }

    fn finish(mut self) -> Vec<Event> {
        self.flush();
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::*;

    fn history() -> KvState {
        let mut s = KvState::new();
        put(&mut s, b"a", b"1"); // 2
        apply(&mut s, txn(vec![op_put(b"c", b"1"), op_put(b"b", b"1")])); // 3
        put(&mut s, b"z", b"1"); // 4 (outside [a, d))
        put(&mut s, b"a", b"2"); // 5
        delete(&mut s, b"a", b"d"); // 6: a, b, c
        s
    }

    fn summary(events: &[Event]) -> Vec<(i64, Vec<u8>, bool)> {
        events
            .iter()
            .map(|e| (ev_rev(e), ev_key(e), is_delete(e)))
            .collect()
    }

    #[test]
    fn events_come_in_revision_then_txn_order_with_prev_kv() {
        let s = history();
        let events = s.events_since(b"a", b"d", 1, 100).unwrap();
        let expected = vec![
            (2, b"a".to_vec(), false),
            (3, b"c".to_vec(), false),
            (3, b"b".to_vec(), false),
            (5, b"a".to_vec(), false),
            (6, b"a".to_vec(), true),
            (6, b"b".to_vec(), true),
            (6, b"c".to_vec(), true),
        ];
        assert_eq!(summary(&events), expected);
        assert!(events[0].prev_kv.is_none());
        assert_eq!(events[3].prev_kv.as_ref().unwrap().value, b"1");
        assert_eq!(events[4].prev_kv.as_ref().unwrap().value, b"2");
        assert_eq!(events[4].prev_kv.as_ref().unwrap().version, 2);

        // The single-key path agrees with the log path.
        let single = s.events_since(b"a", b"", 3, 100).unwrap();
        assert_eq!(
            summary(&single),
            vec![(5, b"a".to_vec(), false), (6, b"a".to_vec(), true)]
        );
        assert_eq!(single[1].prev_kv, events[4].prev_kv);
        assert!(s.events_since(b"a", b"d", 7, 100).unwrap().is_empty());
    }

    #[test]
    fn cuts_fall_between_revisions() {
        let s = history();
        let revs = |max| -> Vec<i64> {
            s.events_since(b"a", b"d", 2, max)
                .unwrap()
                .iter()
                .map(ev_rev)
                .collect()
        };
        assert_eq!(revs(1), vec![2]);
        assert_eq!(revs(2), vec![2], "revision 3 would not fit whole");
        assert_eq!(revs(3), vec![2, 3, 3]);
        assert_eq!(revs(4), vec![2, 3, 3, 5]);
        assert_eq!(revs(6), vec![2, 3, 3, 5]);
        // The first revision comes whole even when alone too big.
        let big: Vec<i64> = s
            .events_since(b"a", b"d", 6, 1)
            .unwrap()
            .iter()
            .map(ev_rev)
            .collect();
        assert_eq!(big, vec![6, 6, 6]);
    }

    #[test]
    fn compacted_start_is_refused() {
        let mut s = history();
        s.compact(5).unwrap();
        assert_eq!(s.events_since(b"a", b"d", 4, 10), Err(KvError::Compacted));
        let events = s.events_since(b"a", b"d", 5, 10).unwrap();
        assert_eq!(summary(&events)[0], (5, b"a".to_vec(), false));
        assert!(
            events[0].prev_kv.is_none(),
            "the version before was compacted"
        );
        assert_eq!(events.len(), 4);
        assert_eq!(s.events_since(b"\0", b"\0", 0, 10), Err(KvError::Compacted));
    }
}
