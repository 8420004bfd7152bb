//! The leader's node registry: who heartbeats, in what state, with what load. Pure: no I/O, no
//! runtime; the clock comes in as `now`, and decisions (persist this identity, forget that node)
//! come out as data for the hub to execute.
//!
//! Liveness: every heartbeat renews a node's lease (`lease_ms`). A node whose lease passes is
//! suspect; after a second lease without a heartbeat it is down; a down node is forgotten after
//! `idle_forget_ms`. A new leader knows nodes only from the store (state unknown) and judges
//! nobody until one lease period after it took over, so a leader change never marks nodes down.
//! A replies-only request (instruction replies sent between heartbeats) renews the lease too, but
//! is no report: the node's last stats and region stats stay as they were.
//!
//! A tick costs what is due, not what is listed: every node waits in a deadline-ordered queue
//! at the instant its next judgement falls (suspect at its lease deadline, down one lease later,
//! forgotten `idle_forget_ms` after it went down), so thousands of down nodes waiting to be
//! forgotten cost nothing until their hour is up.

use super::reported::{LedLoad, ReportedRegions};
use cairn_proto::cairnpb::{HeartbeatRequest, NodeIdentity, NodeRole, NodeStats};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

/// Stats samples kept per node, newest last, for the scheduler.
pub const STATS_HISTORY_MAX: usize = 64;
/// Most region stats one heartbeat may carry.
pub const REGION_STATS_PER_HEARTBEAT_MAX: usize = 100_000;
/// Most instruction replies one request (regular or replies-only) may carry. A node has at most
/// `OUTBOUND_INSTRUCTIONS_PER_NODE_MAX` instructions outstanding, so this leaves room for the
/// repeated replies of redelivered instructions; clients split larger batches.
pub const INSTRUCTION_REPLIES_PER_REQUEST_MAX: usize = 1024;

/// What an operator sees of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Alive,
    Suspect,
    Down,
    Draining,
    /// Known from the store, not heard from since this leader took over.
    Unknown,
}

impl NodeState {
    /// The name used on the wire (`NodeView.state`) and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
            NodeState::Draining => "draining",
            NodeState::Unknown => "unknown",
        }
    }
}

/// Liveness as judged from heartbeats; draining is a separate flag set by operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    Alive,
    Suspect,
    Down,
    Unknown,
}

/// A refused heartbeat. Each variant is a gRPC status code the node sees on its stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    ResourceExhausted(String),
}

impl HeartbeatError {
    /// The gRPC status code number (`HeartbeatError.code` on the wire).
    pub fn code(&self) -> i32 {
        match self {
            HeartbeatError::InvalidArgument(_) => 3,
            HeartbeatError::AlreadyExists(_) => 6,
            HeartbeatError::ResourceExhausted(_) => 8,
        }
    }
}

/// What the hub must do after an accepted heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub node_id: u64,
    /// The identity is new or changed and must be written to the store.
    pub persist: Option<NodeIdentity>,
}

/// One stats report.
#[derive(Debug, Clone)]
pub struct StatsSample {
    pub at: Instant,
    pub report_interval_ms: u64,
    pub stats: NodeStats,
}

/// Everything the leader knows about one node.
#[derive(Debug, Clone)]
pub struct NodeEntry {
    pub identity: NodeIdentity,
    liveness: Liveness,
    pub draining: bool,
    /// None until the node heartbeats under this leader.
    pub last_heartbeat: Option<Instant>,
    /// The node is alive until then; renewed by each heartbeat.
    pub lease_deadline: Instant,
    /// When it was judged down, for forgetting it.
    down_since: Option<Instant>,
    pub history: VecDeque<StatsSample>,
    /// Region stats of the latest heartbeat; dropped when the node is judged down (the report
    /// is stale then, and ten thousand gone nodes' reports held ten million entries).
    pub regions: ReportedRegions,
    /// How many regions the latest heartbeat reported; kept when `regions` is dropped, so a
    /// down node still lists the count it last reported.
    pub region_count: usize,
    /// The identity known to be in the store.
    persisted: Option<NodeIdentity>,
    persisting: bool,
    /// Where the node waits in [`NodeRegistry::due`]; None: never judged again (a forget
    /// deadline beyond what an `Instant` holds).
    due_at: Option<Instant>,
}

impl NodeEntry {
    pub fn state(&self) -> NodeState {
        match self.liveness {
            Liveness::Alive if self.draining => NodeState::Draining,
            Liveness::Alive => NodeState::Alive,
            Liveness::Suspect => NodeState::Suspect,
            Liveness::Down => NodeState::Down,
            Liveness::Unknown => NodeState::Unknown,
        }
    }

