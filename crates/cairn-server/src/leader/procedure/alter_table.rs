//! ALTER TABLE: add, drop or rename columns, set options, rename the table. One transaction
//! writes the new table info (and for a rename the name index) and the finished procedure,
//! comparing the table's revision, so a concurrent change can never be lost; a stale
//! `expected_version` fails before anything is written.

use super::engine::{self, Conflict, Kind, Next, Step, Txn};
use super::{begin, detached, lock, Ctx};
use crate::errors;
use crate::leader::node::Node;
use crate::replica::meta::convert;
use crate::replica::meta::store::{
    self, absent, delete_op, layout, meta_status, put_op, unchanged_since,
};
use cairn_meta::{codec, AlterKind, MetaError, TableInfo, TableName};
use cairn_proto::cairnpb::{AlterTableRequest, DdlResponse};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::{Code, Status};

pub const KIND: &str = "alter_table";

/// ALTER TABLE's one step: it is stored only as it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterTableStep {
    /// The new table info (and name index) written (ends the procedure).
    Commit,
}

impl Step for AlterTableStep {
    const ALL: &'static [Self] = &[Self::Commit];

    fn name(self) -> &'static str {
        match self {
            Self::Commit => "commit",
        }
    }
}

/// What the procedure knows when it commits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlterTable {
    name: TableName,
    renamed: Option<TableName>,
    altered: TableInfo,
}

impl Kind for AlterTable {
    const KIND: &'static str = KIND;
    type Step = AlterTableStep;

    async fn run(
        &mut self,
        _ctx: &mut Ctx,
        step: AlterTableStep,
    ) -> Result<Next<AlterTableStep>, Status> {
        Err(engine::ProcedureError::NotRunnable {
            kind: KIND.into(),
            step: step.name().into(),
        }
        .into())
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        let mut keys = vec![format!("table/{}", self.name)];
        if let Some(to) = &self.renamed {
            keys.push(format!("table/{to}"));
        }
        super::publish(&ctx.node, keys);
        DdlResponse {
            procedure_id: ctx.record.id,
            table: Some(convert::table_info_to_proto(&self.altered)),
            revision,
            ..Default::default()
        }
    }
}

/// Runs ALTER TABLE on the leader.
pub async fn run(node: &Arc<Node>, req: AlterTableRequest) -> Result<DdlResponse, Status> {
    let name =
        convert::table_name_from_proto("name", req.name.as_ref()).map_err(|e| meta_status(&e))?;
    let kind = convert::alter_kind_from_proto(&req).map_err(|e| meta_status(&e))?;
    let mut locks = lock::table_ddl_locks(&name);
    let renamed = match &kind {
        AlterKind::RenameTable { to } => Some(TableName {
            name: to.clone(),
            ..name.clone()
        }),
        _ => None,
    };
    if let Some(to) = &renamed {
        let l = lock::table_lock(&to.catalog, &to.schema, &to.name);
        // Both names locked in one order so two renames never wait for each other.
        if l < locks[1].0 {
            locks.insert(1, (l, lock::Mode::Exclusive));
        } else {
            locks.push((l, lock::Mode::Exclusive));
        }
    }
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let ctx = begin(&node, KIND, name.to_string(), locks).await?;
        let name_key = layout().table_name(&name);
        let id = store::get::<u64>(&node, &name_key)?
            .ok_or_else(|| Status::new(Code::NotFound, format!("table {name} not found")))?;
        let table_key = layout().table(id.value);
        let current = store::get::<TableInfo>(&node, &table_key)?.ok_or_else(|| {
            errors::internal(format!("table {name}: info of {} missing", id.value))
        })?;
        if req.expected_version != 0 && req.expected_version != current.value.version {
            return Err(meta_status(&MetaError::VersionConflict {
                what: format!("table {name}"),
                expected: req.expected_version,
                current: current.value.version,
            }));
        }
        let altered = current
            .value
            .altered(&kind, node.clock.unix_ms())
            .map_err(|e| meta_status(&e))?;
        let mut compares = vec![unchanged_since(&table_key, current.mod_revision)];
        let mut ops = vec![put_op(&table_key, codec::encode(&altered))];
        if let Some(to) = &renamed {
            let to_key = layout().table_name(to);
            if store::get_raw(&node, &to_key)?.is_some() {
                return Err(Status::new(
                    Code::AlreadyExists,
                    format!("table {to} already exists"),
                ));
            }
            compares.push(absent(&to_key));
            compares.push(unchanged_since(&name_key, id.mod_revision));
            ops.push(delete_op(&name_key));
            ops.push(put_op(&to_key, codec::encode_table_id(id.value)));
        }
        let why = format!("table {name} changed while being altered");
        let otherwise = Conflict::Fail {
            status: Status::new(Code::Aborted, format!("{why}; retry")),
            error: why,
        };
        let alter = AlterTable {
            name,
            renamed,
            altered,
        };
        let last = Next::Done(
            AlterTableStep::Commit,
            Txn::guarded(compares, ops, otherwise),
        );
        engine::start(ctx, alter, last).await
    })
    .await
}
