//! ALTER TABLE: each kind of change, the checks specific to it, and the new table version.
//!
//! A change is computed on a copy and the result must pass the same checks as a newly created
//! table, so no sequence of alters can reach a table that create would refuse.

use std::collections::{BTreeMap, HashMap};

use crate::error::MetaError;
use crate::names::validate_name;
use crate::table::{
    validate_column, validate_extra, ColumnDef, SemanticType, TableInfo, COLUMNS_PER_TABLE_MAX,
    OPTIONS_EXTRA_MAX,
};

/// One change to a table; field paths in errors follow meta.proto's `AlterTableRequest`.
#[derive(Debug, Clone, PartialEq)]
pub enum AlterKind {
    /// Appends columns. Tag columns are appended to the primary key too, since every tag is
    /// part of the key.
    AddColumns(Vec<ColumnDef>),
    DropColumns(Vec<String>),
    /// Renames a column, following it in the primary key, time index and partition rule.
    RenameColumn {
        from: String,
        to: String,
    },
    SetOptions {
        /// `None`: unchanged; `Some(None)`: cleared (keep rows forever); `Some(Some(s))`: set.
        ttl_seconds: Option<Option<u64>>,
        set_extra: BTreeMap<String, String>,
        /// Keys to remove; a key that is not set is ignored, so a retried request succeeds.
        unset_extra: Vec<String>,
    },
    /// A new table name in the same database; the server checks that the name is free.
    RenameTable {
        to: String,
    },
}

impl AlterKind {
    /// The kind's name as in meta.proto, for logs and procedure records.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlterKind::AddColumns(_) => "add_columns",
            AlterKind::DropColumns(_) => "drop_columns",
            AlterKind::RenameColumn { .. } => "rename_column",
            AlterKind::SetOptions { .. } => "set_options",
            AlterKind::RenameTable { .. } => "rename_table",
        }
    }
}

impl TableInfo {
    /// The table after `kind`: version + 1, `updated_ms = now_ms`. Nothing changes on error.
    pub fn altered(&self, kind: &AlterKind, now_ms: u64) -> Result<TableInfo, MetaError> {
        let mut t = self.clone();
        match kind {
            AlterKind::AddColumns(columns) => add_columns(&mut t, columns)?,
            AlterKind::DropColumns(names) => drop_columns(&mut t, names)?,
            AlterKind::RenameColumn { from, to } => rename_column(&mut t, from, to)?,
            AlterKind::SetOptions {
                ttl_seconds,
                set_extra,
                unset_extra,
            } => set_options(&mut t, *ttl_seconds, set_extra, unset_extra)?,
            AlterKind::RenameTable { to } => rename_table(&mut t, to)?,
        }
        t.version += 1;
        t.updated_ms = now_ms;
        t.validate()?;
        Ok(t)
    }
}

fn add_columns(t: &mut TableInfo, columns: &[ColumnDef]) -> Result<(), MetaError> {
    const F: &str = "add_columns.columns";
    if columns.is_empty() {
        return Err(MetaError::invalid(F, "names no column to add"));
    }
    let total = t.columns.len() + columns.len();
    if total > COLUMNS_PER_TABLE_MAX {
        return Err(MetaError::invalid(
            F,
            format!("would give the table {total} columns, the limit (columns_per_table_max) is {COLUMNS_PER_TABLE_MAX}"),
        ));
    }
    let mut added: HashMap<&str, usize> = HashMap::new();
    for (i, c) in columns.iter().enumerate() {
        let path = format!("{F}[{i}]");
        validate_column(&path, c)?;
        if t.column(&c.name).is_some() {
            return Err(MetaError::invalid(
                format!("{path}.name"),
                format!("the table already has a column named {:?}", c.name),
            ));
        }
        if let Some(first) = added.insert(&c.name, i) {
            return Err(MetaError::invalid(
                format!("{path}.name"),
                format!("{:?} is already the name of {F}[{first}]", c.name),
            ));
        }
        if c.semantic_type == SemanticType::Timestamp {
            return Err(MetaError::invalid(
                format!("{path}.semantic_type"),
                format!(
                    "a table has one timestamp column, its time index {:?}",
                    t.time_index
                ),
            ));
        }
        // Existing rows get the default or null; a column with neither has no value for them.
        if !c.nullable && c.default_value.is_none() {
            return Err(MetaError::invalid(
                format!("{path}.nullable"),
                format!("column {:?} is not nullable and has no default_value, so existing rows would have no value", c.name),
            ));
        }
    }
    for c in columns {
        if c.semantic_type == SemanticType::Tag {
            t.primary_key.push(c.name.clone());
        }
        t.columns.push(c.clone());
    }
    Ok(())
}

