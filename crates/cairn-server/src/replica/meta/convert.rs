//! The edge between the `cairn.v1` wire types and the `cairn-meta` model: requests in, records
//! out, and the one table that maps a [`MetaError`] to a gRPC status.
//!
//! Conversions from the wire only translate (and fill meta.proto's documented defaults); the
//! rules live in `cairn-meta`, so a handler converts, then validates, then acts.

use std::collections::{BTreeMap, HashMap};

use cairn_meta::{
    AlterKind, ColumnDef, CreateTable, DataType, DatabaseInfo, LeaderState, MetaError,
    PartitionRule, ProcedureRecord, RangeBound, SemanticType, TableInfo, TableName, TableOptions,
    TableRoute,
};
use cairn_proto::cairnpb as pb;
use pb::alter_table_request::Kind;
use pb::partition_rule::Rule;
use tonic::{Code, Status};

/// A request's table name: missing is an error naming `field`; an empty catalog is "default".
/// The parts are checked against the name set, so a malformed name is reported as such rather
/// than as "not found".
pub fn table_name_from_proto(
    field: &str,
    name: Option<&pb::TableName>,
) -> Result<TableName, MetaError> {
    let n = name.ok_or_else(|| MetaError::invalid(field, "is missing"))?;
    let name = TableName::new(&n.catalog, &n.schema, &n.name).normalized();
    name.validate(field)?;
    Ok(name)
}

pub fn table_name_to_proto(name: &TableName) -> pb::TableName {
    pb::TableName {
        catalog: name.catalog.clone(),
        schema: name.schema.clone(),
        name: name.name.clone(),
    }
}

/// A column from the wire; `path` is its request path (`columns[3]`) and `unspecified` the
/// semantic type an unspecified one gets.
pub fn column_from_proto(
    path: &str,
    c: &pb::ColumnDef,
    unspecified: SemanticType,
) -> Result<ColumnDef, MetaError> {
    let data_type = DataType::parse(&c.data_type)
        .map_err(|reason| MetaError::invalid(format!("{path}.data_type"), reason))?;
    let semantic_type = match pb::SemanticType::try_from(c.semantic_type) {
        Ok(pb::SemanticType::Unspecified) => unspecified,
        Ok(pb::SemanticType::Tag) => SemanticType::Tag,
        Ok(pb::SemanticType::Field) => SemanticType::Field,
        Ok(pb::SemanticType::Timestamp) => SemanticType::Timestamp,
        Err(_) => {
            return Err(MetaError::invalid(
                format!("{path}.semantic_type"),
                format!("{} is not a known semantic type", c.semantic_type),
            ))
        }
    };
    Ok(ColumnDef {
        name: c.name.clone(),
        data_type,
        nullable: c.nullable,
        default_value: c.default_value.clone(),
        semantic_type,
        comment: c.comment.clone(),
    })
}

pub fn column_to_proto(c: &ColumnDef) -> pb::ColumnDef {
    let semantic_type = match c.semantic_type {
        SemanticType::Tag => pb::SemanticType::Tag,
        SemanticType::Field => pb::SemanticType::Field,
        SemanticType::Timestamp => pb::SemanticType::Timestamp,
    };
    pb::ColumnDef {
        name: c.name.clone(),
        data_type: c.data_type.to_string(),
        nullable: c.nullable,
        default_value: c.default_value.clone(),
        semantic_type: semantic_type as i32,
        comment: c.comment.clone(),
    }
}

