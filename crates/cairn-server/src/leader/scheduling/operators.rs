//! The leader's operator table: every operator the schedulers planned in this term, queued,
//! running or finished, with the limits the executor enforces. Pure bookkeeping: the clock comes
//! in as Unix ms; starting migrations is the caller's business.
//!
//! Operators live in the leader's memory only, as in PD: a new leader plans afresh from the
//! stored routes (a running migration is itself a stored procedure and is resumed either way).
//! What must outlive a leader (the cool-down of recently moved regions) is persisted with the
//! stats summary. Operators that end other than done (cancelled, timed out, failed) wait in the
//! table until whoever ended them takes them ([`OperatorTable::take_ended`]) for the event log.

use cairn_proto::cairnpb::OperatorView;
use cairn_sched::{ClusterSnapshot, IdMap, IdSet, LeftNodes, MoveKind, Operator, Phase, Step};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Finished operators kept for `operator list --finished` and `operator show`.
pub const OPERATORS_FINISHED_KEPT_MAX: usize = 1_024;
/// Recently moved regions remembered for the cool-down, and regions remembered with the nodes
/// balancing moves took them off; beyond it the oldest are forgotten.
pub const COOLDOWN_REGIONS_MAX: usize = 100_000;
/// The window of the moves-per-minute limit, ms.
const RATE_WINDOW_MS: u64 = 60_000;

/// Where an operator is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl OpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::Queued => "queued",
            OpStatus::Running => "running",
            OpStatus::Done => "done",
            OpStatus::Failed => "failed",
            OpStatus::Cancelled => "cancelled",
        }
    }
}

/// One operator and its progress.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub op: Operator,
    pub status: OpStatus,
    pub created_ms: u64,
    /// `created_ms` + the operator timeout: queued past it, it is cancelled; running, its
    /// migration has until then.
    pub deadline_ms: u64,
    pub finished_ms: u64,
    pub outcome: String,
    pub procedure_id: u64,
}

/// Limits on operators, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Operators queued or running at once, cluster-wide.
    pub operators_max: usize,
    /// Operators queued or running at once that move a region off or onto one node.
    pub node_operators_max: usize,
    /// Operators started per minute.
    pub moves_per_minute_max: usize,
    /// A region moved is not moved again by a balancing scheduler within this, ms.
    pub region_cooldown_ms: u64,
    /// A copy is not sent back by a balancing scheduler to a node a balancing move took it off
    /// within this, ms.
    pub region_return_ms: u64,
    /// How long an operator has from when it is queued, ms (see [`Entry::deadline_ms`]).
    pub operator_timeout_ms: u64,
    /// Urgent operators (drain, evict-leaders: an operator's request; replica-repair: regions
    /// short of copies) queued or running at once: not counted in the limits above, nor
    /// rate-limited.
    pub urgent_operators_max: usize,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct OperatorTable {
    next_id: u64,
    live: BTreeMap<u64, Entry>,
    finished: VecDeque<Entry>,
    started_ms: VecDeque<u64>,
    /// Region → when it last finished moving, Unix ms.
    last_moved: HashMap<u64, u64>,
    /// Region → when a balancing move last took a copy of it off a node, Unix ms, and the
    /// nodes such moves took copies off.
    last_left: HashMap<u64, (u64, LeftNodes)>,
    /// Ended other than done since last taken, for the event log: at most every live operator,
    /// each ends once.
    ended: Vec<Entry>,
    /// The leader term the table was reset for: a pass of an earlier term adds nothing.
    term: u64,
}

impl OperatorTable {
    /// The leader term the table serves.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// A new term: nothing planned, the cool-downs and the nodes regions left carried over
    /// (`last_moved`, `last_left`, from the store).
    pub fn reset(
        &mut self,
        last_moved: HashMap<u64, u64>,
        last_left: HashMap<u64, (u64, LeftNodes)>,
        term: u64,
    ) {
        // Ids keep counting across terms, so a migration of an earlier term that finishes late
        // cannot settle a new operator.
        *self = OperatorTable {
            next_id: self.next_id.max(1),
            last_moved,
            last_left,
            term,
            ..OperatorTable::default()
        };
    }

