//! Unit tests of ALTER TABLE: each kind's effect, and each refusal with its field path.

use super::*;
use crate::partition::PartitionRule;
use crate::test_support::{col, cpu_info, error_text};
use crate::types::DataType;

fn refused(kind: AlterKind) -> String {
    error_text(cpu_info().altered(&kind, 2_000))
}

fn names(t: &TableInfo) -> Vec<&str> {
    t.columns.iter().map(|c| c.name.as_str()).collect()
}

fn set_options(ttl: Option<Option<u64>>, set: &[(&str, &str)], unset: &[&str]) -> AlterKind {
    AlterKind::SetOptions {
        ttl_seconds: ttl,
        set_extra: set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        unset_extra: unset.iter().map(|k| k.to_string()).collect(),
    }
}

#[test]
fn an_alter_bumps_version_and_time_and_leaves_the_original() {
    let before = cpu_info();
    let after = before
        .altered(
            &AlterKind::AddColumns(vec![col("mem", DataType::Int64, SemanticType::Field)]),
            5_000,
        )
        .unwrap();
    assert_eq!(
        (after.version, after.updated_ms, after.created_ms),
        (2, 5_000, 1_000)
    );
    assert_eq!(
        names(&after),
        ["host", "region", "ts", "usage", "load", "mem"]
    );
    assert_eq!(before, cpu_info());
    assert_eq!(after.region_numbers, before.region_numbers);
}

#[test]
fn added_tags_join_the_primary_key() {
    let t = cpu_info()
        .altered(
            &AlterKind::AddColumns(vec![col("dc", DataType::String, SemanticType::Tag)]),
            1,
        )
        .unwrap();
    assert_eq!(t.primary_key, ["host", "region", "dc"]);
}

#[test]
fn add_columns_refusals() {
    assert_eq!(
        refused(AlterKind::AddColumns(vec![])),
        "add_columns.columns: names no column to add"
    );
    assert_eq!(
        refused(AlterKind::AddColumns(vec![col(
            "usage",
            DataType::Int64,
            SemanticType::Field
        )])),
        "add_columns.columns[0].name: the table already has a column named \"usage\""
    );
    assert_eq!(
        refused(AlterKind::AddColumns(vec![
            col("a", DataType::Int64, SemanticType::Field),
            col("a", DataType::Int64, SemanticType::Field),
        ])),
        "add_columns.columns[1].name: \"a\" is already the name of add_columns.columns[0]"
    );
    assert!(refused(AlterKind::AddColumns(vec![col(
        "",
        DataType::Int64,
        SemanticType::Field
    )]))
    .starts_with("add_columns.columns[0].name: must not be empty"));
    assert_eq!(
        refused(AlterKind::AddColumns(vec![col("t2", DataType::Timestamp { precision: 3 }, SemanticType::Timestamp)])),
        "add_columns.columns[0].semantic_type: a table has one timestamp column, its time index \"ts\""
    );
    let mut strict = col("m", DataType::Int64, SemanticType::Field);
    strict.nullable = false;
    assert_eq!(
        refused(AlterKind::AddColumns(vec![strict.clone()])),
        "add_columns.columns[0].nullable: column \"m\" is not nullable and has no default_value, \
         so existing rows would have no value"
    );
    strict.default_value = Some("0".into());
    cpu_info()
        .altered(&AlterKind::AddColumns(vec![strict]), 1)
        .unwrap();
    assert_eq!(
        refused(AlterKind::AddColumns(vec![col(
            "v",
            DataType::Vector { dim: 4 },
            SemanticType::Tag
        )])),
        "add_columns.columns[0].semantic_type: vector(4) column \"v\" cannot be a tag"
    );
    let many = (0..crate::table::COLUMNS_PER_TABLE_MAX)
        .map(|i| col(&format!("f{i}"), DataType::Int8, SemanticType::Field))
        .collect();
    assert_eq!(
        refused(AlterKind::AddColumns(many)),
        "add_columns.columns: would give the table 4101 columns, the limit (columns_per_table_max) is 4096"
    );
}

#[test]
fn drop_columns_removes_them() {
    let t = cpu_info()
        .altered(&AlterKind::DropColumns(vec!["load".into()]), 1)
        .unwrap();
    assert_eq!(names(&t), ["host", "region", "ts", "usage"]);
}

#[test]
fn drop_columns_refusals() {
    let drop = |names: &[&str]| {
        refused(AlterKind::DropColumns(
            names.iter().map(|n| n.to_string()).collect(),
        ))
    };
    assert_eq!(drop(&[]), "drop_columns.names: names no column to drop");
    assert_eq!(
        drop(&["usage", "nope"]),
        "drop_columns.names[1]: no column named \"nope\""
    );
    assert_eq!(
        drop(&["usage", "usage"]),
        "drop_columns.names[1]: \"usage\" is already drop_columns.names[0]"
    );
    assert_eq!(
        drop(&["ts"]),
        "drop_columns.names[0]: \"ts\" is the time index, which cannot be dropped"
    );
    assert_eq!(
        drop(&["host"]),
        "drop_columns.names[0]: \"host\" is in the primary key, which cannot change"
    );

    let mut t = cpu_info();
    t.partition = PartitionRule::Range {
        column: "load".into(),
        ranges: vec![crate::partition::RangeBound {
            start: None,
            end: None,
        }],
    };
    assert_eq!(
        error_text(t.altered(&AlterKind::DropColumns(vec!["load".into()]), 1)),
        "drop_columns.names[0]: \"load\" is a partition column; rows are placed by it"
    );

    // A table of only a time index and fields cannot lose its last field.
    let mut t = cpu_info();
    t.columns.retain(|c| c.name == "ts" || c.name == "usage");
    t.primary_key.clear();
    t.validate().unwrap();
    assert_eq!(
        error_text(t.altered(&AlterKind::DropColumns(vec!["usage".into()]), 1)),
        "drop_columns.names: would leave only the time index; a table keeps at least one other column"
    );
}

