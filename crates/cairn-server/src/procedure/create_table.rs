//! CREATE TABLE: validate → allocate id → plan regions → select datanodes → open regions on them
//! (persisted first, so a new leader can finish or undo it) → commit table info, name index and
//! route in one transaction → publish.
//!
//! Crash anywhere before the first persist and nothing happened; after it, the new leader resumes
//! at opening regions (idempotent on datanodes) and commits, or rolls back by closing what it
//! opened. Either way no table is half-written and no region is left open without a route.

use super::{begin, detached, lock, Ctx};
use crate::errors;
use crate::meta::convert;
use crate::meta::placement;
use crate::meta::regions::{
    close_regions, describe, is_down, open_regions, reconnect_wait, wait_for_reconnect,
};
use crate::meta::store::{self, absent, layout, meta_status, present, put_op};
use crate::node::Node;
use cairn_meta::{codec, LeaderState, RegionRoute, TableInfo, TableRoute};
use cairn_proto::cairnpb::{CreateTableRequest, DdlResponse};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use tonic::{Code, Status};

pub const KIND: &str = "create_table";

/// What the procedure stores between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Data {
    table: TableInfo,
    route: TableRoute,
    /// Regions opened under an earlier placement that was replaced: closed once we are done.
    #[serde(default)]
    stale: Vec<RegionRoute>,
}

/// Runs CREATE TABLE on the leader.
pub async fn run(node: &Arc<Node>, req: CreateTableRequest) -> Result<DdlResponse, Status> {
    crate::procedure::crash_hook(node, KIND, "validate");
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
        let table = create.into_table_info(id, super::now_ms());
        ctx.hook("select_nodes");
        let placement = placement::place(&node, id, table.region_numbers.clone(), &HashSet::new())?;
        let route = route_of(id, &placement);
        ctx.record.data = serde_json::to_value(Data {
            table,
            route,
            stale: Vec::new(),
        })
        .map_err(errors::internal)?;
        ctx.record.opening_tables = vec![id];
        if !ctx.persist("open_regions", Vec::new(), Vec::new()).await? {
            return Err(ctx.superseded());
        }
        proceed(ctx).await
    })
    .await
}

/// Continues a stored CREATE TABLE on a new leader.
pub async fn resume(ctx: Ctx) -> Result<DdlResponse, Status> {
    proceed(ctx).await
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

fn data(ctx: &Ctx) -> Result<Data, Status> {
    serde_json::from_value(ctx.record.data.clone())
        .map_err(|e| errors::internal(format!("procedure {}: bad data: {e}", ctx.record.id)))
}

async fn proceed(mut ctx: Ctx) -> Result<DdlResponse, Status> {
    if ctx.record.step == "rollback" {
        let d = data(&ctx)?;
        return rollback(ctx, d, None).await;
    }
    ctx.hook("open_regions");
    let mut d = data(&ctx)?;
    let reconnect_deadline = tokio::time::Instant::now() + reconnect_wait(&ctx.node);
    loop {
        ctx.check_term()?;
        let failed = open_regions(&ctx.node, &d.route).await;
        if failed.is_empty() {
            break;
        }
        // Right after a leader change datanodes are still reconnecting: wait for those not
        // judged down (bounded) without spending attempts.
        if wait_for_reconnect(&ctx.node, &failed, reconnect_deadline).await {
            continue;
        }
        let why = describe(&failed);
        if let Err(gave_up) = ctx.failed_attempt(format!("opening regions: {why}")).await {
            return rollback(ctx, d, Some(gave_up)).await;
        }
        // Nodes that are gone will not come back in time: place the table elsewhere and close
        // what the old placement opened once we are done.
        let dead: HashSet<u64> = failed
            .iter()
            .map(|f| f.node)
            .filter(|n| is_down(&ctx.node, *n))
            .collect();
        if !dead.is_empty() {
            match placement::place(&ctx.node, d.table.id, d.table.region_numbers.clone(), &dead) {
                Ok(p) => {
                    let old = std::mem::replace(&mut d.route, route_of(d.table.id, &p));
                    d.stale.extend(old.regions);
                    ctx.record.data = serde_json::to_value(&d).map_err(errors::internal)?;
                    let step = ctx.record.step.clone();
                    if !ctx.persist(&step, Vec::new(), Vec::new()).await? {
                        return Err(ctx.superseded());
                    }
                }
                Err(e) => tracing::info!("cannot re-place table {}: {e}", d.table.id),
            }
        }
    }
    ctx.hook("commit");
    let name = d.table.name.clone();
    let compares = vec![
        absent(&layout().table_name(&name)),
        present(&layout().database(&name.catalog, &name.schema)),
    ];
    let ops = vec![
        put_op(&layout().table(d.table.id), codec::encode(&d.table)),
        put_op(
            &layout().table_name(&name),
            codec::encode_table_id(d.table.id),
        ),
        put_op(&layout().route(d.table.id), codec::encode(&d.route)),
    ];
    let (ok, revision) = ctx.finish("commit", compares, ops).await?;
    if !ok {
        // Only a vanished database or a concurrent create (impossible under our locks unless
        // records were edited by hand) gets here.
        let why = format!("table {name} or its database changed while it was being created");
        return rollback(ctx, d, Some(why)).await;
    }
    ctx.hook("publish");
    // Close what earlier placements opened, except where the final route keeps a region on
    // the same node.
    let dropped = d.route.dropped_placements(&d.stale);
    if !dropped.is_empty() {
        let node = ctx.node.clone();
        let stale = TableRoute {
            regions: dropped,
            ..d.route.clone()
        };
        tokio::spawn(async move { close_regions(&node, &stale).await });
    }
    super::publish(&ctx.node, vec![format!("table/{name}")]);
    Ok(DdlResponse {
        procedure_id: ctx.record.id,
        table: Some(convert::table_info_to_proto(&d.table)),
        revision,
        ..Default::default()
    })
}

/// Closes every region the procedure may have opened and ends it as failed.
async fn rollback(mut ctx: Ctx, d: Data, why: Option<String>) -> Result<DdlResponse, Status> {
    let why = why.unwrap_or_else(|| ctx.record.last_error.clone());
    if ctx.record.step != "rollback" {
        ctx.record.last_error = why.clone();
        if !ctx.persist("rollback", Vec::new(), Vec::new()).await? {
            return Err(ctx.superseded());
        }
    }
    let mut all = d.route.clone();
    all.regions.extend(d.stale.iter().cloned());
    let left = close_regions(&ctx.node, &all).await;
    let mut error = why.clone();
    if !left.is_empty() {
        error.push_str(&format!(
            "; regions may be left open on nodes that could not be reached: {}",
            describe(&left)
        ));
    }
    ctx.fail("rollback", &error).await?;
    Err(Status::new(
        Code::Unavailable,
        format!(
            "create table {} failed and was rolled back: {why}",
            d.table.name
        ),
    ))
}
