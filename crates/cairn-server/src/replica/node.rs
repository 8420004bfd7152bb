//! One node's replica — what every node has regardless of leadership: the Raft handle, the
//! applied state, and the two paths every handler uses — [`Replica::leader_call`] for what only
//! the leader decides (writes, read index, lease renewal, membership) and
//! [`Replica::read_barrier`] before a linearizable read — and the term fence of leader writes
//! ([`Replica::propose_in_term`]).
//!
//! A follower never tells a client to go elsewhere: it forwards to the leader over the peer port,
//! at most one hop ([`crate::replica::forward`]); membership changes served on the leader are in
//! `membership.rs`.

use crate::clock::SharedClock;
use crate::errors;
use crate::metrics::Metrics;
pub use crate::replica::forward::{ForwardFailure, ForwardFuture, PeerLink};
use crate::replica::forward_stream::ForwardLink;
use crate::replica::lease_keeper::LeaseKeeper;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use crate::replica::term::LeaderTerm;
use crate::ServerConfig;
use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_store::command::Outcome;
use cairn_store::network::PeerFaults;
use cairn_store::state_machine::TERM_ENDED_MESSAGE;
use cairn_store::{Command, CommandResult, Raft, StateMachineHandle};
use cairn_types::limits::FORWARD_INFLIGHT_MAX;
use cairn_types::NodeAddrs;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::LinearizableReadError;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{LinearizerOption, ReadPolicy};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Leader-only requests the replica forwards but cannot answer itself, because they need the
/// leader's services: `Meta` (a DDL run as a procedure) and `ListNodes` (the heartbeat hub's
/// registry). The leader layer installs one on every node
/// ([`Replica::install_leader_services`]); the replica hands it those requests when this node is
/// asked as leader, locally or over the peer port.
///
/// Correctness requirements: answer only while this node leads, else with
/// [`errors::leader_changed`] (which the forwarding side retries); never forward.
#[tonic::async_trait]
pub trait LeaderRequestHandler: Send + Sync {
    async fn serve(&self, req: LeaderRequest) -> Result<LeaderResponse, Status>;
}

/// The replica of one node: Raft, the applied state, proposing and forwarding.
pub struct Replica {
    pub id: u64,
    pub raft: Raft,
    pub sm: StateMachineHandle,
    pub config: ServerConfig,
    pub metrics: Metrics,
    pub leases: LeaseKeeper,
    pub(super) peers: Mutex<HashMap<u64, (String, RaftPeerClient<Channel>)>>,
    /// The forwarding stream to each node this one has forwarded to.
    pub(super) forward_links: Mutex<HashMap<u64, ForwardLink>>,
    pub(super) forward_slots: Semaphore,
    /// When a leader last replicated to (or heartbeated) this node.
    last_leader_contact: Mutex<Option<Instant>>,
    /// The leader term whose services run now; set and cleared by the leader lifecycle only.
    leadership: watch::Sender<Option<LeaderTerm>>,
    /// Links to peers cut by a test or the simulation (shared with the Raft network).
    pub peer_faults: PeerFaults,
    /// The clock leader services decide by.
    pub clock: SharedClock,
    /// Where forwarded requests go instead of the peer port (the deterministic simulation).
    pub(super) peer_link: OnceLock<Arc<dyn PeerLink>>,
    /// Who answers `Meta` and `ListNodes` (the leader layer); set once, when the node is built.
    leader_services: OnceLock<Weak<dyn LeaderRequestHandler>>,
}

impl Replica {
    pub fn new(
        id: u64,
        raft: Raft,
        sm: StateMachineHandle,
        config: ServerConfig,
        peer_faults: PeerFaults,
        clock: SharedClock,
    ) -> Self {
        Self {
            id,
            raft,
            sm,
            config,
            metrics: Metrics::default(),
            leases: LeaseKeeper::new(clock.clone()),
            peers: Mutex::new(HashMap::new()),
            forward_links: Mutex::new(HashMap::new()),
            forward_slots: Semaphore::new(FORWARD_INFLIGHT_MAX),
            last_leader_contact: Mutex::new(None),
            leadership: watch::Sender::new(None),
            peer_faults,
            clock,
            peer_link: OnceLock::new(),
            leader_services: OnceLock::new(),
        }
    }

