//! Column data types: the text grammar of `ColumnDef.data_type` in meta.proto, its canonical
//! form, and which types may be used to partition a table.
//!
//! Types are stored and shown in their canonical lower-case text ("decimal(10,2)"), so a stored
//! table reads the same in etcdctl as in the API.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest decimal precision (`decimal_precision_max`): the digits an `i128` holds exactly.
pub const DECIMAL_PRECISION_MAX: u8 = 38;
/// Largest vector dimension (`vector_dim_max`).
pub const VECTOR_DIM_MAX: u32 = 16384;
/// Timestamp precisions accepted: seconds, milliseconds, microseconds, nanoseconds.
pub const TIMESTAMP_PRECISIONS: [u8; 4] = [0, 3, 6, 9];
/// The precision of a bare `timestamp`: milliseconds, the unit the rest of Cairn uses.
pub const TIMESTAMP_PRECISION_DEFAULT: u8 = 3;

const KNOWN_TYPES: &str = "int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, \
     float64, bool, string, binary, date, timestamp(P) with P one of 0, 3, 6, 9, decimal(P,S), \
     json, vector(DIM)";

/// The type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum DataType {
    Int8,
    Int16,
    Int32,
    Int64,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float32,
    Float64,
    Bool,
    String,
    Binary,
    /// Calendar day, "YYYY-MM-DD".
    Date,
    /// Time since the Unix epoch in units of 10^-precision seconds.
    Timestamp {
        precision: u8,
    },
    /// Fixed point: `precision` digits in all, `scale` of them after the point.
    Decimal {
        precision: u8,
        scale: u8,
    },
    Json,
    /// Fixed-size vector of float32, for embeddings.
    Vector {
        dim: u32,
    },
}

/// Types that take no arguments, by their canonical name.
const SIMPLE: [(&str, DataType); 16] = [
    ("int8", DataType::Int8),
    ("int16", DataType::Int16),
    ("int32", DataType::Int32),
    ("int64", DataType::Int64),
    ("uint8", DataType::UInt8),
    ("uint16", DataType::UInt16),
    ("uint32", DataType::UInt32),
    ("uint64", DataType::UInt64),
    ("float32", DataType::Float32),
    ("float64", DataType::Float64),
    ("bool", DataType::Bool),
    ("string", DataType::String),
    ("binary", DataType::Binary),
    ("date", DataType::Date),
    ("json", DataType::Json),
    (
        "timestamp",
        DataType::Timestamp {
            precision: TIMESTAMP_PRECISION_DEFAULT,
        },
    ),
];

impl DataType {
    /// Parses the grammar of meta.proto's `ColumnDef.data_type`: case-insensitive, whitespace
    /// allowed around the name and inside the parentheses. The error says what was wrong and
    /// lists the known types.
    pub fn parse(s: &str) -> Result<DataType, String> {
        let text = s.trim();
        let (name, args) = match text.find('(') {
            None => (text, None),
            Some(open) => {
                let Some(inner) = text[open + 1..].strip_suffix(')') else {
                    return Err(format!("{s:?}: expected ')' at the end"));
                };
                (text[..open].trim(), Some(inner))
            }
        };
        let name = name.to_ascii_lowercase();
        let args: Vec<&str> = args.map_or_else(Vec::new, |a| a.split(',').map(str::trim).collect());
        match (name.as_str(), args.as_slice()) {
            ("timestamp", [p]) => {
                let precision = number(s, "timestamp precision", p)?;
                match u8::try_from(precision) {
                    Ok(p) if TIMESTAMP_PRECISIONS.contains(&p) => {
                        Ok(DataType::Timestamp { precision: p })
                    }
                    _ => Err(format!(
                        "{s:?}: timestamp precision {precision} is not one of 0, 3, 6, 9"
                    )),
                }
            }
            ("decimal", [p, sc]) => {
                let precision = number(s, "decimal precision", p)?;
                let scale = number(s, "decimal scale", sc)?;
                if !(1..=u32::from(DECIMAL_PRECISION_MAX)).contains(&precision) {
                    return Err(format!(
                        "{s:?}: decimal precision {precision} is outside 1..={DECIMAL_PRECISION_MAX} \
                         (decimal_precision_max)"
                    ));
                }
                if scale > precision {
                    return Err(format!(
                        "{s:?}: decimal scale {scale} is larger than its precision {precision}"
                    ));
                }
                // Both fit in u8: precision <= 38 was checked and scale <= precision.
                Ok(DataType::Decimal {
                    precision: precision as u8,
                    scale: scale as u8,
                })
            }
            ("vector", [d]) => {
                let dim = number(s, "vector dimension", d)?;
                if !(1..=VECTOR_DIM_MAX).contains(&dim) {
                    return Err(format!(
                        "{s:?}: vector dimension {dim} is outside 1..={VECTOR_DIM_MAX} (vector_dim_max)"
                    ));
                }
                Ok(DataType::Vector { dim })
            }
            ("timestamp", args) if !args.is_empty() => Err(format!(
                "{s:?}: timestamp takes one argument, the precision"
            )),
            ("decimal", _) => Err(format!(
                "{s:?}: decimal takes two arguments, decimal(precision,scale)"
            )),
            ("vector", _) => Err(format!("{s:?}: vector takes one argument, vector(dim)")),
            (n, args) => match SIMPLE.iter().find(|(known, _)| *known == n) {
                Some((_, t)) if args.is_empty() => Ok(*t),
                Some(_) => Err(format!("{s:?}: {n} takes no arguments")),
                None => Err(format!(
                    "unknown data type {s:?}; known types are {KNOWN_TYPES}"
                )),
            },
        }
    }

