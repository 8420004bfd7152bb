//! The API layer: gRPC services on the client port ([`services`], [`meta`]), etcd's JSON
//! gateway beside them ([`gateway`]) and the HTTP admin
//! endpoints ([`http`], [`http_meta`]). Thin: validate, call the replica or leader layer, map
//! the error.

pub mod auth;
pub mod gateway;
pub mod http;
pub mod http_meta;
pub mod http_ops;
pub mod http_scheduling;
pub mod http_stats;
pub mod meta;
pub mod services;
