//! The `RaftPeer` gRPC service on the peer port: openraft's RPCs from other nodes, snapshot
//! streams, and requests followers forward to the leader.

use crate::errors;
use crate::node::Node;
use crate::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::raftpb::raft_peer_server::RaftPeer;
use cairn_proto::raftpb::{JoinRequest, JoinResponse, RaftMessage, SnapshotChunk};
use cairn_store::network::{decode, encode};
use cairn_store::TypeConfig;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

/// Largest snapshot a node accepts from a peer, bytes.
pub const SNAPSHOT_RECEIVE_BYTES_MAX: usize = 8 * 1024 * 1024 * 1024;

/// Serves peers.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn bad(e: String) -> Status {
    Status::new(Code::InvalidArgument, e)
}

fn reply<T: serde::Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    Ok(Response::new(RaftMessage {
        data: encode(v).map_err(errors::internal)?,
    }))
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad)?;
        self.node.touch_leader_contact();
        let resp = self
            .node
            .raft
            .append_entries(req)
            .await
            .map_err(errors::internal)?;
        reply(&resp)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad)?;
        let resp = self.node.raft.vote(req).await.map_err(errors::internal)?;
        reply(&resp)
    }

    async fn pre_vote(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad)?;
        let resp = self
            .node
            .raft
            .pre_vote(req)
            .await
            .map_err(errors::internal)?;
        reply(&resp)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req = decode(&request.into_inner().data).map_err(bad)?;
        let resp = self
            .node
            .raft
            .handle_transfer_leader(req)
            .await
            .map_err(errors::internal)?;
        reply(&resp)
    }

    async fn full_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftMessage>, Status> {
        let mut stream = request.into_inner();
        let mut header: Option<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>)> = None;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if header.is_none() {
                header = Some(decode(&chunk.meta).map_err(bad)?);
            }
            if data.len() + chunk.data.len() > SNAPSHOT_RECEIVE_BYTES_MAX {
                return Err(Status::new(
                    Code::ResourceExhausted,
                    format!("cairn: snapshot larger than snapshot_receive_bytes_max {SNAPSHOT_RECEIVE_BYTES_MAX}"),
                ));
            }
            data.extend_from_slice(&chunk.data);
            if chunk.done {
                break;
            }
        }
        let (vote, meta) = header.ok_or_else(|| bad("empty snapshot stream".into()))?;
        let snapshot = openraft::Snapshot {
            meta,
            snapshot: data,
        };
        let resp = self
            .node
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(errors::internal)?;
        reply(&resp)
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = request.into_inner();
        let resp = self
            .node
            .leader_call(LeaderRequest::MemberAdd {
                peer_addr: req.peer_addr,
                learner: true,
            })
            .await?;
        let id = match resp {
            LeaderResponse::MemberAdded { id } => id,
            other => return Err(errors::internal(format!("unexpected answer {other:?}"))),
        };
        Ok(Response::new(JoinResponse {
            leader_id: id,
            voters: self.node.sm.read().membership.voter_ids().collect(),
        }))
    }

    async fn forward(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let req: LeaderRequest = decode(&request.into_inner().data).map_err(bad)?;
        // One hop only: if this node no longer leads, the caller retries with the new leader.
        let resp = match self.node.serve_as_leader(req).await {
            Ok(r) => r,
            Err(s) => LeaderResponse::Error {
                code: s.code() as i32,
                message: s.message().to_string(),
            },
        };
        reply(&resp)
    }
}
