//! REGION MIGRATION: move regions' leadership from one datanode to another, never letting two
//! of them hold a write lease for one region at once.
//!
//! open the candidate as a follower (skipped when it already follows the region) → mark the
//! route `downgrading` (no lease is renewed from then on) and tell the old leader to downgrade →
//! wait until its lease is surely over, or it acknowledged the downgrade → upgrade the candidate,
//! leased from when the instruction arrives → write the route naming the candidate the active
//! leader (a new route version: caches and the metadata watch see it) → close the region on the
//! old leader → done.
//!
//! Each stored step is a [`Phase`]; what a region's move does in it is [`cairn_sched::Move::step`]
//! (a follower copy moved, added or dropped skips the downgrade and has its route written in the
//! upgrade step), the same steps an operator's view shows ([`RegionMove::plan`]).
//!
//! Every step is stored before its effects and is idempotent, so a new Cairn leader resumes at
//! any of them. A step that keeps failing, or the migration's deadline passing before the route
//! names the candidate, rolls back: the candidate is downgraded or closed, its lease waited out
//! if it did not answer, the route is restored to the old leader and the old leader upgraded
//! again. Once the route names the candidate the migration only goes forward.
//!
//! A migration moves one region (`MigrateRegion`, reason "manual") or a batch of up to
//! [`MIGRATION_BATCH_REGIONS_MAX`] (failover, drain and evict-leaders, see
//! [`crate::leader::failover`]). Every step acts on the whole batch at once: one instruction per
//! datanode, one route write per table, one stored record, so a batch costs about the Raft writes
//! one region did. Each region's part of a step is idempotent on its own; a region that cannot
//! go on (its candidate would not open it, its table was dropped) is left out of the batch, and a
//! rollback moves forward the regions whose route already names their candidate and puts the
//! others back. Failover's old leaders are dead: their downgrade fails at once and their leases
//! are waited out.

use super::engine::{self, Kind, Next, Step, Txn};
use super::lock::{self, Mode};
use super::{begin_locked, detached, Ctx};
use crate::errors;
use crate::leader::heartbeat::registry::NodeState;
use crate::leader::meta::regions::{
    describe, is_down, NodeFailure, RegionAction, RegionInstructions,
};
use crate::leader::node::Node;
use crate::replica::meta::store::{self, layout, put_op, unchanged_since};
use cairn_meta::route::table_id_of;
use cairn_meta::{codec, LeaderState, TableInfo, TableRoute};
use cairn_proto::cairnpb::{DdlResponse, MigrateRegionRequest, NodeRole};
use cairn_sched::{Move, MoveKind, Phase};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Status};

pub const KIND: &str = "migrate_region";
/// A migration's deadline when the request names none.
pub const REGION_MIGRATION_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Times a route write is tried again after another procedure wrote the same table's route
/// between our read and our write (migrations of other regions of the table).
pub const ROUTE_UPDATE_ATTEMPTS_MAX: usize = 64;
/// How often a migration checks whether the old leader's lease is over.
const LEASE_POLL_MS: u64 = 50;
/// Regions one migration procedure moves at most (failover and drain split larger sets): bounds
/// the stored record and the instructions a step sends.
pub const MIGRATION_BATCH_REGIONS_MAX: usize = 256;

/// Why a migration runs.
pub const REASON_MANUAL: &str = "manual";
pub const REASON_FAILOVER: &str = "failover";
pub const REASON_DRAIN: &str = "drain";
pub const REASON_EVICT_LEADERS: &str = "evict_leaders";

/// The stored steps of a region migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateRegionStep {
    /// Open the region on the candidate as a follower (nothing when it already follows).
    OpenCandidate,
    /// Mark the route downgrading, downgrade the old leader, wait for its lease to end.
    DowngradeLeader,
    /// Upgrade the candidate and write the route naming it the active leader.
    UpgradeCandidate,
    /// Close the region on the old leader (downgrade it, when evicting leaders: it stays a
    /// follower).
    CloseOld,
    /// Ended (the record's final step).
    Done,
    /// Put the region back on the old leader, then end as failed.
    Rollback,
}

impl MigrateRegionStep {
    /// The phase of regions' moves it runs; None for the ending steps.
    pub fn phase(self) -> Option<Phase> {
        match self {
            Self::OpenCandidate => Some(Phase::Open),
            Self::DowngradeLeader => Some(Phase::Downgrade),
            Self::UpgradeCandidate => Some(Phase::Upgrade),
            Self::CloseOld => Some(Phase::Close),
            Self::Done | Self::Rollback => None,
        }
    }
}

impl Step for MigrateRegionStep {
    const ALL: &'static [Self] = &[
        Self::OpenCandidate,
        Self::DowngradeLeader,
        Self::UpgradeCandidate,
        Self::CloseOld,
        Self::Done,
        Self::Rollback,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::OpenCandidate => "open_candidate",
            Self::DowngradeLeader => "downgrade_leader",
            Self::UpgradeCandidate => "upgrade_candidate",
            Self::CloseOld => "close_old",
            Self::Done => "done",
            Self::Rollback => "rollback",
        }
    }
}

/// One region's move, as the procedure stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionMove {
    pub region_id: u64,
    pub from: u64,
    pub to: u64,
    /// The candidate already followed the region: nothing is opened, and a rollback leaves it a
    /// follower.
    pub to_was_follower: bool,
    /// A follower copy moves (`from` follows the region; `to` follows it instead), not the
    /// leadership: nothing is downgraded, upgraded or leased.
    #[serde(default)]
    pub follower: bool,
}

