//! The wait queue behind etcd's Lock and Campaign: every session (lease) puts one key,
//! `name/<lease hex>`, under the name's prefix, and the session whose key has the lowest create
//! revision is first. A caller joins with one transaction, then waits until no key under the
//! prefix was created before its own (etcd's `waitDeletes`).
//!
//! Waiting follows the applied events rather than polling: the waiter subscribes while holding
//! the state's read lock, so no change falls between what it read and what it hears, and it
//! re-reads the state only when the key that blocks it or its own key changes (or when it lagged
//! behind the event broadcast, or a snapshot replaced the state). While it waits it keeps its
//! lease alive; it fails as soon as its own key or lease is gone.
//!
//! A call that ends without handing its key to the client — an error, or the client going away,
//! which drops the call's future — withdraws the key ([`Withdraw`]), as etcd's Mutex.Lock and
//! Election.Campaign do on failure: a key nobody waits for would block everyone queued behind
//! it until its lease expired.

use crate::api::services::{kv, lease};
use crate::errors;
use crate::leader::node::Node;
use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{
    request_op, response_op, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse,
};
use cairn_proto::mvccpb::Event;
use cairn_store::mvcc::{KvError, KvState};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::MissedTickBehavior;
use tonic::Status;

/// TTL of the lease granted when a Lock or Campaign names lease 0 (etcd's `defaultSessionTTL`).
pub const SESSION_TTL_SECS_DEFAULT: i64 = 60;
/// Most Lock (or Campaign) calls one node lets wait at once; more are refused as too many requests.
pub const QUEUE_WAITERS_MAX: usize = 10_000;
/// A waiter re-reads the state at least this often even if no event woke it. Events are the
/// mechanism; this only bounds the damage of a missed wake-up, should there ever be one.
pub const QUEUE_RECHECK_INTERVAL_MS: u64 = 5_000;
/// Shortest pause between two keep-alives a waiter sends for its lease (it aims at TTL / 3, as
/// etcd's client lessor does).
pub const QUEUE_KEEPALIVE_INTERVAL_MIN_MS: u64 = 500;

/// etcd's prefix of a lock or election `name`: `name + "/"`.
pub fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

/// The key session `lease` holds under `name`: `name/<lease in lower-case hex>`, as etcd's
/// `fmt.Sprintf("%s%x", pfx, lease)` (a negative lease prints as `-<hex>` there too).
pub fn queue_key(name: &[u8], lease: i64) -> Vec<u8> {
    let mut k = prefix_of(name);
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    k.extend_from_slice(hex.as_bytes());
    k
}

/// The end of the range holding every key that starts with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the keyspace.
    vec![0]
}

/// The oldest key under `prefix` (lowest create revision): the lock holder or election leader.
/// etcd's `Get(prefix, WithFirstCreate())`.
pub fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    }
}

/// Where a queued key stands in the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// No key under the prefix was created before ours: we hold the lock / lead.
    First,
    /// This key, the newest one created before ours, must go first.
    Behind(Vec<u8>),
    /// Our key is gone, or was deleted and created again (another incarnation).
    Lost,
}

/// Where `key`, created at `rev`, stands under `prefix` in `kv`.
pub fn standing(kv: &KvState, prefix: &[u8], key: &[u8], rev: i64) -> Result<Standing, KvError> {
    let own = kv.range(&RangeRequest {
        key: key.to_vec(),
        keys_only: true,
        ..Default::default()
    })?;
    if own.kvs.first().map(|kv| kv.create_revision) != Some(rev) {
        return Ok(Standing::Lost);
    }
    // etcd's waitDeletes: the newest key created before ours; once it goes, look again.
    let older = kv.range(&RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        max_create_revision: rev - 1,
        sort_order: SortOrder::Descend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        keys_only: true,
        ..Default::default()
    })?;
    Ok(match older.kvs.into_iter().next() {
        Some(kv) => Standing::Behind(kv.key),
        None => Standing::First,
    })
}

/// A session's place in the queue of one name, as the joining transaction left it.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub prefix: Vec<u8>,
    pub key: Vec<u8>,
    /// The session's lease (granted by the join when the caller named lease 0).
    pub lease: i64,
    /// The key's create revision: its place in the queue, and the fencing token.
    pub rev: i64,
    /// The key's value after the join: the caller's if it created the key, else the one it had.
    pub value: Vec<u8>,
    /// Whether the key was already the oldest under the prefix right after the join.
    pub first: bool,
    /// The revision of the joining transaction (etcd's header when nobody was ahead).
    pub revision: i64,
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

fn create_revision_is(key: &[u8], rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(TargetUnion::CreateRevision(rev)),
    }
}

fn range_of(resp: &TxnResponse, i: usize) -> Option<&RangeResponse> {
    match resp.responses.get(i).and_then(|r| r.response.as_ref()) {
        Some(response_op::Response::ResponseRange(r)) => Some(r),
        _ => None,
    }
}

