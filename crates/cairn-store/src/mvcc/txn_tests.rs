//! Tests of transactions: compares, branches, nesting, one revision per txn, atomic refusal.

use cairn_proto::etcdserverpb::compare::{
    CompareResult as R, CompareTarget as T, TargetUnion as U,
};
use cairn_proto::etcdserverpb::{Compare, PutRequest, TxnRequest};

use crate::mvcc::test_util::*;
use crate::mvcc::{KvError, KvState};

/// k: value "m", create 2, mod 3, version 2, lease 7.
fn one_key() -> KvState {
    let mut s = KvState::new();
    s.lease_grant(7, 60).unwrap();
    put(&mut s, b"k", b"a");
    put_lease(&mut s, b"k", b"m", 7);
    s
}

fn holds(s: &mut KvState, compare: Vec<Compare>) -> bool {
    let req = TxnRequest {
        compare,
        ..Default::default()
    };
    apply(s, req).response.succeeded
}

#[test]
fn compare_each_target_and_result() {
    let mut s = one_key();
    let cases: Vec<(T, U, [bool; 4])> = vec![
        // [EQUAL, NOT_EQUAL, GREATER, LESS] against the value given
        (
            T::Value,
            U::Value(b"m".to_vec()),
            [true, false, false, false],
        ),
        (
            T::Value,
            U::Value(b"a".to_vec()),
            [false, true, true, false],
        ),
        (
            T::Value,
            U::Value(b"z".to_vec()),
            [false, true, false, true],
        ),
        (T::Version, U::Version(2), [true, false, false, false]),
        (T::Version, U::Version(1), [false, true, true, false]),
        (T::Create, U::CreateRevision(2), [true, false, false, false]),
        (T::Create, U::CreateRevision(5), [false, true, false, true]),
        (T::Mod, U::ModRevision(3), [true, false, false, false]),
        (T::Mod, U::ModRevision(2), [false, true, true, false]),
        (T::Lease, U::Lease(7), [true, false, false, false]),
        (T::Lease, U::Lease(8), [false, true, false, true]),
    ];
    for (target, union, expected) in cases {
        for (result, want) in [R::Equal, R::NotEqual, R::Greater, R::Less]
            .into_iter()
            .zip(expected)
        {
            let c = cmp(b"k", target, result, union.clone());
            assert_eq!(
                holds(&mut s, vec![c]),
                want,
                "{target:?} {result:?} {union:?}"
            );
        }
    }
    assert_eq!(s.revision(), 3, "compares alone write nothing");
}

#[test]
fn compare_missing_key_is_zero_but_value_fails() {
    let mut s = one_key();
    assert!(holds(
        &mut s,
        vec![cmp(b"x", T::Version, R::Equal, U::Version(0))]
    ));
    assert!(holds(
        &mut s,
        vec![cmp(b"x", T::Create, R::Equal, U::CreateRevision(0))]
    ));
    assert!(holds(
        &mut s,
        vec![cmp(b"x", T::Mod, R::Less, U::ModRevision(1))]
    ));
    assert!(holds(
        &mut s,
        vec![cmp(b"x", T::Lease, R::Equal, U::Lease(0))]
    ));
    assert!(!holds(
        &mut s,
        vec![cmp(b"x", T::Value, R::Equal, U::Value(Vec::new()))]
    ));
    assert!(!holds(
        &mut s,
        vec![cmp(b"x", T::Value, R::NotEqual, U::Value(b"q".to_vec()))]
    ));
}

#[test]
fn compare_over_a_range_needs_every_key() {
    let mut s = KvState::new();
    put(&mut s, b"p/1", b"v");
    put(&mut s, b"p/2", b"v");
    put(&mut s, b"p/2", b"v");
    let ranged = |result, version| Compare {
        range_end: b"p0".to_vec(),
        ..cmp(b"p/", T::Version, result, U::Version(version))
    };
    assert!(holds(&mut s, vec![ranged(R::Greater, 0)]));
    assert!(!holds(&mut s, vec![ranged(R::Equal, 1)]));
    assert!(holds(&mut s, vec![ranged(R::Less, 3)]));
    // An empty range compares as one missing key.
    let empty = Compare {
        range_end: b"r".to_vec(),
        ..cmp(b"q", T::Create, R::Equal, U::CreateRevision(0))
    };
    assert!(holds(&mut s, vec![empty]));
}