    /// The latest stats sample.
    pub fn latest(&self) -> Option<&StatsSample> {
        self.history.back()
    }
}

/// A state change made by [`NodeRegistry::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Suspect(u64),
    Down(u64),
    /// Removed from the registry; the hub deletes its stored identity.
    Forgotten(u64),
}

/// The registry of one leadership term.
#[derive(Debug)]
pub struct NodeRegistry {
    lease: Duration,
    idle_forget: Duration,
    nodes: BTreeMap<u64, NodeEntry>,
    /// Every node once, at the instant its next judgement falls ([`NodeEntry::due_at`]), so a
    /// tick looks only at the nodes whose instant has come.
    due: BTreeSet<(Instant, u64)>,
    /// The nodes flagged draining, so syncing the flags with the drain records walks them and
    /// the records rather than every node.
    draining: BTreeSet<u64>,
    /// Nobody is judged before this instant (one lease after leadership started).
    judge_from: Option<Instant>,
    /// Nodes the last tick looked at (those due), for tests and the curious.
    examined_last_tick: usize,
}

impl NodeRegistry {
    pub fn new(lease: Duration, idle_forget: Duration) -> Self {
        assert!(!lease.is_zero(), "node lease must be positive");
        Self {
            lease,
            idle_forget,
            nodes: BTreeMap::new(),
            due: BTreeSet::new(),
            draining: BTreeSet::new(),
            judge_from: None,
            examined_last_tick: 0,
        }
    }

    /// When `e` is next judged: suspect when its lease passes, down one lease later, forgotten
    /// `idle_forget` after it went down. None: never (beyond what an `Instant` holds).
    fn next_judgement(&self, e: &NodeEntry) -> Option<Instant> {
        match e.liveness {
            Liveness::Alive | Liveness::Unknown => Some(e.lease_deadline),
            Liveness::Suspect => e.lease_deadline.checked_add(self.lease),
            Liveness::Down => e.down_since.and_then(|d| d.checked_add(self.idle_forget)),
        }
    }

    /// Moves node `id` to where its current state says it is next judged.
    fn requeue(&mut self, id: u64) {
        let Some(e) = self.nodes.get(&id) else {
            return;
        };
        let at = self.next_judgement(e);
        let e = self.nodes.get_mut(&id).expect("looked up above");
        if e.due_at == at {
            return;
        }
        if let Some(old) = e.due_at.take() {
            self.due.remove(&(old, id));
        }
        e.due_at = at;
        if let Some(at) = at {
            self.due.insert((at, id));
        }
    }

    /// Nodes the last [`Self::tick`] looked at: those whose judgement instant had come, not
    /// every node listed.
    pub fn examined_by_last_tick(&self) -> usize {
        self.examined_last_tick
    }

