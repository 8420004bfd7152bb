//! HTTP admin endpoints: `/health` for load balancers and `/metrics` for Prometheus.

use crate::node::Node;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
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
