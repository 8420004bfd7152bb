//! `cairn ctl database|table|route|procedure` against a real single-node `cairn serve` with two
//! in-process datanodes: every verb works, its JSON output parses into the documented shape,
//! regions a table is created with are really opened on the datanodes its route names, and bad
//! input fails with a non-zero exit and a message naming the field or flag at fault.

mod common;
#[path = "common/datanode.rs"]
mod datanode;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::meta::{HeartbeatHandle, MetaClient};
use common::ctl::{fails, json, ok};
use common::TestCluster;
use datanode::Datanode;
use serde_json::Value;

const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Ids of the test datanodes.
const DATANODE_IDS: [u64; 2] = [101, 102];

fn datanode_address(id: u64) -> String {
    format!("127.0.0.1:{}", 20_000 + id)
}

/// Polls `f` until it returns Some, failing with `what` after SETTLE_TIMEOUT.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A one-node cluster with two alive datanodes; keep the handles for the test's life.
async fn cluster_with_datanodes() -> (TestCluster, String, Vec<(Arc<Datanode>, HeartbeatHandle)>) {
    let cluster =
        TestCluster::start_with_args(1, vec!["--node-heartbeat-interval-ms".into(), "200".into()])
            .await;
    let endpoints = cluster.client_addrs();
    let client = MetaClient::new([endpoints.as_str()]).unwrap();
    let datanodes = datanode::start(&client, DATANODE_IDS.iter().copied(), datanode_address);
    eventually("datanodes alive", || {
        let client = &client;
        async move {
            let nodes = client.list_nodes(0).await.ok()?;
            let alive = nodes.nodes.iter().filter(|n| n.state == "alive").count();
            (alive == DATANODE_IDS.len()).then_some(())
        }
    })
    .await;
    (cluster, endpoints, datanodes)
}

/// Region id → datanode, as the datanodes hold them.
fn held_regions(datanodes: &[(Arc<Datanode>, HeartbeatHandle)]) -> BTreeMap<u64, u64> {
    let mut held = BTreeMap::new();
    for ((dn, _), id) in datanodes.iter().zip(DATANODE_IDS) {
        for region in dn.regions.lock().unwrap().iter() {
            assert!(
                held.insert(*region, id).is_none(),
                "region {region} is open on two datanodes"
            );
        }
    }
    held
}

