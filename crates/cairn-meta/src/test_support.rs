//! Shared fixtures for unit tests: a small, valid metrics table to break one rule at a time.

use crate::partition::PartitionRule;
use crate::table::{ColumnDef, CreateTable, SemanticType, TableInfo, TableName, TableOptions};
use crate::types::DataType;

pub fn col(name: &str, data_type: DataType, semantic_type: SemanticType) -> ColumnDef {
    ColumnDef::new(name, data_type, semantic_type)
}

/// cpu(host tag, region tag, ts time index, usage float64, load int64), key (host, region).
pub fn create_cpu() -> CreateTable {
    CreateTable {
        name: TableName::new("", "public", "cpu"),
        columns: vec![
            col("host", DataType::String, SemanticType::Tag),
            col("region", DataType::String, SemanticType::Tag),
            col(
                "ts",
                DataType::Timestamp { precision: 3 },
                SemanticType::Timestamp,
            ),
            col("usage", DataType::Float64, SemanticType::Field),
            col("load", DataType::Int64, SemanticType::Field),
        ],
        primary_key: vec!["host".into(), "region".into()],
        time_index: "ts".into(),
        options: TableOptions::default(),
        partition: PartitionRule::None,
    }
}

pub fn cpu_info() -> TableInfo {
    let create = create_cpu();
    create.validate().expect("the fixture is valid");
    create.into_table_info(1024, 1_000)
}

/// The error's text, for asserting on the field path and reason users see.
pub fn error_text<T: std::fmt::Debug>(r: Result<T, crate::error::MetaError>) -> String {
    r.expect_err("expected a refusal").to_string()
}