    /// The nodes flagged draining, in id order.
    pub fn draining_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.draining.iter().copied()
    }

    /// How many nodes are listed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A new leadership term: `stored` are the identities found in the store. Every node is
    /// unknown and nobody is judged until one lease has passed.
    pub fn leadership_started(&mut self, stored: Vec<NodeIdentity>, now: Instant) {
        self.nodes.clear();
        self.due.clear();
        self.draining.clear();
        self.judge_from = Some(now + self.lease);
        for identity in stored {
            let id = identity.id;
            self.nodes.insert(
                id,
                NodeEntry {
                    persisted: Some(identity.clone()),
                    identity,
                    liveness: Liveness::Unknown,
                    draining: false,
                    last_heartbeat: None,
                    lease_deadline: now + self.lease,
                    down_since: None,
                    history: VecDeque::new(),
                    regions: ReportedRegions::default(),
                    region_count: 0,
                    persisting: false,
                    due_at: None,
                },
            );
            self.requeue(id);
        }
    }

    /// Leadership ended: nothing here is current any more.
    pub fn leadership_ended(&mut self) {
        self.nodes.clear();
        self.due.clear();
        self.draining.clear();
        self.judge_from = None;
    }

    pub fn get(&self, id: u64) -> Option<&NodeEntry> {
        self.nodes.get(&id)
    }

    /// The led regions' loads of node `id`'s latest report, ascending, unless taken since it
    /// came in: the scheduling pass takes each report's loads once.
    pub fn take_loads(&mut self, id: u64) -> impl Iterator<Item = (u64, LedLoad)> + '_ {
        let entry = self.nodes.get_mut(&id);
        entry.into_iter().flat_map(|e| e.regions.take_loads())
    }

    pub fn nodes(&self) -> impl Iterator<Item = &NodeEntry> {
        self.nodes.values()
    }

    /// Marks a node as draining (or not); false when the node is unknown.
    pub fn set_draining(&mut self, id: u64, draining: bool) -> bool {
        match self.nodes.get_mut(&id) {
            Some(e) => {
                e.draining = draining;
                if draining {
                    self.draining.insert(id);
                } else {
                    self.draining.remove(&id);
                }
                true
            }
            None => false,
        }
    }

    /// Validates and records a heartbeat. `stream_last_sequence` is the sequence of the last
    /// request accepted on the same stream.
    pub fn on_heartbeat(
        &mut self,
        req: &HeartbeatRequest,
        stream_last_sequence: Option<u64>,
        now: Instant,
    ) -> Result<Accepted, HeartbeatError> {
        let (identity, reported) = validate(req, stream_last_sequence)?;
        let id = identity.id;
        if let Some(e) = self.nodes.get(&id) {
            if e.identity.address != identity.address && e.liveness != Liveness::Down {
                return Err(HeartbeatError::AlreadyExists(format!(
                    "node {id} is already registered at {}",
                    e.identity.address
                )));
            }
        }
        let lease = self.lease;
        let entry = self.nodes.entry(id).or_insert_with(|| NodeEntry {
            identity: identity.clone(),
            liveness: Liveness::Alive,
            draining: false,
            last_heartbeat: None,
            lease_deadline: now + lease,
            down_since: None,
            history: VecDeque::new(),
            regions: ReportedRegions::default(),
            region_count: 0,
            persisted: None,
            persisting: false,
            due_at: None,
        });
        entry.identity = identity.clone();
        entry.liveness = Liveness::Alive;
        entry.down_since = None;
        entry.last_heartbeat = Some(now);
        entry.lease_deadline = now + lease;
        // A replies-only request proves the node lives but reports nothing: the last report
        // (stats, region stats, its interval) stays what the scheduler sees.
        if !req.replies_only {
            if entry.history.len() == STATS_HISTORY_MAX {
                entry.history.pop_front();
            }
            entry.history.push_back(StatsSample {
                at: now,
                report_interval_ms: req.report_interval_ms,
                stats: req.stats.clone().unwrap_or_default(),
            });
            entry.regions = reported;
            entry.region_count = entry.regions.len();
        }
        let persist = if entry.persisted.as_ref() != Some(&identity) && !entry.persisting {
            entry.persisting = true;
            Some(identity)
        } else {
            None
        };
        self.requeue(id);
        Ok(Accepted {
            node_id: id,
            persist,
        })
    }

    /// The hub finished (or gave up) writing `id`'s identity; `stored` is what is now in the
    /// store, None when the write failed (the next heartbeat retries).
    pub fn persist_done(&mut self, id: u64, stored: Option<NodeIdentity>) {
        if let Some(e) = self.nodes.get_mut(&id) {
            e.persisting = false;
            if stored.is_some() {
                e.persisted = stored;
            }
        }
    }

    /// Judges liveness at `now`; returns what changed, in node id order, forgotten nodes last.
    /// Looks only at the nodes whose judgement instant has come (each moves one step per tick:
    /// alive or unknown to suspect, suspect to down; down ones are forgotten when their time is
    /// up), so it costs O(due · log nodes), not O(nodes).
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        self.examined_last_tick = 0;
        match self.judge_from {
            Some(t) if now >= t => {}
            _ => return out,
        }
        // Everything due up to `now` leaves the queue (and returns to it where its next
        // judgement falls), judged in id order as a walk over all nodes would.
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            due.push(id);
        }
        due.sort_unstable();
        self.examined_last_tick = due.len();
        let lease = self.lease;
        for &id in &due {
            let e = self.nodes.get_mut(&id).expect("a queued node is listed");
            e.due_at = None;
            let silent_for = now.saturating_duration_since(e.lease_deadline);
            match e.liveness {
                Liveness::Alive | Liveness::Unknown if now >= e.lease_deadline => {
                    e.liveness = Liveness::Suspect;
                    out.push(Transition::Suspect(id));
                }
                Liveness::Suspect if silent_for >= lease => {
                    e.liveness = Liveness::Down;
                    e.down_since = Some(now);
                    e.regions = ReportedRegions::default();
                    out.push(Transition::Down(id));
                }
                _ => {}
            }
        }
        let idle_forget = self.idle_forget;
        for id in due {
            let forget = self.nodes.get(&id).is_some_and(|e| {
                e.down_since
                    .is_some_and(|d| d.checked_add(idle_forget).is_some_and(|f| now >= f))
            });
            if forget {
                self.nodes.remove(&id);
                self.draining.remove(&id);
                out.push(Transition::Forgotten(id));
            } else {
                self.requeue(id);
            }
        }
        out
    }
}

