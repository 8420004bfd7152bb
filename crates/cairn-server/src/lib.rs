//! Cairn's server: the etcd v3 gRPC API and cairn.v1 on the client port, the Raft peer service,
//! leader services (one lifecycle per leader term: lease expiry, the heartbeat hub, procedures,
//! reconcilers), and the HTTP admin endpoints, wired around one [`node::Node`].
//!
//! The binary calls [`run`] with a [`ServerConfig`] and a shutdown future; tests do the same
//! in-process.

pub mod clock;
pub mod config;
pub mod errors;
pub mod heartbeat;
pub mod http;
pub mod http_meta;
pub mod leader;
pub mod memory;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod peer_request;
pub mod peer_service;
pub mod procedure;
pub mod run;
pub mod services;

pub use cairn_store::WatchBatch;
pub use config::ServerConfig;
pub use run::{run, run_with_node};
