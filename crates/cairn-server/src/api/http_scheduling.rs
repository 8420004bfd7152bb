//! HTTP JSON resources for the schedulers, mirroring `cairn ctl scheduler` and `cairn ctl
//! operator`: `GET /v1/schedulers`, `PUT /v1/schedulers/{name}` with `{"enabled": bool,
//! "params": {str: str}}` (both optional), `GET /v1/schedulers/plan` (a dry run),
//! `GET /v1/operators[?finished=true]`, `GET /v1/operators/{id}`, `DELETE /v1/operators/{id}`
//! (cancel a queued one). Shapes are in `docs/http.md`.

use crate::api::http_ops::{error, leader_ddl};
use crate::api::meta::scheduling;
use crate::leader::node::Node;
use crate::replica::peer_request::Ddl;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cairn_proto::cairnpb::{ListSchedulersResponse, OperatorView, SetSchedulerRequest};
use cairn_types::json::{OperatorJson, SchedulerJson, SchedulersJson};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::Status;

/// Routes of this module, merged into the node's HTTP router.
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/schedulers", get(schedulers))
        .route("/v1/schedulers/plan", get(plan))
        .route("/v1/schedulers/{name}", axum::routing::put(set_scheduler))
        .route("/v1/operators", get(operators))
        .route("/v1/operators/{id}", get(operator).delete(cancel))
}

/// The schedulers as `/v1/schedulers` and `cairn ctl scheduler list` print them.
pub fn schedulers_json(r: ListSchedulersResponse) -> SchedulersJson {
    SchedulersJson {
        paused: r.paused,
        schedulers: r
            .schedulers
            .into_iter()
            .map(|s| SchedulerJson {
                name: s.name,
                enabled: s.enabled,
                description: s.description,
                params: s.params.into_iter().collect(),
            })
            .collect(),
    }
}

/// An operator as `/v1/operators` and `cairn ctl operator` print it.
pub fn operator_json(o: OperatorView) -> OperatorJson {
    OperatorJson {
        id: o.id,
        region_id: o.region_id,
        kind: o.kind,
        from_node: o.from_node,
        to_node: o.to_node,
        scheduler: o.scheduler,
        priority: o.priority,
        reason: o.reason,
        figures: o.figures.into_iter().collect(),
        status: o.status,
        steps: o.steps,
        created_ms: o.created_ms,
        finished_ms: o.finished_ms,
        outcome: o.outcome,
        procedure_id: o.procedure_id,
        deadline_ms: o.deadline_ms,
        step_states: o.step_states,
    }
}

fn operators_json(list: Vec<OperatorView>) -> Response {
    Json(list.into_iter().map(operator_json).collect::<Vec<_>>()).into_response()
}

async fn schedulers(State(node): State<Arc<Node>>) -> Response {
    match scheduling::list_schedulers(&node, false).await {
        Ok(r) => Json(schedulers_json(r)).into_response(),
        Err(s) => error(s),
    }
}

/// The body of `PUT /v1/schedulers/{name}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SetSchedulerBody {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

async fn set_scheduler(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: SetSchedulerBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(Status::invalid_argument(format!(
                "body: expected {{\"enabled\": bool, \"params\": {{string: string}}}}: {e}"
            )))
        }
    };
    let request = SetSchedulerRequest {
        name,
        enabled: body.enabled,
        params: body.params.into_iter().collect(),
    };
    match leader_ddl(&node, Ddl::SetScheduler, request.encode_to_vec()).await {
        Ok(_) => schedulers(State(node)).await,
        Err(s) => error(s),
    }
}

async fn plan(State(node): State<Arc<Node>>) -> Response {
    match scheduling::plan(&node).await {
        Ok(r) => operators_json(r.operators),
        Err(s) => error(s),
    }
}

async fn operators(State(node): State<Arc<Node>>, RawQuery(raw): RawQuery) -> Response {
    let q = crate::api::http_meta::query(&raw);
    let finished = match q
        .iter()
        .find(|(k, _)| k == "finished")
        .map(|(_, v)| v.as_str())
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return error(Status::invalid_argument(format!(
                "finished: {v:?} is not true or false"
            )))
        }
    };
    match scheduling::list_operators(&node, finished).await {
        Ok(r) => operators_json(r.operators),
        Err(s) => error(s),
    }
}

fn parse_id(id: &str) -> Result<u64, Status> {
    id.parse()
        .map_err(|_| Status::invalid_argument(format!("id: {id:?} is not an operator id")))
}

async fn operator(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    let got = match parse_id(&id) {
        Ok(id) => scheduling::get_operator(&node, id).await,
        Err(s) => Err(s),
    };
    match got {
        Ok(o) => Json(operator_json(o)).into_response(),
        Err(s) => error(s),
    }
}

async fn cancel(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    let got = match parse_id(&id) {
        Ok(id) => scheduling::cancel_operator(&node, id).await,
        Err(s) => Err(s),
    };
    match got {
        Ok(o) => Json(operator_json(o)).into_response(),
        Err(s) => error(s),
    }
}
