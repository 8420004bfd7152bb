//! How node identities are kept in the replicated store, so a new leader knows every node.
//!
//! Layout: key `/cairn/default/nodes/<id>` (id in decimal), value the JSON of [`NodeRecord`]:
//! `{"id":7,"role":"datanode","address":"10.0.0.1:4000","labels":{"zone":"a"},"version":"0.1.0",
//! "start_time_ms":1700000000000}`. Written by the leader when a node first heartbeats or its
//! identity changes; deleted when the node is forgotten. Stats are never stored.

use cairn_proto::cairnpb::{NodeIdentity, NodeRole};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Every node record's key starts with this.
pub const NODES_PREFIX: &str = "/cairn/default/nodes/";

/// The key of node `id`.
pub fn node_key(id: u64) -> String {
    format!("{NODES_PREFIX}{id}")
}

/// A node's identity as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    /// "datanode", "frontend" or "flownode".
    pub role: String,
    pub address: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub start_time_ms: u64,
}

/// The lowercase role name used in records and JSON.
pub fn role_name(role: i32) -> &'static str {
    match NodeRole::try_from(role) {
        Ok(NodeRole::Datanode) => "datanode",
        Ok(NodeRole::Frontend) => "frontend",
        Ok(NodeRole::Flownode) => "flownode",
        _ => "unspecified",
    }
}

fn role_from_name(name: &str) -> Option<NodeRole> {
    match name {
        "datanode" => Some(NodeRole::Datanode),
        "frontend" => Some(NodeRole::Frontend),
        "flownode" => Some(NodeRole::Flownode),
        _ => None,
    }
}

impl From<&NodeIdentity> for NodeRecord {
    fn from(i: &NodeIdentity) -> Self {
        Self {
            id: i.id,
            role: role_name(i.role).into(),
            address: i.address.clone(),
            labels: i
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            version: i.version.clone(),
            start_time_ms: i.start_time_ms,
        }
    }
}

impl NodeRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a node record always serializes")
    }

    /// Decodes a stored value; the error says what is wrong with it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let r: NodeRecord = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if role_from_name(&r.role).is_none() {
            return Err(format!("unknown role {:?}", r.role));
        }
        Ok(r)
    }

    pub fn to_identity(&self) -> NodeIdentity {
        NodeIdentity {
            id: self.id,
            role: role_from_name(&self.role).map_or(0, |r| r as i32),
            address: self.address.clone(),
            labels: self
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            version: self.version.clone(),
            start_time_ms: self.start_time_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_json() {
        let identity = NodeIdentity {
            id: 7,
            role: NodeRole::Datanode as i32,
            address: "10.0.0.1:4000".into(),
            labels: [("zone".to_string(), "a".to_string())]
                .into_iter()
                .collect(),
            version: "0.1.0".into(),
            start_time_ms: 5,
        };
        let json = NodeRecord::from(&identity).to_json();
        assert_eq!(
            String::from_utf8(json.clone()).unwrap(),
            r#"{"id":7,"role":"datanode","address":"10.0.0.1:4000","labels":{"zone":"a"},"version":"0.1.0","start_time_ms":5}"#
        );
        assert_eq!(
            NodeRecord::from_json(&json).unwrap().to_identity(),
            identity
        );
        assert_eq!(node_key(7), "/cairn/default/nodes/7");
        assert!(NodeRecord::from_json(br#"{"id":1,"role":"x","address":"a"}"#).is_err());
    }
}
