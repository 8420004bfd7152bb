//! HTTP admin endpoints: `/health` for load balancers, `/metrics` for Prometheus, and the
//! `/v1/…` JSON resources documented in `docs/http.md`.

use crate::api::services::node_registry::list_nodes;
use crate::leader::node::Node;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cairn_proto::cairnpb::NodeView;
pub use cairn_types::json::{NodeJson, NodeStatsJson};
use openraft::async_runtime::watch::WatchReceiver;
use std::fmt::Write;
use std::sync::Arc;

/// A node counts as caught up when it has applied all but this many of its log entries.
pub const HEALTH_APPLY_LAG_MAX: u64 = 1000;

/// The HTTP router of one node.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}", get(node_by_id))
        .merge(crate::api::http_meta::routes())
        .merge(crate::api::http_ops::routes())
        .merge(crate::api::http_scheduling::routes())
        .merge(crate::api::http_stats::routes())
        .with_state(node)
}

/// Why a node is unhealthy, or `None` when it is healthy.
pub fn unhealthy_reason(node: &Node) -> Option<String> {
    if node.live_leader().is_none() {
        return Some("no leader".into());
    }
    let m = node.raft.metrics().borrow_watched().clone();
    let last = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    if last.saturating_sub(applied) > HEALTH_APPLY_LAG_MAX {
        return Some(format!(
            "catching up: applied {applied} of {last} log entries"
        ));
    }
    let announced = {
        let s = node.sm.read();
        s.node_addrs.get(&node.id)
            == Some(&(
                node.config.listen_client.clone(),
                node.config.listen_http.clone(),
            ))
    };
    if !announced {
        return Some("publishing this node's addresses to the cluster".into());
    }
    None
}

async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match unhealthy_reason(&node) {
        None => (
            StatusCode::OK,
            format!(
                "{{\"health\":\"true\",\"leader\":{}}}\n",
                node.live_leader().unwrap_or(0)
            ),
        ),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{{\"health\":\"false\",\"reason\":{reason:?}}}\n"),
        ),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let m = node.raft.metrics().borrow_watched().clone();
    let mut out = String::new();
    let last = m.last_log_index.unwrap_or(0);
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let committed = m.local_committed.map(|l| l.index).unwrap_or(0);
    let gauges: [(&str, &str, u64); 7] = [
        ("cairn_raft_term", "Current Raft term.", m.current_term),
        ("cairn_raft_index", "Last Raft log index.", last),
        (
            "cairn_raft_committed_index",
            "Last committed log index.",
            committed,
        ),
        (
            "cairn_raft_applied_index",
            "Last applied log index.",
            applied,
        ),
        (
            "cairn_raft_apply_lag",
            "Log entries not yet applied.",
            last.saturating_sub(applied),
        ),
        (
            "cairn_raft_is_leader",
            "1 if this node leads.",
            u64::from(m.current_leader == Some(node.id)),
        ),
        (
            "cairn_mvcc_revision",
            "Current store revision.",
            node.revision().max(0) as u64,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    node.metrics.render(&mut out);
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        out,
    )
}

/// A node as `/v1/nodes` and `cairn ctl node` show it (see docs/http.md): the one conversion
/// from the NodeRegistry's view, used by both.
pub fn node_json(v: NodeView) -> NodeJson {
    let i = v.identity.unwrap_or_default();
    NodeJson {
        id: i.id,
        role: crate::leader::heartbeat::record::role_name(i.role).to_string(),
        address: i.address,
        labels: i.labels.into_iter().collect(),
        version: i.version,
        start_time_ms: i.start_time_ms,
        state: v.state,
        last_heartbeat_age_ms: v.last_heartbeat_age_ms,
        report_interval_ms: v.report_interval_ms,
        stats: v.stats.map(|s| NodeStatsJson {
            rcus: s.rcus,
            wcus: s.wcus,
            table_count: s.table_count,
            region_count: s.region_count,
            cpu_usage: s.cpu_usage,
            load: s.load,
            disk_read_bytes_per_sec: s.disk_read_bytes_per_sec,
            disk_write_bytes_per_sec: s.disk_write_bytes_per_sec,
            attributes: s.attributes.into_iter().collect(),
        }),
        region_count: v.region_count,
        unverified_region_count: v.unverified_region_count,
        phi: v.phi,
        failed: v.failed,
        drain: (!v.drain.is_empty()).then_some(v.drain),
        led_regions: v.led_regions,
        followed_regions: v.followed_regions,
    }
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn node_views(node: &Node, id: u64) -> Result<Vec<NodeJson>, Response> {
    match list_nodes(node, id).await {
        Ok(r) => Ok(r.nodes.into_iter().map(node_json).collect()),
        Err(s) => Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            s.message().to_string(),
        )),
    }
}

async fn nodes(State(node): State<Arc<Node>>) -> Response {
    match node_views(&node, 0).await {
        Ok(list) => Json(list).into_response(),
        Err(r) => r,
    }
}

async fn node_by_id(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    let id = match id.parse::<u64>() {
        Ok(id) if id > 0 => id,
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("node id {id:?} is not a positive number"),
            )
        }
    };
    match node_views(&node, id).await {
        Ok(list) => match list.into_iter().next() {
            Some(n) => Json(n).into_response(),
            None => json_error(
                StatusCode::NOT_FOUND,
                format!("node {id} is not registered"),
            ),
        },
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::cairnpb::{NodeIdentity, NodeRole, NodeStats};

    #[test]
    fn a_node_view_reads_as_the_documented_json_and_back() {
        let view = NodeView {
            identity: Some(NodeIdentity {
                id: 7,
                role: NodeRole::Datanode as i32,
                address: "10.0.0.1:4000".into(),
                labels: [("zone".to_string(), "z1".to_string())].into(),
                version: "0.1.0".into(),
                start_time_ms: 1_795_000_000_000,
            }),
            state: "alive".into(),
            last_heartbeat_age_ms: Some(812),
            stats: Some(NodeStats {
                rcus: 1_200,
                cpu_usage: 0.75,
                ..Default::default()
            }),
            region_count: 12,
            unverified_region_count: 12,
            report_interval_ms: 3_000,
            phi: Some(1.5),
            failed: false,
            ..Default::default()
        };
        let node = node_json(view);
        let json = serde_json::to_value(&node).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "address",
                "failed",
                "followed_regions",
                "id",
                "labels",
                "last_heartbeat_age_ms",
                "led_regions",
                "phi",
                "region_count",
                "report_interval_ms",
                "role",
                "start_time_ms",
                "state",
                "stats",
                "unverified_region_count",
                "version",
            ]
        );
        assert_eq!(json["role"], "datanode");
        assert_eq!(json["stats"]["cpu_usage"], 0.75);
        let back: NodeJson = serde_json::from_value(json).unwrap();
        assert_eq!(back, node);
    }
}
