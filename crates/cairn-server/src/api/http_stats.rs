//! HTTP JSON resources for the stats history the leader keeps, mirroring `cairn ctl stats`:
//! `GET /v1/stats/nodes/{id}` (a node's last reports) and `GET /v1/stats/regions/{id}` (a
//! region's load samples and the smoothed load the schedulers use). Shapes are in
//! `docs/http.md`.

use crate::api::http_ops::error;
use crate::api::meta::scheduling;
use crate::leader::node::Node;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cairn_proto::cairnpb::{NodeStatsHistory, RegionStatsHistory};
use cairn_types::json::{
    NodeStatsHistoryJson, NodeStatsSampleJson, RegionLoadSampleJson, RegionStatsHistoryJson,
};
use std::sync::Arc;
use tonic::Status;

/// Routes of this module, merged into the node's HTTP router.
pub fn routes() -> Router<Arc<Node>> {
    Router::new()
        .route("/v1/stats/nodes/{id}", get(node_stats))
        .route("/v1/stats/regions/{id}", get(region_stats))
}

/// A node's stats history as `/v1/stats/nodes/{id}` and `cairn ctl stats node` print it.
pub fn node_stats_json(h: NodeStatsHistory) -> NodeStatsHistoryJson {
    NodeStatsHistoryJson {
        node_id: h.node_id,
        samples: h
            .samples
            .into_iter()
            .map(|s| NodeStatsSampleJson {
                at_ms: s.at_ms,
                report_interval_ms: s.report_interval_ms,
                rcus: s.rcus,
                wcus: s.wcus,
                table_count: s.table_count,
                region_count: s.region_count,
                cpu_usage: s.cpu_usage,
                load: s.load,
                disk_read_bytes_per_sec: s.disk_read_bytes_per_sec,
                disk_write_bytes_per_sec: s.disk_write_bytes_per_sec,
                restored: s.restored,
            })
            .collect(),
    }
}

/// A region's load history as `/v1/stats/regions/{id}` and `cairn ctl stats region` print it.
pub fn region_stats_json(h: RegionStatsHistory) -> RegionStatsHistoryJson {
    RegionStatsHistoryJson {
        region_id: h.region_id,
        leader_node: h.leader_node,
        approximate_bytes: h.approximate_bytes,
        smoothed_wcus: h.smoothed_wcus,
        smoothed_rcus: h.smoothed_rcus,
        samples: h
            .samples
            .into_iter()
            .map(|s| RegionLoadSampleJson {
                at_ms: s.at_ms,
                wcus: s.wcus,
                rcus: s.rcus,
                restored: s.restored,
            })
            .collect(),
    }
}

fn parse_id(what: &str, raw: &str) -> Result<u64, Status> {
    match raw.parse::<u64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(Status::invalid_argument(format!(
            "{what} id {raw:?} is not a positive number"
        ))),
    }
}

async fn node_stats(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    let got = match parse_id("node", &id) {
        Ok(id) => scheduling::node_stats(&node, id).await,
        Err(s) => Err(s),
    };
    match got {
        Ok(h) => Json(node_stats_json(h)).into_response(),
        Err(s) => error(s),
    }
}

async fn region_stats(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    let got = match parse_id("region", &id) {
        Ok(id) => scheduling::region_stats(&node, id).await,
        Err(s) => Err(s),
    };
    match got {
        Ok(h) => Json(region_stats_json(h)).into_response(),
        Err(s) => error(s),
    }
}
