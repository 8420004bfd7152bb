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
        // Every field named: one added to `Version` must be placed here too.
        let Version {
            mod_revision,
            sub,
            create_revision,
            version,
            lease,
            value,
        } = self.0;
        let mut t = s.serialize_tuple(6)?;
        t.serialize_element(mod_revision)?;
        t.serialize_element(sub)?;
        t.serialize_element(create_revision)?;
        t.serialize_element(version)?;
        t.serialize_element(lease)?;
        t.serialize_element(&value.as_ref().map(|v| Bytes(v.held())))?;
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
                let foreign =
                    (vocabulary != cairn_meta::codec::VOCABULARY).then_some(&vocabulary[..]);
                let mut scratch = Vec::new();
                let keys = image.keys.into_iter().map(|(key, held)| {
                    let versions = held
                        .into_iter()
                        .map(|v| v.into_version(foreign, &mut scratch))
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(|e| {
                            corrupt(format!("key {:?}: {e}", String::from_utf8_lossy(&key.0)))
                        })?;
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
    /// The version, its value checked ([`Value::from_held`]).
    fn into_version(
        self,
        foreign: Option<&[u8]>,
        scratch: &mut Vec<u8>,
    ) -> Result<Version, String> {
        let value = match self.value {
            Some(held) => Some(Value::from_held(held.0, foreign, scratch)?),
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

/// `#[serde(deserialize_with)]` helper for [`Version::value`] in a format-1 snapshot: an
/// optional byte string, as the value was written.
pub(super) mod opt_value {
    use serde::{Deserialize, Deserializer};

    use super::super::value::Value;
    use super::ByteBuf;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
        Ok(Option::<ByteBuf>::deserialize(d)?.map(|b| Value::new(&b.0)))
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