    /// Whether values of this type have an order range partitions can split on.
    pub fn is_orderable(&self) -> bool {
        !matches!(
            self,
            DataType::Bool | DataType::Binary | DataType::Json | DataType::Vector { .. }
        )
    }

    /// Whether values of this type can be hashed or listed: floats are excluded because equal
    /// numbers can have different text and rounding would move rows between regions.
    pub fn is_hashable(&self) -> bool {
        !matches!(
            self,
            DataType::Float32 | DataType::Float64 | DataType::Json | DataType::Vector { .. }
        )
    }
}

/// Parses an argument inside the type's parentheses.
fn number(input: &str, what: &str, arg: &str) -> Result<u32, String> {
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{input:?}: {what} {arg:?} is not a number"));
    }
    arg.parse::<u32>()
        .map_err(|_| format!("{input:?}: {what} {arg} is too large"))
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Timestamp { precision } => write!(f, "timestamp({precision})"),
            DataType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            DataType::Vector { dim } => write!(f, "vector({dim})"),
            simple => {
                let name = SIMPLE
                    .iter()
                    .find(|(_, t)| t == simple)
                    .map(|(n, _)| *n)
                    .expect("every argument-free type is in SIMPLE");
                f.write_str(name)
            }
        }
    }
}

impl FromStr for DataType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::parse(s)
    }
}

impl From<DataType> for String {
    fn from(t: DataType) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for DataType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        DataType::parse(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_types() -> Vec<DataType> {
        let mut all: Vec<DataType> = SIMPLE.iter().map(|(_, t)| *t).collect();
        all.extend(TIMESTAMP_PRECISIONS.map(|precision| DataType::Timestamp { precision }));
        all.push(DataType::Decimal {
            precision: 10,
            scale: 2,
        });
        all.push(DataType::Decimal {
            precision: 38,
            scale: 38,
        });
        all.push(DataType::Decimal {
            precision: 1,
            scale: 0,
        });
        all.push(DataType::Vector { dim: 1 });
        all.push(DataType::Vector {
            dim: VECTOR_DIM_MAX,
        });
        all
    }

    #[test]
    fn display_parse_round_trip_for_every_type() {
        for t in all_types() {
            let text = t.to_string();
            assert_eq!(DataType::parse(&text), Ok(t), "{text}");
            assert_eq!(DataType::parse(&text.to_uppercase()), Ok(t), "{text}");
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("{text:?}"));
            assert_eq!(serde_json::from_str::<DataType>(&json).unwrap(), t);
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(DataType::Int64.to_string(), "int64");
        assert_eq!(DataType::UInt8.to_string(), "uint8");
        assert_eq!(
            DataType::parse("timestamp").unwrap().to_string(),
            "timestamp(3)"
        );
        assert_eq!(
            DataType::parse("  Decimal ( 10 , 2 ) ")
                .unwrap()
                .to_string(),
            "decimal(10,2)"
        );
        assert_eq!(
            DataType::parse("VECTOR(128)").unwrap().to_string(),
            "vector(128)"
        );
        assert_eq!(
            DataType::parse("TimeStamp( 9 )").unwrap().to_string(),
            "timestamp(9)"
        );
    }

    #[test]
    fn errors_say_what_was_wrong() {
        let unknown = DataType::parse("varchar").unwrap_err();
        assert!(
            unknown.starts_with("unknown data type \"varchar\"; known types are int8"),
            "{unknown}"
        );
        assert!(unknown.contains("vector(DIM)"));
        let cases = [
            (
                "timestamp(4)",
                "timestamp precision 4 is not one of 0, 3, 6, 9",
            ),
            ("timestamp(x)", "timestamp precision \"x\" is not a number"),
            ("timestamp(3,1)", "timestamp takes one argument"),
            (
                "decimal(39,2)",
                "decimal precision 39 is outside 1..=38 (decimal_precision_max)",
            ),
            ("decimal(0,0)", "decimal precision 0 is outside"),
            (
                "decimal(5,6)",
                "decimal scale 6 is larger than its precision 5",
            ),
            ("decimal", "decimal takes two arguments"),
            ("decimal(10)", "decimal takes two arguments"),
            (
                "vector(0)",
                "vector dimension 0 is outside 1..=16384 (vector_dim_max)",
            ),
            ("vector(16385)", "vector dimension 16385 is outside"),
            ("vector", "vector takes one argument"),
            (
                "vector(99999999999)",
                "vector dimension 99999999999 is too large",
            ),
            ("int64(3)", "int64 takes no arguments"),
            ("decimal(10,2", "expected ')' at the end"),
            ("decimal(-1,2)", "decimal precision \"-1\" is not a number"),
        ];
        for (input, want) in cases {
            let err = DataType::parse(input).unwrap_err();
            assert!(err.contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn orderable_and_hashable_sets() {
        use DataType::*;
        for t in all_types() {
            let orderable = !matches!(t, Bool | Binary | Json | Vector { .. });
            assert_eq!(t.is_orderable(), orderable, "{t}");
        }
        assert!(Decimal {
            precision: 3,
            scale: 1
        }
        .is_orderable());
        assert!(!Bool.is_orderable() && !Binary.is_orderable() && String.is_orderable());
        for t in all_types() {
            let hashable = !matches!(t, Float32 | Float64 | Json | Vector { .. });
            assert_eq!(t.is_hashable(), hashable, "{t}");
        }
    }
}