impl RegionMove {
    /// The move of region `r`'s `copies` to `node` (for a dropped copy: off `node`).
    pub fn of(r: &cairn_meta::RegionRoute, copies: Copies, node: u64) -> RegionMove {
        RegionMove {
            region_id: r.region_id,
            from: match copies {
                Copies::Leaders => r.leader_node,
                Copies::FollowersOf(f) => f,
                Copies::NewFollowers => 0,
                Copies::DroppedFollowers => node,
            },
            to: match copies {
                Copies::DroppedFollowers => 0,
                _ => node,
            },
            to_was_follower: copies != Copies::DroppedFollowers && r.follower_nodes.contains(&node),
            follower: copies != Copies::Leaders,
        }
    }

    /// A new follower copy (`from` is 0, no node has that id): `to` is added to the followers
    /// and nothing is closed.
    fn added(&self) -> bool {
        self.from == 0
    }

    /// A follower copy dropped (`to` is 0): `from` leaves the followers and its copy is closed;
    /// nothing is opened.
    fn removed(&self) -> bool {
        self.to == 0
    }

    fn table_id(&self) -> u64 {
        table_id_of(self.region_id)
    }

    /// The move as the steps see it; `keeps_old`: the old copy stays a follower (evicting
    /// leaders).
    pub fn plan(&self, keeps_old: bool) -> Move {
        let kind = if self.removed() {
            MoveKind::RemoveFollower
        } else if self.added() {
            MoveKind::AddFollower
        } else if self.follower {
            MoveKind::Follower
        } else {
            MoveKind::Leader
        };
        Move {
            kind,
            from: self.from,
            to: self.to,
            to_follows: self.to_was_follower,
            keeps_source: keeps_old,
        }
    }
}

/// What the procedure stores between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateRegion {
    /// The regions still moving.
    pub moves: Vec<RegionMove>,
    /// "manual", "failover", "drain" or "evict_leaders".
    pub reason: String,
    /// Unix ms by which the routes must name the candidates, or the migration rolls back.
    pub deadline_ms: u64,
    /// Regions left out of the batch on the way, with why (their old leader keeps them; failover
    /// and drain try them again).
    #[serde(default)]
    pub left_out: Vec<(u64, String)>,
}

/// The record's target for a migration of `region_id` (what `ctl procedure list` shows).
pub fn target(region_id: u64) -> String {
    format!("region {region_id}")
}

/// The record's target for a batch.
fn batch_target(moves: &[RegionMove]) -> String {
    match moves {
        [one] => target(one.region_id),
        _ if moves.iter().all(RegionMove::added) => {
            let to: BTreeSet<u64> = moves.iter().map(|m| m.to).collect();
            format!("{} regions, new copies on node {}", moves.len(), join(&to))
        }
        _ if moves.iter().all(RegionMove::removed) => {
            let from: BTreeSet<u64> = moves.iter().map(|m| m.from).collect();
            format!(
                "{} regions, copies dropped from node {}",
                moves.len(),
                join(&from)
            )
        }
        _ => {
            let from: BTreeSet<u64> = moves.iter().map(|m| m.from).collect();
            format!("{} regions of node {}", moves.len(), join(&from))
        }
    }
}

fn join(ids: &BTreeSet<u64>) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

/// The lock only one migration of a region holds.
pub fn region_lock(region_id: u64) -> String {
    format!("region/{region_id}")
}

/// Which copy of each region a batch moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Copies {
    /// The leadership, from the region's leader.
    Leaders,
    /// The node's follower copies.
    FollowersOf(u64),
    /// New follower copies, for regions short of `region_followers`: nothing gives one up.
    NewFollowers,
    /// Follower copies beyond `region_followers`, dropped: the batch's (region, node) pairs name
    /// the node whose copy goes, not a target.
    DroppedFollowers,
}

/// Runs `MigrateRegion` on the leader.
pub async fn run(node: &Arc<Node>, req: MigrateRegionRequest) -> Result<DdlResponse, Status> {
    if req.region_id == 0 {
        return Err(Status::invalid_argument("region_id: must be set"));
    }
    if req.to_node == 0 {
        return Err(Status::invalid_argument("to_node: must be set"));
    }
    let max = node.config.ddl_timeout_ms;
    if req.timeout_ms > max {
        return Err(Status::invalid_argument(format!(
            "timeout_ms: at most {max} (ddl_timeout_ms), got {}",
            req.timeout_ms
        )));
    }
    let timeout = match req.timeout_ms {
        0 => REGION_MIGRATION_TIMEOUT_MS_DEFAULT.min(max),
        t => t,
    };
    start(node, req.region_id, req.to_node, REASON_MANUAL, timeout).await
}

/// Starts a migration of `region_id` to `to` and waits for its outcome: checks that the region
/// exists and that `to` is a live datanode other than its leader, takes the region's lock (a
/// region already moving is refused, not waited for), then runs the steps.
pub async fn start(
    node: &Arc<Node>,
    region_id: u64,
    to: u64,
    reason: &str,
    timeout_ms: u64,
) -> Result<DdlResponse, Status> {
    start_moves(
        node,
        vec![(region_id, to)],
        Copies::Leaders,
        reason,
        timeout_ms,
        true,
    )
    .await
}

/// Starts one migration of every (region, candidate) of `wanted` (at most
/// [`MIGRATION_BATCH_REGIONS_MAX`]) and waits for its outcome. Regions that cannot move (gone,
/// already led by their candidate or moving, their candidate not live) are left out; an error
/// when none can.
pub async fn start_batch(
    node: &Arc<Node>,
    wanted: Vec<(u64, u64)>,
    copies: Copies,
    reason: &str,
    timeout_ms: u64,
) -> Result<DdlResponse, Status> {
    if wanted.len() > MIGRATION_BATCH_REGIONS_MAX {
        return Err(errors::internal(format!(
            "a migration moves at most {MIGRATION_BATCH_REGIONS_MAX} regions \
             (migration_batch_regions_max), asked {}",
            wanted.len()
        )));
    }
    start_moves(node, wanted, copies, reason, timeout_ms, false).await
}