#[test]
fn rename_column_follows_references() {
    let mut t = cpu_info();
    t.partition = PartitionRule::Hash {
        columns: vec!["host".into()],
        partitions: 2,
    };
    t.region_numbers = vec![0, 1];
    let t = t
        .altered(
            &AlterKind::RenameColumn {
                from: "host".into(),
                to: "hostname".into(),
            },
            1,
        )
        .unwrap();
    assert_eq!(t.primary_key, ["hostname", "region"]);
    assert_eq!(t.partition.columns(), ["hostname"]);
    assert!(t.column("hostname").is_some() && t.column("host").is_none());
    let t = t
        .altered(
            &AlterKind::RenameColumn {
                from: "ts".into(),
                to: "time".into(),
            },
            1,
        )
        .unwrap();
    assert_eq!(t.time_index, "time");
}

#[test]
fn rename_column_refusals() {
    let rename = |from: &str, to: &str| {
        refused(AlterKind::RenameColumn {
            from: from.into(),
            to: to.into(),
        })
    };
    assert_eq!(
        rename("nope", "x"),
        "rename_column.from: no column named \"nope\""
    );
    assert!(rename("host", "a b").starts_with("rename_column.to: contains ' '"));
    assert_eq!(
        rename("host", "host"),
        "rename_column.to: \"host\" is the column's current name"
    );
    assert_eq!(
        rename("host", "usage"),
        "rename_column.to: the table already has a column named \"usage\""
    );
}

#[test]
fn set_options_sets_clears_and_unsets() {
    let t = cpu_info()
        .altered(
            &set_options(Some(Some(60)), &[("a", "1"), ("b", "2")], &[]),
            1,
        )
        .unwrap();
    assert_eq!(t.options.ttl_seconds, Some(60));
    assert_eq!(t.options.extra.len(), 2);
    let t = t
        .altered(&set_options(None, &[("a", "9")], &["b", "missing"]), 1)
        .unwrap();
    assert_eq!(t.options.ttl_seconds, Some(60), "None leaves the ttl alone");
    assert_eq!(
        t.options.extra,
        BTreeMap::from([("a".to_string(), "9".to_string())])
    );
    let t = t.altered(&set_options(Some(None), &[], &[]), 1).unwrap();
    assert_eq!(t.options.ttl_seconds, None);
}

#[test]
fn set_options_refusals() {
    assert_eq!(
        refused(set_options(None, &[], &[])),
        "set_options: changes nothing: set a ttl or an option"
    );
    assert_eq!(
        refused(set_options(Some(Some(0)), &[], &[])),
        "set_options.ttl_seconds: must be at least 1; clear the ttl to keep rows forever"
    );
    assert_eq!(
        refused(set_options(None, &[("k", "v")], &["x", "k"])),
        "set_options.unset_extra[1]: \"k\" is also in set_extra; set it or unset it, not both"
    );
    let long = "v".repeat(crate::table::OPTION_VALUE_LEN_MAX + 1);
    assert!(refused(set_options(None, &[("k", &long)], &[]))
        .starts_with("set_options.set_extra: the value of \"k\" is 4097 bytes"));
    // 40 existing + 40 new options go over the limit only together.
    let mut t = cpu_info();
    t.options.extra = (0..40)
        .map(|i| (format!("old{i}"), String::new()))
        .collect();
    let new: Vec<(String, String)> = (0..40)
        .map(|i| (format!("new{i}"), String::new()))
        .collect();
    let kind = AlterKind::SetOptions {
        ttl_seconds: None,
        set_extra: new.into_iter().collect(),
        unset_extra: vec![],
    };
    assert_eq!(
        error_text(t.altered(&kind, 1)),
        "set_options.set_extra: would give the table 80 options, the limit (options_extra_max) is 64"
    );
}

#[test]
fn rename_table() {
    let t = cpu_info()
        .altered(&AlterKind::RenameTable { to: "cpu2".into() }, 1)
        .unwrap();
    assert_eq!(t.name.to_string(), "default.public.cpu2");
    assert_eq!(
        refused(AlterKind::RenameTable { to: "cpu".into() }),
        "rename_table.to: the table is already named \"cpu\""
    );
    assert!(refused(AlterKind::RenameTable { to: "a.b".into() })
        .starts_with("rename_table.to: contains '.'"));
}

#[test]
fn kind_names() {
    assert_eq!(AlterKind::DropColumns(vec![]).as_str(), "drop_columns");
    assert_eq!(
        AlterKind::RenameTable { to: String::new() }.as_str(),
        "rename_table"
    );
}
