//! DROP TABLE: remove table info, name index and route in one transaction (which also stores the
//! procedure at "close_regions"), then close the regions on their datanodes.
//!
//! The table disappears for readers at once; a crash before the transaction leaves it whole, a
//! crash after it is resumed at closing regions. Datanodes that stay unreachable through every
//! attempt are named in the procedure's last error (their regions are not routed any more and
//! get closed when the node reports them).

use super::{begin, detached, lock, Ctx};
use crate::errors;
use crate::meta::convert;
use crate::meta::regions::{close_regions, reconnect_wait, wait_for_reconnect};
use crate::meta::store::{self, delete_op, layout, meta_status, unchanged_since};
use crate::node::Node;
use cairn_meta::{TableInfo, TableRoute};
use cairn_proto::cairnpb::{DdlResponse, DropTableRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::{Code, Status};

pub const KIND: &str = "drop_table";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Data {
    table: TableInfo,
    route: TableRoute,
}

/// Runs DROP TABLE on the leader.
pub async fn run(node: &Arc<Node>, req: DropTableRequest) -> Result<DdlResponse, Status> {
    let name =
        convert::table_name_from_proto("name", req.name.as_ref()).map_err(|e| meta_status(&e))?;
    let locks = lock::table_ddl_locks(&name);
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let mut ctx = begin(&node, KIND, name.to_string(), locks).await?;
        let name_key = layout().table_name(&name);
        let Some(id) = store::get::<u64>(&node, &name_key)? else {
            if req.if_exists {
                return Ok(DdlResponse {
                    unchanged: true,
                    revision: node.revision(),
                    ..Default::default()
                });
            }
            return Err(Status::new(
                Code::NotFound,
                format!("table {name} not found"),
            ));
        };
        let table_key = layout().table(id.value);
        let table = store::get::<TableInfo>(&node, &table_key)?.ok_or_else(|| {
            errors::internal(format!("table {name}: info of {} missing", id.value))
        })?;
        let route = store::get::<TableRoute>(&node, &layout().route(id.value))?
            .map(|r| r.value)
            .unwrap_or_else(|| TableRoute {
                table_id: id.value,
                version: 0,
                regions: Vec::new(),
            });
        ctx.record.data = serde_json::to_value(Data {
            table: table.value.clone(),
            route,
        })
        .map_err(errors::internal)?;
        let compares = vec![
            unchanged_since(&table_key, table.mod_revision),
            unchanged_since(&name_key, id.mod_revision),
        ];
        let ops = vec![
            delete_op(&table_key),
            delete_op(&name_key),
            delete_op(&layout().route(id.value)),
        ];
        if !ctx.persist("close_regions", compares, ops).await? {
            return Err(Status::new(
                Code::Aborted,
                format!("table {name} changed while being dropped; retry"),
            ));
        }
        proceed(ctx).await
    })
    .await
}

pub async fn resume(ctx: Ctx) -> Result<DdlResponse, Status> {
    proceed(ctx).await
}

async fn proceed(mut ctx: Ctx) -> Result<DdlResponse, Status> {
    ctx.hook("close_regions");
    let d: Data = serde_json::from_value(ctx.record.data.clone())
        .map_err(|e| errors::internal(format!("procedure {}: bad data: {e}", ctx.record.id)))?;
    let dropped_at = ctx.revision;
    let mut route = d.route.clone();
    let reconnect_deadline = tokio::time::Instant::now() + reconnect_wait(&ctx.node);
    loop {
        let failed = close_regions(&ctx.node, &route).await;
        if failed.is_empty() {
            break;
        }
        if wait_for_reconnect(&ctx.node, &failed, reconnect_deadline).await {
            continue;
        }
        let why = crate::meta::regions::describe(&failed);
        if ctx
            .failed_attempt(format!("closing regions: {why}"))
            .await
            .is_err()
        {
            // The table is gone either way; say which nodes may still hold its regions.
            ctx.record.last_error = format!("regions left on unreachable nodes: {why}");
            break;
        }
        // Retry only where it failed.
        let left: std::collections::HashSet<u64> = failed.iter().map(|f| f.node).collect();
        for r in &mut route.regions {
            if !left.contains(&r.leader_node) {
                r.leader_node = 0;
            }
            r.follower_nodes.retain(|f| left.contains(f));
        }
        route
            .regions
            .retain(|r| r.leader_node != 0 || !r.follower_nodes.is_empty());
    }
    ctx.hook("finish");
    ctx.finish("done", Vec::new(), Vec::new()).await?;
    super::publish(&ctx.node, vec![format!("table/{}", d.table.name)]);
    Ok(DdlResponse {
        procedure_id: ctx.record.id,
        table: Some(convert::table_info_to_proto(&d.table)),
        revision: dropped_at,
        ..Default::default()
    })
}
