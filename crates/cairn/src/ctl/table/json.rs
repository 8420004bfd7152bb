//! The JSON shapes of tables, databases and DDL answers printed by `cairn ctl --output json`,
//! and (for columns, options and partitions) read back by `table create --from-file`, so the
//! `table` of `table describe` can be fed to `table create` to copy a definition.
//!
//! Stable: documented in docs/ctl.md; fields are added, never renamed or removed.

use std::collections::{BTreeMap, HashMap};

use cairn_client::proto::cairnpb::partition_rule::Rule;
use cairn_client::proto::cairnpb::{
    ColumnDef, DatabaseInfo, DdlResponse, HashPartition, ListPartition, ListValues, PartitionRule,
    RangeBound, RangePartition, SemanticType, TableInfo, TableName, TableOptions,
};
use serde::{Deserialize, Serialize};

/// A table's full name; an empty catalog is shown as `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableNameJson {
    #[serde(default)]
    pub catalog: String,
    pub schema: String,
    pub name: String,
}

impl TableNameJson {
    pub fn new(name: Option<&TableName>) -> Self {
        let n = name.cloned().unwrap_or_default();
        TableNameJson {
            catalog: if n.catalog.is_empty() {
                "default".to_string()
            } else {
                n.catalog
            },
            schema: n.schema,
            name: n.name,
        }
    }

    pub fn to_proto(&self) -> TableName {
        TableName {
            catalog: self.catalog.clone(),
            schema: self.schema.clone(),
            name: self.name.clone(),
        }
    }

    /// `catalog.schema.name`.
    pub fn full(&self) -> String {
        format!("{}.{}.{}", self.catalog, self.schema, self.name)
    }
}

/// A column's role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SemanticJson {
    /// Left to the server (input only): timestamp for the time index, tag for key columns,
    /// field otherwise.
    #[default]
    Unspecified,
    Tag,
    Field,
    Timestamp,
}

impl SemanticJson {
    pub fn new(value: i32) -> Self {
        match SemanticType::try_from(value) {
            Ok(SemanticType::Tag) => SemanticJson::Tag,
            Ok(SemanticType::Field) => SemanticJson::Field,
            Ok(SemanticType::Timestamp) => SemanticJson::Timestamp,
            Ok(SemanticType::Unspecified) | Err(_) => SemanticJson::Unspecified,
        }
    }

    pub fn to_proto(self) -> SemanticType {
        match self {
            SemanticJson::Unspecified => SemanticType::Unspecified,
            SemanticJson::Tag => SemanticType::Tag,
            SemanticJson::Field => SemanticType::Field,
            SemanticJson::Timestamp => SemanticType::Timestamp,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SemanticJson::Unspecified => "-",
            SemanticJson::Tag => "tag",
            SemanticJson::Field => "field",
            SemanticJson::Timestamp => "timestamp",
        }
    }
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnJson {
    pub name: String,
    pub data_type: String,
    #[serde(default)]
    pub semantic_type: SemanticJson,
    #[serde(default)]
    pub nullable: bool,
    #[serde(default)]
    pub default_value: Option<String>,
    #[serde(default)]
    pub comment: String,
}

impl ColumnJson {
    pub fn new(c: &ColumnDef) -> Self {
        ColumnJson {
            name: c.name.clone(),
            data_type: c.data_type.clone(),
            semantic_type: SemanticJson::new(c.semantic_type),
            nullable: c.nullable,
            default_value: c.default_value.clone(),
            comment: c.comment.clone(),
        }
    }

