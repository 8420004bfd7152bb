//! What goes through the Raft log ([`Command`]) and what applying it returns ([`CommandResult`]).
//!
//! KV writes travel as a prost-encoded etcd `TxnRequest`: a Put or a DeleteRange is a one-op
//! transaction, so the state machine has one write path and every write is atomic.

use bytes::Bytes;
use cairn_proto::etcdserverpb::{TxnRequest, TxnResponse};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One replicated state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// An etcd transaction (also Put and DeleteRange), prost-encoded `TxnRequest`. Shared, not
    /// copied, when the entry is cloned: the log cache hands entries to apply and to every
    /// follower's replication.
    Txn(#[serde(with = "crate::serde_bytes")] Bytes),
    /// Discard history at or below `revision`.
    Compact { revision: i64 },
    /// Create lease `id` (chosen by the leader, never 0) with `ttl_secs`.
    LeaseGrant { id: i64, ttl_secs: i64 },
    /// Delete lease `id` and every key attached to it.
    LeaseRevoke { id: i64 },
    /// A node announces where clients and operators reach it.
    SetNodeAddrs {
        node_id: u64,
        client: String,
        http: String,
    },
    /// The cluster's id: set by the first leader (random, never 0); once set, later ones are
    /// no-ops, so every member reports the same id for the cluster's life.
    SetClusterId { id: u64 },
    /// Raise (`activate`) or disarm alarm `alarm` (etcd's `AlarmType` number) of `member_id`.
    Alarm {
        activate: bool,
        member_id: u64,
        alarm: i32,
    },
    /// A change to users, roles or permissions (etcd's Auth).
    Auth(crate::auth::AuthOp),
    /// `cmd`, decided by the leader of Raft term `term`: applied only if the entry was appended
    /// by the leader of that same term, rejected otherwise. Leader services wrap every write in
    /// this, so a decision taken while leading term T is never carried out by a later leader
    /// (a deposed leader's queued lease revocation, say). Never nested.
    Fenced { term: u64, cmd: Box<Command> },
}

impl Command {
    /// Wraps an etcd transaction.
    pub fn txn(req: &TxnRequest) -> Self {
        Command::Txn(req.encode_to_vec().into())
    }

    /// Name used in metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Txn(_) => "txn",
            Command::Compact { .. } => "compact",
            Command::LeaseGrant { .. } => "lease_grant",
            Command::LeaseRevoke { .. } => "lease_revoke",
            Command::SetNodeAddrs { .. } => "set_node_addrs",
            Command::SetClusterId { .. } => "set_cluster_id",
            Command::Alarm { .. } => "alarm",
            Command::Auth(op) => op.name(),
            Command::Fenced { cmd, .. } => cmd.kind(),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Txn(b) => write!(f, "txn({} bytes)", b.len()),
            Command::Compact { revision } => write!(f, "compact({revision})"),
            Command::LeaseGrant { id, ttl_secs } => write!(f, "lease_grant({id}, {ttl_secs}s)"),
            Command::LeaseRevoke { id } => write!(f, "lease_revoke({id})"),
            Command::SetNodeAddrs { node_id, .. } => write!(f, "set_node_addrs({node_id})"),
            Command::SetClusterId { id } => write!(f, "set_cluster_id({id:x})"),
            Command::Alarm {
                activate,
                member_id,
                alarm,
            } => write!(
                f,
                "alarm(activate={activate}, member={member_id}, type={alarm})"
            ),
            Command::Auth(op) => write!(f, "{}", op.name()),
            Command::Fenced { term, cmd } => write!(f, "{cmd} in term {term}"),
        }
    }
}

/// The outcome of applying one [`Command`]; `revision` is the store's revision after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub revision: i64,
    pub outcome: Outcome,
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// A transaction ran; prost-encoded `TxnResponse`.
    Txn(#[serde(with = "crate::serde_bytes")] Vec<u8>),
    /// The command succeeded and returns nothing more.
    Done,
    /// A lease was granted with this id.
    LeaseGranted { id: i64 },
    /// The command was refused by the state machine; nothing changed.
    Rejected(RejectReason),
}

/// Why the state machine refused a command: the gRPC code and etcd's message for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectReason {
    pub code: i32,
    pub message: String,
}

impl RejectReason {
    /// The status a client sees.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(tonic::Code::from(self.code), self.message.clone())
    }
}

impl CommandResult {
    /// The id of the lease a `LeaseGrant` created.
    pub fn granted_lease(&self) -> Option<i64> {
        match self.outcome {
            Outcome::LeaseGranted { id } => Some(id),
            _ => None,
        }
    }

    /// Decodes the transaction response of a `Txn` outcome.
    pub fn txn_response(&self) -> Option<TxnResponse> {
        match &self.outcome {
            Outcome::Txn(b) => TxnResponse::decode(b.as_slice()).ok(),
            _ => None,
        }
    }
}
