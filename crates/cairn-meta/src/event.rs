//! The event log: the leader's decisions about the cluster (a node judged failed or back, a
//! region failed over or migrated, maintenance switched, a node drained), with what they were
//! based on, kept replicated and bounded so operators can ask later why something moved.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Event kinds, as stored and filtered on.
pub const EVENT_KINDS: &[&str] = &[
    "node_failed",
    "node_recovered",
    "failover",
    "migration",
    "drain",
    "evict_leaders",
    "maintenance",
    "operator",
    "scheduler",
];

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    /// When the leader decided, Unix ms.
    pub at_ms: u64,
    /// One of [`EVENT_KINDS`].
    pub kind: String,
    /// What it is about: "node 1001", "region 4398046511104", "cluster".
    pub subject: String,
    /// What happened and why, in a sentence.
    pub message: String,
    /// The figures behind it (phi, threshold, from, to, elapsed_ms, outcome, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub figures: BTreeMap<String, String>,
}
