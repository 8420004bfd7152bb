//! REGION MIGRATION: move a region's leadership from one datanode to another, never letting two
//! of them hold a write lease at once.
//!
//! open the candidate as a follower (skipped when it already follows the region) → mark the
//! route `downgrading` (no lease is renewed from then on) and tell the old leader to downgrade →
//! wait until its lease is surely over, or it acknowledged the downgrade → upgrade the candidate,
//! leased from when the instruction arrives → write the route naming the candidate the active
//! leader (a new route version: caches and the metadata watch see it) → close the region on the
//! old leader → done.
//!
//! Every step is stored before its effects and is idempotent, so a new Cairn leader resumes at
//! any of them. A step that keeps failing, or the migration's deadline passing before the route
//! names the candidate, rolls back: the candidate is downgraded or closed, its lease waited out
//! if it did not answer, the route is restored to the old leader and the old leader upgraded
//! again. Once the route names the candidate the migration only goes forward.
//!
//! Used by `MigrateRegion` (reason "manual") and by failover (reason "failover", where the old
//! leader is dead: its downgrade fails at once and its lease is waited out).

use super::engine::{self, Kind, Next, Step, Txn};
use super::lock::{self, Mode};
use super::{begin_locked, detached, Ctx};
use crate::errors;
use crate::leader::heartbeat::registry::NodeState;
use crate::leader::meta::regions::{describe, RegionAction, RegionInstructions};
use crate::leader::node::Node;
use crate::replica::meta::store::{self, layout, put_op, unchanged_since};
use cairn_meta::route::table_id_of;
use cairn_meta::{codec, LeaderState, TableInfo, TableRoute};
use cairn_proto::cairnpb::{DdlResponse, MigrateRegionRequest, NodeRole};
use serde::{Deserialize, Serialize};
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

/// What the procedure stores between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrateRegion {
    pub region_id: u64,
    pub from: u64,
    pub to: u64,
    /// The candidate already followed the region: nothing is opened, and a rollback leaves it a
    /// follower.
    pub to_was_follower: bool,
    /// "manual" or "failover".
    pub reason: String,
    /// Unix ms by which the route must name the candidate, or the migration rolls back.
    pub deadline_ms: u64,
}

/// The record's target for a migration of `region_id` (what `ctl procedure list` shows).
pub fn target(region_id: u64) -> String {
    format!("region {region_id}")
}

/// The lock only one migration of a region holds.
pub fn region_lock(region_id: u64) -> String {
    format!("region/{region_id}")
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
    let table_id = table_id_of(region_id);
    let table = store::get::<TableInfo>(node, &layout().table(table_id))?
        .ok_or_else(|| region_not_found(region_id))?
        .value;
    let reason = reason.to_string();
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let name = &table.name;
        let wait = vec![
            (
                lock::database_lock(&name.catalog, &name.schema),
                Mode::Shared,
            ),
            (
                lock::table_lock(&name.catalog, &name.schema, &name.name),
                Mode::Shared,
            ),
        ];
        let exclusive = vec![(region_lock(region_id), Mode::Exclusive)];
        let mut ctx = begin_locked(&node, KIND, target(region_id), wait, exclusive)
            .await
            .map_err(|e| match e {
                super::Begin::Busy(_) => already_moving(region_id),
                super::Begin::Failed(status) => status,
            })?;
        // Under the locks, the route changes only by us (or a migration of another region).
        let route = store::get::<TableRoute>(&node, &layout().route(table_id))?
            .ok_or_else(|| region_not_found(region_id))?
            .value;
        let region = route
            .region(region_id)
            .ok_or_else(|| region_not_found(region_id))?;
        check_candidate(&node, region_id, region.leader_node, to)?;
        let migrate = MigrateRegion {
            region_id,
            from: region.leader_node,
            to,
            to_was_follower: region.follower_nodes.contains(&to),
            reason,
            deadline_ms: node.clock.unix_ms() + timeout_ms,
        };
        // Stored before the candidate opens, so the orphan reconciler leaves it alone.
        ctx.record.opening_tables = vec![table_id];
        let first = Next::Step(MigrateRegionStep::OpenCandidate, Txn::none());
        engine::start(ctx, migrate, first).await
    })
    .await
}

fn region_not_found(region_id: u64) -> Status {
    Status::not_found(format!("region {region_id} not found"))
}

fn already_moving(region_id: u64) -> Status {
    Status::failed_precondition(format!(
        "region {region_id} is already being migrated (see `cairn ctl region show {region_id}`)"
    ))
}

/// `to` must be a live datanode that does not lead the region already.
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
    let failed = node
        .heartbeats
        .suspicion(to, node.heartbeats.now())
        .is_some_and(|(_, failed)| failed);
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
            // The route names the candidate: only forward. The old leader's copy is closed by
            // the orphan reconciler once it is reachable.
            MigrateRegionStep::CloseOld => Next::Done(MigrateRegionStep::Done, Txn::none()),
            _ => Next::Rollback(error),
        }
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        self.record(ctx, "done", String::new());
        DdlResponse {
            procedure_id: ctx.record.id,
            revision,
            ..Default::default()
        }
    }
}

