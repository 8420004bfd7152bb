//! Cairn's server: the etcd v3 gRPC API and cairn.v1 on the client port, the Raft peer service,
//! leader services (one lifecycle per leader term: lease expiry, the heartbeat hub, procedures,
//! reconcilers), and the HTTP admin endpoints.
//!
//! Laid out in three layers, each importing only those below it:
//! - [`replica`]: what every node has regardless of leadership — the Raft handle, the applied
//!   state, propose and propose-in-term, the read barrier, forwarding to the leader and the peer
//!   service ([`replica::node::Replica`]);
//! - [`leader`]: the leader-term lifecycle and every leader-only service, and the
//!   [`leader::node::Node`] that holds their state beside the replica;
//! - [`api`]: the gRPC and HTTP handlers — validate, call, map the error.
//!
//! [`config`], [`errors`], [`metrics`], [`clock`] and [`memory`] sit below them; [`run`] wires
//! everything together. The binary calls [`run`] with a [`ServerConfig`] and a shutdown future;
//! tests do the same in-process.

pub mod api;
pub mod clock;
pub mod config;
pub mod cpu_policy;
pub mod errors;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod replica;
pub mod run;

// The paths these modules had before the server was laid out by layer, kept for the binary,
// the tests and the simulation.
pub use api::{http, http_meta, services};
pub use leader::{heartbeat, procedure};
pub use replica::{peer_request, peer_service};

/// [`Node`](node::Node) and the forwarding seams, at the path they had before the split.
pub mod node {
    pub use crate::leader::node::Node;
    pub use crate::replica::node::{
        ForwardFailure, ForwardFuture, LeaderRequestHandler, PeerLink, Replica,
    };
}

pub use cairn_store::WatchBatch;
pub use config::ServerConfig;
pub use run::{run, run_with_node};
