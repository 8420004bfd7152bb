//! DDL in process: databases and tables created, described, listed, altered, truncated and
//! dropped through `cairn.v1.Meta`, with regions opened and closed on real heartbeating
//! datanodes; bad input refused by field; placement, routes, procedures and the metadata watch.

mod common;

use cairn_client::meta::{
    HeartbeatHandle, HeartbeatOptions, InstructionHandler, MetaClient, StatsSource,
};
use cairn_proto::cairnpb::alter_table_request::Kind as AlterKind;
use cairn_proto::cairnpb::instruction::Kind;
use cairn_proto::cairnpb::meta_client::MetaClient as MetaRpc;
use cairn_proto::cairnpb::partition_rule::Rule;
use cairn_proto::cairnpb::*;
use cairn_server::ServerConfig;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

const INTERVAL_MS: u64 = 100;

fn fast(c: &mut ServerConfig) {
    c.node_heartbeat_interval_ms = INTERVAL_MS;
    c.node_lease_ms = Some(400);
}

/// A datanode that keeps the regions it is told to open, and counts truncations.
#[derive(Default)]
struct Datanode {
    regions: Mutex<BTreeMap<u64, bool>>,
    truncated: Mutex<Vec<u64>>,
}

impl StatsSource for Datanode {
    fn collect(&self, _interval: u64) -> (NodeStats, Vec<RegionStat>) {
        let regions = self.regions.lock().unwrap();
        let stats = regions
            .iter()
            .map(|(id, leader)| RegionStat {
                region_id: *id,
                role: if *leader {
                    RegionRole::Leader
                } else {
                    RegionRole::Follower
                } as i32,
                ..Default::default()
            })
            .collect();
        (
            NodeStats {
                region_count: regions.len() as u64,
                ..Default::default()
            },
            stats,
        )
    }
}

impl InstructionHandler for Datanode {
    async fn handle(&self, instruction: Instruction) -> Result<(), String> {
        let mut regions = self.regions.lock().unwrap();
        match instruction.kind {
            Some(Kind::OpenRegions(o)) => {
                for r in o.regions {
                    regions.insert(r.region_id, r.as_leader);
                }
            }
            Some(Kind::CloseRegions(c)) => {
                for id in c.region_ids {
                    regions.remove(&id);
                }
            }
            Some(Kind::TruncateRegions(t)) => {
                for id in &t.region_ids {
                    if !regions.contains_key(id) {
                        return Err(format!("region {id} is not open here"));
                    }
                }
                self.truncated.lock().unwrap().extend(t.region_ids);
            }
            _ => {}
        }
        Ok(())
    }
}

struct Fixture {
    cluster: TestCluster,
    datanodes: Vec<(u64, Arc<Datanode>, HeartbeatHandle)>,
}