    /// Fills the snapshot's limits and the regions it must leave alone.
    pub fn limit(&mut self, snap: &mut ClusterSnapshot, limits: &Limits) {
        // A queued balancing operator's region is the balancing schedulers' to leave alone, but
        // a repair takes it over (see `add`): waiting behind the rate limit must not keep a
        // region short of copies for a minute.
        let mut urgent = 0;
        for e in self.live.values() {
            urgent += usize::from(e.op.urgent());
            if e.status == OpStatus::Queued && !e.op.urgent() {
                snap.queued.push(e.op.region_id);
            } else {
                snap.busy.push(e.op.region_id);
            }
        }
        let balancing = self.live.len() - urgent;
        snap.moves_left = limits.operators_max.saturating_sub(balancing);
        snap.urgent_moves_left = limits.urgent_operators_max.saturating_sub(urgent);
        snap.node_moves_left_default = limits.node_operators_max;
        for (node, n) in self.per_node() {
            snap.node_moves_left
                .insert(node, limits.node_operators_max.saturating_sub(n));
        }
        snap.region_cooldown_ms = limits.region_cooldown_ms;
        let cutoff = snap.now_ms.saturating_sub(limits.region_cooldown_ms);
        self.last_moved.retain(|_, at| *at >= cutoff);
        snap.last_moved_ms = self.last_moved.clone();
        let cutoff = snap.now_ms.saturating_sub(limits.region_return_ms);
        self.last_left
            .retain(|_, (at, _)| *at >= cutoff && limits.region_return_ms > 0);
        snap.last_left = self.last_left.iter().map(|(r, (_, l))| (*r, *l)).collect();
    }

    fn per_node(&self) -> HashMap<u64, usize> {
        let mut out = HashMap::new();
        for e in self.live.values().filter(|e| !e.op.urgent()) {
            // 0: no source (an added copy) or no target (a dropped one).
            for n in [e.op.from, e.op.to].into_iter().filter(|n| *n != 0) {
                *out.entry(n).or_insert(0) += 1;
            }
        }
        out
    }

