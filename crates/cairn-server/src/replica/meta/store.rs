//! Reading and writing metadata records in the replicated store.
//!
//! Reads come from this node's applied state (callers run a read barrier first when they must be
//! linearizable). Writes are transactions proposed on the leader only: procedure code must never
//! forward a write to another node, or a deposed leader could keep changing metadata behind the
//! new leader's back.

use crate::errors;
use crate::replica::node::Replica;
use cairn_meta::{codec, KeyLayout, MetaError};
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::{
    request_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    TxnResponse,
};
use cairn_proto::mvccpb::KeyValue;
use cairn_store::command::Outcome;
use cairn_store::Command;
use serde::de::DeserializeOwned;
use std::sync::OnceLock;
use tonic::Status;

/// The cluster name under `/cairn/`; one Raft group serves one cluster.
pub const CLUSTER_NAME: &str = "default";

/// Where every metadata record lives.
pub fn layout() -> &'static KeyLayout {
    static LAYOUT: OnceLock<KeyLayout> = OnceLock::new();
    LAYOUT.get_or_init(|| KeyLayout::new(CLUSTER_NAME))
}

/// A decoded record and the revision that last wrote it (for compare-and-swap).
#[derive(Debug, Clone)]
pub struct Record<T> {
    pub value: T,
    pub mod_revision: i64,
}

/// One key from the applied state.
pub fn get_raw(node: &Replica, key: &str) -> Result<Option<KeyValue>, Status> {
    let req = RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable: true,
        ..Default::default()
    };
    let resp = node.sm.read().kv.range(&req).map_err(|e| e.to_status())?;
    Ok(resp.kvs.into_iter().next())
}

/// One decoded record from the applied state.
pub fn get<T: DeserializeOwned>(node: &Replica, key: &str) -> Result<Option<Record<T>>, Status> {
    match get_raw(node, key)? {
        None => Ok(None),
        Some(kv) => {
            let value = codec::decode(&kv.key, &kv.value).map_err(|e| meta_status(&e))?;
            Ok(Some(Record {
                value,
                mod_revision: kv.mod_revision,
            }))
        }
    }
}

/// Keys under `prefix` after `start_after` (exclusive; `None` = from the start), in key order,
/// at most `limit`, with the revision they were read at.
pub fn scan(
    node: &Replica,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    keys_only: bool,
) -> Result<(Vec<KeyValue>, i64), Status> {
    let key = match start_after {
        Some(k) => {
            let mut k = k.as_bytes().to_vec();
            k.push(0);
            k
        }
        None => prefix.as_bytes().to_vec(),
    };
    let end = cairn_meta::keys::prefix_end(prefix.as_bytes());
    let s = node.sm.read();
    // A page, not a range: a range counts every key after the page too. 0: no limit, as in a
    // range.
    let limit = if limit == 0 { usize::MAX } else { limit };
    let kvs = s.kv.scan_page(&key, &end, limit, keys_only);
    Ok((kvs, s.kv.revision()))
}

/// Keys read per page by [`scan_all`].
pub const SCAN_PAGE_KEYS: usize = 1000;

/// Calls `f` on every key under `prefix`, in key order, reading a page at a time so the state
/// is never locked for long.
pub fn scan_all(
    node: &Replica,
    prefix: &str,
    mut f: impl FnMut(KeyValue) -> Result<(), Status>,
) -> Result<(), Status> {
    let mut after: Option<String> = None;
    loop {
        let (kvs, _) = scan(node, prefix, after.as_deref(), SCAN_PAGE_KEYS, false)?;
        let Some(last) = kvs.last() else {
            return Ok(());
        };
        after = Some(String::from_utf8_lossy(&last.key).into_owned());
        for kv in kvs {
            f(kv)?;
        }
    }
}

/// Counts keys under `prefix`.
pub fn count(node: &Replica, prefix: &str) -> Result<i64, Status> {
    let req = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: cairn_meta::keys::prefix_end(prefix.as_bytes()),
        count_only: true,
        serializable: true,
        ..Default::default()
    };
    let resp = node.sm.read().kv.range(&req).map_err(|e| e.to_status())?;
    Ok(resp.count)
}

pub fn put_op(key: &str, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        })),
    }
}

pub fn delete_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            },
        )),
    }
}

fn compare(key: &str, result: CompareResult, target: CompareTarget, union: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target_union: Some(union),
    }
}

/// The key does not exist.
pub fn absent(key: &str) -> Compare {
    compare(
        key,
        CompareResult::Equal,
        CompareTarget::Version,
        TargetUnion::Version(0),
    )
}

/// The key exists.
pub fn present(key: &str) -> Compare {
    compare(
        key,
        CompareResult::Greater,
        CompareTarget::Version,
        TargetUnion::Version(0),
    )
}

/// The key was last written at `revision` (0: it does not exist).
pub fn unchanged_since(key: &str, revision: i64) -> Compare {
    compare(
        key,
        CompareResult::Equal,
        CompareTarget::Mod,
        TargetUnion::ModRevision(revision),
    )
}

/// Proposes a transaction as a decision of leader term `term` (on this node, never forwarded;
/// refused once the term is over). Returns whether the compares held, the response, and the
/// revision after it.
pub async fn txn_here(
    node: &Replica,
    term: u64,
    compare: Vec<Compare>,
    success: Vec<RequestOp>,
) -> Result<(bool, TxnResponse, i64), Status> {
    let req = TxnRequest {
        compare,
        success,
        failure: Vec::new(),
    };
    debug_assert!(req.success.len() <= node.config.txn_ops_max);
    let written = node.propose_in_term(term, Command::txn(&req)).await?;
    if let Outcome::Rejected(reason) = &written.outcome {
        return Err(errors::rejected(reason.clone()));
    }
    let resp = written
        .txn_response()
        .ok_or_else(|| errors::internal("txn result missing"))?;
    Ok((resp.succeeded, resp, written.revision))
}

/// The gRPC status for a metadata error.
pub fn meta_status(e: &MetaError) -> Status {
    super::convert::meta_error_to_status(e)
}
