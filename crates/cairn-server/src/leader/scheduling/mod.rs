//! The schedulers' executor: every `scheduler_interval_ms` the leader builds a snapshot of the
//! cluster, cancels queued operators whose premise went stale or whose timeout
//! (`scheduler_operator_timeout_ms`, from when they were planned) passed, lets the enabled
//! schedulers ([`cairn_sched::Schedulers`], configured from the stored settings) plan within the
//! limits, records each new operator in the event log, and starts queued operators (highest
//! priority first, within the moves-per-minute limit) as batched migration procedures, each
//! with what is left of its operators' timeout as its deadline. Operators cancelled (stale,
//! superseded, timed out, by a user) or failed are recorded in the event log too
//! ([`operator_events`]).
//!
//! Drains and leader evictions are schedulers too (`drain`, `evict-leaders`): the drain record
//! an operator stores is their trigger. Their operators have a budget of their own
//! (`failover_migrations_max` batches of regions), start at once whatever the moves-per-minute
//! limit, and a pass runs again as soon as one of their migrations ends, so a drain empties a
//! node as fast as failover would. Each pass's drain operators, planned or ended, are recorded as
//! one event per batch rather than one per region.
//!
//! Maintenance mode pauses every balancing scheduler: nothing of theirs is planned and nothing
//! queued starts; drains (an operator's request) go on. A summary of
//! what a new leader needs not to start blind — the regions still cooling down, the loads of
//! the hottest regions and the nodes' latest stats reports ([`stats_history`]) — is persisted,
//! bounded, every `scheduler_state_persist_interval_ms` (30 s by default).

pub mod operator_events;
pub mod operators;
pub mod routes;
pub mod snapshot;
pub mod stats_history;

use crate::leader::failover::batches;
use crate::leader::meta::region_view;
use crate::leader::node::Node;
use crate::leader::procedure::engine;
use crate::leader::procedure::maintenance;
use crate::leader::procedure::migrate_region::{
    self, Copies, MigrateRegionStep, MIGRATION_BATCH_REGIONS_MAX, REASON_DRAIN,
    REASON_EVICT_LEADERS,
};
use crate::leader::LeaderTerm;
use crate::replica::meta::store::{self, layout, put_op};
use crate::ServerConfig;
use cairn_meta::route::table_id_of;
use cairn_meta::{codec, SchedulerSetting, TableRoute};
use cairn_proto::cairnpb::{ListOperatorsResponse, OperatorView};
use cairn_sched::{
    LeftNodes, MoveKind, Operator, Schedulers, DRAIN_SCHEDULER, EVICT_LEADERS_SCHEDULER,
    REPLICA_REPAIR_SCHEDULER,
};
use operators::{Entry, Limits, OpStatus, OperatorTable};
use routes::{RouteChanges, RouteViews};
use serde::{Deserialize, Serialize};
use snapshot::RegionLoads;
use stats_history::{NodeStatsSummary, RestoredNodeStats};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tonic::Status;

/// Regions (hottest first, and most recently moved first) the persisted summary keeps.
pub const SCHEDULING_STATE_REGIONS_MAX: usize = 2_048;
/// Passes woken by a finished drain migration (or a drain request) are at least this far
/// apart, ms: a pass reads every route, and eight batches finishing one after another should
/// not cost eight passes.
pub const SCHEDULER_WAKE_GAP_MS: u64 = 200;

/// The executor's state on this node (used while it leads).
#[derive(Debug, Default)]
pub struct Scheduling {
    operators: Mutex<OperatorTable>,
    /// Shared with the pass that reads them ([`snapshot::LeaderRegions`]).
    loads: Mutex<Arc<RegionLoads>>,
    routes: Mutex<Arc<RouteViews>>,
    route_changes: Mutex<RouteChanges>,
    /// Held through a refresh of the views.
    refreshing: Mutex<()>,
    /// The store revision the route feed has noted the changes through ([`RouteChanges`]): the
    /// last batch it read, or the revision a rescan it asked for reads at least.
    feed_revision: tokio::sync::watch::Sender<i64>,
    restored_node_stats: Mutex<RestoredNodeStats>,
    /// Wakes the executor for a pass before its interval is up.
    wake: tokio::sync::Notify,
}