    /// Installs who answers `Meta` and `ListNodes` on this node (the leader layer, once).
    pub fn install_leader_services(&self, handler: Weak<dyn LeaderRequestHandler>) {
        assert!(
            self.leader_services.set(handler).is_ok(),
            "leader services are installed once"
        );
    }

    /// The leader term this node's leader services run in, if any.
    pub fn leader_term(&self) -> Option<LeaderTerm> {
        self.leadership
            .borrow()
            .clone()
            .filter(LeaderTerm::is_current)
    }

    /// Whether this node's leader services run in Raft term `term` now.
    pub fn leads_term(&self, term: u64) -> bool {
        self.leader_term().is_some_and(|t| t.term() == term)
    }

    /// Set by the leader lifecycle when a term's services start (Some) and end (None).
    pub(crate) fn set_leader_term(&self, term: Option<LeaderTerm>) {
        self.leadership.send_replace(term);
    }

    /// How long a leader stays sure of its leadership after a quorum last acknowledged it:
    /// openraft's leader lease, its maximal election timeout (followers refuse to vote for anyone
    /// else that long after they last heard from the leader).
    pub fn leader_lease(&self) -> Duration {
        Duration::from_millis(self.config.raft_election_timeouts_ms().1)
    }

    /// Whether this node, as leader, has gone longer than a leader lease without a quorum's
    /// acknowledgement: it may be cut off while the others elect a new leader, so it must not act
    /// or answer as leader. Never true for a single voter, nor before the first acknowledgement
    /// of a new term (winning the vote was a quorum's word).
    pub fn quorum_contact_lapsed(&self) -> bool {
        // Read in place: this runs on every request the leader serves, and a clone of the
        // metrics copies the replication map.
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.membership_config.membership().voter_ids().count() <= 1 {
            return false;
        }
        m.last_quorum_acked
            .is_some_and(|t| openraft::Instant::elapsed(&*t) > self.leader_lease())
    }

