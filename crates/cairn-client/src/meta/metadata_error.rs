//! [`MetadataError`]: why a metadata lookup (a listing, a route or a table name) failed, when
//! the answer can be something other than a gRPC error.

use cairn_proto::cairnpb::TableName;

use super::ddl::display_table_name;
use crate::ClientError;

/// Why a metadata lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The call failed (transport, server error, retries exhausted).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// No table has this id (dropped, or never created).
    #[error("table {table_id} does not exist")]
    TableNotFound {
        /// The id asked for.
        table_id: u64,
    },
    /// No table has this name (or its database does not exist).
    #[error("table {} does not exist", display_table_name(name))]
    TableNameNotFound {
        /// The name asked for.
        name: TableName,
    },
    /// A listing still had more pages after the most the client follows.
    #[error("listing stopped after {pages_max} pages")]
    PagesExceeded {
        /// The limit reached.
        pages_max: u32,
    },
}

impl Clone for MetadataError {
    /// Every caller waiting on one shared lookup gets its own copy of the outcome.
    fn clone(&self) -> Self {
        match self {
            MetadataError::Client(e) => MetadataError::Client(clone_client_error(e)),
            MetadataError::TableNotFound { table_id } => MetadataError::TableNotFound {
                table_id: *table_id,
            },
            MetadataError::TableNameNotFound { name } => {
                MetadataError::TableNameNotFound { name: name.clone() }
            }
            MetadataError::PagesExceeded { pages_max } => MetadataError::PagesExceeded {
                pages_max: *pages_max,
            },
        }
    }
}

/// A copy of `e` (ClientError itself is not `Clone`; everything in it is).
fn clone_client_error(e: &ClientError) -> ClientError {
    match e {
        ClientError::NoEndpoints => ClientError::NoEndpoints,
        ClientError::TooManyEndpoints { count, max } => ClientError::TooManyEndpoints {
            count: *count,
            max: *max,
        },
        ClientError::InvalidEndpoint { endpoint, reason } => ClientError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason: reason.clone(),
        },
        ClientError::Rpc { endpoint, status } => ClientError::Rpc {
            endpoint: endpoint.clone(),
            status: status.clone(),
        },
        ClientError::Timeout {
            endpoint,
            timeout_ms,
        } => ClientError::Timeout {
            endpoint: endpoint.clone(),
            timeout_ms: *timeout_ms,
        },
        ClientError::Exhausted { attempts, last } => ClientError::Exhausted {
            attempts: *attempts,
            last: Box::new(clone_client_error(last)),
        },
        ClientError::WatchCanceled {
            endpoint,
            reason,
            compact_revision,
        } => ClientError::WatchCanceled {
            endpoint: endpoint.clone(),
            reason: reason.clone(),
            compact_revision: *compact_revision,
        },
        ClientError::WatchEnded { endpoint, reason } => ClientError::WatchEnded {
            endpoint: endpoint.clone(),
            reason: reason.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_keep_the_status_and_the_name() {
        let e = MetadataError::Client(ClientError::Exhausted {
            attempts: 3,
            last: Box::new(ClientError::Rpc {
                endpoint: "http://a:1".into(),
                status: Box::new(tonic::Status::unavailable("no leader")),
            }),
        });
        let copy = e.clone();
        assert_eq!(copy.to_string(), e.to_string());
        match copy {
            MetadataError::Client(c) => assert_eq!(c.code(), Some(tonic::Code::Unavailable)),
            other => panic!("{other:?}"),
        }
        let missing = MetadataError::TableNameNotFound {
            name: super::super::ddl::table_name("", "public", "cpu"),
        };
        assert_eq!(
            missing.to_string(),
            "table default.public.cpu does not exist"
        );
    }
}