/// A create-table request, converted but not yet validated (call `CreateTable::validate`).
///
/// A column with an unspecified semantic type is a field, except that the column `time_index`
/// names is the timestamp and primary-key columns are tags: clients may then leave semantic
/// types out entirely.
pub fn create_table_from_proto(req: &pb::CreateTableRequest) -> Result<CreateTable, MetaError> {
    let name = table_name_from_proto("name", req.name.as_ref())?;
    let columns = req
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let unspecified = if c.name == req.time_index {
                SemanticType::Timestamp
            } else if req.primary_key.contains(&c.name) {
                SemanticType::Tag
            } else {
                SemanticType::Field
            };
            column_from_proto(&format!("columns[{i}]"), c, unspecified)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CreateTable {
        name,
        columns,
        primary_key: req.primary_key.clone(),
        time_index: req.time_index.clone(),
        options: options_from_proto(req.options.as_ref()),
        partition: partition_from_proto(req.partition.as_ref()),
    })
}

pub fn options_from_proto(options: Option<&pb::TableOptions>) -> TableOptions {
    options.map_or_else(TableOptions::default, |o| TableOptions {
        ttl_seconds: o.ttl_seconds,
        extra: sorted(&o.extra),
    })
}

pub fn options_to_proto(options: &TableOptions) -> pb::TableOptions {
    pb::TableOptions {
        ttl_seconds: options.ttl_seconds,
        extra: unsorted(&options.extra),
    }
}

/// A partition rule from the wire: absent means none; an empty range bound is unbounded.
pub fn partition_from_proto(rule: Option<&pb::PartitionRule>) -> PartitionRule {
    let bound = |s: &String| (!s.is_empty()).then(|| s.clone());
    match rule.and_then(|r| r.rule.as_ref()) {
        None => PartitionRule::None,
        Some(Rule::Hash(h)) => PartitionRule::Hash {
            columns: h.columns.clone(),
            partitions: h.partitions,
        },
        Some(Rule::Range(r)) => PartitionRule::Range {
            column: r.column.clone(),
            ranges: r
                .ranges
                .iter()
                .map(|b| RangeBound {
                    start: bound(&b.start),
                    end: bound(&b.end),
                })
                .collect(),
        },
        Some(Rule::List(l)) => PartitionRule::List {
            column: l.column.clone(),
            lists: l.lists.iter().map(|v| v.values.clone()).collect(),
        },
    }
}

pub fn partition_to_proto(rule: &PartitionRule) -> pb::PartitionRule {
    let rule = match rule {
        PartitionRule::None => None,
        PartitionRule::Hash {
            columns,
            partitions,
        } => Some(Rule::Hash(pb::HashPartition {
            columns: columns.clone(),
            partitions: *partitions,
        })),
        PartitionRule::Range { column, ranges } => Some(Rule::Range(pb::RangePartition {
            column: column.clone(),
            ranges: ranges
                .iter()
                .map(|r| pb::RangeBound {
                    start: r.start.clone().unwrap_or_default(),
                    end: r.end.clone().unwrap_or_default(),
                })
                .collect(),
        })),
        PartitionRule::List { column, lists } => Some(Rule::List(pb::ListPartition {
            column: column.clone(),
            lists: lists
                .iter()
                .map(|values| pb::ListValues {
                    values: values.clone(),
                })
                .collect(),
        })),
    };
    pb::PartitionRule { rule }
}

pub fn table_info_to_proto(t: &TableInfo) -> pb::TableInfo {
    pb::TableInfo {
        id: t.id,
        name: Some(table_name_to_proto(&t.name)),
        columns: t.columns.iter().map(column_to_proto).collect(),
        primary_key: t.primary_key.clone(),
        time_index: t.time_index.clone(),
        options: Some(options_to_proto(&t.options)),
        partition: Some(partition_to_proto(&t.partition)),
        version: t.version,
        created_ms: t.created_ms,
        updated_ms: t.updated_ms,
        region_numbers: t.region_numbers.clone(),
    }
}

