//! Unit tests of table validation: one test per rule, asserting the field path and reason a
//! user sees.

use super::*;
use crate::test_support::{col, cpu_info, create_cpu, error_text};

fn refused(change: impl FnOnce(&mut CreateTable)) -> String {
    let mut c = create_cpu();
    change(&mut c);
    error_text(c.validate())
}

#[test]
fn the_fixture_is_valid_and_becomes_version_one() {
    let c = create_cpu();
    c.validate().unwrap();
    assert_eq!(c.region_count(), 1);
    let t = c.into_table_info(7, 99);
    assert_eq!(t.name.catalog, "default", "empty catalog is normalized");
    assert_eq!((t.version, t.created_ms, t.updated_ms), (1, 99, 99));
    assert_eq!(t.region_numbers, vec![0]);
    assert_eq!(t.region_ids(), vec![7 << 32]);
    assert_eq!(
        t.column("ts").unwrap().data_type,
        DataType::Timestamp { precision: 3 }
    );
    assert!(t.column("nope").is_none());
    t.validate().unwrap();
}

#[test]
fn regions_follow_the_partition_rule() {
    let mut c = create_cpu();
    c.partition = PartitionRule::Hash {
        columns: vec!["host".into()],
        partitions: 4,
    };
    c.validate().unwrap();
    let t = c.into_table_info(2, 0);
    assert_eq!(t.region_numbers, vec![0, 1, 2, 3]);
    assert_eq!(
        t.region_ids(),
        vec![2 << 32, (2 << 32) | 1, (2 << 32) | 2, (2 << 32) | 3]
    );
}

#[test]
fn names_are_checked() {
    assert!(
        refused(|c| c.name.schema = String::new()).starts_with("name.schema: must not be empty")
    );
    assert!(refused(|c| c.name.name = "a.b".into()).starts_with("name.name: contains '.'"));
    assert!(refused(|c| c.name.catalog = "x/y".into()).starts_with("name.catalog: contains '/'"));
    assert!(refused(|c| c.columns[3].name = "1x".into())
        .starts_with("columns[3].name: starts with '1'"));
}

#[test]
fn display_and_normalization() {
    assert_eq!(
        TableName::new("", "public", "cpu").to_string(),
        "default.public.cpu"
    );
    assert_eq!(TableName::new("c", "s", "t").to_string(), "c.s.t");
    assert_eq!(
        TableName::new("", "s", "t").normalized(),
        TableName::new("default", "s", "t")
    );
}

#[test]
fn column_count_limits() {
    assert_eq!(
        refused(|c| c.columns.clear()),
        "columns: a table needs at least one column"
    );
    let err = refused(|c| {
        for i in 0..COLUMNS_PER_TABLE_MAX {
            c.columns
                .push(col(&format!("f{i}"), DataType::Int32, SemanticType::Field));
        }
    });
    assert_eq!(
        err,
        "columns: has 4101 columns, the limit (columns_per_table_max) is 4096"
    );
}

#[test]
fn duplicate_column_names() {
    assert_eq!(
        refused(|c| c.columns[4].name = "usage".into()),
        "columns[4].name: \"usage\" is already the name of columns[3]"
    );
    // Case-sensitive: "Usage" is another column.
    let mut c = create_cpu();
    c.columns[4].name = "Usage".into();
    c.validate().unwrap();
}

#[test]
fn comment_and_default_lengths() {
    assert_eq!(
        refused(|c| c.columns[3].comment = "x".repeat(COMMENT_LEN_MAX + 1)),
        "columns[3].comment: is 1025 bytes, the limit (comment_len_max) is 1024"
    );
    assert_eq!(
        refused(|c| c.columns[3].default_value = Some("1".repeat(DEFAULT_VALUE_LEN_MAX + 1))),
        "columns[3].default_value: is 1025 bytes, the limit (default_value_len_max) is 1024"
    );
}

#[test]
fn time_index_rules() {
    assert_eq!(
        refused(|c| c.time_index.clear()),
        "time_index: must name the table's timestamp column"
    );
    assert_eq!(
        refused(|c| c.time_index = "nope".into()),
        "time_index: no column named \"nope\""
    );
    assert_eq!(
        refused(|c| c.columns[2].data_type = DataType::Int64),
        "time_index: column \"ts\" is int64, the time index must be timestamp(P)"
    );
    assert_eq!(
        refused(|c| c.columns[2].nullable = true),
        "time_index: column \"ts\" is nullable, the time index must not be"
    );
    assert_eq!(
        refused(|c| c.columns[2].semantic_type = SemanticType::Field),
        "time_index: column \"ts\" has semantic type field, the time index must have semantic type timestamp"
    );
}

