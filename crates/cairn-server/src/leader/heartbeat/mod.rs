//! The heartbeat hub: the leader's view of datanodes, frontends and flownodes, fed by one
//! heartbeat stream per node (served by the `Heartbeat` gRPC service in `api::services`), kept in the pure
//! [`registry`], with instructions to nodes through the [`mailbox`] and identities persisted as
//! [`record`]s.
//!
//! Instructions do not wait for the node's next heartbeat: posting one wakes the node's open
//! streams, which push it at once; the node returns the reply at once in a replies-only request.
//!
//! Everything here lives for one leader term: [`run_term`], started by the leader lifecycle,
//! loads stored identities, judges liveness on a tick, and when the term ends the hub stops —
//! closing every stream and failing every pending instruction.

mod grant_map;
pub mod mailbox;
pub mod phi;
pub mod record;
pub mod region_leases;
pub mod registry;
pub mod reported;

use crate::clock::SharedClock;
use crate::leader::node::Node;
use crate::leader::scheduling::cpu_work;
use crate::leader::scheduling::routes::RouteViews;
use crate::leader::LeaderTerm;
use crate::replica::kv;
use crate::replica::meta::store::{delete_op, put_op, txn_here, unchanged_since};
use cairn_meta::route::table_id_of;
use cairn_proto::cairnpb::{
    instruction, InstructionReply, NodeIdentity, NodeRole, NodeView, RegionLeaseGrant, RegionRole,
};
use cairn_proto::etcdserverpb::RangeRequest;
use mailbox::{Mailbox, MailboxError};
use phi::{FailureDetectorSettings, PhiAccrual};
use record::{node_key, NodeRecord, NODES_PREFIX};
use region_leases::RegionLeaseTable;
use registry::{Accepted, HeartbeatError, NodeRegistry, Transition};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Semaphore};

/// Responses buffered per heartbeat stream; a node that lets more pile up is disconnected.
pub const HEARTBEAT_STREAM_BUFFER_MAX: usize = 16;
/// Identity writes (and deletes) to the store in flight at once.
pub const NODE_RECORD_WRITES_INFLIGHT_MAX: usize = 64;
/// Longest pause between two liveness judgements.
const HUB_TICK_MAX_MS: u64 = 100;

/// The open streams of one node.
struct Connection {
    streams: usize,
    /// Bumped when an instruction is posted for the node; each stream task watches it and pushes
    /// what it has not sent yet. A watch marks "changed" instead of queueing, so a burst of
    /// posts wakes a stream once (few pushes), and a post while the task is busy is not lost.
    posted: watch::Sender<u64>,
}

/// The leader's heartbeat hub; owned by [`Node`], idle on followers.
pub struct HeartbeatHub {
    /// What the leader asks nodes to heartbeat at.
    pub heartbeat_interval_ms: u64,
    registry: Mutex<NodeRegistry>,
    pub mailbox: Mailbox,
    /// Open streams per registered node.
    connected: Mutex<HashMap<u64, Connection>>,
    /// A number per leadership term, 0 while this node does not lead (or is still loading).
    term: watch::Sender<u64>,
    record_writes: Arc<Semaphore>,
    /// What the hub's "now" is: liveness, instruction deadlines and node views go by it.
    clock: SharedClock,
    /// Region leases granted in the current term.
    region_leases: Mutex<RegionLeaseTable>,
    region_lease_margin: Duration,
    /// The failure detector of every registered node, in the current term.
    detectors: Mutex<FailureDetectors>,
    /// Woken when a node is judged failed, so failover starts at once rather than at its next
    /// look.
    pub judged_failed: tokio::sync::Notify,
}

/// Phi-accrual detectors per node, and which nodes are judged failed now.
///
/// A judgement looks only at the nodes not judged failed yet (`watched`): a failed node stays
/// failed until it is heard from again, so however many gone nodes the registry still lists,
/// each costs one look, when it fails, and none after.
struct FailureDetectors {
    settings: FailureDetectorSettings,
    /// Nothing is judged before this instant (set when a term starts).
    judge_from: Option<Instant>,
    grace: Duration,
    by_node: HashMap<u64, PhiAccrual>,
    failed: BTreeSet<u64>,
    /// The nodes of `by_node` not in `failed`.
    watched: BTreeSet<u64>,
    /// Bumped whenever `failed` changes, so readers copy it only when it did.
    failed_version: u64,
    /// Nodes the last judgement looked at.
    examined_last_judgement: usize,
}

