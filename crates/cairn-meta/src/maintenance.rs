//! Maintenance mode: while on, the leader moves no region on its own (no failover, no
//! scheduling), so operators can restart datanodes one by one without regions chasing them.
//! Replicated like every record, so it survives a leader change.

use serde::{Deserialize, Serialize};

/// Longest reason an operator may give.
pub const MAINTENANCE_REASON_BYTES_MAX: usize = 1_024;

/// The stored maintenance state; absent means off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub on: bool,
    /// Why, as the operator said it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it was last switched, Unix ms.
    pub since_ms: u64,
}

/// What draining a datanode moves off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainMode {
    /// Every region it leads (and no new region is placed on it).
    Drain,
    /// Only leadership, to a live follower, where the region has one.
    EvictLeaders,
}

impl DrainMode {
    /// The name shown in node views: "drain", "evict_leaders".
    pub fn as_str(self) -> &'static str {
        match self {
            DrainMode::Drain => "drain",
            DrainMode::EvictLeaders => "evict_leaders",
        }
    }
}

/// A datanode an operator asked to drain; absent when none was asked (or it was cancelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    pub node_id: u64,
    pub mode: DrainMode,
    /// When it was asked, Unix ms.
    pub since_ms: u64,
}

/// An operator's setting of one scheduler: on or off, and the parameters changed from their
/// defaults. Replicated, so every leader schedules the same way.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SchedulerSetting {
    pub name: String,
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, String>,
    /// When it was last changed, Unix ms.
    pub since_ms: u64,
}

/// Most parameters one scheduler setting may carry.
pub const SCHEDULER_PARAMS_MAX: usize = 16;
/// Longest parameter name or value.
pub const SCHEDULER_PARAM_BYTES_MAX: usize = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips() {
        let m = Maintenance {
            on: true,
            reason: "rolling upgrade".into(),
            since_ms: 5,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"on":true,"reason":"rolling upgrade","since_ms":5}"#
        );
        assert_eq!(serde_json::from_str::<Maintenance>(&text).unwrap(), m);
    }
}
