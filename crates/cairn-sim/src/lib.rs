//! Simulated datanodes and frontends for a Cairn cluster, built on
//! [`cairn_client::meta::MetaClient`]: many nodes in one process, each with its own heartbeat
//! stream, reporting stats from a deterministic load pattern and obeying instructions for the
//! regions they hold. Used by `cairn sim`, `cairn bench heartbeat` and the playground.
//!
//! Until tables exist, a simulated datanode invents its regions: region `r` of node `n` is
//! `(1000 + n) << 32 | r` ([`regions::sim_region_id`]).
//!
//! Once tables exist, datanodes open, close and truncate the regions the leader tells them to,
//! and a simulated frontend ([`frontend`]) can write to them: it finds each region's leader
//! through `cairn_client`'s route cache, writes to that datanode in this process, and refreshes
//! the route when the datanode says it does not lead the region.
//!
//! Layout: [`load`] (load patterns, pure), [`regions`] (held regions, instructions and data
//! access, pure), [`node`] (one node: identity, stats, handler, write entry), [`frontend`] (the
//! write load), [`fleet`] (many nodes, fault commands, the write load).
#![warn(missing_docs)]

pub mod fleet;
pub mod frontend;
pub mod load;
pub mod node;
pub mod regions;

pub use fleet::{Fleet, NodeStatus, SimConfig, SIM_NODES_MAX};
pub use frontend::{SimFrontend, WriteLoadConfig, WriteLoadStats};
pub use load::{LoadPattern, TableLoad};
pub use node::{SimNode, SimReadError, SimRole, SimWriteError};

/// Why a simulation command failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The configuration is out of bounds.
    #[error("invalid simulation: {0}")]
    InvalidConfig(String),
    /// No simulated node has this id.
    #[error("no simulated node {0}")]
    UnknownNode(u64),
    /// The node is killed; restart it first.
    #[error("node {0} is not running (killed); restart it first")]
    NotRunning(u64),
}
