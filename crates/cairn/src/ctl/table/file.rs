//! `table create --from-file FILE`: a table definition as JSON, the `CreateTableRequest` of
//! meta.proto with snake_case keys. The `table` object printed by `table describe -o json`
//! is accepted as is (its read-only fields — id, version, times, region numbers — are
//! ignored), so a definition can be copied from one table to another.
//!
//! ```json
//! {
//!   "name": "db.cpu",
//!   "columns": [
//!     {"name": "host", "data_type": "string", "semantic_type": "tag"},
//!     {"name": "ts", "data_type": "timestamp(3)", "semantic_type": "timestamp"},
//!     {"name": "usage", "data_type": "float64", "nullable": true, "default_value": "0"}
//!   ],
//!   "primary_key": ["host"],
//!   "time_index": "ts",
//!   "options": {"ttl_seconds": 604800, "extra": {"compaction": "twcs"}},
//!   "partition": {"hash": {"columns": ["host"], "partitions": 8}},
//!   "if_not_exists": false
//! }
//! ```
//!
//! `name` is `SCHEMA.NAME`, `CATALOG.SCHEMA.NAME` or `{"catalog", "schema", "name"}`; it may be
//! left out when NAME is given on the command line (which wins). Unknown keys are errors, so a
//! typo is not silently ignored.

use cairn_client::proto::cairnpb::CreateTableRequest;
use serde::Deserialize;

use super::json::{ColumnJson, OptionsJson, PartitionJson, TableNameJson};
use super::spec::parse_table_name;

/// Largest definition file read, bytes: far above any real table (4096 columns).
pub const TABLE_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// A name as text or as an object.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NameField {
    Text(String),
    Parts(TableNameJson),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    name: Option<NameField>,
    columns: Vec<ColumnJson>,
    #[serde(default)]
    primary_key: Vec<String>,
    #[serde(default)]
    time_index: String,
    #[serde(default)]
    options: Option<OptionsJson>,
    #[serde(default)]
    partition: Option<PartitionJson>,
    #[serde(default)]
    if_not_exists: bool,
    // Printed by `table describe`; the server decides them, so they are read and dropped.
    #[serde(default, rename = "id")]
    _id: Option<serde_json::Value>,
    #[serde(default, rename = "full_name")]
    _full_name: Option<serde_json::Value>,
    #[serde(default, rename = "version")]
    _version: Option<serde_json::Value>,
    #[serde(default, rename = "created_ms")]
    _created_ms: Option<serde_json::Value>,
    #[serde(default, rename = "updated_ms")]
    _updated_ms: Option<serde_json::Value>,
    #[serde(default, rename = "region_numbers")]
    _region_numbers: Option<serde_json::Value>,
}

/// The request in `text` (the file's content; `path` only names it in messages).
pub fn parse_table_file(path: &str, text: &str) -> Result<CreateTableRequest, String> {
    let file: TableFile = serde_json::from_str(text)
        .map_err(|e| format!("--from-file {path}: not a table definition: {e}"))?;
    let name = match file.name {
        None => None,
        Some(NameField::Text(raw)) => {
            Some(parse_table_name(&raw).map_err(|e| format!("--from-file {path}: name: {e}"))?)
        }
        Some(NameField::Parts(parts)) => Some(parts.to_proto()),
    };
    Ok(CreateTableRequest {
        name,
        columns: file.columns.iter().map(ColumnJson::to_proto).collect(),
        primary_key: file.primary_key,
        time_index: file.time_index,
        options: file.options.as_ref().map(OptionsJson::to_proto),
        partition: file.partition.as_ref().map(PartitionJson::to_proto),
        if_not_exists: file.if_not_exists,
    })
}

/// Reads and parses `path`, refusing files above [`TABLE_FILE_BYTES_MAX`].
pub fn read_table_file(path: &str) -> Result<CreateTableRequest, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("--from-file {path}: {e}"))?
        .len();
    if size > TABLE_FILE_BYTES_MAX {
        return Err(format!(
            "--from-file {path}: {size} bytes, more than the {TABLE_FILE_BYTES_MAX} read"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("--from-file {path}: {e}"))?;
    parse_table_file(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::proto::cairnpb::partition_rule::Rule;
    use cairn_client::proto::cairnpb::SemanticType;

    #[test]
    fn the_documented_example_parses() {
        let text = r#"{
          "name": "db.cpu",
          "columns": [
            {"name": "host", "data_type": "string", "semantic_type": "tag"},
            {"name": "ts", "data_type": "timestamp(3)", "semantic_type": "timestamp"},
            {"name": "usage", "data_type": "float64", "nullable": true, "default_value": "0"}
          ],
          "primary_key": ["host"],
          "time_index": "ts",
          "options": {"ttl_seconds": 604800, "extra": {"compaction": "twcs"}},
          "partition": {"hash": {"columns": ["host"], "partitions": 8}},
          "if_not_exists": false
        }"#;
        let req = parse_table_file("t.json", text).unwrap();
        assert_eq!(req.name.as_ref().unwrap().schema, "db");
        assert_eq!(req.columns.len(), 3);
        assert_eq!(req.columns[0].semantic_type, SemanticType::Tag as i32);
        assert_eq!(req.columns[2].default_value.as_deref(), Some("0"));
        assert_eq!(req.options.as_ref().unwrap().ttl_seconds, Some(604_800));
        assert!(matches!(
            req.partition.and_then(|p| p.rule),
            Some(Rule::Hash(h)) if h.partitions == 8
        ));
    }

    #[test]
    fn describe_output_is_accepted() {
        let text = r#"{"id": 1024, "name": {"catalog": "default", "schema": "db", "name": "cpu"},
          "full_name": "default.db.cpu",
          "columns": [{"name": "ts", "data_type": "timestamp(3)", "semantic_type": "timestamp",
                       "nullable": false, "default_value": null, "comment": ""}],
          "primary_key": [], "time_index": "ts", "options": {"ttl_seconds": null, "extra": {}},
          "partition": null, "version": 3, "created_ms": 1, "updated_ms": 2,
          "region_numbers": [0]}"#;
        let req = parse_table_file("t.json", text).unwrap();
        assert_eq!(req.name.unwrap().catalog, "default");
        assert!(req.partition.is_none());
    }

    #[test]
    fn typos_and_bad_names_are_errors() {
        let e = parse_table_file("t.json", r#"{"columns": [], "time_idx": "ts"}"#).unwrap_err();
        assert!(e.contains("time_idx"), "{e}");
        let e = parse_table_file("t.json", r#"{"name": "cpu", "columns": []}"#).unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e = parse_table_file(
            "t.json",
            r#"{"columns": [{"name": "a", "data_type": "int8", "semantic_type": "key"}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("key"), "{e}");
    }
}
