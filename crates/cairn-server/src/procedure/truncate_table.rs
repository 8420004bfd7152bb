//! TRUNCATE TABLE: store the procedure at "truncate_regions", have every datanode holding one of
//! the table's regions drop its rows, then bump the table's version so caches see the change.
//! The instruction carries the procedure id as its epoch, so repeating it (a retry, or a new
//! leader resuming) is a no-op on a node that already truncated: rows written after the first
//! truncate stay.

use super::{begin, detached, lock, Ctx};
use crate::errors;
use crate::meta::convert;
use crate::meta::regions::{reconnect_wait, truncate_regions, wait_for_reconnect};
use crate::meta::store::{self, layout, meta_status, put_op, unchanged_since};
use crate::node::Node;
use cairn_meta::{codec, TableInfo, TableRoute};
use cairn_proto::cairnpb::{DdlResponse, TruncateTableRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::{Code, Status};

pub const KIND: &str = "truncate_table";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Data {
    table_id: u64,
}

/// Runs TRUNCATE TABLE on the leader.
pub async fn run(node: &Arc<Node>, req: TruncateTableRequest) -> Result<DdlResponse, Status> {
    let name =
        convert::table_name_from_proto("name", req.name.as_ref()).map_err(|e| meta_status(&e))?;
    let locks = lock::table_ddl_locks(&name);
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let mut ctx = begin(&node, KIND, name.to_string(), locks).await?;
        let id = store::get::<u64>(&node, &layout().table_name(&name))?
            .ok_or_else(|| Status::new(Code::NotFound, format!("table {name} not found")))?;
        ctx.record.data =
            serde_json::to_value(Data { table_id: id.value }).map_err(errors::internal)?;
        if !ctx
            .persist("truncate_regions", Vec::new(), Vec::new())
            .await?
        {
            return Err(ctx.superseded());
        }
        proceed(ctx).await
    })
    .await
}

pub async fn resume(ctx: Ctx) -> Result<DdlResponse, Status> {
    proceed(ctx).await
}

async fn proceed(mut ctx: Ctx) -> Result<DdlResponse, Status> {
    ctx.hook("truncate_regions");
    let d: Data = serde_json::from_value(ctx.record.data.clone())
        .map_err(|e| errors::internal(format!("procedure {}: bad data: {e}", ctx.record.id)))?;
    let node = ctx.node.clone();
    let table_key = layout().table(d.table_id);
    let reconnect_deadline = tokio::time::Instant::now() + reconnect_wait(&node);
    loop {
        let Some(table) = store::get::<TableInfo>(&node, &table_key)? else {
            // Dropped meanwhile (only possible if the locks were lost with a crash): nothing to do.
            ctx.fail(
                "truncate_regions",
                "the table was dropped before it was truncated",
            )
            .await?;
            return Err(Status::new(Code::NotFound, "table was dropped"));
        };
        let route = store::get::<TableRoute>(&node, &layout().route(d.table_id))?
            .map(|r| r.value)
            .unwrap_or_else(|| TableRoute {
                table_id: d.table_id,
                version: 0,
                regions: Vec::new(),
            });
        let failed = truncate_regions(&node, &route, ctx.record.id).await;
        if wait_for_reconnect(&node, &failed, reconnect_deadline).await {
            continue;
        }
        if !failed.is_empty() {
            let why = crate::meta::regions::describe(&failed);
            if let Err(gave_up) = ctx
                .failed_attempt(format!("truncating regions: {why}"))
                .await
            {
                ctx.fail("truncate_regions", &gave_up).await?;
                return Err(Status::new(Code::Unavailable, gave_up));
            }
            continue;
        }
        ctx.hook("commit");
        let mut bumped = table.value.clone();
        bumped.version += 1;
        bumped.updated_ms = super::now_ms();
        let (ok, revision) = ctx
            .finish(
                "commit",
                vec![unchanged_since(&table_key, table.mod_revision)],
                vec![put_op(&table_key, codec::encode(&bumped))],
            )
            .await?;
        if !ok {
            let why = "the table changed while it was being truncated";
            ctx.fail("commit", why).await?;
            return Err(Status::new(Code::Aborted, format!("{why}; retry")));
        }
        super::publish(&node, vec![format!("table/{}", bumped.name)]);
        return Ok(DdlResponse {
            procedure_id: ctx.record.id,
            table: Some(convert::table_info_to_proto(&bumped)),
            revision,
            ..Default::default()
        });
    }
}
