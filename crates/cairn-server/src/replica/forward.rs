//! Forwarding: a follower never tells a client to go elsewhere; it sends what only the leader
//! decides to the leader over the peer port (or the simulation's [`PeerLink`]), at most one hop,
//! and retries within the request timeout while there is no leader or leadership moves.

use crate::errors;
use crate::replica::node::Replica;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_proto::raftpb::RaftMessage;
use cairn_store::network::{decode, encode, peer_channel};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Pause between attempts while the cluster has no leader.
const LEADER_RETRY_BACKOFF_MS: u64 = 50;

/// Why a forwarded request got no answer from the leader.
#[derive(Debug)]
pub enum ForwardFailure {
    /// It never left this node (the leader refused the connection): safe to retry.
    NotSent,
    /// It may have reached the leader, but no answer came back: a write's outcome is unknown.
    Lost,
    /// The transport refused it with this status.
    Refused(Status),
}

/// A boxed future answering a forwarded request.
pub type ForwardFuture<'a> =
    Pin<Box<dyn Future<Output = Result<LeaderResponse, ForwardFailure>> + Send + 'a>>;

/// Another way to reach the leader's node than the peer port: the deterministic simulation's
/// in-process network, which delivers `req` to node `to`'s [`Replica::serve_as_leader`] (or
/// loses it) within `timeout`.
pub trait PeerLink: Send + Sync {
    fn forward(
        &self,
        from: u64,
        to: u64,
        req: LeaderRequest,
        timeout: Duration,
    ) -> ForwardFuture<'_>;
}

impl Replica {
    fn peer_client(&self, id: u64) -> Result<RaftPeerClient<Channel>, Status> {
        let addrs = self.node_addrs(id).ok_or_else(errors::no_leader)?;
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((addr, c)) = peers.get(&id) {
            if *addr == addrs.peer {
                return Ok(c.clone());
            }
        }
        let channel = peer_channel(&addrs.peer).map_err(errors::internal)?;
        let client = RaftPeerClient::new(channel);
        peers.insert(id, (addrs.peer, client.clone()));
        Ok(client)
    }

    /// Runs `req` on the leader: here if this node leads, else forwarded (one hop). Retries while
    /// there is no leader or leadership moves, until the request timeout.
    pub async fn leader_call(&self, req: LeaderRequest) -> Result<LeaderResponse, Status> {
        let deadline = tokio::time::Instant::now() + self.request_timeout();
        loop {
            let attempt = match self.leader() {
                // Cut off from a quorum: a new leader may exist elsewhere. Not retried here; the
                // client should try another endpoint.
                Some(l) if l == self.id && self.quorum_contact_lapsed() => {
                    return Err(errors::leadership_unconfirmed())
                }
                Some(l) if l == self.id => self.serve_as_leader(req.clone()).await,
                Some(l) => self.forward(l, &req).await,
                None => Err(errors::no_leader()),
            };
            match attempt {
                Err(s) if is_retryable(&s) && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(LEADER_RETRY_BACKOFF_MS)).await;
                }
                Err(s) if is_retryable(&s) => return Err(errors::timeout()),
                other => return other,
            }
        }
    }

    /// Sends forwarded requests through `link` instead of the peer port: the deterministic
    /// simulation's in-process network. Set once, before the node serves.
    pub fn use_peer_link(&self, link: Arc<dyn PeerLink>) {
        if self.peer_link.set(link).is_err() {
            tracing::warn!("peer link already set; keeping the first");
        }
    }

    async fn forward(&self, leader: u64, req: &LeaderRequest) -> Result<LeaderResponse, Status> {
        if self.peer_faults.blocks(leader) {
            // A cut link: nothing was sent, so retrying (once a leader is reachable) is safe.
            return Err(errors::leader_changed());
        }
        let _slot = self
            .forward_slots
            .try_acquire()
            .map_err(|_| errors::too_many_requests("forward_inflight_max reached"))?;
        self.metrics.forwarded.fetch_add(1, Ordering::Relaxed);
        let is_ddl = matches!(req, LeaderRequest::Meta { .. });
        let timeout = if is_ddl {
            Duration::from_millis(self.config.ddl_timeout_ms)
        } else {
            self.request_timeout()
        };
        let is_write = is_ddl
            || matches!(
                req,
                LeaderRequest::Write(_) | LeaderRequest::MemberAdd { .. }
            );
        let sending = std::time::Instant::now();
        let sent = match self.peer_link.get() {
            Some(link) => link.forward(self.id, leader, req.clone(), timeout).await,
            None => self.forward_over_peer_port(leader, req, timeout).await,
        };
        if sent.is_ok() {
            self.metrics.forward_round_trip.record(sending.elapsed());
        }
        let resp = sent.map_err(|failure| match failure {
            ForwardFailure::NotSent => errors::leader_changed(),
            // The leader is unreachable: it may have died. A write may or may not have been
            // applied, so it is not retried (etcd answers "request timed out" then too); anything
            // else waits for the next leader.
            ForwardFailure::Lost if is_write => errors::timeout(),
            ForwardFailure::Lost => errors::leader_changed(),
            ForwardFailure::Refused(s) => s,
        })?;
        match resp {
            LeaderResponse::Error { code, message } => Err(Status::new(Code::from(code), message)),
            other => Ok(other),
        }
    }

    /// Sends `req` to the leader on the forwarding stream ([`crate::replica::forward_stream`]),
    /// or by a unary call when the leader's node has no stream (an older version).
    async fn forward_over_peer_port(
        &self,
        leader: u64,
        req: &LeaderRequest,
        timeout: Duration,
    ) -> Result<LeaderResponse, ForwardFailure> {
        let link = self
            .forward_link(leader, || {
                let client = self.peer_client(leader)?;
                let addr = self.node_addrs(leader).ok_or_else(errors::no_leader)?.peer;
                Ok((addr, client))
            })
            .map_err(ForwardFailure::Refused)?;
        if !link.unsupported() {
            match link.call(req, timeout).await {
                Err(ForwardFailure::NotSent) if link.unsupported() => {}
                other => return other,
            }
        }
        self.forward_unary(leader, req, timeout).await
    }

    async fn forward_unary(
        &self,
        leader: u64,
        req: &LeaderRequest,
        timeout: Duration,
    ) -> Result<LeaderResponse, ForwardFailure> {
        let mut client = self.peer_client(leader).map_err(ForwardFailure::Refused)?;
        let data = encode(req).map_err(|e| ForwardFailure::Refused(errors::internal(e)))?;
        let mut request = tonic::Request::new(RaftMessage { data });
        request.set_timeout(timeout);
        let resp = client.forward(request).await.map_err(|s| match s.code() {
            _ if never_sent(&s) => ForwardFailure::NotSent,
            Code::Unavailable | Code::Cancelled | Code::Unknown => ForwardFailure::Lost,
            _ => ForwardFailure::Refused(s),
        })?;
        decode(&resp.into_inner().data).map_err(|e| ForwardFailure::Refused(errors::internal(e)))
    }
}

/// Whether a forwarding failure happened before the request left this node (the leader refused
/// the connection), so retrying cannot apply a write twice.
pub(super) fn never_sent(s: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(s);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

fn is_retryable(s: &Status) -> bool {
    s.code() == Code::Unavailable
        && (s.message() == errors::no_leader().message()
            || s.message() == errors::leader_changed().message())
}
