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

/// etcd's quota check before a write that adds `cost` bytes: past `quota_backend_bytes` this
/// node raises the NOSPACE alarm (replicated: every member then refuses writes that add data)
/// and the write is refused with etcd's "database space exceeded".
pub async fn check_quota(node: &Replica, cost: u64) -> Result<(), Status> {
    use cairn_store::state_machine::{ALARM_NOSPACE, NO_SPACE_MESSAGE};
    if cost == 0 {
        return Ok(());
    }
    let used = node.sm.read().kv.approx_size_bytes();
    if used.saturating_add(cost) <= node.config.quota_backend_bytes {
        return Ok(());
    }
    let raise = Command::Alarm {
        activate: true,
        member_id: node.id,
        alarm: ALARM_NOSPACE,
    };
    if let Err(e) = node.propose(raise).await {
        tracing::warn!(error = %e.message(), "raising the NOSPACE alarm");
    }
    tracing::warn!(
        used,
        cost,
        quota = node.config.quota_backend_bytes,
        "space quota exceeded: NOSPACE alarm raised"
    );
    Err(Status::resource_exhausted(NO_SPACE_MESSAGE))
}

/// Runs a transaction through Raft and returns etcd's response with a header.
pub async fn txn(node: &Replica, req: &TxnRequest) -> Result<TxnResponse, Status> {
    check_quota(node, mvcc::txn_put_bytes(req)).await?;
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
