//! Tables: their names, columns and options, the create request, and the rules a table must
//! satisfy whether it is being created or altered.
//!
//! Validation reports the path of the offending field in the request (`columns[3].name`), so a
//! user with a 200-column request can find the mistake.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::MetaError;
use crate::names::{validate_name, DEFAULT_CATALOG};
use crate::partition::PartitionRule;
use crate::route::region_id;
use crate::types::DataType;

pub use crate::column::{ColumnDef, SemanticType};
pub use crate::limits::*;

/// A table's full name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TableName {
    pub catalog: String,
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(
        catalog: impl Into<String>,
        schema: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        TableName {
            catalog: catalog.into(),
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// The same name with an empty catalog replaced by [`DEFAULT_CATALOG`], so one table has
    /// one key whatever the client sent.
    pub fn normalized(&self) -> TableName {
        let mut n = self.clone();
        if n.catalog.is_empty() {
            n.catalog = DEFAULT_CATALOG.to_string();
        }
        n
    }

    /// Checks every part against the name set, reporting `<prefix>.catalog` and so on.
    pub fn validate(&self, prefix: &str) -> Result<(), MetaError> {
        let n = self.normalized();
        validate_name(&format!("{prefix}.catalog"), &n.catalog)?;
        validate_name(&format!("{prefix}.schema"), &n.schema)?;
        validate_name(&format!("{prefix}.name"), &n.name)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let catalog = if self.catalog.is_empty() {
            DEFAULT_CATALOG
        } else {
            &self.catalog
        };
        write!(f, "{catalog}.{}.{}", self.schema, self.name)
    }
}

/// Table options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableOptions {
    /// Rows older than this are expired by the database; `None` keeps them forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Free-form options the database interprets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// A table as stored under its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableInfo {
    pub id: u64,
    pub name: TableName,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
    pub time_index: String,
    #[serde(default)]
    pub options: TableOptions,
    #[serde(default)]
    pub partition: PartitionRule,
    /// 1 when created; +1 on every alter or truncate.
    pub version: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub region_numbers: Vec<u32>,
}

impl TableInfo {
    /// Region ids, in region-number order.
    pub fn region_ids(&self) -> Vec<u64> {
        self.region_numbers
            .iter()
            .map(|n| region_id(self.id, *n))
            .collect()
    }

    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The rules of [`CreateTable::validate`], for a stored or altered table.
    pub fn validate(&self) -> Result<(), MetaError> {
        validate_table(
            &self.name,
            &self.columns,
            &self.primary_key,
            &self.time_index,
            &self.options,
            &self.partition,
        )
    }
}

/// A request to create a table, already converted from the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateTable {
    pub name: TableName,
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
    pub time_index: String,
    pub options: TableOptions,
    pub partition: PartitionRule,
}

impl CreateTable {
    /// Checks every rule a table must satisfy; the error names the offending field.
    pub fn validate(&self) -> Result<(), MetaError> {
        validate_table(
            &self.name,
            &self.columns,
            &self.primary_key,
            &self.time_index,
            &self.options,
            &self.partition,
        )
    }

    /// Regions the table will have.
    pub fn region_count(&self) -> u32 {
        self.partition.region_count()
    }

    /// The table as first stored: version 1, regions numbered from 0. Call after `validate`.
    pub fn into_table_info(self, id: u64, now_ms: u64) -> TableInfo {
        let regions = self.region_count();
        TableInfo {
            id,
            name: self.name.normalized(),
            columns: self.columns,
            primary_key: self.primary_key,
            time_index: self.time_index,
            options: self.options,
            partition: self.partition,
            version: 1,
            created_ms: now_ms,
            updated_ms: now_ms,
            region_numbers: (0..regions).collect(),
        }
    }
}

/// "is 2000 bytes, the limit (comment_len_max) is 1024", or nothing when within the limit.
pub(crate) fn check_len(
    field: &str,
    text: &str,
    limit: usize,
    name: &str,
) -> Result<(), MetaError> {
    if text.len() > limit {
        return Err(MetaError::invalid(
            field,
            format!("is {} bytes, the limit ({name}) is {limit}", text.len()),
        ));
    }
    Ok(())
}

/// Rules for one column on its own; `path` is e.g. `columns[3]`.
pub(crate) fn validate_column(path: &str, c: &ColumnDef) -> Result<(), MetaError> {
    validate_name(&format!("{path}.name"), &c.name)?;
    if c.semantic_type == SemanticType::Tag
        && matches!(c.data_type, DataType::Json | DataType::Vector { .. })
    {
        return Err(MetaError::invalid(
            format!("{path}.semantic_type"),
            format!("{} column {:?} cannot be a tag", c.data_type, c.name),
        ));
    }
    if let Some(default) = &c.default_value {
        check_len(
            &format!("{path}.default_value"),
            default,
            DEFAULT_VALUE_LEN_MAX,
            "default_value_len_max",
        )?;
    }
    check_len(
        &format!("{path}.comment"),
        &c.comment,
        COMMENT_LEN_MAX,
        "comment_len_max",
    )
}

