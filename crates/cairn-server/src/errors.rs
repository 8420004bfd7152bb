//! etcd's gRPC errors, with etcd's codes and messages, so etcd clients recognise them.
//!
//! One table maps every failure a handler can see to a `tonic::Status`; handlers never build
//! statuses by hand for these cases.

use cairn_store::command::RejectReason;
use tonic::{Code, Status};

/// etcd: "etcdserver: no leader".
pub fn no_leader() -> Status {
    Status::new(Code::Unavailable, "etcdserver: no leader")
}

/// etcd: "etcdserver: leader changed".
pub fn leader_changed() -> Status {
    Status::new(Code::Unavailable, "etcdserver: leader changed")
}

/// This node led but has not heard from a quorum for a leader lease: another leader may have been
/// elected. Unavailable, as etcd's "no leader", so clients try another endpoint; not retried by
/// the node itself, so the client learns it at once.
pub fn leadership_unconfirmed() -> Status {
    Status::new(
        Code::Unavailable,
        "etcdserver: no leader (this node lost contact with a quorum)",
    )
}

/// etcd: "etcdserver: request timed out".
pub fn timeout() -> Status {
    Status::new(Code::Unavailable, "etcdserver: request timed out")
}

/// etcd: "etcdserver: request is too large", naming our limit.
pub fn request_too_large(size: usize, max: usize) -> Status {
    Status::new(
        Code::InvalidArgument,
        format!("etcdserver: request is too large ({size} bytes > request_bytes_max {max})"),
    )
}

/// etcd: "etcdserver: requested lease not found".
pub fn lease_not_found() -> Status {
    Status::new(Code::NotFound, "etcdserver: requested lease not found")
}

/// etcd: "etcdserver: too many requests" (a bounded queue is full).
pub fn too_many_requests(what: &str) -> Status {
    Status::new(
        Code::ResourceExhausted,
        format!("etcdserver: too many requests ({what})"),
    )
}

/// etcd: "etcdserver: member not found".
pub fn member_not_found() -> Status {
    Status::new(Code::NotFound, "etcdserver: member not found")
}

/// An internal failure, with the cause for the operator.
pub fn internal(what: impl std::fmt::Display) -> Status {
    Status::new(Code::Internal, format!("cairn: {what}"))
}

/// Maps a state-machine refusal to the etcd error it carries.
pub fn rejected(reason: RejectReason) -> Status {
    reason.to_status()
}
