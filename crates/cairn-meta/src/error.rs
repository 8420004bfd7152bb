//! The one error type of the metadata model. Each variant is a failure a caller treats
//! differently (the server maps each to its own gRPC code), so callers never parse messages.

/// Why a metadata operation was refused or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The request is malformed; `field` is the path of the offending field in the request
    /// (e.g. `columns[3].data_type`) so a user can find it without guessing.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The thing to create exists already.
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// The thing to read or change does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    /// The request was written against an older version; nothing was changed.
    #[error("{what}: version {expected} is stale, the current version is {current}")]
    VersionConflict {
        what: String,
        expected: u64,
        current: u64,
    },
    /// A stored record does not decode; names the key so an operator can inspect it.
    #[error("corrupt metadata at {key}: {reason}")]
    Corrupt { key: String, reason: String },
}

impl MetaError {
    /// Shorthand for [`MetaError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        MetaError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The field path of an [`MetaError::Invalid`], for tests and for error details.
    pub fn field(&self) -> Option<&str> {
        match self {
            MetaError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_sentences() {
        assert_eq!(
            MetaError::invalid("columns[3].name", "must not be empty").to_string(),
            "columns[3].name: must not be empty"
        );
        assert_eq!(
            MetaError::VersionConflict {
                what: "table default.public.cpu".into(),
                expected: 3,
                current: 5
            }
            .to_string(),
            "table default.public.cpu: version 3 is stale, the current version is 5"
        );
        assert_eq!(
            MetaError::Corrupt {
                key: "/cairn/default/table/1".into(),
                reason: "eof".into()
            }
            .to_string(),
            "corrupt metadata at /cairn/default/table/1: eof"
        );
        assert_eq!(
            MetaError::NotFound {
                what: "table a.b.c".into()
            }
            .to_string(),
            "table a.b.c not found"
        );
        assert_eq!(
            MetaError::AlreadyExists {
                what: "database a.b".into()
            }
            .to_string(),
            "database a.b already exists"
        );
    }
}
