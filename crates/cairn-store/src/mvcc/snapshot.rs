//! Snapshots: the whole state as postcard bytes and back, for Raft snapshots and their transfer.
//!
//! Only what cannot be derived is written (revisions, every retained version, lease TTLs); the
//! revision log, lease-to-key index and counters are rebuilt on decode, and every invariant the
//! rest of the module relies on is checked there, so a bad snapshot is an error, not a panic later.
//!
//! Taking a snapshot is split in two so that the state's lock is held only for the cheap half:
//! [`KvState::snapshot_view`] shares the persistent maps (O(1)), and [`KvSnapshot::encode_into`]
//! walks them afterwards, while apply goes on.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::keyspace::{Key, KeyHistory, KeyMap, LogEntry, Version};
use super::lease::{LeaseMap, LeaseRecord};
use super::{KvError, KvState};

/// Bumped whenever the encoding changes; a snapshot of another format is refused.
const SNAPSHOT_FORMAT: u32 = 1;

#[derive(Serialize)]
struct ImageRef<'a> {
    format: u32,
    revision: i64,
    compact_revision: i64,
    keys: KeysRef<'a>,
    /// (id, ttl_secs), ascending by id.
    leases: LeasesRef<'a>,
}

struct KeysRef<'a>(&'a KeyMap);

impl Serialize for KeysRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, h)| (Bytes(k), &*h.versions)))
    }
}

struct LeasesRef<'a>(&'a LeaseMap);

impl Serialize for LeasesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(id, l)| (*id, l.ttl_secs)))
    }
}

/// A point-in-time image of a [`KvState`], for a snapshot: it shares the persistent maps with
/// the state it was taken from, so taking it is O(1) and encoding it needs no lock. Writes to
/// the state afterwards do not show in it.
#[derive(Debug, Clone)]
pub struct KvSnapshot {
    pub(super) revision: i64,
    pub(super) compact_revision: i64,
    pub(super) keys: KeyMap,
    pub(super) leases: LeaseMap,
}

impl KvSnapshot {
    /// The revision the image was taken at.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Appends [`KvState::encode_snapshot`]'s bytes for the state this was taken from.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let image = ImageRef {
            format: SNAPSHOT_FORMAT,
            revision: self.revision,
            compact_revision: self.compact_revision,
            keys: KeysRef(&self.keys),
            leases: LeasesRef(&self.leases),
        };
        let buffer = std::mem::take(out);
        *out = postcard::to_extend(&image, buffer).expect("encoding into memory cannot fail");
    }
}

/// The decoding twin of [`ImageRef`]: same fields, same order, owned.
#[derive(Deserialize)]
struct Image {
    format: u32,
    revision: i64,
    compact_revision: i64,
    keys: Vec<(ByteBuf, Vec<Version>)>,
    leases: Vec<(i64, i64)>,
}