fn names(list: &Value) -> Vec<String> {
    list["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| t["name"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_verbs_work_and_print_the_documented_json() {
    let (cluster, ep, datanodes) = cluster_with_datanodes().await;
    let ep = ep.as_str();

    // Databases.
    let created = json(ep, &["database", "create", "shop", "--option", "owner=ops"]).await;
    assert_eq!(created["database"]["name"], "shop");
    assert_eq!(created["database"]["catalog"], "default");
    assert_eq!(created["unchanged"], false);
    assert!(created["procedure_id"].as_u64().unwrap() > 0);
    let again = json(ep, &["database", "create", "shop", "--if-not-exists"]).await;
    assert_eq!(again["unchanged"], true);
    fails(ep, &["database", "create", "shop"], &["AlreadyExists"]).await;
    ok(ep, &["database", "create", "scratch"]).await;
    let listed = json(ep, &["database", "list", "--page-size", "1"]).await;
    let dbs: Vec<&str> = listed["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        dbs.contains(&"shop") && dbs.contains(&"scratch"),
        "{listed}"
    );
    let shop = listed["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "shop")
        .unwrap();
    assert_eq!(shop["options"]["owner"], "ops");
    assert!(ok(ep, &["database", "list"]).await.contains("scratch"));

    // A table with four hash regions.
    let create = json(
        ep,
        &[
            "table",
            "create",
            "shop.orders",
            "--column",
            "region:string",
            "--column",
            "ts:timestamp(3)",
            "--column",
            "amount:decimal(10,2):null",
            "--column",
            "note:string:null:default='-'",
            "--primary-key",
            "region",
            "--time-index",
            "ts",
            "--partition-hash",
            "region:4",
            "--ttl",
            "7d",
            "--option",
            "compaction=twcs",
        ],
    )
    .await;
    let table = &create["table"];
    let table_id = table["id"].as_u64().unwrap();
    let create_procedure = create["procedure_id"].as_u64().unwrap();
    assert_eq!(table["full_name"], "default.shop.orders");
    assert_eq!(table["version"], 1);
    assert_eq!(table["region_numbers"].as_array().unwrap().len(), 4);
    assert_eq!(
        table["partition"],
        serde_json::json!({"hash": {"columns": ["region"], "partitions": 4}})
    );
    assert_eq!(table["options"]["ttl_seconds"], 604_800);
    assert_eq!(table["options"]["extra"]["compaction"], "twcs");
    let semantic: Vec<&str> = table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["semantic_type"].as_str().unwrap())
        .collect();
    assert_eq!(semantic, ["tag", "timestamp", "field", "field"]);
    assert_eq!(table["columns"][2]["data_type"], "decimal(10,2)");
    assert_eq!(table["columns"][2]["nullable"], true);
    assert_eq!(table["columns"][3]["default_value"], "'-'");

    // Describe: definition plus a route with addresses, matching what the datanodes opened.
    let described = json(ep, &["table", "describe", "shop.orders"]).await;
    assert_eq!(described["table"]["id"], table_id);
    let regions = described["route"]["regions"].as_array().unwrap().clone();
    assert_eq!(regions.len(), 4);
    let routed: BTreeMap<u64, u64> = regions
        .iter()
        .map(|r| {
            let leader = r["leader"]["node_id"].as_u64().unwrap();
            assert_eq!(
                r["leader"]["address"].as_str().unwrap(),
                datanode_address(leader)
            );
            assert_eq!(r["region_id"].as_u64().unwrap() >> 32, table_id);
            (r["region_id"].as_u64().unwrap(), leader)
        })
        .collect();
    eventually("the datanodes to hold the routed regions", || {
        let held = held_regions(&datanodes);
        let routed = &routed;
        async move { (held == *routed).then_some(()) }
    })
    .await;
    let text = ok(ep, &["table", "describe", "shop.orders"]).await;
    assert!(
        text.contains("hash(region) x 4") && text.contains("decimal(10,2)"),
        "{text}"
    );

    // Copy the definition through --from-file (describe's table object is accepted as is).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orders.json");
    std::fs::write(&path, serde_json::to_string(&described["table"]).unwrap()).unwrap();
    let path = path.display().to_string();
    let copy = json(
        ep,
        &["table", "create", "shop.orders_copy", "--from-file", &path],
    )
    .await;
    assert_eq!(copy["table"]["columns"], table["columns"]);
    assert_eq!(copy["table"]["partition"], table["partition"]);
    assert_ne!(copy["table"]["id"], table["id"]);
    let same = json(
        ep,
        &["table", "create", "--from-file", &path, "--if-not-exists"],
    )
    .await;
    assert_eq!(
        same["unchanged"], true,
        "the file names shop.orders, which exists"
    );

    // Listing: one page, then all pages.
    let page = json(ep, &["table", "list", "shop", "--page-size", "1"]).await;
    assert_eq!(names(&page), ["orders"]);
    assert_eq!(page["next_page_token"], "orders");
    let all = json(
        ep,
        &["table", "list", "default.shop", "--page-size", "1", "--all"],
    )
    .await;
    assert_eq!(names(&all), ["orders", "orders_copy"]);
    assert!(all["next_page_token"].is_null());
    assert!(ok(ep, &["table", "list", "shop"])
        .await
        .contains("orders_copy"));

    // Alter: each kind, and a stale expected version that changes nothing.
    let added = json(
        ep,
        &[
            "table",
            "alter",
            "shop.orders",
            "--add-column",
            "qty:int64:null",
        ],
    )
    .await;
    assert_eq!(added["table"]["version"], 2);
    assert_eq!(added["table"]["columns"].as_array().unwrap().len(), 5);
    let opts = json(
        ep,
        &[
            "table",
            "alter",
            "shop.orders",
            "--ttl",
            "forever",
            "--set",
            "k=v",
            "--unset",
            "compaction",
        ],
    )
    .await;
    assert!(opts["table"]["options"]["ttl_seconds"].is_null());
    assert_eq!(
        opts["table"]["options"]["extra"],
        serde_json::json!({"k": "v"})
    );
    fails(
        ep,
        &[
            "table",
            "alter",
            "shop.orders",
            "--drop-column",
            "qty",
            "--expected-version",
            "1",
        ],
        &["FailedPrecondition"],
    )
    .await;
    let renamed = json(
        ep,
        &[
            "table",
            "alter",
            "shop.orders",
            "--rename-column",
            "qty:quantity",
            "--expected-version",
            "3",
        ],
    )
    .await;
    assert_eq!(renamed["table"]["columns"][4]["name"], "quantity");
    let dropped_col = json(
        ep,
        &["table", "alter", "shop.orders", "--drop-column", "quantity"],
    )
    .await;
    assert_eq!(dropped_col["table"]["columns"].as_array().unwrap().len(), 4);
    ok(
        ep,
        &[
            "table",
            "alter",
            "shop.orders_copy",
            "--rename-to",
            "orders_old",
        ],
    )
    .await;
    json(ep, &["table", "describe", "shop.orders_old"]).await;

    // Truncate bumps the version and keeps the regions.
    let before = described["table"]["region_numbers"].clone();
    let truncated = json(ep, &["table", "truncate", "shop.orders"]).await;
    assert_eq!(truncated["table"]["version"], 6);
    assert_eq!(truncated["table"]["region_numbers"], before);
    assert!(ok(ep, &["table", "truncate", "shop.orders"])
        .await
        .contains("version 7"));

    // Routes by name and by id.
    let routes = json(
        ep,
        &["route", "get", "shop.orders", "--id", &table_id.to_string()],
    )
    .await;
    let list = routes["routes"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["table"], "default.shop.orders");
    // The id names the same table, whose name the command learnt from the first argument.
    assert_eq!(list[1]["table"], "default.shop.orders");
    assert_eq!(list[0]["regions"], list[1]["regions"]);
    assert_eq!(list[0]["regions"].as_array().unwrap().len(), 4);
    assert_eq!(list[0]["regions"][0]["leader_state"], "active");
    assert!(routes["missing_table_ids"].as_array().unwrap().is_empty());
    assert!(routes["revision"].as_i64().unwrap() > 0);
    let text = ok(ep, &["route", "get", "shop.orders"]).await;
    assert!(
        text.contains(&datanode_address(routed[&(table_id << 32)])),
        "{text}"
    );
    fails(ep, &["route", "get", "--id", "999999"], &["999999"]).await;
    fails(ep, &["route", "get", "shop.nope"], &["NotFound"]).await;

    // Procedures.
    let procs = json(
        ep,
        &["procedure", "list", "--state", "done", "--limit", "50"],
    )
    .await;
    let procs = procs["procedures"].as_array().unwrap();
    let create_run = procs
        .iter()
        .find(|p| p["id"] == create_procedure)
        .unwrap_or_else(|| panic!("procedure {create_procedure} in {procs:?}"));
    assert_eq!(create_run["kind"], "create_table");
    assert_eq!(create_run["target"], "default.shop.orders");
    assert!(procs.iter().all(|p| p["state"] == "done"));
    let shown = json(ep, &["procedure", "show", &create_procedure.to_string()]).await;
    assert_eq!(shown["procedure"]["id"], create_procedure);
    assert_eq!(shown["procedure"]["state"], "done");
    assert!(shown["procedure"]["created_ms"].as_u64().unwrap() > 0);
    let keys = shown["procedure"].as_object().unwrap().len();
    assert_eq!(keys, 9, "{shown}");
    let limited = json(ep, &["procedure", "list", "--limit", "2"]).await;
    assert_eq!(limited["procedures"].as_array().unwrap().len(), 2);
    assert!(ok(ep, &["procedure", "list"])
        .await
        .contains("create_table"));
    fails(ep, &["procedure", "show", "999999"], &["NotFound"]).await;

    // Drops: the table's regions close; the database takes the rest with it.
    let dropped = json(ep, &["table", "drop", "shop.orders"]).await;
    assert_eq!(dropped["table"]["id"], table_id);
    fails(ep, &["table", "drop", "shop.orders"], &["NotFound"]).await;
    let quiet = json(ep, &["table", "drop", "shop.orders", "--if-exists"]).await;
    assert_eq!(quiet["unchanged"], true);
    eventually("the dropped table's regions to close", || {
        let held = held_regions(&datanodes);
        async move { held.keys().all(|r| r >> 32 != table_id).then_some(()) }
    })
    .await;
    let gone = json(ep, &["database", "drop", "shop"]).await;
    assert_eq!(gone["dropped_tables"], 1);
    let gone = json(ep, &["database", "drop", "shop", "--if-exists"]).await;
    assert_eq!(gone["unchanged"], true);
    eventually("every region to close", || {
        let empty = held_regions(&datanodes).is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    let listed = json(ep, &["database", "list"]).await;
    assert!(!listed.to_string().contains("\"shop\""), "{listed}");
    ok(ep, &["database", "drop", "scratch"]).await;

    for (_, handle) in datanodes {
        handle.stop().await;
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_exits_non_zero_naming_the_field() {
    let (cluster, ep, datanodes) = cluster_with_datanodes().await;
    let ep = ep.as_str();
    ok(ep, &["database", "create", "db"]).await;
    let base = [
        "table",
        "create",
        "db.t",
        "--column",
        "ts:timestamp",
        "--time-index",
        "ts",
    ];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args
    };

    // Checked by the server, which names the request field; ctl adds the flag it came from.
    fails(
        ep,
        &with(&["--column", "v:float65"]),
        &["columns[1].data_type", "float65", "--column \"v:float65\""],
    )
    .await;
    fails(
        ep,
        &[
            "table",
            "create",
            "db.t",
            "--column",
            "ts:int64",
            "--time-index",
            "ts",
        ],
        &["time_index", "timestamp"],
    )
    .await;
    fails(
        ep,
        &with(&["--primary-key", "nope"]),
        &["primary_key", "nope"],
    )
    .await;
    fails(
        ep,
        &with(&["--partition-hash", "nope:4"]),
        &["partition", "nope"],
    )
    .await;
    fails(
        ep,
        &[
            "table",
            "create",
            "nodb.t",
            "--column",
            "ts:timestamp",
            "--time-index",
            "ts",
        ],
        &["nodb"],
    )
    .await;

    // Checked by ctl before anything is sent.
    fails(
        ep,
        &["table", "create", "db.t", "--column", "ts:timestamp"],
        &["--time-index"],
    )
    .await;
    fails(
        ep,
        &with(&["--column", "host"]),
        &["--column \"host\"", "data type"],
    )
    .await;
    fails(
        ep,
        &with(&["--column", "v:int8:sideways"]),
        &["--column", "sideways"],
    )
    .await;
    fails(
        ep,
        &with(&["--partition-hash", "host"]),
        &["--partition-hash"],
    )
    .await;
    fails(
        ep,
        &with(&["--partition-range", "v:1-2"]),
        &["--partition-range"],
    )
    .await;
    fails(ep, &with(&["--ttl", "soon"]), &["--ttl"]).await;
    fails(ep, &with(&["--option", "novalue"]), &["--option"]).await;
    fails(
        ep,
        &["table", "create", "t", "--column", "ts:timestamp"],
        &["table name"],
    )
    .await;
    fails(
        ep,
        &["table", "create", "db.t", "--time-index", "ts"],
        &["--column"],
    )
    .await;
    fails(
        ep,
        &with(&["--partition-hash", "ts:2", "--partition-list", "ts:1"]),
        &["--partition-list"],
    )
    .await;
    fails(ep, &["table", "alter", "db.t"], &["--add-column"]).await;
    fails(
        ep,
        &["table", "alter", "db.t", "--rename-column", "a"],
        &["--rename-column"],
    )
    .await;
    fails(
        ep,
        &["table", "alter", "db.t", "--rename-to", "u", "--set", "a=b"],
        &["one kind"],
    )
    .await;
    fails(ep, &["route", "get"], &["--id"]).await;
    fails(
        ep,
        &["procedure", "list", "--state", "sleeping"],
        &["--state"],
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.json");
    std::fs::write(
        &path,
        r#"{"name": "db.t", "columns": [], "time_idx": "ts"}"#,
    )
    .unwrap();
    let path = path.display().to_string();
    fails(
        ep,
        &["table", "create", "--from-file", &path],
        &["--from-file", "time_idx"],
    )
    .await;
    fails(
        ep,
        &["table", "create", "--from-file", "/nonexistent/t.json"],
        &["--from-file"],
    )
    .await;

    // Nothing was created by any of it.
    let listed = json(ep, &["table", "list", "db"]).await;
    assert!(names(&listed).is_empty(), "{listed}");
    assert!(held_regions(&datanodes).is_empty());

    for (_, handle) in datanodes {
        handle.stop().await;
    }
    drop(cluster);
}
