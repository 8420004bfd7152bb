//! Cluster metadata on the server: the `cairn.v1.Meta` service, reads of databases, tables,
//! routes and procedures, the metadata watch, id sequences, placement, and the region
//! instructions DDL sends to datanodes. The records themselves and their rules are the pure
//! `cairn-meta` crate; the procedures that change them are [`crate::procedure`].

pub mod convert;
pub mod ids;
pub mod placement;
pub mod read;
pub mod reconcile;
pub mod regions;
pub mod service;
pub mod store;
pub mod watch;