    /// Queues `ops`, each with the operator timeout from `now_ms`; their ids. An urgent operator
    /// supersedes a queued balancing one of its region, which is cancelled.
    pub fn add(&mut self, ops: Vec<Operator>, now_ms: u64, limits: &Limits) -> Vec<u64> {
        if ops.iter().any(Operator::urgent) {
            let queued: HashMap<u64, u64> = self
                .live
                .values()
                .filter(|e| e.status == OpStatus::Queued && !e.op.urgent())
                .map(|e| (e.op.region_id, e.id))
                .collect();
            let superseded: Vec<(u64, &'static str)> = ops
                .iter()
                .filter(|op| op.urgent())
                .filter_map(|op| queued.get(&op.region_id).map(|id| (*id, op.scheduler)))
                .collect();
            for (id, by) in superseded {
                let why = format!("superseded by {by}");
                self.finish(id, OpStatus::Cancelled, why, now_ms);
            }
        }
        let mut ids = Vec::with_capacity(ops.len());
        for op in ops {
            let id = self.next_id.max(1);
            self.next_id = id + 1;
            self.live.insert(
                id,
                Entry {
                    id,
                    op,
                    status: OpStatus::Queued,
                    created_ms: now_ms,
                    deadline_ms: now_ms.saturating_add(limits.operator_timeout_ms),
                    finished_ms: 0,
                    outcome: String::new(),
                    procedure_id: 0,
                },
            );
            ids.push(id);
        }
        ids
    }

    /// Cancels queued operators whose deadline has passed at `now_ms` (timed out, as a PD
    /// operator does: the premise it was planned on is that old; a later pass plans afresh).
    pub fn expire(&mut self, now_ms: u64) -> Vec<Entry> {
        let expired: Vec<(u64, u64)> = self
            .live
            .values()
            .filter(|e| e.status == OpStatus::Queued && now_ms >= e.deadline_ms)
            .map(|e| (e.id, e.deadline_ms - e.created_ms))
            .collect();
        expired
            .into_iter()
            .filter_map(|(id, timeout_ms)| {
                let why = format!("timed out: still queued {timeout_ms} ms after it was planned");
                self.finish(id, OpStatus::Cancelled, why, now_ms)
            })
            .collect()
    }

    /// Cancels queued operators whose premise no longer holds in `snap`: the region moved or
    /// went, its source no longer holds the copy, the target may no longer take it, (a repair's)
    /// the region has its count of follower copies, (a balancing one's) its source was judged
    /// failed, (a
    /// drain's) the drain was cancelled, or (a balancing one's) its source is being drained:
    /// the drain moves the region now, rather than after the queue's rate limit lets it.
    pub fn cancel_stale(&mut self, snap: &ClusterSnapshot) -> Vec<Entry> {
        // Only the queued operators' regions are looked up: a map of every region would cost a
        // pass over a million regions tens of milliseconds, with nothing queued as often as not.
        let wanted: IdSet<u64> = self
            .live
            .values()
            .filter(|e| e.status == OpStatus::Queued)
            .map(|e| e.op.region_id)
            .collect();
        if wanted.is_empty() {
            return Vec::new();
        }
        let regions: IdMap<u64, cairn_sched::RegionView> = wanted
            .iter()
            .filter_map(|id| Some((*id, snap.regions.get(snap.regions.position(*id)?))))
            .collect();
        let set = |keep: fn(&cairn_sched::NodeView) -> bool| -> HashSet<u64> {
            snap.node_ids(keep).into_iter().collect()
        };
        let schedulable = set(|n| n.schedulable);
        let drained = set(|n| n.drain.is_some());
        let failed = set(|n| n.failed);
        let stale: Vec<(u64, String)> = self
            .live
            .values()
            .filter(|e| e.status == OpStatus::Queued)
            .filter_map(|e| {
                let op = &e.op;
                // A drain may hand leadership to a follower; any other move goes to a node
                // holding no copy.
                let arrived = |r: &cairn_sched::RegionView| match op.kind {
                    MoveKind::Leader if op.requested() => r.leader == op.to,
                    MoveKind::Follower if op.requested() => r.followers.contains(&op.to),
                    _ => r.leader == op.to || r.followers.contains(&op.to),
                };
                let why = match regions.get(&op.region_id) {
                    None => "the region is gone".to_string(),
                    Some(r) if arrived(r) => format!("node {} holds the region already", op.to),
                    Some(r)
                        if (op.kind == MoveKind::Leader && r.leader != op.from)
                            || (matches!(
                                op.kind,
                                MoveKind::Follower | MoveKind::RemoveFollower
                            ) && !r.followers.contains(&op.from)) =>
                    {
                        format!("node {} no longer holds that copy", op.from)
                    }
                    Some(r)
                        if op.kind == MoveKind::AddFollower
                            && r.followers.len() >= snap.followers_per_region =>
                    {
                        "the region has its follower copies".to_string()
                    }
                    Some(r)
                        if op.kind == MoveKind::RemoveFollower
                            && r.followers.len() <= snap.followers_per_region =>
                    {
                        "the region is down to its follower copies".to_string()
                    }
                    Some(_)
                        if op.kind != MoveKind::RemoveFollower && !schedulable.contains(&op.to) =>
                    {
                        format!("node {} may no longer take regions", op.to)
                    }
                    Some(_) if op.requested() && !drained.contains(&op.from) => {
                        format!(
                            "node {} is no longer drained (or is failover's now)",
                            op.from
                        )
                    }
                    Some(_) if !op.requested() && drained.contains(&op.from) => {
                        format!("node {} is drained: the drain moves the region", op.from)
                    }
                    // Queued behind the rate limit, it would keep the region busy, and the
                    // repair of its copy out, for up to a minute.
                    Some(_) if !op.urgent() && failed.contains(&op.from) => format!(
                        "node {} was judged failed: failover and replica-repair move its copies",
                        op.from
                    ),
                    Some(_) => return None,
                };
                Some((e.id, format!("stale: {why}")))
            })
            .collect();
        stale
            .into_iter()
            .filter_map(|(id, why)| self.finish(id, OpStatus::Cancelled, why, snap.now_ms))
            .collect()
    }

    /// Up to the moves-per-minute allowance of queued operators, highest priority first, marked
    /// running; urgent ones (a drain's, a repair's) whatever the allowance. `requested_only`
    /// (maintenance mode): the drains' alone.
    pub fn start_next(&mut self, limits: &Limits, now_ms: u64, requested_only: bool) -> Vec<Entry> {
        while self
            .started_ms
            .front()
            .is_some_and(|at| now_ms.saturating_sub(*at) >= RATE_WINDOW_MS)
        {
            self.started_ms.pop_front();
        }
        let allowance = limits
            .moves_per_minute_max
            .saturating_sub(self.started_ms.len());
        let queued = self.live.values().filter(|e| e.status == OpStatus::Queued);
        let (mut urgent, mut balancing): (Vec<&Entry>, Vec<&Entry>) =
            queued.partition(|e| e.op.urgent());
        if requested_only {
            urgent.retain(|e| e.op.requested());
            balancing.clear();
        }
        balancing.sort_by(|a, b| b.op.priority.cmp(&a.op.priority).then(a.id.cmp(&b.id)));
        let ids: Vec<(u64, bool)> = urgent
            .iter()
            .map(|e| (e.id, false))
            .chain(balancing.iter().take(allowance).map(|e| (e.id, true)))
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for (id, counted) in ids {
            if let Some(e) = self.live.get_mut(&id) {
                e.status = OpStatus::Running;
                if counted {
                    self.started_ms.push_back(now_ms);
                }
                out.push(e.clone());
            }
        }
        out
    }

    /// Ends a live operator; the entry as finished, None when it was not live.
    pub fn finish(
        &mut self,
        id: u64,
        status: OpStatus,
        outcome: String,
        now_ms: u64,
    ) -> Option<Entry> {
        let mut e = self.live.remove(&id)?;
        e.status = status;
        e.outcome = outcome;
        e.finished_ms = now_ms;
        if status == OpStatus::Done {
            self.moved([e.op.region_id], now_ms);
            if let Some(node) = e.op.leaves() {
                let region = e.op.region_id;
                let mut left = self
                    .last_left
                    .get(&region)
                    .map_or_else(LeftNodes::default, |l| l.1);
                left.push(node);
                remember(&mut self.last_left, region, (now_ms, left), |v| v.0);
            }
        } else {
            self.ended.push(e.clone());
        }
        if self.finished.len() >= OPERATORS_FINISHED_KEPT_MAX {
            self.finished.pop_front();
        }
        self.finished.push_back(e.clone());
        Some(e)
    }

    /// Starts the cool-down of `regions`, moved at `now_ms`.
    pub fn moved(&mut self, regions: impl IntoIterator<Item = u64>, now_ms: u64) {
        for region in regions {
            remember(&mut self.last_moved, region, now_ms, |at| *at);
        }
    }

    /// The operators ended other than done since the last call (cancelled, timed out, failed),
    /// for the event log.
    pub fn take_ended(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.ended)
    }

