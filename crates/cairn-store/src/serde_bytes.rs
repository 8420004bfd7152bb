//! Serializes bytes (`Vec<u8>`, `Bytes`) as one byte string instead of a sequence of numbers:
//! postcard then copies the bytes in one go rather than visiting each byte, which matters on the
//! write path.

use serde::de::{Error, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};
use std::fmt;

/// `#[serde(with = "crate::serde_bytes")]` on a `Vec<u8>` or `Bytes` field.
pub fn serialize<S: Serializer, B: AsRef<[u8]>>(bytes: &B, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes.as_ref())
}

/// See [`serialize`]; the bytes are read into one vector, which the field then takes over.
pub fn deserialize<'de, D: Deserializer<'de>, B: From<Vec<u8>>>(d: D) -> Result<B, D::Error> {
    d.deserialize_byte_buf(BytesVisitor).map(B::from)
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
        // A shared buffer is written the same way, so the log and the wire read either.
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Shared(#[serde(with = "super")] bytes::Bytes);
        assert_eq!(
            postcard::to_allocvec(&Shared(vec![200; 300].into())).unwrap(),
            enc
        );
        assert_eq!(postcard::from_bytes::<Shared>(&enc).unwrap().0, w.0);
    }
}