/// [`start`] (`strict`: any region that cannot move is the caller's error) and [`start_batch`]
/// (`copies`: which copy of each region moves, or is added).
async fn start_moves(
    node: &Arc<Node>,
    wanted: Vec<(u64, u64)>,
    copies: Copies,
    reason: &str,
    timeout_ms: u64,
    strict: bool,
) -> Result<DdlResponse, Status> {
    // The tables' names, for their locks.
    let mut tables: BTreeMap<u64, TableInfo> = BTreeMap::new();
    for (region_id, _) in &wanted {
        let table_id = table_id_of(*region_id);
        if tables.contains_key(&table_id) {
            continue;
        }
        match store::get::<TableInfo>(node, &layout().table(table_id))? {
            Some(t) => {
                tables.insert(table_id, t.value);
            }
            None if strict => return Err(region_not_found(*region_id)),
            None => {}
        }
    }
    // A region already moving is refused (strict) or left out, never waited for.
    let wanted: Vec<(u64, u64)> = wanted
        .into_iter()
        .filter(|(r, _)| tables.contains_key(&table_id_of(*r)))
        .filter(|(r, _)| strict || !region_busy(node, *r))
        .collect();
    let reason = reason.to_string();
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        // Databases before tables, each in order: every procedure takes them that way.
        let mut databases = BTreeSet::new();
        let mut names = BTreeSet::new();
        for t in tables.values() {
            let n = &t.name;
            databases.insert(lock::database_lock(&n.catalog, &n.schema));
            names.insert(lock::table_lock(&n.catalog, &n.schema, &n.name));
        }
        let wait = databases
            .into_iter()
            .chain(names)
            .map(|name| (name, Mode::Shared))
            .collect();
        let exclusive = wanted
            .iter()
            .map(|(r, _)| (region_lock(*r), Mode::Exclusive))
            .collect();
        let first = wanted.first().map_or(0, |(r, _)| *r);
        let mut ctx = begin_locked(&node, KIND, target(first), wait, exclusive)
            .await
            .map_err(|e| match e {
                super::Begin::Busy(_) if strict => already_moving(first),
                super::Begin::Busy(lock) => Status::unavailable(format!(
                    "{lock} was taken meanwhile; the migration is tried again later"
                )),
                super::Begin::Failed(status) => status,
            })?;
        // Under the locks, routes change only by us (or migrations of other regions).
        let tables = wanted.iter().map(|(r, _)| table_id_of(*r));
        let routes = read_routes(&node, tables)?;
        let mut candidates: HashMap<u64, Result<(), Status>> = HashMap::new();
        let mut moves = Vec::with_capacity(wanted.len());
        for (region_id, to) in wanted {
            let table_id = table_id_of(region_id);
            let region = routes[&table_id].as_ref().and_then(|r| r.region(region_id));
            let holds = |r: &cairn_meta::RegionRoute, n: u64| {
                r.leader_node == n || r.follower_nodes.contains(&n)
            };
            let wanted_followers = node.config.region_followers as usize;
            let checked = match (region, copies) {
                (None, _) => Err(region_not_found(region_id)),
                (Some(r), Copies::FollowersOf(f))
                    if !r.follower_nodes.contains(&f) || holds(r, to) =>
                {
                    Err(Status::failed_precondition(format!(
                        "region {region_id}: node {f} no longer follows it, or node {to} holds it"
                    )))
                }
                (Some(r), Copies::NewFollowers)
                    if holds(r, to) || r.follower_nodes.len() >= wanted_followers =>
                {
                    Err(Status::failed_precondition(format!(
                        "region {region_id}: node {to} holds it, or it has its \
                         {wanted_followers} follower copies (region_followers)"
                    )))
                }
                (Some(r), Copies::DroppedFollowers)
                    if !r.follower_nodes.contains(&to)
                        || r.follower_nodes.len() <= wanted_followers =>
                {
                    Err(Status::failed_precondition(format!(
                        "region {region_id}: node {to} no longer follows it, or it has no more \
                         than its {wanted_followers} follower copies (region_followers)"
                    )))
                }
                (Some(_), Copies::DroppedFollowers) => Ok(()),
                (Some(_), Copies::FollowersOf(_) | Copies::NewFollowers) => candidates
                    .entry(to)
                    .or_insert_with(|| check_candidate(&node, region_id, 0, to))
                    .clone(),
                (Some(r), Copies::Leaders) if r.leader_node == to => {
                    check_candidate(&node, region_id, r.leader_node, to)
                }
                (Some(_), Copies::Leaders) => candidates
                    .entry(to)
                    .or_insert_with(|| check_candidate(&node, region_id, 0, to))
                    .clone(),
            };
            match (checked, region) {
                (Ok(()), Some(r)) => moves.push(RegionMove::of(r, copies, to)),
                (Err(e), _) if strict => return Err(e),
                (Err(e), _) => {
                    tracing::debug!(region = region_id, to, "not moved: {}", e.message())
                }
                (Ok(()), None) => {}
            }
        }
        if moves.is_empty() {
            return Err(Status::failed_precondition(
                "no region of the batch can move",
            ));
        }
        ctx.record.target = batch_target(&moves);
        let migrate = MigrateRegion {
            moves,
            reason,
            deadline_ms: node.clock.unix_ms() + timeout_ms,
            left_out: Vec::new(),
        };
        // Stored before the candidates open, so the orphan reconciler leaves them alone.
        ctx.record.opening_tables = routes.keys().copied().collect();
        ctx.record.opening_tables.sort_unstable();
        let first = Next::Step(MigrateRegionStep::OpenCandidate, Txn::none());
        engine::start(ctx, migrate, first).await
    })
    .await
}

/// Another procedure holds (or waits for) the region's lock.
fn region_busy(node: &Node, region_id: u64) -> bool {
    let set = vec![(region_lock(region_id), Mode::Exclusive)];
    node.procedures.locks.try_acquire(&set).is_err()
}

