//! The replica layer: what every node has regardless of leadership — the Raft handle and the
//! applied state ([`node`]), proposing and the read barrier, forwarding leader-only requests
//! ([`peer_request`]) to the leader over the peer port ([`peer_service`]), and metadata records
//! in the replicated store ([`meta`]).

pub mod meta;
pub mod node;
pub mod peer_request;
pub mod peer_service;
