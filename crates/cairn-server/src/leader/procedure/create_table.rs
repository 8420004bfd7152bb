//! CREATE TABLE: validate → allocate id → plan regions → select datanodes → open regions on them
//! (persisted first, so a new leader can finish or undo it) → commit table info, name index and
//! route in one transaction → publish.
//!
//! Crash anywhere before the first persist and nothing happened; after it, the new leader resumes
//! at opening regions (idempotent on datanodes) and commits, or rolls back by closing what it
//! opened. Either way no table is half-written and no region is left open without a route.

use super::engine::{self, Conflict, Kind, Next, Step, Txn};
use super::{begin, detached, lock, Ctx};
use crate::errors;
use crate::leader::meta::placement;
use crate::leader::meta::regions::{describe, is_down, RegionInstructions};
use crate::leader::node::Node;
use crate::replica::meta::convert;
use crate::replica::meta::store::{self, absent, layout, meta_status, present, put_op};
use cairn_meta::{codec, LeaderState, RegionRoute, TableInfo, TableRoute};
use cairn_proto::cairnpb::{CreateTableRequest, DdlResponse};
use std::time::Duration;

/// How often a re-placed create checks whether the earlier placement's leases are over, ms.
const MOVED_LEASE_POLL_MS: u64 = 100;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use tonic::{Code, Status};

pub const KIND: &str = "create_table";

/// The stored steps of CREATE TABLE. Before `open_regions` the procedure prepares under its
/// locks without storing anything (hooks `validate`, `allocate_id`, `plan_regions`,
/// `select_nodes`): a crash there leaves nothing to resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateTableStep {
    /// Open the regions on the placed datanodes.
    OpenRegions,
    /// Table info, name index and route written (ends the procedure).
    Commit,
    /// Close what may have been opened, then end as failed.
    Rollback,
}

impl Step for CreateTableStep {
    const ALL: &'static [Self] = &[Self::OpenRegions, Self::Commit, Self::Rollback];

    fn name(self) -> &'static str {
        match self {
            Self::OpenRegions => "open_regions",
            Self::Commit => "commit",
            Self::Rollback => "rollback",
        }
    }
}

/// What the procedure stores between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateTable {
    table: TableInfo,
    route: TableRoute,
    /// Regions opened under an earlier placement that was replaced: closed once we are done.
    #[serde(default)]
    stale: Vec<RegionRoute>,
}

/// Runs CREATE TABLE on the leader.
pub async fn run(node: &Arc<Node>, req: CreateTableRequest) -> Result<DdlResponse, Status> {
    crate::leader::procedure::crash_hook(node, KIND, "validate");
    let create = convert::create_table_from_proto(&req).map_err(|e| meta_status(&e))?;
    create.validate().map_err(|e| meta_status(&e))?;
    let name = create.name.clone();
    let locks = lock::table_ddl_locks(&name);
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let mut ctx = begin(&node, KIND, name.to_string(), locks).await?;
        // Under the locks, what we read cannot change except by us.
        if store::get_raw(&node, &layout().database(&name.catalog, &name.schema))?.is_none() {
            return Err(Status::new(
                Code::NotFound,
                format!("database {}.{} not found", name.catalog, name.schema),
            ));
        }
        if let Some(id) = store::get::<u64>(&node, &layout().table_name(&name))? {
            if req.if_not_exists {
                return existing(&node, id.value);
            }
            return Err(Status::new(
                Code::AlreadyExists,
                format!("table {name} already exists"),
            ));
        }
        ctx.hook("allocate_id");
        let id = node.procedures.table_ids.next(&node, ctx.term).await?;
        ctx.hook("plan_regions");
        let table = create.into_table_info(id, node.clock.unix_ms());
        ctx.hook("select_nodes");
        let placement = placement::place(&node, id, table.region_numbers.clone(), &HashSet::new())?;
        let create = CreateTable {
            route: route_of(id, &placement),
            table,
            stale: Vec::new(),
        };
        // Stored before any region opens, so the orphan reconciler leaves them alone.
        ctx.record.opening_tables = vec![id];
        let first = Next::Step(CreateTableStep::OpenRegions, Txn::none());
        engine::start(ctx, create, first).await
    })
    .await
}

fn existing(node: &Node, id: u64) -> Result<DdlResponse, Status> {
    let table = store::get::<TableInfo>(node, &layout().table(id))?
        .ok_or_else(|| errors::internal(format!("table name index names missing table {id}")))?;
    Ok(DdlResponse {
        table: Some(convert::table_info_to_proto(&table.value)),
        unchanged: true,
        revision: node.revision(),
        ..Default::default()
    })
}

fn route_of(table_id: u64, placement: &cairn_sched::Placement) -> TableRoute {
    TableRoute {
        table_id,
        version: 1,
        regions: placement
            .regions
            .iter()
            .map(|r| RegionRoute {
                region_id: cairn_meta::route::region_id(table_id, r.region_number),
                leader_node: r.leader,
                follower_nodes: r.followers.clone(),
                leader_state: LeaderState::Active,
            })
            .collect(),
    }
}

impl Kind for CreateTable {
    const KIND: &'static str = KIND;
    type Step = CreateTableStep;
    const ROLLBACK: Option<CreateTableStep> = Some(CreateTableStep::Rollback);