impl KvState {
    /// The state as bytes; [`KvState::decode_snapshot`] gives back an equal state.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_snapshot_into(&mut out);
        out
    }

    /// Appends [`KvState::encode_snapshot`]'s bytes to `out`: lets a caller that frames the
    /// image encode it straight into its own buffer, without a second full-size copy.
    pub fn encode_snapshot_into(&self, out: &mut Vec<u8>) {
        self.snapshot_view().encode_into(out);
    }

    /// The state as it is now, for encoding later without holding up writes: O(1).
    pub fn snapshot_view(&self) -> KvSnapshot {
        KvSnapshot {
            revision: self.revision,
            compact_revision: self.compact_revision,
            keys: self.keys.clone(),
            leases: self.leases.clone(),
        }
    }

    /// Rebuilds a state from [`KvState::encode_snapshot`] bytes, checking its invariants.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, KvError> {
        let (image, rest): (Image, _) = postcard::take_from_bytes(bytes).map_err(corrupt)?;
        if !rest.is_empty() {
            return Err(corrupt(format!("{} trailing bytes", rest.len())));
        }
        if image.format != SNAPSHOT_FORMAT {
            return Err(corrupt(format!("unknown format {}", image.format)));
        }
        if image.revision < 1
            || image.compact_revision < 0
            || image.compact_revision > image.revision
        {
            return Err(corrupt(format!(
                "revision {} with compact revision {}",
                image.revision, image.compact_revision
            )));
        }
        let mut state = KvState {
            revision: image.revision,
            compact_revision: image.compact_revision,
            ..KvState::new()
        };
        for (id, ttl_secs) in image.leases {
            let record = LeaseRecord {
                ttl_secs,
                keys: imbl::OrdSet::new(),
            };
            if id == 0 || state.leases.insert(id, record).is_some() {
                return Err(corrupt(format!("lease id {id} invalid or repeated")));
            }
        }
        let mut log = Vec::new();
        let mut previous_key: Option<Key> = None;
        for (key, versions) in image.keys {
            let key: Key = Arc::from(key.0);
            if previous_key.as_ref().is_some_and(|p| *p >= key) {
                return Err(corrupt("keys out of order".to_string()));
            }
            state.check_versions(&key, &versions)?;
            for v in &versions {
                state.size_bytes += v.size_bytes(key.len());
                if v.mod_revision >= state.compact_revision {
                    log.push(LogEntry {
                        revision: v.mod_revision,
                        sub: v.sub,
                        key: key.clone(),
                    });
                }
            }
            let history = KeyHistory {
                versions: versions.into(),
            };
            if let Some(latest) = history.latest_live() {
                state.live_keys += 1;
                if latest.lease != 0 {
                    match state.leases.get_mut(&latest.lease) {
                        Some(record) => record.keys.insert(key.clone()),
                        None => return Err(corrupt(format!("unknown lease {}", latest.lease))),
                    };
                }
            }
            state.keys.insert(key.clone(), Arc::new(history));
            previous_key = Some(key);
        }
        log.sort_unstable_by_key(|e| (e.revision, e.sub));
        if log
            .windows(2)
            .any(|w| (w[0].revision, w[0].sub) == (w[1].revision, w[1].sub))
        {
            return Err(corrupt("two writes share a revision and sub".to_string()));
        }
        state.log = log.into();
        Ok(state)
    }

    fn check_versions(&self, key: &[u8], versions: &[Version]) -> Result<(), KvError> {
        if versions.is_empty() {
            return Err(corrupt("a key without versions".to_string()));
        }
        let ordered = versions
            .windows(2)
            .all(|w| (w[0].mod_revision, w[0].sub) < (w[1].mod_revision, w[1].sub));
        let in_range = versions
            .iter()
            .all(|v| v.mod_revision >= 1 && v.mod_revision <= self.revision);
        let sane = versions.iter().all(|v| {
            v.is_tombstone()
                || (v.version >= 1 && v.create_revision >= 1 && v.create_revision <= v.mod_revision)
        });
        if !(ordered && in_range && sane) {
            return Err(corrupt(format!(
                "bad versions for key {:?}",
                String::from_utf8_lossy(key)
            )));
        }
        Ok(())
    }
}

fn corrupt(reason: impl fmt::Display) -> KvError {
    KvError::SnapshotCorrupt {
        reason: reason.to_string(),
    }
}

