//! CREATE DATABASE and DROP DATABASE.
//!
//! Create is one transaction (database record plus the finished procedure). Drop removes the
//! database's tables in chunks small enough for one transaction each (`txn_ops_max`); each chunk's
//! transaction also stores which regions it orphaned, and those are closed before the next chunk,
//! so a crash at any point resumes with nothing lost and nothing left open. The database record
//! goes last, with the finished procedure.

use super::engine::{self, Conflict, Kind, Next, Step, Txn};
use super::{begin, detached, lock, Ctx};
use crate::leader::meta::regions::{
    describe, reconnect_wait, region_ids_by_node, RegionInstructions,
};
use crate::leader::node::Node;
use crate::replica::meta::convert;
use crate::replica::meta::store::{self, absent, delete_op, layout, meta_status, put_op};
use cairn_meta::{codec, DatabaseInfo, TableRoute, DEFAULT_CATALOG};
use cairn_proto::cairnpb::{CreateDatabaseRequest, DdlResponse, DropDatabaseRequest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Code, Status};

pub const CREATE_KIND: &str = "create_database";
pub const DROP_KIND: &str = "drop_database";
/// Keys one dropped table takes in a transaction (info, name index, route).
const KEYS_PER_TABLE: usize = 3;

/// CREATE DATABASE's one step: it is stored only as it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateDatabaseStep {
    /// The database record written (ends the procedure).
    Commit,
}

impl Step for CreateDatabaseStep {
    const ALL: &'static [Self] = &[Self::Commit];

    fn name(self) -> &'static str {
        match self {
            Self::Commit => "commit",
        }
    }
}

/// What CREATE DATABASE knows when it commits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateDatabase {
    info: DatabaseInfo,
}

impl Kind for CreateDatabase {
    const KIND: &'static str = CREATE_KIND;
    type Step = CreateDatabaseStep;

    async fn run(
        &mut self,
        _ctx: &mut Ctx,
        step: CreateDatabaseStep,
    ) -> Result<Next<CreateDatabaseStep>, Status> {
        Err(engine::ProcedureError::NotRunnable {
            kind: CREATE_KIND.into(),
            step: step.name().into(),
        }
        .into())
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        DdlResponse {
            procedure_id: ctx.record.id,
            database: Some(convert::database_to_proto(&self.info)),
            revision,
            ..Default::default()
        }
    }
}

fn catalog_of(c: &str) -> String {
    if c.is_empty() {
        DEFAULT_CATALOG.to_string()
    } else {
        c.to_string()
    }
}

/// Runs CREATE DATABASE on the leader.
pub async fn create(node: &Arc<Node>, req: CreateDatabaseRequest) -> Result<DdlResponse, Status> {
    let catalog = catalog_of(&req.catalog);
    let options: BTreeMap<String, String> = req.options.clone().into_iter().collect();
    cairn_meta::database::validate_database(&catalog, &req.name, &options)
        .map_err(|e| meta_status(&e))?;
    let locks = vec![(
        lock::database_lock(&catalog, &req.name),
        lock::Mode::Exclusive,
    )];
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let target = format!("{catalog}.{}", req.name);
        let ctx = begin(&node, CREATE_KIND, target.clone(), locks).await?;
        let key = layout().database(&catalog, &req.name);
        if let Some(existing) = store::get::<DatabaseInfo>(&node, &key)? {
            if req.if_not_exists {
                return Ok(DdlResponse {
                    database: Some(convert::database_to_proto(&existing.value)),
                    unchanged: true,
                    revision: node.revision(),
                    ..Default::default()
                });
            }
            return Err(Status::new(
                Code::AlreadyExists,
                format!("database {target} already exists"),
            ));
        }
        let info = DatabaseInfo {
            catalog: catalog.clone(),
            name: req.name.clone(),
            options,
            created_ms: node.clock.unix_ms(),
        };
        let why = format!("database {target} changed while being created");
        let txn = Txn::guarded(
            vec![absent(&key)],
            vec![put_op(&key, codec::encode(&info))],
            Conflict::Fail {
                status: Status::new(Code::Aborted, format!("{why}; retry")),
                error: why,
            },
        );
        let last = Next::Done(CreateDatabaseStep::Commit, txn);
        engine::start(ctx, CreateDatabase { info }, last).await
    })
    .await
}

/// The stored steps of DROP DATABASE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropDatabaseStep {
    /// Close the regions the last chunk orphaned, then drop the next chunk of tables (stored
    /// with this step again) until none is left.
    DropTables,
    /// The database record deleted (ends the procedure).
    Commit,
}

impl Step for DropDatabaseStep {
    const ALL: &'static [Self] = &[Self::DropTables, Self::Commit];

    fn name(self) -> &'static str {
        match self {
            Self::DropTables => "drop_tables",
            Self::Commit => "commit",
        }
    }
}

/// What DROP DATABASE stores between steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DropDatabase {
    catalog: String,
    schema: String,
    /// Regions of the last chunk of dropped tables, per node, still to be closed.
    #[serde(default)]
    to_close: BTreeMap<u64, Vec<u64>>,
    #[serde(default)]
    dropped_tables: u64,
}

