//! Tests of snapshots: round trips, points in time, both formats, values held another way,
//! and bad bytes refused.

use super::*;
use crate::mvcc::test_util::*;
use crate::mvcc::VERSION_OVERHEAD_BYTES;
use cairn_meta::codec::VOCABULARY;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::{PutRequest, TxnRequest};
use cairn_types::limits::REQUEST_BYTES_MAX_CONFIGURABLE;

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
const FORMAT_1_HEAD: &str = "0110080500010e000e0200010001610208000404000101330a0000000000016201\
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
    let state = KvState::decode_snapshot(&image_of(VOCABULARY, vec![good.clone()])).unwrap();
    assert_eq!(get(&state, b"k/0").unwrap().value, record);
    let mut wrong_length = good.clone();
    wrong_length[1] = wrong_length[1].wrapping_add(1);
    let mut claims_too_much = good.clone();
    claims_too_much[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut garbage = good[..5].to_vec();
    garbage.extend([0xff; 40]);
    // A block long enough for LZ4 to reach the length, past what any request could carry.
    let mut past_requests = vec![1];
    past_requests.extend((REQUEST_BYTES_MAX_CONFIGURABLE as u32 + 1).to_le_bytes());
    past_requests.extend(vec![0xff; REQUEST_BYTES_MAX_CONFIGURABLE / 255 + 8]);
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
    // Refused for its length alone, before room for it is allocated.
    match KvState::decode_snapshot(&image_of(VOCABULARY, vec![past_requests])) {
        Err(KvError::SnapshotCorrupt { reason }) => assert!(
            reason.contains(&format!(
                "claims {} bytes",
                REQUEST_BYTES_MAX_CONFIGURABLE + 1
            )),
            "{reason}"
        ),
        other => panic!("longer than a request: {other:?}"),
    }
    // Under another vocabulary, checked the same way before it is packed anew.
    let other = b"{\"zone\":\"\",\"rack\":\"\"}".repeat(2);
    let mut short = packed_with(record, &other);
    short[1] = short[1].wrapping_add(3);
    let result = KvState::decode_snapshot(&image_of(&other, vec![short]));
    assert!(
        matches!(result, Err(KvError::SnapshotCorrupt { .. })),
        "{result:?}"
    );
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