    async fn run(
        &mut self,
        ctx: &mut Ctx,
        step: CreateTableStep,
    ) -> Result<Next<CreateTableStep>, Status> {
        match step {
            CreateTableStep::OpenRegions => self.open_regions(ctx).await,
            CreateTableStep::Rollback => self.rollback(ctx).await,
            CreateTableStep::Commit => Err(engine::ProcedureError::NotRunnable {
                kind: KIND.into(),
                step: step.name().into(),
            }
            .into()),
        }
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        ctx.hook("publish");
        // Close what earlier placements opened, except where the final route keeps a region
        // on the same node.
        let dropped = self.route.dropped_placements(&self.stale);
        if !dropped.is_empty() {
            let node = ctx.node.clone();
            let stale = RegionInstructions::close(&TableRoute {
                regions: dropped,
                ..self.route.clone()
            });
            tokio::spawn(async move { stale.send_once(&node).await });
        }
        super::publish(&ctx.node, vec![format!("table/{}", self.table.name)]);
        DdlResponse {
            procedure_id: ctx.record.id,
            table: Some(convert::table_info_to_proto(&self.table)),
            revision,
            ..Default::default()
        }
    }
}

impl CreateTable {
    async fn open_regions(&mut self, ctx: &mut Ctx) -> Result<Next<CreateTableStep>, Status> {
        self.wait_for_moved_leases(ctx).await?;
        let failed = RegionInstructions::open(&self.route)
            .send(&ctx.node, ctx.reconnect_deadline)
            .await;
        if failed.is_empty() {
            let name = &self.table.name;
            let compares = vec![
                absent(&layout().table_name(name)),
                present(&layout().database(&name.catalog, &name.schema)),
            ];
            let ops = vec![
                put_op(&layout().table(self.table.id), codec::encode(&self.table)),
                put_op(
                    &layout().table_name(name),
                    codec::encode_table_id(self.table.id),
                ),
                put_op(&layout().route(self.table.id), codec::encode(&self.route)),
            ];
            // Only a vanished database or a concurrent create (impossible under our locks
            // unless records were edited by hand) fails the compares.
            let why = format!("table {name} or its database changed while it was being created");
            let txn = Txn::guarded(compares, ops, Conflict::Rollback(why));
            return Ok(Next::Done(CreateTableStep::Commit, txn));
        }
        // Nodes that are gone will not come back in time: place the table elsewhere (stored
        // with the failed attempt, before the next one opens anything) and close what the old
        // placement opened once we are done.
        let dead: HashSet<u64> = failed
            .iter()
            .map(|f| f.node)
            .filter(|n| is_down(&ctx.node, *n))
            .collect();
        if !dead.is_empty() {
            let regions = self.table.region_numbers.clone();
            match placement::place(&ctx.node, self.table.id, regions, &dead) {
                Ok(p) => {
                    let old = std::mem::replace(&mut self.route, route_of(self.table.id, &p));
                    self.stale.extend(old.regions);
                }
                Err(e) => tracing::info!("cannot re-place table {}: {e}", self.table.id),
            }
        }
        Ok(Next::Retry(format!(
            "opening regions: {}",
            describe(&failed)
        )))
    }

    /// Regions an earlier attempt opened as leader on a node this attempt does not use may still
    /// be leased there (the node was judged down, but it may be alive and writing): the new
    /// leader is opened only once those leases are surely over. Two writable leaders: never.
    async fn wait_for_moved_leases(&self, ctx: &Ctx) -> Result<(), Status> {
        let moved: Vec<(u64, u64)> = self
            .route
            .regions
            .iter()
            .filter(|r| {
                self.stale
                    .iter()
                    .any(|s| s.region_id == r.region_id && s.leader_node != r.leader_node)
            })
            .map(|r| (r.region_id, r.leader_node))
            .collect();
        loop {
            ctx.check_term()?;
            let now = ctx.node.heartbeats.now();
            let free = {
                let leases = ctx.node.heartbeats.region_leases();
                moved.iter().all(|(r, n)| leases.free_for(*r, *n, now))
            };
            if free {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(MOVED_LEASE_POLL_MS)).await;
        }
    }

    /// Closes every region the procedure may have opened and ends it as failed.
    async fn rollback(&mut self, ctx: &mut Ctx) -> Result<Next<CreateTableStep>, Status> {
        let why = ctx.record.last_error.clone();
        let mut all = self.route.clone();
        all.regions.extend(self.stale.iter().cloned());
        let left = RegionInstructions::close(&all)
            .send(&ctx.node, ctx.reconnect_deadline)
            .await;
        let mut error = why.clone();
        if !left.is_empty() {
            error.push_str(&format!(
                "; regions may be left open on nodes that could not be reached: {}",
                describe(&left)
            ));
        }
        let status = Status::new(
            Code::Unavailable,
            format!(
                "create table {} failed and was rolled back: {why}",
                self.table.name
            ),
        );
        Ok(Next::Fail { error, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_step_names_are_stable() {
        let names: Vec<&str> = CreateTableStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["open_regions", "commit", "rollback"]);
        for s in CreateTableStep::ALL {
            assert_eq!(engine::parse_step(KIND, s.name()), Ok(*s));
        }
        assert!(engine::parse_step::<CreateTableStep>(KIND, "prepare").is_err());
    }
}