impl Scheduling {
    /// Asks for a pass soon (a drain was requested, or a drain migration ended).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn operators(&self) -> MutexGuard<'_, OperatorTable> {
        self.operators.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn loads(&self) -> MutexGuard<'_, Arc<RegionLoads>> {
        self.loads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The decoded routes, as last refreshed ([`routes`]): read without a lock held.
    pub fn routes(&self) -> Arc<RouteViews> {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes the views: `change` works on a copy (copying only what it touches) that then
    /// replaces them; readers keep the views they took.
    fn change_routes(&self, change: impl FnOnce(&mut RouteViews)) {
        let mut current = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        change(Arc::make_mut(&mut current));
    }

    /// The decoded routes brought up to the applied state.
    pub fn routes_now(&self, node: &Node) -> Result<Arc<RouteViews>, Status> {
        routes::refresh(node)?;
        Ok(self.routes())
    }

    fn refreshing(&self) -> MutexGuard<'_, ()> {
        self.refreshing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The route feed has noted every change up to `revision`.
    fn feed_noted(&self, revision: i64) {
        self.feed_revision.send_if_modified(|r| {
            let moved = *r < revision;
            *r = (*r).max(revision);
            moved
        });
    }

    /// Whether the route feed has noted every change up to `revision` (meaningful only while
    /// a feed follows: [`RouteChanges`]).
    fn fed_through(&self, revision: i64) -> bool {
        *self.feed_revision.borrow() >= revision
    }

    /// Waits, at most `wait`, until the route feed has noted every change up to `revision`;
    /// whether it has.
    pub async fn feed_through(&self, revision: i64, wait: Duration) -> bool {
        let mut noted = self.feed_revision.subscribe();
        let caught_up = tokio::time::timeout(wait, noted.wait_for(|r| *r >= revision)).await;
        matches!(caught_up, Ok(Ok(_)))
    }

    /// The routes written since the last refresh.
    pub fn route_changes(&self) -> MutexGuard<'_, RouteChanges> {
        self.route_changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pass's snapshot (see [`snapshot::build`]).
    fn snapshot(&self, node: &Node) -> Result<cairn_sched::ClusterSnapshot, Status> {
        let routes = self.routes_now(node)?;
        let mut snap = snapshot::build(node, &mut self.loads(), routes)?;
        stats_history::fill_reported(node, &mut snap.nodes);
        Ok(snap)
    }

    /// Node stats reports restored from the previous leader's summary. Taken after the node
    /// registry's lock when both are held.
    pub fn restored_node_stats(&self) -> MutexGuard<'_, RestoredNodeStats> {
        self.restored_node_stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// What a new leader reads so it is not blind (see the module docs).
#[derive(Debug, Default, Serialize, Deserialize)]
struct SchedulingState {
    /// (region, Unix ms it last moved).
    last_moved: Vec<(u64, u64)>,
    /// (region, Unix ms a balancing move last took a copy of it off a node, those nodes latest
    /// first); empty in a summary of an older version.
    #[serde(default)]
    last_left: Vec<(u64, u64, Vec<u64>)>,
    /// (region, smoothed wcus, smoothed rcus).
    loads: Vec<(u64, f64, f64)>,
    /// When this summary was written, Unix ms (0 in a summary of an older version).
    #[serde(default)]
    written_ms: u64,
    /// The nodes' latest stats reports (bounded, see [`stats_history`]).
    #[serde(default)]
    node_stats: Vec<NodeStatsSummary>,
}

/// The operator limits, from the configuration.
pub fn limits(config: &ServerConfig) -> Limits {
    Limits {
        operators_max: config.scheduler_operators_max,
        node_operators_max: config.scheduler_node_operators_max,
        moves_per_minute_max: config.scheduler_moves_per_minute_max,
        region_cooldown_ms: config.scheduler_region_cooldown_ms,
        region_return_ms: config.scheduler_region_return_ms,
        operator_timeout_ms: config.scheduler_operator_timeout_ms,
        urgent_operators_max: config.failover_migrations_max * MIGRATION_BATCH_REGIONS_MAX,
    }
}

/// Every stored scheduler setting, by name.
pub fn settings(node: &crate::replica::node::Replica) -> Result<Vec<SchedulerSetting>, Status> {
    let mut out = Vec::new();
    store::scan_all(node, &layout().schedulers_prefix(), |kv| {
        if let Ok(s) = codec::decode::<SchedulerSetting>(&kv.key, &kv.value) {
            out.push(s);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The schedulers as the stored settings make them. A stored setting this version does not
/// understand (a scheduler or parameter since removed) is skipped and logged.
pub fn configured(node: &crate::replica::node::Replica) -> Result<Schedulers, Status> {
    let mut schedulers = Schedulers::default();
    for s in settings(node)? {
        let applied = schedulers.set_enabled(&s.name, s.enabled).and_then(|()| {
            s.params
                .iter()
                .try_for_each(|(k, v)| schedulers.configure(&s.name, k, v))
        });
        if let Err(e) = applied {
            tracing::warn!("stored scheduler setting ignored: {e}");
        }
    }
    Ok(schedulers)
}

/// The executor for one leader term.
pub async fn run_term(node: Arc<Node>, term: LeaderTerm) {
    let interval = Duration::from_millis(node.config.scheduler_interval_ms);
    let persist_every = Duration::from_millis(node.config.scheduler_state_persist_interval_ms);
    let mut restored = false;
    let mut persisted = Instant::now();
    let mut paused_logged = false;
    let mut last_pass: Option<Instant> = None;
    loop {
        // Every interval, and soon after a wake (no sooner than the gap after the last pass).
        let ended = tokio::select! {
            ended = term.sleep(interval) => ended,
            () = node.scheduling.wake.notified() => {
                let gap = Duration::from_millis(SCHEDULER_WAKE_GAP_MS);
                let wait = last_pass.map_or(Duration::ZERO, |at| gap.saturating_sub(at.elapsed()));
                !term.is_current() || term.sleep(wait).await
            }
        };
        if ended {
            return;
        }
        last_pass = Some(Instant::now());
        if !node.procedures.serving(term.term()) {
            continue;
        }
        if !restored {
            restore(&node, term.term());
            restored = true;
        }
        let started = Instant::now();
        let (n, t) = (node.clone(), term.term());
        let outcome = cpu_work(move || pass(&n, t)).await;
        // A pass that takes a good part of the interval (a snapshot of very many routes) is
        // worth an operator's attention: the leader spends that much of its time on it.
        let took = started.elapsed();
        if took * 2 >= interval {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                interval_ms = interval.as_millis() as u64,
                "scheduling pass took half the scheduler interval or more"
            );
        }
        match outcome {
            Ok(Pass { paused, started }) => {
                if paused && !paused_logged {
                    tracing::info!("maintenance mode on: schedulers paused (drains go on)");
                }
                paused_logged = paused;
                dispatch(&node, &term, started);
            }
            Err(e) => tracing::debug!("scheduling pass failed: {}", e.message()),
        }
        if persisted.elapsed() >= persist_every {
            persisted = Instant::now();
            if let Err(e) = persist(&node, term.term()).await {
                tracing::debug!("scheduling state not persisted: {}", e.message());
            }
        }
    }
}

/// What a pass did: whether maintenance mode held the balancing schedulers back, and the
/// operators it started.
struct Pass {
    paused: bool,
    started: Vec<Entry>,
}

/// A new term: the operator table starts empty, with the stored cool-downs, loads and node
/// stats reports.
fn restore(node: &Node, term: u64) {
    let state = store::get::<SchedulingState>(node, &layout().scheduling_state())
        .ok()
        .flatten()
        .map(|r| r.value)
        .unwrap_or_default();
    node.scheduling.operators().reset(
        state.last_moved.into_iter().collect(),
        restored_left(state.last_left),
        term,
    );
    node.scheduling
        .restored_node_stats()
        .replace(state.node_stats);
    let mut loads = RegionLoads::default();
    loads.seed_all(state.loads, state.written_ms);
    *node.scheduling.loads() = Arc::new(loads);
}

/// The stored nodes regions left, as the operator table keeps them.
fn restored_left(stored: Vec<(u64, u64, Vec<u64>)>) -> HashMap<u64, (u64, LeftNodes)> {
    stored
        .into_iter()
        .map(|(region, at, nodes)| (region, (at, LeftNodes::from_latest_first(nodes))))
        .collect()
}

async fn persist(node: &Node, term: u64) -> Result<(), Status> {
    let mut last_moved: Vec<(u64, u64)> = node
        .scheduling
        .operators()
        .last_moved()
        .iter()
        .map(|(r, at)| (*r, *at))
        .collect();
    last_moved.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    last_moved.truncate(SCHEDULING_STATE_REGIONS_MAX);
    let mut last_left: Vec<(u64, u64, Vec<u64>)> = node
        .scheduling
        .operators()
        .last_left()
        .iter()
        .map(|(r, (at, left))| (*r, *at, left.nodes().collect()))
        .collect();
    last_left.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    last_left.truncate(SCHEDULING_STATE_REGIONS_MAX);
    let loads = node
        .scheduling
        .loads()
        .hottest(SCHEDULING_STATE_REGIONS_MAX);
    let written_ms = node.clock.unix_ms();
    let node_stats = {
        let now = (node.heartbeats.now(), written_ms);
        let registry = node.heartbeats.registry();
        stats_history::summary(&registry, &node.scheduling.restored_node_stats(), now)
    };
    let state = SchedulingState {
        last_moved,
        last_left,
        loads,
        written_ms,
        node_stats,
    };
    let put = put_op(&layout().scheduling_state(), codec::encode(&state));
    store::txn_here(node, term, Vec::new(), vec![put]).await?;
    Ok(())
}

/// One pass: timed-out and stale operators cancelled, new ones planned and queued, the next
/// ones started (in maintenance mode, the drains' only), and what ended other than done
/// recorded.
fn pass(node: &Arc<Node>, term: u64) -> Result<Pass, Status> {
    let limits = limits(&node.config);
    let started_at = Instant::now();
    let mut snap = node.scheduling.snapshot(node)?;
    let metrics = &node.metrics;
    let micros = |d: Duration| d.as_micros().min(u64::MAX as u128) as u64;
    metrics
        .scheduler_snapshot_micros
        .store(micros(started_at.elapsed()), Ordering::Relaxed);
    metrics
        .scheduler_regions
        .store(snap.regions.len() as u64, Ordering::Relaxed);
    let paused = maintenance::current(node)?.on;
    let schedulers = configured(node)?;
    {
        let mut table = node.scheduling.operators();
        let timed_out = table.expire(snap.now_ms).len();
        let stale = table.cancel_stale(&snap).len();
        if timed_out + stale > 0 {
            // Each is in the event log (recorded below).
            tracing::info!(timed_out, stale, "queued operators cancelled");
        }
        table.limit(&mut snap, &limits);
    }
    // Planned without the table's lock: a finishing migration records its cool-down meanwhile.
    // Only this pass adds operators, so the limits and busy regions taken above can only have
    // loosened since (an operator finished), never tightened.
    let planning = Instant::now();
    let ops = if paused {
        schedulers.plan_requested(&snap)
    } else {
        schedulers.plan(&snap)
    };
    metrics
        .scheduler_plan_micros
        .store(micros(planning.elapsed()), Ordering::Relaxed);
    operator_events::record_planned(node, term, &ops);
    tracing::debug!(
        regions = snap.regions.len(),
        planned = ops.len(),
        urgent = ops.iter().filter(|op| op.urgent()).count(),
        moves_left = snap.moves_left,
        urgent_moves_left = snap.urgent_moves_left,
        "scheduling pass planned"
    );
    let now_ms = snap.now_ms;
    // The loads are the next pass's to change in place.
    drop(snap);
    let mut table = node.scheduling.operators();
    // A later term reset the table while this pass planned: its operators are not ours to add
    // (nobody would settle them, and they would hold the new term's limits).
    let (started, ended) = if table.term() != term {
        (Vec::new(), Vec::new())
    } else {
        table.add(ops, now_ms, &limits);
        let started = table.start_next(&limits, now_ms, paused);
        (started, table.take_ended())
    };
    drop(table);
    operator_events::record_ended(node, term, &ended);
    metrics
        .scheduler_pass_micros
        .store(micros(started_at.elapsed()), Ordering::Relaxed);
    Ok(Pass { paused, started })
}

/// The reason a scheduler's migrations carry (drains keep the kinds they had as commands).
fn migration_reason(scheduler: &'static str) -> &'static str {
    match scheduler {
        DRAIN_SCHEDULER => REASON_DRAIN,
        EVICT_LEADERS_SCHEDULER => REASON_EVICT_LEADERS,
        other => other,
    }
}

/// Operators run by one migration (or several, a batch of a table's regions each): (scheduler,
/// copies, deadline); each is given the (region, target) pairs it moves.
type MigrationGroup = (&'static str, Copies, u64);

/// Runs started operators as migrations: grouped by scheduler, copy (a follower move by its
/// source node too) and deadline (operators planned in one pass share theirs), then in batches
/// of a table's regions, each migration given what is left until its operators' deadline.
fn dispatch(node: &Arc<Node>, term: &LeaderTerm, started: Vec<Entry>) {
    let mut groups: BTreeMap<MigrationGroup, Vec<(u64, u64)>> = BTreeMap::new();
    let mut ids: HashMap<u64, (u64, MoveKind)> = HashMap::new();
    for e in started {
        let (copies, node) = copies_of(&e.op);
        groups
            .entry((e.op.scheduler, copies, e.deadline_ms))
            .or_default()
            .push((e.op.region_id, node));
        ids.insert(e.op.region_id, (e.id, e.op.kind));
    }
    let now_ms = node.clock.unix_ms();
    for ((scheduler, copies, deadline_ms), moves) in groups {
        let reason = migration_reason(scheduler);
        // Past it already (a slow pass), the migration rolls back at its first step and the
        // operators fail as timed out.
        let timeout_ms = deadline_ms.saturating_sub(now_ms);
        for batch in batches(moves, MIGRATION_BATCH_REGIONS_MAX) {
            let ops: Vec<Settled> = batch
                .iter()
                .map(|(r, to)| Settled {
                    id: ids[r].0,
                    region: *r,
                    kind: ids[r].1,
                    to: *to,
                    deadline_ms,
                })
                .collect();
            let node = node.clone();
            let term = term.clone();
            tokio::spawn(async move {
                let result =
                    migrate_region::start_batch(&node, batch, copies, reason, timeout_ms).await;
                if !term.is_current() {
                    return;
                }
                settle(&node, term.term(), &ops, result);
                // A drain or a repair goes on at once with what is left.
                if matches!(
                    scheduler,
                    DRAIN_SCHEDULER | EVICT_LEADERS_SCHEDULER | REPLICA_REPAIR_SCHEDULER
                ) {
                    node.scheduling.wake();
                }
            });
        }
    }
}

/// Which copies of its region `op`'s migration moves, and the node it names the region's move
/// by: a dropped copy's holder, every other's target.
fn copies_of(op: &Operator) -> (Copies, u64) {
    match op.kind {
        MoveKind::Leader => (Copies::Leaders, op.to),
        MoveKind::Follower => (Copies::FollowersOf(op.from), op.to),
        MoveKind::AddFollower => (Copies::NewFollowers, op.to),
        MoveKind::RemoveFollower => (Copies::DroppedFollowers, op.from),
    }
}

/// An operator of a migration, to settle when it ends.
struct Settled {
    id: u64,
    region: u64,
    kind: MoveKind,
    /// The target; for a dropped copy, its holder.
    to: u64,
    /// The operator's deadline, Unix ms.
    deadline_ms: u64,
}

/// Marks each operator of a finished migration done (its route names the target in the copy's
/// role) or failed (timed out, when its migration ended past the deadline), and records the
/// failures in the event log, in leader term `term`.
fn settle(
    node: &Arc<Node>,
    term: u64,
    ops: &[Settled],
    result: Result<cairn_proto::cairnpb::DdlResponse, Status>,
) {
    let (procedure_id, error) = match &result {
        Ok(r) => (r.procedure_id, None),
        Err(e) => (0, Some(e.message().to_string())),
    };
    let mut routes: HashMap<u64, Option<TableRoute>> = HashMap::new();
    let now = node.clock.unix_ms();
    let mut table = node.scheduling.operators();
    for &Settled {
        id,
        region,
        kind,
        to,
        deadline_ms,
    } in ops
    {
        let route = routes.entry(table_id_of(region)).or_insert_with(|| {
            store::get::<TableRoute>(node, &layout().route(table_id_of(region)))
                .ok()
                .flatten()
                .map(|r| r.value)
        });
        let arrived = route
            .as_ref()
            .and_then(|r| r.region(region))
            .is_some_and(|r| match kind {
                MoveKind::Leader => r.leader_node == to,
                MoveKind::Follower | MoveKind::AddFollower => r.follower_nodes.contains(&to),
                MoveKind::RemoveFollower => !r.follower_nodes.contains(&to),
            });
        table.set_procedure(id, procedure_id);
        let (status, outcome) = match (arrived, &error) {
            (true, _) => (OpStatus::Done, String::new()),
            (false, Some(e)) if now >= deadline_ms => (OpStatus::Failed, format!("timed out: {e}")),
            (false, Some(e)) => (OpStatus::Failed, e.clone()),
            (false, None) => (
                OpStatus::Failed,
                "left out of its migration (busy, or its candidate would not open it)".into(),
            ),
        };
        table.finish(id, status, outcome, now);
    }
    let ended = table.take_ended();
    drop(table);
    operator_events::record_ended(node, term, &ended);
}

/// `scheduler plan`: what one pass would plan now, moving nothing.
pub async fn plan(node: Arc<Node>) -> Result<ListOperatorsResponse, Status> {
    cpu_work(move || plan_now(&node)).await
}

/// Runs `f`, work over every route, on a blocking thread rather than a runtime worker (a pass
/// over 600,000 regions held one for 1.5 s, stalling heartbeats and Raft behind it); inline on
/// a current-thread runtime, the deterministic simulation's, where a thread beside the paused
/// clock would make a seed replay differently.
pub(crate) async fn cpu_work<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::CurrentThread {
        return f();
    }
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(Status::internal(format!("scheduling: {e}"))))
}

fn plan_now(node: &Node) -> Result<ListOperatorsResponse, Status> {
    let mut snap = node.scheduling.snapshot(node)?;
    let schedulers = configured(node)?;
    node.scheduling
        .operators()
        .limit(&mut snap, &limits(&node.config));
    let operators = schedulers
        .plan(&snap)
        .iter()
        .map(operators::plan_view)
        .collect();
    Ok(ListOperatorsResponse { operators })
}

/// `operator list`.
pub fn list_operators(node: &Node, finished: bool) -> ListOperatorsResponse {
    let table = node.scheduling.operators();
    ListOperatorsResponse {
        operators: table
            .list(finished)
            .into_iter()
            .map(operators::view)
            .collect(),
    }
}

/// `operator show`: a running one with its migration's progress.
pub fn get_operator(node: &Node, id: u64) -> Result<OperatorView, Status> {
    let entry = node.scheduling.operators().get(id).cloned();
    let entry = entry.ok_or_else(|| Status::not_found(format!("operator {id} not found")))?;
    let mut v = operators::view(&entry);
    if entry.status != OpStatus::Running {
        return Ok(v);
    }
    let region = entry.op.region_id;
    let Some((record, migration)) = region_view::running_migration(node, region)? else {
        return Ok(v); // Not started yet, or just ended.
    };
    // Another's migration of the region (a failover's) is not this operator's.
    if migration.reason != migration_reason(entry.op.scheduler) {
        return Ok(v);
    }
    let at = engine::parse_step::<MigrateRegionStep>(migrate_region::KIND, &record.step).ok();
    if at == Some(MigrateRegionStep::Rollback) {
        return Ok(v);
    }
    if let Some(steps) = migration.steps_of(region) {
        operators::with_progress(&mut v, record.id, &steps, at.and_then(|s| s.phase()));
    }
    Ok(v)
}

/// `operator cancel`: recorded in the event log at once, in the term the table serves (a
/// deposed leader's record is refused).
pub fn cancel_operator(node: &Arc<Node>, id: u64) -> Result<OperatorView, Status> {
    let now = node.clock.unix_ms();
    let (cancelled, ended, term) = {
        let mut table = node.scheduling.operators();
        let cancelled = table.cancel(id, now);
        (cancelled, table.take_ended(), table.term())
    };
    operator_events::record_ended(node, term, &ended);
    match cancelled {
        Ok(e) => Ok(operators::view(&e)),
        Err(why) if why.contains("not found") => Err(Status::not_found(why)),
        Err(why) => Err(Status::failed_precondition(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Per kind of move: the steps an operator's view shows are the steps its migration walks
    /// (the procedure's record built for it, as `dispatch` starts it, asked for its steps).
    #[test]
    fn an_operators_steps_are_the_steps_its_migration_walks() {
        use cairn_meta::{LeaderState, RegionRoute};
        use cairn_sched::{Priority, Step};
        let op = |kind: MoveKind, scheduler: &'static str, from: u64, to: u64| Operator {
            region_id: 1 << 32,
            kind,
            from,
            to,
            to_follows: false,
            scheduler,
            priority: Priority::Low,
            reason: String::new(),
            figures: Vec::new(),
        };
        let route = |followers: &[u64]| RegionRoute {
            region_id: 1 << 32,
            leader_node: 1,
            follower_nodes: followers.to_vec(),
            leader_state: LeaderState::Active,
        };
        let balance = "balance-region";
        let handover = Operator {
            to_follows: true,
            ..op(MoveKind::Leader, DRAIN_SCHEDULER, 1, 3)
        };
        let evict = Operator {
            to_follows: true,
            ..op(MoveKind::Leader, EVICT_LEADERS_SCHEDULER, 1, 3)
        };
        let cases = [
            (op(MoveKind::Leader, balance, 1, 2), route(&[3])),
            (handover, route(&[3])),
            (evict, route(&[3])),
            (op(MoveKind::Follower, balance, 3, 2), route(&[3])),
            (
                op(MoveKind::AddFollower, REPLICA_REPAIR_SCHEDULER, 0, 2),
                route(&[3]),
            ),
            (
                op(MoveKind::RemoveFollower, REPLICA_REPAIR_SCHEDULER, 3, 0),
                route(&[3, 2]),
            ),
        ];
        for (op, r) in cases {
            let (copies, node) = copies_of(&op);
            let migration = migrate_region::MigrateRegion {
                moves: vec![migrate_region::RegionMove::of(&r, copies, node)],
                reason: migration_reason(op.scheduler).to_string(),
                deadline_ms: 0,
                left_out: Vec::new(),
            };
            let walked = migration.steps_of(op.region_id).unwrap();
            assert_eq!(walked, op.steps(), "{op:?}");
            let opens = walked.iter().any(|s| matches!(s, Step::OpenRegion { .. }));
            assert_eq!(opens, !op.to_follows && op.kind != MoveKind::RemoveFollower);
        }
    }

    #[test]
    fn a_summary_of_an_older_version_reads_with_no_node_stats() {
        let old = br#"{"last_moved":[[7,1000]],"loads":[[7,2.5,1.0]]}"#;
        let state: SchedulingState = codec::decode(b"k", old).unwrap();
        assert_eq!(state.last_moved, [(7, 1000)]);
        assert_eq!(state.written_ms, 0);
        assert!(state.node_stats.is_empty());
        assert!(state.last_left.is_empty());
    }

    #[test]
    fn the_nodes_regions_left_are_restored_latest_first_and_bounded() {
        let stored = vec![(7, 1_000, vec![5, 4, 3, 2, 1]), (8, 2_000, vec![9])];
        let restored = restored_left(stored);
        let nodes = |r: u64| restored[&r].1.nodes().collect::<Vec<u64>>();
        assert_eq!(
            nodes(7),
            [5, 4, 3],
            "the latest {}",
            cairn_sched::LEFT_NODES_MAX
        );
        assert_eq!(restored[&7].0, 1_000);
        assert_eq!(nodes(8), [9]);
    }

    #[test]
    fn node_stats_survive_the_round_trip_through_the_store_encoding() {
        let sample = stats_history::NodeStatsRecord {
            at_ms: 1_767_225_600_123,
            report_interval_ms: 3_000,
            rcus: 60,
            wcus: 30,
            table_count: 2,
            region_count: 5,
            cpu_usage: 0.25,
            load: 0.5,
            disk_read_bytes_per_sec: 1_000,
            disk_write_bytes_per_sec: 2_000,
        };
        let state = SchedulingState {
            written_ms: 1_767_225_601_000,
            node_stats: vec![NodeStatsSummary {
                node_id: 1001,
                samples: vec![sample],
            }],
            ..Default::default()
        };
        let back: SchedulingState = codec::decode(b"k", &codec::encode(&state)).unwrap();
        assert_eq!(back.written_ms, state.written_ms);
        assert_eq!(back.node_stats, state.node_stats);
    }
}
