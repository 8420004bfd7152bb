//! The command-line forms of table definitions, parsed into `cairn.v1` requests: table names
//! (`[CATALOG.]SCHEMA.NAME`), columns (`NAME:TYPE[:tag|field|timestamp][:null][:default=SQL]`),
//! partition rules (`--partition-hash`, `--partition-range`, `--partition-list`), durations
//! and `KEY=VALUE` options.
//!
//! Pure: every error names the flag and the text that was given, so a user sees which of many
//! `--column` flags is wrong. Rules about the definition itself (known data types, one time
//! index, ...) are the server's; the client only checks the shape of what was typed.

use std::collections::HashMap;

use cairn_client::proto::cairnpb::partition_rule::Rule;
use cairn_client::proto::cairnpb::{
    ColumnDef, HashPartition, ListPartition, ListValues, PartitionRule, RangeBound, RangePartition,
    SemanticType, TableName,
};

/// A table name as typed: `SCHEMA.NAME` (catalog `default`) or `CATALOG.SCHEMA.NAME`. Names
/// hold no dots, so the split is unambiguous; the server checks the characters.
pub fn parse_table_name(raw: &str) -> Result<TableName, String> {
    let parts: Vec<&str> = raw.split('.').collect();
    let (catalog, schema, name) = match parts.as_slice() {
        [schema, name] => ("", *schema, *name),
        [catalog, schema, name] => (*catalog, *schema, *name),
        _ => {
            return Err(format!(
                "table name {raw:?}: expected SCHEMA.NAME or CATALOG.SCHEMA.NAME"
            ))
        }
    };
    if schema.is_empty() || name.is_empty() || (parts.len() == 3 && catalog.is_empty()) {
        return Err(format!(
            "table name {raw:?}: expected SCHEMA.NAME or CATALOG.SCHEMA.NAME, with no empty part"
        ));
    }
    Ok(TableName {
        catalog: catalog.to_string(),
        schema: schema.to_string(),
        name: name.to_string(),
    })
}

/// A database as typed for listings: `SCHEMA` or `CATALOG.SCHEMA`; returns (catalog, schema)
/// with an empty catalog for the default one.
pub fn parse_schema_name(raw: &str) -> Result<(String, String), String> {
    match raw.split('.').collect::<Vec<_>>().as_slice() {
        [schema] if !schema.is_empty() => Ok((String::new(), schema.to_string())),
        [catalog, schema] if !catalog.is_empty() && !schema.is_empty() => {
            Ok((catalog.to_string(), schema.to_string()))
        }
        _ => Err(format!(
            "database {raw:?}: expected SCHEMA or CATALOG.SCHEMA"
        )),
    }
}

/// The syntax of `--column` and `--add-column`, for messages and help.
pub const COLUMN_SYNTAX: &str = "NAME:TYPE[:tag|field|timestamp][:null][:default=SQL]";

/// One column: `NAME:TYPE` then modifiers in any order: a semantic type (`tag`, `field`,
/// `timestamp`; left out, the server infers it from --primary-key and --time-index), `null`
/// (nullable; columns are NOT NULL otherwise), and last `default=SQL`, which takes the rest of
/// the text (it may hold colons). Types hold no colons (`decimal(10,2)`, `timestamp(9)`).
pub fn parse_column(flag: &str, raw: &str) -> Result<ColumnDef, String> {
    let bad = |why: String| format!("{flag} {raw:?}: {why}; expected {COLUMN_SYNTAX}");
    let (head, default_value) = match raw.find(":default=") {
        Some(at) => (&raw[..at], Some(raw[at + ":default=".len()..].to_string())),
        None => (raw, None),
    };
    let mut parts = head.split(':');
    let name = parts.next().unwrap_or_default().trim();
    let data_type = parts.next().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(bad("the column name is empty".into()));
    }
    if data_type.is_empty() {
        return Err(bad("the data type is missing".into()));
    }
    let mut semantic: Option<SemanticType> = None;
    let mut nullable = false;
    for modifier in parts {
        let kind = match modifier.trim().to_ascii_lowercase().as_str() {
            "tag" => Some(SemanticType::Tag),
            "field" => Some(SemanticType::Field),
            "timestamp" => Some(SemanticType::Timestamp),
            "null" => None,
            other => {
                return Err(bad(format!(
                    "unknown modifier {other:?} (tag, field, timestamp, null or default=SQL)"
                )))
            }
        };
        match kind {
            None if nullable => return Err(bad("`null` is given twice".into())),
            None => nullable = true,
            Some(_) if semantic.is_some() => return Err(bad("more than one semantic type".into())),
            Some(s) => semantic = Some(s),
        }
    }
    Ok(ColumnDef {
        name: name.to_string(),
        data_type: data_type.to_string(),
        nullable,
        default_value,
        semantic_type: semantic.unwrap_or(SemanticType::Unspecified) as i32,
        comment: String::new(),
    })
}

