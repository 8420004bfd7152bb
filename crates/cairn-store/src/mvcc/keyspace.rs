//! The stored keyspace: the versions of each key, key ranges in etcd's encoding, and the two
//! primitive writes (put, tombstone) that keep the revision log, lease index and counters in step.

use std::ops::Bound;
use std::sync::Arc;

use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};
use serde::Deserialize;

use super::value::Value;
use super::{KvState, VERSION_OVERHEAD_BYTES};

/// A key's bytes, shared between the key map, the revision log and the lease index.
pub(super) type Key = Arc<[u8]>;

/// Every key with its retained versions, in key order. A persistent B-tree: cloning it is O(1)
/// and the clone shares every node, so a snapshot takes the whole key space under the state
/// lock in microseconds and encodes it after the lock is released; apply then copies only the
/// nodes it writes to (a path of a few 16-entry nodes per write). Histories sit behind an `Arc`
/// so that copying a node copies pointers, not versions and values.
pub(super) type KeyMap = imbl::OrdMap<Key, Arc<KeyHistory>>;

/// One version of a key: what a put wrote, or a tombstone left by a delete.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(super) struct Version {
    pub mod_revision: i64,
    /// Position of this write within its revision (etcd's sub revision); orders events.
    pub sub: u32,
    /// 0 for a tombstone.
    pub create_revision: i64,
    /// Puts since the key was (re)created, 1 for the first; 0 for a tombstone.
    pub version: i64,
    /// 0 for none.
    pub lease: i64,
    /// `None` marks a tombstone: the key was deleted at `mod_revision`. Held packed when
    /// large ([`Value`]), and so in a snapshot; read as it was put from a format-1 snapshot.
    #[serde(deserialize_with = "super::snapshot::opt_value::deserialize")]
    pub value: Option<Value>,
}

impl Version {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// The wire form, as etcd returns it from a range (value dropped for `keys_only`).
    pub fn to_kv(&self, key: &[u8], with_value: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            value: match (&self.value, with_value) {
                (Some(value), true) => value.to_vec(),
                _ => Vec::new(),
            },
            lease: self.lease,
        }
    }

    /// The watch event this version stands for. A delete event carries only the key and the
    /// revision of the delete, as etcd's do.
    pub fn to_event(&self, key: &[u8], prev: Option<&Version>) -> Event {
        let (kind, kv) = if self.is_tombstone() {
            let kv = KeyValue {
                key: key.to_vec(),
                mod_revision: self.mod_revision,
                ..KeyValue::default()
            };
            (EventType::Delete, kv)
        } else {
            (EventType::Put, self.to_kv(key, true))
        };
        Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv: prev.map(|p| p.to_kv(key, true)),
        }
    }

    pub fn size_bytes(&self, key_len: usize) -> u64 {
        let value_len = self.value.as_ref().map_or(0, Value::len);
        (key_len + value_len) as u64 + VERSION_OVERHEAD_BYTES
    }
}

/// The retained versions of one key, oldest first, ordered by (mod_revision, sub).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct KeyHistory {
    pub versions: Versions,
}

/// A key's versions: the one most keys of a metadata store have, held in place, or a vector
/// once there are more. A key written once costs one allocation for its history, not two (the
/// history and a vector of one): about 30 bytes a key on every node (BENCHMARKS.md, issue 12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Versions {
    One(Version),
    Many(Vec<Version>),
}

impl Default for Versions {
    fn default() -> Self {
        Versions::Many(Vec::new())
    }
}

impl std::ops::Deref for Versions {
    type Target = [Version];

    fn deref(&self) -> &[Version] {
        match self {
            Versions::One(v) => std::slice::from_ref(v),
            Versions::Many(vs) => vs,
        }
    }
}

impl From<Vec<Version>> for Versions {
    fn from(mut versions: Vec<Version>) -> Self {
        if versions.len() == 1 {
            Versions::One(versions.pop().expect("one version"))
        } else {
            Versions::Many(versions)
        }
    }
}

impl Versions {
    /// Appends `version`, the newest.
    pub fn push(&mut self, version: Version) {
        match self {
            Versions::Many(vs) if vs.is_empty() => *self = Versions::One(version),
            Versions::Many(vs) => vs.push(version),
            Versions::One(_) => {
                let Versions::One(first) = std::mem::take(self) else {
                    unreachable!("matched One above")
                };
                *self = Versions::Many(vec![first, version]);
            }
        }
    }

