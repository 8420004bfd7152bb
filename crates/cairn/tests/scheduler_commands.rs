//! `cairn ctl scheduler` and `cairn ctl operator`, and the HTTP resources that mirror them
//! (`/v1/schedulers`, `/v1/operators`), against a 3-node Cairn cluster (child processes), HTTP
//! asked of a follower as well as the leader: every scheduler is listed with its state, and
//! switching or configuring one over either shows in both; with maintenance mode on, a dry-run
//! plan names the moves an unbalanced cluster needs, with scheduler and reason, and nothing
//! moves; operators held back by the moves-per-minute limit are listed, shown with their steps
//! and cancelled while queued, and a running or finished one cannot be; unknown or malformed
//! names, ids, parameters and values fail (non-zero exit, 400/404/409 with a JSON error) naming
//! what is wrong, and change nothing.

mod common;
#[path = "common/settle.rs"]
#[allow(dead_code)]
mod settle;

use cairn_client::meta::MetaClient;
use cairn_proto::cairnpb::{DescribeTableRequest, TableName};
use cairn_sim::{Fleet, LoadPattern, SimConfig, WriteLoadConfig};
use common::ctl::{fails, json, ok};
use common::net::http_request;
use common::{TestCluster, STARTUP_TIMEOUT};
use serde_json::{json, Value};
use settle::eventually;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Every scheduler, in the order `scheduler list` prints them.
const SCHEDULERS: [&str; 6] = [
    "evict-leaders",
    "drain",
    "replica-repair",
    "label-spread",
    "hot-region",
    "balance-region",
];
/// The schedulers that even out an unbalanced cluster (the rest act on requests and repairs).
const BALANCING: [&str; 3] = ["label-spread", "hot-region", "balance-region"];
const FIRST_DATANODE: u64 = 1001;
const DATABASE: &str = "sched";
const TABLES: u32 = 2;
/// How often the schedulers plan a pass in the operator test.
const SCHEDULER_INTERVAL_MS: u64 = 300;

/// `METHOD path` on HTTP port `port` with a JSON `body`: the status and the JSON answer.
async fn http(port: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let answer = http_request(port, method, path, &[], body, None)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let value = serde_json::from_str(&answer.body).unwrap_or_else(|e| {
        panic!(
            "{method} {path} answered {} with no JSON ({e}): {}",
            answer.code, answer.body
        )
    });
    (answer.code, value)
}

/// `METHOD path` that must answer 200; its JSON.
async fn http_ok(port: u16, method: &str, path: &str, body: &str) -> Value {
    let (code, value) = http(port, method, path, body).await;
    assert_eq!(code, 200, "{method} {path} {body}: {value}");
    value
}

/// `METHOD path` that must answer `code` with `{"error": str}` naming every one of `expected`.
async fn http_refused(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
    code: u16,
    expected: &[&str],
) {
    let (got, value) = http(port, method, path, body).await;
    assert_eq!(got, code, "{method} {path} {body}: {value}");
    let error = value["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path}: no error string in {value}"));
    for want in expected {
        assert!(
            error.contains(want),
            "{method} {path} {body}: the error should name {want:?}: {error}"
        );
    }
}

/// The cells of the row of a `cairn ctl` table whose first cell is `key`.
fn row(table: &str, key: &str) -> Vec<String> {
    table
        .lines()
        .find_map(|line| {
            let cells: Vec<String> = line.split('|').map(|c| c.trim().to_string()).collect();
            (cells.len() > 2 && cells[1] == key).then(|| cells[1..cells.len() - 1].to_vec())
        })
        .unwrap_or_else(|| panic!("no row {key:?} in:\n{table}"))
}

/// One scheduler of a `scheduler list` / `GET /v1/schedulers` answer.
fn scheduler<'a>(list: &'a Value, name: &str) -> &'a Value {
    list["schedulers"]
        .as_array()
        .unwrap_or_else(|| panic!("no schedulers in {list}"))
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no scheduler {name} in {list}"))
}

/// Scheduler name → enabled, from a `scheduler list` / `GET /v1/schedulers` answer.
fn enabled(list: &Value) -> BTreeMap<String, bool> {
    list["schedulers"]
        .as_array()
        .unwrap_or_else(|| panic!("no schedulers in {list}"))
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["enabled"] == true,
            )
        })
        .collect()
}

/// A parameter of a scheduler as a number.
fn param(list: &Value, name: &str, key: &str) -> f64 {
    let raw = &scheduler(list, name)["params"][key];
    raw.as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} {key} is {raw} in {list}"))
}

