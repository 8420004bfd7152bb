//! Databases (schemas within a catalog): the stored record and the checks on a create request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::names::{validate_name, DEFAULT_CATALOG};
use crate::table::validate_extra;

/// A database as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    pub catalog: String,
    pub name: String,
    /// Free-form options the database interprets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    pub created_ms: u64,
}

/// Checks a create-database request. An empty catalog means [`DEFAULT_CATALOG`]. Options have
/// the same limits as table options.
pub fn validate_database(
    catalog: &str,
    name: &str,
    options: &BTreeMap<String, String>,
) -> Result<(), MetaError> {
    let catalog = if catalog.is_empty() {
        DEFAULT_CATALOG
    } else {
        catalog
    };
    validate_name("catalog", catalog)?;
    validate_name("name", name)?;
    validate_extra("options", options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{OPTIONS_EXTRA_MAX, OPTION_VALUE_LEN_MAX};

    fn field_of(r: Result<(), MetaError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_plain_database() {
        validate_database("", "public", &BTreeMap::new()).unwrap();
        validate_database(
            "default",
            "metrics_2024",
            &BTreeMap::from([("k".into(), "v".into())]),
        )
        .unwrap();
    }

    #[test]
    fn refusals_name_the_field() {
        let none = BTreeMap::new();
        assert!(field_of(validate_database("a/b", "x", &none)).starts_with("catalog: contains '/'"));
        assert_eq!(
            field_of(validate_database("", "", &none)),
            "name: must not be empty"
        );
        let many: BTreeMap<String, String> = (0..=OPTIONS_EXTRA_MAX)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(
            field_of(validate_database("", "x", &many)),
            "options: has 65 options, the limit (options_extra_max) is 64"
        );
        let big = BTreeMap::from([("k".to_string(), "v".repeat(OPTION_VALUE_LEN_MAX + 1))]);
        assert!(field_of(validate_database("", "x", &big)).starts_with(
            "options: the value of \"k\" is 4097 bytes, the limit (option_value_len_max)"
        ));
        let empty_key = BTreeMap::from([(String::new(), "v".to_string())]);
        assert_eq!(
            field_of(validate_database("", "x", &empty_key)),
            "options: an option key is empty"
        );
    }

    #[test]
    fn stored_form_round_trips() {
        let db = DatabaseInfo {
            catalog: "default".into(),
            name: "public".into(),
            options: BTreeMap::new(),
            created_ms: 5,
        };
        let json = serde_json::to_string(&db).unwrap();
        assert_eq!(
            json,
            r#"{"catalog":"default","name":"public","created_ms":5}"#
        );
        assert_eq!(serde_json::from_str::<DatabaseInfo>(&json).unwrap(), db);
    }
}