fn drop_columns(t: &mut TableInfo, names: &[String]) -> Result<(), MetaError> {
    const F: &str = "drop_columns.names";
    if names.is_empty() {
        return Err(MetaError::invalid(F, "names no column to drop"));
    }
    let partition_columns = t.partition.columns();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        let path = format!("{F}[{i}]");
        let refuse = |why: String| Err(MetaError::invalid(path.clone(), why));
        if t.column(name).is_none() {
            return refuse(format!("no column named {name:?}"));
        }
        if let Some(first) = seen.insert(name, i) {
            return refuse(format!("{name:?} is already {F}[{first}]"));
        }
        if *name == t.time_index {
            return refuse(format!(
                "{name:?} is the time index, which cannot be dropped"
            ));
        }
        if t.primary_key.contains(name) {
            return refuse(format!(
                "{name:?} is in the primary key, which cannot change"
            ));
        }
        if partition_columns.contains(&name.as_str()) {
            return refuse(format!(
                "{name:?} is a partition column; rows are placed by it"
            ));
        }
    }
    t.columns.retain(|c| !seen.contains_key(c.name.as_str()));
    if t.columns.iter().all(|c| c.name == t.time_index) {
        return Err(MetaError::invalid(
            F,
            "would leave only the time index; a table keeps at least one other column",
        ));
    }
    Ok(())
}

fn rename_column(t: &mut TableInfo, from: &str, to: &str) -> Result<(), MetaError> {
    let Some(index) = t.columns.iter().position(|c| c.name == from) else {
        return Err(MetaError::invalid(
            "rename_column.from",
            format!("no column named {from:?}"),
        ));
    };
    validate_name("rename_column.to", to)?;
    if to == from {
        return Err(MetaError::invalid(
            "rename_column.to",
            format!("{to:?} is the column's current name"),
        ));
    }
    if t.column(to).is_some() {
        return Err(MetaError::invalid(
            "rename_column.to",
            format!("the table already has a column named {to:?}"),
        ));
    }
    t.columns[index].name = to.to_string();
    for key in t.primary_key.iter_mut().filter(|k| *k == from) {
        *key = to.to_string();
    }
    if t.time_index == from {
        t.time_index = to.to_string();
    }
    t.partition.rename_column(from, to);
    Ok(())
}

fn set_options(
    t: &mut TableInfo,
    ttl_seconds: Option<Option<u64>>,
    set_extra: &BTreeMap<String, String>,
    unset_extra: &[String],
) -> Result<(), MetaError> {
    if ttl_seconds.is_none() && set_extra.is_empty() && unset_extra.is_empty() {
        return Err(MetaError::invalid(
            "set_options",
            "changes nothing: set a ttl or an option",
        ));
    }
    if ttl_seconds == Some(Some(0)) {
        return Err(MetaError::invalid(
            "set_options.ttl_seconds",
            "must be at least 1; clear the ttl to keep rows forever",
        ));
    }
    validate_extra("set_options.set_extra", set_extra)?;
    for (i, key) in unset_extra.iter().enumerate() {
        if set_extra.contains_key(key) {
            return Err(MetaError::invalid(
                format!("set_options.unset_extra[{i}]"),
                format!("{key:?} is also in set_extra; set it or unset it, not both"),
            ));
        }
    }
    if let Some(ttl) = ttl_seconds {
        t.options.ttl_seconds = ttl;
    }
    for key in unset_extra {
        t.options.extra.remove(key);
    }
    t.options
        .extra
        .extend(set_extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    if t.options.extra.len() > OPTIONS_EXTRA_MAX {
        return Err(MetaError::invalid(
            "set_options.set_extra",
            format!(
                "would give the table {} options, the limit (options_extra_max) is {OPTIONS_EXTRA_MAX}",
                t.options.extra.len()
            ),
        ));
    }
    Ok(())
}

fn rename_table(t: &mut TableInfo, to: &str) -> Result<(), MetaError> {
    validate_name("rename_table.to", to)?;
    if to == t.name.name {
        return Err(MetaError::invalid(
            "rename_table.to",
            format!("the table is already named {to:?}"),
        ));
    }
    t.name.name = to.to_string();
    Ok(())
}

#[cfg(test)]
#[path = "alter_tests.rs"]
mod tests;
