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
use super::value::Value;
use super::{KvError, KvState};

/// Bumped whenever the encoding changes; a snapshot of a format not listed here is refused.
/// 2: values as held, after the vocabulary they were packed against.
const SNAPSHOT_FORMAT: u32 = 2;
/// The format before 2026-12-06, still read: values as written.
const SNAPSHOT_FORMAT_AS_WRITTEN: u32 = 1;

#[derive(Serialize)]
struct ImageRef<'a> {
    format: u32,
    /// What the packed values below were packed against ([`cairn_meta::codec::VOCABULARY`]).
    vocabulary: Bytes<'a>,
    revision: i64,
    compact_revision: i64,
    keys: KeysRef<'a>,
    /// (id, ttl_secs), ascending by id.
    leases: LeasesRef<'a>,
}

struct KeysRef<'a>(&'a KeyMap);

impl Serialize for KeysRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|(k, h)| (Bytes(k), HeldVersions(&h.versions))),
        )
    }
}

/// A key's versions, each as [`HeldVersion`].
struct HeldVersions<'a>(&'a [Version]);

impl Serialize for HeldVersions<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(HeldVersion))
    }
}

/// A version's fields in order, its value as held ([`Value::held`]): what [`VersionHeld`] reads.
struct HeldVersion<'a>(&'a Version);

impl Serialize for HeldVersion<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let v = self.0;
        let mut t = s.serialize_tuple(6)?;
        t.serialize_element(&v.mod_revision)?;
        t.serialize_element(&v.sub)?;
        t.serialize_element(&v.create_revision)?;
        t.serialize_element(&v.version)?;
        t.serialize_element(&v.lease)?;
        t.serialize_element(&v.value.as_ref().map(|v| Bytes(v.held())))?;
        t.end()
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
            vocabulary: Bytes(cairn_meta::codec::VOCABULARY),
            revision: self.revision,
            compact_revision: self.compact_revision,
            keys: KeysRef(&self.keys),
            leases: LeasesRef(&self.leases),
        };
        let buffer = std::mem::take(out);
        *out = postcard::to_extend(&image, buffer).expect("encoding into memory cannot fail");
    }
}

/// The decoding twin of [`ImageRef`] after its format: same fields, same order, owned.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct Image {
    vocabulary: ByteBuf,
    revision: i64,
    compact_revision: i64,
    keys: Vec<(ByteBuf, Vec<VersionHeld>)>,
    leases: Vec<(i64, i64)>,
}

/// [`HeldVersion`] read back: [`Version`]'s fields, the value as it was held.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct VersionHeld {
    mod_revision: i64,
    sub: u32,
    create_revision: i64,
    version: i64,
    lease: i64,
    value: Option<ByteBuf>,
}

/// A snapshot of format 1 after its format: as [`Image`], without the vocabulary, with each
/// value as written.
#[derive(Deserialize)]
struct ImageAsWritten {
    revision: i64,
    compact_revision: i64,
    keys: Vec<(ByteBuf, Vec<Version>)>,
    leases: Vec<(i64, i64)>,
}

