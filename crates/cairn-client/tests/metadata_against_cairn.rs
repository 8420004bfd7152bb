//! The metadata side of `MetaClient` and the `RouteCache` against an in-process single-node
//! Cairn with one heartbeating datanode: DDL round-trips (a repeated create without
//! `if_not_exists` is refused), listings and procedures read back, the metadata watch reports
//! the changes in order, routes name the datanode with its address, and the cache follows an
//! alter and a drop through the watch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::meta::{
    table_name, HeartbeatHandle, HeartbeatOptions, InstructionHandler, MetaClient, MetadataError,
    MetadataWatchItem, RouteCache, StatsSource,
};
use cairn_client::proto::cairnpb::alter_table_request::Kind as AlterKind;
use cairn_client::proto::cairnpb::instruction::Kind;
use cairn_client::proto::cairnpb::{
    partition_rule, AddColumns, AlterTableRequest, ColumnDef, CreateDatabaseRequest,
    CreateTableRequest, DescribeTableRequest, DropTableRequest, HashPartition, Instruction,
    ListProceduresRequest, MetadataEventKind, NodeIdentity, NodeRole, NodeStats, PartitionRule,
    RegionRole, RegionStat, SemanticType,
};
use cairn_server::ServerConfig;
use tokio::sync::oneshot;

const WAIT_MAX: Duration = Duration::from_secs(30);
const NODE_HEARTBEAT_INTERVAL_MS: u64 = 100;
const DATANODE_ID: u64 = 7001;
const DATANODE_ADDRESS: &str = "127.0.0.1:17001";
const PARTITIONS: u32 = 2;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A datanode that opens and closes the regions it is told to.
#[derive(Default)]
struct Datanode {
    regions: Mutex<BTreeMap<u64, bool>>,
}

impl StatsSource for Datanode {
    fn collect(&self, _report_interval_ms: u64) -> (NodeStats, Vec<RegionStat>) {
        let regions = self.regions.lock().unwrap();
        let stats = regions
            .iter()
            .map(|(region_id, leader)| RegionStat {
                region_id: *region_id,
                role: if *leader {
                    RegionRole::Leader
                } else {
                    RegionRole::Follower
                } as i32,
                ..Default::default()
            })
            .collect();
        (NodeStats::default(), stats)
    }
}

