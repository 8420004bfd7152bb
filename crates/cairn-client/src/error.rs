//! The client's error type: one variant per failure a caller handles differently.

use tonic::Code;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint list was empty (after skipping blank entries).
    #[error("no endpoints given")]
    NoEndpoints,
    /// More endpoints than [`crate::ENDPOINTS_MAX`].
    #[error("{count} endpoints given; at most {max} are allowed")]
    TooManyEndpoints {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An endpoint string could not be used.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The server (or the transport) answered with a gRPC error.
    #[error("{endpoint}: {code:?}: {message}", code = status.code(), message = status.message())]
    Rpc {
        /// The endpoint that answered.
        endpoint: String,
        /// The status as received, with its details and metadata.
        status: Box<tonic::Status>,
    },
    /// No answer within the request timeout.
    #[error("{endpoint}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The endpoint that did not answer.
        endpoint: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// Every attempt failed with a retryable error; `last` is the final one.
    #[error("gave up after {attempts} attempts; last error: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The error of the final attempt.
        last: Box<ClientError>,
    },
    /// The server cancelled a watch (for example: its start revision was compacted).
    #[error("{endpoint}: watch cancelled: {reason}")]
    WatchCanceled {
        /// The endpoint serving the watch.
        endpoint: String,
        /// The server's reason, or a description of the compaction.
        reason: String,
        /// When the start revision was compacted: the compaction revision, otherwise 0.
        compact_revision: i64,
    },
    /// A watch stream ended without the server cancelling it.
    #[error("{endpoint}: watch stream ended: {reason}")]
    WatchEnded {
        /// The endpoint serving the watch.
        endpoint: String,
        /// What ended it.
        reason: String,
    },
}

impl ClientError {
    /// The gRPC status behind this error, if it came from a server or the transport.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Rpc { status, .. } => Some(status),
            ClientError::Exhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// The gRPC code behind this error, if any.
    pub fn code(&self) -> Option<Code> {
        self.status().map(tonic::Status::code)
    }
}
