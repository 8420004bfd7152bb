//! The ways a KV request can fail, and the gRPC status etcd answers for each.
//!
//! One variant per failure a caller treats differently; the messages and codes are etcd's own
//! (`api/v3rpc/rpctypes/error.go`) so stock etcd clients recognise them.

use tonic::{Code, Status};

/// A KV request the state machine refused. Refusals never change the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The requested revision is older than the compaction point.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision has not been written yet.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put names a lease that does not exist (or a revoke names an unknown lease).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant reuses the id of a live lease.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A grant asks for a TTL above [`LEASE_TTL_MAX_SECS`](super::LEASE_TTL_MAX_SECS).
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// `ignore_value`/`ignore_lease` on a key that does not exist, or an empty txn op.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A request without a key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// Two writes of one txn branch touch the same key.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A txn branch (or its compare list) is longer than `txn_ops_max`.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A put with `ignore_value` also carries a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// A put with `ignore_lease` also carries a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A range names a sort order or target that does not exist.
    #[error("etcdserver: invalid sort option")]
    InvalidSortOption,
    /// A snapshot could not be decoded or breaks an invariant of the state.
    #[error("mvcc: corrupt snapshot: {reason}")]
    SnapshotCorrupt {
        /// What was wrong, for the operator.
        reason: String,
    },
}

impl KvError {
    /// The gRPC status etcd sends for this error: same code, same message.
    pub fn to_status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }

    /// The gRPC code etcd uses for this error.
    pub fn code(&self) -> Code {
        match self {
            KvError::Compacted | KvError::FutureRevision | KvError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            KvError::LeaseNotFound => Code::NotFound,
            KvError::LeaseExists => Code::FailedPrecondition,
            KvError::KeyNotFound
            | KvError::EmptyKey
            | KvError::DuplicateKey
            | KvError::TooManyOps
            | KvError::ValueProvided
            | KvError::LeaseProvided
            | KvError::InvalidSortOption => Code::InvalidArgument,
            KvError::SnapshotCorrupt { .. } => Code::DataLoss,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_match_etcd_rpctypes() {
        let cases = [
            (
                KvError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                KvError::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                KvError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                KvError::LeaseExists,
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                KvError::LeaseTtlTooLarge,
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                KvError::KeyNotFound,
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                KvError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                KvError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                KvError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                KvError::ValueProvided,
                Code::InvalidArgument,
                "etcdserver: value is provided",
            ),
            (
                KvError::LeaseProvided,
                Code::InvalidArgument,
                "etcdserver: lease is provided",
            ),
        ];
        for (err, code, message) in cases {
            let status = err.to_status();
            assert_eq!(status.code(), code, "{err:?}");
            assert_eq!(status.message(), message, "{err:?}");
        }
    }
}
