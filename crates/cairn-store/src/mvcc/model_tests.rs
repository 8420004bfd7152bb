//! A seeded random workload checked against a naive model that keeps a full copy of the keyspace
//! per revision: historical reads, watch catch-up and the incremental bookkeeping must all agree.

use std::collections::BTreeMap;

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_proto::mvccpb::KeyValue;

use super::test_util::*;
use super::KvState;

/// The keyspace as of each revision; index = revision.
struct Model {
    at: Vec<BTreeMap<Vec<u8>, KeyValue>>,
}

impl Model {
    fn new() -> Self {
        // Revisions 0 and 1 are both empty.
        Model {
            at: vec![BTreeMap::new(), BTreeMap::new()],
        }
    }

    fn latest(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        self.at.last().unwrap()
    }

    /// Applies writes as one revision, if any write changes something.
    fn commit(&mut self, puts: &[(Vec<u8>, Vec<u8>, i64)], deletes: &[Vec<u8>]) {
        let rev = self.at.len() as i64;
        let mut next = self.latest().clone();
        let mut changed = false;
        for key in deletes {
            changed |= next.remove(key).is_some();
        }
        for (key, value, lease) in puts {
            let (create_revision, version) = match next.get(key) {
                Some(kv) => (kv.create_revision, kv.version + 1),
                None => (rev, 1),
            };
            next.insert(
                key.clone(),
                KeyValue {
                    key: key.clone(),
                    create_revision,
                    mod_revision: rev,
                    version,
                    value: value.clone(),
                    lease: *lease,
                },
            );
            changed = true;
        }
        if changed {
            self.at.push(next);
        }
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn all_at(s: &KvState, revision: i64) -> Vec<KeyValue> {
    let req = RangeRequest {
        revision,
        ..range_req(b"\0", b"\0")
    };
    s.range(&req).unwrap().kvs
}

#[test]
fn random_workload_matches_the_model() {
    for seed in 1..=8u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut s = KvState::new();
        let mut m = Model::new();
        let leases = [0i64, 1, 2];
        s.lease_grant(1, 10).unwrap();
        s.lease_grant(2, 10).unwrap();
        let key = |rng: &mut Rng| vec![b'a' + rng.below(12) as u8];
        // Half short (held as written), half records long enough to be held packed.
        let value = |rng: &mut Rng| {
            let n = rng.next();
            if n.is_multiple_of(2) {
                return n.to_le_bytes().to_vec();
            }
            let regions: Vec<String> = (0..4 + n % 8)
                .map(|r| format!("{{\"id\":{},\"l\":{}}}", n % 1000 + r, r % 3))
                .collect();
            format!("{{\"r\":[{}]}}", regions.join(",")).into_bytes()
        };

        for step in 0..400 {
            match rng.below(10) {
                0..=4 => {
                    // A txn of 1-3 puts on distinct keys.
                    let mut keys: Vec<Vec<u8>> =
                        (0..1 + rng.below(3)).map(|_| key(&mut rng)).collect();
                    keys.sort();
                    keys.dedup();
                    let puts: Vec<_> = keys
                        .into_iter()
                        .map(|k| {
                            let lease = leases[rng.below(3) as usize];
                            (k, value(&mut rng), lease)
                        })
                        .collect();
                    let ops = puts
                        .iter()
                        .map(|(k, v, lease)| {
                            op_put_req(PutRequest {
                                lease: *lease,
                                ..put_req(k, v)
                            })
                        })
                        .collect();
                    apply(&mut s, txn(ops));
                    m.commit(&puts, &[]);
                }
                5..=6 => {
                    let (a, b) = (key(&mut rng), key(&mut rng));
                    let end = if a < b { b } else { Vec::new() };
                    delete(&mut s, &a, &end);
                    let gone: Vec<_> = m
                        .latest()
                        .keys()
                        .filter(|k| **k == a || (!end.is_empty() && **k >= a && **k < end))
                        .cloned()
                        .collect();
                    m.commit(&[], &gone);
                }
                7 => {
                    let id = 1 + rng.below(2) as i64;
                    let gone: Vec<_> = m
                        .latest()
                        .values()
                        .filter(|kv| kv.lease == id)
                        .map(|kv| kv.key.clone())
                        .collect();
                    s.lease_revoke(id).unwrap();
                    s.lease_grant(id, 10).unwrap();
                    m.commit(&[], &gone);
                }
                8 => {
                    let (low, high) = (s.compact_revision() + 1, s.revision());
                    if low <= high {
                        s.compact(low + rng.below((high - low + 1) as u64) as i64)
                            .unwrap();
                    }
                }
                _ => {
                    let bytes = s.encode_snapshot();
                    let back = KvState::decode_snapshot(&bytes).unwrap();
                    // Decoding recomputes the log, lease index and counters from scratch.
                    assert_eq!(back, s, "seed {seed} step {step}");
                }
            }
            assert_eq!(
                s.revision(),
                m.at.len() as i64 - 1,
                "seed {seed} step {step}"
            );
            assert_eq!(s.key_count(), m.latest().len());

            let lowest = s.compact_revision().max(1);
            let rev = lowest + rng.below((s.revision() - lowest + 1) as u64) as i64;
            let expected: Vec<KeyValue> = m.at[rev as usize].values().cloned().collect();
            assert_eq!(
                all_at(&s, rev),
                expected,
                "seed {seed} step {step} rev {rev}"
            );

            // Replaying the catch-up events onto the model's state before them gives the latest.
            let mut replay = m.at[(rev - 1).max(0) as usize].clone();
            for e in s.events_since(b"\0", b"\0", rev, usize::MAX).unwrap() {
                let kv = e.kv.unwrap();
                if is_delete_kv(e.r#type) {
                    assert!(replay.remove(&kv.key).is_some());
                } else {
                    replay.insert(kv.key.clone(), kv);
                }
            }
            assert_eq!(&replay, m.latest(), "seed {seed} step {step} from {rev}");
        }
    }
}

fn is_delete_kv(kind: i32) -> bool {
    kind == cairn_proto::mvccpb::event::EventType::Delete as i32
}
