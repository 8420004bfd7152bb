//! `cairn.v1.NodeRegistry`: what the leader knows about the nodes that heartbeat to it. Any node
//! answers; a follower asks the leader (the registry lives in the leader's memory only).

use crate::errors;
use crate::leader::node::Node;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::cairnpb::node_registry_server::NodeRegistry;
use cairn_proto::cairnpb::{ListNodesRequest, ListNodesResponse};
use prost::Message;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The NodeRegistry service of one node.
pub struct NodeRegistryService {
    node: Arc<Node>,
}

impl NodeRegistryService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// The leader's node views (every node, or only `node_id` when not 0), from wherever it runs.
pub async fn list_nodes(node: &Node, node_id: u64) -> Result<ListNodesResponse, Status> {
    match node
        .leader_call(LeaderRequest::ListNodes { node_id })
        .await?
    {
        LeaderResponse::Nodes(bytes) => {
            ListNodesResponse::decode(bytes.as_slice()).map_err(errors::internal)
        }
        other => Err(errors::internal(format!("unexpected answer {other:?}"))),
    }
}

#[tonic::async_trait]
impl NodeRegistry for NodeRegistryService {
    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("ListNodes", async {
                let req = request.into_inner();
                list_nodes(node, req.node_id).await.map(Response::new)
            })
            .await
    }
}