/// Byte strings go out as one length-prefixed blob rather than a sequence of single bytes.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ByteBuf, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(ByteBuf(out))
            }
        }
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// `#[serde(with)]` helper for [`Version::value`]: an optional byte string, as the value was
/// written (however this node holds it).
pub(super) mod opt_value {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::super::value::Value;
    use super::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
        let bytes = v.as_ref().map(Value::bytes);
        bytes.as_deref().map(Bytes).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Ok(Option::<ByteBuf>::deserialize(d)?.map(|b| Value::new(&b.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::*;
    use crate::mvcc::VERSION_OVERHEAD_BYTES;
    use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use cairn_proto::etcdserverpb::{PutRequest, TxnRequest};

    fn busy_state() -> KvState {
        let mut s = KvState::new();
        s.lease_grant(11, 30).unwrap();
        s.lease_grant(12, 60).unwrap();
        put(&mut s, b"a", b"1");
        put_lease(&mut s, b"b", b"2", 11);
        put(&mut s, b"a", b"3");
        delete(&mut s, b"a", b"");
        put(&mut s, b"c", &[0u8; 300]);
        put(&mut s, b"", b"");
        s.compact(4).unwrap();
        put_lease(&mut s, b"d", b"", 12);
        s
    }

    #[test]
    fn round_trip_is_equal() {
        let s = busy_state();
        let bytes = s.encode_snapshot();
        let back = KvState::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.lease(11).unwrap().keys, vec![b"b".to_vec()]);
        assert_eq!(
            back.events_since(b"\0", b"\0", 4, 100),
            s.events_since(b"\0", b"\0", 4, 100)
        );

        let empty = KvState::new();
        assert_eq!(
            KvState::decode_snapshot(&empty.encode_snapshot()).unwrap(),
            empty
        );
    }

    #[test]
    fn values_held_packed_read_snapshot_hash_and_compare_as_written() {
        let json = |i: u32| -> Vec<u8> {
            let regions: Vec<String> = (0..10)
                .map(|r| {
                    format!(
                        "{{\"id\":{},\"l\":{}}}",
                        (u64::from(i) << 32) + r,
                        7 + r % 3
                    )
                })
                .collect();
            format!("{{\"t\":{i},\"v\":1,\"r\":[{}]}}", regions.join(",")).into_bytes()
        };
        for i in 1..=3 {
            let held = crate::mvcc::value::Value::new(&json(i)).held_bytes();
            assert!(held < json(i).len(), "held packed: {held} bytes");
        }
        let mut s = KvState::new();
        put(&mut s, b"r/1", &json(1));
        put(&mut s, b"r/2", &json(2));
        let old_size = s.approx_size_bytes();
        // Read, overwritten (the event's previous value), compared, and kept by ignore_value.
        assert_eq!(get(&s, b"r/1").unwrap().value, json(1));
        let over = put(&mut s, b"r/1", &json(3));
        assert_eq!(over.events[0].kv.as_ref().unwrap().value, json(3));
        assert_eq!(over.events[0].prev_kv.as_ref().unwrap().value, json(1));
        assert_eq!(get_at(&s, b"r/1", 2).unwrap().value, json(1));
        let same = cmp(
            b"r/2",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(json(2)),
        );
        let checked = TxnRequest {
            compare: vec![same],
            success: vec![op_put_req(PutRequest {
                key: b"r/2".to_vec(),
                ignore_value: true,
                ..Default::default()
            })],
            failure: vec![],
        };
        assert!(apply(&mut s, checked).response.succeeded);
        assert_eq!(get(&s, b"r/2").unwrap().value, json(2));
        // Sizes count the value as written.
        assert_eq!(
            s.approx_size_bytes() - old_size,
            (6 + (json(3).len() + json(2).len()) as u64 + 2 * VERSION_OVERHEAD_BYTES)
        );
        // The snapshot holds the bytes as written, and reads back equal.
        let bytes = s.encode_snapshot();
        assert!(bytes.windows(json(2).len()).any(|w| w == json(2)));
        let back = KvState::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(get(&back, b"r/1").unwrap().value, json(3));
    }

    #[test]
    fn a_view_keeps_its_point_in_time_while_the_state_moves_on() {
        // Enough keys for the persistent map to have several levels of shared nodes.
        let mut s = busy_state();
        for i in 0..3_000u32 {
            put(&mut s, format!("k/{i:05}").as_bytes(), &i.to_be_bytes());
        }
        let then = s.clone();
        let bytes_then = s.encode_snapshot();
        let view = s.snapshot_view();
        assert_eq!(view.revision(), s.revision());

        // Every kind of write after the view: overwrites, new keys, deletes, lease changes,
        // compaction (which drops versions and whole keys).
        for i in (0..3_000u32).step_by(7) {
            put(&mut s, format!("k/{i:05}").as_bytes(), b"changed");
        }
        put_lease(&mut s, b"new", b"x", 11);
        delete(&mut s, b"k/00100", b"k/00200");
        s.lease_grant(13, 5).unwrap();
        s.lease_revoke(12).unwrap();
        s.compact(s.revision()).unwrap();

        let mut bytes_view = Vec::new();
        view.encode_into(&mut bytes_view);
        assert_eq!(
            bytes_view, bytes_then,
            "the view encodes as the state did then"
        );
        assert_eq!(KvState::decode_snapshot(&bytes_view).unwrap(), then);
        assert_ne!(s.encode_snapshot(), bytes_then, "the state itself moved on");
        assert_eq!(get(&then, b"k/00007").unwrap().value, 7u32.to_be_bytes());
        assert_eq!(get(&s, b"k/00007").unwrap().value, b"changed");
        assert!(get(&then, b"k/00150").is_some() && get(&s, b"k/00150").is_none());
        assert!(then.lease_exists(12) && !s.lease_exists(12));
    }

    #[test]
    fn bad_bytes_are_refused() {
        let bytes = busy_state().encode_snapshot();
        let is_corrupt = |b: &[u8]| {
            matches!(
                KvState::decode_snapshot(b),
                Err(KvError::SnapshotCorrupt { .. })
            )
        };
        assert!(is_corrupt(&bytes[..bytes.len() - 1]));
        assert!(is_corrupt(&[bytes.as_slice(), &[0]].concat()));
        assert!(is_corrupt(&[]));
        let mut other_format = bytes.clone();
        other_format[0] = 9;
        assert!(is_corrupt(&other_format));
    }
}
