//! A table's columns: their definition and role in the time-series model.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::DataType;

/// The role a column plays in the time-series model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SemanticType {
    /// Identifies a series; tags make up the primary key.
    Tag,
    /// A measured value.
    Field,
    /// The time index.
    Timestamp,
}

impl SemanticType {
    pub fn as_str(&self) -> &'static str {
        match self {
            SemanticType::Tag => "tag",
            SemanticType::Field => "field",
            SemanticType::Timestamp => "timestamp",
        }
    }
}

impl fmt::Display for SemanticType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One column. Empty parts are left out of the stored JSON to keep large tables small.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
    /// Default value as SQL text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    pub semantic_type: SemanticType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
}

impl ColumnDef {
    /// A column without default or comment; nullable unless it is the time index.
    pub fn new(name: impl Into<String>, data_type: DataType, semantic_type: SemanticType) -> Self {
        ColumnDef {
            name: name.into(),
            data_type,
            nullable: semantic_type != SemanticType::Timestamp,
            default_value: None,
            semantic_type,
            comment: String::new(),
        }
    }
}