/// The lease a session uses: the caller's, or for lease 0 a new one with etcd's session TTL
/// (etcd's server-side `NewSession` grants one then too).
async fn session_lease(node: &Node, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let (id, _ttl) = lease::grant(node, 0, SESSION_TTL_SECS_DEFAULT).await?;
    Ok(id)
}

/// Puts the session's key under `name` unless it exists (then keeps it and its value), in one
/// transaction that also reads the current first key. A lease that does not exist fails with
/// etcd's lease-not-found error.
pub async fn join(node: &Node, name: &[u8], lease: i64, value: &[u8]) -> Result<Ticket, Status> {
    let lease = session_lease(node, lease).await?;
    let prefix = prefix_of(name);
    let key = queue_key(name, lease);
    let owner = op(request_op::Request::RequestRange(first_created(&prefix)));
    let txn = TxnRequest {
        compare: vec![create_revision_is(&key, 0)],
        success: vec![
            op(request_op::Request::RequestPut(PutRequest {
                key: key.clone(),
                value: value.to_vec(),
                lease,
                ..Default::default()
            })),
            owner.clone(),
        ],
        failure: vec![
            op(request_op::Request::RequestRange(RangeRequest {
                key: key.clone(),
                ..Default::default()
            })),
            owner,
        ],
    };
    let resp = kv::txn(node, &txn).await?;
    let revision = resp.header.as_ref().map_or(0, |h| h.revision);
    let (rev, value) = if resp.succeeded {
        (revision, value.to_vec())
    } else {
        let existing = range_of(&resp, 0)
            .and_then(|r| r.kvs.first())
            .ok_or_else(|| errors::internal("queue key vanished inside its own transaction"))?;
        (existing.create_revision, existing.value.clone())
    };
    let owner_rev = range_of(&resp, 1)
        .and_then(|r| r.kvs.first())
        .map(|kv| kv.create_revision);
    Ok(Ticket {
        first: owner_rev.is_none_or(|r| r == rev),
        prefix,
        key,
        lease,
        rev,
        value,
        revision,
    })
}

/// Runs `then` on `key` if it still is the incarnation created at `rev`; `succeeded` says whether.
pub async fn if_created_at(
    node: &Node,
    key: &[u8],
    rev: i64,
    then: request_op::Request,
) -> Result<TxnResponse, Status> {
    let txn = TxnRequest {
        compare: vec![create_revision_is(key, rev)],
        success: vec![op(then)],
        failure: Vec::new(),
    };
    kv::txn(node, &txn).await
}

/// Deletes `key` if it is still the incarnation created at `rev` (never a newer one).
pub async fn delete_if_created_at(
    node: &Node,
    key: &[u8],
    rev: i64,
) -> Result<TxnResponse, Status> {
    let del = request_op::Request::RequestDeleteRange(DeleteRangeRequest {
        key: key.to_vec(),
        ..Default::default()
    });
    if_created_at(node, key, rev, del).await
}

/// Why waiting for the front of the queue ended without getting there.
#[derive(Debug)]
pub enum WaitError {
    /// The session's key or lease is gone (expired, revoked, deleted).
    KeyLost,
    /// The cluster could not answer (no leader, timeout, stopped).
    Failed(Status),
}

fn touches(e: &Event, blocker: &[u8], own: &[u8]) -> bool {
    e.kv.as_ref()
        .is_some_and(|kv| kv.key == blocker || kv.key == own)
}

fn read_standing(node: &Node, t: &Ticket) -> Result<Standing, WaitError> {
    let s = node.sm.read();
    standing(&s.kv, &t.prefix, &t.key, t.rev).map_err(|e| WaitError::Failed(e.to_status()))
}

/// Waits until no key under the ticket's prefix was created before its key, keeping its lease
/// alive meanwhile. Returns when the ticket is first; the state read then is linearizable.
pub async fn wait_until_first(node: &Node, t: &Ticket) -> Result<(), WaitError> {
    // Our key may not be applied here yet (a follower); the barrier also makes the final read
    // linearizable: older keys are never created later, so "none left" stays true once seen.
    node.read_barrier().await.map_err(WaitError::Failed)?;
    let (mut events, mut now, ttl_secs) = {
        let s = node.sm.read();
        let ttl = s.kv.lease_ttl(t.lease);
        let now =
            standing(&s.kv, &t.prefix, &t.key, t.rev).map_err(|e| WaitError::Failed(e.to_status()));
        (node.sm.subscribe(), now, ttl)
    };
    let Some(ttl_secs) = ttl_secs else {
        return Err(WaitError::KeyLost);
    };
    let keepalive_ms =
        (u64::try_from(ttl_secs).unwrap_or(0) * 1000 / 3).max(QUEUE_KEEPALIVE_INTERVAL_MIN_MS);
    let mut keepalive = tokio::time::interval(Duration::from_millis(keepalive_ms));
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let recheck_every = Duration::from_millis(QUEUE_RECHECK_INTERVAL_MS);
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + recheck_every, recheck_every);
    loop {
        let blocker = match now? {
            Standing::First => return Ok(()),
            Standing::Lost => return Err(WaitError::KeyLost),
            Standing::Behind(b) => b,
        };
        // Biased, timers first: a steady stream of events must not starve the keep-alive (and
        // the simulation needs the same choice in every run of a seed).
        let reread = tokio::select! {
            biased;
            _ = keepalive.tick() => match lease::keep_alive_once(node, t.lease).await {
                Ok(0) => return Err(WaitError::KeyLost),
                Ok(_) => false,
                Err(e) => {
                    // A leader change or timeout: the lease may still be alive; try next tick.
                    tracing::debug!(lease = t.lease, "queue keep-alive failed: {e}");
                    false
                }
            },
            _ = recheck.tick() => true,
            batch = events.recv() => match batch {
                Ok(b) => b.resync || b.events.iter().any(|e| touches(e, &blocker, &t.key)),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => {
                    return Err(WaitError::Failed(errors::internal("state machine stopped")));
                }
            },
        };
        now = if reread {
            read_standing(node, t)
        } else {
            Ok(Standing::Behind(blocker))
        };
    }
}

