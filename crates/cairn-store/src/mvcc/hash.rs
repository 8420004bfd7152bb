//! etcd's Hash and HashKV: a CRC-32C over the key space, so members can be compared for
//! corruption. HashKV covers every retained version at or below a revision; two members with
//! the same history give the same hash at the same revision, whatever their snapshots, logs or
//! applied index. Hash covers the whole store at its current revision, leases included.

use cairn_proto::etcdserverpb::{request_op::Request, TxnRequest};

use super::{KvError, KvSnapshot};

use crate::crc::Crc32c;

impl KvSnapshot {
    /// etcd's HashKV at `revision` (0: the one the image was taken at): the hash of every
    /// retained version written at or below it, and the compaction revision it starts from.
    /// On an image ([`super::KvState::snapshot_view`]), so the state's lock is not held.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), KvError> {
        let at = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        if at > self.revision {
            return Err(KvError::FutureRevision);
        }
        if at < self.compact_revision {
            return Err(KvError::Compacted);
        }
        let mut crc = Crc32c::new();
        for (key, history) in self.keys.iter() {
            for v in history.versions.iter().take_while(|v| v.mod_revision <= at) {
                crc.update(key);
                crc.int(v.mod_revision);
                crc.int(v.sub as i64);
                crc.int(v.create_revision);
                crc.int(v.version);
                crc.int(v.lease);
                match &v.value {
                    Some(value) => {
                        crc.update(&[1]);
                        crc.update(&value.bytes());
                    }
                    None => crc.update(&[0]),
                }
            }
        }
        Ok((crc.finish(), self.compact_revision))
    }

    /// etcd's Hash: the whole store at the image's revision (every retained version, the
    /// compaction revision and the leases).
    pub fn hash_all(&self) -> u32 {
        let (kv, _) = self
            .hash_kv(0)
            .expect("the current revision is neither future nor compacted");
        let mut crc = Crc32c::new();
        crc.int(kv as i64);
        crc.int(self.revision);
        crc.int(self.compact_revision);
        for (id, lease) in self.leases.iter() {
            crc.int(*id);
            crc.int(lease.ttl_secs);
        }
        crc.finish()
    }
}

/// The bytes a transaction's puts add, in either branch and at any depth (etcd's quota cost;
/// every put counts its key, value and per-version overhead): a transaction that adds any is
/// refused while the NOSPACE alarm is raised.
pub fn txn_put_bytes(req: &TxnRequest) -> u64 {
    req.success
        .iter()
        .chain(&req.failure)
        .map(|op| match &op.request {
            Some(Request::RequestPut(p)) => {
                (p.key.len() + p.value.len()) as u64 + super::VERSION_OVERHEAD_BYTES
            }
            Some(Request::RequestTxn(t)) => txn_put_bytes(t),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::put;
    use crate::mvcc::KvState;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        let mut crc = Crc32c::new();
        crc.update(b"123456789");
        assert_eq!(crc.finish(), 0xE306_9283);
    }

    #[test]
    fn the_same_history_hashes_the_same_and_any_difference_shows() {
        let build = |last: &[u8]| {
            let mut kv = KvState::new();
            put(&mut kv, b"a", b"1");
            put(&mut kv, b"b", b"2");
            put(&mut kv, b"a", last);
            kv
        };
        let (one, two) = (build(b"3"), build(b"3"));
        let (one, two) = (one.snapshot_view(), two.snapshot_view());
        assert_eq!(one.hash_kv(0).unwrap(), two.hash_kv(0).unwrap());
        assert_eq!(one.hash_all(), two.hash_all());
        let other = build(b"4").snapshot_view();
        assert_ne!(one.hash_kv(0).unwrap().0, other.hash_kv(0).unwrap().0);
        assert_ne!(one.hash_all(), other.hash_all());
        // At a revision before the difference they agree again.
        assert_eq!(one.hash_kv(3).unwrap(), other.hash_kv(3).unwrap());
        assert_eq!(one.hash_kv(99), Err(KvError::FutureRevision));
    }

    #[test]
    fn a_value_held_packed_hashes_as_written() {
        // Nodes of other builds may hold a value another way: the hash is of what was put.
        let value = br#"{"t":9,"v":1,"r":[{"id":38654705664,"l":1},{"id":38654705665,"l":2},{"id":38654705666,"l":3}]}"#;
        let held = crate::mvcc::value::Value::new(value).held_bytes();
        assert!(held < value.len(), "held packed: {held} bytes");
        let mut kv = KvState::new();
        put(&mut kv, b"r/9", value);
        let mut crc = Crc32c::new();
        crc.update(b"r/9");
        for n in [2, 0, 2, 1, 0] {
            crc.int(n);
        }
        crc.update(&[1]);
        crc.update(value);
        assert_eq!(kv.snapshot_view().hash_kv(0).unwrap(), (crc.finish(), 0));
    }

    #[test]
    fn puts_anywhere_in_a_txn_count() {
        use cairn_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RequestOp};
        let op = |r: Request| RequestOp { request: Some(r) };
        let delete = op(Request::RequestDeleteRange(DeleteRangeRequest::default()));
        let mut t = TxnRequest {
            success: vec![delete.clone()],
            ..Default::default()
        };
        assert_eq!(txn_put_bytes(&t), 0);
        t.failure = vec![op(Request::RequestTxn(TxnRequest {
            success: vec![op(Request::RequestPut(PutRequest::default()))],
            ..Default::default()
        }))];
        assert!(txn_put_bytes(&t) > 0);
    }
}
