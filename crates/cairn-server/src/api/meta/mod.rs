//! `cairn.v1.Meta` on the client port: DDL goes to the leader (where it runs as a procedure);
//! reads of databases, tables, routes and procedures, and the metadata watch, are served by the
//! node asked.

pub mod read;
pub mod scheduling;
pub mod service;
pub mod watch;