/// `--partition-hash COL[,COL...]:N`.
pub fn parse_hash_partition(raw: &str) -> Result<PartitionRule, String> {
    let bad = |why: &str| format!("--partition-hash {raw:?}: {why}; expected COLUMN[,COLUMN...]:N");
    let (columns, count) = raw.rsplit_once(':').ok_or_else(|| bad("no `:N`"))?;
    let partitions: u32 = count
        .trim()
        .parse()
        .map_err(|_| bad("N is not a whole number"))?;
    let columns = split_names(columns);
    if columns.is_empty() {
        return Err(bad("no column"));
    }
    Ok(PartitionRule {
        rule: Some(Rule::Hash(HashPartition {
            columns,
            partitions,
        })),
    })
}

/// `--partition-range COL:START..END[,START..END...]`; an empty bound is unbounded.
pub fn parse_range_partition(raw: &str) -> Result<PartitionRule, String> {
    let bad = |why: String| {
        format!("--partition-range {raw:?}: {why}; expected COLUMN:START..END[,START..END...] (an empty bound is unbounded)")
    };
    let (column, ranges) = raw
        .split_once(':')
        .ok_or_else(|| bad("no `COLUMN:`".into()))?;
    if column.trim().is_empty() {
        return Err(bad("the column is empty".into()));
    }
    let ranges = ranges
        .split(',')
        .map(|range| {
            let (start, end) = range
                .split_once("..")
                .ok_or_else(|| bad(format!("range {range:?} has no `..`")))?;
            Ok(RangeBound {
                start: start.trim().to_string(),
                end: end.trim().to_string(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(PartitionRule {
        rule: Some(Rule::Range(RangePartition {
            column: column.trim().to_string(),
            ranges,
        })),
    })
}

/// `--partition-list COL:V1|V2,V3` — lists separated by `,`, values of one list by `|`.
pub fn parse_list_partition(raw: &str) -> Result<PartitionRule, String> {
    let bad = |why: &str| {
        format!("--partition-list {raw:?}: {why}; expected COLUMN:V1|V2,V3 (lists separated by `,`, values by `|`)")
    };
    let (column, lists) = raw.split_once(':').ok_or_else(|| bad("no `COLUMN:`"))?;
    if column.trim().is_empty() {
        return Err(bad("the column is empty"));
    }
    let lists: Vec<ListValues> = lists
        .split(',')
        .map(|list| ListValues {
            values: list.split('|').map(|v| v.trim().to_string()).collect(),
        })
        .collect();
    if lists.iter().any(|l| l.values.iter().any(String::is_empty)) {
        return Err(bad("a value is empty"));
    }
    Ok(PartitionRule {
        rule: Some(Rule::List(ListPartition {
            column: column.trim().to_string(),
            lists,
        })),
    })
}

/// A comma-separated list of names, blanks dropped (`--primary-key a,b`, `--partition-hash`).
pub fn split_names(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A duration in seconds: `3600`, or a number with a unit `s`, `m`, `h`, `d` (`7d`).
pub fn parse_seconds(flag: &str, raw: &str) -> Result<u64, String> {
    let raw_trim = raw.trim();
    let (digits, unit) = match raw_trim.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&raw_trim[..at], c.to_ascii_lowercase()),
        _ => (raw_trim, 's'),
    };
    let multiplier: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("{flag} {raw:?}: unknown unit; use s, m, h or d")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{flag} {raw:?}: expected seconds, or a number with s, m, h or d"))
}

/// `KEY=VALUE` pairs into a map; a key given twice is an error.
pub fn parse_options(flag: &str, raw: &[String]) -> Result<HashMap<String, String>, String> {
    let mut options = HashMap::new();
    for pair in raw {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{flag} {pair:?}: expected KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() {
            return Err(format!("{flag} {pair:?}: the key is empty"));
        }
        if options.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("{flag}: key {key:?} is given twice"));
        }
    }
    Ok(options)
}

/// Rewrites a server message that names `columns[i]` so it also shows the `--column` flag the
/// user typed for it: the server numbers columns, the user remembers what they typed.
pub fn with_column_hint(message: &str, flag: &str, specs: &[String]) -> String {
    let index = message
        .find("columns[")
        .map(|at| &message[at + "columns[".len()..])
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse::<usize>().ok());
    match index.and_then(|i| specs.get(i)) {
        Some(spec) => format!("{message} (the column given as {flag} {spec:?})"),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_take_two_or_three_parts() {
        let n = parse_table_name("db.cpu").unwrap();
        assert_eq!(
            (n.catalog.as_str(), n.schema.as_str(), n.name.as_str()),
            ("", "db", "cpu")
        );
        let n = parse_table_name("c.db.cpu").unwrap();
        assert_eq!(n.catalog, "c");
        for bad in ["cpu", "a.b.c.d", "db.", ".cpu", ".db.cpu"] {
            assert!(parse_table_name(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_schema_name("db").unwrap(),
            (String::new(), "db".into())
        );
        assert_eq!(
            parse_schema_name("c.db").unwrap(),
            ("c".into(), "db".into())
        );
        assert!(parse_schema_name("a.b.c").is_err());
    }

    #[test]
    fn columns_parse_with_modifiers_in_any_order() {
        let c = parse_column("--column", "host:string:tag").unwrap();
        assert_eq!((c.name.as_str(), c.data_type.as_str()), ("host", "string"));
        assert_eq!(c.semantic_type, SemanticType::Tag as i32);
        assert!(!c.nullable);
        let c = parse_column("--column", "price:decimal(10,2):null:field").unwrap();
        assert_eq!(c.data_type, "decimal(10,2)");
        assert!(c.nullable);
        assert_eq!(c.semantic_type, SemanticType::Field as i32);
        let c = parse_column("--column", "ts:timestamp(9)").unwrap();
        assert_eq!(c.semantic_type, SemanticType::Unspecified as i32);
        let c = parse_column("--column", "note:string:null:default='a:b'").unwrap();
        assert_eq!(c.default_value.as_deref(), Some("'a:b'"));
        assert!(c.nullable);
    }

    #[test]
    fn bad_columns_name_the_flag_and_the_text() {
        for (raw, why) in [
            ("host", "data type is missing"),
            (":string", "name is empty"),
            ("a:int8:sideways", "unknown modifier"),
            ("a:int8:tag:field", "more than one semantic type"),
            ("a:int8:null:null", "twice"),
        ] {
            let e = parse_column("--column", raw).unwrap_err();
            assert!(e.starts_with(&format!("--column {raw:?}")), "{e}");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn partitions_parse() {
        let Some(Rule::Hash(h)) = parse_hash_partition("host, dc:8").unwrap().rule else {
            panic!("hash")
        };
        assert_eq!(
            (h.columns, h.partitions),
            (vec!["host".into(), "dc".into()], 8)
        );
        let Some(Rule::Range(r)) = parse_range_partition("v:..10,10..20,20..").unwrap().rule else {
            panic!("range")
        };
        assert_eq!(r.column, "v");
        let bounds: Vec<(&str, &str)> = r
            .ranges
            .iter()
            .map(|b| (b.start.as_str(), b.end.as_str()))
            .collect();
        assert_eq!(bounds, [("", "10"), ("10", "20"), ("20", "")]);
        let Some(Rule::List(l)) = parse_list_partition("dc:us|ca,eu").unwrap().rule else {
            panic!("list")
        };
        assert_eq!(l.lists.len(), 2);
        assert_eq!(l.lists[0].values, ["us", "ca"]);
        assert!(parse_hash_partition("host").is_err());
        assert!(parse_hash_partition(":4").is_err());
        assert!(parse_hash_partition("host:x").is_err());
        assert!(parse_range_partition("v:1-2").is_err());
        assert!(parse_list_partition("dc:a||b").is_err());
    }

    #[test]
    fn durations_and_options() {
        assert_eq!(parse_seconds("--ttl", "90"), Ok(90));
        assert_eq!(parse_seconds("--ttl", "2h"), Ok(7_200));
        assert_eq!(parse_seconds("--ttl", "7d"), Ok(604_800));
        assert!(parse_seconds("--ttl", "7w").is_err());
        assert!(parse_seconds("--ttl", "-1").is_err());
        let o = parse_options("--option", &["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(o["b"], "x=y");
        assert!(parse_options("--option", &["a".into()]).is_err());
        assert!(parse_options("--option", &["a=1".into(), "a=2".into()]).is_err());
    }

    #[test]
    fn column_hints_point_at_the_flag() {
        let specs = vec!["host:string".to_string(), "ts:timestamp(4)".to_string()];
        let m = with_column_hint("columns[1].data_type: bad precision", "--column", &specs);
        assert!(
            m.ends_with("(the column given as --column \"ts:timestamp(4)\")"),
            "{m}"
        );
        assert_eq!(
            with_column_hint("time_index: missing", "--column", &specs),
            "time_index: missing"
        );
    }
}
