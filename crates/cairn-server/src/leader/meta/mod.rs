//! Metadata work only the leader does: id sequences, placement of new regions, the region
//! instructions DDL sends to datanodes, and the reconciler of orphaned regions. The records and
//! their rules are the pure `cairn-meta` crate; reading and writing them in the replicated store
//! is [`crate::replica::meta`]; the procedures that change them are [`crate::leader::procedure`];
//! the `cairn.v1.Meta` service and reads are in `api::meta`.

pub mod ids;
pub mod placement;
pub mod reconcile;
pub mod region_view;
pub mod regions;