impl Fixture {
    /// `n` Cairn nodes and one datanode per entry of `zones`.
    async fn start(n: u64, zones: &[&str], tweak: impl Fn(&mut ServerConfig)) -> Fixture {
        let cluster = TestCluster::start(n, |c| {
            fast(c);
            tweak(c)
        })
        .await;
        let endpoints: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
        let client = MetaClient::new(endpoints).unwrap();
        let mut datanodes = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            let id = 100 + i as u64;
            let dn = Arc::new(Datanode::default());
            let identity = NodeIdentity {
                id,
                role: NodeRole::Datanode as i32,
                address: format!("127.0.0.1:{}", 20000 + i),
                labels: [("zone".to_string(), zone.to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            };
            let h = client.run_heartbeat_with(
                identity,
                dn.clone(),
                dn.clone(),
                HeartbeatOptions {
                    interval_ms: INTERVAL_MS,
                    ..Default::default()
                },
            );
            datanodes.push((id, dn, h));
        }
        let f = Fixture { cluster, datanodes };
        f.wait_alive(zones.len()).await;
        f
    }

    async fn rpc(&self, i: usize) -> MetaRpc<Channel> {
        MetaRpc::new(channel(&self.cluster.nodes[i].client_addr()).await)
    }

    async fn leader_rpc(&self) -> MetaRpc<Channel> {
        let id = self.cluster.wait_leader().await;
        self.rpc(self.cluster.index_of(id)).await
    }

    async fn wait_alive(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let id = self.cluster.wait_leader().await;
            let node = self.cluster.nodes[self.cluster.index_of(id)].node().await;
            let alive = node
                .heartbeats
                .views(0, Instant::now())
                .iter()
                .filter(|v| v.state == "alive")
                .count();
            if alive >= n {
                return;
            }
            assert!(Instant::now() < deadline, "datanodes did not come alive");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Region id -> (node, as leader) over every datanode.
    fn held(&self) -> BTreeMap<u64, Vec<(u64, bool)>> {
        let mut out: BTreeMap<u64, Vec<(u64, bool)>> = BTreeMap::new();
        for (id, dn, _) in &self.datanodes {
            for (r, leader) in dn.regions.lock().unwrap().iter() {
                out.entry(*r).or_default().push((*id, *leader));
            }
        }
        out
    }
}

fn name(schema: &str, table: &str) -> Option<TableName> {
    Some(TableName {
        catalog: String::new(),
        schema: schema.into(),
        name: table.into(),
    })
}

fn col(name: &str, ty: &str, sem: SemanticType) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        data_type: ty.into(),
        nullable: sem == SemanticType::Field,
        semantic_type: sem as i32,
        ..Default::default()
    }
}

/// A cpu table: host (tag), ts (time index), usage (field), hashed on host into `parts`.
fn cpu_table(schema: &str, table: &str, parts: u32) -> CreateTableRequest {
    CreateTableRequest {
        name: name(schema, table),
        columns: vec![
            col("host", "string", SemanticType::Tag),
            col("ts", "timestamp(3)", SemanticType::Timestamp),
            col("usage", "float64", SemanticType::Field),
        ],
        primary_key: vec!["host".into()],
        time_index: "ts".into(),
        partition: (parts > 1).then(|| PartitionRule {
            rule: Some(Rule::Hash(HashPartition {
                columns: vec!["host".into()],
                partitions: parts,
            })),
        }),
        ..Default::default()
    }
}