#[test]
fn branches_and_responses() {
    let mut s = one_key();
    let req = TxnRequest {
        compare: vec![cmp(b"k", T::Value, R::Equal, U::Value(b"nope".to_vec()))],
        success: vec![op_put(b"s", b"1")],
        failure: vec![op_put(b"f", b"1"), op_range(b"f", b"")],
    };
    let a = apply(&mut s, req);
    assert!(!a.response.succeeded);
    assert!(a.response.header.is_none());
    assert_eq!(a.response.responses.len(), 2);
    // The range after the put sees it, at the txn's revision.
    let r = resp_range(&a.response.responses[1]);
    assert_eq!(r.kvs[0].key, b"f");
    assert_eq!(r.header.as_ref().unwrap().revision, 4);
    assert!(get(&s, b"s").is_none() && get(&s, b"f").is_some());
}

#[test]
fn several_writes_share_one_revision() {
    let mut s = KvState::new();
    put(&mut s, b"b", b"0"); // rev 2
    let a = apply(
        &mut s,
        txn(vec![
            op_put(b"a", b"1"),
            op_put(b"b", b"1"),
            op_delete(b"zz", b"", false), // deletes nothing
            op_put(b"c", b"1"),
        ]),
    );
    assert_eq!(a.revision, 3);
    assert_eq!(s.revision(), 3);
    for k in [b"a", b"b", b"c"] {
        assert_eq!(get(&s, k).unwrap().mod_revision, 3);
    }
    assert_eq!(get(&s, b"b").unwrap().version, 2);
    assert_eq!(get(&s, b"b").unwrap().create_revision, 2);
    let keys: Vec<_> = a.events.iter().map(ev_key).collect();
    assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    assert!(a.events[0].prev_kv.is_none());
    assert_eq!(a.events[1].prev_kv.as_ref().unwrap().value, b"0");

    // A txn that writes nothing keeps the revision.
    let a = apply(
        &mut s,
        txn(vec![op_range(b"a", b""), op_delete(b"q", b"", true)]),
    );
    assert_eq!(a.revision, 3);
    assert!(a.events.is_empty());
    assert_eq!(
        resp_delete(&a.response.responses[1])
            .header
            .as_ref()
            .unwrap()
            .revision,
        3
    );
}

#[test]
fn refused_txn_changes_nothing() {
    let mut s = one_key();
    let before = s.clone();
    let bad_lease = PutRequest {
        lease: 99,
        ..put_req(b"y", b"2")
    };
    let req = txn(vec![
        op_put(b"x", b"1"),
        op_delete(b"k", b"", false),
        op_put_req(bad_lease),
    ]);
    assert_eq!(s.apply_txn(&req), Err(KvError::LeaseNotFound));
    assert_eq!(s, before);

    let ignore_missing = PutRequest {
        ignore_value: true,
        ..put_req(b"missing", b"")
    };
    let req = txn(vec![op_put(b"x", b"1"), op_put_req(ignore_missing)]);
    assert_eq!(s.apply_txn(&req), Err(KvError::KeyNotFound));
    assert_eq!(s, before);

    // A nested op on the taken path is checked too.
    let nested_bad = txn(vec![op_put_req(PutRequest {
        lease: 42,
        ..put_req(b"n", b"1")
    })]);
    let req = txn(vec![op_put(b"x", b"1"), op_txn(nested_bad)]);
    assert_eq!(s.apply_txn(&req), Err(KvError::LeaseNotFound));
    assert_eq!(s, before);

    let future = cairn_proto::etcdserverpb::RangeRequest {
        revision: 100,
        ..range_req(b"k", b"")
    };
    let req = txn(vec![
        op_put(b"x", b"1"),
        op(cairn_proto::etcdserverpb::request_op::Request::RequestRange(future)),
    ]);
    assert_eq!(s.apply_txn(&req), Err(KvError::FutureRevision));
    assert_eq!(s, before);
}

#[test]
fn ops_off_the_taken_path_are_not_checked() {
    let mut s = one_key();
    let bad = op_put_req(PutRequest {
        lease: 99,
        ..put_req(b"y", b"2")
    });
    let req = TxnRequest {
        compare: vec![cmp(b"k", T::Version, R::Equal, U::Version(2))],
        success: vec![op_put(b"ok", b"1")],
        failure: vec![bad],
    };
    assert!(apply(&mut s, req).response.succeeded);
}

