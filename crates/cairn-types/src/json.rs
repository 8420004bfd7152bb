//! JSON shapes that the HTTP admin API and `cairn ctl --output json` both give: one definition
//! each, so the two never drift apart. Field names are part of the documented interface
//! (`docs/http.md`, `docs/ctl.md`): add fields, never rename them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A datanode, frontend or flownode as the leader knows it (`/v1/nodes`, `ctl node list|show`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeJson {
    pub id: u64,
    /// `datanode`, `frontend`, `flownode`, or `unspecified`.
    pub role: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    /// Milliseconds since the Unix epoch.
    pub start_time_ms: u64,
    /// `alive`, `suspect`, `down`, `draining` or `unknown`.
    pub state: String,
    /// `None` when no heartbeat arrived under the current leader.
    pub last_heartbeat_age_ms: Option<u64>,
    pub report_interval_ms: u64,
    /// `None` before the first heartbeat under the current leader.
    pub stats: Option<NodeStatsJson>,
    /// Region stats in the latest heartbeat.
    pub region_count: u64,
    /// Of those, regions no table route places on this node.
    pub unverified_region_count: u64,
    /// The failure detector's suspicion level; `None` when not heard from in this leader's term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phi: Option<f64>,
    /// Judged failed by the failure detector.
    #[serde(default)]
    pub failed: bool,
    /// `drain` or `evict_leaders` while an operator drains the node; `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<String>,
    /// Regions the stored routes name this node the leader of (a drain's progress).
    #[serde(default)]
    pub led_regions: u64,
    /// Regions the stored routes name this node a follower of.
    #[serde(default)]
    pub followed_regions: u64,
}

/// The latest stats a node reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatsJson {
    pub rcus: u64,
    pub wcus: u64,
    pub table_count: u64,
    pub region_count: u64,
    pub cpu_usage: f64,
    pub load: f64,
    pub disk_read_bytes_per_sec: u64,
    pub disk_write_bytes_per_sec: u64,
    pub attributes: BTreeMap<String, String>,
}

/// A region as `/v1/regions/{id}` and `cairn ctl region show` print it (see docs/http.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionJson {
    pub region_id: u64,
    pub table_id: u64,
    pub region_number: u32,
    /// `catalog.schema.name`.
    pub table: String,
    pub leader_node: u64,
    pub follower_nodes: Vec<u64>,
    /// "active" or "downgrading" (a migration is moving its leader).
    pub leader_state: String,
    pub route_version: u64,
    /// The write lease as the Cairn leader's record has it; null when no node may hold one.
    pub lease: Option<RegionLeaseJson>,
    /// The migration moving the region; null when none runs.
    pub migration: Option<RegionMigrationJson>,
}

/// A region's write lease, by the Cairn leader's clock (its safety margin included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionLeaseJson {
    pub holder: u64,
    pub remaining_ms: u64,
}

/// A migration in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionMigrationJson {
    pub procedure_id: u64,
    pub from_node: u64,
    pub to_node: u64,
    pub step: String,
    /// "manual" or "failover".
    pub reason: String,
    pub started_ms: u64,
}

/// Maintenance mode as `/v1/maintenance` and `cairn ctl maintenance status` print it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceJson {
    pub on: bool,
    pub reason: String,
    /// When it was last switched, Unix ms (0: never).
    pub since_ms: u64,
}

/// One event of the event log as `/v1/events` and `cairn ctl event list` print it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventJson {
    pub id: u64,
    /// Unix ms.
    pub at_ms: u64,
    pub kind: String,
    pub subject: String,
    pub message: String,
    pub figures: BTreeMap<String, String>,
}

/// One scheduler (`/v1/schedulers`, `cairn ctl scheduler list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulerJson {
    pub name: String,
    pub enabled: bool,
    pub description: String,
    pub params: BTreeMap<String, String>,
}

/// Every scheduler, and whether maintenance mode pauses them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedulersJson {
    pub paused: bool,
    pub schedulers: Vec<SchedulerJson>,
}

/// One operator (`/v1/operators`, `cairn ctl operator list|show`, `cairn ctl scheduler plan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorJson {
    /// 0 in a plan (nothing was queued).
    pub id: u64,
    pub region_id: u64,
    /// `leader` or `follower`: which copy moves.
    pub kind: String,
    pub from_node: u64,
    pub to_node: u64,
    pub scheduler: String,
    /// `low`, `normal` or `high`.
    pub priority: String,
    pub reason: String,
    pub figures: BTreeMap<String, String>,
    /// `planned`, `queued`, `running`, `done`, `failed` or `cancelled`.
    pub status: String,
    pub steps: Vec<String>,
    /// Unix ms; 0 in a plan.
    pub created_ms: u64,
    /// Unix ms; 0 until it finishes.
    pub finished_ms: u64,
    /// Why it failed or was cancelled.
    pub outcome: String,
    /// The migration procedure that runs it; 0 before it starts.
    pub procedure_id: u64,
    /// Unix ms, `created_ms` + the operator timeout (0 in a plan, or from an older server):
    /// queued then, it is cancelled as timed out; running, its migration rolls back unless the
    /// route names the target by then.
    #[serde(default)]
    pub deadline_ms: u64,
    /// A running operator's progress (`operator show`), one per step: `done`, `running` or
    /// `pending`; absent otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_states: Vec<String>,
}

/// One node's stats history (`/v1/stats/nodes/{id}`, `cairn ctl stats node`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatsHistoryJson {
    pub node_id: u64,
    /// Oldest first; at most 64.
    pub samples: Vec<NodeStatsSampleJson>,
}

/// One stats report of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatsSampleJson {
    /// When the leader received it, Unix ms.
    pub at_ms: u64,
    pub report_interval_ms: u64,
    pub rcus: u64,
    pub wcus: u64,
    pub table_count: u64,
    pub region_count: u64,
    pub cpu_usage: f64,
    pub load: f64,
    pub disk_read_bytes_per_sec: u64,
    pub disk_write_bytes_per_sec: u64,
    /// Received by an earlier leader, restored from its persisted summary.
    pub restored: bool,
}

/// One region's load history as the schedulers see it (`/v1/stats/regions/{id}`,
/// `cairn ctl stats region`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionStatsHistoryJson {
    pub region_id: u64,
    /// Its leader, by its table route.
    pub leader_node: u64,
    /// The size its leader reported last; 0 before the first report.
    pub approximate_bytes: u64,
    /// The mean of the samples: the load the schedulers use.
    pub smoothed_wcus: f64,
    pub smoothed_rcus: f64,
    /// Oldest first; at most 6.
    pub samples: Vec<RegionLoadSampleJson>,
}

/// One sample of a region's load, from its leader's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionLoadSampleJson {
    /// When the leader received the heartbeat, Unix ms.
    pub at_ms: u64,
    pub wcus: u64,
    pub rcus: u64,
    /// The previous leader's smoothed load, restored from its persisted summary.
    pub restored: bool,
}
