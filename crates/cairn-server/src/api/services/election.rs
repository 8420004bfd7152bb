//! etcd `Election` service (v3electionpb): Campaign, Proclaim, Leader, Observe, Resign, as etcd's
//! server-side `concurrency.Election`.
//!
//! Candidates queue under `name/` exactly like lock waiters ([`super::queue`]); the leader is the
//! key with the lowest create revision, and its value is what the leader proclaims. A
//! [`LeaderKey`] (name, key, create revision, lease) identifies one term of leadership: Proclaim
//! and Resign act only while the key is still the incarnation created at that revision.
//!
//! etcd's election server returns the client library's plain errors, which gRPC sends as
//! `Unknown` with the error's text; clients (jetcd, etcd's own) match on that text, so these
//! errors keep etcd's code and message exactly.

use crate::api::services::kv;
use crate::api::services::queue::{self, WaitError, Withdraw};
use crate::leader::node::Node;
use cairn_proto::etcdserverpb::{request_op, PutRequest, ResponseHeader};
use cairn_proto::mvccpb::KeyValue;
use cairn_proto::v3electionpb::election_server::Election;
use cairn_proto::v3electionpb::{
    CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest,
    ProclaimResponse, ResignRequest, ResignResponse,
};
use futures::Stream;
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

/// Most Observe streams one node serves at once.
pub const OBSERVE_STREAMS_MAX: usize = 10_000;
/// Leader updates buffered per Observe stream; a slow reader holds its observer back (it then
/// skips to the newest leader value, which etcd's Observe contract allows).
pub const OBSERVE_BUFFER_MAX: usize = 16;

/// etcd's `ErrElectionNotLeader`: the leader key is gone or belongs to another term.
pub fn not_leader() -> Status {
    Status::new(Code::Unknown, "election: not leader")
}

/// etcd's `ErrElectionNoLeader`: nobody campaigns on this name.
pub fn no_leader() -> Status {
    Status::new(Code::Unknown, "election: no leader")
}

/// etcd's `ErrMissingLeaderKey`: Proclaim or Resign without a leader key.
pub fn missing_leader_key() -> Status {
    Status::new(Code::Unknown, "\"leader\" field must be provided")
}

/// The etcd Election service of one node.
pub struct ElectionService {
    node: Arc<Node>,
    waiters: Semaphore,
    observers: Arc<Semaphore>,
}

impl ElectionService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            waiters: Semaphore::new(queue::QUEUE_WAITERS_MAX),
            observers: Arc::new(Semaphore::new(OBSERVE_STREAMS_MAX)),
        }
    }
}

/// Puts `value` on the leader key if it is still the incarnation created at `rev`.
async fn proclaim_at(
    node: &Node,
    key: &[u8],
    rev: i64,
    lease: i64,
    value: &[u8],
) -> Result<Option<ResponseHeader>, Status> {
    let put = request_op::Request::RequestPut(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease,
        ..Default::default()
    });
    let resp = queue::if_created_at(node, key, rev, put).await?;
    if !resp.succeeded {
        return Err(not_leader());
    }
    Ok(resp.header)
}

