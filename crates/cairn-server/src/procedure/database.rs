//! CREATE DATABASE and DROP DATABASE.
//!
//! Create is one transaction (database record plus the finished procedure). Drop removes the
//! database's tables in chunks small enough for one transaction each (`txn_ops_max`); each chunk's
//! transaction also stores which regions it orphaned, and those are closed before the next chunk,
//! so a crash at any point resumes with nothing lost and nothing left open. The database record
//! goes last, with the finished procedure.

use super::{begin, detached, lock, Ctx};
use crate::errors;
use crate::meta::convert;
use crate::meta::regions::{
    close_regions_on, reconnect_wait, region_ids_by_node, wait_for_reconnect,
};
use crate::meta::store::{self, absent, delete_op, layout, meta_status, put_op};
use crate::node::Node;
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
        let mut ctx = begin(&node, CREATE_KIND, target.clone(), locks).await?;
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
            created_ms: super::now_ms(),
        };
        ctx.hook("commit");
        let (ok, revision) = ctx
            .finish(
                "commit",
                vec![absent(&key)],
                vec![put_op(&key, codec::encode(&info))],
            )
            .await?;
        if !ok {
            return Err(Status::new(
                Code::Aborted,
                format!("database {target} changed while being created; retry"),
            ));
        }
        Ok(DdlResponse {
            procedure_id: ctx.record.id,
            database: Some(convert::database_to_proto(&info)),
            revision,
            ..Default::default()
        })
    })
    .await
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DropData {
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
        let mut ctx = begin(&node, DROP_KIND, target.clone(), locks).await?;
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
        ctx.record.data = serde_json::to_value(DropData {
            catalog,
            schema: req.name.clone(),
            ..Default::default()
        })
        .map_err(errors::internal)?;
        if !ctx.persist("drop_tables", Vec::new(), Vec::new()).await? {
            return Err(ctx.superseded());
        }
        proceed(ctx).await
    })
    .await
}

pub async fn resume_drop(ctx: Ctx) -> Result<DdlResponse, Status> {
    proceed(ctx).await
}

async fn proceed(mut ctx: Ctx) -> Result<DdlResponse, Status> {
    let node = ctx.node.clone();
    let mut d: DropData = serde_json::from_value(ctx.record.data.clone())
        .map_err(|e| errors::internal(format!("procedure {}: bad data: {e}", ctx.record.id)))?;
    let chunk_tables = ((node.config.txn_ops_max.saturating_sub(1)) / KEYS_PER_TABLE).max(1);
    let names_prefix = layout().table_names_prefix(&d.catalog, &d.schema);
    loop {
        ctx.hook("drop_tables");
        if !d.to_close.is_empty() {
            let mut pending = std::mem::take(&mut d.to_close);
            let deadline = tokio::time::Instant::now() + reconnect_wait(&node);
            let left = loop {
                let left = close_regions_on(&node, pending.clone()).await;
                if !wait_for_reconnect(&node, &left, deadline).await {
                    break left;
                }
                pending.retain(|n, _| left.iter().any(|f| f.node == *n));
            };
            if !left.is_empty() {
                let why = crate::meta::regions::describe(&left);
                // The tables are gone already; remember which nodes may keep their regions.
                ctx.record.last_error = format!("regions left on unreachable nodes: {why}");
            }
        }
        let (kvs, _) = store::scan(&node, &names_prefix, None, chunk_tables, false)?;
        if kvs.is_empty() {
            break;
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
        d.dropped_tables += kvs.len() as u64;
        d.to_close = to_close;
        ctx.record.data = serde_json::to_value(&d).map_err(errors::internal)?;
        if !ctx.persist("drop_tables", Vec::new(), ops).await? {
            return Err(ctx.superseded());
        }
    }
    ctx.hook("commit");
    let key = layout().database(&d.catalog, &d.schema);
    let (ok, revision) = ctx
        .finish("commit", Vec::new(), vec![delete_op(&key)])
        .await?;
    if !ok {
        return Err(ctx.superseded());
    }
    super::publish(&node, vec![format!("database/{}/{}", d.catalog, d.schema)]);
    Ok(DdlResponse {
        procedure_id: ctx.record.id,
        revision,
        dropped_tables: d.dropped_tables,
        ..Default::default()
    })
}

/// Names of the catalog default when empty; used by list calls too.
pub fn catalog_or_default(c: &str) -> String {
    catalog_of(c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunk_of_tables_fits_one_transaction() {
        let txn_ops_max = cairn_types::limits::TXN_OPS_MAX_DEFAULT;
        let chunk = (txn_ops_max - 1) / super::KEYS_PER_TABLE;
        // The chunk's deletes plus the procedure record.
        assert!(chunk * super::KEYS_PER_TABLE < txn_ops_max);
    }
}