    pub fn to_proto(&self) -> ColumnDef {
        ColumnDef {
            name: self.name.clone(),
            data_type: self.data_type.clone(),
            nullable: self.nullable,
            default_value: self.default_value.clone(),
            semantic_type: self.semantic_type.to_proto() as i32,
            comment: self.comment.clone(),
        }
    }
}

/// Table options; `ttl_seconds` null is forever.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionsJson {
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl OptionsJson {
    pub fn new(o: Option<&TableOptions>) -> Self {
        let o = o.cloned().unwrap_or_default();
        OptionsJson {
            ttl_seconds: o.ttl_seconds,
            extra: o.extra.into_iter().collect(),
        }
    }

    pub fn to_proto(&self) -> TableOptions {
        TableOptions {
            ttl_seconds: self.ttl_seconds,
            extra: self.extra.clone().into_iter().collect::<HashMap<_, _>>(),
        }
    }
}

/// A range partition's bounds; an empty bound is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeJson {
    #[serde(default)]
    pub start: String,
    #[serde(default)]
    pub end: String,
}

/// How rows split into regions: exactly one key, named after the rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PartitionJson {
    Hash {
        columns: Vec<String>,
        partitions: u32,
    },
    Range {
        column: String,
        ranges: Vec<RangeJson>,
    },
    List {
        column: String,
        lists: Vec<Vec<String>>,
    },
}

impl PartitionJson {
    /// `None` for no rule (one region).
    pub fn new(rule: Option<&PartitionRule>) -> Option<Self> {
        Some(match rule?.rule.as_ref()? {
            Rule::Hash(h) => PartitionJson::Hash {
                columns: h.columns.clone(),
                partitions: h.partitions,
            },
            Rule::Range(r) => PartitionJson::Range {
                column: r.column.clone(),
                ranges: r
                    .ranges
                    .iter()
                    .map(|b| RangeJson {
                        start: b.start.clone(),
                        end: b.end.clone(),
                    })
                    .collect(),
            },
            Rule::List(l) => PartitionJson::List {
                column: l.column.clone(),
                lists: l.lists.iter().map(|v| v.values.clone()).collect(),
            },
        })
    }

    pub fn to_proto(&self) -> PartitionRule {
        let rule = match self {
            PartitionJson::Hash {
                columns,
                partitions,
            } => Rule::Hash(HashPartition {
                columns: columns.clone(),
                partitions: *partitions,
            }),
            PartitionJson::Range { column, ranges } => Rule::Range(RangePartition {
                column: column.clone(),
                ranges: ranges
                    .iter()
                    .map(|r| RangeBound {
                        start: r.start.clone(),
                        end: r.end.clone(),
                    })
                    .collect(),
            }),
            PartitionJson::List { column, lists } => Rule::List(ListPartition {
                column: column.clone(),
                lists: lists
                    .iter()
                    .map(|values| ListValues {
                        values: values.clone(),
                    })
                    .collect(),
            }),
        };
        PartitionRule { rule: Some(rule) }
    }

    /// One line for tables: `hash(host) x 8`, `range(v) x 3`, `list(dc) x 2`.
    pub fn summary(rule: Option<&PartitionJson>) -> String {
        match rule {
            None => "none".to_string(),
            Some(PartitionJson::Hash {
                columns,
                partitions,
            }) => format!("hash({}) x {partitions}", columns.join(",")),
            Some(PartitionJson::Range { column, ranges }) => {
                format!("range({column}) x {}", ranges.len())
            }
            Some(PartitionJson::List { column, lists }) => {
                format!("list({column}) x {}", lists.len())
            }
        }
    }
}

/// One table.
#[derive(Debug, Clone, Serialize)]
pub struct TableJson {
    pub id: u64,
    pub name: TableNameJson,
    pub full_name: String,
    pub columns: Vec<ColumnJson>,
    pub primary_key: Vec<String>,
    pub time_index: String,
    pub options: OptionsJson,
    pub partition: Option<PartitionJson>,
    pub version: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub region_numbers: Vec<u32>,
}

