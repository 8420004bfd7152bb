//! Serializes `Vec<u8>` as one byte string instead of a sequence of numbers: postcard then
//! copies the bytes in one go rather than visiting each byte, which matters on the write path.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// `#[serde(with = "crate::serde_bytes")]` on a `Vec<u8>` field.
pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// See [`serialize`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Wrapped(#[serde(with = "super")] Vec<u8>);

    #[test]
    fn round_trips_and_is_compact() {
        let w = Wrapped(vec![200; 300]);
        let enc = postcard::to_allocvec(&w).unwrap();
        // 2-byte varint length + the bytes themselves.
        assert_eq!(enc.len(), 302);
        assert_eq!(postcard::from_bytes::<Wrapped>(&enc).unwrap(), w);
    }
}
