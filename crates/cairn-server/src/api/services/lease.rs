//! etcd `Lease` service: Grant, Revoke, KeepAlive (stream), TimeToLive, Leases.
//!
//! Grant and Revoke go through Raft. Keep-alive and time-to-live are answered by the leader's
//! in-memory deadlines (a follower forwards them), as etcd's lessor does.

use crate::errors;
use crate::leader::node::Node;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::etcdserverpb::lease_server::Lease;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus,
    LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use cairn_store::Command;
use cairn_types::limits::{LEASE_KEEPALIVE_BUFFER_MAX, LEASE_TTL_SECS_MAX, LEASE_TTL_SECS_MIN};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

/// The etcd Lease service of one node.
pub struct LeaseService {
    node: Arc<Node>,
}

impl LeaseService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Serves one keep-alive stream (gRPC's or the JSON gateway's): each request renews its
    /// lease and is answered in order; the stream ends at the first error.
    pub fn keep_alive(
        &self,
        mut inbound: crate::api::services::stream::Inbound<LeaseKeepAliveRequest>,
    ) -> crate::api::services::stream::ResponseStream<LeaseKeepAliveResponse> {
        let node = self.node.clone();
        let (tx, rx) = mpsc::channel(LEASE_KEEPALIVE_BUFFER_MAX);
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let resp = match keep_alive_once(&node, req.id).await {
                    Ok(ttl) => Ok(LeaseKeepAliveResponse {
                        header: node.header(node.revision()),
                        id: req.id,
                        ttl,
                    }),
                    Err(e) => Err(e),
                };
                let failed = resp.is_err();
                if tx.send(resp).await.is_err() || failed {
                    break;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

/// Grants a lease (id 0 = the leader picks one) and returns (id, ttl).
pub async fn grant(node: &Node, id: i64, ttl: i64) -> Result<(i64, i64), Status> {
    if ttl > LEASE_TTL_SECS_MAX {
        return Err(Status::new(
            Code::OutOfRange,
            "etcdserver: too large lease TTL",
        ));
    }
    if id < 0 {
        return Err(Status::new(
            Code::InvalidArgument,
            "cairn: lease ID must not be negative",
        ));
    }
    let ttl = ttl.max(LEASE_TTL_SECS_MIN);
    let result = node
        .propose(Command::LeaseGrant { id, ttl_secs: ttl })
        .await?;
    // The leader filled in the id if we asked it to pick one; find it by asking the state.
    let id = if id != 0 {
        id
    } else {
        result
            .granted_lease()
            .ok_or_else(|| errors::internal("granted lease id missing"))?
    };
    Ok((id, ttl))
}

/// Revokes a lease and deletes its keys.
pub async fn revoke(node: &Node, id: i64) -> Result<i64, Status> {
    let r = node.propose(Command::LeaseRevoke { id }).await?;
    Ok(r.revision)
}

/// Renews a lease through the leader; returns its TTL, 0 when it does not exist.
pub async fn keep_alive_once(node: &Node, id: i64) -> Result<i64, Status> {
    match node
        .leader_call(LeaderRequest::LeaseKeepAlive { id })
        .await?
    {
        LeaderResponse::KeepAlive { ttl } => Ok(ttl),
        other => Err(errors::internal(format!("unexpected answer {other:?}"))),
    }
}

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("LeaseGrant", async {
                let req = request.into_inner();
                let (id, ttl) = grant(node, req.id, req.ttl).await?;
                Ok(Response::new(LeaseGrantResponse {
                    header: node.header(node.revision()),
                    id,
                    ttl,
                    error: String::new(),
                }))
            })
            .await
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("LeaseRevoke", async {
                let rev = revoke(node, request.into_inner().id).await?;
                Ok(Response::new(LeaseRevokeResponse {
                    header: node.header(rev),
                }))
            })
            .await
    }

    type LeaseKeepAliveStream =
        Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send + 'static>>;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Ok(Response::new(
            self.keep_alive(Box::pin(request.into_inner())),
        ))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("LeaseTimeToLive", async {
                let req = request.into_inner();
                let ttls = match node
                    .leader_call(LeaderRequest::LeaseTimeToLive { id: req.id })
                    .await?
                {
                    LeaderResponse::TimeToLive(t) => t,
                    other => return Err(errors::internal(format!("unexpected answer {other:?}"))),
                };
                let (ttl, granted) = ttls.unwrap_or((-1, 0));
                let keys = if req.keys && ttls.is_some() {
                    // The keys come from this node's state: as etcd's leader answers, they must
                    // include every put acknowledged before this request, so catch up first.
                    node.read_barrier().await?;
                    node.sm
                        .read()
                        .kv
                        .lease(req.id)
                        .map(|l| l.keys)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                Ok(Response::new(LeaseTimeToLiveResponse {
                    header: node.header(node.revision()),
                    id: req.id,
                    ttl,
                    granted_ttl: granted,
                    keys,
                }))
            })
            .await
    }

    async fn lease_leases(
        &self,
        _request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("LeaseLeases", async {
                node.read_barrier().await?;
                let s = node.sm.read();
                let leases =
                    s.kv.lease_ids()
                        .into_iter()
                        .map(|id| LeaseStatus { id })
                        .collect();
                Ok(Response::new(LeaseLeasesResponse {
                    header: node.header(s.kv.revision()),
                    leases,
                }))
            })
            .await
    }
}