    pub fn set_procedure(&mut self, id: u64, procedure_id: u64) {
        if let Some(e) = self.live.get_mut(&id) {
            e.procedure_id = procedure_id;
        }
    }

    /// Cancels a queued operator. Err: not found, or past cancelling (running or finished).
    pub fn cancel(&mut self, id: u64, now_ms: u64) -> Result<Entry, String> {
        match self.live.get(&id).map(|e| e.status) {
            Some(OpStatus::Queued) => Ok(self
                .finish(
                    id,
                    OpStatus::Cancelled,
                    "cancelled by an operator".into(),
                    now_ms,
                )
                .expect("live")),
            Some(_) => Err(format!(
                "operator {id} is running: its migration finishes or rolls back by its deadline"
            )),
            None if self.finished.iter().any(|e| e.id == id) => {
                Err(format!("operator {id} has finished"))
            }
            None => Err(format!("operator {id} not found")),
        }
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.live
            .get(&id)
            .or_else(|| self.finished.iter().find(|e| e.id == id))
    }

    /// Live operators in id order, then (with `finished`) the finished ones, newest first.
    pub fn list(&self, finished: bool) -> Vec<&Entry> {
        let done = self.finished.iter().rev().filter(|_| finished);
        self.live.values().chain(done).collect()
    }

    /// Regions moved within the cool-down, for persisting.
    pub fn last_moved(&self) -> &HashMap<u64, u64> {
        &self.last_moved
    }

    /// Regions with the nodes balancing moves took them off, and when they last did, for
    /// persisting.
    pub fn last_left(&self) -> &HashMap<u64, (u64, LeftNodes)> {
        &self.last_left
    }
}

/// Records `value` for `region` in a map of at most [`COOLDOWN_REGIONS_MAX`] regions, forgetting
/// the oldest (by `at`) to make room: a region forgotten may move sooner, or back.
fn remember<V>(map: &mut HashMap<u64, V>, region: u64, value: V, at: impl Fn(&V) -> u64) {
    if map.len() >= COOLDOWN_REGIONS_MAX && !map.contains_key(&region) {
        if let Some(&oldest) = map.iter().min_by_key(|(_, v)| at(v)).map(|(r, _)| r) {
            map.remove(&oldest);
        }
    }
    map.insert(region, value);
}

/// An operator as the API shows it.
pub fn view(e: &Entry) -> OperatorView {
    let mut v = plan_view(&e.op);
    v.id = e.id;
    v.status = e.status.as_str().to_string();
    v.created_ms = e.created_ms;
    v.deadline_ms = e.deadline_ms;
    v.finished_ms = e.finished_ms;
    v.outcome = e.outcome.clone();
    v.procedure_id = e.procedure_id;
    v
}

/// Shows in `v` a running operator's progress: `steps`, what its migration walks for the region,
/// and their states with the migration at `at` (None: not at its first step yet), every step of
/// an earlier phase done and the one of `at` running.
pub fn with_progress(v: &mut OperatorView, procedure_id: u64, steps: &[Step], at: Option<Phase>) {
    v.procedure_id = procedure_id;
    v.steps = steps.iter().map(Step::to_string).collect();
    v.step_states = steps
        .iter()
        .map(|s| match at.map(|at| s.phase().cmp(&at)) {
            Some(std::cmp::Ordering::Less) => "done",
            Some(std::cmp::Ordering::Equal) => "running",
            _ => "pending",
        })
        .map(str::to_string)
        .collect();
}