fn region_not_found(region_id: u64) -> Status {
    Status::not_found(format!("region {region_id} not found"))
}

fn already_moving(region_id: u64) -> Status {
    Status::failed_precondition(format!(
        "region {region_id} is already being migrated (see `cairn ctl region show {region_id}`)"
    ))
}

/// `to` must be a live datanode that does not lead the region already (`leader`).
fn check_candidate(node: &Node, region_id: u64, leader: u64, to: u64) -> Result<(), Status> {
    if to == leader {
        return Err(Status::failed_precondition(format!(
            "to_node: region {region_id} is already led by node {to}"
        )));
    }
    let registry = node.heartbeats.registry();
    let entry = registry
        .get(to)
        .ok_or_else(|| Status::not_found(format!("to_node: node {to} is not a known datanode")))?;
    if entry.identity.role != NodeRole::Datanode as i32 {
        return Err(Status::invalid_argument(format!(
            "to_node: node {to} is not a datanode"
        )));
    }
    let state = entry.state();
    let failed = node.heartbeats.is_failed(to);
    if state != NodeState::Alive || failed {
        let why = if failed {
            "judged failed".to_string()
        } else {
            state.as_str().to_string()
        };
        return Err(Status::failed_precondition(format!(
            "to_node: node {to} is {why}; a region moves only to a live datanode"
        )));
    }
    Ok(())
}

impl Kind for MigrateRegion {
    const KIND: &'static str = KIND;
    type Step = MigrateRegionStep;
    const ROLLBACK: Option<MigrateRegionStep> = Some(MigrateRegionStep::Rollback);

    async fn run(
        &mut self,
        ctx: &mut Ctx,
        step: MigrateRegionStep,
    ) -> Result<Next<MigrateRegionStep>, Status> {
        match step {
            MigrateRegionStep::OpenCandidate => self.open_candidate(ctx).await,
            MigrateRegionStep::DowngradeLeader => self.downgrade_leader(ctx).await,
            MigrateRegionStep::UpgradeCandidate => self.upgrade_candidate(ctx).await,
            MigrateRegionStep::CloseOld => self.close_old(ctx).await,
            MigrateRegionStep::Rollback => self.rollback(ctx).await,
            MigrateRegionStep::Done => Err(engine::ProcedureError::NotRunnable {
                kind: KIND.into(),
                step: step.name().into(),
            }
            .into()),
        }
    }

    fn gave_up(
        &mut self,
        _ctx: &mut Ctx,
        step: MigrateRegionStep,
        error: String,
    ) -> Next<Self::Step> {
        match step {
            // The routes name the candidates: only forward. The old leaders' copies are closed
            // by the orphan reconciler once they are reachable.
            MigrateRegionStep::CloseOld => Next::Done(MigrateRegionStep::Done, Txn::none()),
            _ => Next::Rollback(error),
        }
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        let why = match self.left_out.len() {
            0 => String::new(),
            n => format!("{n} regions left out: {}", self.left_out[0].1),
        };
        record(ctx, &self.reason, &self.moves, "done", why);
        // Every finished move starts its region's cool-down, whoever asked for it: a balancing
        // scheduler does not move straight back what an operator or failover just placed.
        let now = ctx.node.clock.unix_ms();
        let moved = self.moves.iter().map(|m| m.region_id);
        ctx.node.scheduling.operators().moved(moved, now);
        DdlResponse {
            procedure_id: ctx.record.id,
            revision,
            ..Default::default()
        }
    }
}

/// Records how a migration of `moves` ended in the event log (kind: its reason, "migration"
/// when manual): one event for the batch, naming every region.
fn record(ctx: &Ctx, reason: &str, moves: &[RegionMove], outcome: &str, why: String) {
    // Failover, drain and evict-leaders have kinds of their own; manual and scheduler
    // migrations are "migration", with the reason among the figures.
    let kind = match reason {
        REASON_FAILOVER | REASON_DRAIN | REASON_EVICT_LEADERS => reason,
        _ => "migration",
    };
    let from: BTreeSet<u64> = moves
        .iter()
        .filter(|m| !m.added())
        .map(|m| m.from)
        .collect();
    let to: BTreeSet<u64> = moves
        .iter()
        .filter(|m| !m.removed())
        .map(|m| m.to)
        .collect();
    let elapsed = ctx
        .node
        .clock
        .unix_ms()
        .saturating_sub(ctx.record.created_ms);
    let (subject, what) = match moves {
        [one] => (target(one.region_id), format!("region {}", one.region_id)),
        _ => (batch_target(moves), format!("{} regions", moves.len())),
    };
    let mut message = match (from.is_empty(), to.is_empty()) {
        (true, _) => format!("{what}: new follower copy on node {}: {outcome}", join(&to)),
        (_, true) => format!(
            "{what}: follower copy on node {} dropped: {outcome}",
            join(&from)
        ),
        _ => format!(
            "{what} from node {} to node {}: {outcome}",
            join(&from),
            join(&to)
        ),
    };
    if !why.is_empty() {
        message.push_str(&format!(" ({why})"));
    }
    let ids: Vec<String> = moves.iter().map(|m| m.region_id.to_string()).collect();
    crate::leader::events::record(
        &ctx.node,
        ctx.term,
        kind,
        subject,
        message,
        &[
            ("from", join(&from)),
            ("to", join(&to)),
            ("regions", moves.len().to_string()),
            ("region_ids", ids.join(",")),
            ("outcome", outcome.to_string()),
            ("elapsed_ms", elapsed.to_string()),
            ("procedure", ctx.record.id.to_string()),
            ("reason", reason.to_string()),
        ],
    );
}

/// Whether node `id` is judged failed or down: it answers no instruction until it is back.
fn gone(node: &Node, id: u64) -> bool {
    is_down(node, id) || node.heartbeats.is_failed(id)
}

