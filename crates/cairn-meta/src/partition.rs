//! Partition rules: how a table's rows split into regions (one region per hash bucket, range or
//! list), and the checks that make every row belong to exactly one region.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::column::ColumnDef;
use crate::error::MetaError;
use crate::limits::{PARTITION_VALUES_MAX, REGIONS_PER_TABLE_MAX};
use crate::literal::Literal;
use crate::types::DataType;

/// One range partition: rows with `start <= value < end`. `None` is unbounded on that side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeBound {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

impl fmt::Display for RangeBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.start, &self.end) {
            (Some(s), Some(e)) => write!(f, "[{s}, {e})"),
            (Some(s), None) => write!(f, "[{s}, +inf)"),
            (None, Some(e)) => write!(f, "(-inf, {e})"),
            (None, None) => write!(f, "(-inf, +inf)"),
        }
    }
}

/// How a table's rows split into regions; region `i` holds bucket, range or list `i`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionRule {
    /// One region holds every row.
    #[default]
    None,
    /// Rows hashed on `columns` into `partitions` regions.
    Hash {
        columns: Vec<String>,
        partitions: u32,
    },
    /// One region per range of `column`; ranges never overlap.
    Range {
        column: String,
        ranges: Vec<RangeBound>,
    },
    /// One region per list of values of `column`; a value is in one list only.
    List {
        column: String,
        lists: Vec<Vec<String>>,
    },
}

impl PartitionRule {
    /// Regions the rule makes.
    pub fn region_count(&self) -> u32 {
        let n = match self {
            PartitionRule::None => 1,
            PartitionRule::Hash { partitions, .. } => *partitions as usize,
            PartitionRule::Range { ranges, .. } => ranges.len(),
            PartitionRule::List { lists, .. } => lists.len(),
        };
        // Validation bounds this by REGIONS_PER_TABLE_MAX; saturate for unvalidated input.
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Columns the rule reads, which therefore cannot be dropped.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            PartitionRule::None => Vec::new(),
            PartitionRule::Hash { columns, .. } => columns.iter().map(String::as_str).collect(),
            PartitionRule::Range { column, .. } | PartitionRule::List { column, .. } => {
                vec![column.as_str()]
            }
        }
    }

    /// Follows a column rename.
    pub fn rename_column(&mut self, from: &str, to: &str) {
        let rename = |c: &mut String| {
            if c == from {
                *c = to.to_string();
            }
        };
        match self {
            PartitionRule::None => {}
            PartitionRule::Hash { columns, .. } => columns.iter_mut().for_each(rename),
            PartitionRule::Range { column, .. } | PartitionRule::List { column, .. } => {
                rename(column)
            }
        }
    }

    /// Checks the rule against the table's columns; errors name `partition.…` fields.
    pub fn validate(&self, columns: &[ColumnDef]) -> Result<(), MetaError> {
        match self {
            PartitionRule::None => Ok(()),
            PartitionRule::Hash {
                columns: keys,
                partitions,
            } => validate_hash(columns, keys, *partitions),
            PartitionRule::Range { column, ranges } => validate_range(columns, column, ranges),
            PartitionRule::List { column, lists } => validate_list(columns, column, lists),
        }
    }
}

fn too_many_regions(field: &str, what: &str, n: usize) -> MetaError {
    MetaError::invalid(
        field,
        format!("{n} {what}, the limit (regions_per_table_max) is {REGIONS_PER_TABLE_MAX}"),
    )
}

/// The type of the partition column, which must exist.
fn column_type(columns: &[ColumnDef], field: &str, name: &str) -> Result<DataType, MetaError> {
    columns
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.data_type)
        .ok_or_else(|| MetaError::invalid(field, format!("no column named {name:?}")))
}

fn require_hashable(field: &str, name: &str, ty: DataType) -> Result<(), MetaError> {
    if ty.is_hashable() {
        return Ok(());
    }
    Err(MetaError::invalid(
        field,
        format!("column {name:?} is {ty}, which cannot be hashed or listed (floats, json and vectors cannot)"),
    ))
}

fn validate_hash(columns: &[ColumnDef], keys: &[String], partitions: u32) -> Result<(), MetaError> {
    if keys.is_empty() {
        return Err(MetaError::invalid(
            "partition.hash.columns",
            "names no column to hash on",
        ));
    }
    let mut seen = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let field = format!("partition.hash.columns[{i}]");
        let ty = column_type(columns, &field, key)?;
        require_hashable(&field, key, ty)?;
        if let Some(first) = seen.insert(key.as_str(), i) {
            return Err(MetaError::invalid(
                field,
                format!("{key:?} is already partition.hash.columns[{first}]"),
            ));
        }
    }
    if partitions == 0 {
        return Err(MetaError::invalid(
            "partition.hash.partitions",
            "must be at least 1",
        ));
    }
    if partitions as usize > REGIONS_PER_TABLE_MAX {
        return Err(too_many_regions(
            "partition.hash.partitions",
            "partitions",
            partitions as usize,
        ));
    }
    Ok(())
}

