//! Metadata records in the replicated store, as every node reads them (from its applied state)
//! and as the leader writes them (fenced with its term), and the edge between the `cairn.v1` wire
//! types and the `cairn-meta` model.

pub mod convert;
pub mod store;
