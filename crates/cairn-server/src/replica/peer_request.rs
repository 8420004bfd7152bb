//! Requests only the leader can serve, as they travel from a follower to the leader over the peer
//! port (`RaftPeer.Forward`). A node that leads serves them directly; see [`crate::replica::node`].
//! `Meta` and `ListNodes` need the leader's services; the leader layer answers them (see
//! [`crate::replica::node::LeaderRequestHandler`]).

use cairn_store::{Command, CommandResult};
use serde::{Deserialize, Serialize};

/// A DDL request as it travels to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ddl {
    CreateDatabase,
    DropDatabase,
    CreateTable,
    DropTable,
    AlterTable,
    TruncateTable,
    MigrateRegion,
    SetMaintenance,
    DrainNode,
    SetScheduler,
}

/// A question about the leader's schedulers' operators and the stats history they read (all
/// in its memory only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulingCall {
    /// A dry-run pass.
    Plan,
    ListOperators {
        finished: bool,
    },
    GetOperator {
        id: u64,
    },
    CancelOperator {
        id: u64,
    },
    /// One node's stats history.
    NodeStats {
        node_id: u64,
    },
    /// One region's load history.
    RegionStats {
        region_id: u64,
    },
}

/// Something only the leader decides.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderRequest {
    /// Propose a command and return its applied result.
    Write(Command),
    /// Confirm leadership with a quorum and return the index a linearizable read must wait for.
    ReadIndex,
    /// Renew a lease; returns its TTL (0 when it does not exist).
    LeaseKeepAlive { id: i64 },
    /// Remaining and granted TTL of a lease; `None` when it does not exist.
    LeaseTimeToLive { id: i64 },
    /// Add a member; the leader assigns its id.
    MemberAdd { peer_addr: String, learner: bool },
    /// Remove a member.
    MemberRemove { id: u64 },
    /// Make a learner a voter.
    MemberPromote { id: u64 },
    /// Change a member's peer address.
    MemberUpdate { id: u64, peer_addr: String },
    /// Hand leadership to `to`.
    TransferLeader { to: u64 },
    /// The leader's node registry: every node, or only `node_id` when not 0.
    ListNodes { node_id: u64 },
    /// A DDL request (prost-encoded) to run as a procedure.
    Meta { ddl: Ddl, body: Vec<u8> },
    /// Where a region is, with its lease as the leader sees it.
    GetRegion { region_id: u64 },
    /// The schedulers' operators.
    Scheduling(SchedulingCall),
}

/// The leader's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LeaderResponse {
    Written(CommandResult),
    ReadIndex(u64),
    KeepAlive {
        ttl: i64,
    },
    TimeToLive(Option<(i64, i64)>),
    MemberAdded {
        id: u64,
    },
    Done,
    /// A prost-encoded `cairn.v1.ListNodesResponse`.
    Nodes(Vec<u8>),
    /// A prost-encoded `cairn.v1.DdlResponse`.
    Meta(Vec<u8>),
    /// A prost-encoded `cairn.v1.RegionView`.
    Region(Vec<u8>),
    /// A prost-encoded `ListOperatorsResponse`, `OperatorView`, `NodeStatsHistory` or
    /// `RegionStatsHistory`.
    Scheduling(Vec<u8>),
    /// A gRPC status the leader returned, carried across as code and message.
    Error {
        code: i32,
        message: String,
    },
}
