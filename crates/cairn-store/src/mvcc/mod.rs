//! The in-memory MVCC key-value state machine with etcd v3 semantics: pure, deterministic, no I/O.
//!
//! [`KvState`] holds every retained version of every key under one global revision, as etcd's mvcc
//! store does: each write transaction that changes something takes the next revision, every key
//! remembers its create revision, mod revision, version and lease, and old versions stay readable
//! until [`KvState::compact`] drops them. Leases are records (id, TTL, attached keys); their clock
//! lives in the server, which calls [`KvState::lease_revoke`] when one expires.
//!
//! Correctness requirements, for the Raft state machine that drives this type:
//! - Apply the same requests in the same order on every node; the result is then identical
//!   (no clock, no randomness, no hash-map iteration order anywhere in here).
//! - A request that returns `Err` changed nothing: no write of a transaction is applied unless all
//!   of them are.
//! - Validate client requests with [`validate_txn`] and friends before proposing them, as etcd's
//!   gRPC layer does; [`KvState::apply_txn`] still stays total (never half-applies) without it.
//!
//! Module map: `keyspace` (versions and the primitive writes), `range`, `txn`, `lease`,
//! `compact`, `events` (watch catch-up), `validate`, `snapshot`, `error`.

mod compact;
mod error;
mod events;
mod hash;
mod keyspace;
mod lease;
mod range;
mod snapshot;
mod txn;
mod validate;
mod value;

use std::collections::VecDeque;

use cairn_proto::mvccpb::Event;

pub use error::KvError;
pub use hash::txn_put_bytes;
pub use lease::{LeaseInfo, LEASE_TTL_MAX_SECS};
pub use snapshot::KvSnapshot;
pub use validate::{validate_delete, validate_put, validate_range, validate_txn};

use keyspace::{KeyMap, LogEntry};
use lease::LeaseMap;
pub use value::VALUE_PACK_MIN_BYTES;

/// Bytes counted per stored version on top of its key and value, for [`KvState::approx_size_bytes`]:
/// roughly the version record, its revision-log entry and the map node it hangs off.
pub const VERSION_OVERHEAD_BYTES: u64 = 96;

/// The outcome of a write: the response, the watch events it produced and the revision after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<T> {
    /// The response to send (headers left for the server to fill).
    pub response: T,
    /// One event per changed key, in the order the writes happened; `prev_kv` is filled whenever
    /// the key existed before the write (the server strips it for watchers that did not ask).
    pub events: Vec<Event>,
    /// [`KvState::revision`] after the write; unchanged when nothing was written.
    pub revision: i64,
}

/// The MVCC keyspace and lease table of one Cairn node.
///
/// The key map and the lease table are persistent maps: [`KvState::snapshot_view`] takes them in
/// O(1) for a snapshot, and writes after it copy only the nodes they touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvState {
    /// Every key with at least one retained version (live or tombstone), in key order.
    keys: KeyMap,
    /// The latest revision; etcd starts at 1 with no keys.
    revision: i64,
    /// Reads and watches below this revision answer [`KvError::Compacted`]; 0 before any compaction.
    compact_revision: i64,
    leases: LeaseMap,
    /// Every write at or after `compact_revision`, in (revision, sub) order: lets watch catch-up
    /// and compaction touch only what changed instead of scanning all keys.
    log: VecDeque<LogEntry>,
    /// Keys whose newest version is not a tombstone.
    live_keys: usize,
    /// Running total behind [`KvState::approx_size_bytes`].
    size_bytes: u64,
}

impl Default for KvState {
    fn default() -> Self {
        Self::new()
    }
}

impl KvState {
    /// An empty keyspace at revision 1, as a fresh etcd.
    pub fn new() -> Self {
        KvState {
            keys: KeyMap::new(),
            revision: 1,
            compact_revision: 0,
            leases: LeaseMap::new(),
            log: VecDeque::new(),
            live_keys: 0,
            size_bytes: 0,
        }
    }

    /// The current (latest) revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The revision of the last compaction, 0 if there was none.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// How many keys exist at the current revision.
    pub fn key_count(&self) -> usize {
        self.live_keys
    }

    /// The key and value bytes of all retained versions plus [`VERSION_OVERHEAD_BYTES`] each;
    /// what `Status.dbSize` reports.
    pub fn approx_size_bytes(&self) -> u64 {
        self.size_bytes
    }
}

#[cfg(test)]
pub(crate) mod test_util;

#[cfg(test)]
mod model_tests;
