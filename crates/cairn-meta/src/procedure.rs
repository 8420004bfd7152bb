//! The persisted record of a DDL procedure. The server owns the step logic; this is what it
//! stores between steps so a new leader can resume, and what `ListProcedures` shows.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Where a procedure is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcedureState {
    Running,
    Done,
    Failed,
}

impl ProcedureState {
    /// The name shown in the API and accepted as a filter: "running", "done", "failed".
    pub fn as_str(&self) -> &'static str {
        match self {
            ProcedureState::Running => "running",
            ProcedureState::Done => "done",
            ProcedureState::Failed => "failed",
        }
    }

    /// The inverse of [`as_str`](Self::as_str), case-insensitive.
    pub fn parse(s: &str) -> Option<Self> {
        [
            ProcedureState::Running,
            ProcedureState::Done,
            ProcedureState::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether the procedure will take no further steps.
    pub fn is_finished(&self) -> bool {
        *self != ProcedureState::Running
    }
}

impl fmt::Display for ProcedureState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One procedure as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureRecord {
    pub id: u64,
    /// create_table, drop_table, alter_table, truncate_table, create_database, drop_database.
    pub kind: String,
    /// What it acts on, e.g. "default.public.cpu".
    pub target: String,
    pub state: ProcedureState,
    /// The step it is at (or ended at).
    pub step: String,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: String,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Resources it holds locks on, so a new leader can take them again before resuming.
    #[serde(default)]
    pub locks: Vec<String>,
    /// Tables whose regions it may be opening on datanodes before they are routed: the region
    /// reconciler leaves those regions alone while the procedure runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opening_tables: Vec<u64>,
    /// Procedure-specific state, opaque here.
    #[serde(default)]
    pub data: ProcedureData,
}

/// A procedure kind's own state, kept as the JSON text it is stored as. It is written at every
/// step and copied with the record: as text that is one allocation, where a tree of JSON values
/// (a CREATE TABLE's is its whole table, every column a map) is hundreds, cloned and dropped
/// again at each step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcedureData(Box<RawValue>);

impl ProcedureData {
    /// `value` as JSON.
    pub fn of<T: Serialize>(value: &T) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(Self)
    }

    /// The data read back as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl Default for ProcedureData {
    /// JSON `null`: no data (a procedure not started yet, or one that ended).
    fn default() -> Self {
        Self(RawValue::NULL.to_owned())
    }
}

impl PartialEq for ProcedureData {
    /// The same JSON text (records are written compact, so equal data reads equal).
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names() {
        for s in [
            ProcedureState::Running,
            ProcedureState::Done,
            ProcedureState::Failed,
        ] {
            assert_eq!(ProcedureState::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("{:?}", s.as_str())
            );
            assert_eq!(s.to_string(), s.as_str());
        }
        assert_eq!(ProcedureState::parse("DONE"), Some(ProcedureState::Done));
        assert_eq!(ProcedureState::parse("paused"), None);
        assert!(!ProcedureState::Running.is_finished());
        assert!(ProcedureState::Failed.is_finished());
    }

    #[test]
    fn record_round_trips_with_opaque_data() {
        let r = ProcedureRecord {
            id: 9,
            kind: "create_table".into(),
            target: "default.public.cpu".into(),
            state: ProcedureState::Running,
            step: "open_regions".into(),
            attempts: 2,
            last_error: "datanode 3 timed out".into(),
            created_ms: 1,
            updated_ms: 2,
            locks: vec!["table/default.public.cpu".into()],
            opening_tables: vec![1024],
            data: ProcedureData::of(&serde_json::json!({"table_id": 1024, "regions": [0, 1]}))
                .unwrap(),
        };
        let bytes = serde_json::to_vec(&r).unwrap();
        let back = serde_json::from_slice::<ProcedureRecord>(&bytes).unwrap();
        assert_eq!(back, r);
        let data: serde_json::Value = back.data.decode().unwrap();
        assert_eq!(data["regions"][1], 1);
        // Stored as an object inside the record, not as a string of JSON.
        let stored: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(stored["data"]["table_id"], 1024);
        // A record without data (or an older one) reads as null.
        let mut bare = stored.clone();
        bare.as_object_mut().unwrap().remove("data");
        let bare: ProcedureRecord = serde_json::from_str(&bare.to_string()).unwrap();
        assert_eq!(bare.data.json(), "null");
    }
}