    /// Drops the `count` oldest versions. A key rewritten a few times and then left alone goes
    /// back to one version in place; a vector three quarters unused gives its room back (not
    /// on every compaction of a key that is still busy).
    pub fn drop_oldest(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        match self {
            Versions::One(_) => *self = Versions::default(),
            Versions::Many(vs) => {
                vs.drain(..count.min(vs.len()));
                if vs.len() == 1 {
                    *self = Versions::from(std::mem::take(vs));
                } else if vs.capacity() >= 4 * vs.len() {
                    vs.shrink_to_fit();
                }
            }
        }
    }
}

impl KeyHistory {
    /// Appends `version`, the newest.
    pub fn push(&mut self, version: Version) {
        self.versions.push(version);
    }

    /// The key as of `revision`: the newest version at or below it, unless that is a tombstone.
    pub fn visible_at(&self, revision: i64) -> Option<&Version> {
        // Fast path: most reads are at the latest revision.
        let last = self.versions.last()?;
        if last.mod_revision <= revision {
            return (!last.is_tombstone()).then_some(last);
        }
        let newer = self
            .versions
            .partition_point(|v| v.mod_revision <= revision);
        let version = self.versions[..newer].last()?;
        (!version.is_tombstone()).then_some(version)
    }

    /// The newest version, unless the key is deleted.
    pub fn latest_live(&self) -> Option<&Version> {
        self.versions.last().filter(|v| !v.is_tombstone())
    }

    /// The version written at (revision, sub), if still retained.
    pub fn find(&self, revision: i64, sub: u32) -> Option<&Version> {
        self.versions
            .binary_search_by(|v| (v.mod_revision, v.sub).cmp(&(revision, sub)))
            .ok()
            .map(|i| &self.versions[i])
    }
}

/// One write in the revision log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LogEntry {
    pub revision: i64,
    pub sub: u32,
    pub key: Key,
}

/// A key range in etcd's encoding: an empty `range_end` names the single key, `"\0"` means
/// "every key from `key` on", anything else is the half-open `[key, range_end)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyRange<'a> {
    start: &'a [u8],
    end: RangeEnd<'a>,
}

#[derive(Debug, Clone, Copy)]
enum RangeEnd<'a> {
    Single,
    Unbounded,
    Before(&'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        let end = match range_end {
            [] => RangeEnd::Single,
            [0] => RangeEnd::Unbounded,
            end => RangeEnd::Before(end),
        };
        KeyRange { start: key, end }
    }

    pub fn is_single(&self) -> bool {
        matches!(self.end, RangeEnd::Single)
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self.end {
            RangeEnd::Single => key == self.start,
            RangeEnd::Unbounded => key >= self.start,
            RangeEnd::Before(end) => key >= self.start && key < end,
        }
    }

    /// Bounds for `BTreeMap::range`; an inverted range becomes an empty one instead of a panic.
    pub fn bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        let start = Bound::Included(self.start);
        match self.end {
            RangeEnd::Single => (start, Bound::Included(self.start)),
            RangeEnd::Unbounded => (start, Bound::Unbounded),
            RangeEnd::Before(end) if end > self.start => (start, Bound::Excluded(end)),
            RangeEnd::Before(_) => (start, Bound::Excluded(self.start)),
        }
    }

    /// The keys of `map` in this range, in key order.
    pub fn iter<'m>(
        &self,
        map: &'m KeyMap,
    ) -> impl DoubleEndedIterator<Item = (&'m Key, &'m KeyHistory)> + 'm {
        // One key (most reads and every put's checks): a lookup, not a ranged iterator, which
        // in the persistent map costs a descent for each end.
        let (single, span) = if self.is_single() {
            (map.get_key_value(self.start), None)
        } else {
            (None, Some(map.range::<_, [u8]>(self.bounds())))
        };
        single
            .into_iter()
            .chain(span.into_iter().flatten())
            .map(|(k, h)| (k, h.as_ref()))
    }
}

/// The writes of one transaction in progress: all share the revision after the current one.
#[derive(Debug)]
pub(super) struct TxnWriter {
    pub revision: i64,
    next_sub: u32,
    pub events: Vec<Event>,
}

impl TxnWriter {
    pub fn new(current_revision: i64) -> Self {
        TxnWriter {
            revision: current_revision + 1,
            next_sub: 0,
            events: Vec::new(),
        }
    }

    pub fn wrote(&self) -> bool {
        self.next_sub > 0
    }

    fn take_sub(&mut self) -> u32 {
        let sub = self.next_sub;
        self.next_sub += 1;
        sub
    }
}

