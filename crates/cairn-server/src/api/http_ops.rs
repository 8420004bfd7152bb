//! HTTP JSON resources for operators, mirroring `cairn ctl region` and `cairn ctl maintenance`:
//! `GET /v1/regions/{id}` (where a region is, its lease and any migration), `POST
//! /v1/regions/{id}/migrate?to=N[&timeout_ms=T]` (move its leadership; answers when done or
//! rolled back), `GET /v1/maintenance` and `PUT /v1/maintenance` with `{"on": bool, "reason":
//! str}`. Shapes are in `docs/http.md`.

use crate::api::meta::read;
use crate::leader::node::Node;
use crate::replica::peer_request::{Ddl, LeaderRequest, LeaderResponse};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_proto::cairnpb::{
    DdlResponse, EventView, LeaderState, ListEventsRequest, MigrateRegionRequest, RegionView,
    SetMaintenanceRequest,
};
use cairn_types::json::{
    EventJson, MaintenanceJson, RegionJson, RegionLeaseJson, RegionMigrationJson,
};
use prost::Message;
use serde_json::json;
use std::sync::Arc;
use tonic::{Code, Status};

/// Routes of this module, merged into the node's HTTP router.
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/regions/{id}", get(region))
        .route("/v1/regions/{id}/migrate", post(migrate))
        .route("/v1/maintenance", get(maintenance).put(set_maintenance))
        .route("/v1/events", get(events))
}

/// An event as `/v1/events` and `cairn ctl event list` print it.
pub fn event_json(e: EventView) -> EventJson {
    EventJson {
        id: e.id,
        at_ms: e.at_ms,
        kind: e.kind,
        subject: e.subject,
        message: e.message,
        figures: e.figures.into_iter().collect(),
    }
}

async fn events(State(node): State<Arc<Node>>, RawQuery(q): RawQuery) -> Response {
    let kind = crate::api::http_meta::query(&q)
        .into_iter()
        .find(|(k, _)| k == "kind")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let request = match (query_u64(&q, "since_ms"), query_u64(&q, "limit")) {
        (Ok(since_ms), Ok(limit)) => ListEventsRequest {
            since_ms,
            kind,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        },
        (Err(s), _) | (_, Err(s)) => return error(s),
    };
    match read::list_events(&node, &request).await {
        Ok(r) => Json(r.events.into_iter().map(event_json).collect::<Vec<_>>()).into_response(),
        Err(s) => error(s),
    }
}

/// A region as `/v1/regions/{id}` and `cairn ctl region show` print it: the one conversion from
/// `RegionView`, used by both.
pub fn region_json(v: RegionView) -> RegionJson {
    let route = v.route.unwrap_or_default();
    let table = v
        .table
        .map(|t| format!("{}.{}.{}", t.catalog, t.schema, t.name))
        .unwrap_or_default();
    let leader_state = match LeaderState::try_from(route.leader_state) {
        Ok(LeaderState::Downgrading) => "downgrading",
        _ => "active",
    };
    RegionJson {
        region_id: v.region_id,
        table_id: v.table_id,
        region_number: v.region_number,
        table,
        leader_node: route.leader_node,
        follower_nodes: route.follower_nodes,
        leader_state: leader_state.to_string(),
        route_version: v.route_version,
        lease: v.lease_holder.map(|holder| RegionLeaseJson {
            holder,
            remaining_ms: v.lease_remaining_ms.unwrap_or(0),
        }),
        migration: v.migration.map(|m| RegionMigrationJson {
            procedure_id: m.procedure_id,
            from_node: m.from_node,
            to_node: m.to_node,
            step: m.step,
            reason: m.reason,
            started_ms: m.started_ms,
        }),
    }
}

pub(crate) fn error(s: Status) -> Response {
    let code = match s.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(json!({ "error": s.message() }))).into_response()
}

fn region_id(raw: &str) -> Result<u64, Status> {
    match raw.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(Status::invalid_argument(format!(
            "region id {raw:?} is not a positive number"
        ))),
    }
}

async fn region(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    let id = match region_id(&id) {
        Ok(id) => id,
        Err(s) => return error(s),
    };
    match read::get_region(&node, id).await {
        Ok(view) => Json(region_json(view)).into_response(),
        Err(s) => error(s),
    }
}

/// The numeric query parameter `key` (0 when absent).
fn query_u64(raw: &Option<String>, key: &str) -> Result<u64, Status> {
    let pairs = crate::api::http_meta::query(raw);
    let value = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    match value {
        None => Ok(0),
        Some(v) => v
            .parse()
            .map_err(|_| Status::invalid_argument(format!("{key}: {v:?} is not a number"))),
    }
}

async fn migrate(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let request = match (
        region_id(&id),
        query_u64(&q, "to"),
        query_u64(&q, "timeout_ms"),
    ) {
        (Ok(region_id), Ok(to_node), Ok(timeout_ms)) => MigrateRegionRequest {
            region_id,
            to_node,
            timeout_ms,
        },
        (Err(s), _, _) | (_, Err(s), _) | (_, _, Err(s)) => return error(s),
    };
    match leader_ddl(&node, Ddl::MigrateRegion, request.encode_to_vec()).await {
        Ok(r) => Json(json!({
            "procedure_id": r.procedure_id,
            "revision": r.revision,
        }))
        .into_response(),
        Err(s) => error(s),
    }
}

/// Runs a DDL-like request on the leader (from wherever this node is).
pub(crate) async fn leader_ddl(
    node: &Node,
    ddl: Ddl,
    body: Vec<u8>,
) -> Result<DdlResponse, Status> {
    match node.leader_call(LeaderRequest::Meta { ddl, body }).await? {
        LeaderResponse::Meta(bytes) => {
            DdlResponse::decode(bytes.as_slice()).map_err(|e| Status::internal(e.to_string()))
        }
        other => Err(Status::internal(format!("unexpected answer {other:?}"))),
    }
}

async fn maintenance_json(node: &Node) -> Result<MaintenanceJson, Status> {
    let m = read::get_maintenance(node, false).await?;
    Ok(MaintenanceJson {
        on: m.on,
        reason: m.reason,
        since_ms: m.since_ms,
    })
}

async fn maintenance(State(node): State<Arc<Node>>) -> Response {
    match maintenance_json(&node).await {
        Ok(m) => Json(m).into_response(),
        Err(s) => error(s),
    }
}

/// The body of `PUT /v1/maintenance`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetMaintenanceBody {
    on: bool,
    #[serde(default)]
    reason: String,
}

async fn set_maintenance(State(node): State<Arc<Node>>, body: axum::body::Bytes) -> Response {
    let body: SetMaintenanceBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(Status::invalid_argument(format!(
                "body: expected {{\"on\": bool, \"reason\": string}}: {e}"
            )))
        }
    };
    let request = SetMaintenanceRequest {
        on: body.on,
        reason: body.reason,
    };
    let set = leader_ddl(&node, Ddl::SetMaintenance, request.encode_to_vec()).await;
    match set {
        Ok(_) => maintenance(State(node)).await,
        Err(s) => error(s),
    }
}
