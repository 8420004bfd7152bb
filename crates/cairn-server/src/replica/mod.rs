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

/// The directory of the Raft log of a node with data dir `dir`.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join("raft-log")
}

/// Where Cairn before the write-ahead log kept the Raft log (moved into [`log_path`] at start).
pub fn legacy_log_path(dir: &Path) -> PathBuf {
    dir.join("raft.redb")
}

/// Bytes the node's Raft log takes on disk.
pub fn log_file_size(config: &ServerConfig) -> u64 {
    LogStore::disk_size(&log_path(&config.data_dir()))
}
