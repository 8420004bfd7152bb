//! etcd `Lock` service (v3lockpb): Lock and Unlock, as etcd's server-side `concurrency.Mutex`.
//!
//! Lock(name, lease) queues the key `name/<lease hex>` (attached to the lease) and returns once
//! no key under `name/` was created before it; Unlock(key) deletes the key. The lock is held as
//! long as the key exists, so it ends with Unlock or when the lease expires or is revoked. The
//! same lease locking the same name again gets the same key back (etcd's re-entry by session).
//!
//! **Fencing token.** The returned key's create revision (read it with a Range on the key, or
//! guard writes with `Compare(CreateRevision(key) == rev)`) increases strictly with every
//! acquisition of the same name: a holder that lost the lock without knowing it (a paused
//! process whose lease expired) carries a smaller revision than the current holder, so a
//! resource that remembers the highest revision it has seen can refuse the stale holder.
//!
//! While a Lock call waits, the server keeps its lease alive; if the lease or the key goes
//! away meanwhile, the call fails with etcd's "mutex: session is expired", and if the client goes
//! away, its key is withdrawn (see [`super::queue`]).

use crate::api::services::kv;
use crate::api::services::queue::{self, WaitError, Withdraw};
use crate::errors;
use crate::leader::node::Node;
use cairn_proto::etcdserverpb::{DeleteRangeRequest, RangeRequest};
use cairn_proto::v3lockpb::lock_server::Lock;
use cairn_proto::v3lockpb::{LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use prost::Message;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Code, Request, Response, Status};

/// etcd's `concurrency.ErrSessionExpired`: the waiter's key or lease is gone. etcd's lock server
/// returns the client library's plain error, which gRPC sends as `Unknown` with this text.
pub fn session_expired() -> Status {
    Status::new(Code::Unknown, "mutex: session is expired")
}

/// The etcd Lock service of one node.
pub struct LockService {
    node: Arc<Node>,
    waiters: Semaphore,
}

impl LockService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            waiters: Semaphore::new(queue::QUEUE_WAITERS_MAX),
        }
    }
}

/// Acquires the lock `name` for `lease`, waiting behind earlier holders.
pub async fn lock(node: &Arc<Node>, name: &[u8], lease: i64) -> Result<LockResponse, Status> {
    let ticket = queue::join(node, name, lease, b"").await?;
    let withdraw = Withdraw::new(node.clone(), &ticket);
    if ticket.first {
        withdraw.disarm();
        return Ok(LockResponse {
            header: node.header(ticket.revision),
            key: ticket.key,
        });
    }
    match queue::wait_until_first(node, &ticket).await {
        Ok(()) => {}
        Err(WaitError::KeyLost) => return Err(session_expired()),
        Err(WaitError::Failed(s)) => return Err(s),
    }
    // As etcd: confirm the key survived the wait; this read's header is the response's.
    let own = kv::range(
        node,
        &RangeRequest {
            key: ticket.key.clone(),
            keys_only: true,
            ..Default::default()
        },
    )
    .await?;
    if own.kvs.first().map(|kv| kv.create_revision) != Some(ticket.rev) {
        return Err(session_expired());
    }
    withdraw.disarm();
    Ok(LockResponse {
        header: own.header,
        key: ticket.key,
    })
}

/// Releases a lock by deleting its key (etcd deletes unconditionally).
pub async fn unlock(node: &Node, key: Vec<u8>) -> Result<UnlockResponse, Status> {
    let resp = kv::delete_range(
        node,
        DeleteRangeRequest {
            key,
            ..Default::default()
        },
    )
    .await?;
    Ok(UnlockResponse {
        header: resp.header,
    })
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Lock", async {
                let req = request.into_inner();
                kv::check_size(node, req.encoded_len())?;
                let _slot = self
                    .waiters
                    .try_acquire()
                    .map_err(|_| errors::too_many_requests("queue_waiters_max reached"))?;
                lock(node, &req.name, req.lease).await.map(Response::new)
            })
            .await
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Unlock", async {
                let req = request.into_inner();
                kv::check_size(node, req.encoded_len())?;
                unlock(node, req.key).await.map(Response::new)
            })
            .await
    }
}
