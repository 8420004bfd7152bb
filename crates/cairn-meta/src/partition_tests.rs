//! Unit tests of partition rules: each rule's refusals, and the range overlap and list
//! duplicate checks that keep every row in exactly one region.

use super::*;
use crate::table::SemanticType;
use crate::test_support::{col, error_text};

fn columns() -> Vec<ColumnDef> {
    vec![
        col("host", DataType::String, SemanticType::Tag),
        col("n", DataType::Int64, SemanticType::Field),
        col("day", DataType::Date, SemanticType::Field),
        col("usage", DataType::Float64, SemanticType::Field),
        col("doc", DataType::Json, SemanticType::Field),
        col("ok", DataType::Bool, SemanticType::Field),
    ]
}

fn bound(start: Option<&str>, end: Option<&str>) -> RangeBound {
    RangeBound {
        start: start.map(Into::into),
        end: end.map(Into::into),
    }
}

fn range(column: &str, ranges: &[(Option<&str>, Option<&str>)]) -> PartitionRule {
    PartitionRule::Range {
        column: column.into(),
        ranges: ranges.iter().map(|(s, e)| bound(*s, *e)).collect(),
    }
}

fn list(column: &str, lists: &[&[&str]]) -> PartitionRule {
    PartitionRule::List {
        column: column.into(),
        lists: lists
            .iter()
            .map(|l| l.iter().map(|v| v.to_string()).collect())
            .collect(),
    }
}

fn hash(cols: &[&str], partitions: u32) -> PartitionRule {
    PartitionRule::Hash {
        columns: cols.iter().map(|c| c.to_string()).collect(),
        partitions,
    }
}

fn check(rule: &PartitionRule) -> Result<(), MetaError> {
    rule.validate(&columns())
}

#[test]
fn region_counts() {
    assert_eq!(PartitionRule::None.region_count(), 1);
    assert_eq!(hash(&["host"], 8).region_count(), 8);
    assert_eq!(
        range("n", &[(None, Some("0")), (Some("0"), None)]).region_count(),
        2
    );
    assert_eq!(list("host", &[&["a"], &["b"], &["c"]]).region_count(), 3);
}

#[test]
fn hash_rules() {
    check(&hash(&["host", "n", "day", "ok"], 16)).unwrap();
    assert_eq!(
        error_text(check(&hash(&[], 2))),
        "partition.hash.columns: names no column to hash on"
    );
    assert_eq!(
        error_text(check(&hash(&["host", "x"], 2))),
        "partition.hash.columns[1]: no column named \"x\""
    );
    assert!(error_text(check(&hash(&["usage"], 2))).starts_with(
        "partition.hash.columns[0]: column \"usage\" is float64, which cannot be hashed"
    ));
    assert!(error_text(check(&hash(&["doc"], 2)))
        .starts_with("partition.hash.columns[0]: column \"doc\" is json"));
    assert_eq!(
        error_text(check(&hash(&["host", "host"], 2))),
        "partition.hash.columns[1]: \"host\" is already partition.hash.columns[0]"
    );
    assert_eq!(
        error_text(check(&hash(&["host"], 0))),
        "partition.hash.partitions: must be at least 1"
    );
    assert_eq!(
        error_text(check(&hash(&["host"], 1025))),
        "partition.hash.partitions: 1025 partitions, the limit (regions_per_table_max) is 1024"
    );
    check(&hash(&["host"], 1024)).unwrap();
}