impl MigrateRegion {
    fn table_id(&self) -> u64 {
        table_id_of(self.region_id)
    }

    /// Records how the migration ended in the event log (kind: its reason, "migration" when
    /// manual).
    fn record(&self, ctx: &Ctx, outcome: &str, why: String) {
        let kind = if self.reason == REASON_MANUAL {
            "migration"
        } else {
            self.reason.as_str()
        };
        let (region, from, to) = (self.region_id, self.from, self.to);
        let elapsed = ctx
            .node
            .clock
            .unix_ms()
            .saturating_sub(ctx.record.created_ms);
        let mut message = format!("region {region} from node {from} to node {to}: {outcome}");
        if !why.is_empty() {
            message.push_str(&format!(" ({why})"));
        }
        crate::leader::events::record(
            &ctx.node,
            ctx.term,
            kind,
            format!("region {region}"),
            message,
            &[
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("outcome", outcome.to_string()),
                ("elapsed_ms", elapsed.to_string()),
                ("procedure", ctx.record.id.to_string()),
            ],
        );
    }

    /// Evicting leaders keeps the old leader as a follower (downgraded, not closed).
    fn keeps_old(&self) -> bool {
        self.reason == REASON_EVICT_LEADERS
    }

    fn past_deadline(&self, ctx: &Ctx) -> bool {
        ctx.node.clock.unix_ms() >= self.deadline_ms
    }

    fn timed_out(&self) -> String {
        format!(
            "region {} was not led by node {} before the migration's deadline",
            self.region_id, self.to
        )
    }

    async fn open_candidate(&mut self, ctx: &mut Ctx) -> Result<Next<MigrateRegionStep>, Status> {
        if self.past_deadline(ctx) {
            return Ok(Next::Rollback(self.timed_out()));
        }
        if !self.to_was_follower {
            let failed =
                RegionInstructions::one(RegionAction::Open, self.to, self.region_id, false)
                    .send(&ctx.node, ctx.reconnect_deadline)
                    .await;
            if !failed.is_empty() {
                return Ok(Next::Retry(format!(
                    "opening the region on the candidate: {}",
                    describe(&failed)
                )));
            }
        }
        Ok(Next::Step(MigrateRegionStep::DowngradeLeader, Txn::none()))
    }

    async fn downgrade_leader(&mut self, ctx: &mut Ctx) -> Result<Next<MigrateRegionStep>, Status> {
        let (region, from) = (self.region_id, self.from);
        // From here no lease of the region is renewed.
        let route = update_route(ctx, self.table_id(), |route| {
            match route.regions.iter_mut().find(|r| r.region_id == region) {
                Some(r) if r.leader_node == from && r.leader_state.is_active() => {
                    r.leader_state = LeaderState::Downgrading;
                    true
                }
                _ => false,
            }
        })
        .await?;
        let Some(route) = route else {
            return Ok(Next::Rollback("the table was dropped".into()));
        };
        if route.region(region).is_none_or(|r| r.leader_node != from) {
            return Ok(Next::Rollback(format!(
                "region {region} is no longer led by node {from}"
            )));
        }
        let node = ctx.node.clone();
        let downgrade = async move {
            // Once only: a dead node fails at once, and its lease is waited out instead.
            RegionInstructions::one(RegionAction::Downgrade, from, region, false)
                .send_once(&node)
                .await
        };
        if !self
            .wait_until_free(ctx, self.to, Some((from, downgrade)), false)
            .await?
        {
            return Ok(Next::Rollback(self.timed_out()));
        }
        Ok(Next::Step(MigrateRegionStep::UpgradeCandidate, Txn::none()))
    }

    async fn upgrade_candidate(
        &mut self,
        ctx: &mut Ctx,
    ) -> Result<Next<MigrateRegionStep>, Status> {
        let (region, from, to) = (self.region_id, self.from, self.to);
        // Again after a resume: a new leader knows nothing of its predecessor's grants.
        if !self.wait_until_free::<NoAck>(ctx, to, None, false).await? {
            return Ok(Next::Rollback(self.timed_out()));
        }
        let failed = RegionInstructions::one(RegionAction::Upgrade, to, region, true)
            .send(&ctx.node, ctx.reconnect_deadline)
            .await;
        if !failed.is_empty() {
            return Ok(Next::Retry(format!(
                "upgrading the candidate: {}",
                describe(&failed)
            )));
        }
        let keep = self.keeps_old();
        let route = update_route(ctx, self.table_id(), |route| {
            match route.regions.iter_mut().find(|r| r.region_id == region) {
                Some(r) if r.leader_node == from => {
                    r.leader_node = to;
                    r.follower_nodes.retain(|f| *f != to && *f != from);
                    if keep {
                        r.follower_nodes.push(from);
                    }
                    r.leader_state = LeaderState::Active;
                    true
                }
                _ => false,
            }
        })
        .await?;
        match route.as_ref().and_then(|r| r.region(region)) {
            Some(r) if r.leader_node == to => {
                Ok(Next::Step(MigrateRegionStep::CloseOld, Txn::none()))
            }
            // Only a dropped table gets here (the region's lock keeps other migrations out).
            _ => Ok(Next::Rollback(format!(
                "region {region} is gone or no longer led by node {from}"
            ))),
        }
    }

