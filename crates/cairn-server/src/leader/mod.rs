//! Leader work: everything that runs only while this node leads, inside one [`LeaderTerm`], and
//! the [`node::Node`] that carries its state (heartbeat hub, procedures) beside the replica.
//!
//! [`lifecycle`] is the one place that starts and stops it: when this node becomes leader of a
//! Raft term and has applied everything committed before it, it starts every leader service with
//! a handle to that term; when the term ends (stepped down, deposed, cut off from a quorum, shut
//! down) it ends them all. Leader services write only through
//! [`crate::replica::node::Replica::propose_in_term`]: proposed here, never forwarded, and refused by the
//! state machine once another leader appended it.

pub mod ddl;
pub mod events;
pub mod failover;
pub mod heartbeat;
pub mod lease_expiry;
pub mod lifecycle;
pub mod meta;
pub mod node;
pub mod node_registry;
pub mod procedure;
pub mod scheduling;
pub mod sorted;

pub use crate::replica::term::LeaderTerm;