/// Decodes all of `bytes` (no trailing bytes) as a `T`.
fn decode_whole<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, KvError> {
    let (v, rest): (T, _) = postcard::take_from_bytes(bytes).map_err(corrupt)?;
    if !rest.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(v)
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

    /// Rebuilds a state from [`KvState::encode_snapshot`] bytes (or a format-1 snapshot's),
    /// checking its invariants.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<Self, KvError> {
        let (format, rest): (u32, _) = postcard::take_from_bytes(bytes).map_err(corrupt)?;
        match format {
            SNAPSHOT_FORMAT => {
                let image: Image = decode_whole(rest)?;
                let mut state = Self::from_parts(image.revision, image.compact_revision)?;
                let vocabulary = image.vocabulary.0;
                let mut scratch = Vec::new();
                let keys = image.keys.into_iter().map(|(key, held)| {
                    let versions = held
                        .into_iter()
                        .map(|v| v.into_version(&vocabulary, &mut scratch))
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok((key, versions))
                });
                state.fill(image.leases, keys)?;
                Ok(state)
            }
            SNAPSHOT_FORMAT_AS_WRITTEN => {
                let image: ImageAsWritten = decode_whole(rest)?;
                let mut state = Self::from_parts(image.revision, image.compact_revision)?;
                state.fill(image.leases, image.keys.into_iter().map(Ok))?;
                Ok(state)
            }
            other => Err(corrupt(format!("unknown format {other}"))),
        }
    }

    /// An empty state at `revision`, checked against `compact_revision`.
    fn from_parts(revision: i64, compact_revision: i64) -> Result<Self, KvError> {
        if revision < 1 || compact_revision < 0 || compact_revision > revision {
            return Err(corrupt(format!(
                "revision {revision} with compact revision {compact_revision}"
            )));
        }
        Ok(KvState {
            revision,
            compact_revision,
            ..KvState::new()
        })
    }

    /// Adds a snapshot's leases and keys to a state made by [`KvState::from_parts`], checking
    /// them, and rebuilds what is derived from them (the revision log, the lease-to-key index,
    /// the counters).
    fn fill(
        &mut self,
        leases: Vec<(i64, i64)>,
        keys: impl Iterator<Item = Result<(ByteBuf, Vec<Version>), KvError>>,
    ) -> Result<(), KvError> {
        for (id, ttl_secs) in leases {
            let record = LeaseRecord {
                ttl_secs,
                keys: imbl::OrdSet::new(),
            };
            if id == 0 || self.leases.insert(id, record).is_some() {
                return Err(corrupt(format!("lease id {id} invalid or repeated")));
            }
        }
        let mut log = Vec::new();
        let mut previous_key: Option<Key> = None;
        for entry in keys {
            let (key, versions) = entry?;
            let key: Key = Arc::from(key.0);
            if previous_key.as_ref().is_some_and(|p| *p >= key) {
                return Err(corrupt("keys out of order".to_string()));
            }
            self.check_versions(&key, &versions)?;
            for v in &versions {
                self.size_bytes += v.size_bytes(key.len());
                if v.mod_revision >= self.compact_revision {
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
                self.live_keys += 1;
                if latest.lease != 0 {
                    match self.leases.get_mut(&latest.lease) {
                        Some(record) => record.keys.insert(key.clone()),
                        None => return Err(corrupt(format!("unknown lease {}", latest.lease))),
                    };
                }
            }
            self.keys.insert(key.clone(), Arc::new(history));
            previous_key = Some(key);
        }
        log.sort_unstable_by_key(|e| (e.revision, e.sub));
        if log
            .windows(2)
            .any(|w| (w[0].revision, w[0].sub) == (w[1].revision, w[1].sub))
        {
            return Err(corrupt("two writes share a revision and sub".to_string()));
        }
        self.log = log.into();
        Ok(())
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

#[cfg(test)]
impl Serialize for ByteBuf {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

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

impl VersionHeld {
    fn into_version(self, vocabulary: &[u8], scratch: &mut Vec<u8>) -> Result<Version, KvError> {
        let value = match self.value {
            Some(held) => Some(Value::from_held(held.0, vocabulary, scratch).map_err(corrupt)?),
            None => None,
        };
        Ok(Version {
            mod_revision: self.mod_revision,
            sub: self.sub,
            create_revision: self.create_revision,
            version: self.version,
            lease: self.lease,
            value,
        })
    }
}

/// `#[serde(with)]` helper for [`Version::value`] in a format-1 snapshot: an optional byte
/// string, as the value was written.
pub(super) mod opt_value {
    use serde::{Deserialize, Deserializer};

    use super::super::value::Value;
    use super::ByteBuf;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Ok(Option::<ByteBuf>::deserialize(d)?.map(|b| Value::new(&b.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::*;
    use crate::mvcc::VERSION_OVERHEAD_BYTES;
    use cairn_meta::codec::VOCABULARY;
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
        // The snapshot holds the values packed, as this node does, and reads back equal.
        let bytes = s.encode_snapshot();
        let as_written: usize = (1..=3).map(|i| json(i).len()).sum();
        assert!(!bytes.windows(json(2).len()).any(|w| w == json(2)));
        // Keys, revisions and values as held, after the vocabulary: less than the values alone
        // as written.
        assert!(
            bytes.len() - VOCABULARY.len() < as_written,
            "{} bytes for {as_written} bytes of values",
            bytes.len()
        );
        let back = KvState::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, s);
        assert_eq!(get(&back, b"r/1").unwrap().value, json(3));
        assert_eq!(get_at(&back, b"r/1", 2).unwrap().value, json(1));
        assert_eq!(back.approx_size_bytes(), s.approx_size_bytes());
    }

    /// `busy_state()` as the format-1 encoder (values as written, before 2026-12-06) wrote it:
    /// these bytes, then 300 zeroes (the value of `c`), then [`FORMAT_1_TAIL`].
    const FORMAT_1_HEAD: &str =
        "0110080500010e000e0200010001610208000404000101330a0000000000016201\
        06000602160101320163010c000c020001ac02";
    const FORMAT_1_TAIL: &str = "0164011000100218010002163c1878";

    fn unhex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|d| u8::from_str_radix(std::str::from_utf8(d).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn a_format_1_snapshot_still_reads() {
        let bytes = [unhex(FORMAT_1_HEAD), vec![0; 300], unhex(FORMAT_1_TAIL)].concat();
        let back = KvState::decode_snapshot(&bytes).unwrap();
        assert_eq!(back, busy_state());
        assert_eq!(get(&back, b"c").unwrap().value, vec![0; 300]);
        assert_eq!(back.lease(11).unwrap().keys, vec![b"b".to_vec()]);
        // Written again, it is format 2, and reads back the same.
        let again = back.encode_snapshot();
        assert_eq!(again[0], SNAPSHOT_FORMAT as u8);
        assert!(
            again.len() - VOCABULARY.len() + 250 < bytes.len(),
            "the 300 zeroes are packed"
        );
        assert_eq!(KvState::decode_snapshot(&again).unwrap(), back);
    }

    /// A format-2 image of keys `k/0`, `k/1`, … with these held values, each its own revision.
    fn image_of(vocabulary: &[u8], held: Vec<Vec<u8>>) -> Vec<u8> {
        let n = held.len() as i64;
        let keys = held
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let rev = i as i64 + 1;
                let version = VersionHeld {
                    mod_revision: rev,
                    sub: 0,
                    create_revision: rev,
                    version: 1,
                    lease: 0,
                    value: Some(ByteBuf(h)),
                };
                (ByteBuf(format!("k/{i}").into_bytes()), vec![version])
            })
            .collect();
        let image = Image {
            vocabulary: ByteBuf(vocabulary.to_vec()),
            revision: n.max(1),
            compact_revision: 0,
            keys,
            leases: vec![],
        };
        let mut out = postcard::to_allocvec(&SNAPSHOT_FORMAT).unwrap();
        out.extend(postcard::to_allocvec(&image).unwrap());
        out
    }

    /// `bytes` held packed against `vocabulary`, as a node with that vocabulary holds them.
    fn packed_with(bytes: &[u8], vocabulary: &[u8]) -> Vec<u8> {
        let mut held = vec![1];
        held.extend((bytes.len() as u32).to_le_bytes());
        held.extend(lz4_flex::block::compress_with_dict(bytes, vocabulary));
        held
    }

    #[test]
    fn a_snapshot_packed_against_another_vocabulary_reads_and_is_held_as_this_build_holds_it() {
        let other = b"{\"zone\":\"\",\"rack\":\"\",\"host\":\"\"}".repeat(3);
        let record = br#"{"zone":"eu-1","rack":"r7","host":"dn-0042","zone":"eu-1","rack":"r8","host":"dn-0043"}"#;
        let plain = b"short".to_vec();
        let held = vec![packed_with(record, &other), [&[0u8][..], &plain].concat()];
        let back = KvState::decode_snapshot(&image_of(&other, held)).unwrap();
        assert_eq!(get(&back, b"k/0").unwrap().value, record);
        assert_eq!(get(&back, b"k/1").unwrap().value, plain);
        // Held as this build holds what was written: packed against its own vocabulary.
        let mine = back.keys.get(&b"k/0"[..]).unwrap().latest_live().unwrap();
        let value = mine.value.as_ref().unwrap();
        assert_eq!(value.held(), Value::new(record).held());
        // And written out again against this build's vocabulary, it reads the same.
        let again = KvState::decode_snapshot(&back.encode_snapshot()).unwrap();
        assert_eq!(again, back);
    }

    #[test]
    fn held_values_that_do_not_unpack_are_refused_not_a_panic_later() {
        let record = br#"{"zone":"eu-1","rack":"r7","host":"dn-0042","zone":"eu-1","rack":"r8"}"#;
        let good = packed_with(record, VOCABULARY);
        assert!(KvState::decode_snapshot(&image_of(VOCABULARY, vec![good.clone()])).is_ok());
        let mut wrong_length = good.clone();
        wrong_length[1] = wrong_length[1].wrapping_add(1);
        let mut claims_too_much = good.clone();
        claims_too_much[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut garbage = good[..5].to_vec();
        garbage.extend([0xff; 40]);
        let cases: [(&str, Vec<u8>); 6] = [
            ("no tag", vec![]),
            ("unknown tag", vec![7, 1, 2, 3]),
            ("packed without its length", vec![1, 0, 0]),
            ("wrong length", wrong_length),
            ("claims more than LZ4 can give", claims_too_much),
            ("not LZ4", garbage),
        ];
        for (what, held) in cases {
            let result = KvState::decode_snapshot(&image_of(VOCABULARY, vec![held]));
            assert!(
                matches!(result, Err(KvError::SnapshotCorrupt { .. })),
                "{what}: {result:?}"
            );
        }
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
