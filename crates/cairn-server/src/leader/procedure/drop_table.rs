//! DROP TABLE: remove table info, name index and route in one transaction (which also stores the
//! procedure at "close_regions"), then close the regions on their datanodes.
//!
//! The table disappears for readers at once; a crash before the transaction leaves it whole, a
//! crash after it is resumed at closing regions. Datanodes that stay unreachable through every
//! attempt are named in the procedure's last error (their regions are not routed any more and
//! get closed when the node reports them).

use super::engine::{self, Conflict, Kind, Next, Step, Txn};
use super::{begin, detached, lock, Ctx};
use crate::errors;
use crate::leader::meta::regions::{describe, RegionInstructions};
use crate::leader::node::Node;
use crate::replica::meta::convert;
use crate::replica::meta::store::{self, delete_op, layout, meta_status, unchanged_since};
use cairn_meta::{TableInfo, TableRoute};
use cairn_proto::cairnpb::{DdlResponse, DropTableRequest};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use tonic::{Code, Status};

pub const KIND: &str = "drop_table";

/// The stored steps of DROP TABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropTableStep {
    /// The table is gone from the store (written with this step); close its regions.
    CloseRegions,
    /// Ends the procedure.
    Done,
}

impl Step for DropTableStep {
    const ALL: &'static [Self] = &[Self::CloseRegions, Self::Done];

    fn name(self) -> &'static str {
        match self {
            Self::CloseRegions => "close_regions",
            Self::Done => "done",
        }
    }

    fn hook(self) -> &'static str {
        match self {
            Self::CloseRegions => "close_regions",
            // Named before the step was.
            Self::Done => "finish",
        }
    }
}

/// What the procedure stores between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropTable {
    table: TableInfo,
    /// Regions still to close: after a failed attempt, only those on nodes that failed.
    route: TableRoute,
    /// The revision the table was dropped at, as answered (the record's when this leader
    /// took the procedure up).
    #[serde(skip)]
    dropped_at: i64,
    /// The nodes that failed the last attempt, and why.
    #[serde(skip)]
    unreachable: String,
}

/// Runs DROP TABLE on the leader.
pub async fn run(node: &Arc<Node>, req: DropTableRequest) -> Result<DdlResponse, Status> {
    let name =
        convert::table_name_from_proto("name", req.name.as_ref()).map_err(|e| meta_status(&e))?;
    let locks = lock::table_ddl_locks(&name);
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let ctx = begin(&node, KIND, name.to_string(), locks).await?;
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
        let drop = DropTable {
            table: table.value,
            route,
            dropped_at: 0,
            unreachable: String::new(),
        };
        let compares = vec![
            unchanged_since(&table_key, table.mod_revision),
            unchanged_since(&name_key, id.mod_revision),
        ];
        let ops = vec![
            delete_op(&table_key),
            delete_op(&name_key),
            delete_op(&layout().route(id.value)),
        ];
        let why = format!("table {name} changed while being dropped");
        let otherwise = Conflict::Fail {
            status: Status::new(Code::Aborted, format!("{why}; retry")),
            error: why,
        };
        let first = Next::Step(
            DropTableStep::CloseRegions,
            Txn::guarded(compares, ops, otherwise),
        );
        engine::start(ctx, drop, first).await
    })
    .await
}

impl Kind for DropTable {
    const KIND: &'static str = KIND;
    type Step = DropTableStep;

    async fn run(
        &mut self,
        ctx: &mut Ctx,
        step: DropTableStep,
    ) -> Result<Next<DropTableStep>, Status> {
        match step {
            DropTableStep::CloseRegions => Ok(self.close_regions(ctx).await),
            DropTableStep::Done => Err(engine::ProcedureError::NotRunnable {
                kind: KIND.into(),
                step: step.name().into(),
            }
            .into()),
        }
    }

    /// The table is gone either way: end, saying which nodes may still hold its regions
    /// (they are not routed any more, and get closed when the node reports them).
    fn gave_up(
        &mut self,
        ctx: &mut Ctx,
        _step: DropTableStep,
        _error: String,
    ) -> Next<DropTableStep> {
        ctx.record.last_error = format!("regions left on unreachable nodes: {}", self.unreachable);
        Next::Done(DropTableStep::Done, Txn::none())
    }

    fn done(&mut self, ctx: &Ctx, _revision: i64) -> DdlResponse {
        super::publish(&ctx.node, vec![format!("table/{}", self.table.name)]);
        DdlResponse {
            procedure_id: ctx.record.id,
            table: Some(convert::table_info_to_proto(&self.table)),
            revision: self.dropped_at,
            ..Default::default()
        }
    }
}

impl DropTable {
    async fn close_regions(&mut self, ctx: &mut Ctx) -> Next<DropTableStep> {
        if self.dropped_at == 0 {
            self.dropped_at = ctx.revision;
        }
        let failed = RegionInstructions::close(&self.route)
            .send(&ctx.node, ctx.reconnect_deadline)
            .await;
        if failed.is_empty() {
            return Next::Done(DropTableStep::Done, Txn::none());
        }
        self.unreachable = describe(&failed);
        // Retry only where it failed.
        let left: HashSet<u64> = failed.iter().map(|f| f.node).collect();
        for r in &mut self.route.regions {
            if !left.contains(&r.leader_node) {
                r.leader_node = 0;
            }
            r.follower_nodes.retain(|f| left.contains(f));
        }
        self.route
            .regions
            .retain(|r| r.leader_node != 0 || !r.follower_nodes.is_empty());
        Next::Retry(format!("closing regions: {}", self.unreachable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_step_names_and_hooks_are_stable() {
        let names: Vec<&str> = DropTableStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["close_regions", "done"]);
        let hooks: Vec<&str> = DropTableStep::ALL.iter().map(|s| s.hook()).collect();
        assert_eq!(hooks, ["close_regions", "finish"]);
        for s in DropTableStep::ALL {
            assert_eq!(engine::parse_step(KIND, s.name()), Ok(*s));
        }
    }
}
