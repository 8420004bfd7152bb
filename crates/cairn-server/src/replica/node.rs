//! One node's replica — what every node has regardless of leadership: the Raft handle, the
//! applied state, and the two paths every handler uses — [`Replica::leader_call`] for what only
//! the leader decides (writes, read index, lease renewal, membership) and
//! [`Replica::read_barrier`] before a linearizable read — and the term fence of leader writes
//! ([`Replica::propose_in_term`]).
//!
//! A follower never tells a client to go elsewhere: it forwards to the leader over the peer port,
//! at most one hop; if the leader moved meanwhile, the call is retried within the request timeout.

use crate::clock::{SharedClock, TokioClock};
use crate::errors;
use crate::metrics::Metrics;
use crate::replica::lease_keeper::LeaseKeeper;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use crate::replica::term::LeaderTerm;
use crate::ServerConfig;
use cairn_proto::etcdserverpb::ResponseHeader;
use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_proto::raftpb::RaftMessage;
use cairn_store::command::Outcome;
use cairn_store::network::{decode, encode, peer_channel, PeerFaults};
use cairn_store::state_machine::TERM_ENDED_MESSAGE;
use cairn_store::{Command, CommandResult, Raft, StateMachineHandle};
use cairn_types::limits::FORWARD_INFLIGHT_MAX;
use cairn_types::NodeAddrs;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::error::LinearizableReadError;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, LinearizerOption, ReadPolicy};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
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
    pub cluster_id: u64,
    peers: Mutex<HashMap<u64, (String, RaftPeerClient<Channel>)>>,
    forward_slots: Semaphore,
    /// When a leader last replicated to (or heartbeated) this node.
    last_leader_contact: Mutex<Option<Instant>>,
    /// The leader term whose services run now; set and cleared by the leader lifecycle only.
    leadership: watch::Sender<Option<LeaderTerm>>,
    /// Links to peers cut by a test or the simulation (shared with the Raft network).
    pub peer_faults: PeerFaults,
    /// The clock leader services decide by.
    pub clock: SharedClock,
    /// Where forwarded requests go instead of the peer port (the deterministic simulation).
    peer_link: OnceLock<Arc<dyn PeerLink>>,
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
    ) -> Self {
        let clock: SharedClock = Arc::new(TokioClock);
        Self {
            id,
            raft,
            sm,
            config,
            metrics: Metrics::default(),
            leases: LeaseKeeper::new(clock.clone()),
            cluster_id: 0x6361_6972_6e00_0000, // "cairn" — one cluster per Raft group
            peers: Mutex::new(HashMap::new()),
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

    /// The etcd response header for a response at `revision`.
    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.cluster_id,
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

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

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
        let sent = match self.peer_link.get() {
            Some(link) => link.forward(self.id, leader, req.clone(), timeout).await,
            None => self.forward_over_peer_port(leader, req, timeout).await,
        };
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

    async fn forward_over_peer_port(
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
                let ttl = self.sm.read().kv.lease(id).map(|l| l.ttl_secs);
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
                let granted = self.sm.read().kv.lease(id).map(|l| l.ttl_secs);
                Ok(LeaderResponse::TimeToLive(
                    granted.map(|g| (self.leases.remaining_secs(id).unwrap_or(g), g)),
                ))
            }
            LeaderRequest::MemberAdd { peer_addr, learner } => {
                self.member_add(peer_addr, learner).await
            }
            LeaderRequest::MemberRemove { id } => self.member_remove(id).await,
            LeaderRequest::MemberPromote { id } => self.member_promote(id).await,
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
            LeaderRequest::Meta { .. } | LeaderRequest::ListNodes { .. } => {
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
        let result = tokio::time::timeout(self.request_timeout(), self.raft.client_write(cmd))
            .await
            .map_err(|_| errors::timeout())?;
        match result {
            Ok(resp) => {
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
            if id != 0 && s.kv.lease(id).is_none() {
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

    async fn member_add(&self, peer_addr: String, learner: bool) -> Result<LeaderResponse, Status> {
        self.require_leader()?;
        let (id, exists) = {
            let s = self.sm.read();
            let m = s.membership.membership();
            let exists = m.nodes().any(|(_, n)| n.peer == peer_addr);
            // Ids are never reused: nodes that ever announced themselves count too.
            let max = m
                .nodes()
                .map(|(id, _)| *id)
                .chain(s.node_addrs.keys().copied())
                .max()
                .unwrap_or(0);
            (max + 1, exists)
        };
        if exists {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ));
        }
        let node = NodeAddrs {
            peer: peer_addr,
            ..Default::default()
        };
        self.raft
            .add_learner(id, node, false)
            .await
            .map_err(write_error)?;
        if !learner {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(write_error)?;
        }
        Ok(LeaderResponse::MemberAdded { id })
    }

    async fn member_remove(&self, id: u64) -> Result<LeaderResponse, Status> {
        self.require_leader()?;
        let (is_voter, exists, voters) = {
            let s = self.sm.read();
            let m = s.membership.membership();
            let r = (
                m.voter_ids().any(|v| v == id),
                m.get_node(&id).is_some(),
                m.voter_ids().count(),
            );
            r
        };
        if !exists {
            return Err(errors::member_not_found());
        }
        if is_voter && voters == 1 {
            return Err(Status::new(
                Code::FailedPrecondition,
                "cairn: cannot remove the last voter",
            ));
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        if is_voter {
            // A voter removed from the config stays a learner until removed as a node too.
            let still_node = self
                .sm
                .read()
                .membership
                .membership()
                .get_node(&id)
                .is_some();
            if still_node {
                self.raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                    .map_err(write_error)?;
            }
        }
        Ok(LeaderResponse::Done)
    }

    async fn member_promote(&self, id: u64) -> Result<LeaderResponse, Status> {
        self.require_leader()?;
        let (is_voter, exists) = {
            let s = self.sm.read();
            let m = s.membership.membership();
            let r = (m.voter_ids().any(|v| v == id), m.get_node(&id).is_some());
            r
        };
        if !exists {
            return Err(errors::member_not_found());
        }
        if is_voter {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ));
        }
        let in_sync = {
            let m = self.raft.metrics().borrow_watched().clone();
            let last = m.last_log_index.unwrap_or(0);
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned())
                .flatten()
                .map(|matched| last.saturating_sub(matched.index) <= LEARNER_SYNC_LAG_MAX)
                .unwrap_or(false)
        };
        if !in_sync {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ));
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(LeaderResponse::Done)
    }
}

/// Heartbeat intervals a lease renewal waits for a quorum's acknowledgement when the last one is
/// older than a leader lease.
const LEADERSHIP_CONFIRM_WAIT_HEARTBEATS: u64 = 3;

/// A learner may be promoted only when it is at most this many log entries behind the leader.
const LEARNER_SYNC_LAG_MAX: u64 = 1000;

/// Whether a forwarding failure happened before the request left this node (the leader refused
/// the connection), so retrying cannot apply a write twice.
fn never_sent(s: &Status) -> bool {
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

fn write_error(
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
