//! How records are stored: JSON, so an operator can read any key with etcdctl. A record that
//! does not decode is reported with its key, so it can be found and repaired.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::MetaError;

/// Encodes a record as JSON.
///
/// Panics only if `T`'s `Serialize` fails, which the metadata types cannot (no maps with
/// non-string keys, no fallible custom serializers): a panic here is a programming error.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata records always serialize to JSON")
}

/// Decodes the record stored at `key`; a failure is [`MetaError::Corrupt`] naming the key.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, MetaError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e.to_string()))
}

/// The words Cairn's own JSON records are made of: field and variant names, type names and
/// common values, for compressing records against. A record of a few hundred bytes repeats
/// little of itself but much of this: a table info of three columns goes from 552 bytes to 139
/// with it in LZ4, to 389 without (BENCHMARKS.md, issue 12). cairn-store holds large values
/// compressed with it, and its snapshots carry them so, with these words beside them: a build
/// with other words unpacks them with the snapshot's. So this may change from one build to the
/// next. Most common last: the nearest match is found first.
pub const VOCABULARY: &[u8] = b"{\"start\":\"\",\"end\":\"\"}\
{\"list\":{\"column\":\"\",\"lists\":[[\"\"]]}}{\"range\":{\"column\":\"\",\"ranges\":[\
\"default_value\":\"\",\"comment\":\"\",\"ttl_seconds\":,\"extra\":{\"\":\"\"}\
\"data_type\":\"int8\"int16\"int32\"int64\"uint8\"uint16\"uint32\"uint64\"float32\
\"date\"binary\"boolean\"json\"timestamp(0)\"timestamp(6)\"timestamp(9)\
,\"s\":\"downgrading\"},{\"id\":,\"l\":,\"f\":[]},{\"id\":,\"l\":,\"f\":[,]},{\"id\":\
{\"t\":,\"v\":1,\"r\":[{\"id\":\
{\"name\":\"\",\"data_type\":\"float64\",\"nullable\":true,\"semantic_type\":\"field\"}\
{\"name\":\"\",\"data_type\":\"string\",\"nullable\":false,\"semantic_type\":\"tag\"}\
{\"name\":\"\",\"data_type\":\"timestamp(3)\",\"nullable\":false,\"semantic_type\":\"timestamp\"}],\
\"primary_key\":[\"\"],\"time_index\":\"\",\"options\":{},\"partition\":{\"hash\":{\"columns\":[\"\
\"],\"partitions\":},\"version\":1,\"created_ms\":,\"updated_ms\":,\
\"region_numbers\":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}\
{\"id\":,\"name\":{\"catalog\":\"default\",\"schema\":\"public\",\"name\":\"\"},\"columns\":[{\"name\":\"";

/// The value of a table-name key: the table id as decimal text.
pub fn encode_table_id(id: u64) -> Vec<u8> {
    id.to_string().into_bytes()
}

/// Reads the value of a table-name key.
pub fn decode_table_id(key: &[u8], bytes: &[u8]) -> Result<u64, MetaError> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            corrupt(
                key,
                format!(
                    "expected a table id in decimal, found {:?}",
                    String::from_utf8_lossy(bytes)
                ),
            )
        })
}

fn corrupt(key: &[u8], reason: String) -> MetaError {
    MetaError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{LeaderState, RegionRoute, TableRoute};

    /// Table 1's route at version 2: one region, led by node 3.
    fn one_region_route(follower_nodes: Vec<u64>, leader_state: LeaderState) -> TableRoute {
        TableRoute {
            table_id: 1,
            version: 2,
            regions: vec![RegionRoute {
                region_id: 1 << 32,
                leader_node: 3,
                follower_nodes,
                leader_state,
            }],
        }
    }

    #[test]
    fn records_round_trip_as_readable_json() {
        let route = one_region_route(vec![], LeaderState::Active);
        let bytes = encode(&route);
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"t":1,"v":2,"r":[{"id":4294967296,"l":3}]}"#
        );
        assert_eq!(decode::<TableRoute>(b"k", &bytes).unwrap(), route);
    }

    #[test]
    fn corrupt_records_name_the_key() {
        let err = decode::<TableRoute>(b"/cairn/default/route/1", b"{\"t\":").unwrap_err();
        let MetaError::Corrupt { key, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(key, "/cairn/default/route/1");
        assert!(err
            .to_string()
            .starts_with("corrupt metadata at /cairn/default/route/1: "));
    }

    #[test]
    fn table_ids_are_decimal_text() {
        assert_eq!(encode_table_id(1024), b"1024".to_vec());
        assert_eq!(decode_table_id(b"k", b"1024").unwrap(), 1024);
        assert_eq!(
            decode_table_id(b"k", &encode_table_id(u64::MAX)).unwrap(),
            u64::MAX
        );
        for bad in [
            &b""[..],
            b"-1",
            b"12a",
            b" 1",
            b"18446744073709551616",
            b"\xff",
        ] {
            let err = decode_table_id(b"/cairn/default/table_name/a/b/c", bad).unwrap_err();
            assert!(
                err.to_string().starts_with(
                    "corrupt metadata at /cairn/default/table_name/a/b/c: expected a table id"
                ),
                "{err}"
            );
        }
    }

    /// Every field name of the table and route records is in the vocabulary, so that a
    /// record's names compress against it (a name left out costs memory, not correctness).
    #[test]
    fn the_vocabulary_names_every_field_of_the_big_records() {
        use crate::partition::{PartitionRule, RangeBound};
        fn names(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        out.push(format!("\"{k}\":"));
                        // The extra options' names are the user's, not the record's.
                        if k != "extra" {
                            names(v, out);
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| names(v, out)),
                _ => {}
            }
        }
        let mut info = crate::test_support::cpu_info();
        info.columns[0].comment = "c".into();
        info.columns[0].default_value = Some("d".into());
        info.options.ttl_seconds = Some(60);
        info.options.extra.insert("x".into(), "y".into());
        let mut ranged = info.clone();
        ranged.partition = PartitionRule::Range {
            column: "host".into(),
            ranges: vec![RangeBound {
                start: Some("a".into()),
                end: Some("b".into()),
            }],
        };
        let mut listed = info.clone();
        listed.partition = PartitionRule::List {
            column: "host".into(),
            lists: vec![vec!["a".into()]],
        };
        info.partition = PartitionRule::Hash {
            columns: vec!["host".into()],
            partitions: 2,
        };
        let route = one_region_route(vec![4], LeaderState::Downgrading);
        let mut all = Vec::new();
        for bytes in [
            encode(&info),
            encode(&ranged),
            encode(&listed),
            encode(&route),
        ] {
            names(&serde_json::from_slice(&bytes).unwrap(), &mut all);
        }
        let vocabulary = String::from_utf8(VOCABULARY.to_vec()).unwrap();
        let missing: Vec<&String> = all.iter().filter(|n| !vocabulary.contains(*n)).collect();
        assert!(missing.is_empty(), "not in VOCABULARY: {missing:?}");
    }
}
