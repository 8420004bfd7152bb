//! The Rust client for Cairn, usable against any etcd v3 server.
//!
//! [`EtcdClient`] holds one lazily connected gRPC channel per endpoint and sends each call to the
//! endpoint that last answered. When a node cannot be reached it moves on to the next endpoint,
//! with a bounded number of attempts and a bounded backoff ([`retry`]); reads also move on when a
//! node answers `Unavailable` (no leader, shutting down) or does not answer in time, writes do not
//! (they may have been applied; etcd's Go client makes the same choice). Cairn followers forward
//! writes to the leader themselves, so the client does not need to know who leads.
//!
//! [`meta::MetaClient`] is what datanodes, frontends and flownodes use: the heartbeat stream to
//! the Cairn leader and the node registry.
//!
//! The typed gRPC clients ([`EtcdClient::kv`], [`EtcdClient::watch`], …) are available for
//! everything the convenience methods do not cover; they talk to the preferred endpoint and do not
//! retry.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_client::ClientError> {
//! let client = cairn_client::EtcdClient::new(["127.0.0.1:4379", "127.0.0.1:5379"])?;
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?;
//! assert_eq!(kv.map(|kv| kv.value), Some(b"hello".to_vec()));
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod client;
pub mod endpoint;
mod error;
pub mod keys;
pub mod meta;
pub mod retry;
mod watch;

pub use cairn_proto as proto;
pub use client::{lazy_channel, EtcdClient};
pub use error::ClientError;
pub use watch::WatchStream;

use retry::RetryPolicy;

/// Longest wait for a TCP connection to an endpoint before it counts as unavailable.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Longest wait for the answer to one attempt of a call made through [`EtcdClient`]'s
/// convenience methods.
pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Attempts per call (raised to the number of endpoints so each is tried once).
pub const ATTEMPTS_MAX: u32 = 10;
/// First delay after every endpoint failed once.
pub const BACKOFF_INITIAL_MS: u64 = 50;
/// Largest delay between two attempts.
pub const BACKOFF_MAX_MS: u64 = 1_000;
/// Most endpoints one client accepts.
pub const ENDPOINTS_MAX: usize = 64;
/// Largest response accepted, in bytes. etcd's own client accepts up to 2 GiB; a range over a
/// large keyspace easily exceeds tonic's 4 MiB default.
pub const RESPONSE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Interval of HTTP/2 pings, so a connection to a frozen node is noticed even on a quiet watch.
pub const KEEPALIVE_INTERVAL_MS: u64 = 10_000;
/// How long a ping may stay unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT_MS: u64 = 5_000;

/// Timeouts and retry bounds of an [`EtcdClient`]. `Default` uses the crate's constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// See [`CONNECT_TIMEOUT_MS`].
    pub connect_timeout_ms: u64,
    /// See [`REQUEST_TIMEOUT_MS`].
    pub request_timeout_ms: u64,
    /// See [`ATTEMPTS_MAX`].
    pub attempts_max: u32,
    /// See [`BACKOFF_INITIAL_MS`].
    pub backoff_initial_ms: u64,
    /// See [`BACKOFF_MAX_MS`].
    pub backoff_max_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout_ms: CONNECT_TIMEOUT_MS,
            request_timeout_ms: REQUEST_TIMEOUT_MS,
            attempts_max: ATTEMPTS_MAX,
            backoff_initial_ms: BACKOFF_INITIAL_MS,
            backoff_max_ms: BACKOFF_MAX_MS,
        }
    }
}

impl ClientConfig {
    /// The retry part of this configuration.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts_max: self.attempts_max,
            backoff_initial_ms: self.backoff_initial_ms,
            backoff_max_ms: self.backoff_max_ms,
        }
    }
}
