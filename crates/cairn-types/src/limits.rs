//! Named bounds. Every queue, buffer and request size in Cairn has its limit here or in config.

/// Largest etcd request accepted, in bytes (etcd's default `--max-request-bytes`, 1.5 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1536 * 1024;
/// Default space quota (`--quota-backend-bytes`): etcd's default, 2 GiB of key-value data.
pub const QUOTA_BACKEND_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// gRPC frames may exceed the request limit by this much, so an oversize request is rejected
/// with etcd's "request is too large" error instead of a transport error.
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Most operations in one branch of a Txn (etcd's default `--max-txn-ops` is 128; the issue asks 1024).
pub const TXN_OPS_MAX_DEFAULT: usize = 1024;
/// Most watchers open on one Watch stream.
pub const WATCHERS_PER_STREAM_MAX: usize = 1024;
/// Most Watch streams one node serves at once.
pub const WATCH_STREAMS_MAX: usize = 10_000;
/// Responses buffered per Watch stream before the slowest reader is cancelled.
pub const WATCH_STREAM_BUFFER_MAX: usize = 256;
/// Events sent in one catch-up batch when a watcher resumes from an old revision.
pub const WATCH_CATCHUP_EVENTS_MAX: usize = 1000;
/// Live-event batches buffered between apply and watchers; a watcher that falls further behind
/// resynchronises from the MVCC history.
pub const WATCH_BROADCAST_BATCHES_MAX: usize = 4096;
/// Leases alive at once.
pub const LEASES_MAX: usize = 1_000_000;
/// Longest lease TTL granted, in seconds (etcd's MaxLeaseTTL).
pub const LEASE_TTL_SECS_MAX: i64 = 9_000_000_000;
/// Shortest lease TTL granted, in seconds; shorter requests are raised to it (as etcd does).
pub const LEASE_TTL_SECS_MIN: i64 = 2;
/// Leases revoked per expiry round by the leader, so expiry never floods the log.
pub const LEASE_REVOKES_PER_ROUND_MAX: usize = 1000;
/// Keep-alive requests buffered per stream.
pub const LEASE_KEEPALIVE_BUFFER_MAX: usize = 64;
/// Concurrent in-flight requests forwarded from a follower to the leader.
pub const FORWARD_INFLIGHT_MAX: usize = 4096;
/// Raft log entries after which a snapshot is taken (etcd's default snapshot-count).
pub const SNAPSHOT_LOGS_SINCE_LAST_DEFAULT: u64 = 100_000;
/// Bytes per chunk when a snapshot is streamed to a peer.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// The largest `request_bytes_max` a node may be configured with (64 MiB).
pub const REQUEST_BYTES_MAX_CONFIGURABLE: usize = 64 * 1024 * 1024;
/// Largest gRPC message a node sends or accepts on the peer port, bytes: one AppendEntries, vote,
/// forwarded request or snapshot chunk. A log entry is one client request of at most
/// [`REQUEST_BYTES_MAX_CONFIGURABLE`] plus its framing, so one entry always fits with room to
/// spare; a batch of entries that does not fit is sent in parts (openraft's `PartialSuccess`),
/// so this bounds what a peer can make a node allocate without ever stalling replication.
/// Not configurable: sender and receiver must agree on it.
pub const PEER_MESSAGE_BYTES_MAX: usize = 80 * 1024 * 1024;
/// Most AppendEntries messages a leader may keep unanswered on one replication stream: the
/// largest replication window a node may be configured with (`replication_window`). openraft
/// produces one message per batch of proposals and one per commit step, so a follower this far
/// behind is slow, not pipelining.
pub const APPEND_STREAM_INFLIGHT_MAX: usize = 256;
/// The replication window unless configured: AppendEntries messages a leader keeps unanswered
/// on one replication stream. The next message is made only once one is answered, and then
/// carries every entry proposed meanwhile, so a busy leader sends fewer, fuller appends; two
/// let a proposal leave at once while a commit-only message is still unanswered (BENCHMARKS.md,
/// issue 12, nineteenth session).
pub const REPLICATION_WINDOW_DEFAULT: usize = 2;
/// Largest snapshot a node accepts from a peer unless configured (`snapshot_bytes_max`), bytes.
/// The receiver holds the whole stream in memory next to the state it decodes from it, which
/// is about 4.5 times the encoded size (1M keys of 100 B: 124 MB encoded, ~540 MiB held), so
/// 2 GiB (also etcd's default backend quota) peaks near 12 GiB on a 24 GiB machine. A cluster
/// whose snapshot outgrows it cannot add members until the limit is raised on the receivers.
pub const SNAPSHOT_BYTES_MAX: usize = 2 * 1024 * 1024 * 1024;
/// Time allowed per MiB of snapshot for sending, decoding and installing it on the receiver,
/// ms, on top of openraft's `install_snapshot_timeout` (whose 200 ms default suits only tiny
/// snapshots: decoding alone takes longer for a large state). Decoding runs at about
/// 140 MB/s on one of this machine's cores (1M keys, 124 MB: 0.6–0.9 s); 100 ms per MiB
/// (10 MiB/s) leaves room for transfer, fsync and a loaded machine.
pub const SNAPSHOT_SEND_MS_PER_MIB: u64 = 100;
/// Regions one batched instruction (open, close or truncate regions) names at most.
pub const REGIONS_PER_INSTRUCTION_MAX: usize = 1024;