/// The change an alter request asks for. Added columns with an unspecified semantic type are
/// fields.
pub fn alter_kind_from_proto(req: &pb::AlterTableRequest) -> Result<AlterKind, MetaError> {
    let kind = req.kind.as_ref().ok_or_else(|| {
        MetaError::invalid(
            "kind",
            "is missing: set one of add_columns, drop_columns, rename_column, set_options, \
             rename_table",
        )
    })?;
    Ok(match kind {
        Kind::AddColumns(a) => AlterKind::AddColumns(
            a.columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    column_from_proto(&format!("add_columns.columns[{i}]"), c, SemanticType::Field)
                })
                .collect::<Result<_, _>>()?,
        ),
        Kind::DropColumns(d) => AlterKind::DropColumns(d.names.clone()),
        Kind::RenameColumn(r) => AlterKind::RenameColumn {
            from: r.from.clone(),
            to: r.to.clone(),
        },
        Kind::SetOptions(s) => {
            let ttl_seconds = match (s.ttl_seconds, s.clear_ttl) {
                (Some(_), true) => {
                    return Err(MetaError::invalid(
                        "set_options.clear_ttl",
                        "cannot be set together with ttl_seconds",
                    ))
                }
                (_, true) => Some(None),
                (Some(ttl), false) => Some(Some(ttl)),
                (None, false) => None,
            };
            AlterKind::SetOptions {
                ttl_seconds,
                set_extra: sorted(&s.set_extra),
                unset_extra: s.unset_extra.clone(),
            }
        }
        Kind::RenameTable(r) => AlterKind::RenameTable { to: r.to.clone() },
    })
}

pub fn route_to_proto(route: &TableRoute) -> pb::TableRoute {
    pb::TableRoute {
        table_id: route.table_id,
        version: route.version,
        regions: route.regions.iter().map(region_route_to_proto).collect(),
    }
}

pub fn region_route_to_proto(r: &cairn_meta::RegionRoute) -> pb::RegionRoute {
    pb::RegionRoute {
        region_id: r.region_id,
        leader_node: r.leader_node,
        follower_nodes: r.follower_nodes.clone(),
        leader_state: leader_state_to_proto(r.leader_state) as i32,
    }
}

pub fn leader_state_to_proto(state: LeaderState) -> pb::LeaderState {
    match state {
        LeaderState::Active => pb::LeaderState::Active,
        LeaderState::Downgrading => pb::LeaderState::Downgrading,
    }
}

pub fn database_to_proto(d: &DatabaseInfo) -> pb::DatabaseInfo {
    pb::DatabaseInfo {
        catalog: d.catalog.clone(),
        name: d.name.clone(),
        options: unsorted(&d.options),
        created_ms: d.created_ms,
    }
}

pub fn procedure_to_proto(p: &ProcedureRecord) -> pb::ProcedureView {
    pb::ProcedureView {
        id: p.id,
        kind: p.kind.clone(),
        target: p.target.clone(),
        state: p.state.as_str().to_string(),
        step: p.step.clone(),
        attempts: p.attempts,
        last_error: p.last_error.clone(),
        created_ms: p.created_ms,
        updated_ms: p.updated_ms,
    }
}

/// The gRPC status for a metadata error; the message is the error's text, which names the
/// field or key.
pub fn meta_error_to_status(e: &MetaError) -> Status {
    let code = match e {
        MetaError::Invalid { .. } => Code::InvalidArgument,
        MetaError::AlreadyExists { .. } => Code::AlreadyExists,
        MetaError::NotFound { .. } => Code::NotFound,
        MetaError::VersionConflict { .. } => Code::FailedPrecondition,
        MetaError::Corrupt { .. } => Code::DataLoss,
    };
    Status::new(code, e.to_string())
}

