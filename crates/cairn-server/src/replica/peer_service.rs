//! The `RaftPeer` gRPC service on the peer port: openraft's RPCs from other nodes, snapshot
//! streams, and requests followers forward to the leader.
//!
//! Everything a peer sends is bounded: each message by [`PEER_MESSAGE_BYTES_MAX`], a snapshot
//! stream by the node's `snapshot_bytes_max`. Either limit crossed is a `ResourceExhausted`
//! naming it, and the node carries on.

use crate::errors;
use crate::replica::node::Replica;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::raftpb::raft_peer_server::{RaftPeer, RaftPeerServer};
use cairn_proto::raftpb::{JoinRequest, JoinResponse, RaftMessage, SnapshotChunk};
use cairn_store::network::{decode, encode};
use cairn_store::TypeConfig;
use cairn_types::limits::PEER_MESSAGE_BYTES_MAX;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use std::convert::Infallible;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status, Streaming};

/// The peer service with its limits, ready for `Server::add_service`.
pub fn peer_server(node: Arc<Replica>) -> PeerServer {
    PeerServer {
        inner: RaftPeerServer::new(PeerService::new(node))
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
    }
}

/// tonic refuses an oversized message before any handler runs, with `OutOfRange` and a text
/// that names no setting; this wrapper turns that answer into `ResourceExhausted` naming
/// `peer_message_bytes_max`, as every other limit of Cairn is reported.
#[derive(Clone)]
pub struct PeerServer {
    inner: RaftPeerServer<PeerService>,
}

impl NamedService for PeerServer {
    const NAME: &'static str = <RaftPeerServer<PeerService> as NamedService>::NAME;
}

impl<B> Service<http::Request<B>> for PeerServer
where
    RaftPeerServer<PeerService>: Service<
        http::Request<B>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future = BoxFuture<http::Response<Body>, Infallible>,
    >,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            match Status::from_header_map(resp.headers()) {
                Some(status) if is_oversized(&status) => Ok(too_large(&status).into_http()),
                _ => Ok(resp),
            }
        })
    }
}

/// tonic's refusal of a message over the decoding limit.
fn is_oversized(status: &Status) -> bool {
    status.code() == Code::OutOfRange && status.message().contains("message length too large")
}

fn too_large(status: &Status) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!(
            "cairn: peer message larger than peer_message_bytes_max {PEER_MESSAGE_BYTES_MAX} ({})",
            status.message()
        ),
    )
}

/// Serves peers.
pub struct PeerService {
    node: Arc<Replica>,
}

impl PeerService {
    pub fn new(node: Arc<Replica>) -> Self {
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

    type StreamAppendStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<RaftMessage, Status>> + Send + 'static>,
    >;

    /// A leader's replication stream: each message an AppendEntries request, handed to Raft as
    /// it arrives (without waiting for the one before to be written); each answered in order.
    /// A message that does not decode ends the stream with `InvalidArgument` after the answers
    /// to those before it.
    async fn stream_append(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        let node = self.node.clone();
        let refusal = Arc::new(std::sync::Mutex::new(None::<Status>));
        let refused = refusal.clone();
        let requests = request.into_inner().map_while(move |m| {
            let decoded = m
                .map_err(|s| if is_oversized(&s) { too_large(&s) } else { s })
                .and_then(|m| decode(&m.data).map_err(bad));
            match decoded {
                Ok(req) => {
                    node.touch_leader_contact();
                    Some(req)
                }
                Err(s) => {
                    *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
                    None
                }
            }
        });
        let answers = self.node.raft.stream_append(requests).map(|r| match r {
            Ok(answer) => Ok(RaftMessage {
                data: encode(&answer).map_err(errors::internal)?,
            }),
            Err(fatal) => Err(errors::internal(fatal)),
        });
        let last = futures::stream::iter(std::iter::from_fn(move || {
            refusal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .map(Err)
        }));
        Ok(Response::new(Box::pin(answers.chain(last))))
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
        let limit = self.node.config.snapshot_bytes_max;
        let mut stream = request.into_inner();
        let mut header: Option<(VoteOf<TypeConfig>, SnapshotMetaOf<TypeConfig>)> = None;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|s| if is_oversized(&s) { too_large(&s) } else { s })?;
            if header.is_none() {
                header = Some(decode(&chunk.meta).map_err(bad)?);
            }
            if data.len() + chunk.data.len() > limit {
                return Err(Status::new(
                    Code::ResourceExhausted,
                    format!("cairn: snapshot larger than snapshot_bytes_max {limit}"),
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

    type ForwardStreamStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<RaftMessage, Status>> + Send + 'static>,
    >;

    async fn forward_stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::ForwardStreamStream>, Status> {
        let answers =
            crate::replica::forward_stream::serve_stream(self.node.clone(), request.into_inner());
        Ok(Response::new(Box::pin(answers)))
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
