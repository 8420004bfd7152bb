//! The replica layer: what every node has regardless of leadership — the Raft handle and the
//! applied state ([`node`]), proposing and the read barrier, forwarding leader-only requests
//! ([`peer_request`]) to the leader over the peer port ([`peer_service`]), and metadata records
//! in the replicated store ([`meta`]); the etcd KV operations ([`kv`]).

pub mod forward;
pub mod forward_stream;
pub mod kv;
pub mod lease_keeper;
mod membership;
pub mod meta;
pub mod node;
pub mod peer_request;
pub mod peer_service;
pub mod term;

use crate::ServerConfig;
use cairn_store::log_store::LogStore;
use std::path::{Path, PathBuf};

/// Where the Raft log of a node with data dir `dir` lives.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("raft.redb")
}

/// Size of the node's Raft log file, bytes.
pub fn log_file_size(config: &ServerConfig) -> u64 {
    LogStore::file_size(&log_path(&config.data_dir()))
}
