//! Request checks that need no state, run before a request is proposed (etcd's `v3rpc/key.go`):
//! keys present, flag combinations, txn size, and no two writes of a txn branch on one key.

use std::collections::BTreeSet;

use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use super::keyspace::KeyRange;
use super::range::sort_options;
use super::KvError;

/// A range needs a key and sort options the API defines.
pub fn validate_range(req: &RangeRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    sort_options(req).map(|_| ())
}

/// A put needs a key, and may not carry a value or lease it was told to ignore.
pub fn validate_put(req: &PutRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

/// A delete needs a key.
pub fn validate_delete(req: &DeleteRangeRequest) -> Result<(), KvError> {
    if req.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    Ok(())
}

/// A txn: no list (compares, success, failure) longer than `txn_ops_max` (nested txns get what
/// their parent leaves), every op valid and non-empty, and within each branch no key written
/// twice (two puts, or a put inside a delete range; overlapping deletes are fine), as etcd.
pub fn validate_txn(req: &TxnRequest, txn_ops_max: usize) -> Result<(), KvError> {
    check_txn_request(req, txn_ops_max)?;
    // Checked after the sizes, like etcd, so an oversized txn cannot make this quadratic.
    check_intervals(&req.success)?;
    check_intervals(&req.failure)?;
    Ok(())
}

fn check_txn_request(req: &TxnRequest, txn_ops_max: usize) -> Result<(), KvError> {
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > txn_ops_max {
        return Err(KvError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        check_request_op(op, txn_ops_max - ops)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, txn_ops_max: usize) -> Result<(), KvError> {
    match &op.request {
        Some(Request::RequestRange(r)) => validate_range(r),
        Some(Request::RequestPut(p)) => validate_put(p),
        Some(Request::RequestDeleteRange(d)) => validate_delete(d),
        Some(Request::RequestTxn(t)) => check_txn_request(t, txn_ops_max),
        // etcd answers an empty op this way.
        None => Err(KvError::KeyNotFound),
    }
}

type Writes<'a> = (BTreeSet<&'a [u8]>, Vec<KeyRange<'a>>);

/// etcd's `checkIntervals`: the puts and delete ranges of one branch, refusing overlaps. The
/// two branches of a nested txn may put the same key, since only one of them runs.
fn check_intervals(ops: &[RequestOp]) -> Result<Writes<'_>, KvError> {
    let mut deletes: Vec<KeyRange<'_>> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(KeyRange::new(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let deleted = |deletes: &[KeyRange<'_>], key: &[u8]| deletes.iter().any(|d| d.contains(key));

    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let Some(Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, deletes_then) = check_intervals(&t.success)?;
        let (puts_else, deletes_else) = check_intervals(&t.failure)?;
        for &key in &puts_then {
            if puts.contains(key) || deleted(&deletes, key) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(key);
        }
        for &key in &puts_else {
            if puts.contains(key) && !puts_then.contains(key) || deleted(&deletes, key) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(key);
        }
        deletes.extend(deletes_then);
        deletes.extend(deletes_else);
    }

    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        let key = p.key.as_slice();
        if puts.contains(key) || deleted(&deletes, key) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(key);
    }
    Ok((puts, deletes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::*;
    use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
    use cairn_proto::etcdserverpb::{Compare, RequestOp};

    fn v(req: TxnRequest) -> Result<(), KvError> {
        validate_txn(&req, 4)
    }

    #[test]
    fn single_requests() {
        assert_eq!(validate_range(&range_req(b"", b"")), Err(KvError::EmptyKey));
        let bad_sort = RangeRequest {
            sort_order: 7,
            ..range_req(b"k", b"")
        };
        assert_eq!(validate_range(&bad_sort), Err(KvError::InvalidSortOption));
        assert_eq!(validate_put(&put_req(b"", b"v")), Err(KvError::EmptyKey));
        let p = PutRequest {
            ignore_value: true,
            ..put_req(b"k", b"v")
        };
        assert_eq!(validate_put(&p), Err(KvError::ValueProvided));
        let p = PutRequest {
            ignore_lease: true,
            lease: 3,
            ..put_req(b"k", b"")
        };
        assert_eq!(validate_put(&p), Err(KvError::LeaseProvided));
        let d = DeleteRangeRequest::default();
        assert_eq!(validate_delete(&d), Err(KvError::EmptyKey));
        assert_eq!(validate_put(&put_req(b"k", b"v")), Ok(()));
    }

    #[test]
    fn too_many_ops_per_list() {
        let puts = |n: usize| {
            (0..n)
                .map(|i| op_put(&[b'a' + i as u8], b"v"))
                .collect::<Vec<_>>()
        };
        assert_eq!(v(txn(puts(4))), Ok(()));
        assert_eq!(v(txn(puts(5))), Err(KvError::TooManyOps));
        let failure_heavy = TxnRequest {
            failure: puts(5),
            ..Default::default()
        };
        assert_eq!(v(failure_heavy), Err(KvError::TooManyOps));
        let c = cmp(
            b"k",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        );
        let compare_heavy = TxnRequest {
            compare: vec![c; 5],
            ..Default::default()
        };
        assert_eq!(v(compare_heavy), Err(KvError::TooManyOps));
        // A nested txn gets the budget its parent leaves: 4 - 2 = 2.
        let nested = txn(vec![op_put(b"x", b"1"), op_txn(txn(puts(3)))]);
        assert_eq!(v(nested), Err(KvError::TooManyOps));
        let nested = txn(vec![op_put(b"x", b"1"), op_txn(txn(puts(2)))]);
        assert_eq!(v(nested), Ok(()));
    }

    #[test]
    fn empty_keys_and_ops() {
        let empty_compare = TxnRequest {
            compare: vec![Compare::default()],
            ..Default::default()
        };
        assert_eq!(v(empty_compare), Err(KvError::EmptyKey));
        assert_eq!(v(txn(vec![op_put(b"", b"v")])), Err(KvError::EmptyKey));
        assert_eq!(
            v(txn(vec![RequestOp { request: None }])),
            Err(KvError::KeyNotFound)
        );
        let nested = txn(vec![op_txn(txn(vec![op_delete(b"", b"", false)]))]);
        assert_eq!(v(nested), Err(KvError::EmptyKey));
    }

    #[test]
    fn duplicate_keys_within_a_branch() {
        assert_eq!(
            v(txn(vec![op_put(b"a", b"1"), op_put(b"a", b"2")])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            v(txn(vec![op_delete(b"a", b"c", false), op_put(b"b", b"2")])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            v(txn(vec![
                op_put(b"zz", b"2"),
                op_delete(b"m", b"\0", false)
            ])),
            Err(KvError::DuplicateKey)
        );
        // Overlapping deletes, reads and puts outside the deleted range are fine.
        let ok = txn(vec![
            op_delete(b"a", b"c", false),
            op_delete(b"b", b"d", false),
            op_range(b"a", b"z"),
            op_put(b"d", b"1"),
        ]);
        assert_eq!(v(ok), Ok(()));
        // The same key in success and failure is fine: only one runs.
        let branches = TxnRequest {
            success: vec![op_put(b"a", b"1")],
            failure: vec![op_put(b"a", b"2")],
            ..Default::default()
        };
        assert_eq!(v(branches), Ok(()));
    }

    #[test]
    fn duplicate_keys_across_nesting() {
        let both_ways = TxnRequest {
            success: vec![op_put(b"a", b"1")],
            failure: vec![op_put(b"a", b"2")],
            ..Default::default()
        };
        assert_eq!(v(txn(vec![op_txn(both_ways.clone())])), Ok(()));
        assert_eq!(
            v(txn(vec![op_txn(both_ways.clone()), op_put(b"a", b"3")])),
            Err(KvError::DuplicateKey)
        );
        assert_eq!(
            v(txn(vec![op_delete(b"a", b"", false), op_txn(both_ways)])),
            Err(KvError::DuplicateKey)
        );
        let inner_delete = txn(vec![op_delete(b"a", b"b", false)]);
        assert_eq!(
            v(txn(vec![op_txn(inner_delete), op_put(b"a", b"1")])),
            Err(KvError::DuplicateKey)
        );
    }
}
