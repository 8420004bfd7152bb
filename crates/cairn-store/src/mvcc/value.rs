//! A stored value, held in memory as written or, when that saves room, LZ4-compressed against
//! the vocabulary of Cairn's JSON records ([`cairn_meta::codec::VOCABULARY`]).
//!
//! Cairn's metadata are JSON records of a few hundred bytes each, kept in memory on every node
//! for the cluster's life: held compressed, a table info of three columns and its route of ten
//! regions take 269 bytes instead of 894 (BENCHMARKS.md, issue 12). Client answers, watch
//! events, Raft log entries and hashes see the bytes as written. A snapshot carries values as
//! held, with the vocabulary they were packed against ([`Value::from_held`]), so a build with
//! another vocabulary, or none, reads it too.

use cairn_types::limits::REQUEST_BYTES_MAX_CONFIGURABLE;
use std::borrow::Cow;
use std::fmt;

/// Values shorter than this are held as written: too short to gain.
pub const VALUE_PACK_MIN_BYTES: usize = 64;

/// The first byte of a held value says how the rest holds it.
const PLAIN: u8 = 0;
/// LZ4 with the vocabulary as dictionary, after the value's length (u32, little-endian).
const PACKED: u8 = 1;
/// What a packed value holds before its LZ4 block: the tag and the length as written.
const PACKED_HEADER_BYTES: usize = 5;
/// A value is held packed only if that saves at least 1/`PACK_SAVING_MIN_DIVISOR` of it.
const PACK_SAVING_MIN_DIVISOR: usize = 8;

/// LZ4 turns one byte of a block into at most this many (a match's length runs on in bytes of
/// 255): a packed value that claims more, past [`LZ4_EXPANSION_SLACK_BYTES`], is corrupt, and is
/// refused before room for it is allocated.
const LZ4_EXPANSION_MAX: usize = 255;
/// What a short block may unpack to past [`LZ4_EXPANSION_MAX`] times its length.
const LZ4_EXPANSION_SLACK_BYTES: usize = 64;

/// One value as held: a tag byte, then the bytes as written or packed. Values are equal when
/// their bytes as written are, however each is held.
#[derive(Clone)]
pub(super) struct Value(Box<[u8]>);

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 || self.bytes() == other.bytes()
    }
}

impl Eq for Value {}

impl Value {
    /// Holds `bytes`, packed if that takes at least an eighth less room.
    pub fn new(bytes: &[u8]) -> Value {
        if bytes.len() >= VALUE_PACK_MIN_BYTES {
            if let Ok(len) = u32::try_from(bytes.len()) {
                let packed =
                    lz4_flex::block::compress_with_dict(bytes, cairn_meta::codec::VOCABULARY);
                let held_len = packed.len() + PACKED_HEADER_BYTES;
                if held_len <= bytes.len() - bytes.len() / PACK_SAVING_MIN_DIVISOR {
                    let mut held = Vec::with_capacity(held_len);
                    held.push(PACKED);
                    held.extend_from_slice(&len.to_le_bytes());
                    held.extend_from_slice(&packed);
                    return Value(held.into_boxed_slice());
                }
            }
        }
        let mut held = Vec::with_capacity(bytes.len() + 1);
        held.push(PLAIN);
        held.extend_from_slice(bytes);
        Value(held.into_boxed_slice())
    }

    /// The length of the value as written.
    pub fn len(&self) -> usize {
        match self.0[0] {
            PLAIN => self.0.len() - 1,
            _ => packed_len(&self.0).expect("a packed value holds its length"),
        }
    }

    /// The value as written: borrowed when held so, unpacked otherwise.
    pub fn bytes(&self) -> Cow<'_, [u8]> {
        match self.0[0] {
            PLAIN => Cow::Borrowed(&self.0[1..]),
            _ => {
                let mut out = Vec::new();
                // Packed by this build, or checked on the way in ([`Value::from_held`]) to
                // unpack with this vocabulary to this length: it unpacks.
                unpack_into(&self.0, self.len(), cairn_meta::codec::VOCABULARY, &mut out)
                    .expect("a value held packed unpacks");
                Cow::Owned(out)
            }
        }
    }

    /// The value as written, owned.
    pub fn to_vec(&self) -> Vec<u8> {
        self.bytes().into_owned()
    }

    /// The value as held, tag first: what a snapshot carries (read back by [`Value::from_held`]
    /// with this build's vocabulary).
    pub fn held(&self) -> &[u8] {
        &self.0
    }

    /// A value as a node held it, checked: it must unpack to the length it claims (into
    /// `scratch`, reused between calls), which no request could exceed. `foreign` is the
    /// vocabulary it was packed against when that is not this build's: the value is then unpacked
    /// and held anew; otherwise it is kept as it is.
    pub fn from_held(
        held: Vec<u8>,
        foreign: Option<&[u8]>,
        scratch: &mut Vec<u8>,
    ) -> Result<Value, String> {
        match held.first() {
            Some(&PLAIN) if foreign.is_none() => Ok(Value(held.into_boxed_slice())),
            Some(&PLAIN) => Ok(Value::new(&held[1..])),
            Some(&PACKED) => {
                let len = packed_len(&held).ok_or("a packed value without its length")?;
                let packed = held.len() - PACKED_HEADER_BYTES;
                let most = packed.saturating_mul(LZ4_EXPANSION_MAX);
                if len > most.saturating_add(LZ4_EXPANSION_SLACK_BYTES)
                    || len > REQUEST_BYTES_MAX_CONFIGURABLE
                {
                    return Err(format!(
                        "a packed value of {packed} bytes claims {len} bytes unpacked: more than \
                         LZ4 unpacks it to ({LZ4_EXPANSION_MAX} times, plus \
                         {LZ4_EXPANSION_SLACK_BYTES}) or a request may carry \
                         ({REQUEST_BYTES_MAX_CONFIGURABLE}, request_bytes_max_configurable)"
                    ));
                }
                let vocabulary = foreign.unwrap_or(cairn_meta::codec::VOCABULARY);
                unpack_into(&held, len, vocabulary, scratch)?;
                Ok(match foreign {
                    None => Value(held.into_boxed_slice()),
                    Some(_) => Value::new(scratch),
                })
            }
            Some(tag) => Err(format!("a value held with unknown tag {tag}")),
            None => Err("a value with no tag".to_string()),
        }
    }

    /// Bytes this value takes in memory (its allocation's request; the allocator rounds up).
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        self.0.len()
    }
}

