//! The Cairn leader dies at each step of CREATE TABLE (by the `--test-crash-at` hook, which
//! aborts the process like a kill -9), and the outcome is the same as without the crash: after a
//! new leader takes over and the client retries with if_not_exists, the table exists once, every
//! region its route names is open on its datanode, no other region is open anywhere, and no
//! procedure is left running.

mod common;
#[path = "common/datanode.rs"]
mod datanode;
#[path = "common/settle.rs"]
mod settle;

use cairn_client::meta::MetaClient;
use cairn_proto::cairnpb::meta_client::MetaClient as MetaRpc;
use cairn_proto::cairnpb::partition_rule::Rule;
use cairn_proto::cairnpb::*;
use common::TestCluster;
use settle::{eventually, eventually_or_none, no_running_procedure};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tonic::transport::Channel;

/// Steps of create table, in order, as the procedure names them.
const STEPS: &[&str] = &[
    "validate",
    "allocate_id",
    "plan_regions",
    "select_nodes",
    "open_regions",
    "commit",
    "publish",
];
/// Steps after which the procedure is stored: the new leader finishes the table by itself.
const RESUMED_STEPS: &[&str] = &["open_regions", "commit", "publish"];
const DATANODES: u64 = 3;
const REGIONS: u32 = 6;

fn table_request() -> CreateTableRequest {
    let col = |name: &str, ty: &str, sem: SemanticType| ColumnDef {
        name: name.into(),
        data_type: ty.into(),
        nullable: sem == SemanticType::Field,
        semantic_type: sem as i32,
        ..Default::default()
    };
    CreateTableRequest {
        name: Some(TableName {
            catalog: String::new(),
            schema: "db".into(),
            name: "cpu".into(),
        }),
        columns: vec![
            col("host", "string", SemanticType::Tag),
            col("ts", "timestamp(3)", SemanticType::Timestamp),
            col("usage", "float64", SemanticType::Field),
        ],
        primary_key: vec!["host".into()],
        time_index: "ts".into(),
        partition: Some(PartitionRule {
            rule: Some(Rule::Hash(HashPartition {
                columns: vec!["host".into()],
                partitions: REGIONS,
            })),
        }),
        ..Default::default()
    }
}

async fn rpc(cluster: &TestCluster, i: usize) -> MetaRpc<Channel> {
    MetaRpc::new(cluster.channel(i))
}

async fn leader_rpc(cluster: &TestCluster) -> MetaRpc<Channel> {
    let i = cluster
        .wait_for_leader(None, Duration::from_secs(20))
        .await
        .expect("a leader");
    rpc(cluster, i).await
}

async fn crash_at(step: &str) {
    let marker = tempfile::tempdir().unwrap();
    let marker_path = marker.path().join("crashed");
    let mut cluster = TestCluster::start_with_args(
        3,
        vec![
            "--node-heartbeat-interval-ms".into(),
            "200".into(),
            "--node-lease-ms".into(),
            "1000".into(),
            "--region-instruction-timeout-ms".into(),
            "2000".into(),
            // Orphans (a rolled-back create whose closes found a node unreachable) are closed
            // by the leader's reconciler; the check below waits for it.
            "--region-reconcile-interval-ms".into(),
            "1000".into(),
            "--test-crash-at".into(),
            format!("create_table:{step}"),
            "--test-crash-marker".into(),
            marker_path.display().to_string(),
        ],
    )
    .await;
    let endpoints: Vec<String> = (0..3).map(|i| cluster.client_addr(i)).collect();
    let client = MetaClient::new(endpoints).unwrap();
    let datanodes = datanode::start(&client, 100..100 + DATANODES, |id| {
        format!("127.0.0.1:{}", 29_900 + id)
    });
    let mut meta = leader_rpc(&cluster).await;
    eventually("the database", || {
        let mut meta = meta.clone();
        async move {
            meta.create_database(CreateDatabaseRequest {
                name: "db".into(),
                if_not_exists: true,
                ..Default::default()
            })
            .await
            .ok()
        }
    })
    .await;
    // Datanodes must be alive before the create can place regions.
    eventually("datanodes alive", || {
        let client = &client;
        async move {
            let nodes = client.list_nodes(0).await.ok()?;
            (nodes.nodes.iter().filter(|n| n.state == "alive").count() as u64 == DATANODES)
                .then_some(())
        }
    })
    .await;

    let first = meta.create_table(table_request()).await;
    assert!(
        first.is_err(),
        "{step}: the leader should have crashed before answering, got {first:?}"
    );
    assert!(marker_path.exists(), "{step}: the crash hook did not fire");
    // The crashed node has exited: stop counting it as running.
    eventually("the crashed node to exit", || {
        let exited = cluster.check_alive().is_err();
        async move { exited.then_some(()) }
    })
    .await;

    // A new leader: retry the create with if_not_exists until it is answered.
    meta = leader_rpc(&cluster).await;
    let mut req = table_request();
    req.if_not_exists = true;
    let table = eventually("the retried create", || {
        let mut m = meta.clone();
        let req = req.clone();
        async move { m.create_table(req).await.ok() }
    })
    .await
    .into_inner();
    if RESUMED_STEPS.contains(&step) {
        assert!(
            table.unchanged,
            "{step}: the new leader should have finished the stored procedure itself"
        );
    }
    let id = table.table.expect("table").id;

    // Exactly the route's regions are open, once each, and nothing else anywhere.
    let route = eventually("a route", || {
        let mut m = meta.clone();
        async move {
            m.get_routes(GetRoutesRequest {
                table_ids: vec![id],
                serializable: false,
            })
            .await
            .ok()
            .and_then(|r| r.into_inner().routes.pop())
        }
    })
    .await;
    let want: BTreeMap<u64, u64> = route
        .regions
        .iter()
        .map(|r| (r.region_id, r.leader_node))
        .collect();
    assert_eq!(want.len(), REGIONS as usize);
    let held_by_node = || {
        datanodes
            .iter()
            .enumerate()
            .map(|(i, (dn, _))| (100 + i as u64, dn.regions.lock().unwrap().clone()))
            .collect::<BTreeMap<u64, BTreeSet<u64>>>()
    };
    let settled = eventually_or_none(|| {
        let mut held: BTreeMap<u64, u64> = BTreeMap::new();
        let mut twice = false;
        for (node, regions) in held_by_node() {
            for r in regions {
                twice |= held.insert(r, node).is_some();
            }
        }
        let ok = !twice && held == want;
        async move { ok.then_some(()) }
    })
    .await;
    assert!(
        settled.is_some(),
        "{step}: regions not open exactly as routed: route {want:?}, datanodes hold {:?}",
        held_by_node()
    );
    // Listed once, and no procedure left running.
    let tables = meta
        .list_tables(ListTablesRequest {
            schema: "db".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .tables;
    assert_eq!(tables.len(), 1, "{step}");
    no_running_procedure(&meta).await;
    for (_, h) in datanodes {
        h.stop().await;
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_at_each_create_table_step_leaves_no_half_table() {
    // CAIRN_CRASH_STEPS=a,b runs only those steps (for debugging one).
    let only = std::env::var("CAIRN_CRASH_STEPS").unwrap_or_default();
    for step in STEPS
        .iter()
        .filter(|s| only.is_empty() || only.split(',').any(|o| o == **s))
    {
        eprintln!("--- crashing the leader at create_table:{step}");
        crash_at(step).await;
    }
}