    /// Confirms that this node still leads, by a quorum's acknowledgement within a leader lease
    /// (one heartbeat round when the last one is older), and returns its leader term. A leader cut
    /// off from a quorum gets [`errors::leadership_unconfirmed`] at most a leader lease after it
    /// last heard from one: what it would answer could contradict the leader elected meanwhile.
    pub async fn confirm_leadership(&self) -> Result<LeaderTerm, Status> {
        let term = self.leader_term().ok_or_else(errors::leader_changed)?;
        let option = LinearizerOption::new(None, true).with_wait_timeout(Duration::from_millis(
            LEADERSHIP_CONFIRM_WAIT_HEARTBEATS * self.config.heartbeat_interval_ms,
        ));
        match self.raft.get_read_linearizer(option).await {
            Ok(l)
                if l.read_log_id().log_id().leader_id.term == term.term() && term.is_current() =>
            {
                Ok(term)
            }
            Ok(_) | Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => {
                Err(errors::leader_changed())
            }
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(_))) => {
                Err(errors::leadership_unconfirmed())
            }
            Err(RaftError::Fatal(f)) => Err(errors::internal(format!("raft stopped: {f}"))),
        }
    }

    /// Proposes `cmd` as a decision of leader term `term`: here, never forwarded, refused at once
    /// if this node's services no longer run in `term`, and refused by the state machine if the
    /// entry was appended in another term (see `cairn_store::Command::Fenced`). Every write of a
    /// leader service goes through here.
    pub async fn propose_in_term(&self, term: u64, cmd: Command) -> Result<CommandResult, Status> {
        if !self.leads_term(term) {
            return Err(errors::leader_changed());
        }
        let fenced = Command::Fenced {
            term,
            cmd: Box::new(cmd),
        };
        let result = self.propose_local(fenced).await?;
        match &result.outcome {
            Outcome::Rejected(r) if r.message == TERM_ENDED_MESSAGE => {
                Err(errors::leader_changed())
            }
            _ => Ok(result),
        }
    }

    /// The leader this node currently follows, if any.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Records that a leader just reached this node (an AppendEntries arrived).
    pub fn touch_leader_contact(&self) {
        *self
            .last_leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// How long a leader may stay silent before this node stops believing in it: two maximal
    /// election timeouts.
    pub fn leader_silence_max(&self) -> Duration {
        Duration::from_millis(4 * self.config.election_timeout_ms)
    }

    /// The leader, but only if it is live as far as this node can tell: the leader itself must
    /// have heard from a quorum recently, a follower must have heard from the leader recently.
    /// This is what Status and /health report; an isolated node reports no leader.
    pub fn live_leader(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow_watched().clone();
        let leader = m.current_leader?;
        let max = self.leader_silence_max();
        let fresh = if leader == self.id {
            // A single voter is its own quorum.
            m.membership_config.membership().voter_ids().count() == 1
                || m.last_quorum_acked
                    .is_some_and(|t| openraft::Instant::elapsed(&*t) <= max)
        } else {
            self.last_leader_contact
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some_and(|t| t.elapsed() <= max)
        };
        fresh.then_some(leader)
    }

    /// This node's current Raft term.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// The cluster's id: random, chosen by its first leader and the same on every member for
    /// the cluster's life; 0 on a node that has not applied it yet (the first moments of a new
    /// cluster).
    pub fn cluster_id(&self) -> u64 {
        // Without the state lock: callers build headers while they hold it.
        self.sm.cluster_id()
    }

    /// The etcd response header for a response at `revision`.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.id,
            revision,
            raft_term: self.term(),
        })
    }

    /// Current store revision.
    pub fn revision(&self) -> i64 {
        self.sm.read().kv.revision()
    }

    /// Where `id` listens, from the replicated membership and announced addresses.
    pub fn node_addrs(&self, id: u64) -> Option<NodeAddrs> {
        let s = self.sm.read();
        let mut addrs = s.membership.membership().get_node(&id).cloned()?;
        if let Some((client, http)) = s.node_addrs.get(&id) {
            addrs.client = client.clone();
            addrs.http = http.clone();
        }
        Some(addrs)
    }

    pub(super) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    /// Serves a leader-only request on this node, which must be the leader (else "leader changed",
    /// which the forwarding side retries).
    pub async fn serve_as_leader(&self, req: LeaderRequest) -> Result<LeaderResponse, Status> {
        match req {
            LeaderRequest::Write(cmd) => self.propose_local(cmd).await.map(LeaderResponse::Written),
            LeaderRequest::ReadIndex => {
                let linearizer = self
                    .raft
                    .get_read_linearizer(ReadPolicy::ReadIndex)
                    .await
                    .map_err(|_| errors::leader_changed())?;
                let index = linearizer.read_log_id().log_id().index;
                Ok(LeaderResponse::ReadIndex(index))
            }
            LeaderRequest::LeaseKeepAlive { id } => {
                // Renewed only while leadership is confirmed: a deposed or cut-off leader must
                // not tell a client its lease lives while the new leader may expire it.
                self.confirm_leadership().await?;
                let ttl = self.sm.read().kv.lease_ttl(id);
                let ttl = match ttl {
                    Some(ttl) => {
                        self.leases.renew(id, ttl);
                        ttl
                    }
                    None => 0,
                };
                Ok(LeaderResponse::KeepAlive { ttl })
            }
            LeaderRequest::LeaseTimeToLive { id } => {
                self.confirm_leadership().await?;
                let granted = self.sm.read().kv.lease_ttl(id);
                Ok(LeaderResponse::TimeToLive(
                    granted.map(|g| (self.leases.remaining_secs(id).unwrap_or(g), g)),
                ))
            }
            LeaderRequest::MemberAdd { peer_addr, learner } => {
                self.member_add(peer_addr, learner).await
            }
            LeaderRequest::MemberRemove { id } => self.member_remove(id).await,
            LeaderRequest::MemberPromote { id } => self.member_promote(id).await,
            LeaderRequest::MemberUpdate { id, peer_addr } => {
                self.member_update(id, peer_addr).await
            }
            LeaderRequest::TransferLeader { to } => {
                self.require_leader()?;
                if to == self.id {
                    return Ok(LeaderResponse::Done);
                }
                if !self
                    .sm
                    .read()
                    .membership
                    .membership()
                    .voter_ids()
                    .any(|v| v == to)
                {
                    return Err(Status::new(
                        Code::FailedPrecondition,
                        format!("cairn: node {to} is not a voter and cannot lead"),
                    ));
                }
                self.raft
                    .trigger()
                    .transfer_leader(to)
                    .await
                    .map_err(errors::internal)?;
                Ok(LeaderResponse::Done)
            }
            LeaderRequest::Meta { .. }
            | LeaderRequest::ListNodes { .. }
            | LeaderRequest::GetRegion { .. }
            | LeaderRequest::Scheduling(_) => {
                let handler = self
                    .leader_services
                    .get()
                    .and_then(Weak::upgrade)
                    .ok_or_else(|| errors::internal("node is shutting down"))?;
                handler.serve(req).await
            }
        }
    }

    pub(crate) fn require_leader(&self) -> Result<(), Status> {
        if self.raft.is_leader() {
            Ok(())
        } else {
            Err(errors::leader_changed())
        }
    }

    /// Proposes on this node, which must lead; never forwarded.
    pub(crate) async fn propose_local(&self, cmd: Command) -> Result<CommandResult, Status> {
        let cmd = match cmd {
            Command::LeaseGrant { id: 0, ttl_secs } => Command::LeaseGrant {
                id: self.new_lease_id(),
                ttl_secs,
            },
            other => other,
        };
        let granted = match &cmd {
            Command::LeaseGrant { id, ttl_secs } => Some((*id, *ttl_secs)),
            _ => None,
        };
        self.metrics.proposals.fetch_add(1, Ordering::Relaxed);
        let proposing = std::time::Instant::now();
        let result = tokio::time::timeout(self.request_timeout(), self.raft.client_write(cmd))
            .await
            .map_err(|_| errors::timeout())?;
        match result {
            Ok(resp) => {
                self.metrics.proposal_latency.record(proposing.elapsed());
                if let (Some((id, ttl)), Outcome::LeaseGranted { .. }) =
                    (granted, &resp.data.outcome)
                {
                    self.leases.renew(id, ttl);
                }
                Ok(resp.data)
            }
            Err(e) => {
                self.metrics
                    .proposals_failed
                    .fetch_add(1, Ordering::Relaxed);
                Err(write_error(e))
            }
        }
    }

    fn new_lease_id(&self) -> i64 {
        let s = self.sm.read();
        loop {
            // Positive, never 0, unique among live leases.
            // From the thread's generator, which the simulation seeds.
            let id = (cairn_store::runtime::random_u64() >> 2) as i64;
            if id != 0 && !s.kv.lease_exists(id) {
                return id;
            }
        }
    }

    /// Waits until this node's state reflects every write acknowledged before the call.
    pub async fn read_barrier(&self) -> Result<(), Status> {
        if self.raft.is_leader() {
            let r = tokio::time::timeout(
                self.request_timeout(),
                self.raft.ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            .map_err(|_| errors::timeout())?;
            if r.is_ok() {
                return Ok(());
            }
        }
        let index = match self.leader_call(LeaderRequest::ReadIndex).await? {
            LeaderResponse::ReadIndex(i) => i,
            other => return Err(errors::internal(format!("unexpected answer {other:?}"))),
        };
        let mut applied = self.sm.applied_index();
        tokio::time::timeout(self.request_timeout(), applied.wait_for(|a| *a >= index))
            .await
            .map_err(|_| errors::timeout())?
            .map_err(|_| errors::internal("state machine stopped"))?;
        Ok(())
    }

    /// Proposes a command through the leader and returns its result, mapping refusals to etcd errors.
    pub async fn propose(&self, cmd: Command) -> Result<CommandResult, Status> {
        match self.leader_call(LeaderRequest::Write(cmd)).await? {
            LeaderResponse::Written(r) => match r.outcome {
                Outcome::Rejected(reason) => Err(errors::rejected(reason)),
                _ => Ok(r),
            },
            other => Err(errors::internal(format!("unexpected answer {other:?}"))),
        }
    }
}

/// Heartbeat intervals a lease renewal waits for a quorum's acknowledgement when the last one is
/// older than a leader lease.
const LEADERSHIP_CONFIRM_WAIT_HEARTBEATS: u64 = 3;

pub(super) fn write_error(
    e: RaftError<cairn_store::TypeConfig, ClientWriteError<cairn_store::TypeConfig>>,
) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => errors::leader_changed(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            Status::new(Code::FailedPrecondition, format!("cairn: {c}"))
        }
        RaftError::APIError(other) => {
            // The entry was appended, then dropped by a leader change: whether it commits is
            // unknown, so the caller must not blindly retry (etcd says "request timed out").
            tracing::debug!("write outcome unknown after a leader change: {other}");
            errors::timeout()
        }
        RaftError::Fatal(f) => errors::internal(format!("raft stopped: {f}")),
    }
}