impl InstructionHandler for Datanode {
    async fn handle(&self, instruction: Instruction) -> Result<(), String> {
        let mut regions = self.regions.lock().unwrap();
        match instruction.kind {
            Some(Kind::OpenRegion(open)) => {
                regions.insert(open.region_id, open.as_leader);
            }
            Some(Kind::OpenRegions(open)) => {
                for r in open.regions {
                    regions.insert(r.region_id, r.as_leader);
                }
            }
            Some(Kind::CloseRegion(close)) => {
                regions.remove(&close.region_id);
            }
            Some(Kind::CloseRegions(close)) => {
                for id in close.region_ids {
                    regions.remove(&id);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A single-node Cairn and one datanode heartbeating to it; both stop when dropped.
struct Cluster {
    client: MetaClient,
    _dir: tempfile::TempDir,
    _stop: oneshot::Sender<()>,
    _heartbeat: HeartbeatHandle,
}

async fn start() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let listen_peer = format!("127.0.0.1:{}", free_port());
    let config = ServerConfig {
        node_id: 1,
        data_dir: dir.path().join("1"),
        listen_client: format!("127.0.0.1:{}", free_port()),
        listen_peer: listen_peer.clone(),
        listen_http: format!("127.0.0.1:{}", free_port()),
        initial_cluster: vec![(1, listen_peer)],
        heartbeat_interval_ms: 50,
        election_timeout_ms: 300,
        node_heartbeat_interval_ms: NODE_HEARTBEAT_INTERVAL_MS,
        ..Default::default()
    };
    let client = MetaClient::new([config.listen_client.as_str()]).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(cairn_server::run(config, async move {
        let _ = stopped.await;
    }));
    let datanode = Arc::new(Datanode::default());
    let identity = NodeIdentity {
        id: DATANODE_ID,
        role: NodeRole::Datanode as i32,
        address: DATANODE_ADDRESS.to_string(),
        ..Default::default()
    };
    let heartbeat = client.run_heartbeat_with(
        identity,
        Arc::clone(&datanode),
        datanode,
        HeartbeatOptions {
            interval_ms: NODE_HEARTBEAT_INTERVAL_MS,
            ..Default::default()
        },
    );
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Ok(nodes) = client.list_nodes(DATANODE_ID).await {
            if nodes.nodes.iter().any(|n| n.state == "alive") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the datanode never became alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Cluster {
        client,
        _dir: dir,
        _stop: stop,
        _heartbeat: heartbeat,
    }
}

fn column(name: &str, data_type: &str, semantic: SemanticType) -> ColumnDef {
    ColumnDef {
        name: name.to_string(),
        data_type: data_type.to_string(),
        nullable: semantic == SemanticType::Field,
        semantic_type: semantic as i32,
        ..Default::default()
    }
}

fn create_cpu(if_not_exists: bool) -> CreateTableRequest {
    CreateTableRequest {
        name: Some(table_name("", "metrics", "cpu")),
        columns: vec![
            column("host", "string", SemanticType::Tag),
            column("ts", "timestamp(3)", SemanticType::Timestamp),
            column("usage", "float64", SemanticType::Field),
        ],
        primary_key: vec!["host".to_string()],
        time_index: "ts".to_string(),
        options: None,
        partition: Some(PartitionRule {
            rule: Some(partition_rule::Rule::Hash(HashPartition {
                columns: vec!["host".to_string()],
                partitions: PARTITIONS,
            })),
        }),
        if_not_exists,
    }
}

async fn next_event(watch: &mut cairn_client::meta::MetadataWatch) -> MetadataWatchItem {
    tokio::time::timeout(WAIT_MAX, watch.next())
        .await
        .expect("no metadata event in time")
        .expect("the watch ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_routes_watch_and_cache_against_cairn() {
    let cluster = start().await;
    let client = &cluster.client;
    let mut watch = client.watch_metadata(0);
    let cache = RouteCache::new(client.clone());

    let database = client
        .create_database(CreateDatabaseRequest {
            name: "metrics".into(),
            if_not_exists: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!database.unchanged);
    let created = client.create_table(create_cpu(false)).await.unwrap();
    let table = created.table.clone().unwrap();
    assert_eq!(table.region_numbers.len(), PARTITIONS as usize);
    let again = client.create_table(create_cpu(false)).await.unwrap_err();
    assert_eq!(again.code(), Some(tonic::Code::AlreadyExists));
    assert!(
        client
            .create_table(create_cpu(true))
            .await
            .unwrap()
            .unchanged
    );

    // The watch saw the database, then the table, in revision order.
    let mut kinds = Vec::new();
    let mut last_revision = 0;
    while !kinds.contains(&MetadataEventKind::TableCreated) {
        match next_event(&mut watch).await {
            MetadataWatchItem::Event(e) => {
                assert!(e.revision >= last_revision);
                last_revision = e.revision;
                kinds.push(e.kind());
            }
            reset => panic!("unexpected {reset:?}"),
        }
    }
    assert_eq!(kinds[0], MetadataEventKind::DatabaseCreated);

    // Reads: describe, list, procedures.
    let described = client
        .describe_table(DescribeTableRequest {
            name: Some(table_name("", "metrics", "cpu")),
            serializable: false,
        })
        .await
        .unwrap();
    assert_eq!(described.table.unwrap().id, table.id);
    let listed = client.list_all_tables("", "metrics").await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.id).collect::<Vec<_>>(),
        vec![table.id]
    );
    let procedure = client.get_procedure(created.procedure_id).await.unwrap();
    assert_eq!(procedure.state, "done");
    let procedures = client
        .list_procedures(ListProceduresRequest::default())
        .await
        .unwrap();
    assert!(procedures
        .procedures
        .iter()
        .any(|p| p.id == created.procedure_id));

    // The cache resolves the name and the route; every region is led by the datanode.
    let table_id = cache
        .table_id(&table_name("default", "metrics", "cpu"))
        .await
        .unwrap();
    assert_eq!(table_id, table.id);
    let route = cache.route(table_id).await.unwrap();
    assert_eq!(route.region_ids().count(), PARTITIONS as usize);
    for region_id in route.region_ids() {
        assert_eq!(region_id >> 32, table_id);
        assert_eq!(
            route.leader_of(region_id),
            Some((DATANODE_ID, DATANODE_ADDRESS))
        );
    }

    // An alter reaches the cache through the watch: the route is dropped, then refetched.
    client
        .alter_table(AlterTableRequest {
            name: Some(table_name("", "metrics", "cpu")),
            expected_version: table.version,
            kind: Some(AlterKind::AddColumns(AddColumns {
                columns: vec![column("idle", "float64", SemanticType::Field)],
            })),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    while cache.stats().invalidations == 0 {
        assert!(
            Instant::now() < deadline,
            "the alter never reached the cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fetches = cache.stats().fetches;
    cache.route(table_id).await.unwrap();
    assert_eq!(cache.stats().fetches, fetches + 1);

    // A drop: the name and the route are gone from the cache once the watch delivers it.
    client
        .drop_table(DropTableRequest {
            name: Some(table_name("", "metrics", "cpu")),
            if_exists: false,
        })
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match cache.table_id(&table_name("", "metrics", "cpu")).await {
            Err(MetadataError::TableNameNotFound { .. }) => break,
            Ok(_) => assert!(
                Instant::now() < deadline,
                "the drop never reached the cache"
            ),
            Err(other) => panic!("{other}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        cache.route(table_id).await,
        Err(MetadataError::TableNotFound { .. })
    ));
}
