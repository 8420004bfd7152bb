//! HTTP JSON resources for metadata, mirroring `cairn ctl database|table|route|procedure`:
//! `/v1/databases`, `/v1/tables/{schema}`, `/v1/tables/{schema}/{name}` (info and route) and
//! `/v1/procedures[/{id}]`. Served by any node from its own state after a read barrier, in the
//! default catalog; shapes are documented in `docs/http.md`.

use crate::api::meta::read;
use crate::leader::node::Node;
use crate::replica::meta::store::{self, layout};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cairn_meta::{DatabaseInfo, TableInfo, TableName, TableRoute};
use cairn_proto::cairnpb::{
    ListDatabasesRequest, ListProceduresRequest, ListTablesRequest, ProcedureView,
};
use serde_json::{json, Value};
use std::sync::Arc;
use tonic::{Code, Status};

/// Routes of this module, merged into the node's HTTP router.
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/databases", get(databases))
        .route("/v1/tables/{schema}", get(tables))
        .route("/v1/tables/{schema}/{name}", get(table))
        .route("/v1/procedures", get(procedures))
        .route("/v1/procedures/{id}", get(procedure))
}

fn error(s: Status) -> Response {
    let code = match s.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(json!({ "error": s.message() }))).into_response()
}

fn route_json(route: &TableRoute) -> Value {
    json!({
        "table_id": route.table_id,
        "version": route.version,
        "regions": route.regions.iter().map(|r| json!({
            "region_id": r.region_id,
            "region_number": cairn_meta::route::region_number_of(r.region_id),
            "leader_node": r.leader_node,
            "follower_nodes": r.follower_nodes,
            "leader_state": if r.leader_state.is_active() { "active" } else { "downgrading" },
        })).collect::<Vec<_>>(),
    })
}

/// `key=value` pairs of a query string. Values here are numbers, names and page tokens, which
/// never need percent-decoding (names are ASCII letters, digits, '_' and '-').
pub(crate) fn query(raw: &Option<String>) -> Vec<(String, String)> {
    raw.as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn query_u32(q: &[(String, String)], key: &str) -> Result<u32, Status> {
    match q.iter().find(|(k, _)| k == key) {
        None => Ok(0),
        Some((_, v)) => v
            .parse()
            .map_err(|_| Status::invalid_argument(format!("{key}: {v:?} is not a number"))),
    }
}

fn query_str(q: &[(String, String)], key: &str) -> String {
    q.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

async fn databases(State(node): State<Arc<Node>>, RawQuery(raw): RawQuery) -> Response {
    let q = query(&raw);
    let page_size = match query_u32(&q, "page_size") {
        Ok(n) => n,
        Err(s) => return error(s),
    };
    let req = ListDatabasesRequest {
        page_size,
        page_token: query_str(&q, "page_token"),
        ..Default::default()
    };
    match read::list_databases(&node, &req).await {
        Ok(r) => {
            let list: Vec<Value> = r
                .databases
                .into_iter()
                .map(|d| {
                    serde_json::to_value(DatabaseInfo {
                        catalog: d.catalog,
                        name: d.name,
                        options: d.options.into_iter().collect(),
                        created_ms: d.created_ms,
                    })
                    .unwrap_or(Value::Null)
                })
                .collect();
            Json(json!({ "databases": list, "next_page_token": r.next_page_token })).into_response()
        }
        Err(s) => error(s),
    }
}

/// Stored table info by id, as JSON.
fn table_json(node: &Node, id: u64) -> Result<Option<Value>, Status> {
    Ok(store::get::<TableInfo>(node, &layout().table(id))?
        .map(|t| serde_json::to_value(t.value).unwrap_or(Value::Null)))
}

async fn tables(
    State(node): State<Arc<Node>>,
    Path(schema): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let q = query(&raw);
    let page_size = match query_u32(&q, "page_size") {
        Ok(n) => n,
        Err(s) => return error(s),
    };
    let req = ListTablesRequest {
        schema,
        page_size,
        page_token: query_str(&q, "page_token"),
        ..Default::default()
    };
    let listed = match read::list_tables(&node, &req).await {
        Ok(r) => r,
        Err(s) => return error(s),
    };
    let mut out = Vec::with_capacity(listed.tables.len());
    for t in &listed.tables {
        match table_json(&node, t.id) {
            Ok(Some(v)) => out.push(v),
            Ok(None) => {}
            Err(s) => return error(s),
        }
    }
    Json(json!({ "tables": out, "next_page_token": listed.next_page_token })).into_response()
}

async fn table(
    State(node): State<Arc<Node>>,
    Path((schema, name)): Path<(String, String)>,
) -> Response {
    let name = TableName {
        catalog: cairn_meta::DEFAULT_CATALOG.to_string(),
        schema,
        name,
    };
    if let Err(e) = name.validate("name") {
        return error(crate::replica::meta::store::meta_status(&e));
    }
    let found = async {
        node.read_barrier().await?;
        let id = store::get::<u64>(&node, &layout().table_name(&name))?
            .ok_or_else(|| Status::not_found(format!("table {name} not found")))?;
        let info = table_json(&node, id.value)?
            .ok_or_else(|| Status::not_found(format!("table {name} not found")))?;
        let route = store::get::<TableRoute>(&node, &layout().route(id.value))?;
        Ok::<_, Status>(json!({
            "table": info,
            "route": route.map(|r| route_json(&r.value)),
        }))
    };
    match found.await {
        Ok(v) => Json(v).into_response(),
        Err(s) => error(s),
    }
}

fn procedure_json(p: &ProcedureView) -> Value {
    json!({
        "id": p.id,
        "kind": p.kind,
        "target": p.target,
        "state": p.state,
        "step": p.step,
        "attempts": p.attempts,
        "last_error": p.last_error,
        "created_ms": p.created_ms,
        "updated_ms": p.updated_ms,
    })
}

async fn procedures(State(node): State<Arc<Node>>, RawQuery(raw): RawQuery) -> Response {
    let q = query(&raw);
    let limit = match query_u32(&q, "limit") {
        Ok(n) => n,
        Err(s) => return error(s),
    };
    let req = ListProceduresRequest {
        state: query_str(&q, "state"),
        limit,
    };
    match read::list_procedures(&node, &req).await {
        Ok(r) => Json(r.procedures.iter().map(procedure_json).collect::<Vec<_>>()).into_response(),
        Err(s) => error(s),
    }
}

async fn procedure(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(Status::invalid_argument(format!(
            "procedure id {id:?} is not a number"
        )));
    };
    match read::get_procedure(&node, id).await {
        Ok(p) => Json(procedure_json(&p)).into_response(),
        Err(s) => error(s),
    }
}