/// A planned (not queued) operator as the API shows it.
pub fn plan_view(op: &Operator) -> OperatorView {
    OperatorView {
        region_id: op.region_id,
        kind: op.kind.as_str().to_string(),
        from_node: op.from,
        to_node: op.to,
        scheduler: op.scheduler.to_string(),
        priority: op.priority.as_str().to_string(),
        reason: op.reason.clone(),
        figures: op
            .figures
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        status: "planned".to_string(),
        steps: op.steps().iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_sched::{DrainKind, NodeView, Priority, RegionView, DRAIN_SCHEDULER};

    fn op(region: u64, from: u64, to: u64, priority: Priority) -> Operator {
        Operator {
            region_id: region,
            kind: MoveKind::Leader,
            from,
            to,
            to_follows: false,
            scheduler: "balance-region",
            priority,
            reason: String::new(),
            figures: Vec::new(),
        }
    }

    fn limits() -> Limits {
        Limits {
            operators_max: 3,
            node_operators_max: 2,
            moves_per_minute_max: 2,
            region_cooldown_ms: 10_000,
            region_return_ms: 100_000,
            operator_timeout_ms: 30_000,
            urgent_operators_max: 3,
        }
    }

    #[test]
    fn limits_count_live_operators_cluster_wide_and_per_node() {
        let mut t = OperatorTable::default();
        t.add(
            vec![op(1, 1, 2, Priority::Low), op(2, 1, 3, Priority::Low)],
            0,
            &limits(),
        );
        let mut snap = ClusterSnapshot::default();
        t.limit(&mut snap, &limits());
        assert_eq!(snap.moves_left, 1);
        assert_eq!(snap.node_moves_left[&1], 0);
        assert_eq!(snap.node_moves_left[&2], 1);
        assert!(snap.busy.is_empty());
        assert_eq!(snap.queued, [1, 2], "queued, not running");
        t.start_next(&limits(), 0, false);
        let mut snap = ClusterSnapshot::default();
        t.limit(&mut snap, &limits());
        assert_eq!((snap.busy, snap.queued), (vec![1, 2], vec![]));
    }

    #[test]
    fn a_repair_supersedes_a_queued_balancing_move_of_its_region() {
        let mut t = OperatorTable::default();
        let ids = t.add(
            vec![op(1, 1, 2, Priority::Low), op(2, 1, 3, Priority::Low)],
            0,
            &limits(),
        );
        t.start_next(&limits(), 0, false);
        let queued = t.add(vec![op(3, 1, 2, Priority::Low)], 0, &limits());
        let repair = |region: u64| Operator {
            kind: MoveKind::AddFollower,
            scheduler: "replica-repair",
            ..op(region, 0, 3, Priority::High)
        };
        t.add(vec![repair(1), repair(3)], 5, &limits());
        assert_eq!(
            t.get(ids[0]).unwrap().status,
            OpStatus::Running,
            "running: kept"
        );
        assert!(t
            .get(queued[0])
            .is_none_or(|e| e.status == OpStatus::Cancelled));
        let cancelled = t.list(true);
        assert!(
            cancelled
                .iter()
                .any(|e| e.id == queued[0] && e.outcome == "superseded by replica-repair"),
            "{cancelled:?}"
        );
    }

    #[test]
    fn starts_obey_priority_and_the_rate_per_minute() {
        let mut t = OperatorTable::default();
        let ids = t.add(
            vec![
                op(1, 1, 2, Priority::Low),
                op(2, 1, 2, Priority::High),
                op(3, 1, 2, Priority::Normal),
            ],
            0,
            &limits(),
        );
        let started: Vec<u64> = t
            .start_next(&limits(), 0, false)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(started, [ids[1], ids[2]]);
        assert!(
            t.start_next(&limits(), 59_999, false).is_empty(),
            "rate spent"
        );
        assert_eq!(t.start_next(&limits(), 60_000, false).len(), 1);
    }

    #[test]
    fn repairs_skip_the_rate_limit_but_wait_out_maintenance_mode() {
        let repair = |region: u64| Operator {
            kind: MoveKind::AddFollower,
            scheduler: "replica-repair",
            ..op(region, 0, 2, Priority::High)
        };
        let mut t = OperatorTable::default();
        t.add((1..=5).map(repair).collect(), 0, &limits());
        assert!(
            t.start_next(&limits(), 0, true).is_empty(),
            "maintenance mode"
        );
        // Five at once although the allowance is 2 a minute, and the allowance is left whole.
        assert_eq!(t.start_next(&limits(), 0, false).len(), 5);
        t.add(
            vec![op(6, 1, 2, Priority::Low), op(7, 1, 2, Priority::Low)],
            0,
            &limits(),
        );
        assert_eq!(t.start_next(&limits(), 0, false).len(), 2);
        let mut snap = ClusterSnapshot::default();
        t.limit(&mut snap, &limits());
        assert_eq!(
            snap.urgent_moves_left, 0,
            "5 running repairs spend the budget of 3"
        );
        assert_eq!(snap.moves_left, 1);
    }

    #[test]
    fn a_copy_to_add_or_drop_goes_stale_once_the_count_is_met() {
        let repair = |region: u64, kind: MoveKind, from: u64, to: u64| Operator {
            kind,
            scheduler: "replica-repair",
            ..op(region, from, to, Priority::High)
        };
        let mut t = OperatorTable::default();
        let ids = t.add(
            vec![
                repair(10, MoveKind::AddFollower, 0, 2),
                repair(11, MoveKind::AddFollower, 0, 2),
                repair(12, MoveKind::RemoveFollower, 2, 0),
                repair(13, MoveKind::RemoveFollower, 2, 0),
            ],
            0,
            &limits(),
        );
        let mut snap = ClusterSnapshot::default();
        t.limit(&mut snap, &limits());
        assert!(
            snap.node_moves_left.is_empty(),
            "urgent: outside the per-node limits"
        );
        let led = |id: u64, followers: &[u64]| RegionView {
            followers: followers.to_vec().into(),
            ..RegionView::new(id, 1)
        };
        let snap = ClusterSnapshot {
            nodes: vec![NodeView::new(1), NodeView::new(2), NodeView::new(3)],
            // 10 got its follower elsewhere; 11 still lacks it; 12 is down to its count; 13
            // still has one too many.
            regions: vec![led(10, &[3]), led(11, &[]), led(12, &[2]), led(13, &[2, 3])].into(),
            followers_per_region: 1,
            ..ClusterSnapshot::default()
        };
        let cancelled: Vec<u64> = t.cancel_stale(&snap).iter().map(|e| e.id).collect();
        assert_eq!(cancelled, [ids[0], ids[2]]);
    }

    #[test]
    fn stale_queued_operators_are_cancelled_and_running_ones_cannot_be() {
        let mut t = OperatorTable::default();
        let ids = t.add(
            vec![
                op(10, 1, 2, Priority::Low),
                op(11, 1, 2, Priority::Low),
                op(12, 1, 3, Priority::Low),
                op(13, 1, 2, Priority::Low),
            ],
            0,
            &limits(),
        );
        let mut unschedulable = NodeView::new(3);
        unschedulable.schedulable = false;
        let snap = ClusterSnapshot {
            now_ms: 5,
            nodes: vec![NodeView::new(1), NodeView::new(2), unschedulable],
            // 10 moved to 2 already; 11 unchanged; 12's target drained; 13 gone.
            regions: vec![
                RegionView::new(10, 2),
                RegionView::new(11, 1),
                RegionView::new(12, 1),
            ]
            .into(),
            ..ClusterSnapshot::default()
        };
        let cancelled: Vec<u64> = t.cancel_stale(&snap).iter().map(|e| e.id).collect();
        assert_eq!(cancelled, [ids[0], ids[2], ids[3]]);
        assert!(t.get(ids[0]).unwrap().outcome.starts_with("stale"));
        let running = t.start_next(&limits(), 10, false);
        assert_eq!(running[0].id, ids[1]);
        assert!(t.cancel(ids[1], 11).unwrap_err().contains("running"));
        assert!(t.cancel(ids[0], 11).unwrap_err().contains("finished"));
        assert!(t.cancel(99, 11).unwrap_err().contains("not found"));
        assert_eq!(t.list(false).len(), 1);
        assert_eq!(t.list(true).len(), 4);
    }

    #[test]
    fn a_balancing_move_off_a_failed_node_is_cancelled_while_queued() {
        let mut t = OperatorTable::default();
        let follower = |region: u64| Operator {
            kind: MoveKind::Follower,
            ..op(region, 3, 2, Priority::Low)
        };
        let ids = t.add(vec![follower(10), follower(11)], 0, &limits());
        let node = |id: u64, failed: bool| NodeView {
            schedulable: !failed,
            failed,
            ..NodeView::new(id)
        };
        let region = |id: u64| RegionView {
            followers: vec![3].into(),
            ..RegionView::new(id, 1)
        };
        let mut snap = ClusterSnapshot {
            now_ms: 5,
            nodes: vec![node(1, false), node(2, false), node(3, false)],
            regions: vec![region(10), region(11)].into(),
            ..ClusterSnapshot::default()
        };
        assert!(t.cancel_stale(&snap).is_empty(), "node 3 is alive");
        snap.nodes[2] = node(3, true);
        let cancelled = t.cancel_stale(&snap);
        assert_eq!(cancelled.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert!(
            cancelled[0].outcome.contains("judged failed"),
            "{cancelled:?}"
        );
    }

    fn drain_op(region: u64, from: u64, to: u64) -> Operator {
        Operator {
            scheduler: DRAIN_SCHEDULER,
            priority: Priority::High,
            ..op(region, from, to, Priority::High)
        }
    }

    #[test]
    fn drains_have_a_budget_of_their_own_and_no_rate_limit() {
        let mut t = OperatorTable::default();
        t.add(vec![op(1, 1, 2, Priority::Low)], 0, &limits());
        t.add((10..13).map(|r| drain_op(r, 3, 2)).collect(), 0, &limits());
        let mut snap = ClusterSnapshot::default();
        t.limit(&mut snap, &limits());
        assert_eq!(
            snap.moves_left, 2,
            "drains are not counted against balancing"
        );
        assert_eq!(snap.urgent_moves_left, 0, "the drain budget is spent");
        assert_eq!(snap.node_moves_left[&2], 1, "nor against a node's limit");
        assert!(!snap.node_moves_left.contains_key(&3));
        // The rate allows 2 a minute: every drain starts beside them all the same.
        let started = t.start_next(&limits(), 0, false);
        assert_eq!(started.len(), 4);
        t.add(
            vec![op(2, 1, 2, Priority::Low), op(3, 1, 2, Priority::Low)],
            0,
            &limits(),
        );
        t.add(vec![drain_op(14, 3, 2)], 0, &limits());
        // Maintenance mode: the drain's only.
        let started = t.start_next(&limits(), 1, true);
        assert_eq!(
            started.iter().map(|e| e.op.region_id).collect::<Vec<_>>(),
            [14]
        );
    }

    #[test]
    fn a_drain_operator_goes_stale_when_the_drain_is_cancelled() {
        let mut t = OperatorTable::default();
        let ids = t.add(vec![drain_op(10, 1, 2), drain_op(11, 1, 2)], 0, &limits());
        let mut drained = NodeView::new(1);
        (drained.schedulable, drained.drain) = (false, Some(DrainKind::All));
        // A leader handed to follower 2 is no premise gone stale.
        let mut handover = RegionView::new(10, 1);
        handover.followers = vec![2].into();
        let mut snap = ClusterSnapshot {
            now_ms: 5,
            nodes: vec![drained, NodeView::new(2)],
            regions: vec![handover, RegionView::new(11, 1)].into(),
            ..ClusterSnapshot::default()
        };
        assert!(t.cancel_stale(&snap).is_empty());
        // A balancing move queued off the node gives way to the drain.
        let queued = t.add(vec![op(11, 1, 2, Priority::Low)], 0, &limits())[0];
        let cancelled: Vec<u64> = t.cancel_stale(&snap).iter().map(|e| e.id).collect();
        assert_eq!(cancelled, [queued]);
        assert!(t.get(queued).unwrap().outcome.contains("the drain moves"));
        snap.nodes[0].drain = None;
        let cancelled: Vec<u64> = t.cancel_stale(&snap).iter().map(|e| e.id).collect();
        assert_eq!(cancelled, ids);
        assert!(t.get(ids[0]).unwrap().outcome.contains("no longer drained"));
    }

    #[test]
    fn a_queued_operator_past_its_timeout_is_cancelled_and_a_running_one_is_not() {
        let mut t = OperatorTable::default();
        // limits(): 30 s from when each is queued; 2 starts a minute.
        let first = t.add(
            vec![
                op(1, 1, 2, Priority::High),
                op(2, 1, 2, Priority::Normal),
                op(3, 1, 2, Priority::Low),
            ],
            0,
            &limits(),
        );
        let later = t.add(vec![op(4, 1, 2, Priority::Low)], 10_000, &limits());
        assert_eq!(view(t.get(first[0]).unwrap()).deadline_ms, 30_000);
        assert_eq!(t.get(later[0]).unwrap().deadline_ms, 40_000);
        let running: Vec<u64> = t
            .start_next(&limits(), 0, false)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(running, first[..2]);
        assert!(t.expire(29_999).is_empty(), "not yet");
        let expired = t.expire(30_000);
        assert_eq!(
            expired.iter().map(|e| e.id).collect::<Vec<_>>(),
            [first[2]],
            "the running ones are their migrations' to end"
        );
        assert_eq!(expired[0].status, OpStatus::Cancelled);
        assert!(
            expired[0].outcome.starts_with("timed out"),
            "{}",
            expired[0].outcome
        );
        assert_eq!(t.get(first[0]).unwrap().status, OpStatus::Running);
        assert_eq!(t.get(later[0]).unwrap().status, OpStatus::Queued);
        // A timed-out operator, a user's cancellation and a failure wait for the event log; a
        // done one does not.
        t.cancel(later[0], 30_001).unwrap();
        t.finish(first[0], OpStatus::Done, String::new(), 30_002);
        t.finish(first[1], OpStatus::Failed, "rolled back".into(), 30_003);
        let ended: Vec<(u64, OpStatus)> = t.take_ended().iter().map(|e| (e.id, e.status)).collect();
        assert_eq!(
            ended,
            [
                (first[2], OpStatus::Cancelled),
                (later[0], OpStatus::Cancelled),
                (first[1], OpStatus::Failed)
            ]
        );
        assert!(t.take_ended().is_empty(), "each taken once");
    }

    #[test]
    fn a_running_operator_shows_its_migrations_steps_done_up_to_its_phase() {
        let mut t = OperatorTable::default();
        let ids = t.add(vec![op(7, 1, 2, Priority::Low)], 0, &limits());
        let mut v = view(t.get(ids[0]).unwrap());
        assert!(v.step_states.is_empty(), "queued: no progress");
        // Handed to a follower meanwhile: the migration opens nothing, and the view says so.
        let walked = [
            Step::DowngradeLeader { node: 1 },
            Step::UpgradeToLeader { node: 2 },
            Step::CloseRegion { node: 1 },
        ];
        with_progress(&mut v, 9, &walked, Some(Phase::Upgrade));
        assert_eq!(v.procedure_id, 9);
        assert_eq!(v.steps.len(), 3);
        assert_eq!(v.step_states, ["done", "running", "pending"]);
        with_progress(&mut v, 9, &walked, None);
        assert_eq!(v.step_states, ["pending"; 3]);
        // A step in no phase reached yet is pending, not running (a dropped copy opens nothing).
        let dropped = [Step::PublishRoute, Step::CloseRegion { node: 1 }];
        with_progress(&mut v, 9, &dropped, Some(Phase::Downgrade));
        assert_eq!(v.step_states, ["pending", "pending"]);
    }

    #[test]
    fn a_done_move_starts_the_regions_cool_down() {
        let mut t = OperatorTable::default();
        let ids = t.add(vec![op(7, 1, 2, Priority::Low)], 0, &limits());
        t.finish(ids[0], OpStatus::Done, String::new(), 1_000);
        let mut snap = ClusterSnapshot {
            now_ms: 5_000,
            ..ClusterSnapshot::default()
        };
        t.limit(&mut snap, &limits());
        assert_eq!(snap.last_moved_ms.get(&7), Some(&1_000));
        snap.now_ms = 20_000;
        t.limit(&mut snap, &limits());
        assert!(snap.last_moved_ms.is_empty(), "cool-down over: forgotten");
    }

    #[test]
    fn a_done_balancing_move_remembers_the_node_it_left_for_the_return_window() {
        let mut t = OperatorTable::default();
        let ids = t.add(vec![op(7, 1, 2, Priority::Low)], 0, &limits());
        t.finish(ids[0], OpStatus::Done, String::new(), 1_000);
        let ids = t.add(vec![op(7, 2, 3, Priority::Low)], 2_000, &limits());
        t.finish(ids[0], OpStatus::Done, String::new(), 3_000);
        // Cancelled: it took nothing off node 3.
        let ids = t.add(vec![op(7, 3, 4, Priority::Low)], 4_000, &limits());
        t.finish(ids[0], OpStatus::Cancelled, String::new(), 5_000);
        let mut snap = ClusterSnapshot {
            now_ms: 50_000,
            ..ClusterSnapshot::default()
        };
        t.limit(&mut snap, &limits());
        let left: Vec<u64> = snap.last_left[&7].nodes().collect();
        assert_eq!(left, [2, 1], "latest first, past the cool-down");
        // An urgent move (a drain) answers a change of cluster: nothing remembered.
        let mut drain = op(8, 1, 2, Priority::High);
        drain.scheduler = cairn_sched::DRAIN_SCHEDULER;
        let ids = t.add(vec![drain], 50_000, &limits());
        t.finish(ids[0], OpStatus::Done, String::new(), 51_000);
        t.limit(&mut snap, &limits());
        assert!(!snap.last_left.contains_key(&8));
        // The window (100 s after the last move) over: forgotten; 0 turns the memory off.
        snap.now_ms = 104_000;
        t.limit(&mut snap, &limits());
        assert!(snap.last_left.is_empty(), "{:?}", snap.last_left);
        let ids = t.add(vec![op(9, 1, 2, Priority::Low)], 104_000, &limits());
        t.finish(ids[0], OpStatus::Done, String::new(), 104_000);
        let off = Limits {
            region_return_ms: 0,
            ..limits()
        };
        t.limit(&mut snap, &off);
        assert!(snap.last_left.is_empty());
    }
}
