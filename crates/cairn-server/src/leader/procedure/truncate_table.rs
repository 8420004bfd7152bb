//! TRUNCATE TABLE: store the procedure at "truncate_regions", have every datanode holding one of
//! the table's regions drop its rows, then bump the table's version so caches see the change.
//! The instruction carries the procedure id as its epoch, so repeating it (a retry, or a new
//! leader resuming) is a no-op on a node that already truncated: rows written after the first
//! truncate stay.

use super::engine::{self, Conflict, Kind, Next, Step, Txn};
use super::{begin, detached, lock, Ctx};
use crate::leader::meta::regions::{describe, RegionInstructions};
use crate::leader::node::Node;
use crate::replica::meta::convert;
use crate::replica::meta::store::{self, layout, meta_status, put_op, unchanged_since};
use cairn_meta::{codec, TableInfo, TableRoute};
use cairn_proto::cairnpb::{DdlResponse, TruncateTableRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::{Code, Status};

pub const KIND: &str = "truncate_table";

/// The stored steps of TRUNCATE TABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncateTableStep {
    /// Have every datanode holding one of the table's regions drop its rows.
    TruncateRegions,
    /// The table's version bumped (ends the procedure).
    Commit,
}

impl Step for TruncateTableStep {
    const ALL: &'static [Self] = &[Self::TruncateRegions, Self::Commit];

    fn name(self) -> &'static str {
        match self {
            Self::TruncateRegions => "truncate_regions",
            Self::Commit => "commit",
        }
    }
}

/// What the procedure stores between steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TruncateTable {
    table_id: u64,
    /// The table info written by the commit.
    #[serde(skip)]
    bumped: Option<TableInfo>,
}

/// Runs TRUNCATE TABLE on the leader.
pub async fn run(node: &Arc<Node>, req: TruncateTableRequest) -> Result<DdlResponse, Status> {
    let name =
        convert::table_name_from_proto("name", req.name.as_ref()).map_err(|e| meta_status(&e))?;
    let locks = lock::table_ddl_locks(&name);
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let ctx = begin(&node, KIND, name.to_string(), locks).await?;
        let id = store::get::<u64>(&node, &layout().table_name(&name))?
            .ok_or_else(|| Status::new(Code::NotFound, format!("table {name} not found")))?;
        let truncate = TruncateTable {
            table_id: id.value,
            bumped: None,
        };
        let first = Next::Step(TruncateTableStep::TruncateRegions, Txn::none());
        engine::start(ctx, truncate, first).await
    })
    .await
}

impl Kind for TruncateTable {
    const KIND: &'static str = KIND;
    type Step = TruncateTableStep;

    async fn run(
        &mut self,
        ctx: &mut Ctx,
        step: TruncateTableStep,
    ) -> Result<Next<TruncateTableStep>, Status> {
        match step {
            TruncateTableStep::TruncateRegions => self.truncate_regions(ctx).await,
            TruncateTableStep::Commit => Err(engine::ProcedureError::NotRunnable {
                kind: KIND.into(),
                step: step.name().into(),
            }
            .into()),
        }
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        let table = self.bumped.as_ref();
        if let Some(t) = table {
            super::publish(&ctx.node, vec![format!("table/{}", t.name)]);
        }
        DdlResponse {
            procedure_id: ctx.record.id,
            table: table.map(convert::table_info_to_proto),
            revision,
            ..Default::default()
        }
    }
}

impl TruncateTable {
    async fn truncate_regions(&mut self, ctx: &mut Ctx) -> Result<Next<TruncateTableStep>, Status> {
        let node = &ctx.node;
        let table_key = layout().table(self.table_id);
        let Some(table) = store::get::<TableInfo>(node, &table_key)? else {
            // Dropped meanwhile (only possible if the locks were lost with a crash): nothing to do.
            return Ok(Next::Fail {
                error: "the table was dropped before it was truncated".into(),
                status: Status::new(Code::NotFound, "table was dropped"),
            });
        };
        let route = store::get::<TableRoute>(node, &layout().route(self.table_id))?
            .map(|r| r.value)
            .unwrap_or_else(|| TableRoute {
                table_id: self.table_id,
                version: 0,
                regions: Vec::new(),
            });
        // The procedure id is the truncation's epoch: a repeat is a no-op on the datanode.
        let failed = RegionInstructions::truncate(&route, ctx.record.id)
            .send(node, ctx.reconnect_deadline)
            .await;
        if !failed.is_empty() {
            return Ok(Next::Retry(format!(
                "truncating regions: {}",
                describe(&failed)
            )));
        }
        let mut bumped = table.value;
        bumped.version += 1;
        bumped.updated_ms = node.clock.unix_ms();
        let why = "the table changed while it was being truncated";
        let txn = Txn::guarded(
            vec![unchanged_since(&table_key, table.mod_revision)],
            vec![put_op(&table_key, codec::encode(&bumped))],
            Conflict::Fail {
                error: why.into(),
                status: Status::new(Code::Aborted, format!("{why}; retry")),
            },
        );
        self.bumped = Some(bumped);
        Ok(Next::Done(TruncateTableStep::Commit, txn))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_step_names_are_stable() {
        let names: Vec<&str> = TruncateTableStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["truncate_regions", "commit"]);
        for s in TruncateTableStep::ALL {
            assert_eq!(engine::parse_step(KIND, s.name()), Ok(*s));
        }
    }
}