/// A change in a node's failure judgement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judgement {
    /// Judged failed, at this suspicion level.
    Failed { node: u64, phi: f64 },
    /// Heard from again after being judged failed.
    Recovered { node: u64 },
}

impl FailureDetectors {
    fn new(settings: FailureDetectorSettings, grace: Duration) -> Self {
        FailureDetectors {
            settings,
            judge_from: None,
            grace,
            by_node: HashMap::new(),
            failed: BTreeSet::new(),
            watched: BTreeSet::new(),
            failed_version: 0,
            examined_last_judgement: 0,
        }
    }

    fn detector(&mut self, node: u64) -> &mut PhiAccrual {
        let settings = self.settings;
        self.by_node
            .entry(node)
            .or_insert_with(|| PhiAccrual::new(settings))
    }

    /// A new term: every node of `known` counts as heard from at `now`; nobody is judged
    /// during the grace.
    fn start(&mut self, known: impl IntoIterator<Item = u64>, now: Instant) {
        self.by_node.clear();
        self.failed.clear();
        self.watched.clear();
        self.failed_version += 1;
        self.judge_from = Some(now + self.grace);
        for id in known {
            self.detector(id).assume_heard(now);
            self.watched.insert(id);
        }
    }

    fn heartbeat(&mut self, node: u64, now: Instant) -> Option<Judgement> {
        let recovered = self.failed.remove(&node);
        if recovered {
            self.failed_version += 1;
        }
        self.watched.insert(node);
        let d = self.detector(node);
        if recovered {
            d.skip_next_gap();
        }
        d.heartbeat(now);
        recovered.then_some(Judgement::Recovered { node })
    }

    /// The node was forgotten by the registry: its detector goes (a judgement of failure stays
    /// until the term ends, as the failover of its regions may still be under way).
    fn forget(&mut self, node: u64) {
        self.by_node.remove(&node);
        self.watched.remove(&node);
    }

    /// Judges the nodes not judged failed yet, in id order.
    fn judge(&mut self, now: Instant) -> Vec<Judgement> {
        self.examined_last_judgement = 0;
        if self.judge_from.is_none_or(|from| now < from) {
            return Vec::new();
        }
        let threshold = self.settings.threshold;
        let mut out = Vec::new();
        for node in &self.watched {
            let phi = self.by_node.get(node).map_or(0.0, |d| d.phi(now));
            if phi >= threshold {
                out.push(Judgement::Failed { node: *node, phi });
            }
        }
        self.examined_last_judgement = self.watched.len();
        for j in &out {
            if let Judgement::Failed { node, .. } = j {
                self.watched.remove(node);
                self.failed.insert(*node);
            }
        }
        if !out.is_empty() {
            self.failed_version += 1;
        }
        out
    }
}

impl HeartbeatHub {
    pub fn new(
        heartbeat_interval_ms: u64,
        lease: Duration,
        idle_forget: Duration,
        (region_lease, region_lease_margin): (Duration, Duration),
        (failure, failure_grace): (FailureDetectorSettings, Duration),
        clock: SharedClock,
    ) -> Self {
        let region_leases =
            RegionLeaseTable::new(region_lease, region_lease_margin, clock.now_std());
        Self {
            heartbeat_interval_ms,
            registry: Mutex::new(NodeRegistry::new(lease, idle_forget)),
            mailbox: Mailbox::default(),
            connected: Mutex::new(HashMap::new()),
            term: watch::Sender::new(0),
            record_writes: Arc::new(Semaphore::new(NODE_RECORD_WRITES_INFLIGHT_MAX)),
            clock,
            region_leases: Mutex::new(region_leases),
            region_lease_margin,
            detectors: Mutex::new(FailureDetectors::new(failure, failure_grace)),
            judged_failed: tokio::sync::Notify::new(),
        }
    }

