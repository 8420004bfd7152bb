//! `cairn.v1.Admin`: leader information and leadership transfer for `cairn ctl leader`.

use crate::leader::node::Node;
use crate::replica::peer_request::LeaderRequest;
use cairn_proto::cairnpb::admin_server::Admin;
use cairn_proto::cairnpb::{
    LeaderInfoRequest, LeaderInfoResponse, TransferLeaderRequest, TransferLeaderResponse,
};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// How long a transfer may take before the call reports where leadership is.
const TRANSFER_WAIT_MS: u64 = 5000;

/// The cairn.v1 Admin service of one node.
pub struct AdminService {
    node: Arc<Node>,
}

impl AdminService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn transfer_leader(
        &self,
        request: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let node = &self.node;
        let to = request.into_inner().to;
        if node.node_addrs(to).is_none() {
            return Err(Status::new(
                Code::NotFound,
                format!("cairn: node {to} is not a member"),
            ));
        }
        node.leader_call(LeaderRequest::TransferLeader { to })
            .await?;
        let waited = node
            .raft
            .wait(Some(Duration::from_millis(TRANSFER_WAIT_MS)))
            .metrics(|m| m.current_leader == Some(to), "leadership moved")
            .await;
        match waited {
            Ok(_) => Ok(Response::new(TransferLeaderResponse { leader_id: to })),
            _ => Err(Status::new(
                Code::DeadlineExceeded,
                format!(
                    "cairn: leadership did not move to node {to} within {TRANSFER_WAIT_MS} ms; leader is {:?}",
                    node.leader()
                ),
            )),
        }
    }

    async fn leader_info(
        &self,
        _request: Request<LeaderInfoRequest>,
    ) -> Result<Response<LeaderInfoResponse>, Status> {
        let node = &self.node;
        let leader = node.leader();
        let addr = leader
            .and_then(|l| node.node_addrs(l))
            .map(|a| a.client)
            .unwrap_or_default();
        Ok(Response::new(LeaderInfoResponse {
            leader_id: leader.unwrap_or(0),
            leader_client_addr: addr,
            term: node.term(),
            node_id: node.id,
        }))
    }
}