impl KvState {
    /// The history of `key` for writing; copied first if a snapshot still shares it.
    pub(super) fn history_mut(&mut self, key: &[u8]) -> Option<&mut KeyHistory> {
        self.keys.get_mut(key).map(Arc::make_mut)
    }

    /// Writes `value` under `key` in the transaction of `w`. The caller has checked the lease.
    pub(super) fn write_put(&mut self, w: &mut TxnWriter, key: &[u8], value: Vec<u8>, lease: i64) {
        let sub = w.take_sub();
        let version_at = |create_revision, version| Version {
            mod_revision: w.revision,
            sub,
            create_revision,
            version,
            lease,
            value: Some(Value::new(&value)),
        };
        // Descents of the key map are few (keys share long prefixes, so every comparison on the
        // way down is a memcmp): one for a stored key, whose history is updated where it lies;
        // a second for a new key, inserted with its history whole.
        let (key, prev_kv, create_revision, version, old_lease) =
            match self.keys.get_key_value_mut(key) {
                Some((stored, history)) => {
                    let key = stored.clone();
                    let history = Arc::make_mut(history);
                    let prev_kv = history
                        .visible_at(w.revision - 1)
                        .map(|p| p.to_kv(&key, true));
                    let (create_revision, version, old_lease) = match history.latest_live() {
                        Some(latest) => (latest.create_revision, latest.version + 1, latest.lease),
                        None => {
                            self.live_keys += 1;
                            (w.revision, 1, 0)
                        }
                    };
                    let new = version_at(create_revision, version);
                    self.size_bytes += new.size_bytes(key.len());
                    history.push(new);
                    (key, prev_kv, create_revision, version, old_lease)
                }
                None => {
                    let key: Key = Arc::from(key);
                    self.live_keys += 1;
                    let new = version_at(w.revision, 1);
                    self.size_bytes += new.size_bytes(key.len());
                    let mut history = KeyHistory::default();
                    history.push(new);
                    self.keys.insert(key.clone(), Arc::new(history));
                    (key, None, w.revision, 1, 0)
                }
            };
        // The event takes the value as written; the version holds its own copy, maybe packed.
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: w.revision,
            version,
            value,
            lease,
        };
        w.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv,
        });
        if old_lease != lease {
            self.detach_lease(old_lease, &key);
            self.attach_lease(lease, &key);
        }
        self.log.push_back(LogEntry {
            revision: w.revision,
            sub,
            key,
        });
    }

    /// Deletes `key` in the transaction of `w`; a key that does not exist is left alone.
    /// Returns whether the key existed.
    pub(super) fn write_delete(&mut self, w: &mut TxnWriter, key: &Key) -> bool {
        // Look before taking the history for writing: copying it for a no-op would be waste.
        if self
            .keys
            .get(&key[..])
            .and_then(|h| h.latest_live())
            .is_none()
        {
            return false;
        }
        let history = Arc::make_mut(self.keys.get_mut(&key[..]).expect("checked above"));
        let latest = history.latest_live().expect("checked above");
        let old_lease = latest.lease;
        let prev = history.visible_at(w.revision - 1).cloned();
        let sub = w.take_sub();
        let tombstone = Version {
            mod_revision: w.revision,
            sub,
            create_revision: 0,
            version: 0,
            lease: 0,
            value: None,
        };
        self.size_bytes += tombstone.size_bytes(key.len());
        w.events.push(tombstone.to_event(key, prev.as_ref()));
        history.push(tombstone);
        self.live_keys -= 1;
        self.detach_lease(old_lease, key);
        self.log.push_back(LogEntry {
            revision: w.revision,
            sub,
            key: key.clone(),
        });
        true
    }

    /// Ends the transaction of `w`: the revision moves on only if something was written.
    pub(super) fn finish(&mut self, w: TxnWriter) -> Vec<Event> {
        if w.wrote() {
            self.revision = w.revision;
        }
        w.events
    }

    /// The live keys of `range` as of the latest state (including writes of a txn in progress).
    pub(super) fn live_keys_in(&self, range: KeyRange<'_>) -> Vec<Key> {
        range
            .iter(&self.keys)
            .filter(|(_, h)| h.latest_live().is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_range_forms() {
        let single = KeyRange::new(b"b", b"");
        assert!(single.is_single());
        assert!(single.contains(b"b") && !single.contains(b"ba"));

        let from = KeyRange::new(b"b", b"\0");
        assert!(from.contains(b"b") && from.contains(b"zzz") && !from.contains(b"a"));

        let all = KeyRange::new(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"a"));

        let span = KeyRange::new(b"b", b"d");
        assert!(span.contains(b"b") && span.contains(b"cz") && !span.contains(b"d"));

        let inverted = KeyRange::new(b"d", b"b");
        let map: KeyMap = [b"c".as_slice(), b"d", b"e"]
            .into_iter()
            .map(|k| (Key::from(k), Arc::new(KeyHistory::default())))
            .collect();
        assert_eq!(inverted.iter(&map).count(), 0);
        assert_eq!(KeyRange::new(b"d", b"d").iter(&map).count(), 0);
        assert_eq!(KeyRange::new(b"c", b"e").iter(&map).count(), 2);
        assert_eq!(KeyRange::new(b"c", b"\0").iter(&map).count(), 3);
    }

    #[test]
    fn puts_count_keys_across_a_delete_and_leave_a_taken_image_as_it_was() {
        use crate::mvcc::test_util::{delete, get, put};
        use crate::mvcc::KvState;
        let encoded = |image: &crate::mvcc::KvSnapshot| {
            let mut out = Vec::new();
            image.encode_into(&mut out);
            out
        };
        let mut s = KvState::new();
        put(&mut s, b"a", b"1");
        let image = s.snapshot_view();
        let taken = encoded(&image);

        // A stored key, a new key, then a key put again after its delete.
        let again = put(&mut s, b"a", b"2");
        assert_eq!(again.events[0].prev_kv.as_ref().map(|p| p.version), Some(1));
        put(&mut s, b"b", b"1");
        delete(&mut s, b"a", b"");
        assert_eq!(s.key_count(), 1);
        let deleted_size = s.approx_size_bytes();
        let back = put(&mut s, b"a", b"3");
        assert_eq!(s.key_count(), 2);
        assert!(s.approx_size_bytes() > deleted_size);
        assert!(
            back.events[0].prev_kv.is_none(),
            "nothing visible before the put"
        );
        let a = get(&s, b"a").expect("put back");
        assert_eq!(
            (a.version, a.create_revision, a.mod_revision),
            (1, s.revision(), s.revision()),
            "a key put after its delete starts over"
        );

        assert_eq!(
            encoded(&image),
            taken,
            "the image taken before is unchanged"
        );
    }

    #[test]
    fn versions_grow_from_one_in_place_and_shrink_back_to_it() {
        let v = |rev| Version {
            mod_revision: rev,
            sub: 0,
            create_revision: 1,
            version: rev,
            lease: 0,
            value: Some(Value::new(&[rev as u8])),
        };
        let revisions = |vs: &Versions| vs.iter().map(|v| v.mod_revision).collect::<Vec<_>>();
        let mut vs = Versions::default();
        assert!(vs.is_empty());
        vs.push(v(1));
        assert!(matches!(vs, Versions::One(_)));
        assert_eq!(revisions(&vs), [1]);
        vs.push(v(2));
        vs.push(v(3));
        assert_eq!(revisions(&vs), [1, 2, 3]);
        vs.drop_oldest(0);
        assert_eq!(revisions(&vs), [1, 2, 3]);
        vs.drop_oldest(2);
        assert!(
            matches!(vs, Versions::One(_)),
            "one left: held in place again"
        );
        assert_eq!(revisions(&vs), [3]);
        vs.push(v(4));
        assert_eq!(revisions(&vs), [3, 4]);
        vs.drop_oldest(2);
        assert!(vs.is_empty());
        assert_eq!(revisions(&Versions::from(vec![v(7)])), [7]);
        assert_eq!(Versions::from(vec![v(7), v(8)]).len(), 2);
    }

    #[test]
    fn visible_at_respects_tombstones() {
        let v = |rev, value: Option<&[u8]>| Version {
            mod_revision: rev,
            sub: 0,
            create_revision: if value.is_some() { 2 } else { 0 },
            version: 1,
            lease: 0,
            value: value.map(Value::new),
        };
        let h = KeyHistory {
            versions: vec![v(2, Some(b"a")), v(4, None), v(6, Some(b"b"))].into(),
        };
        assert!(h.visible_at(1).is_none());
        assert_eq!(h.visible_at(3).unwrap().mod_revision, 2);
        assert!(h.visible_at(4).is_none());
        assert!(h.visible_at(5).is_none());
        assert_eq!(h.visible_at(9).unwrap().mod_revision, 6);
        assert_eq!(h.find(4, 0).unwrap().mod_revision, 4);
        assert!(h.find(4, 1).is_none());
    }
}