async fn create_db(rpc: &mut MetaRpc<Channel>, db: &str) {
    rpc.create_database(CreateDatabaseRequest {
        name: db.into(),
        ..Default::default()
    })
    .await
    .expect("create database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_describe_route_and_drop_a_table() {
    let f = Fixture::start(1, &["a", "a", "a"], |_| {}).await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "metrics").await;

    let created = rpc
        .create_table(cpu_table("metrics", "cpu", 8))
        .await
        .expect("create table")
        .into_inner();
    let table = created.table.expect("table in answer");
    assert!(
        table.id >= 1024,
        "table ids start at 1024, got {}",
        table.id
    );
    assert_eq!(table.version, 1);
    assert_eq!(table.region_numbers, (0..8).collect::<Vec<u32>>());
    assert!(created.procedure_id > 0);

    // Every region is open on exactly the datanode its route names, as leader.
    let d = rpc
        .describe_table(DescribeTableRequest {
            name: name("metrics", "cpu"),
            serializable: false,
        })
        .await
        .unwrap()
        .into_inner();
    let route = d.route.expect("route");
    assert_eq!(route.regions.len(), 8);
    let held = f.held();
    for r in &route.regions {
        assert_eq!(r.region_id >> 32, table.id);
        assert_eq!(held.get(&r.region_id), Some(&vec![(r.leader_node, true)]));
    }
    assert_eq!(
        held.len(),
        8,
        "no region is open that the route does not name"
    );
    // Load-based placement spreads 8 regions over 3 equal nodes: 3/3/2.
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for r in &route.regions {
        *per_node.entry(r.leader_node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "{per_node:?}");
    assert!(
        per_node.values().all(|n| (2..=3).contains(n)),
        "{per_node:?}"
    );

    // Once the datanodes report their regions, every one is confirmed by the route.
    let registry_client = MetaClient::new([f.cluster.nodes[0].client_addr()]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let views = registry_client.list_nodes(0).await.unwrap().nodes;
        let reported: u64 = views.iter().map(|v| v.region_count).sum();
        let unverified: u64 = views.iter().map(|v| v.unverified_region_count).sum();
        if reported == 8 {
            assert_eq!(unverified, 0, "{views:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "regions never reported: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // GetRoutes answers with the same route and the datanodes' addresses.
    let routes = rpc
        .get_routes(GetRoutesRequest {
            table_ids: vec![table.id, 999_999],
            serializable: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(routes.routes, vec![route.clone()]);
    assert_eq!(routes.missing_table_ids, vec![999_999]);
    assert_eq!(routes.nodes.len(), 3);
    assert!(routes
        .nodes
        .iter()
        .all(|n| n.address.starts_with("127.0.0.1:")));

    // Creating it again: AlreadyExists, or the existing table with if_not_exists.
    let again = rpc.create_table(cpu_table("metrics", "cpu", 8)).await;
    assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);
    let mut req = cpu_table("metrics", "cpu", 8);
    req.if_not_exists = true;
    let same = rpc.create_table(req).await.unwrap().into_inner();
    assert!(same.unchanged);
    assert_eq!(same.table.unwrap().id, table.id);
    assert_eq!(f.held().len(), 8, "if_not_exists opened nothing more");

    // The HTTP mirror: /v1/tables/{schema}/{name} with its route, 404 for a missing table.
    let (code, body) = f.cluster.nodes[0].http_get("/v1/tables/metrics/cpu").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["table"]["id"], table.id);
    assert_eq!(v["route"]["regions"].as_array().unwrap().len(), 8);
    let (code, body) = f.cluster.nodes[0].http_get("/v1/tables/metrics/nope").await;
    assert_eq!(code, 404, "{body}");
    let (code, body) = f.cluster.nodes[0].http_get("/v1/tables/metrics").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["tables"].as_array().unwrap().len(), 1);

    // Drop: gone from describe and routes, and every region closed.
    rpc.drop_table(DropTableRequest {
        name: name("metrics", "cpu"),
        if_exists: false,
    })
    .await
    .expect("drop table");
    let gone = rpc
        .describe_table(DescribeTableRequest {
            name: name("metrics", "cpu"),
            serializable: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(f.held().is_empty(), "regions left open: {:?}", f.held());
    let missing = rpc
        .drop_table(DropTableRequest {
            name: name("metrics", "cpu"),
            if_exists: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let quiet = rpc
        .drop_table(DropTableRequest {
            name: name("metrics", "cpu"),
            if_exists: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(quiet.unchanged);

    // The procedures are listed newest first with their final step.
    let procs = rpc
        .list_procedures(ListProceduresRequest::default())
        .await
        .unwrap()
        .into_inner()
        .procedures;
    let kinds: Vec<&str> = procs.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(kinds, vec!["drop_table", "create_table", "create_database"]);
    assert!(procs.iter().all(|p| p.state == "done"), "{procs:?}");
    let one = rpc
        .get_procedure(GetProcedureRequest { id: procs[1].id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.target, "default.metrics.cpu");
    assert_eq!(one.step, "commit");
    let (code, body) = f.cluster.nodes[0]
        .http_get("/v1/procedures?state=done")
        .await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_ddl_is_refused_naming_the_field_and_changes_nothing() {
    let f = Fixture::start(1, &["a"], |_| {}).await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "db").await;
    let long = "x".repeat(200);
    let cases: Vec<(&str, CreateTableRequest)> = vec![
        ("name", {
            let mut r = cpu_table("db", "", 1);
            r.name = name("db", "");
            r
        }),
        ("name", cpu_table("db", &long, 1)),
        ("name", cpu_table("db", "bad/name", 1)),
        ("columns", {
            let mut r = cpu_table("db", "t", 1);
            r.columns.push(col("usage", "float64", SemanticType::Field));
            r
        }),
        ("data_type", {
            let mut r = cpu_table("db", "t", 1);
            r.columns[2].data_type = "float128".into();
            r
        }),
        ("time_index", {
            let mut r = cpu_table("db", "t", 1);
            r.time_index = "nope".into();
            r
        }),
        ("time_index", {
            let mut r = cpu_table("db", "t", 1);
            r.time_index = "usage".into();
            r
        }),
        ("primary_key", {
            let mut r = cpu_table("db", "t", 1);
            r.primary_key = vec!["missing".into()];
            r
        }),
        ("partition", {
            let mut r = cpu_table("db", "t", 1);
            r.partition = Some(PartitionRule {
                rule: Some(Rule::Hash(HashPartition {
                    columns: vec!["nope".into()],
                    partitions: 2,
                })),
            });
            r
        }),
        ("ranges", {
            let mut r = cpu_table("db", "t", 1);
            r.partition = Some(PartitionRule {
                rule: Some(Rule::Range(RangePartition {
                    column: "host".into(),
                    ranges: vec![
                        RangeBound {
                            start: "a".into(),
                            end: "m".into(),
                        },
                        RangeBound {
                            start: "k".into(),
                            end: "z".into(),
                        },
                    ],
                })),
            });
            r
        }),
        ("regions_per_table_max", cpu_table("db", "t", 5000)),
    ];
    for (field, req) in cases {
        let err = rpc.create_table(req.clone()).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{field}: {}",
            err.message()
        );
        assert!(
            err.message().contains(field),
            "error for {field} does not name it: {}",
            err.message()
        );
    }
    let listed = rpc
        .list_tables(ListTablesRequest {
            schema: "db".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tables.is_empty(), "nothing was half-created");
    assert!(f.held().is_empty(), "no region was opened");
    // A table in a database that does not exist.
    let err = rpc
        .create_table(cpu_table("nodb", "t", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    // A database twice.
    let err = rpc
        .create_database(CreateDatabaseRequest {
            name: "db".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alter_each_kind_and_refuse_a_stale_version() {
    let f = Fixture::start(1, &["a"], |_| {}).await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "db").await;
    rpc.create_table(cpu_table("db", "cpu", 2)).await.unwrap();
    let alter = |kind: AlterKind, table: &str, expected_version: u64| AlterTableRequest {
        name: name("db", table),
        expected_version,
        kind: Some(kind),
    };
    let rpc2 = rpc.clone();
    let run = move |req: AlterTableRequest| {
        let mut rpc = rpc2.clone();
        async move {
            rpc.alter_table(req)
                .await
                .map(|r| r.into_inner().table.unwrap())
        }
    };
    let mut extra = col("idle", "float64", SemanticType::Field);
    extra.nullable = true;
    let t = run(alter(
        AlterKind::AddColumns(AddColumns {
            columns: vec![extra],
        }),
        "cpu",
        1,
    ))
    .await
    .unwrap();
    assert_eq!(t.version, 2);
    assert!(t.columns.iter().any(|c| c.name == "idle"));
    // Written against version 1 again: stale.
    let stale = run(alter(
        AlterKind::DropColumns(DropColumns {
            names: vec!["idle".into()],
        }),
        "cpu",
        1,
    ))
    .await
    .unwrap_err();
    assert_eq!(
        stale.code(),
        Code::FailedPrecondition,
        "{}",
        stale.message()
    );
    assert!(stale.message().contains("version"), "{}", stale.message());
    let t = run(alter(
        AlterKind::RenameColumn(RenameColumn {
            from: "idle".into(),
            to: "idle_pct".into(),
        }),
        "cpu",
        2,
    ))
    .await
    .unwrap();
    assert!(t.columns.iter().any(|c| c.name == "idle_pct"));
    let t = run(alter(
        AlterKind::DropColumns(DropColumns {
            names: vec!["idle_pct".into()],
        }),
        "cpu",
        0,
    ))
    .await
    .unwrap();
    assert!(!t.columns.iter().any(|c| c.name.starts_with("idle")));
    // The time index cannot be dropped.
    let err = run(alter(
        AlterKind::DropColumns(DropColumns {
            names: vec!["ts".into()],
        }),
        "cpu",
        0,
    ))
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let t = run(alter(
        AlterKind::SetOptions(SetOptions {
            ttl_seconds: Some(3600),
            set_extra: [("compaction".to_string(), "twcs".to_string())].into(),
            ..Default::default()
        }),
        "cpu",
        0,
    ))
    .await
    .unwrap();
    let opts = t.options.unwrap();
    assert_eq!(opts.ttl_seconds, Some(3600));
    assert_eq!(
        opts.extra.get("compaction").map(String::as_str),
        Some("twcs")
    );
    let id = t.id;
    let t = run(alter(
        AlterKind::RenameTable(RenameTable { to: "cpu2".into() }),
        "cpu",
        0,
    ))
    .await
    .unwrap();
    assert_eq!(t.id, id, "a rename keeps the id");
    let old = rpc
        .describe_table(DescribeTableRequest {
            name: name("db", "cpu"),
            serializable: false,
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::NotFound);
    let new = rpc
        .describe_table(DescribeTableRequest {
            name: name("db", "cpu2"),
            serializable: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(new.table.unwrap().version, 6);
    assert_eq!(new.route.unwrap().regions.len(), 2, "the route stays");

    // Truncate: every region truncated on its datanode, the version bumped.
    let truncated = rpc
        .truncate_table(TruncateTableRequest {
            name: name("db", "cpu2"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(truncated.table.unwrap().version, 7);
    let mut done: Vec<u64> = f.datanodes[0].1.truncated.lock().unwrap().clone();
    done.sort();
    assert_eq!(done, vec![id << 32, (id << 32) | 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_through_a_follower_and_list_pages() {
    let f = Fixture::start(3, &["a", "b"], |_| {}).await;
    let leader = f.cluster.wait_leader().await;
    let follower = (0..3)
        .find(|i| f.cluster.nodes[*i].config.node_id != leader)
        .unwrap();
    let mut rpc = f.rpc(follower).await;
    create_db(&mut rpc, "db").await;
    for i in 0..5 {
        rpc.create_table(cpu_table("db", &format!("t{i}"), 1))
            .await
            .expect("create through a follower");
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = rpc
            .list_tables(ListTablesRequest {
                schema: "db".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        names.extend(page.tables.into_iter().map(|t| t.name.unwrap().name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, vec!["t0", "t1", "t2", "t3", "t4"]);
    assert_eq!(pages, 3);
    let too_big = rpc
        .list_tables(ListTablesRequest {
            schema: "db".into(),
            page_size: 100_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::InvalidArgument);
    assert!(too_big.message().contains("list_page_size_max"));
    let too_many = rpc
        .get_routes(GetRoutesRequest {
            table_ids: (0..1001).collect(),
            serializable: true,
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), Code::InvalidArgument);
    assert!(too_many.message().contains("route_tables_per_request_max"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_datanode_is_a_clear_error() {
    let f = Fixture::start(1, &[], |_| {}).await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "db").await;
    let err = rpc.create_table(cpu_table("db", "t", 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("datanode"), "{}", err.message());
    let listed = rpc
        .list_tables(ListTablesRequest {
            schema: "db".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tables.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn round_robin_and_label_aware_placement() {
    let f = Fixture::start(1, &["a", "a", "b"], |c| {
        c.placement_selector = "label_aware".into();
        c.region_followers = 1;
    })
    .await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "db").await;
    let t = rpc
        .create_table(cpu_table("db", "t", 4))
        .await
        .unwrap()
        .into_inner()
        .table
        .unwrap();
    let route = rpc
        .get_routes(GetRoutesRequest {
            table_ids: vec![t.id],
            serializable: false,
        })
        .await
        .unwrap()
        .into_inner()
        .routes
        .remove(0);
    let zone = |n: u64| if n == 102 { "b" } else { "a" };
    for r in &route.regions {
        assert_eq!(r.follower_nodes.len(), 1);
        let f0 = r.follower_nodes[0];
        assert_ne!(
            zone(r.leader_node),
            zone(f0),
            "replicas of a region in one zone: {r:?}"
        );
    }
    // Followers are opened as followers.
    let held = f.held();
    for r in &route.regions {
        let on: BTreeSet<(u64, bool)> = held[&r.region_id].iter().copied().collect();
        let want: BTreeSet<(u64, bool)> =
            [(r.leader_node, true), (r.follower_nodes[0], false)].into();
        assert_eq!(on, want);
    }
    drop(f);

    let f = Fixture::start(1, &["a", "a", "a"], |c| {
        c.placement_selector = "round_robin".into();
    })
    .await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "db").await;
    let mut leaders = Vec::new();
    for i in 0..3 {
        let t = rpc
            .create_table(cpu_table("db", &format!("t{i}"), 1))
            .await
            .unwrap()
            .into_inner()
            .table
            .unwrap();
        let d = rpc
            .describe_table(DescribeTableRequest {
                name: name("db", &format!("t{i}")),
                serializable: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(d.table.unwrap().id, t.id);
        leaders.push(d.route.unwrap().regions[0].leader_node);
    }
    leaders.sort();
    assert_eq!(
        leaders,
        vec![100, 101, 102],
        "round robin visits every node once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_watch_reports_changes_and_resumes() {
    let f = Fixture::start(1, &["a"], |_| {}).await;
    let mut rpc = f.leader_rpc().await;
    let start = f.cluster.nodes[0].node().await.revision() + 1;
    create_db(&mut rpc, "db").await;
    let t = rpc
        .create_table(cpu_table("db", "cpu", 2))
        .await
        .unwrap()
        .into_inner()
        .table
        .unwrap();
    rpc.alter_table(AlterTableRequest {
        name: name("db", "cpu"),
        expected_version: 0,
        kind: Some(AlterKind::SetOptions(SetOptions {
            ttl_seconds: Some(60),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    rpc.drop_table(DropTableRequest {
        name: name("db", "cpu"),
        if_exists: false,
    })
    .await
    .unwrap();

    let collect = |mut rpc: MetaRpc<Channel>, from: i64, want: usize| async move {
        let mut stream = rpc
            .watch_metadata(WatchMetadataRequest {
                start_revision: from,
            })
            .await
            .unwrap()
            .into_inner();
        let mut events = Vec::new();
        while events.len() < want {
            let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("events in time")
                .unwrap()
                .unwrap();
            events.extend(r.events);
        }
        events
    };
    let events = collect(rpc.clone(), start, 5).await;
    let kinds: Vec<i32> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            MetadataEventKind::DatabaseCreated as i32,
            MetadataEventKind::TableCreated as i32,
            MetadataEventKind::RouteChanged as i32,
            MetadataEventKind::TableAltered as i32,
            MetadataEventKind::TableDropped as i32,
        ],
        "{events:?}"
    );
    assert!(events[1..].iter().all(|e| e.table_id == t.id));
    assert_eq!(
        events[4].name.as_ref().unwrap().name,
        "cpu",
        "a drop names the table"
    );
    // Resume after the alter: only the drop.
    let resumed = collect(rpc.clone(), events[3].revision + 1, 1).await;
    assert_eq!(resumed[0].kind, MetadataEventKind::TableDropped as i32);

    // History compacted away: the stream says so.
    let node = f.cluster.nodes[0].node().await;
    let now = node.revision();
    let mut kv = f.cluster.kv(0).await;
    kv.compact(cairn_proto::etcdserverpb::CompactionRequest {
        revision: now,
        physical: false,
    })
    .await
    .unwrap();
    let mut stream = rpc
        .watch_metadata(WatchMetadataRequest {
            start_revision: start,
        })
        .await
        .unwrap()
        .into_inner();
    let r = stream.message().await.unwrap().unwrap();
    assert_eq!(r.compact_revision, now);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drop_database_drops_every_table_and_closes_regions() {
    let f = Fixture::start(1, &["a", "a"], |c| {
        // Small transactions force several chunks.
        c.txn_ops_max = 31;
    })
    .await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "db").await;
    create_db(&mut rpc, "other").await;
    for i in 0..40 {
        rpc.create_table(cpu_table("db", &format!("t{i}"), 2))
            .await
            .unwrap();
    }
    rpc.create_table(cpu_table("other", "keep", 2))
        .await
        .unwrap();
    assert_eq!(f.held().len(), 82);
    let r = rpc
        .drop_database(DropDatabaseRequest {
            name: "db".into(),
            ..Default::default()
        })
        .await
        .expect("drop database")
        .into_inner();
    assert_eq!(r.dropped_tables, 40);
    assert_eq!(
        f.held().len(),
        2,
        "only the other database's regions stay open"
    );
    let listed = rpc
        .list_databases(ListDatabasesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<String> = listed.databases.into_iter().map(|d| d.name).collect();
    assert_eq!(names, vec!["other".to_string()]);
    let err = rpc
        .list_tables(ListTablesRequest {
            schema: "db".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(err.tables.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orphan_regions_are_closed_and_routed_ones_kept() {
    let f = Fixture::start(1, &["a", "a"], |c| c.region_reconcile_interval_ms = 300).await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "db").await;
    let table = rpc
        .create_table(cpu_table("db", "cpu", 4))
        .await
        .unwrap()
        .into_inner()
        .table
        .unwrap();
    let routed = f.held();
    assert_eq!(routed.len(), 4);
    // Orphans on the first datanode: a region of a table that does not exist, and every
    // region of the table that the route places on the other datanode.
    let (first, dn, _) = &f.datanodes[0];
    let ghost = (99_999u64 << 32) | 3;
    let misplaced: Vec<u64> = routed
        .iter()
        .filter(|(_, on)| on.iter().all(|(n, _)| n != first))
        .map(|(r, _)| *r)
        .collect();
    assert!(
        !misplaced.is_empty(),
        "both datanodes get regions: {routed:?}"
    );
    {
        let mut regions = dn.regions.lock().unwrap();
        regions.insert(ghost, true);
        for r in &misplaced {
            regions.insert(*r, true);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.held() != routed {
        assert!(
            Instant::now() < deadline,
            "orphans not closed: routed {routed:?}, held {:?}",
            f.held()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The table is untouched.
    let d = rpc
        .describe_table(DescribeTableRequest {
            name: name("db", "cpu"),
            serializable: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.table.unwrap().id, table.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_tables_then_drop_the_database() {
    use futures::StreamExt;
    const TABLES: usize = 10_000;
    let f = Fixture::start(1, &["a", "a", "a"], |_| {}).await;
    let mut rpc = f.leader_rpc().await;
    create_db(&mut rpc, "bulk").await;
    let created = futures::stream::iter(0..TABLES)
        .map(|i| {
            let mut rpc = rpc.clone();
            async move {
                rpc.create_table(cpu_table("bulk", &format!("t{i:05}"), 2))
                    .await
            }
        })
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    assert_eq!(created, TABLES, "every create succeeded");
    assert_eq!(f.held().len(), 2 * TABLES);
    let page = rpc
        .list_tables(ListTablesRequest {
            schema: "bulk".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.tables.len(), 1000);
    assert!(!page.next_page_token.is_empty());

    let dropped = rpc
        .drop_database(DropDatabaseRequest {
            name: "bulk".into(),
            ..Default::default()
        })
        .await
        .expect("drop of 10,000 tables stays within request and transaction limits")
        .into_inner();
    assert_eq!(dropped.dropped_tables, TABLES as u64);
    assert!(f.held().is_empty(), "every region closed");
    let left = rpc
        .list_tables(ListTablesRequest {
            schema: "bulk".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(left.tables.is_empty());
}