/// Waits to lead `name` with `lease`, publishing `value`.
pub async fn campaign(
    node: &Arc<Node>,
    name: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<CampaignResponse, Status> {
    let ticket = queue::join(node, name, lease, value).await?;
    let withdraw = Withdraw::new(node.clone(), &ticket);
    if ticket.value != value {
        // The session campaigned before with another value: as etcd, proclaim the new one now.
        proclaim_at(node, &ticket.key, ticket.rev, ticket.lease, value).await?;
    }
    if !ticket.first {
        match queue::wait_until_first(node, &ticket).await {
            Ok(()) => {}
            // etcd would go on waiting and report a leadership whose key is gone; say so now.
            Err(WaitError::KeyLost) => return Err(not_leader()),
            Err(WaitError::Failed(s)) => return Err(s),
        }
    }
    withdraw.disarm();
    Ok(CampaignResponse {
        // etcd answers with the header of the joining transaction, even after a wait.
        header: node.header(ticket.revision),
        leader: Some(LeaderKey {
            name: name.to_vec(),
            key: ticket.key,
            rev: ticket.rev,
            lease: ticket.lease,
        }),
    })
}

/// The current leader's key-value of `name`, read linearizably.
pub async fn leader(node: &Node, name: &[u8]) -> Result<LeaderResponse, Status> {
    let resp = kv::range(node, &queue::first_created(&queue::prefix_of(name))).await?;
    let kv = resp.kvs.into_iter().next().ok_or_else(no_leader)?;
    Ok(LeaderResponse {
        header: resp.header,
        kv: Some(kv),
    })
}

/// Gives up leadership: deletes the leader key if it is still this term's. As etcd, a key that
/// is already gone is no error.
pub async fn resign(node: &Node, leader: &LeaderKey) -> Result<ResignResponse, Status> {
    let resp = queue::delete_if_created_at(node, &leader.key, leader.rev).await?;
    Ok(ResignResponse {
        header: resp.header,
    })
}

/// The leader of `prefix` in the applied state, with the revision it was read at.
fn current_leader(node: &Node, prefix: &[u8]) -> Result<(Option<KeyValue>, i64), Status> {
    let s = node.sm.read();
    let r =
        s.kv.range(&queue::first_created(prefix))
            .map_err(|e| e.to_status())?;
    Ok((r.kvs.into_iter().next(), s.kv.revision()))
}

type ObserveItem = Result<LeaderResponse, Status>;

/// Streams the leader of `prefix` to `tx`: the current one, then every new leader and every
/// value it proclaims, until the client goes away. Nothing is sent while there is no leader.
async fn observe(node: Arc<Node>, prefix: Vec<u8>, tx: mpsc::Sender<ObserveItem>) {
    if let Err(s) = node.read_barrier().await {
        let _ = tx.send(Err(s)).await;
        return;
    }
    // Subscribed before the first read: whatever changes after that read is heard.
    let mut events = node.sm.subscribe();
    let every = Duration::from_millis(queue::QUEUE_RECHECK_INTERVAL_MS);
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut sent: Option<(Vec<u8>, i64)> = None;
    let mut reread = true;
    loop {
        if reread {
            match current_leader(&node, &prefix) {
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
                Ok((Some(kv), revision)) => {
                    let id = (kv.key.clone(), kv.mod_revision);
                    if sent.as_ref() != Some(&id) {
                        sent = Some(id);
                        let resp = LeaderResponse {
                            header: node.header(revision),
                            kv: Some(kv),
                        };
                        if tx.send(Ok(resp)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok((None, _)) => {}
            }
        }
        reread = tokio::select! {
            _ = tx.closed() => return,
            batch = events.recv() => match batch {
                Ok(b) => b.resync || b.events.iter().any(|e| {
                    e.kv.as_ref().is_some_and(|kv| kv.key.starts_with(&prefix))
                }),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
            _ = recheck.tick() => true,
        };
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Campaign", async {
                let req = request.into_inner();
                kv::check_size(node, req.encoded_len())?;
                let _slot = self
                    .waiters
                    .try_acquire()
                    .map_err(|_| crate::errors::too_many_requests("queue_waiters_max reached"))?;
                campaign(node, &req.name, req.lease, &req.value)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Proclaim", async {
                let req = request.into_inner();
                kv::check_size(node, req.encoded_len())?;
                let l = req.leader.ok_or_else(missing_leader_key)?;
                let header = proclaim_at(node, &l.key, l.rev, l.lease, &req.value).await?;
                Ok(Response::new(ProclaimResponse { header }))
            })
            .await
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Leader", async {
                let req = request.into_inner();
                leader(node, &req.name).await.map(Response::new)
            })
            .await
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = ObserveItem> + Send + 'static>>;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let permit = self
            .observers
            .clone()
            .try_acquire_owned()
            .map_err(|_| crate::errors::too_many_requests("observe_streams_max reached"))?;
        let prefix = queue::prefix_of(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(OBSERVE_BUFFER_MAX);
        let node = self.node.clone();
        tokio::spawn(async move {
            observe(node, prefix, tx).await;
            drop(permit);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Resign", async {
                let req = request.into_inner();
                let l = req.leader.ok_or_else(missing_leader_key)?;
                resign(node, &l).await.map(Response::new)
            })
            .await
    }
}