/// Maps from the wire in key order, so stored records and comparisons are deterministic.
pub fn sorted(map: &HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn unsorted(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_col(name: &str, data_type: &str, semantic: pb::SemanticType) -> pb::ColumnDef {
        pb::ColumnDef {
            name: name.into(),
            data_type: data_type.into(),
            nullable: name != "ts",
            default_value: None,
            semantic_type: semantic as i32,
            comment: String::new(),
        }
    }

    /// cpu(host, ts, usage) with every semantic type left unspecified.
    fn create_request() -> pb::CreateTableRequest {
        use pb::SemanticType::Unspecified;
        pb::CreateTableRequest {
            name: Some(pb::TableName {
                catalog: String::new(),
                schema: "public".into(),
                name: "cpu".into(),
            }),
            columns: vec![
                pb_col("host", "STRING", Unspecified),
                pb_col("ts", "timestamp", Unspecified),
                pb_col("usage", "float64", Unspecified),
            ],
            primary_key: vec!["host".into()],
            time_index: "ts".into(),
            options: Some(pb::TableOptions {
                ttl_seconds: Some(3600),
                extra: HashMap::from([("compaction".into(), "twcs".into())]),
            }),
            partition: Some(pb::PartitionRule {
                rule: Some(Rule::Range(pb::RangePartition {
                    column: "host".into(),
                    ranges: vec![
                        pb::RangeBound {
                            start: String::new(),
                            end: "m".into(),
                        },
                        pb::RangeBound {
                            start: "m".into(),
                            end: String::new(),
                        },
                    ],
                })),
            }),
            if_not_exists: false,
        }
    }

    fn invalid_text(r: Result<impl std::fmt::Debug, MetaError>) -> String {
        r.expect_err("expected a refusal").to_string()
    }

    #[test]
    fn table_names() {
        assert_eq!(
            invalid_text(table_name_from_proto("name", None)),
            "name: is missing"
        );
        let n = pb::TableName {
            catalog: String::new(),
            schema: "s".into(),
            name: "t".into(),
        };
        let name = table_name_from_proto("name", Some(&n)).unwrap();
        assert_eq!(name, TableName::new("default", "s", "t"));
        assert_eq!(table_name_to_proto(&name).catalog, "default");
        let bad = pb::TableName {
            schema: "a/b".into(),
            ..n
        };
        assert!(invalid_text(table_name_from_proto("name", Some(&bad)))
            .starts_with("name.schema: contains '/'"));
    }

    #[test]
    fn unspecified_semantic_types_follow_the_key_and_time_index() {
        let create = create_table_from_proto(&create_request()).unwrap();
        let semantic: Vec<_> = create.columns.iter().map(|c| c.semantic_type).collect();
        assert_eq!(
            semantic,
            [
                SemanticType::Tag,
                SemanticType::Timestamp,
                SemanticType::Field
            ]
        );
        create.validate().unwrap();
        // An explicit type wins over the defaults.
        let mut req = create_request();
        req.columns[2].semantic_type = pb::SemanticType::Tag as i32;
        let create = create_table_from_proto(&req).unwrap();
        assert_eq!(create.columns[2].semantic_type, SemanticType::Tag);
    }

    #[test]
    fn unknown_types_name_the_field() {
        let mut req = create_request();
        req.columns[2].data_type = "varchar(10)".into();
        let text = invalid_text(create_table_from_proto(&req));
        assert!(
            text.starts_with("columns[2].data_type: unknown data type \"varchar(10)\""),
            "{text}"
        );
        let mut req = create_request();
        req.columns[0].semantic_type = 9;
        assert_eq!(
            invalid_text(create_table_from_proto(&req)),
            "columns[0].semantic_type: 9 is not a known semantic type"
        );
        let mut req = create_request();
        req.name = None;
        assert_eq!(
            invalid_text(create_table_from_proto(&req)),
            "name: is missing"
        );
    }

    #[test]
    fn create_request_round_trips_through_table_info() {
        let req = create_request();
        let create = create_table_from_proto(&req).unwrap();
        assert_eq!(
            create.partition,
            PartitionRule::Range {
                column: "host".into(),
                ranges: vec![
                    RangeBound {
                        start: None,
                        end: Some("m".into())
                    },
                    RangeBound {
                        start: Some("m".into()),
                        end: None
                    },
                ],
            }
        );
        let info = create.into_table_info(1024, 5);
        let out = table_info_to_proto(&info);
        assert_eq!(out.id, 1024);
        assert_eq!(out.name.as_ref().unwrap().catalog, "default");
        assert_eq!(
            out.columns[0].data_type, "string",
            "answered in canonical form"
        );
        assert_eq!(out.columns[1].data_type, "timestamp(3)");
        assert_eq!(
            out.columns[1].semantic_type,
            pb::SemanticType::Timestamp as i32
        );
        assert_eq!(out.options, req.options);
        assert_eq!(out.partition, req.partition);
        assert_eq!(
            (out.version, out.created_ms, out.region_numbers.len()),
            (1, 5, 2)
        );
        // And back: the answer is itself a valid request.
        let again = pb::CreateTableRequest {
            name: out.name.clone(),
            columns: out.columns.clone(),
            primary_key: out.primary_key.clone(),
            time_index: out.time_index.clone(),
            options: out.options.clone(),
            partition: out.partition.clone(),
            if_not_exists: false,
        };
        assert_eq!(
            create_table_from_proto(&again)
                .unwrap()
                .into_table_info(1024, 5),
            info
        );
    }

    #[test]
    fn partition_rules_round_trip() {
        let rules = [
            PartitionRule::None,
            PartitionRule::Hash {
                columns: vec!["a".into(), "b".into()],
                partitions: 8,
            },
            PartitionRule::List {
                column: "a".into(),
                lists: vec![vec!["x".into(), "y".into()], vec!["z".into()]],
            },
            PartitionRule::Range {
                column: "a".into(),
                ranges: vec![RangeBound {
                    start: Some("1".into()),
                    end: None,
                }],
            },
        ];
        for rule in rules {
            assert_eq!(partition_from_proto(Some(&partition_to_proto(&rule))), rule);
        }
        assert_eq!(partition_from_proto(None), PartitionRule::None);
    }

    fn alter(kind: Kind) -> pb::AlterTableRequest {
        pb::AlterTableRequest {
            name: None,
            expected_version: 0,
            kind: Some(kind),
        }
    }

    #[test]
    fn alter_kinds() {
        let add = alter(Kind::AddColumns(pb::AddColumns {
            columns: vec![pb_col("mem", "int64", pb::SemanticType::Unspecified)],
        }));
        let AlterKind::AddColumns(cols) = alter_kind_from_proto(&add).unwrap() else {
            panic!()
        };
        assert_eq!(cols[0].semantic_type, SemanticType::Field);
        let bad = alter(Kind::AddColumns(pb::AddColumns {
            columns: vec![pb_col("mem", "int65", pb::SemanticType::Field)],
        }));
        assert!(invalid_text(alter_kind_from_proto(&bad))
            .starts_with("add_columns.columns[0].data_type: unknown data type \"int65\""));
        assert_eq!(
            alter_kind_from_proto(&alter(Kind::DropColumns(pb::DropColumns {
                names: vec!["a".into()]
            })))
            .unwrap(),
            AlterKind::DropColumns(vec!["a".into()])
        );
        assert_eq!(
            alter_kind_from_proto(&alter(Kind::RenameColumn(pb::RenameColumn {
                from: "a".into(),
                to: "b".into()
            })))
            .unwrap(),
            AlterKind::RenameColumn {
                from: "a".into(),
                to: "b".into()
            }
        );
        assert_eq!(
            alter_kind_from_proto(&alter(Kind::RenameTable(pb::RenameTable {
                to: "t2".into()
            })))
            .unwrap(),
            AlterKind::RenameTable { to: "t2".into() }
        );
        let missing = pb::AlterTableRequest {
            name: None,
            expected_version: 0,
            kind: None,
        };
        assert!(invalid_text(alter_kind_from_proto(&missing)).starts_with("kind: is missing"));
    }

    #[test]
    fn set_options_ttl_forms() {
        let set = |ttl: Option<u64>, clear: bool| {
            alter_kind_from_proto(&alter(Kind::SetOptions(pb::SetOptions {
                ttl_seconds: ttl,
                clear_ttl: clear,
                set_extra: HashMap::from([("k".into(), "v".into())]),
                unset_extra: vec!["old".into()],
            })))
        };
        let AlterKind::SetOptions {
            ttl_seconds,
            set_extra,
            unset_extra,
        } = set(Some(60), false).unwrap()
        else {
            panic!()
        };
        assert_eq!(ttl_seconds, Some(Some(60)));
        assert_eq!(set_extra, BTreeMap::from([("k".into(), "v".into())]));
        assert_eq!(unset_extra, ["old"]);
        let AlterKind::SetOptions { ttl_seconds, .. } = set(None, true).unwrap() else {
            panic!()
        };
        assert_eq!(ttl_seconds, Some(None));
        let AlterKind::SetOptions { ttl_seconds, .. } = set(None, false).unwrap() else {
            panic!()
        };
        assert_eq!(ttl_seconds, None);
        assert_eq!(
            invalid_text(set(Some(1), true)),
            "set_options.clear_ttl: cannot be set together with ttl_seconds"
        );
    }

    #[test]
    fn routes_databases_and_procedures() {
        let route = TableRoute {
            table_id: 3,
            version: 4,
            regions: vec![
                cairn_meta::RegionRoute {
                    region_id: 3 << 32,
                    leader_node: 1,
                    follower_nodes: vec![2],
                    leader_state: LeaderState::Active,
                },
                cairn_meta::RegionRoute {
                    region_id: (3 << 32) | 1,
                    leader_node: 2,
                    follower_nodes: vec![],
                    leader_state: LeaderState::Downgrading,
                },
            ],
        };
        let out = route_to_proto(&route);
        assert_eq!((out.table_id, out.version), (3, 4));
        assert_eq!(out.regions[0].follower_nodes, [2]);
        assert_eq!(out.regions[0].leader_state, pb::LeaderState::Active as i32);
        assert_eq!(
            out.regions[1].leader_state,
            pb::LeaderState::Downgrading as i32
        );

        let db = DatabaseInfo {
            catalog: "default".into(),
            name: "public".into(),
            options: BTreeMap::from([("k".into(), "v".into())]),
            created_ms: 9,
        };
        let out = database_to_proto(&db);
        assert_eq!(out.options["k"], "v");
        assert_eq!((out.catalog.as_str(), out.created_ms), ("default", 9));

        let p = ProcedureRecord {
            id: 7,
            kind: "create_table".into(),
            target: "default.public.cpu".into(),
            state: cairn_meta::ProcedureState::Failed,
            step: "open_regions".into(),
            attempts: 3,
            last_error: "boom".into(),
            created_ms: 1,
            updated_ms: 2,
            locks: vec![],
            opening_tables: vec![],
            data: Default::default(),
        };
        let out = procedure_to_proto(&p);
        assert_eq!(out.state, "failed");
        assert_eq!(
            (out.id, out.attempts, out.last_error.as_str()),
            (7, 3, "boom")
        );
    }

    #[test]
    fn errors_map_to_codes_with_their_text() {
        let cases = [
            (
                MetaError::invalid("columns[0].name", "bad"),
                Code::InvalidArgument,
            ),
            (
                MetaError::AlreadyExists {
                    what: "table a.b.c".into(),
                },
                Code::AlreadyExists,
            ),
            (
                MetaError::NotFound {
                    what: "table a.b.c".into(),
                },
                Code::NotFound,
            ),
            (
                MetaError::VersionConflict {
                    what: "table a.b.c".into(),
                    expected: 1,
                    current: 2,
                },
                Code::FailedPrecondition,
            ),
            (
                MetaError::Corrupt {
                    key: "/cairn/default/table/1".into(),
                    reason: "eof".into(),
                },
                Code::DataLoss,
            ),
        ];
        for (e, code) in cases {
            let status = meta_error_to_status(&e);
            assert_eq!(status.code(), code, "{e}");
            assert_eq!(status.message(), e.to_string());
        }
    }
}