/// Limits on free-form options; `field` is e.g. `options.extra`.
pub(crate) fn validate_extra(
    field: &str,
    extra: &BTreeMap<String, String>,
) -> Result<(), MetaError> {
    if extra.len() > OPTIONS_EXTRA_MAX {
        return Err(MetaError::invalid(
            field,
            format!(
                "has {} options, the limit (options_extra_max) is {OPTIONS_EXTRA_MAX}",
                extra.len()
            ),
        ));
    }
    for (key, value) in extra {
        if key.is_empty() {
            return Err(MetaError::invalid(field, "an option key is empty"));
        }
        if key.len() > OPTION_KEY_LEN_MAX {
            return Err(MetaError::invalid(
                field,
                format!(
                    "key {:?}... is {} bytes, the limit (option_key_len_max) is {OPTION_KEY_LEN_MAX}",
                    key.chars().take(16).collect::<String>(),
                    key.len()
                ),
            ));
        }
        if value.len() > OPTION_VALUE_LEN_MAX {
            return Err(MetaError::invalid(
                field,
                format!(
                    "the value of {key:?} is {} bytes, the limit (option_value_len_max) is {OPTION_VALUE_LEN_MAX}",
                    value.len()
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate_options(options: &TableOptions) -> Result<(), MetaError> {
    if options.ttl_seconds == Some(0) {
        return Err(MetaError::invalid(
            "options.ttl_seconds",
            "must be at least 1; leave it unset to keep rows forever",
        ));
    }
    validate_extra("options.extra", &options.extra)
}

fn validate_table(
    name: &TableName,
    columns: &[ColumnDef],
    primary_key: &[String],
    time_index: &str,
    options: &TableOptions,
    partition: &PartitionRule,
) -> Result<(), MetaError> {
    name.validate("name")?;
    if columns.is_empty() {
        return Err(MetaError::invalid(
            "columns",
            "a table needs at least one column",
        ));
    }
    if columns.len() > COLUMNS_PER_TABLE_MAX {
        return Err(MetaError::invalid(
            "columns",
            format!(
                "has {} columns, the limit (columns_per_table_max) is {COLUMNS_PER_TABLE_MAX}",
                columns.len()
            ),
        ));
    }
    let mut by_name: HashMap<&str, usize> = HashMap::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        validate_column(&format!("columns[{i}]"), c)?;
        if let Some(first) = by_name.insert(&c.name, i) {
            return Err(MetaError::invalid(
                format!("columns[{i}].name"),
                format!("{:?} is already the name of columns[{first}]", c.name),
            ));
        }
    }
    validate_time_index(columns, &by_name, time_index)?;
    for (i, c) in columns.iter().enumerate() {
        if c.semantic_type == SemanticType::Timestamp && c.name != time_index {
            return Err(MetaError::invalid(
                format!("columns[{i}].semantic_type"),
                format!(
                    "only the time index ({time_index:?}) has semantic type timestamp, not {:?}",
                    c.name
                ),
            ));
        }
    }
    validate_primary_key(columns, &by_name, primary_key, time_index)?;
    validate_options(options)?;
    partition.validate(columns)
}

fn validate_time_index(
    columns: &[ColumnDef],
    by_name: &HashMap<&str, usize>,
    time_index: &str,
) -> Result<(), MetaError> {
    let field = "time_index";
    if time_index.is_empty() {
        return Err(MetaError::invalid(
            field,
            "must name the table's timestamp column",
        ));
    }
    let Some(&i) = by_name.get(time_index) else {
        return Err(MetaError::invalid(
            field,
            format!("no column named {time_index:?}"),
        ));
    };
    let c = &columns[i];
    if !matches!(c.data_type, DataType::Timestamp { .. }) {
        return Err(MetaError::invalid(
            field,
            format!(
                "column {time_index:?} is {}, the time index must be timestamp(P)",
                c.data_type
            ),
        ));
    }
    if c.nullable {
        return Err(MetaError::invalid(
            field,
            format!("column {time_index:?} is nullable, the time index must not be"),
        ));
    }
    if c.semantic_type != SemanticType::Timestamp {
        return Err(MetaError::invalid(
            field,
            format!(
                "column {time_index:?} has semantic type {}, the time index must have semantic type timestamp",
                c.semantic_type
            ),
        ));
    }
    Ok(())
}

fn validate_primary_key(
    columns: &[ColumnDef],
    by_name: &HashMap<&str, usize>,
    primary_key: &[String],
    time_index: &str,
) -> Result<(), MetaError> {
    if primary_key.len() > PRIMARY_KEY_COLUMNS_MAX {
        return Err(MetaError::invalid(
            "primary_key",
            format!(
                "has {} columns, the limit (primary_key_columns_max) is {PRIMARY_KEY_COLUMNS_MAX}",
                primary_key.len()
            ),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(primary_key.len());
    for (i, key) in primary_key.iter().enumerate() {
        let field = format!("primary_key[{i}]");
        let Some(&c) = by_name.get(key.as_str()) else {
            return Err(MetaError::invalid(
                field,
                format!("no column named {key:?}"),
            ));
        };
        if let Some(first) = seen.insert(key, i) {
            return Err(MetaError::invalid(
                field,
                format!("{key:?} is already primary_key[{first}]"),
            ));
        }
        if key == time_index {
            return Err(MetaError::invalid(
                field,
                format!("{key:?} is the time index, which is always part of the key and cannot be listed"),
            ));
        }
        if columns[c].semantic_type != SemanticType::Tag {
            return Err(MetaError::invalid(
                field,
                format!(
                    "column {key:?} has semantic type {}, primary key columns must be tags",
                    columns[c].semantic_type
                ),
            ));
        }
    }
    for (i, c) in columns.iter().enumerate() {
        if c.semantic_type == SemanticType::Tag && !seen.contains_key(c.name.as_str()) {
            return Err(MetaError::invalid(
                format!("columns[{i}].semantic_type"),
                format!(
                    "tag column {:?} is not in primary_key; the tags make up the primary key",
                    c.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