#[test]
fn adjacent_ranges_are_fine() {
    check(&range(
        "n",
        &[(Some("0"), Some("10")), (Some("10"), Some("20"))],
    ))
    .unwrap();
    check(&range(
        "n",
        &[
            (Some("10"), None),
            (None, Some("0")),
            (Some("0"), Some("10")),
        ],
    ))
    .unwrap();
    check(&range("n", &[(None, None)])).unwrap();
    // Gaps are allowed: rows outside every range are refused by the database.
    check(&range(
        "n",
        &[(Some("0"), Some("5")), (Some("10"), Some("20"))],
    ))
    .unwrap();
    // Compared as numbers, not text: "9" < "10".
    check(&range(
        "n",
        &[(Some("9"), Some("10")), (Some("10"), Some("100"))],
    ))
    .unwrap();
    check(&range(
        "day",
        &[(None, Some("2024-02-01")), (Some("2024-02-01"), None)],
    ))
    .unwrap();
    check(&range("usage", &[(None, Some("0.5")), (Some("0.5"), None)])).unwrap();
}

#[test]
fn overlapping_ranges_name_both() {
    assert_eq!(
        error_text(check(&range(
            "n",
            &[(Some("0"), Some("15")), (Some("10"), Some("20"))]
        ))),
        "partition.range.ranges[1]: [10, 20) overlaps ranges[0] [0, 15)"
    );
    // Reported at the later range in the request, whatever the sort order.
    assert_eq!(
        error_text(check(&range(
            "n",
            &[(Some("10"), Some("20")), (Some("0"), Some("15"))]
        ))),
        "partition.range.ranges[1]: [0, 15) overlaps ranges[0] [10, 20)"
    );
    assert_eq!(
        error_text(check(&range(
            "n",
            &[
                (Some("0"), Some("100")),
                (Some("200"), None),
                (Some("5"), Some("6"))
            ]
        ))),
        "partition.range.ranges[2]: [5, 6) overlaps ranges[0] [0, 100)"
    );
    assert_eq!(
        error_text(check(&range(
            "n",
            &[(None, Some("10")), (Some("5"), Some("20"))]
        ))),
        "partition.range.ranges[1]: [5, 20) overlaps ranges[0] (-inf, 10)"
    );
    assert_eq!(
        error_text(check(&range(
            "n",
            &[(Some("5"), None), (Some("7"), Some("9"))]
        ))),
        "partition.range.ranges[1]: [7, 9) overlaps ranges[0] [5, +inf)"
    );
    assert_eq!(
        error_text(check(&range(
            "n",
            &[(Some("5"), Some("9")), (Some("5"), Some("9"))]
        ))),
        "partition.range.ranges[1]: [5, 9) overlaps ranges[0] [5, 9)"
    );
}

#[test]
fn one_range_per_unbounded_side() {
    assert_eq!(
        error_text(check(&range("n", &[(None, Some("0")), (None, Some("5"))]))),
        "partition.range.ranges[1]: (-inf, 5) is unbounded below like ranges[0] (-inf, 0); only one range can be"
    );
    assert_eq!(
        error_text(check(&range("n", &[(Some("0"), None), (None, None)]))),
        "partition.range.ranges[1]: (-inf, +inf) is unbounded above like ranges[0] [0, +inf); only one range can be"
    );
}

#[test]
fn range_rules() {
    assert_eq!(
        error_text(check(&range("x", &[(None, None)]))),
        "partition.range.column: no column named \"x\""
    );
    assert_eq!(
        error_text(check(&range("ok", &[(None, None)]))),
        "partition.range.column: column \"ok\" is bool, which has no order to split ranges on"
    );
    assert_eq!(
        error_text(check(&range("n", &[]))),
        "partition.range.ranges: needs at least one range"
    );
    assert_eq!(
        error_text(check(&range("n", &[(Some("a"), None)]))),
        "partition.range.ranges[0].start: \"a\" is not an integer"
    );
    assert_eq!(
        error_text(check(&range("day", &[(None, Some("2024-02-30"))]))),
        "partition.range.ranges[0].end: \"2024-02-30\" is not a date (YYYY-MM-DD)"
    );
    assert_eq!(
        error_text(check(&range("n", &[(Some("20"), Some("10"))]))),
        "partition.range.ranges[0]: [20, 10) is empty: the start must be below the end (start <= value < end)"
    );
    assert!(error_text(check(&range("n", &[(Some("10"), Some("10"))]))).contains("is empty"));
    let many: Vec<(Option<String>, Option<String>)> = (0..1025)
        .map(|i| (Some(i.to_string()), Some((i + 1).to_string())))
        .collect();
    let rule = PartitionRule::Range {
        column: "n".into(),
        ranges: many
            .into_iter()
            .map(|(start, end)| RangeBound { start, end })
            .collect(),
    };
    assert_eq!(
        error_text(check(&rule)),
        "partition.range.ranges: 1025 ranges, the limit (regions_per_table_max) is 1024"
    );
}