    async fn close_old(&mut self, ctx: &mut Ctx) -> Result<Next<MigrateRegionStep>, Status> {
        // Evicting leaders keeps the old copy as a follower: downgraded (again, if its first
        // downgrade went unanswered), not closed.
        let action = if self.keeps_old() {
            RegionAction::Downgrade
        } else {
            RegionAction::Close
        };
        let failed = RegionInstructions::one(action, self.from, self.region_id, false)
            .send_once(&ctx.node)
            .await;
        if !failed.is_empty() && self.reason != REASON_FAILOVER {
            return Ok(Next::Retry(format!(
                "closing the region on the old leader: {}",
                describe(&failed)
            )));
        }
        // A dead old leader is told when it comes back: the orphan reconciler closes regions no
        // route places on a node.
        Ok(Next::Done(MigrateRegionStep::Done, Txn::none()))
    }

    /// Puts the region back on the old leader, then ends as failed (or, when the route already
    /// names the candidate, goes forward: the migration happened).
    async fn rollback(&mut self, ctx: &mut Ctx) -> Result<Next<MigrateRegionStep>, Status> {
        let (region, from, to) = (self.region_id, self.from, self.to);
        let why = ctx.record.last_error.clone();
        let current = store::get::<TableRoute>(&ctx.node, &layout().route(self.table_id()))?;
        let leader = current
            .as_ref()
            .and_then(|r| r.value.region(region))
            .map(|r| r.leader_node);
        if leader == Some(to) {
            return Ok(Next::Step(MigrateRegionStep::CloseOld, Txn::none()));
        }
        let mut notes = Vec::new();
        // The candidate may have been upgraded: downgrade it (a follower before) or close it.
        let undo = if self.to_was_follower {
            RegionAction::Downgrade
        } else {
            RegionAction::Close
        };
        let failed = RegionInstructions::one(undo, to, region, false)
            .send_once(&ctx.node)
            .await;
        if failed.is_empty() {
            ctx.node.heartbeats.region_leases().release(region, to);
        } else {
            notes.push(format!("candidate: {}", describe(&failed)));
        }
        if leader == Some(from) {
            // Its lease (if the upgrade reached it) must be over before the old leader writes.
            self.wait_until_free::<NoAck>(ctx, from, None, true).await?;
            update_route(ctx, self.table_id(), |route| {
                match route.regions.iter_mut().find(|r| r.region_id == region) {
                    Some(r) if r.leader_node == from && !r.leader_state.is_active() => {
                        r.leader_state = LeaderState::Active;
                        true
                    }
                    _ => false,
                }
            })
            .await?;
            // The old leader may have downgraded: it takes writes again, leased from now.
            let failed = RegionInstructions::one(RegionAction::Upgrade, from, region, true)
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
        self.record(ctx, "rolled back", error.clone());
        let status = Status::new(
            Code::Aborted,
            format!("migration of region {region} to node {to} failed and was rolled back: {why}"),
        );
        Ok(Next::Fail { error, status })
    }

    /// Waits until no node but `to` can hold a lease for the region, by this leader's record
    /// (with its margin, and its new-term floor). `ack`, when given, is the old leader and its
    /// downgrade: once it acknowledges, its lease is released at once. False when the
    /// migration's deadline passed first, unless `past_deadline_too` (a rollback: it must wait
    /// whatever the deadline, and leases not renewed always run out).
    async fn wait_until_free<A>(
        &self,
        ctx: &Ctx,
        to: u64,
        ack: Option<(u64, A)>,
        past_deadline_too: bool,
    ) -> Result<bool, Status>
    where
        A: std::future::Future<Output = Vec<crate::leader::meta::regions::NodeFailure>>,
    {
        let region = self.region_id;
        let (holder, downgrade) = match ack {
            Some((holder, fut)) => (holder, Some(fut)),
            None => (0, None),
        };
        let mut downgrade = downgrade.map(Box::pin);
        let poll = Duration::from_millis(LEASE_POLL_MS);
        loop {
            ctx.check_term()?;
            let now = ctx.node.heartbeats.now();
            if ctx
                .node
                .heartbeats
                .region_leases()
                .free_for(region, to, now)
            {
                return Ok(true);
            }
            if !past_deadline_too && self.past_deadline(ctx) {
                return Ok(false);
            }
            match downgrade.as_mut() {
                Some(fut) => {
                    tokio::select! {
                        failed = fut => {
                            downgrade = None;
                            if failed.is_empty() {
                                // Acknowledged: the node dropped its lease before answering.
                                ctx.node.heartbeats.region_leases().release(region, holder);
                            } else {
                                tracing::info!(
                                    region, node = holder,
                                    "downgrade not acknowledged ({}); waiting out its lease",
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
}

/// The type of "no downgrade to wait for" in [`MigrateRegion::wait_until_free`].
type NoAck = std::future::Ready<Vec<crate::leader::meta::regions::NodeFailure>>;

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
}