    fn detectors(&self) -> MutexGuard<'_, FailureDetectors> {
        self.detectors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The failure detector's suspicion level of `node` at `now` (None: never heard from in
    /// this term), and whether it is judged failed.
    pub fn suspicion(&self, node: u64, now: Instant) -> Option<(f64, bool)> {
        let d = self.detectors();
        d.by_node
            .get(&node)
            .map(|p| (p.phi(now), d.failed.contains(&node)))
    }

    /// Whether `node` is judged failed now.
    pub fn is_failed(&self, node: u64) -> bool {
        self.detectors().failed.contains(&node)
    }

    /// The nodes judged failed now, in id order.
    pub fn failed_nodes(&self) -> Vec<u64> {
        self.detectors().failed.iter().copied().collect()
    }

    /// The nodes judged failed now and the version of that set, unless it is still at version
    /// `seen`: a caller that looks often copies the set (every gone node stays in it until the
    /// term ends) only when it changed.
    pub fn failed_nodes_since(&self, seen: Option<u64>) -> Option<(u64, BTreeSet<u64>)> {
        let d = self.detectors();
        (seen != Some(d.failed_version)).then(|| (d.failed_version, d.failed.clone()))
    }

    /// Nodes the failure detector's last judgement looked at (those not judged failed yet).
    pub fn examined_by_last_judgement(&self) -> usize {
        self.detectors().examined_last_judgement
    }

    /// The region leases granted in the current term.
    pub fn region_leases(&self) -> MutexGuard<'_, RegionLeaseTable> {
        self.region_leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now, by the hub's clock.
    pub fn now(&self) -> Instant {
        self.clock.now_std()
    }