#[test]
fn ignore_value_and_ignore_lease_keep_the_old_ones() {
    let mut s = one_key();
    let req = PutRequest {
        ignore_value: true,
        prev_kv: true,
        ..put_req(b"k", b"")
    };
    let a = apply(&mut s, txn(vec![op_put_req(req)]));
    let prev = resp_put(&a.response.responses[0]).prev_kv.clone().unwrap();
    assert_eq!(prev.value, b"m");
    let kv = get(&s, b"k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"m"[..], 0, 3)
    );
    assert!(s.lease(7).unwrap().keys.is_empty(), "lease 0 was given");

    put_lease(&mut s, b"k", b"m", 7);
    let req = PutRequest {
        ignore_lease: true,
        ..put_req(b"k", b"new")
    };
    apply(&mut s, txn(vec![op_put_req(req)]));
    let kv = get(&s, b"k").unwrap();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"new"[..], 7));
    assert_eq!(s.lease(7).unwrap().keys, vec![b"k".to_vec()]);
}

#[test]
fn nested_txns_run_recursively_with_compares_on_the_state_before() {
    let mut s = KvState::new();
    put(&mut s, b"k", b"0"); // rev 2
    let inner = TxnRequest {
        // Evaluated before the outer put, as etcd does: k still has version 1.
        compare: vec![cmp(b"k", T::Version, R::Equal, U::Version(1))],
        success: vec![op_put(b"inner", b"yes"), op_range(b"k", b"")],
        failure: vec![op_put(b"inner", b"no")],
    };
    let outer = TxnRequest {
        compare: vec![cmp(b"k", T::Value, R::Equal, U::Value(b"0".to_vec()))],
        success: vec![op_put(b"k", b"1"), op_txn(inner), op_put(b"after", b"x")],
        failure: vec![],
    };
    let a = apply(&mut s, outer);
    assert!(a.response.succeeded);
    assert_eq!(a.revision, 3);
    let nested = resp_txn(&a.response.responses[1]);
    assert!(nested.succeeded);
    assert_eq!(resp_range(&nested.responses[1]).kvs[0].value, b"1");
    assert_eq!(get(&s, b"inner").unwrap().value, b"yes");
    assert_eq!(get(&s, b"after").unwrap().mod_revision, 3);
    let keys: Vec<_> = a.events.iter().map(ev_key).collect();
    assert_eq!(
        keys,
        vec![b"k".to_vec(), b"inner".to_vec(), b"after".to_vec()]
    );
}

#[test]
fn delete_range_with_prev_kv() {
    let mut s = KvState::new();
    for k in [&b"a"[..], b"b", b"c", b"d"] {
        put(&mut s, k, k);
    }
    delete(&mut s, b"c", b""); // rev 6
    let a = apply(&mut s, txn(vec![op_delete(b"a", b"d", true)]));
    let d = resp_delete(&a.response.responses[0]);
    assert_eq!(d.deleted, 2);
    assert_eq!(keys_of(&d.prev_kvs), vec![b"a".to_vec(), b"b".to_vec()]);
    assert_eq!(d.prev_kvs[1].value, b"b");
    assert_eq!(d.header.as_ref().unwrap().revision, 7);
    assert_eq!(a.revision, 7);
    assert!(a.events.iter().all(is_delete));
    let kv = a.events[0].kv.as_ref().unwrap();
    assert_eq!((kv.mod_revision, kv.version, kv.create_revision), (7, 0, 0));
    assert_eq!(a.events[0].prev_kv.as_ref().unwrap().value, b"a");
    assert_eq!(s.key_count(), 1);

    let a = apply(&mut s, txn(vec![op_delete(b"\0", b"\0", false)]));
    assert_eq!(resp_delete(&a.response.responses[0]).deleted, 1);
    assert_eq!(s.key_count(), 0);
}

#[test]
fn put_returns_prev_kv() {
    let mut s = KvState::new();
    let first = PutRequest {
        prev_kv: true,
        ..put_req(b"k", b"1")
    };
    let a = apply(&mut s, txn(vec![op_put_req(first.clone())]));
    assert!(resp_put(&a.response.responses[0]).prev_kv.is_none());
    let a = apply(&mut s, txn(vec![op_put_req(first)]));
    let p = resp_put(&a.response.responses[0]);
    assert_eq!(p.prev_kv.as_ref().unwrap().mod_revision, 2);
    assert_eq!(p.header.as_ref().unwrap().revision, 3);
}