/// The length as written that a packed value `held` (tag first) claims, if it holds one.
fn packed_len(held: &[u8]) -> Option<usize> {
    let header = held.get(1..PACKED_HEADER_BYTES)?;
    Some(u32::from_le_bytes(header.try_into().expect("four bytes")) as usize)
}

/// Unpacks the packed value `held` (tag first), against `vocabulary`, into `out`, which must
/// come out `len` bytes long.
fn unpack_into(
    held: &[u8],
    len: usize,
    vocabulary: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    out.resize(len, 0);
    match lz4_flex::block::decompress_into_with_dict(&held[PACKED_HEADER_BYTES..], out, vocabulary)
    {
        Ok(n) if n == len => Ok(()),
        Ok(n) => Err(format!("a packed value unpacks to {n} bytes, not {len}")),
        Err(e) => Err(format!("a packed value does not unpack: {e}")),
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_reads_back_as_written_however_it_is_held() {
        let route = br#"{"t":1026,"v":1,"r":[{"id":4406636445696,"l":200000},{"id":4406636445697,"l":200001},{"id":4406636445698,"l":200002},{"id":4406636445699,"l":200000},{"id":4406636445700,"l":200001}]}"#;
        let info = br#"{"id":1026,"name":{"catalog":"default","schema":"bench","name":"t0000000"},"columns":[{"name":"host","data_type":"string","nullable":false,"semantic_type":"tag"},{"name":"ts","data_type":"timestamp(3)","nullable":false,"semantic_type":"timestamp"}],"primary_key":["host"],"time_index":"ts","options":{},"partition":{"hash":{"columns":["host"],"partitions":10}},"version":1,"created_ms":1796427195739,"updated_ms":1796427195739,"region_numbers":[0,1,2,3,4,5,6,7,8,9]}"#;
        // Random bytes do not compress: held as written.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..300)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let cases: [(&[u8], bool); 6] = [
            (b"", false),
            (b"1026", false),
            (&[b'a'; 63], false),
            (route, true),
            (info, true),
            (&noise, false),
        ];
        for (bytes, packs) in cases {
            let v = Value::new(bytes);
            assert_eq!(&*v.bytes(), bytes);
            assert_eq!(v.to_vec(), bytes);
            assert_eq!(v.len(), bytes.len());
            assert_eq!(v.held_bytes() < bytes.len(), packs, "{v:?}");
            assert_eq!(v, Value::new(bytes), "the same bytes are held the same way");
        }
        // What the vocabulary is for: Cairn's records shrink to well under half.
        assert!(Value::new(info).held_bytes() * 2 < info.len());
        assert!(Value::new(route).held_bytes() * 2 < route.len());
        assert_ne!(Value::new(route), Value::new(info));
    }

    #[test]
    fn a_value_held_another_way_is_equal_to_the_same_bytes_as_written() {
        let route = br#"{"t":1026,"v":1,"r":[{"id":4406636445696,"l":200000},{"id":4406636445697,"l":200001}]}"#;
        let mut scratch = Vec::new();
        let plain = [&[PLAIN][..], route].concat();
        let held_plain = Value::from_held(plain, None, &mut scratch).unwrap();
        assert_eq!(held_plain.held_bytes(), route.len() + 1, "kept as it came");
        assert!(Value::new(route).held_bytes() < route.len());
        assert_eq!(held_plain, Value::new(route));
        assert_ne!(held_plain, Value::new(&route[1..]));
        let packed = Value::new(route).held().to_vec();
        let back = Value::from_held(packed, None, &mut scratch).unwrap();
        assert_eq!(back.held(), Value::new(route).held());
        assert_eq!(&*back.bytes(), route);
    }

    #[test]
    fn long_repetitive_values_pack_and_unpack() {
        let big: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{{\"k\":{}}},", i % 1000).into_bytes())
            .collect();
        let v = Value::new(&big);
        assert!(v.held_bytes() < big.len() / 4);
        assert_eq!(v.len(), big.len());
        assert_eq!(v.to_vec(), big);
    }
}