/// The nodes of `failed`.
fn nodes_of(failed: &[NodeFailure]) -> HashSet<u64> {
    failed.iter().map(|f| f.node).collect()
}

impl MigrateRegion {
    /// Evicting leaders keeps the old leader as a follower (downgraded, not closed).
    fn keeps_old(&self) -> bool {
        self.reason == REASON_EVICT_LEADERS
    }

    /// The steps it walks for `region_id` (what an operator's view shows), if it moves it.
    pub fn steps_of(&self, region_id: u64) -> Option<Vec<cairn_sched::Step>> {
        let m = self.moves.iter().find(|m| m.region_id == region_id)?;
        Some(m.plan(self.keeps_old()).steps())
    }

    /// What `m` does in `phase` (see [`RegionMove::plan`]).
    fn step(&self, m: &RegionMove, phase: Phase) -> Option<cairn_sched::Step> {
        m.plan(self.keeps_old()).step(phase)
    }

    /// The (node, region) of every move whose step in `phase` is `pick`'s.
    fn targets(
        &self,
        phase: Phase,
        pick: impl Fn(cairn_sched::Step) -> Option<u64>,
    ) -> Vec<(u64, u64)> {
        self.moves
            .iter()
            .filter_map(|m| Some((pick(self.step(m, phase)?)?, m.region_id)))
            .collect()
    }

    fn past_deadline(&self, ctx: &Ctx) -> bool {
        ctx.node.clock.unix_ms() >= self.deadline_ms
    }

    fn timed_out(&self) -> String {
        match self.moves.as_slice() {
            [m] => format!(
                "region {} was not led by node {} before the migration's deadline",
                m.region_id, m.to
            ),
            moves => format!(
                "{} regions were not led by their candidates before the migration's deadline",
                moves.len()
            ),
        }
    }

    /// Takes the moves `out` says out of the batch, with why.
    fn leave_out(&mut self, out: impl Fn(&RegionMove) -> bool, why: &str) {
        let (gone, kept): (Vec<_>, Vec<_>) = self.moves.drain(..).partition(|m| out(m));
        for m in gone {
            tracing::info!(
                region = m.region_id,
                from = m.from,
                to = m.to,
                "left out of the migration: {why}"
            );
            self.left_out.push((m.region_id, why.to_string()));
        }
        self.moves = kept;
    }

    async fn open_candidate(&mut self, ctx: &mut Ctx) -> Result<Next<MigrateRegionStep>, Status> {
        if self.past_deadline(ctx) {
            return Ok(Next::Rollback(self.timed_out()));
        }
        let opening = self.targets(Phase::Open, |s| match s {
            cairn_sched::Step::OpenRegion { node } => Some(node),
            _ => None,
        });
        // Region → the node it opens on.
        let opens_on: HashMap<u64, u64> = opening.iter().map(|(n, r)| (*r, *n)).collect();
        let opens = RegionInstructions::on(RegionAction::Open, opening, false);
        let failed = match opens.is_empty() {
            true => Vec::new(),
            false => opens.send(&ctx.node, ctx.reconnect_deadline).await,
        };
        if !failed.is_empty() {
            let why = format!("opening the region on the candidate: {}", describe(&failed));
            let nodes = nodes_of(&failed);
            // A candidate judged failed opens nothing however often it is asked: its moves end
            // now, not at the deadline (their regions' locks would keep repairs out meanwhile).
            let dead: HashSet<u64> = nodes
                .iter()
                .copied()
                .filter(|n| gone(&ctx.node, *n))
                .collect();
            let opens_on_one_of = |m: &RegionMove, nodes: &HashSet<u64>| {
                opens_on
                    .get(&m.region_id)
                    .is_some_and(|n| nodes.contains(n))
            };
            let doomed = |m: &RegionMove| opens_on_one_of(m, &dead);
            if self.moves.iter().all(doomed) {
                return Ok(Next::Rollback(why));
            }
            self.leave_out(doomed, &why);
            let stuck = |m: &RegionMove| opens_on_one_of(m, &nodes);
            if self.moves.iter().all(stuck) {
                return Ok(Next::Retry(why));
            }
            // The others go on; nothing was done for these but (maybe) a follower copy, which
            // the orphan reconciler closes once this migration ends.
            self.leave_out(stuck, &why);
        }
        Ok(Next::Step(MigrateRegionStep::DowngradeLeader, Txn::none()))
    }

    /// The moves of leadership (not of follower copies): the ones whose old leader is
    /// downgraded, and its lease over, before their candidate is upgraded.
    fn leader_moves(&self) -> Vec<RegionMove> {
        let downgrades = |m: &&RegionMove| self.step(m, Phase::Downgrade).is_some();
        self.moves.iter().filter(downgrades).cloned().collect()
    }