impl TableJson {
    pub fn new(t: &TableInfo) -> Self {
        let name = TableNameJson::new(t.name.as_ref());
        TableJson {
            id: t.id,
            full_name: name.full(),
            name,
            columns: t.columns.iter().map(ColumnJson::new).collect(),
            primary_key: t.primary_key.clone(),
            time_index: t.time_index.clone(),
            options: OptionsJson::new(t.options.as_ref()),
            partition: PartitionJson::new(t.partition.as_ref()),
            version: t.version,
            created_ms: t.created_ms,
            updated_ms: t.updated_ms,
            region_numbers: t.region_numbers.clone(),
        }
    }
}

/// One database (schema).
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseJson {
    pub catalog: String,
    pub name: String,
    pub options: BTreeMap<String, String>,
    pub created_ms: u64,
}

impl DatabaseJson {
    pub fn new(d: &DatabaseInfo) -> Self {
        DatabaseJson {
            catalog: if d.catalog.is_empty() {
                "default".to_string()
            } else {
                d.catalog.clone()
            },
            name: d.name.clone(),
            options: d.options.clone().into_iter().collect(),
            created_ms: d.created_ms,
        }
    }
}

/// The answer to any DDL command.
#[derive(Debug, Clone, Serialize)]
pub struct DdlJson {
    pub procedure_id: u64,
    pub unchanged: bool,
    pub revision: i64,
    pub table: Option<TableJson>,
    pub database: Option<DatabaseJson>,
    pub dropped_tables: u64,
}

impl DdlJson {
    pub fn new(r: &DdlResponse) -> Self {
        DdlJson {
            procedure_id: r.procedure_id,
            unchanged: r.unchanged,
            revision: r.revision,
            table: r.table.as_ref().map(TableJson::new),
            database: r.database.as_ref().map(DatabaseJson::new),
            dropped_tables: r.dropped_tables,
        }
    }
}

/// A time for people: UTC, to the second (`2026-11-22 23:43:17`); `-` for 0 (never).
pub fn utc_time(ms: u64) -> String {
    if ms == 0 {
        return "-".to_string();
    }
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of a day count since 1970-01-01 in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc_time(0), "-");
        assert_eq!(utc_time(1_000), "1970-01-01 00:00:01");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_795_391_000_000), "2026-11-22 23:43:20");
    }

    #[test]
    fn partitions_round_trip_through_json() {
        let text = r#"{"list": {"column": "dc", "lists": [["us", "ca"], ["eu"]]}}"#;
        let p: PartitionJson = serde_json::from_str(text).unwrap();
        let back = PartitionJson::new(Some(&p.to_proto())).unwrap();
        assert_eq!(back, p);
        assert_eq!(PartitionJson::summary(Some(&p)), "list(dc) x 2");
        let json = serde_json::to_value(PartitionJson::Hash {
            columns: vec!["host".into()],
            partitions: 8,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"hash": {"columns": ["host"], "partitions": 8}})
        );
        assert!(serde_json::from_str::<PartitionJson>(r#"{"hash": {"columns": []}}"#).is_err());
    }

    #[test]
    fn table_json_shape_is_stable() {
        let table = TableInfo {
            id: 1024,
            name: Some(TableName {
                catalog: String::new(),
                schema: "db".into(),
                name: "cpu".into(),
            }),
            columns: vec![ColumnDef {
                name: "ts".into(),
                data_type: "timestamp(3)".into(),
                semantic_type: SemanticType::Timestamp as i32,
                ..Default::default()
            }],
            time_index: "ts".into(),
            version: 1,
            region_numbers: vec![0],
            ..Default::default()
        };
        let json = serde_json::to_value(TableJson::new(&table)).unwrap();
        assert_eq!(json["full_name"], "default.db.cpu");
        assert_eq!(json["name"]["catalog"], "default");
        assert_eq!(json["columns"][0]["semantic_type"], "timestamp");
        assert!(json["columns"][0]["default_value"].is_null());
        assert!(json["options"]["ttl_seconds"].is_null());
        assert!(json["partition"].is_null());
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 12, "{keys:?}");
    }
}