#[test]
fn list_rules() {
    check(&list("host", &[&["a", "b"], &["c"]])).unwrap();
    check(&list("ok", &[&["true"], &["false"]])).unwrap();
    assert_eq!(
        error_text(check(&list("x", &[&["a"]]))),
        "partition.list.column: no column named \"x\""
    );
    assert!(error_text(check(&list("usage", &[&["1"]]))).starts_with(
        "partition.list.column: column \"usage\" is float64, which cannot be hashed or listed"
    ));
    assert_eq!(
        error_text(check(&list("host", &[]))),
        "partition.list.lists: needs at least one list"
    );
    assert_eq!(
        error_text(check(&list("host", &[&["a"], &[]]))),
        "partition.list.lists[1]: is empty; every list needs at least one value"
    );
    assert_eq!(
        error_text(check(&list("n", &[&["1"], &["two"]]))),
        "partition.list.lists[1].values[0]: \"two\" is not an integer"
    );
}

#[test]
fn list_duplicates_name_the_value_and_both_lists() {
    assert_eq!(
        error_text(check(&list("host", &[&["us", "eu"], &["ap"], &["cn", "eu"]]))),
        "partition.list.lists[2].values[1]: \"eu\" is in lists[0] and lists[2]; a value belongs to one list only"
    );
    assert_eq!(
        error_text(check(&list("host", &[&["us", "us"]]))),
        "partition.list.lists[0].values[1]: \"us\" appears twice in lists[0]"
    );
    // Values are compared as the column's type: 01 is 1.
    assert!(error_text(check(&list("n", &[&["1"], &["01"]])))
        .contains("\"01\" is in lists[0] and lists[1]"));
}

#[test]
fn list_size_limits() {
    let values: Vec<String> = (0..=PARTITION_VALUES_MAX).map(|i| i.to_string()).collect();
    let rule = PartitionRule::List {
        column: "n".into(),
        lists: vec![values],
    };
    assert_eq!(
        error_text(check(&rule)),
        "partition.list.lists: has 4097 values in all, the limit (partition_values_max) is 4096"
    );
    let rule = PartitionRule::List {
        column: "n".into(),
        lists: (0..1025).map(|i| vec![i.to_string()]).collect(),
    };
    assert_eq!(
        error_text(check(&rule)),
        "partition.list.lists: 1025 lists, the limit (regions_per_table_max) is 1024"
    );
    let long = "x".repeat(1025);
    let rule = list("host", &[&[long.as_str()]]);
    assert_eq!(
        error_text(check(&rule)),
        "partition.list.lists[0].values[0]: is 1025 bytes, the limit (literal_len_max) is 1024"
    );
}

#[test]
fn columns_and_rename() {
    let mut rule = hash(&["host", "n"], 4);
    assert_eq!(rule.columns(), vec!["host", "n"]);
    rule.rename_column("n", "m");
    assert_eq!(rule.columns(), vec!["host", "m"]);
    let mut rule = range("n", &[(None, None)]);
    rule.rename_column("x", "y");
    assert_eq!(rule.columns(), vec!["n"]);
    rule.rename_column("n", "k");
    assert_eq!(rule.columns(), vec!["k"]);
    assert!(PartitionRule::None.columns().is_empty());
}