    async fn downgrade_leader(&mut self, ctx: &mut Ctx) -> Result<Next<MigrateRegionStep>, Status> {
        let leaders = self.leader_moves();
        if leaders.is_empty() {
            // Follower copies only: nobody writes them.
            return Ok(Next::Step(MigrateRegionStep::UpgradeCandidate, Txn::none()));
        }
        // From here no lease of these regions is renewed.
        let routes = update_routes(ctx, &leaders, |m, r| {
            if r.leader_node == m.from && r.leader_state.is_active() {
                r.leader_state = LeaderState::Downgrading;
                true
            } else {
                false
            }
        })
        .await?;
        let downgrading: HashSet<u64> = leaders.iter().map(|m| m.region_id).collect();
        let led_elsewhere = |m: &RegionMove| {
            downgrading.contains(&m.region_id)
                && led_by(&routes, m.region_id).is_none_or(|l| l != m.from)
        };
        if self.moves.iter().all(led_elsewhere) {
            return Ok(Next::Rollback(match self.moves.as_slice() {
                [m] if routes.get(&m.table_id()).is_some_and(Option::is_none) => {
                    "the table was dropped".into()
                }
                [m] => format!("region {} is no longer led by node {}", m.region_id, m.from),
                _ => "no region of the batch is led by its old leader any more".into(),
            }));
        }
        self.leave_out(led_elsewhere, "no longer led by its old leader");
        let leaders = self.leader_moves();
        // Once only: a dead node fails at once, and its lease is waited out instead.
        let downgrades = RegionInstructions::on(
            RegionAction::Downgrade,
            self.targets(Phase::Downgrade, |s| match s {
                cairn_sched::Step::DowngradeLeader { node } => Some(node),
                _ => None,
            }),
            false,
        );
        let node = ctx.node.clone();
        let acked = async move { (downgrades.send_once(&node).await, downgrades) };
        let free: Vec<(u64, u64)> = leaders.iter().map(|m| (m.region_id, m.to)).collect();
        if !wait_until_free(ctx, self, &free, Some(acked), false).await? {
            return Ok(Next::Rollback(self.timed_out()));
        }
        Ok(Next::Step(MigrateRegionStep::UpgradeCandidate, Txn::none()))
    }

    async fn upgrade_candidate(
        &mut self,
        ctx: &mut Ctx,
    ) -> Result<Next<MigrateRegionStep>, Status> {
        let upgrading = self.targets(Phase::Upgrade, |s| match s {
            cairn_sched::Step::UpgradeToLeader { node } => Some(node),
            _ => None,
        });
        // Again after a resume: a new leader knows nothing of its predecessor's grants.
        let free: Vec<(u64, u64)> = upgrading.iter().map(|(n, r)| (*r, *n)).collect();
        if !wait_until_free(ctx, self, &free, None::<NoAck>, false).await? {
            return Ok(Next::Rollback(self.timed_out()));
        }
        // Region → its candidate.
        let upgrades_on: HashMap<u64, u64> = free.into_iter().collect();
        let upgrades = RegionInstructions::on(RegionAction::Upgrade, upgrading, true);
        let failed = match upgrades.is_empty() {
            true => Vec::new(),
            false => upgrades.send(&ctx.node, ctx.reconnect_deadline).await,
        };
        // The candidates that took their lease are named leaders now (follower copies are
        // swapped); the others are retried (a repeat changes nothing for the first).
        let nodes = nodes_of(&failed);
        let upgraded: Vec<RegionMove> = self
            .moves
            .iter()
            .filter(|m| {
                upgrades_on
                    .get(&m.region_id)
                    .is_none_or(|n| !nodes.contains(n))
            })
            .cloned()
            .collect();
        let keep = self.keeps_old();
        let routes = update_routes(ctx, &upgraded, |m, r| {
            let plan = m.plan(keep);
            match plan.kind {
                MoveKind::AddFollower => {
                    let add = r.leader_node != m.to && !r.follower_nodes.contains(&m.to);
                    if add {
                        r.follower_nodes.push(m.to);
                    }
                    add
                }
                MoveKind::RemoveFollower => {
                    let drop = r.follower_nodes.contains(&m.from);
                    r.follower_nodes.retain(|f| *f != m.from);
                    drop
                }
                MoveKind::Follower => {
                    let swap = r.follower_nodes.contains(&m.from)
                        && r.leader_node != m.to
                        && !r.follower_nodes.contains(&m.to);
                    if swap {
                        r.follower_nodes.retain(|f| *f != m.from);
                        r.follower_nodes.push(m.to);
                    }
                    swap
                }
                MoveKind::Leader if r.leader_node != m.from => false,
                MoveKind::Leader => {
                    r.leader_node = m.to;
                    r.follower_nodes.retain(|f| *f != m.to && *f != m.from);
                    if plan.keeps_source {
                        r.follower_nodes.push(m.from);
                    }
                    r.leader_state = LeaderState::Active;
                    true
                }
            }
        })
        .await?;
        if !failed.is_empty() {
            let why = format!("upgrading the candidate: {}", describe(&failed));
            // Candidates judged failed will not take the lease: the old leaders take their
            // regions back now rather than stay downgraded until the deadline.
            if failed.iter().all(|f| gone(&ctx.node, f.node)) {
                return Ok(Next::Rollback(why));
            }
            return Ok(Next::Retry(why));
        }
        // Only a dropped table gets here (the regions' locks keep other migrations out).
        let not_moved = |m: &RegionMove| !arrived(&routes, m);
        if self.moves.iter().all(not_moved) {
            return Ok(Next::Rollback(match self.moves.as_slice() {
                [m] => format!(
                    "region {} is gone or no longer led by node {}",
                    m.region_id, m.from
                ),
                _ => "every region of the batch is gone".into(),
            }));
        }
        self.leave_out(not_moved, "gone");
        Ok(Next::Step(MigrateRegionStep::CloseOld, Txn::none()))
    }

    async fn close_old(&mut self, ctx: &mut Ctx) -> Result<Next<MigrateRegionStep>, Status> {
        // Evicting leaders keeps the old copy as a follower: downgraded (again, if its first
        // downgrade went unanswered), not closed.
        let closes = self.targets(Phase::Close, |s| match s {
            cairn_sched::Step::CloseRegion { node } => Some(node),
            _ => None,
        });
        let keeps = self.targets(Phase::Close, |s| match s {
            cairn_sched::Step::KeepFollower { node } => Some(node),
            _ => None,
        });
        let (closed, kept) = futures::join!(
            send_once_if_any(&ctx.node, RegionAction::Close, closes),
            send_once_if_any(&ctx.node, RegionAction::Downgrade, keeps)
        );
        let failed: Vec<NodeFailure> = closed.into_iter().chain(kept).collect();
        // Failover's old leaders are dead, and so may be the source of a repaired copy: their
        // copies wait for the orphan reconciler.
        let dead = |f: &NodeFailure| gone(&ctx.node, f.node);
        if !failed.is_empty() && self.reason != REASON_FAILOVER && !failed.iter().all(dead) {
            return Ok(Next::Retry(format!(
                "closing the region on the old leader: {}",
                describe(&failed)
            )));
        }
        // A dead old leader is told when it comes back: the orphan reconciler closes regions no
        // route places on a node.
        Ok(Next::Done(MigrateRegionStep::Done, Txn::none()))
    }