/// Checks a request on its own (no registry state), returning the reporter's identity and
/// its region report.
fn validate(
    req: &HeartbeatRequest,
    stream_last_sequence: Option<u64>,
) -> Result<(NodeIdentity, ReportedRegions), HeartbeatError> {
    let invalid = |m: String| Err(HeartbeatError::InvalidArgument(m));
    let Some(identity) = req.node.as_ref() else {
        return invalid("node: missing (every heartbeat carries the node's identity)".into());
    };
    if identity.id == 0 {
        return invalid("node.id: must be at least 1".into());
    }
    let role = match NodeRole::try_from(identity.role) {
        Ok(NodeRole::Unspecified) | Err(_) => {
            return invalid(format!(
                "node.role: {} is not a known role (datanode, frontend or flownode)",
                identity.role
            ))
        }
        Ok(r) => r,
    };
    if identity.address.is_empty() {
        return invalid("node.address: must be HOST:PORT".into());
    }
    if let Some(last) = stream_last_sequence {
        if req.sequence <= last {
            return invalid(format!(
                "sequence: {} is not above the previous sequence {last} on this stream",
                req.sequence
            ));
        }
    }
    if req.replies.len() > INSTRUCTION_REPLIES_PER_REQUEST_MAX {
        return invalid(format!(
            "replies: {} instruction replies exceed instruction_replies_per_request_max \
             {INSTRUCTION_REPLIES_PER_REQUEST_MAX}; send the rest in the next request",
            req.replies.len()
        ));
    }
    if req.replies_only && (req.stats.is_some() || !req.regions.is_empty()) {
        return invalid(
            "replies_only: a replies-only request carries no stats and no region stats".into(),
        );
    }
    if req.regions.len() > REGION_STATS_PER_HEARTBEAT_MAX {
        return Err(HeartbeatError::ResourceExhausted(format!(
            "regions: {} region stats exceed region_stats_per_heartbeat_max {REGION_STATS_PER_HEARTBEAT_MAX}",
            req.regions.len()
        )));
    }
    if role != NodeRole::Datanode && !req.regions.is_empty() {
        return invalid(format!(
            "regions: a {} holds no regions and sends no region stats",
            role.as_str_name()
                .trim_start_matches("NODE_ROLE_")
                .to_lowercase()
        ));
    }
    match ReportedRegions::of(&req.regions) {
        Ok(reported) => Ok((identity.clone(), reported)),
        Err(twice) => invalid(format!("regions: region {twice} is reported twice")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::cairnpb::{InstructionReply, RegionStat};

    const LEASE: Duration = Duration::from_millis(300);
    const FORGET: Duration = Duration::from_millis(1000);

    fn identity(id: u64, role: NodeRole, address: &str) -> NodeIdentity {
        NodeIdentity {
            id,
            role: role as i32,
            address: address.into(),
            ..Default::default()
        }
    }

    fn hb(id: u64, address: &str, sequence: u64) -> HeartbeatRequest {
        HeartbeatRequest {
            node: Some(identity(id, NodeRole::Datanode, address)),
            sequence,
            report_interval_ms: 100,
            stats: Some(NodeStats {
                rcus: sequence,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn region(id: u64) -> RegionStat {
        RegionStat {
            region_id: id,
            ..Default::default()
        }
    }

    fn state(r: &NodeRegistry, id: u64) -> NodeState {
        r.get(id).unwrap().state()
    }

    fn leading(now: Instant) -> NodeRegistry {
        let mut r = NodeRegistry::new(LEASE, FORGET);
        r.leadership_started(Vec::new(), now);
        r
    }

    #[test]
    fn first_heartbeat_registers_and_asks_to_persist_once() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        let a = r.on_heartbeat(&hb(7, "h:1", 1), None, t0).unwrap();
        assert_eq!(a.persist.as_ref().map(|i| i.id), Some(7));
        assert_eq!(state(&r, 7), NodeState::Alive);
        // While the write is in flight, and after it, no second write.
        assert!(r
            .on_heartbeat(&hb(7, "h:1", 2), Some(1), t0)
            .unwrap()
            .persist
            .is_none());
        r.persist_done(7, a.persist);
        assert!(r
            .on_heartbeat(&hb(7, "h:1", 3), Some(2), t0)
            .unwrap()
            .persist
            .is_none());
        // A changed identity is written again.
        let mut changed = hb(7, "h:1", 4);
        changed.node.as_mut().unwrap().version = "2".into();
        assert!(r
            .on_heartbeat(&changed, Some(3), t0)
            .unwrap()
            .persist
            .is_some());
    }

    #[test]
    fn failed_persist_is_retried_on_next_heartbeat() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        assert!(r
            .on_heartbeat(&hb(1, "h:1", 1), None, t0)
            .unwrap()
            .persist
            .is_some());
        r.persist_done(1, None);
        assert!(r
            .on_heartbeat(&hb(1, "h:1", 2), Some(1), t0)
            .unwrap()
            .persist
            .is_some());
    }

    #[test]
    fn stats_history_is_bounded_and_latest_regions_kept() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        let mut last = None;
        for s in 1..=(STATS_HISTORY_MAX as u64 + 10) {
            let mut req = hb(1, "h:1", s);
            req.regions = vec![region(1), region(2)];
            r.on_heartbeat(&req, last, t0).unwrap();
            last = Some(s);
        }
        let e = r.get(1).unwrap();
        assert_eq!(e.history.len(), STATS_HISTORY_MAX);
        assert_eq!(
            e.latest().unwrap().stats.rcus,
            STATS_HISTORY_MAX as u64 + 10
        );
        assert_eq!(e.regions.len(), 2);
    }

    #[test]
    fn alive_then_suspect_then_down_then_forgotten() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        r.on_heartbeat(&hb(1, "h:1", 1), None, t0).unwrap();
        assert!(r.tick(t0 + LEASE / 2).is_empty());
        assert_eq!(r.tick(t0 + LEASE), vec![Transition::Suspect(1)]);
        assert_eq!(state(&r, 1), NodeState::Suspect);
        assert!(r.tick(t0 + LEASE + LEASE / 2).is_empty());
        assert_eq!(r.tick(t0 + 2 * LEASE), vec![Transition::Down(1)]);
        assert_eq!(state(&r, 1), NodeState::Down);
        assert!(r.tick(t0 + 2 * LEASE + FORGET / 2).is_empty());
        assert_eq!(
            r.tick(t0 + 2 * LEASE + FORGET),
            vec![Transition::Forgotten(1)]
        );
        assert!(r.get(1).is_none());
    }

    #[test]
    fn a_down_node_keeps_its_region_count_not_its_report() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        let mut req = hb(1, "h:1", 1);
        req.regions = (1..=3).map(region).collect();
        r.on_heartbeat(&req, None, t0).unwrap();
        r.tick(t0 + LEASE);
        // Suspect: the report still stands.
        assert_eq!(r.get(1).unwrap().regions.len(), 3);
        assert_eq!(r.tick(t0 + 2 * LEASE), vec![Transition::Down(1)]);
        let e = r.get(1).unwrap();
        assert!(
            e.regions.is_empty(),
            "a down node's stale report is dropped"
        );
        assert_eq!(e.region_count, 3, "the count it last reported stays listed");
        // Back again: its new report is kept.
        let mut back = hb(1, "h:1", 1);
        back.regions = vec![region(4)];
        r.on_heartbeat(&back, None, t0 + 3 * LEASE).unwrap();
        let e = r.get(1).unwrap();
        assert_eq!((e.regions.len(), e.region_count), (1, 1));
    }

    #[test]
    fn heartbeat_revives_suspect_and_down_nodes() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        r.on_heartbeat(&hb(1, "h:1", 1), None, t0).unwrap();
        r.tick(t0 + LEASE);
        r.on_heartbeat(&hb(1, "h:1", 2), Some(1), t0 + LEASE)
            .unwrap();
        assert_eq!(state(&r, 1), NodeState::Alive);
        r.tick(t0 + 2 * LEASE);
        r.tick(t0 + 3 * LEASE);
        assert_eq!(state(&r, 1), NodeState::Down);
        r.on_heartbeat(&hb(1, "h:1", 1), None, t0 + 3 * LEASE)
            .unwrap();
        assert_eq!(state(&r, 1), NodeState::Alive);
    }

    #[test]
    fn new_leader_judges_nobody_for_one_lease() {
        let t0 = Instant::now();
        let mut r = NodeRegistry::new(LEASE, FORGET);
        r.leadership_started(vec![identity(3, NodeRole::Datanode, "h:3")], t0);
        assert_eq!(state(&r, 3), NodeState::Unknown);
        assert!(r.get(3).unwrap().last_heartbeat.is_none());
        assert!(r.tick(t0 + LEASE - Duration::from_millis(1)).is_empty());
        // A stored node that heartbeats is alive and needs no write.
        let a = r
            .on_heartbeat(&hb(3, "h:3", 1), None, t0 + LEASE / 2)
            .unwrap();
        assert!(a.persist.is_none());
        assert_eq!(state(&r, 3), NodeState::Alive);
        // One that never comes back is judged after the grace period.
        r.leadership_started(vec![identity(4, NodeRole::Datanode, "h:4")], t0);
        assert_eq!(r.tick(t0 + LEASE), vec![Transition::Suspect(4)]);
    }

    #[test]
    fn registry_without_leadership_judges_nobody() {
        let t0 = Instant::now();
        let mut r = NodeRegistry::new(LEASE, FORGET);
        r.on_heartbeat(&hb(1, "h:1", 1), None, t0).unwrap();
        assert!(r.tick(t0 + 10 * LEASE).is_empty());
        r.leadership_ended();
        assert!(r.get(1).is_none());
    }

    #[test]
    fn draining_is_a_flag_over_alive() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        assert!(!r.set_draining(1, true));
        r.on_heartbeat(&hb(1, "h:1", 1), None, t0).unwrap();
        assert!(r.set_draining(1, true));
        assert_eq!(state(&r, 1), NodeState::Draining);
        r.tick(t0 + LEASE);
        assert_eq!(state(&r, 1), NodeState::Suspect);
        r.set_draining(1, false);
        r.on_heartbeat(&hb(1, "h:1", 2), Some(1), t0 + LEASE)
            .unwrap();
        assert_eq!(state(&r, 1), NodeState::Alive);
    }

    fn refused(r: &mut NodeRegistry, req: &HeartbeatRequest, last: Option<u64>) -> HeartbeatError {
        r.on_heartbeat(req, last, Instant::now()).unwrap_err()
    }

    #[test]
    fn unknown_or_missing_role_is_invalid_and_names_the_field() {
        let mut r = leading(Instant::now());
        let mut req = hb(1, "h:1", 1);
        req.node.as_mut().unwrap().role = 0;
        let e = refused(&mut r, &req, None);
        assert_eq!(e.code(), 3);
        assert!(e.to_string().contains("node.role"), "{e}");
        req.node.as_mut().unwrap().role = 42;
        assert!(refused(&mut r, &req, None)
            .to_string()
            .contains("node.role"));
        req.node = None;
        assert!(refused(&mut r, &req, None).to_string().contains("node"));
        let mut req = hb(0, "h:1", 1);
        assert!(refused(&mut r, &req, None).to_string().contains("node.id"));
        req = hb(1, "", 1);
        assert!(refused(&mut r, &req, None)
            .to_string()
            .contains("node.address"));
    }

    #[test]
    fn id_held_at_another_address_is_refused_unless_down() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        let a = r
            .on_heartbeat(&hb(7, "10.0.0.1:4000", 1), None, t0)
            .unwrap();
        r.persist_done(7, a.persist);
        let e = r
            .on_heartbeat(&hb(7, "10.0.0.2:4000", 1), None, t0)
            .unwrap_err();
        assert_eq!(
            e,
            HeartbeatError::AlreadyExists("node 7 is already registered at 10.0.0.1:4000".into())
        );
        assert_eq!(e.code(), 6);
        r.tick(t0 + LEASE);
        assert!(r
            .on_heartbeat(&hb(7, "10.0.0.2:4000", 1), None, t0 + LEASE)
            .is_err());
        r.tick(t0 + 2 * LEASE);
        let a = r
            .on_heartbeat(&hb(7, "10.0.0.2:4000", 1), None, t0 + 2 * LEASE)
            .unwrap();
        assert!(
            a.persist.is_some(),
            "the moved node's new address is stored"
        );
    }

    #[test]
    fn sequence_must_increase_per_stream() {
        let mut r = leading(Instant::now());
        let e = refused(&mut r, &hb(1, "h:1", 5), Some(5));
        assert_eq!(e.code(), 3);
        assert!(e.to_string().contains("sequence"), "{e}");
        assert!(refused(&mut r, &hb(1, "h:1", 4), Some(5))
            .to_string()
            .contains("sequence"));
        // A new stream starts over.
        assert!(r
            .on_heartbeat(&hb(1, "h:1", 1), None, Instant::now())
            .is_ok());
    }

    fn replies_only(id: u64, sequence: u64, replies: usize) -> HeartbeatRequest {
        let mut req = hb(id, "h:1", sequence);
        req.stats = None;
        req.report_interval_ms = 0;
        req.replies_only = true;
        req.replies = (1..=replies as u64)
            .map(|i| InstructionReply {
                instruction_id: i,
                ok: true,
                error: String::new(),
            })
            .collect();
        req
    }

    #[test]
    fn replies_only_renews_the_lease_but_keeps_the_last_report() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        let mut req = hb(1, "h:1", 1);
        req.regions = vec![region(1), region(2)];
        r.on_heartbeat(&req, None, t0).unwrap();
        let later = t0 + LEASE / 2;
        r.on_heartbeat(&replies_only(1, 2, 3), Some(1), later)
            .unwrap();
        let e = r.get(1).unwrap();
        assert_eq!(e.last_heartbeat, Some(later));
        assert_eq!(e.lease_deadline, later + LEASE);
        assert_eq!(e.history.len(), 1, "not a report");
        assert_eq!(e.latest().unwrap().stats.rcus, 1);
        assert_eq!(e.latest().unwrap().report_interval_ms, 100);
        assert_eq!(e.regions.len(), 2);
        // Validated like any request: the sequence must still increase.
        assert!(refused(&mut r, &replies_only(1, 2, 0), Some(2))
            .to_string()
            .contains("sequence"));
    }

    #[test]
    fn too_many_replies_or_stats_on_replies_only_are_invalid() {
        let mut r = leading(Instant::now());
        let e = refused(
            &mut r,
            &replies_only(1, 1, INSTRUCTION_REPLIES_PER_REQUEST_MAX + 1),
            None,
        );
        assert_eq!(e.code(), 3);
        assert!(
            e.to_string()
                .contains("instruction_replies_per_request_max"),
            "{e}"
        );
        let mut regular = hb(1, "h:1", 1);
        regular.replies = replies_only(1, 1, INSTRUCTION_REPLIES_PER_REQUEST_MAX + 1).replies;
        assert_eq!(refused(&mut r, &regular, None).code(), 3, "any request");
        assert!(r
            .on_heartbeat(
                &replies_only(1, 1, INSTRUCTION_REPLIES_PER_REQUEST_MAX),
                None,
                Instant::now()
            )
            .is_ok());
        let mut with_stats = replies_only(2, 1, 1);
        with_stats.stats = Some(NodeStats::default());
        assert!(refused(&mut r, &with_stats, None)
            .to_string()
            .contains("replies_only"));
    }

    #[test]
    fn too_many_region_stats_is_resource_exhausted() {
        let mut r = leading(Instant::now());
        let mut req = hb(1, "h:1", 1);
        req.regions = (0..=REGION_STATS_PER_HEARTBEAT_MAX as u64)
            .map(region)
            .collect();
        let e = refused(&mut r, &req, None);
        assert_eq!(e.code(), 8);
        assert!(
            e.to_string().contains("region_stats_per_heartbeat_max"),
            "{e}"
        );
    }

    #[test]
    fn frontend_region_stats_and_duplicate_regions_are_invalid() {
        let mut r = leading(Instant::now());
        let mut req = hb(1, "h:1", 1);
        req.node.as_mut().unwrap().role = NodeRole::Frontend as i32;
        req.regions = vec![region(1)];
        let e = refused(&mut r, &req, None);
        assert_eq!(e.code(), 3);
        assert!(e.to_string().contains("frontend"), "{e}");
        let mut req = hb(1, "h:1", 1);
        req.regions = vec![region(9), region(9)];
        assert!(refused(&mut r, &req, None).to_string().contains("region 9"));
        assert!(r.get(1).is_none(), "refused heartbeats register nothing");
    }

    /// 10,000 nodes that heartbeated once and went: after they are down, ticks look at none of
    /// them until their forget deadline, while a live node is still judged on time.
    #[test]
    fn ticks_look_only_at_due_nodes_however_many_are_down() {
        const GONE: u64 = 10_000;
        let t0 = Instant::now();
        let mut r = leading(t0);
        for id in 1..=GONE {
            r.on_heartbeat(&hb(id, "h:1", 1), None, t0).unwrap();
        }
        assert_eq!(r.tick(t0 + LEASE).len(), GONE as usize);
        assert_eq!(r.examined_by_last_tick(), GONE as usize);
        let downed = r.tick(t0 + 2 * LEASE);
        assert_eq!(downed.len(), GONE as usize);
        assert!(downed.iter().all(|t| matches!(t, Transition::Down(_))));
        // A live node joins; the down ones wait for their forget deadline.
        let live = GONE + 1;
        let mut at = t0 + 2 * LEASE;
        r.on_heartbeat(&hb(live, "h:2", 1), None, at).unwrap();
        for step in 1..=5u64 {
            at += LEASE / 4;
            assert!(r.tick(at).is_empty());
            assert_eq!(r.examined_by_last_tick(), 0, "nothing due at step {step}");
            r.on_heartbeat(&hb(live, "h:2", step + 1), Some(step), at)
                .unwrap();
        }
        // The live node falls silent: judged suspect on time, looked at alone.
        assert_eq!(r.tick(at + LEASE), vec![Transition::Suspect(live)]);
        assert_eq!(r.examined_by_last_tick(), 1);
        assert_eq!(state(&r, 1), NodeState::Down);
        assert_eq!(r.len(), GONE as usize + 1);
        // Their hour is up: all forgotten at once, in id order.
        let forgotten = r.tick(t0 + 2 * LEASE + FORGET);
        let expected: Vec<Transition> = (1..=GONE).map(Transition::Forgotten).collect();
        assert_eq!(&forgotten[forgotten.len() - GONE as usize..], &expected[..]);
        assert_eq!(r.len(), 1);
    }

    /// The registry as it judged before the deadline queue: every node walked on every tick.
    #[derive(Default)]
    struct Walked {
        nodes: BTreeMap<u64, (Liveness, Instant, Option<Instant>)>,
    }

    impl Walked {
        fn heartbeat(&mut self, id: u64, now: Instant) {
            self.nodes.insert(id, (Liveness::Alive, now + LEASE, None));
        }

        fn tick(&mut self, now: Instant) -> Vec<Transition> {
            let mut out = Vec::new();
            for (id, (liveness, deadline, down_since)) in self.nodes.iter_mut() {
                let silent_for = now.saturating_duration_since(*deadline);
                match liveness {
                    Liveness::Alive | Liveness::Unknown if now >= *deadline => {
                        *liveness = Liveness::Suspect;
                        out.push(Transition::Suspect(*id));
                    }
                    Liveness::Suspect if silent_for >= LEASE => {
                        *liveness = Liveness::Down;
                        *down_since = Some(now);
                        out.push(Transition::Down(*id));
                    }
                    _ => {}
                }
            }
            let forgotten: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(_, (_, _, d))| d.is_some_and(|d| now >= d + FORGET))
                .map(|(id, _)| *id)
                .collect();
            for id in forgotten {
                self.nodes.remove(&id);
                out.push(Transition::Forgotten(id));
            }
            out
        }
    }

    /// Seeded random heartbeats and ticks: the deadline queue makes the same transitions, in
    /// the same order, and leaves every node in the same state as walking every node did.
    #[test]
    fn deadline_queue_judges_exactly_as_walking_every_node() {
        for seed in 1..=20u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let t0 = Instant::now();
            let mut r = leading(t0);
            let mut walked = Walked::default();
            let mut sequence = BTreeMap::new();
            let mut now = t0;
            for step in 0..2_000 {
                now += Duration::from_millis(next(60));
                if next(3) == 0 {
                    let id = 1 + next(40);
                    let last = sequence.get(&id).copied();
                    let seq = last.unwrap_or(0) + 1;
                    sequence.insert(id, seq);
                    r.on_heartbeat(&hb(id, "h:1", seq), last, now).unwrap();
                    walked.heartbeat(id, now);
                } else {
                    let got = r.tick(now);
                    assert_eq!(got, walked.tick(now), "seed {seed}, step {step}");
                    for t in &got {
                        if let Transition::Forgotten(id) = t {
                            sequence.remove(id);
                        }
                    }
                }
                let states: Vec<(u64, Liveness)> =
                    r.nodes().map(|e| (e.identity.id, e.liveness)).collect();
                let expected: Vec<(u64, Liveness)> =
                    walked.nodes.iter().map(|(id, e)| (*id, e.0)).collect();
                assert_eq!(states, expected, "seed {seed}, step {step}");
            }
        }
    }

    #[test]
    fn draining_ids_follow_the_flag_and_forgetting() {
        let t0 = Instant::now();
        let mut r = leading(t0);
        for id in 1..=3 {
            r.on_heartbeat(&hb(id, "h:1", 1), None, t0).unwrap();
        }
        r.set_draining(3, true);
        r.set_draining(1, true);
        assert_eq!(r.draining_ids().collect::<Vec<_>>(), [1, 3]);
        r.set_draining(3, false);
        assert_eq!(r.draining_ids().collect::<Vec<_>>(), [1]);
        r.tick(t0 + LEASE);
        r.tick(t0 + 2 * LEASE);
        r.tick(t0 + 2 * LEASE + FORGET);
        assert!(r.is_empty());
        assert_eq!(r.draining_ids().count(), 0, "forgotten nodes leave the set");
    }
}
