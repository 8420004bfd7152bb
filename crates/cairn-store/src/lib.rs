//! Cairn's replicated store: openraft driving a segmented write-ahead log and an in-memory MVCC state machine
//! with etcd's revision model, snapshotted to files, replicated over a gRPC peer network.
//!
//! The server crate proposes [`Command`]s through [`Raft`] and reads the applied state through
//! [`StateMachineHandle`]; it never touches storage directly.

pub mod auth;
pub mod backup;
pub mod command;
pub mod crc;
pub mod log_cache;
pub mod log_migrate;
pub mod log_store;
pub mod mem_log_store;
pub mod mvcc;
pub mod network;
mod peer_wire;
pub mod runtime;
pub mod serde_bytes;
pub mod sim_network;
mod snapshot_file;
pub mod state_machine;
pub mod stream_append;
pub mod wal;

pub use command::{Command, CommandResult};
pub use snapshot_file::ClusterState;
pub use state_machine::{StateMachineHandle, StateMachineStore, WatchBatch};

openraft::declare_raft_types!(
    /// Cairn's concrete Raft types: our commands and results, node ids and node addresses.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = cairn_types::NodeAddrs,
        AsyncRuntime = runtime::CairnRuntime,
);

/// The Raft handle type used throughout Cairn.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
/// A log id of Cairn's Raft.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// The replicated membership as stored in the log and snapshots.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