/// Withdraws a queued key when dropped armed: the call that joined ended without handing the key
/// to its client. The delete runs on a task of its own, since a dropped future cannot await.
pub struct Withdraw {
    node: Arc<Node>,
    key: Vec<u8>,
    rev: i64,
    armed: bool,
}

impl Withdraw {
    pub fn new(node: Arc<Node>, t: &Ticket) -> Self {
        Self {
            node,
            key: t.key.clone(),
            rev: t.rev,
            armed: true,
        }
    }

    /// The key now belongs to the client: leave it.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // The runtime is shutting down; the lease will clean up.
        };
        let (node, key, rev) = (self.node.clone(), std::mem::take(&mut self.key), self.rev);
        rt.spawn(async move {
            if let Err(e) = delete_if_created_at(&node, &key, rev).await {
                tracing::debug!("withdrawing queue key failed, its lease will remove it: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(kv: &mut KvState, ops: Vec<RequestOp>) {
        let txn = TxnRequest {
            compare: Vec::new(),
            success: ops,
            failure: Vec::new(),
        };
        kv.apply_txn(&txn).expect("txn applies");
    }

    fn put(kv: &mut KvState, key: &[u8]) -> i64 {
        apply(
            kv,
            vec![op(request_op::Request::RequestPut(PutRequest {
                key: key.to_vec(),
                ..Default::default()
            }))],
        );
        kv.revision()
    }

    fn delete(kv: &mut KvState, key: &[u8]) {
        apply(
            kv,
            vec![op(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                },
            ))],
        );
    }

    #[test]
    fn keys_and_prefixes_match_etcd() {
        assert_eq!(queue_key(b"job", 0x1f2e), b"job/1f2e".to_vec());
        assert_eq!(queue_key(b"job", -1), b"job/-1".to_vec());
        assert_eq!(prefix_end(b"job/"), b"job0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn waits_behind_the_newest_older_key_only() {
        let mut kv = KvState::new();
        let a = put(&mut kv, b"l/a");
        let b = put(&mut kv, b"l/b");
        put(&mut kv, b"l0"); // outside the prefix
        let c = put(&mut kv, b"l/c");
        let st = |kv: &KvState, key: &[u8], rev| standing(kv, b"l/", key, rev).unwrap();
        assert_eq!(st(&kv, b"l/a", a), Standing::First);
        assert_eq!(st(&kv, b"l/b", b), Standing::Behind(b"l/a".to_vec()));
        // etcd's waitDeletes waits on the newest older key, not the holder.
        assert_eq!(st(&kv, b"l/c", c), Standing::Behind(b"l/b".to_vec()));
        delete(&mut kv, b"l/b");
        assert_eq!(st(&kv, b"l/c", c), Standing::Behind(b"l/a".to_vec()));
        delete(&mut kv, b"l/a");
        assert_eq!(st(&kv, b"l/c", c), Standing::First);
    }

    #[test]
    fn a_deleted_or_recreated_key_is_lost() {
        let mut kv = KvState::new();
        put(&mut kv, b"l/a");
        let b = put(&mut kv, b"l/b");
        delete(&mut kv, b"l/b");
        assert_eq!(standing(&kv, b"l/", b"l/b", b).unwrap(), Standing::Lost);
        put(&mut kv, b"l/b");
        assert_eq!(standing(&kv, b"l/", b"l/b", b).unwrap(), Standing::Lost);
    }

    #[test]
    fn first_created_finds_the_holder() {
        let mut kv = KvState::new();
        put(&mut kv, b"l/z");
        put(&mut kv, b"l/a");
        let r = kv.range(&first_created(b"l/")).unwrap();
        assert_eq!(r.kvs.len(), 1);
        assert_eq!(r.kvs[0].key, b"l/z".to_vec());
    }
}