    /// The registry, for reading or for operator actions such as
    /// [`NodeRegistry::set_draining`].
    pub fn registry(&self) -> MutexGuard<'_, NodeRegistry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn connected(&self) -> MutexGuard<'_, HashMap<u64, Connection>> {
        self.connected.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The nodes with a heartbeat stream open to this leader, in id order: what placement walks,
    /// rather than every node ever registered (down ones stay listed for an hour).
    pub fn connected_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .connected()
            .iter()
            .filter(|(_, c)| c.streams > 0)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `node_id` has a heartbeat stream open to this leader (so instructions reach it).
    pub fn is_connected(&self, node_id: u64) -> bool {
        self.connected()
            .get(&node_id)
            .is_some_and(|c| c.streams > 0)
    }

    /// Whether the hub is serving a leadership term.
    pub fn is_active(&self) -> bool {
        *self.term.borrow() != 0
    }

    /// The leader term the hub serves; 0 when none.
    pub fn serving_term(&self) -> u64 {
        *self.term.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.term.subscribe()
    }

    /// Sends one instruction to `node_id` and waits for its reply.
    pub async fn send(
        &self,
        node_id: u64,
        kind: instruction::Kind,
        timeout: Duration,
    ) -> Result<InstructionReply, MailboxError> {
        if !self.is_active() {
            return Err(MailboxError::LeadershipLost);
        }
        if self.registry().get(node_id).is_none() {
            return Err(MailboxError::NodeUnknown(node_id));
        }
        if !self.connected().contains_key(&node_id) {
            return Err(MailboxError::NotConnected(node_id));
        }
        let (id, rx) = self.mailbox.post(node_id, kind, timeout, self.now())?;
        // After the post, so a woken stream finds the instruction. A stream that closed meanwhile
        // is simply not woken; the instruction then times out like any unanswered one.
        if let Some(c) = self.connected().get(&node_id) {
            c.posted.send_modify(|n| *n = n.wrapping_add(1));
        }
        self.mailbox.wait(id, timeout, rx).await
    }

    /// Sends `kind` to every connected node of `role`; returns each node's outcome.
    pub async fn broadcast(
        &self,
        role: NodeRole,
        kind: instruction::Kind,
        timeout: Duration,
    ) -> Vec<(u64, Result<InstructionReply, MailboxError>)> {
        // The connected nodes only (not every node the registry still lists), the connection
        // table before the registry as everywhere.
        let connected = self.connected_ids();
        let targets: Vec<u64> = {
            let registry = self.registry();
            connected
                .into_iter()
                .filter(|id| {
                    registry
                        .get(*id)
                        .is_some_and(|e| e.identity.role == role as i32)
                })
                .collect()
        };
        let sends = targets
            .iter()
            .map(|id| self.send(*id, kind.clone(), timeout));
        let outcomes = futures::future::join_all(sends).await;
        targets.into_iter().zip(outcomes).collect()
    }

    /// What ListNodes and `/v1/nodes` show: every node, or only `node_id` when not 0.
    pub fn views(&self, node_id: u64, now: Instant) -> Vec<NodeView> {
        let mut views: Vec<NodeView> = self
            .registry()
            .nodes()
            .filter(|e| node_id == 0 || e.identity.id == node_id)
            .map(|e| {
                let latest = e.latest();
                NodeView {
                    identity: Some(e.identity.clone()),
                    state: e.state().as_str().into(),
                    last_heartbeat_age_ms: e
                        .last_heartbeat
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                    stats: latest.map(|s| s.stats.clone()),
                    region_count: e.region_count as u64,
                    // Filled in against table routes when listed (ListNodes).
                    unverified_region_count: 0,
                    report_interval_ms: latest.map_or(0, |s| s.report_interval_ms),
                    phi: None,
                    failed: false,
                    // Filled in from the drain records and routes when listed (ListNodes).
                    ..Default::default()
                }
            })
            .collect();
        for v in &mut views {
            if let Some((phi, failed)) = v.identity.as_ref().and_then(|i| self.suspicion(i.id, now))
            {
                // Two decimals are all an operator reads; the JSON stays short.
                v.phi = Some((phi * 100.0).round() / 100.0);
                v.failed = failed;
            }
        }
        views
    }

    /// Counts a new stream of `node_id`; returns what wakes it when instructions are posted.
    pub(crate) fn attach(&self, node_id: u64) -> watch::Receiver<u64> {
        let mut connected = self.connected();
        let c = connected.entry(node_id).or_insert_with(|| Connection {
            streams: 0,
            posted: watch::Sender::new(0),
        });
        c.streams += 1;
        c.posted.subscribe()
    }

    pub(crate) fn detach(&self, node_id: u64) {
        let mut connected = self.connected();
        if let Some(c) = connected.get_mut(&node_id) {
            debug_assert!(c.streams > 0, "a stream detaches once per attach");
            c.streams -= 1;
            if c.streams == 0 {
                connected.remove(&node_id);
            }
        }
    }

    fn start(&self, stored: Vec<NodeIdentity>, term: u64, now: Instant) {
        // Every known node counts as heard from now, so one that never reconnects to this
        // leader is judged too; nobody is judged during the grace.
        self.detectors().start(stored.iter().map(|i| i.id), now);
        self.registry().leadership_started(stored, now);
        // Leases an earlier leader granted may run until one lease after now (it stopped
        // granting before this term began).
        let mut leases = self.region_leases();
        *leases = RegionLeaseTable::new(leases.duration(), self.region_lease_margin, now);
        drop(leases);
        self.mailbox.start_term(term);
        self.term.send_replace(term);
    }

    /// Ends the current term: streams close, pending instructions fail with LeadershipLost.
    pub(crate) fn stop(&self) {
        // Streams see the term end and close; senders learn leadership was lost.
        self.term.send_replace(0);
        self.detectors().judge_from = None;
        self.registry().leadership_ended();
        self.mailbox.clear();
    }
}

/// The region leases to grant `node_id` on the answer to its regular request `req`, answered at
/// `now`: the regions it reports as leader whose stored route names it their active leader.
/// Recorded in the hub's lease table. None for a replies-only request (it reports nothing).
/// Off the runtime's workers: a node leading 20,000 regions takes tens of milliseconds to check.
pub(crate) async fn grant_region_leases(
    node: &Arc<Node>,
    node_id: u64,
    req: &cairn_proto::cairnpb::HeartbeatRequest,
    now: Instant,
) -> Option<RegionLeaseGrant> {
    if req.replies_only {
        return None;
    }
    let led: Vec<u64> = req
        .regions
        .iter()
        .filter(|stat| stat.role == RegionRole::Leader as i32)
        .map(|stat| stat.region_id)
        .collect();
    // The applied revision now: once the route feed has noted the batches up to it, the
    // decoded routes are the stored ones and no route key need be read.
    let revision = node.sm.read().kv.revision();
    node.scheduling
        .feed_through(revision, ROUTE_FEED_WAIT_MAX)
        .await;
    let node = node.clone();
    let grant = cpu_work(move || Ok(grant_now(&node, node_id, led, now, revision))).await;
    grant.ok()
}

/// How long a region-lease grant waits for the route feed to note the batches applied before
/// it; past it, the grant reads each route's stored revision instead.
pub const ROUTE_FEED_WAIT_MAX: Duration = Duration::from_millis(50);

fn grant_now(
    node: &Node,
    node_id: u64,
    led: Vec<u64>,
    now: Instant,
    revision: i64,
) -> RegionLeaseGrant {
    // Regions reported as leader, by table, so each route is read once.
    let mut by_table: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for region in led {
        by_table
            .entry(table_id_of(region))
            .or_default()
            .push(region);
    }
    // Against the decoded routes: a route's JSON is not decoded again on every heartbeat of
    // every node leading one of its regions. When the feed has noted every change up to the
    // revision read before, the refreshed views are the stored routes as of it or later;
    // otherwise each route's stored revision is checked.
    let current = match crate::leader::scheduling::routes::refresh_through(node, revision) {
        Ok(current) => current,
        Err(e) => {
            tracing::debug!("route views not refreshed: {e}");
            false
        }
    };
    let (checked, counter) = if current {
        let led = node.scheduling.routes().led_in_views(node_id, by_table);
        (Ok(led), &node.metrics.lease_grants_from_views)
    } else {
        let led = RouteViews::led_by(node, node_id, by_table);
        (led, &node.metrics.lease_grants_from_store)
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut granted = match checked {
        Ok(led) => led,
        Err(e) => {
            tracing::debug!("no region leases: routes unreadable: {e}");
            Vec::new()
        }
    };
    let mut table = node.heartbeats.region_leases();
    // Never while another node may still hold a lease (a region just moved away from it).
    table.grant_all(node_id, &mut granted, now);
    RegionLeaseGrant {
        duration_ms: table.duration().as_millis() as u64,
        region_ids: granted,
    }
}

/// Validates and records one heartbeat; starts the identity write when one is needed.
pub(crate) fn on_heartbeat(
    node: &Arc<Node>,
    req: &cairn_proto::cairnpb::HeartbeatRequest,
    last_sequence: Option<u64>,
    now: Instant,
) -> Result<u64, HeartbeatError> {
    let hub = &node.heartbeats;
    let Accepted { node_id, persist } = hub.registry().on_heartbeat(req, last_sequence, now)?;
    // Regular reports only: replies-only requests come at irregular moments and would skew
    // the gaps the detector learns.
    if !req.replies_only {
        if let Some(Judgement::Recovered { node: id }) = hub.detectors().heartbeat(node_id, now) {
            tracing::info!(
                node = id,
                "node heard from again after it was judged failed"
            );
            crate::leader::events::record(
                node,
                hub.serving_term(),
                "node_recovered",
                format!("node {id}"),
                format!("node {id} heard from again after it was judged failed"),
                &[],
            );
        }
    }
    if let Some(identity) = persist {
        write_record(node, hub.serving_term(), identity);
    }
    hub.mailbox.on_replies(node_id, &req.replies);
    Ok(node_id)
}

/// Writes a node's identity in the background, so the stream never waits for Raft; fenced with
/// the leader term the hub serves (0: none, and the write is refused).
fn write_record(node: &Arc<Node>, term: u64, identity: NodeIdentity) {
    let id = identity.id;
    let Ok(permit) = node.heartbeats.record_writes.clone().try_acquire_owned() else {
        // Too many writes in flight; the next heartbeat asks again.
        node.heartbeats.registry().persist_done(id, None);
        return;
    };
    let node = node.clone();
    tokio::spawn(async move {
        let put = put_op(&node_key(id), NodeRecord::from(&identity).to_json());
        let stored = match txn_here(&node, term, Vec::new(), vec![put]).await {
            Ok(_) => Some(identity),
            Err(e) => {
                tracing::warn!(node = id, "storing node identity failed, will retry: {e}");
                None
            }
        };
        node.heartbeats.registry().persist_done(id, stored);
        drop(permit);
    });
}

/// The revision of a node's stored record (None: not stored). Read for a forgotten node while
/// the registry lock that forgot it is still held: a heartbeat of the node coming back needs
/// that lock to register again, so any write of its new identity comes after this revision.
fn record_revision(node: &Node, id: u64) -> Option<i64> {
    match crate::replica::meta::store::get_raw(node, &node_key(id)) {
        Ok(kv) => kv.map(|kv| kv.mod_revision),
        Err(e) => {
            tracing::warn!(node = id, "node forgotten but its record stays: {e}");
            None
        }
    }
}

/// Deletes a forgotten node's identity in the background, only if it is still as written at
/// `revision` ([`record_revision`]): a node that came back meanwhile keeps its new record.
fn delete_record(node: &Arc<Node>, term: u64, id: u64, revision: i64) {
    let key = node_key(id);
    let Ok(permit) = node.heartbeats.record_writes.clone().try_acquire_owned() else {
        tracing::warn!(
            node = id,
            "node forgotten but its record stays: too many writes"
        );
        return;
    };
    let node = node.clone();
    tokio::spawn(async move {
        let compare = vec![unchanged_since(&key, revision)];
        match txn_here(&node, term, compare, vec![delete_op(&key)]).await {
            Ok((true, ..)) => {}
            Ok((false, ..)) => {
                tracing::info!(node = id, "forgotten node came back: its record stays")
            }
            Err(e) => tracing::warn!(node = id, "deleting forgotten node's record failed: {e}"),
        }
        drop(permit);
    });
}

/// Every stored node identity, read after a barrier so a new leader sees all committed writes.
async fn load_records(node: &Node) -> Result<Vec<NodeIdentity>, tonic::Status> {
    node.read_barrier().await?;
    let mut end = NODES_PREFIX.as_bytes().to_vec();
    *end.last_mut().expect("prefix is not empty") += 1;
    let req = RangeRequest {
        key: NODES_PREFIX.as_bytes().to_vec(),
        range_end: end,
        serializable: true,
        ..Default::default()
    };
    let resp = kv::range(node, &req).await?;
    let mut out = Vec::with_capacity(resp.kvs.len());
    for kv in resp.kvs {
        match NodeRecord::from_json(&kv.value) {
            Ok(r) => out.push(r.to_identity()),
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(&kv.key),
                "ignoring unreadable node record: {e}"
            ),
        }
    }
    Ok(out)
}

/// Runs the hub for one leader term: loads the stored nodes, serves streams, judges liveness
/// and expires instructions until the term ends; the lifecycle then stops the hub.
pub async fn run_term(node: Arc<Node>, term: LeaderTerm) {
    let hub = &node.heartbeats;
    let stored = loop {
        match load_records(&node).await {
            Ok(stored) => break stored,
            Err(e) => {
                tracing::debug!("loading node records failed, will retry: {e}");
                if term.sleep(Duration::from_millis(HUB_TICK_MAX_MS)).await {
                    return;
                }
            }
        }
    };
    if !term.is_current() {
        return;
    }
    tracing::info!(
        node_id = node.id,
        term = term.term(),
        known = stored.len(),
        "heartbeat hub started"
    );
    hub.start(stored, term.term(), hub.now());
    let lease_ms = hub.registry().lease().as_millis() as u64;
    let mut tick = tokio::time::interval(Duration::from_millis(
        (lease_ms / 4).clamp(1, HUB_TICK_MAX_MS),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = term.ended() => break,
        }
        let now = hub.now();
        let mut forgotten = Vec::new();
        let transitions = {
            let mut registry = hub.registry();
            let transitions = registry.tick(now);
            for t in &transitions {
                if let Transition::Forgotten(id) = t {
                    forgotten.extend(record_revision(&node, *id).map(|r| (*id, r)));
                }
            }
            transitions
        };
        for t in transitions {
            match t {
                Transition::Suspect(id) => tracing::info!(node = id, "node is suspect"),
                Transition::Down(id) => tracing::warn!(node = id, "node is down"),
                Transition::Forgotten(id) => {
                    hub.detectors().forget(id);
                    tracing::info!(node = id, "node forgotten after staying down")
                }
            }
        }
        let judgements = hub.detectors().judge(now);
        if judgements
            .iter()
            .any(|j| matches!(j, Judgement::Failed { .. }))
        {
            hub.judged_failed.notify_one();
        }
        for j in judgements {
            if let Judgement::Failed { node: id, phi } = j {
                tracing::warn!(node = id, phi, "node judged failed by the failure detector");
                let (threshold, (mean, std_dev)) = {
                    let d = hub.detectors();
                    let stats = d.by_node.get(&id).map_or((0.0, 0.0), |p| p.gap_stats());
                    (d.settings.threshold, stats)
                };
                let silent = hub
                    .registry()
                    .get(id)
                    .and_then(|e| e.last_heartbeat)
                    .map(|t| now.saturating_duration_since(t).as_millis().to_string());
                crate::leader::events::record(
                    &node,
                    term.term(),
                    "node_failed",
                    format!("node {id}"),
                    format!(
                        "node {id} judged failed: phi {phi:.2} reached the threshold {threshold}"
                    ),
                    &[
                        ("phi", format!("{phi:.2}")),
                        ("threshold", threshold.to_string()),
                        ("silent_ms", silent.unwrap_or_else(|| "-".into())),
                        ("gap_mean_ms", format!("{mean:.0}")),
                        ("gap_std_dev_ms", format!("{std_dev:.0}")),
                    ],
                );
            }
        }
        for (id, revision) in forgotten {
            delete_record(&node, term.term(), id, revision);
        }
        hub.mailbox.expire(now);
        hub.region_leases().expire(now);
    }
    tracing::info!(node_id = node.id, "heartbeat hub stopped: leadership ended");
    hub.stop();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detectors() -> FailureDetectors {
        FailureDetectors::new(
            FailureDetectorSettings {
                threshold: 8.0,
                min_std_dev: Duration::from_millis(200),
                acceptable_pause: Duration::from_millis(300),
                first_heartbeat_estimate: Duration::from_secs(3),
            },
            Duration::ZERO,
        )
    }

    /// 10,000 nodes a new leader knows from the store never come back: each is judged failed
    /// once, and later judgements look only at the node still heard from.
    #[test]
    fn judgements_look_only_at_nodes_not_judged_failed() {
        const GONE: u64 = 10_000;
        let t0 = Instant::now();
        let mut d = detectors();
        d.start(1..=GONE, t0);
        let live = GONE + 1;
        d.heartbeat(live, t0);
        let mut now = t0;
        let mut failed = Vec::new();
        for _ in 0..10 {
            now += Duration::from_secs(3);
            d.heartbeat(live, now);
            failed.extend(d.judge(now));
        }
        let nodes = |js: &[Judgement]| -> Vec<u64> {
            js.iter()
                .map(|j| match j {
                    Judgement::Failed { node, .. } | Judgement::Recovered { node } => *node,
                })
                .collect()
        };
        let gone: Vec<u64> = (1..=GONE).collect();
        assert_eq!(nodes(&failed), gone, "each gone node once, in id order");
        assert_eq!(d.failed.len(), GONE as usize);
        let version = d.failed_version;
        now += Duration::from_secs(3);
        d.heartbeat(live, now);
        assert!(d.judge(now).is_empty());
        assert_eq!(d.examined_last_judgement, 1, "only the live node");
        assert_eq!(d.failed_version, version, "the failed set did not change");
        // A gone node comes back: watched again, and judged again when it goes again.
        assert_eq!(d.heartbeat(7, now), Some(Judgement::Recovered { node: 7 }));
        assert_ne!(d.failed_version, version);
        assert!(d.judge(now).is_empty());
        assert_eq!(d.examined_last_judgement, 2);
        let later = now + Duration::from_secs(60);
        d.heartbeat(live, later);
        assert_eq!(nodes(&d.judge(later)), [7]);
        // A forgotten node stays judged failed (its failover may be under way) and is not
        // looked at again.
        d.forget(7);
        assert!(d.failed.contains(&7));
        assert!(d.judge(later).is_empty());
        assert_eq!(d.examined_last_judgement, 1);
    }
}