/// Runs DROP DATABASE (and every table in it) on the leader.
pub async fn drop(node: &Arc<Node>, req: DropDatabaseRequest) -> Result<DdlResponse, Status> {
    let catalog = catalog_of(&req.catalog);
    cairn_meta::names::validate_name("catalog", &catalog).map_err(|e| meta_status(&e))?;
    cairn_meta::names::validate_name("name", &req.name).map_err(|e| meta_status(&e))?;
    let locks = vec![(
        lock::database_lock(&catalog, &req.name),
        lock::Mode::Exclusive,
    )];
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let target = format!("{catalog}.{}", req.name);
        let ctx = begin(&node, DROP_KIND, target.clone(), locks).await?;
        if store::get_raw(&node, &layout().database(&catalog, &req.name))?.is_none() {
            if req.if_exists {
                return Ok(DdlResponse {
                    unchanged: true,
                    revision: node.revision(),
                    ..Default::default()
                });
            }
            return Err(Status::new(
                Code::NotFound,
                format!("database {target} not found"),
            ));
        }
        let drop = DropDatabase {
            catalog,
            schema: req.name.clone(),
            ..Default::default()
        };
        let first = Next::Step(DropDatabaseStep::DropTables, Txn::none());
        engine::start(ctx, drop, first).await
    })
    .await
}

impl Kind for DropDatabase {
    const KIND: &'static str = DROP_KIND;
    type Step = DropDatabaseStep;

    async fn run(
        &mut self,
        ctx: &mut Ctx,
        step: DropDatabaseStep,
    ) -> Result<Next<DropDatabaseStep>, Status> {
        match step {
            DropDatabaseStep::DropTables => self.drop_tables(ctx).await,
            DropDatabaseStep::Commit => Err(engine::ProcedureError::NotRunnable {
                kind: DROP_KIND.into(),
                step: step.name().into(),
            }
            .into()),
        }
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        let key = format!("database/{}/{}", self.catalog, self.schema);
        super::publish(&ctx.node, vec![key]);
        DdlResponse {
            procedure_id: ctx.record.id,
            revision,
            dropped_tables: self.dropped_tables,
            ..Default::default()
        }
    }
}

impl DropDatabase {
    async fn drop_tables(&mut self, ctx: &mut Ctx) -> Result<Next<DropDatabaseStep>, Status> {
        let node = ctx.node.clone();
        if !self.to_close.is_empty() {
            let pending = RegionInstructions::close_on(std::mem::take(&mut self.to_close));
            // Each chunk waits out reconnecting nodes afresh: a long drop outlasts one wait.
            let deadline = node.clock.now() + reconnect_wait(&node);
            let left = pending.send(&node, deadline).await;
            if !left.is_empty() {
                // The tables are gone already; remember which nodes may keep their regions.
                ctx.record.last_error =
                    format!("regions left on unreachable nodes: {}", describe(&left));
            }
        }
        let chunk_tables = ((node.config.txn_ops_max.saturating_sub(1)) / KEYS_PER_TABLE).max(1);
        let names_prefix = layout().table_names_prefix(&self.catalog, &self.schema);
        let (kvs, _) = store::scan(&node, &names_prefix, None, chunk_tables, false)?;
        if kvs.is_empty() {
            let key = layout().database(&self.catalog, &self.schema);
            return Ok(Next::Done(
                DropDatabaseStep::Commit,
                Txn::ops(vec![delete_op(&key)]),
            ));
        }
        let mut ops = Vec::with_capacity(kvs.len() * KEYS_PER_TABLE);
        let mut to_close = BTreeMap::new();
        for kv in &kvs {
            let id = codec::decode_table_id(&kv.key, &kv.value).map_err(|e| meta_status(&e))?;
            if let Some(route) = store::get::<TableRoute>(&node, &layout().route(id))? {
                region_ids_by_node(&route.value, &mut to_close);
            }
            ops.push(delete_op(&String::from_utf8_lossy(&kv.key)));
            ops.push(delete_op(&layout().table(id)));
            ops.push(delete_op(&layout().route(id)));
        }
        self.dropped_tables += kvs.len() as u64;
        // Stored with the chunk's deletes, so a crash after them still closes their regions.
        self.to_close = to_close;
        Ok(Next::Step(DropDatabaseStep::DropTables, Txn::ops(ops)))
    }
}

/// Names of the catalog default when empty; used by list calls too.
pub fn catalog_or_default(c: &str) -> String {
    catalog_of(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_step_names_are_stable() {
        let names: Vec<&str> = DropDatabaseStep::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, ["drop_tables", "commit"]);
        for s in DropDatabaseStep::ALL {
            assert_eq!(engine::parse_step(DROP_KIND, s.name()), Ok(*s));
        }
        assert_eq!(CreateDatabaseStep::Commit.name(), "commit");
    }

    #[test]
    fn a_chunk_of_tables_fits_one_transaction() {
        let txn_ops_max = cairn_types::limits::TXN_OPS_MAX_DEFAULT;
        let chunk = (txn_ops_max - 1) / super::KEYS_PER_TABLE;
        // The chunk's deletes plus the procedure record.
        assert!(chunk * super::KEYS_PER_TABLE < txn_ops_max);
    }
}