/// Every scheduler enabled but those in `off`.
fn all_on_but(off: &[&str]) -> BTreeMap<String, bool> {
    SCHEDULERS
        .iter()
        .map(|n| (n.to_string(), !off.contains(n)))
        .collect()
}

/// A node other than the leader, and the leader.
async fn follower_and_leader(cluster: &TestCluster) -> (usize, usize) {
    let leader = cluster
        .wait_for_leader(None, STARTUP_TIMEOUT)
        .await
        .expect("a leader");
    ((leader + 1) % cluster.size(), leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_settings_change_alike_over_cli_and_http_and_bad_input_changes_nothing() {
    let cluster = TestCluster::start(3).await;
    let ep = cluster.client_addrs();
    let ep = ep.as_str();
    let (follower, leader) = follower_and_leader(&cluster).await;
    let (f_port, l_port) = (
        cluster.spec(follower).http_port,
        cluster.spec(leader).http_port,
    );

    // Every scheduler, on, with its parameters at the documented defaults.
    let text = ok(ep, &["scheduler", "list"]).await;
    for name in SCHEDULERS {
        assert_eq!(row(&text, name)[1], "true", "{name}:\n{text}");
    }
    assert!(!text.contains("maintenance mode is on"), "{text}");
    let list = json(ep, &["scheduler", "list"]).await;
    let names: Vec<&str> = list["schedulers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, SCHEDULERS, "{list}");
    assert_eq!(list["paused"], false);
    assert_eq!(enabled(&list), all_on_but(&[]));
    assert!(list["schedulers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["description"].as_str().is_some_and(|d| !d.is_empty())));
    assert_eq!(param(&list, "balance-region", "tolerance"), 0.02);
    assert_eq!(param(&list, "balance-region", "size_tolerance"), 0.1);
    assert_eq!(param(&list, "hot-region", "tolerance"), 0.1);
    assert_eq!(param(&list, "hot-region", "min_load"), 10.0);
    assert_eq!(param(&list, "hot-region", "sustained_share"), 0.5);
    assert_eq!(
        scheduler(&list, "replica-repair")["params"]["drop_extra"],
        "false"
    );
    // HTTP answers the same document, on a follower as on the leader.
    assert_eq!(http_ok(f_port, "GET", "/v1/schedulers", "").await, list);
    assert_eq!(http_ok(l_port, "GET", "/v1/schedulers", "").await, list);

    // Disable, then enable, over the CLI: the command prints the list after the change, and
    // every node's HTTP answer agrees.
    let text = ok(ep, &["scheduler", "disable", "hot-region"]).await;
    assert_eq!(row(&text, "hot-region")[1], "false", "{text}");
    assert_eq!(row(&text, "balance-region")[1], "true", "{text}");
    let list = json(ep, &["scheduler", "list"]).await;
    assert_eq!(enabled(&list), all_on_but(&["hot-region"]));
    for i in 0..cluster.size() {
        let port = cluster.spec(i).http_port;
        let answer = http_ok(port, "GET", "/v1/schedulers", "").await;
        assert_eq!(enabled(&answer), all_on_but(&["hot-region"]), "node {i}");
    }
    let list = json(ep, &["scheduler", "enable", "hot-region"]).await;
    assert_eq!(enabled(&list), all_on_but(&[]));
    assert_eq!(
        enabled(&http_ok(f_port, "GET", "/v1/schedulers", "").await),
        all_on_but(&[])
    );

    // The same over HTTP (PUT answers the list after the change), seen by the CLI.
    let put = http_ok(
        f_port,
        "PUT",
        "/v1/schedulers/label-spread",
        r#"{"enabled": false}"#,
    )
    .await;
    assert_eq!(enabled(&put), all_on_but(&["label-spread"]), "{put}");
    let list = json(ep, &["scheduler", "list"]).await;
    assert_eq!(enabled(&list), all_on_but(&["label-spread"]));
    let text = ok(ep, &["scheduler", "list"]).await;
    assert_eq!(row(&text, "label-spread")[1], "false", "{text}");
    let put = http_ok(
        l_port,
        "PUT",
        "/v1/schedulers/label-spread",
        r#"{"enabled": true}"#,
    )
    .await;
    assert_eq!(enabled(&put), all_on_but(&[]));
    assert_eq!(
        enabled(&json(ep, &["scheduler", "list"]).await),
        all_on_but(&[])
    );

    // Parameters: set over the CLI, shown by the list and HTTP; set over HTTP (merged with
    // those set before), shown by the CLI.
    let text = ok(
        ep,
        &[
            "scheduler",
            "config",
            "balance-region",
            "--set",
            "tolerance=0.05",
        ],
    )
    .await;
    assert_eq!(
        row(&text, "balance-region")[2],
        "size_tolerance=0.1 tolerance=0.05",
        "{text}"
    );
    let set = ["--set", "tolerance=0.5", "--set", "min_load=25"];
    let list = json(
        ep,
        &[&["scheduler", "config", "hot-region"][..], &set].concat(),
    )
    .await;
    assert_eq!(param(&list, "hot-region", "tolerance"), 0.5);
    assert_eq!(param(&list, "hot-region", "min_load"), 25.0);
    assert_eq!(param(&list, "balance-region", "tolerance"), 0.05);
    let answer = http_ok(f_port, "GET", "/v1/schedulers", "").await;
    assert_eq!(param(&answer, "balance-region", "tolerance"), 0.05);
    assert_eq!(param(&answer, "hot-region", "tolerance"), 0.5);
    let put = http_ok(
        f_port,
        "PUT",
        "/v1/schedulers/hot-region",
        r#"{"params": {"min_load": "40"}}"#,
    )
    .await;
    assert_eq!(param(&put, "hot-region", "min_load"), 40.0);
    assert_eq!(param(&put, "hot-region", "tolerance"), 0.5, "kept");
    assert_eq!(enabled(&put), all_on_but(&[]), "enabled untouched");
    let list = json(ep, &["scheduler", "list"]).await;
    assert_eq!(param(&list, "hot-region", "min_load"), 40.0);
    assert_eq!(list, http_ok(l_port, "GET", "/v1/schedulers", "").await);

    // Bad names, parameters and values: refused naming what is wrong (and what is allowed).
    let before = list;
    let cli_refused: [(&[&str], &[&str]); 10] = [
        (
            &["scheduler", "disable", "balance-leader"],
            &["balance-leader", "balance-region"],
        ),
        (
            &["scheduler", "enable", "balance-leader"],
            &["balance-leader", "hot-region"],
        ),
        (
            &["scheduler", "config", "hot-region", "--set", "speed=1"],
            &["speed", "tolerance", "min_load", "sustained_share"],
        ),
        // A scheduler with no parameters says so.
        (
            &["scheduler", "config", "label-spread", "--set", "x=1"],
            &["label-spread", "\"x\"", "takes no parameters"],
        ),
        (
            &["scheduler", "config", "hot-region", "--set", "tolerance=-1"],
            &["tolerance", "between"],
        ),
        (
            &[
                "scheduler",
                "config",
                "balance-region",
                "--set",
                "tolerance=x",
            ],
            &["tolerance", "not a number"],
        ),
        (
            &[
                "scheduler",
                "config",
                "replica-repair",
                "--set",
                "drop_extra=maybe",
            ],
            &["drop_extra", "maybe"],
        ),
        // One bad parameter refuses the whole change: tolerance stays 0.5.
        (
            &[
                "scheduler",
                "config",
                "hot-region",
                "--set",
                "tolerance=0.2",
                "--set",
                "speed=1",
            ],
            &["speed"],
        ),
        (
            &[
                "scheduler",
                "config",
                "balance-region",
                "--set",
                "tolerance",
            ],
            &["--set", "KEY=VALUE"],
        ),
        (&["scheduler", "config", "balance-region"], &["--set"]),
    ];
    for (args, expected) in cli_refused {
        fails(ep, args, expected).await;
    }
    let http_bad = [
        (
            "/v1/schedulers/balance-leader",
            r#"{"enabled": false}"#,
            &["balance-leader", "balance-region"][..],
        ),
        (
            "/v1/schedulers/balance-region",
            r#"{"params": {"tolerance": "2"}}"#,
            &["tolerance", "between"],
        ),
        (
            "/v1/schedulers/hot-region",
            r#"{"params": {"speed": "1"}}"#,
            &["speed", "tolerance"],
        ),
        (
            "/v1/schedulers/hot-region",
            r#"{"params": {"min_load": "40", "tolerance": "100"}}"#,
            &["tolerance", "between"],
        ),
        (
            "/v1/schedulers/drain",
            r#"{"params": {"x": "1"}}"#,
            &["drain", "takes no parameters"],
        ),
        // Malformed bodies: an unknown field, a wrong type, a number for a string, not JSON.
        (
            "/v1/schedulers/hot-region",
            r#"{"on": true}"#,
            &["body", "on"],
        ),
        (
            "/v1/schedulers/hot-region",
            r#"{"enabled": "no"}"#,
            &["body"],
        ),
        (
            "/v1/schedulers/hot-region",
            r#"{"params": {"tolerance": 0.3}}"#,
            &["body"],
        ),
        ("/v1/schedulers/hot-region", "{", &["body"]),
    ];
    for (path, body, expected) in http_bad {
        http_refused(f_port, "PUT", path, body, 400, expected).await;
    }
    assert_eq!(
        json(ep, &["scheduler", "list"]).await,
        before,
        "nothing changed"
    );
    assert_eq!(http_ok(f_port, "GET", "/v1/schedulers", "").await, before);

    // No operators yet (no datanodes); unknown and malformed ids are refused.
    assert_eq!(json(ep, &["operator", "list"]).await, json!([]));
    assert_eq!(
        json(ep, &["operator", "list", "--finished"]).await,
        json!([])
    );
    assert_eq!(http_ok(f_port, "GET", "/v1/operators", "").await, json!([]));
    let finished = http_ok(f_port, "GET", "/v1/operators?finished=true", "").await;
    assert_eq!(finished, json!([]));
    fails(
        ep,
        &["operator", "show", "999999"],
        &["999999", "not found"],
    )
    .await;
    fails(
        ep,
        &["operator", "cancel", "999999"],
        &["999999", "not found"],
    )
    .await;
    fails(ep, &["operator", "show", "abc"], &["ID", "abc"]).await;
    fails(ep, &["operator", "cancel", "12x"], &["ID", "12x"]).await;
    for method in ["GET", "DELETE"] {
        let path = "/v1/operators/999999";
        http_refused(f_port, method, path, "", 404, &["999999", "not found"]).await;
        http_refused(f_port, method, "/v1/operators/abc", "", 400, &["id", "abc"]).await;
    }
    let path = "/v1/operators?finished=yes";
    http_refused(f_port, "GET", path, "", 400, &["finished", "yes"]).await;
    drop(cluster);
}

/// Region → leader of every region of the test's tables, by their routes.
async fn leaders(client: &MetaClient) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for t in 0..TABLES {
        let name = TableName {
            catalog: String::new(),
            schema: DATABASE.into(),
            name: format!("sim_{t}"),
        };
        let d = client
            .describe_table(DescribeTableRequest {
                name: Some(name),
                serializable: false,
            })
            .await
            .expect("describe");
        for r in d.route.expect("route").regions {
            out.insert(r.region_id, r.leader_node);
        }
    }
    out
}

/// Checks a planned operator, or an operator from the list, against the routes `before` it.
fn check_move(o: &Value, before: &BTreeMap<u64, u64>, new_nodes: &BTreeSet<u64>) {
    let scheduler = o["scheduler"].as_str().unwrap_or_default();
    assert!(BALANCING.contains(&scheduler), "{o}");
    assert!(
        o["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "a reason: {o}"
    );
    assert_eq!(o["kind"], "leader", "{o}");
    let region = o["region_id"].as_u64().unwrap();
    let from = o["from_node"].as_u64().unwrap();
    assert_eq!(
        before.get(&region),
        Some(&from),
        "moves from its leader: {o}"
    );
    assert!(
        new_nodes.contains(&o["to_node"].as_u64().unwrap()),
        "to a new node: {o}"
    );
    assert!(
        o["steps"].as_array().is_some_and(|s| !s.is_empty()),
        "steps: {o}"
    );
}

/// The operators of a `[Operator]` answer with `status`.
fn with_status<'a>(ops: &'a Value, status: &str) -> Vec<&'a Value> {
    ops.as_array()
        .unwrap_or_else(|| panic!("not an array: {ops}"))
        .iter()
        .filter(|o| o["status"] == status)
        .collect()
}

fn ids(ops: &[&Value]) -> BTreeSet<u64> {
    ops.iter().map(|o| o["id"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_moves_nothing_and_queued_operators_are_listed_shown_and_cancelled() {
    // One move a minute: the first pass out of maintenance mode starts one and queues the rest.
    let interval = SCHEDULER_INTERVAL_MS.to_string();
    let args = [
        "--node-heartbeat-interval-ms",
        &interval,
        "--scheduler-interval-ms",
        &interval,
        "--scheduler-moves-per-minute-max",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cluster = TestCluster::start_with_args(3, args).await;
    let ep = cluster.client_addrs();
    let ep = ep.as_str();
    let (follower, _) = follower_and_leader(&cluster).await;
    let port = cluster.spec(follower).http_port;
    let client = MetaClient::new((0..3).map(|i| cluster.client_addr(i))).unwrap();

    // One datanode holds every region of two tables (4 regions each).
    let config = SimConfig {
        datanodes: 1,
        regions_per_node: 0,
        frontends: 0,
        interval_ms: SCHEDULER_INTERVAL_MS,
        load: LoadPattern::Constant,
        seed: 13,
        first_node_id: FIRST_DATANODE,
    };
    let mut fleet = Fleet::start(client.clone(), &config, None).expect("fleet");
    eventually("the datanode alive", || async {
        let nodes = client.list_nodes(0).await.ok()?.nodes;
        nodes.iter().any(|n| n.state == "alive").then_some(())
    })
    .await;
    fleet
        .start_writes(WriteLoadConfig {
            database: DATABASE.into(),
            tables: TABLES,
            partitions: 4,
            writes_per_sec: 50,
            rows_per_write: 1,
            seed: 3,
        })
        .expect("write load");
    eventually("tables created", || {
        let ready = fleet
            .write_stats()
            .is_some_and(|s| s.tables_ready == TABLES);
        async move { ready.then_some(()) }
    })
    .await;

    // Maintenance mode on, then two empty datanodes join: the plan says what would move.
    ok(ep, &["maintenance", "on", "--reason", "scheduler test"]).await;
    let new_nodes: BTreeSet<u64> = [FIRST_DATANODE + 1, FIRST_DATANODE + 2].into();
    for id in &new_nodes {
        fleet.add_datanode(*id).unwrap();
    }
    let before = leaders(&client).await;
    assert_eq!(before.len(), 8);
    assert!(before.values().all(|l| *l == FIRST_DATANODE), "{before:?}");
    let to_both = |plan: &Value| {
        let to: BTreeSet<u64> = plan
            .as_array()
            .map(|a| a.iter().filter_map(|o| o["to_node"].as_u64()).collect())
            .unwrap_or_default();
        to == new_nodes
    };
    let plan = eventually("a plan onto both new datanodes", || async {
        let plan = json(ep, &["scheduler", "plan"]).await;
        to_both(&plan).then_some(plan)
    })
    .await;
    for o in plan.as_array().unwrap() {
        check_move(o, &before, &new_nodes);
        assert_eq!(o["status"], "planned", "{o}");
    }
    let plan = eventually("the HTTP plan onto both new datanodes", || async {
        let plan = http_ok(port, "GET", "/v1/schedulers/plan", "").await;
        to_both(&plan).then_some(plan)
    })
    .await;
    for o in plan.as_array().unwrap() {
        check_move(o, &before, &new_nodes);
        assert_eq!(o["status"], "planned", "{o}");
    }
    let text = ok(ep, &["scheduler", "plan"]).await;
    assert!(
        text.contains("SCHEDULER") && text.contains("REASON"),
        "{text}"
    );
    let rows: Vec<&str> = text.lines().filter(|l| l.contains("| planned")).collect();
    assert!(!rows.is_empty(), "{text}");
    // A planned operator has no id yet: `-`, not 0.
    assert!(
        rows.iter()
            .all(|l| l.trim_start_matches(['|', ' ']).starts_with("- ")),
        "{text}"
    );
    let text = ok(ep, &["scheduler", "list"]).await;
    assert!(text.contains("maintenance mode is on"), "{text}");
    assert_eq!(json(ep, &["scheduler", "list"]).await["paused"], true);
    // Several passes go by paused: nothing queued, nothing moved.
    tokio::time::sleep(Duration::from_millis(5 * SCHEDULER_INTERVAL_MS)).await;
    assert_eq!(
        json(ep, &["operator", "list", "--finished"]).await,
        json!([])
    );
    assert_eq!(http_ok(port, "GET", "/v1/operators", "").await, json!([]));
    assert_eq!(leaders(&client).await, before, "nothing moved");

    // Out of maintenance mode for one pass: it queues the moves and starts one (the rate
    // allows one a minute); back in maintenance mode, the rest stay queued.
    ok(ep, &["maintenance", "off"]).await;
    eventually("two operators queued", || async {
        let ops = client.list_operators(false).await.ok()?.operators;
        (ops.iter().filter(|o| o.status == "queued").count() >= 2).then_some(())
    })
    .await;
    ok(ep, &["maintenance", "on", "--reason", "scheduler test"]).await;

    let listed = json(ep, &["operator", "list", "--finished"]).await;
    let queued = with_status(&listed, "queued");
    let started: Vec<&Value> = ["running", "done"]
        .iter()
        .flat_map(|s| with_status(&listed, s))
        .collect();
    assert!(queued.len() >= 2, "{listed}");
    assert_eq!(started.len(), 1, "one move a minute: {listed}");
    for o in queued.iter().chain(&started) {
        check_move(o, &before, &new_nodes);
        assert!(o["id"].as_u64().unwrap() > 0, "{o}");
        assert!(o["created_ms"].as_u64().unwrap() > 0, "{o}");
    }
    let regions: BTreeSet<u64> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["region_id"].as_u64().unwrap())
        .collect();
    assert_eq!(regions.len(), listed.as_array().unwrap().len(), "{listed}");
    let queued_ids = ids(&queued);
    // HTTP lists the same queued operators; the text list names each.
    let over_http = http_ok(port, "GET", "/v1/operators", "").await;
    assert_eq!(ids(&with_status(&over_http, "queued")), queued_ids);
    let text = ok(ep, &["operator", "list"]).await;
    for id in &queued_ids {
        let cells = row(&text, &id.to_string());
        assert_eq!(cells[7], "queued", "{text}");
        assert!(BALANCING.contains(&cells[5].as_str()), "{text}");
    }

    // One queued operator shown (CLI JSON, HTTP and text alike), then cancelled over the CLI.
    let first = queued[0];
    let id = first["id"].as_u64().unwrap().to_string();
    let shown = json(ep, &["operator", "show", &id]).await;
    assert_eq!(&shown, first);
    let path = format!("/v1/operators/{id}");
    assert_eq!(http_ok(port, "GET", &path, "").await, shown);
    let text = ok(ep, &["operator", "show", &id]).await;
    assert_eq!(row(&text, "status")[1], "queued", "{text}");
    let steps: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(row(&text, "steps")[1], steps.join("; "), "{text}");
    let cancelled = json(ep, &["operator", "cancel", &id]).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["outcome"], "cancelled by an operator");
    assert!(cancelled["finished_ms"].as_u64().unwrap() > 0);
    let live = json(ep, &["operator", "list"]).await;
    assert!(!ids(&with_status(&live, "queued")).contains(&first["id"].as_u64().unwrap()));
    assert_eq!(
        json(ep, &["operator", "show", &id]).await["status"],
        "cancelled"
    );
    fails(ep, &["operator", "cancel", &id], &[&id, "has finished"]).await;
    http_refused(port, "DELETE", &path, "", 409, &[&id, "has finished"]).await;

    // Another cancelled over HTTP, on a follower.
    let second = queued[1]["id"].as_u64().unwrap();
    let path = format!("/v1/operators/{second}");
    let cancelled = http_ok(port, "DELETE", &path, "").await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(http_ok(port, "GET", &path, "").await["status"], "cancelled");
    let live = http_ok(port, "GET", "/v1/operators", "").await;
    let mut left = queued_ids.clone();
    left.remove(&first["id"].as_u64().unwrap());
    left.remove(&second);
    assert_eq!(ids(&with_status(&live, "queued")), left, "{live}");
    let all = http_ok(port, "GET", "/v1/operators?finished=true", "").await;
    let gone: BTreeSet<u64> = [first["id"].as_u64().unwrap(), second].into();
    assert_eq!(ids(&with_status(&all, "cancelled")), gone, "{all}");
    http_refused(port, "DELETE", &path, "", 409, &["has finished"]).await;

    // The started one is past cancelling, running or finished.
    let started_id = started[0]["id"].as_u64().unwrap().to_string();
    let path = format!("/v1/operators/{started_id}");
    http_refused(port, "DELETE", &path, "", 409, &[&started_id]).await;
    fails(ep, &["operator", "cancel", &started_id], &[&started_id]).await;

    // Only the started operator's region may have moved; the queued and cancelled stayed.
    let moved_region = started[0]["region_id"].as_u64().unwrap();
    let now = leaders(&client).await;
    for (region, leader) in &now {
        if *region != moved_region {
            assert_eq!(Some(leader), before.get(region), "region {region} moved");
        }
    }
    fleet.stop().await;
    drop(cluster);
}