fn parse_bound(
    ty: DataType,
    field: String,
    text: &Option<String>,
) -> Result<Option<Literal>, MetaError> {
    text.as_deref()
        .map(|t| ty.parse_literal(t))
        .transpose()
        .map_err(|reason| MetaError::invalid(field, reason))
}

fn validate_range(
    columns: &[ColumnDef],
    column: &str,
    ranges: &[RangeBound],
) -> Result<(), MetaError> {
    let ty = column_type(columns, "partition.range.column", column)?;
    if !ty.is_orderable() {
        return Err(MetaError::invalid(
            "partition.range.column",
            format!("column {column:?} is {ty}, which has no order to split ranges on"),
        ));
    }
    if ranges.is_empty() {
        return Err(MetaError::invalid(
            "partition.range.ranges",
            "needs at least one range",
        ));
    }
    if ranges.len() > REGIONS_PER_TABLE_MAX {
        return Err(too_many_regions(
            "partition.range.ranges",
            "ranges",
            ranges.len(),
        ));
    }
    // (start, end, index in the request) with parsed bounds.
    let mut parsed = Vec::with_capacity(ranges.len());
    let (mut unbounded_below, mut unbounded_above) = (None, None);
    for (i, r) in ranges.iter().enumerate() {
        let field = format!("partition.range.ranges[{i}]");
        let start = parse_bound(ty, format!("{field}.start"), &r.start)?;
        let end = parse_bound(ty, format!("{field}.end"), &r.end)?;
        if let (Some(s), Some(e)) = (&start, &end) {
            if s >= e {
                return Err(MetaError::invalid(
                    field,
                    format!("{r} is empty: the start must be below the end (start <= value < end)"),
                ));
            }
        }
        for (open, side, first) in [
            (start.is_none(), "below", &mut unbounded_below),
            (end.is_none(), "above", &mut unbounded_above),
        ] {
            if !open {
                continue;
            }
            if let Some(j) = *first {
                return Err(MetaError::invalid(
                    field,
                    format!(
                        "{r} is unbounded {side} like ranges[{j}] {}; only one range can be",
                        ranges[j]
                    ),
                ));
            }
            *first = Some(i);
        }
        parsed.push((start, end, i));
    }
    // Sorted by start (unbounded first), ranges are disjoint exactly when each one ends at or
    // before the next one starts.
    parsed.sort_by(|a, b| match (&a.0, &b.0) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => x.cmp(y),
    });
    for pair in parsed.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        let overlaps = match (&prev.1, &next.0) {
            (None, _) | (_, None) => true,
            (Some(prev_end), Some(next_start)) => prev_end > next_start,
        };
        if overlaps {
            // Report at the range that comes later in the request, naming the earlier one.
            let (late, early) = if prev.2 > next.2 {
                (prev.2, next.2)
            } else {
                (next.2, prev.2)
            };
            return Err(MetaError::invalid(
                format!("partition.range.ranges[{late}]"),
                format!(
                    "{} overlaps ranges[{early}] {}",
                    ranges[late], ranges[early]
                ),
            ));
        }
    }
    Ok(())
}

fn validate_list(
    columns: &[ColumnDef],
    column: &str,
    lists: &[Vec<String>],
) -> Result<(), MetaError> {
    let ty = column_type(columns, "partition.list.column", column)?;
    require_hashable("partition.list.column", column, ty)?;
    if lists.is_empty() {
        return Err(MetaError::invalid(
            "partition.list.lists",
            "needs at least one list",
        ));
    }
    if lists.len() > REGIONS_PER_TABLE_MAX {
        return Err(too_many_regions(
            "partition.list.lists",
            "lists",
            lists.len(),
        ));
    }
    let total: usize = lists.iter().map(Vec::len).sum();
    if total > PARTITION_VALUES_MAX {
        return Err(MetaError::invalid(
            "partition.list.lists",
            format!("has {total} values in all, the limit (partition_values_max) is {PARTITION_VALUES_MAX}"),
        ));
    }
    // Parsed value -> the list it is in, so "01" and "1" in an int column collide.
    let mut owner: BTreeMap<Literal, usize> = BTreeMap::new();
    for (i, list) in lists.iter().enumerate() {
        if list.is_empty() {
            return Err(MetaError::invalid(
                format!("partition.list.lists[{i}]"),
                "is empty; every list needs at least one value",
            ));
        }
        for (j, value) in list.iter().enumerate() {
            let field = format!("partition.list.lists[{i}].values[{j}]");
            let literal = ty
                .parse_literal(value)
                .map_err(|reason| MetaError::invalid(&field, reason))?;
            if let Some(first) = owner.insert(literal, i) {
                let where_ = if first == i {
                    format!("appears twice in lists[{i}]")
                } else {
                    format!("is in lists[{first}] and lists[{i}]; a value belongs to one list only")
                };
                return Err(MetaError::invalid(field, format!("{value:?} {where_}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "partition_tests.rs"]
mod tests;
