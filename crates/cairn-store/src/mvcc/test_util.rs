//! Shorthands for the tests of the mvcc module: building requests and reading results briefly.

use cairn_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::{event::EventType, Event, KeyValue};

use super::{Applied, KvState};

pub fn put_req(key: &[u8], value: &[u8]) -> PutRequest {
    PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    }
}

pub fn op_put(key: &[u8], value: &[u8]) -> RequestOp {
    op(Request::RequestPut(put_req(key, value)))
}

pub fn op_put_req(req: PutRequest) -> RequestOp {
    op(Request::RequestPut(req))
}

pub fn op_delete(key: &[u8], range_end: &[u8], prev_kv: bool) -> RequestOp {
    op(Request::RequestDeleteRange(DeleteRangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        prev_kv,
    }))
}

pub fn op_range(key: &[u8], range_end: &[u8]) -> RequestOp {
    op(Request::RequestRange(range_req(key, range_end)))
}

pub fn op_txn(txn: TxnRequest) -> RequestOp {
    op(Request::RequestTxn(txn))
}

pub fn op(request: Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

pub fn range_req(key: &[u8], range_end: &[u8]) -> RangeRequest {
    RangeRequest {
        key: key.to_vec(),
        range_end: range_end.to_vec(),
        ..Default::default()
    }
}

pub fn txn(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        success,
        ..Default::default()
    }
}

pub fn cmp(key: &[u8], target: CompareTarget, result: CompareResult, u: TargetUnion) -> Compare {
    Compare {
        result: result as i32,
        target: target as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(u),
    }
}

pub fn apply(s: &mut KvState, req: TxnRequest) -> Applied<TxnResponse> {
    s.apply_txn(&req).expect("txn applies")
}

pub fn put(s: &mut KvState, key: &[u8], value: &[u8]) -> Applied<TxnResponse> {
    apply(s, txn(vec![op_put(key, value)]))
}

pub fn put_lease(s: &mut KvState, key: &[u8], value: &[u8], lease: i64) -> Applied<TxnResponse> {
    let req = PutRequest {
        lease,
        ..put_req(key, value)
    };
    apply(s, txn(vec![op_put_req(req)]))
}

pub fn delete(s: &mut KvState, key: &[u8], range_end: &[u8]) -> Applied<TxnResponse> {
    apply(s, txn(vec![op_delete(key, range_end, false)]))
}

pub fn get(s: &KvState, key: &[u8]) -> Option<KeyValue> {
    s.range(&range_req(key, b""))
        .unwrap()
        .kvs
        .into_iter()
        .next()
}

pub fn get_at(s: &KvState, key: &[u8], revision: i64) -> Option<KeyValue> {
    let req = RangeRequest {
        revision,
        ..range_req(key, b"")
    };
    s.range(&req).unwrap().kvs.into_iter().next()
}

pub fn keys_of(kvs: &[KeyValue]) -> Vec<Vec<u8>> {
    kvs.iter().map(|kv| kv.key.clone()).collect()
}

pub fn ev_key(e: &Event) -> Vec<u8> {
    e.kv.as_ref().expect("event kv").key.clone()
}

pub fn ev_rev(e: &Event) -> i64 {
    e.kv.as_ref().expect("event kv").mod_revision
}

pub fn is_delete(e: &Event) -> bool {
    e.r#type == EventType::Delete as i32
}

pub fn resp_range(r: &ResponseOp) -> &RangeResponse {
    match &r.response {
        Some(Response::ResponseRange(r)) => r,
        other => panic!("expected a range response, got {other:?}"),
    }
}

pub fn resp_put(r: &ResponseOp) -> &PutResponse {
    match &r.response {
        Some(Response::ResponsePut(r)) => r,
        other => panic!("expected a put response, got {other:?}"),
    }
}

pub fn resp_delete(r: &ResponseOp) -> &DeleteRangeResponse {
    match &r.response {
        Some(Response::ResponseDeleteRange(r)) => r,
        other => panic!("expected a delete response, got {other:?}"),
    }
}

pub fn resp_txn(r: &ResponseOp) -> &TxnResponse {
    match &r.response {
        Some(Response::ResponseTxn(r)) => r,
        other => panic!("expected a txn response, got {other:?}"),
    }
}