    /// Puts the regions back on their old leaders, then ends as failed; regions whose route
    /// already names the candidate go forward instead (their migration happened).
    async fn rollback(&mut self, ctx: &mut Ctx) -> Result<Next<MigrateRegionStep>, Status> {
        let why = ctx.record.last_error.clone();
        let routes = read_routes(&ctx.node, self.moves.iter().map(RegionMove::table_id))?;
        let (forward, back): (Vec<RegionMove>, Vec<RegionMove>) = self
            .moves
            .iter()
            .cloned()
            .partition(|m| arrived(&routes, m));
        let mut notes = Vec::new();
        if !back.is_empty() {
            // The candidates may have been upgraded: downgrade them (followers before) or close
            // them.
            let undo = |was_follower: bool, action| {
                RegionInstructions::on(
                    action,
                    back.iter()
                        .filter(|m| m.to_was_follower == was_follower && !m.removed())
                        .map(|m| (m.to, m.region_id)),
                    false,
                )
            };
            let (downgrades, closes) = (
                undo(true, RegionAction::Downgrade),
                undo(false, RegionAction::Close),
            );
            let (a, b) =
                futures::join!(downgrades.send_once(&ctx.node), closes.send_once(&ctx.node));
            let failed: Vec<NodeFailure> = a.into_iter().chain(b).collect();
            let nodes = nodes_of(&failed);
            {
                let mut leases = ctx.node.heartbeats.region_leases();
                for m in back.iter().filter(|m| !nodes.contains(&m.to)) {
                    leases.release(m.region_id, m.to);
                }
            }
            if !failed.is_empty() {
                notes.push(format!("candidate: {}", describe(&failed)));
            }
            let restore: Vec<RegionMove> = back
                .iter()
                .filter(|m| !m.follower && led_by(&routes, m.region_id) == Some(m.from))
                .cloned()
                .collect();
            if !restore.is_empty() {
                // Their leases (if the upgrade reached them) must be over before the old
                // leaders write.
                let free: Vec<(u64, u64)> = restore.iter().map(|m| (m.region_id, m.from)).collect();
                wait_until_free(ctx, self, &free, None::<NoAck>, true).await?;
                update_routes(ctx, &restore, |m, r| {
                    if r.leader_node == m.from && !r.leader_state.is_active() {
                        r.leader_state = LeaderState::Active;
                        true
                    } else {
                        false
                    }
                })
                .await?;
                // The old leaders may have downgraded: they take writes again, leased from now.
                let failed = RegionInstructions::on(
                    RegionAction::Upgrade,
                    restore.iter().map(|m| (m.from, m.region_id)),
                    true,
                )
                .send_once(&ctx.node)
                .await;
                if !failed.is_empty() {
                    notes.push(format!("old leader: {}", describe(&failed)));
                }
            }
            let mut error = why.clone();
            if !notes.is_empty() {
                error.push_str(&format!("; rollback could not reach {}", notes.join("; ")));
            }
            record(ctx, &self.reason, &back, "rolled back", error);
        }
        if !forward.is_empty() {
            for m in &back {
                self.left_out
                    .push((m.region_id, format!("rolled back: {why}")));
            }
            self.moves = forward;
            return Ok(Next::Step(MigrateRegionStep::CloseOld, Txn::none()));
        }
        let mut error = why.clone();
        if !notes.is_empty() {
            error.push_str(&format!("; rollback could not reach {}", notes.join("; ")));
        }
        let what = match self.moves.as_slice() {
            [m] => format!("migration of region {} to node {}", m.region_id, m.to),
            moves => format!("migration of {} regions", moves.len()),
        };
        let status = Status::new(
            Code::Aborted,
            format!("{what} failed and was rolled back: {why}"),
        );
        Ok(Next::Fail { error, status })
    }
}

/// Sends `action` to each (node, region) of `targets` once, when there are any; the failures.
async fn send_once_if_any(
    node: &Arc<Node>,
    action: RegionAction,
    targets: Vec<(u64, u64)>,
) -> Vec<NodeFailure> {
    let instructions = RegionInstructions::on(action, targets, false);
    match instructions.is_empty() {
        true => Vec::new(),
        false => instructions.send_once(node).await,
    }
}

/// The node the stored route names the leader of `region_id`, from `routes` (by table).
fn led_by(routes: &HashMap<u64, Option<TableRoute>>, region_id: u64) -> Option<u64> {
    routes
        .get(&table_id_of(region_id))?
        .as_ref()?
        .region(region_id)
        .map(|r| r.leader_node)
}

/// Whether the stored route in `routes` has `m` done: its candidate leads the region (or, for a
/// follower copy, follows it instead of the old node).
fn arrived(routes: &HashMap<u64, Option<TableRoute>>, m: &RegionMove) -> bool {
    let Some(r) = routes
        .get(&m.table_id())
        .and_then(Option::as_ref)
        .and_then(|r| r.region(m.region_id))
    else {
        return false;
    };
    if m.removed() {
        !r.follower_nodes.contains(&m.from)
    } else if m.follower {
        r.follower_nodes.contains(&m.to) && !r.follower_nodes.contains(&m.from)
    } else {
        r.leader_node == m.to
    }
}

