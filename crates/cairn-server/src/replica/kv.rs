//! etcd KV operations on this node's replica: a range from the applied state (after a read
//! barrier unless serializable) and writes proposed through the leader, with etcd's response
//! headers. The `KV` gRPC service and the leader's services both use them.

use crate::errors;
use crate::replica::node::Replica;
use cairn_proto::etcdserverpb::{
    request_op, response_op, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};
use cairn_store::mvcc;
use cairn_store::Command;
use tonic::Status;

/// Rejects a request larger than the configured limit with etcd's error.
pub fn check_size(node: &Replica, encoded_len: usize) -> Result<(), Status> {
    let max = node.config.request_bytes_max;
    if encoded_len > max {
        return Err(errors::request_too_large(encoded_len, max));
    }
    Ok(())
}

/// Serves a range from this node's applied state, after a read barrier unless serializable.
pub async fn range(node: &Replica, req: &RangeRequest) -> Result<RangeResponse, Status> {
    mvcc::validate_range(req).map_err(|e| e.to_status())?;
    if !req.serializable {
        node.read_barrier().await?;
    }
    let state = node.sm.read();
    let mut resp = state.kv.range(req).map_err(|e| e.to_status())?;
    resp.header = node.header(state.kv.revision());
    Ok(resp)
}

/// Runs a transaction through Raft and returns etcd's response with a header.
pub async fn txn(node: &Replica, req: &TxnRequest) -> Result<TxnResponse, Status> {
    let result = node.propose(Command::txn(req)).await?;
    let mut resp = result
        .txn_response()
        .ok_or_else(|| errors::internal("txn result missing"))?;
    // The nested responses keep the store's headers: only the revision each op saw, as etcd's.
    resp.header = node.header(result.revision);
    Ok(resp)
}

fn single_op(request: request_op::Request) -> TxnRequest {
    TxnRequest {
        compare: Vec::new(),
        success: vec![RequestOp {
            request: Some(request),
        }],
        failure: Vec::new(),
    }
}

/// Puts one key through Raft.
pub async fn put(node: &Replica, req: PutRequest) -> Result<PutResponse, Status> {
    mvcc::validate_put(&req).map_err(|e| e.to_status())?;
    let resp = txn(node, &single_op(request_op::Request::RequestPut(req))).await?;
    match resp.responses.into_iter().next().and_then(|r| r.response) {
        Some(response_op::Response::ResponsePut(p)) => Ok(PutResponse {
            header: resp.header,
            ..p
        }),
        _ => Err(errors::internal("put result missing")),
    }
}

/// Deletes a key or range through Raft.
pub async fn delete_range(
    node: &Replica,
    req: DeleteRangeRequest,
) -> Result<DeleteRangeResponse, Status> {
    mvcc::validate_delete(&req).map_err(|e| e.to_status())?;
    let resp = txn(
        node,
        &single_op(request_op::Request::RequestDeleteRange(req)),
    )
    .await?;
    match resp.responses.into_iter().next().and_then(|r| r.response) {
        Some(response_op::Response::ResponseDeleteRange(d)) => Ok(DeleteRangeResponse {
            header: resp.header,
            ..d
        }),
        _ => Err(errors::internal("delete result missing")),
    }
}
