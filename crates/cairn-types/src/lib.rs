//! Cairn's shared vocabulary: node ids, the named limits every layer enforces, and domain errors.
//!
//! Nothing here does I/O; every other crate may depend on this one.

pub mod json;
pub mod latency;
pub mod limits;

/// Identifier of a Cairn node (a Raft member). Small integers chosen by the operator.
pub type NodeId = u64;

/// Where a node can be reached, as stored in the replicated membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeAddrs {
    /// Raft peer address (`HOST:PORT`).
    pub peer: String,
    /// Client gRPC address (etcd v3 API + cairn.v1), empty until the node has announced it.
    pub client: String,
    /// HTTP admin address, empty until the node has announced it.
    pub http: String,
}

/// The leader is elsewhere: carries who leads so a caller can go there without parsing text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not leader; leader is node {leader_id:?} at {leader_addr:?}")]
pub struct NotLeader {
    /// The leader's node id, when one is known.
    pub leader_id: Option<NodeId>,
    /// The leader's client address, when known.
    pub leader_addr: Option<String>,
}