/// The stored routes of `tables` (None: dropped).
fn read_routes(
    node: &Node,
    tables: impl Iterator<Item = u64>,
) -> Result<HashMap<u64, Option<TableRoute>>, Status> {
    let mut routes = HashMap::new();
    for table_id in tables {
        if let std::collections::hash_map::Entry::Vacant(e) = routes.entry(table_id) {
            let route = store::get::<TableRoute>(node, &layout().route(table_id))?;
            e.insert(route.map(|r| r.value));
        }
    }
    Ok(routes)
}

/// Applies `change` to each move's region in its table's stored route, one route write per
/// table, all tables at once (see [`update_route`]). Returns the routes as stored after, by
/// table (None: dropped).
async fn update_routes(
    ctx: &Ctx,
    moves: &[RegionMove],
    change: impl Fn(&RegionMove, &mut cairn_meta::RegionRoute) -> bool,
) -> Result<HashMap<u64, Option<TableRoute>>, Status> {
    let mut by_table: BTreeMap<u64, Vec<&RegionMove>> = BTreeMap::new();
    for m in moves {
        by_table.entry(m.table_id()).or_default().push(m);
    }
    let change = &change;
    let writes = by_table.into_iter().map(|(table_id, moves)| async move {
        let route = update_route(ctx, table_id, |route| {
            let mut changed = false;
            for m in &moves {
                if let Some(r) = route
                    .regions
                    .iter_mut()
                    .find(|r| r.region_id == m.region_id)
                {
                    changed |= change(m, r);
                }
            }
            changed
        })
        .await?;
        Ok::<_, Status>((table_id, route))
    });
    futures::future::try_join_all(writes)
        .await
        .map(|routes| routes.into_iter().collect())
}

/// Waits until no node but the one named can hold a lease for each (region, node) of `free`,
/// by this leader's record (with its margin, and its new-term floor). `ack`, when given, is the
/// old leaders' downgrade: the nodes that acknowledge it dropped their leases at once, and they
/// are released. False when the migration's deadline passed first, unless `past_deadline_too` (a
/// rollback: it must wait whatever the deadline, and leases not renewed always run out).
async fn wait_until_free<A>(
    ctx: &Ctx,
    migration: &MigrateRegion,
    free: &[(u64, u64)],
    ack: Option<A>,
    past_deadline_too: bool,
) -> Result<bool, Status>
where
    A: std::future::Future<Output = (Vec<NodeFailure>, RegionInstructions)>,
{
    let mut downgrade = ack.map(Box::pin);
    let poll = Duration::from_millis(LEASE_POLL_MS);
    loop {
        ctx.check_term()?;
        let now = ctx.node.heartbeats.now();
        {
            let leases = ctx.node.heartbeats.region_leases();
            if free
                .iter()
                .all(|(region, node)| leases.free_for(*region, *node, now))
            {
                return Ok(true);
            }
        }
        if !past_deadline_too && migration.past_deadline(ctx) {
            return Ok(false);
        }
        match downgrade.as_mut() {
            Some(fut) => {
                tokio::select! {
                    (failed, sent) = fut => {
                        downgrade = None;
                        // Acknowledged: those nodes dropped their leases before answering.
                        let nodes = nodes_of(&failed);
                        let mut leases = ctx.node.heartbeats.region_leases();
                        for (holder, region) in sent.targets().filter(|(n, _)| !nodes.contains(n)) {
                            leases.release(region, holder);
                        }
                        if !failed.is_empty() {
                            tracing::info!(
                                "downgrade not acknowledged ({}); waiting out the leases",
                                describe(&failed)
                            );
                        }
                    }
                    _ = tokio::time::sleep(poll) => {}
                }
            }
            None => tokio::time::sleep(poll).await,
        }
    }
}

/// The type of "no downgrade to wait for" in [`wait_until_free`].
type NoAck = std::future::Ready<(Vec<NodeFailure>, RegionInstructions)>;

/// Applies `change` to the table's stored route when it says it changed something (bumping the
/// route's version), comparing the route's revision, and tries again on a fresh read when
/// another procedure wrote the route in between (a migration of another region of the table).
/// Returns the route as stored after; None when the table has no route (dropped).
pub async fn update_route(
    ctx: &Ctx,
    table_id: u64,
    change: impl Fn(&mut TableRoute) -> bool,
) -> Result<Option<TableRoute>, Status> {
    let key = layout().route(table_id);
    for _ in 0..ROUTE_UPDATE_ATTEMPTS_MAX {
        ctx.check_term()?;
        let Some(stored) = store::get::<TableRoute>(&ctx.node, &key)? else {
            return Ok(None);
        };
        let mut route = stored.value;
        if !change(&mut route) {
            return Ok(Some(route));
        }
        route.version += 1;
        let compares = vec![unchanged_since(&key, stored.mod_revision)];
        let ops = vec![put_op(&key, codec::encode(&route))];
        let (ok, _, _) = store::txn_here(&ctx.node, ctx.term, compares, ops).await?;
        if ok {
            super::publish(&ctx.node, vec![format!("route/{table_id}")]);
            return Ok(Some(route));
        }
    }
    Err(errors::internal(format!(
        "route of table {table_id} kept changing under {ROUTE_UPDATE_ATTEMPTS_MAX} attempts \
         (route_update_attempts_max)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_step_names_are_stable() {
        let names: Vec<&str> = MigrateRegionStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "open_candidate",
                "downgrade_leader",
                "upgrade_candidate",
                "close_old",
                "done",
                "rollback"
            ]
        );
        for s in MigrateRegionStep::ALL {
            assert_eq!(engine::parse_step(KIND, s.name()), Ok(*s));
        }
    }

    #[test]
    fn the_forward_steps_run_the_phases_in_their_order() {
        let phases: Vec<Phase> = MigrateRegionStep::ALL
            .iter()
            .filter_map(|s| s.phase())
            .collect();
        assert_eq!(phases, Phase::ALL);
    }
}