#[test]
fn only_the_time_index_is_a_timestamp() {
    let err = refused(|c| {
        let mut other = col(
            "ts2",
            DataType::Timestamp { precision: 3 },
            SemanticType::Timestamp,
        );
        other.nullable = false;
        c.columns.push(other);
    });
    assert_eq!(
        err,
        "columns[5].semantic_type: only the time index (\"ts\") has semantic type timestamp, not \"ts2\""
    );
    // Another timestamp-typed column is fine as a field.
    let mut c = create_cpu();
    c.columns.push(col(
        "seen",
        DataType::Timestamp { precision: 0 },
        SemanticType::Field,
    ));
    c.validate().unwrap();
}

#[test]
fn primary_key_rules() {
    assert_eq!(
        refused(|c| c.primary_key[1] = "nope".into()),
        "primary_key[1]: no column named \"nope\""
    );
    assert_eq!(
        refused(|c| c.primary_key[1] = "host".into()),
        "primary_key[1]: \"host\" is already primary_key[0]"
    );
    assert!(refused(|c| c.primary_key.push("ts".into()))
        .starts_with("primary_key[2]: \"ts\" is the time index"));
    assert_eq!(
        refused(|c| c.primary_key.push("usage".into())),
        "primary_key[2]: column \"usage\" has semantic type field, primary key columns must be tags"
    );
    assert_eq!(
        refused(|c| {
            c.primary_key.pop();
        }),
        "columns[1].semantic_type: tag column \"region\" is not in primary_key; the tags make up the primary key"
    );
    let err = refused(|c| {
        for i in 0..PRIMARY_KEY_COLUMNS_MAX {
            c.columns
                .push(col(&format!("t{i}"), DataType::String, SemanticType::Tag));
            c.primary_key.push(format!("t{i}"));
        }
    });
    assert_eq!(
        err,
        "primary_key: has 66 columns, the limit (primary_key_columns_max) is 64"
    );
}

#[test]
fn json_and_vector_cannot_be_tags() {
    for ty in [DataType::Json, DataType::Vector { dim: 8 }] {
        let err = refused(|c| {
            c.columns.push(col("doc", ty, SemanticType::Tag));
            c.primary_key.push("doc".into());
        });
        assert_eq!(
            err,
            format!("columns[5].semantic_type: {ty} column \"doc\" cannot be a tag")
        );
    }
}

#[test]
fn option_limits() {
    assert_eq!(
        refused(|c| c.options.ttl_seconds = Some(0)),
        "options.ttl_seconds: must be at least 1; leave it unset to keep rows forever"
    );
    let err = refused(|c| {
        c.options.extra = (0..=OPTIONS_EXTRA_MAX)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
    });
    assert_eq!(
        err,
        "options.extra: has 65 options, the limit (options_extra_max) is 64"
    );
    let err = refused(|c| {
        c.options
            .extra
            .insert("k".repeat(OPTION_KEY_LEN_MAX + 1), "v".into());
    });
    assert!(err.starts_with("options.extra: key \"kkkkkkkkkkkkkkkk\"... is 129 bytes, the limit (option_key_len_max) is 128"), "{err}");
    let err = refused(|c| {
        c.options
            .extra
            .insert("k".into(), "v".repeat(OPTION_VALUE_LEN_MAX + 1));
    });
    assert_eq!(
        err,
        "options.extra: the value of \"k\" is 4097 bytes, the limit (option_value_len_max) is 4096"
    );
}

#[test]
fn partition_rule_is_checked_against_the_columns() {
    let err = refused(|c| {
        c.partition = PartitionRule::Hash {
            columns: vec!["nope".into()],
            partitions: 2,
        }
    });
    assert_eq!(err, "partition.hash.columns[0]: no column named \"nope\"");
}

#[test]
fn stored_form_is_readable_json_and_round_trips() {
    let mut t = cpu_info();
    t.options.ttl_seconds = Some(3600);
    t.columns[3].comment = "percent".into();
    t.partition = PartitionRule::Range {
        column: "host".into(),
        ranges: vec![
            crate::partition::RangeBound {
                start: None,
                end: Some("m".into()),
            },
            crate::partition::RangeBound {
                start: Some("m".into()),
                end: None,
            },
        ],
    };
    let json = serde_json::to_string(&t).unwrap();
    assert!(json.contains(r#""data_type":"timestamp(3)""#), "{json}");
    assert!(json.contains(r#""semantic_type":"tag""#), "{json}");
    assert!(
        json.contains(
            r#""partition":{"range":{"column":"host","ranges":[{"end":"m"},{"start":"m"}]}}"#
        ),
        "{json}"
    );
    assert!(!json.contains("default_value"), "{json}");
    let back: TableInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    let none = serde_json::to_string(&cpu_info()).unwrap();
    assert!(none.contains(r#""partition":"none""#), "{none}");
}
