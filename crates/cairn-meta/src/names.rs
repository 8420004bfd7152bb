//! The documented name set for catalogs, schemas, tables, columns and clusters.
//!
//! Names are embedded in store keys (`/cairn/<cluster>/table_name/<catalog>/<schema>/<name>`), so
//! they must never contain '/'; a small, predictable set also keeps them safe to print in logs,
//! URLs and shells.

use crate::error::MetaError;

/// Longest name, in characters (`name_len_max`).
pub const NAME_LEN_MAX: usize = 128;

/// The catalog a table or database is in when the request leaves it empty.
pub const DEFAULT_CATALOG: &str = "default";

const ALLOWED: &str =
    "allowed are ASCII letters, digits, '_' and '-', starting with a letter or '_'";

/// Checks `name` against the name set: 1..=[`NAME_LEN_MAX`] characters, ASCII letters, digits,
/// '_' and '-', the first a letter or '_'. `field` is the request path reported on failure.
pub fn validate_name(field: &str, name: &str) -> Result<(), MetaError> {
    if name.is_empty() {
        return Err(MetaError::invalid(field, "must not be empty"));
    }
    let len = name.chars().count();
    if len > NAME_LEN_MAX {
        return Err(MetaError::invalid(
            field,
            format!("is {len} characters, the limit (name_len_max) is {NAME_LEN_MAX}"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(MetaError::invalid(
            field,
            format!("contains {bad:?}, {ALLOWED}"),
        ));
    }
    let first = name.chars().next().unwrap_or('_');
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(MetaError::invalid(
            field,
            format!("starts with {first:?}, {ALLOWED}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(field: &str, name: &str) -> String {
        validate_name(field, name).unwrap_err().to_string()
    }

    #[test]
    fn accepts_the_documented_set() {
        for ok in ["a", "_x", "Cpu_Usage-2", "_", &"a".repeat(NAME_LEN_MAX)] {
            validate_name("name.name", ok).unwrap();
        }
    }

    #[test]
    fn empty_is_refused() {
        assert_eq!(reason("name.schema", ""), "name.schema: must not be empty");
    }

    #[test]
    fn too_long_names_the_limit() {
        assert_eq!(
            reason("name.schema", &"a".repeat(130)),
            "name.schema: is 130 characters, the limit (name_len_max) is 128"
        );
    }

    #[test]
    fn bad_characters_are_named() {
        assert_eq!(
            reason("name.schema", "a/b"),
            "name.schema: contains '/', allowed are ASCII letters, digits, '_' and '-', \
             starting with a letter or '_'"
        );
        assert!(reason("columns[0].name", "a b").contains("contains ' '"));
        assert!(reason("columns[0].name", "é").contains("contains 'é'"));
        assert!(reason("columns[0].name", "a\nb").contains("contains '\\n'"));
    }

    #[test]
    fn first_character_must_be_letter_or_underscore() {
        assert!(reason("name.name", "1abc").starts_with("name.name: starts with '1'"));
        assert!(reason("name.name", "-abc").starts_with("name.name: starts with '-'"));
    }
}
