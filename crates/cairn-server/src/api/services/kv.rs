//! etcd `KV` service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Thin: the operations are [`crate::replica::kv`] (read the applied state after a read barrier
//! unless serializable, or propose through the leader); this maps them to etcd's responses.

use crate::api::auth::{self, AuthInfo};
use crate::leader::node::Node;
/// The KV operations themselves, at their old paths (the simulation and the lock, lease and
/// election services use them from here).
pub use crate::replica::kv::{check_size, delete_range, put, range, txn};
use cairn_proto::etcdserverpb::kv_server::Kv;
use cairn_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use cairn_store::mvcc;
use cairn_store::Command;
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The etcd KV service of one node.
pub struct KvService {
    node: Arc<Node>,
}

impl KvService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Range", async {
                let caller = auth::caller(&request);
                let req = request.into_inner();
                check_size(node, req.encoded_len())?;
                auth::check_keys(node, caller.as_ref(), &req.key, &req.range_end, false)?;
                range(node, &req).await.map(Response::new)
            })
            .await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Put", async {
                let caller = auth::caller(&request);
                let req = request.into_inner();
                check_size(node, req.encoded_len())?;
                auth::check_keys(node, caller.as_ref(), &req.key, &[], true)?;
                put(node, req).await.map(Response::new)
            })
            .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("DeleteRange", async {
                let caller = auth::caller(&request);
                let req = request.into_inner();
                check_size(node, req.encoded_len())?;
                auth::check_keys(node, caller.as_ref(), &req.key, &req.range_end, true)?;
                delete_range(node, req).await.map(Response::new)
            })
            .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Txn", async {
                let caller = auth::caller(&request);
                let req = request.into_inner();
                check_size(node, req.encoded_len())?;
                check_txn_keys(node, caller.as_ref(), &req)?;
                mvcc::validate_txn(&req, node.config.txn_ops_max).map_err(|e| e.to_status())?;
                txn(node, &req).await.map(Response::new)
            })
            .await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Compact", async {
                let req = request.into_inner();
                let result = node
                    .propose(Command::Compact {
                        revision: req.revision,
                    })
                    .await?;
                Ok(Response::new(CompactionResponse {
                    header: node.header(result.revision),
                }))
            })
            .await
    }
}

/// etcd's check of a transaction: every compare reads its key; every op, in both branches and
/// at any depth, reads or writes its keys.
fn check_txn_keys(node: &Node, caller: Option<&AuthInfo>, req: &TxnRequest) -> Result<(), Status> {
    use cairn_proto::etcdserverpb::request_op::Request as Op;
    if caller.is_none() {
        return Ok(());
    }
    for c in &req.compare {
        auth::check_keys(node, caller, &c.key, &c.range_end, false)?;
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Op::RequestRange(r)) => {
                auth::check_keys(node, caller, &r.key, &r.range_end, false)?
            }
            Some(Op::RequestPut(p)) => auth::check_keys(node, caller, &p.key, &[], true)?,
            Some(Op::RequestDeleteRange(d)) => {
                auth::check_keys(node, caller, &d.key, &d.range_end, true)?
            }
            Some(Op::RequestTxn(t)) => check_txn_keys(node, caller, t)?,
            None => {}
        }
    }
    Ok(())
}
