//! The schedulers against a 3-node Cairn cluster (child processes) with simulated datanodes and
//! a frontend writing: a growing cluster evens out by itself with the default scheduler
//! settings; maintenance mode pauses scheduling while a dry-run plan still shows what would
//! move; a disabled scheduler plans nothing; bad settings get typed errors naming what is
//! allowed; no region moves twice; a queued operator cancelled by a user or gone stale is in the
//! event log with its scheduler and why.

mod common;
#[path = "common/settle.rs"]
#[allow(dead_code)]
mod settle;

use cairn_client::meta::MetaClient;
use cairn_sim::{Fleet, SimConfig, WriteLoadConfig};
use common::TestCluster;
use settle::eventually;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tonic::Code;

const FIRST_DATANODE: u64 = 1001;
/// The bound: a growing cluster evens out within 3 minutes.
const EVEN_OUT_WITHIN: Duration = Duration::from_secs(180);

/// Regions each datanode leads, by the leader's node registry.
async fn led(client: &MetaClient) -> Option<BTreeMap<u64, u64>> {
    let nodes = client.list_nodes(0).await.ok()?.nodes;
    Some(
        nodes
            .iter()
            .filter_map(|n| Some((n.identity.as_ref()?.id, n.led_regions)))
            .filter(|(id, _)| *id >= FIRST_DATANODE)
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_growing_cluster_evens_out_by_itself_and_maintenance_pauses_it() {
    // Default scheduler settings; only the datanode heartbeat is quicker, to keep the test short.
    let args = ["--node-heartbeat-interval-ms", "500"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cluster = TestCluster::start_with_args(3, args).await;
    let endpoints: Vec<String> = (0..3).map(|i| cluster.client_addr(i)).collect();
    let client = MetaClient::new(endpoints).unwrap();
    let config = SimConfig {
        datanodes: 2,
        regions_per_node: 0,
        frontends: 0,
        interval_ms: 500,
        load: cairn_sim::LoadPattern::Constant,
        seed: 11,
        first_node_id: FIRST_DATANODE,
    };
    let mut fleet = Fleet::start(client.clone(), &config, None).expect("fleet");
    eventually("two datanodes alive", || async {
        let nodes = client.list_nodes(0).await.ok()?.nodes;
        (nodes.iter().filter(|n| n.state == "alive").count() == 2).then_some(())
    })
    .await;
    // 8 tables × 4 regions, written to meanwhile.
    fleet
        .start_writes(WriteLoadConfig {
            database: "grow".into(),
            tables: 8,
            partitions: 4,
            writes_per_sec: 200,
            rows_per_write: 1,
            seed: 5,
        })
        .expect("write load");
    eventually("tables created", || {
        let ready = fleet.write_stats().is_some_and(|s| s.tables_ready == 8);
        async move { ready.then_some(()) }
    })
    .await;
    // The sim's datanodes are in different zones (zone-2, zone-0): however placement spread
    // the tables, label-spread evens each table over the two zones, so each leads 16.
    let before = eventually("32 regions led 16 and 16, nothing moving", || async {
        let led = led(&client).await?;
        let ops = client.list_operators(false).await.ok()?.operators;
        let plan = client.plan_schedule().await.ok()?.operators;
        (ops.is_empty() && plan.is_empty() && led.values().copied().collect::<Vec<_>>() == [16, 16])
            .then_some(led)
    })
    .await;
    let earlier = client.list_operators(true).await.unwrap().operators.len();

    // Bad settings are refused, naming what is allowed; nothing changes.
    let err = client
        .set_scheduler("balance-leader", Some(false), BTreeMap::new())
        .await
        .unwrap_err();
    let status = err.status().expect("a gRPC status");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("balance-region"), "{status:?}");
    let bad = BTreeMap::from([("tolerance".to_string(), "2".to_string())]);
    let err = client
        .set_scheduler("balance-region", None, bad)
        .await
        .unwrap_err();
    assert!(err.status().unwrap().message().contains("between"), "{err}");
    let list = client.list_schedulers().await.unwrap();
    assert!(list.schedulers.iter().all(|s| s.enabled), "{list:?}");

    // Maintenance mode on, then two datanodes join: nothing moves, but the plan says what would.
    client.set_maintenance(true, "test").await.unwrap();
    fleet.add_datanode(FIRST_DATANODE + 2).unwrap();
    fleet.add_datanode(FIRST_DATANODE + 3).unwrap();
    let plan = eventually("a plan for both new nodes", || async {
        let plan = client.plan_schedule().await.ok()?.operators;
        let to = |n: u64| plan.iter().any(|o| o.to_node == n);
        (to(FIRST_DATANODE + 2) && to(FIRST_DATANODE + 3)).then_some(plan)
    })
    .await;
    // Counts call for 16 moves (fewer may fit one pass's per-node limit); the frontend's writes
    // make the old nodes hot too, so some may be hot-region's.
    let by = |o: &cairn_proto::cairnpb::OperatorView| {
        ["balance-region", "hot-region"].contains(&o.scheduler.as_str()) && o.status == "planned"
    };
    assert!(plan.iter().all(by), "{plan:?}");
    assert!(
        plan.iter().all(|o| o.to_node > FIRST_DATANODE + 1),
        "{plan:?}"
    );
    // Several passes (2 s apart) while paused: nothing queued, nothing moved.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ops = client.list_operators(true).await.unwrap().operators;
    assert_eq!(ops.len(), earlier, "nothing queued while paused: {ops:?}");
    assert_eq!(led(&client).await.unwrap(), {
        let mut m = before.clone();
        m.insert(FIRST_DATANODE + 2, 0);
        m.insert(FIRST_DATANODE + 3, 0);
        m
    });
    assert!(client.list_schedulers().await.unwrap().paused);

    // A disabled scheduler plans nothing.
    client
        .set_scheduler("balance-region", Some(false), BTreeMap::new())
        .await
        .unwrap();
    let plan = client.plan_schedule().await.unwrap().operators;
    assert!(
        plan.iter().all(|o| o.scheduler != "balance-region"),
        "{plan:?}"
    );
    client
        .set_scheduler("balance-region", Some(true), BTreeMap::new())
        .await
        .unwrap();

    // Maintenance off: within 3 minutes each of the four leads 7 to 9 regions.
    client.set_maintenance(false, "").await.unwrap();
    let start = Instant::now();
    let (mut even, mut last) = (None, None);
    while start.elapsed() < EVEN_OUT_WITHIN {
        if let Some(led) = led(&client).await {
            if led.len() == 4 && led.values().all(|n| (7..=9).contains(n)) {
                even = Some(led);
                break;
            }
            last = Some(led);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let even = even.unwrap_or_else(|| panic!("not even after 3 minutes: {last:?}"));
    eprintln!("even after {:?}: {even:?}", start.elapsed());

    // Every operator finished; no region moved twice; each is in the event log.
    let events_before = client
        .list_events(0, "operator", 0)
        .await
        .unwrap()
        .events
        .len();
    // Settled: nothing running, nothing more planned, the counts still even.
    let ops = eventually("operators finished and nothing more planned", || async {
        let ops = client.list_operators(true).await.ok()?.operators;
        let plan = client.plan_schedule().await.ok()?.operators;
        (plan.is_empty() && ops.iter().all(|o| o.status == "done")).then_some(ops)
    })
    .await;
    let settled = led(&client).await.unwrap();
    assert!(settled.values().all(|n| (7..=9).contains(n)), "{settled:?}");
    // The newest first among the finished: those planned since the two nodes joined.
    let ops = &ops[..ops.len() - earlier];
    let mut moved: HashMap<u64, usize> = HashMap::new();
    for o in ops {
        *moved.entry(o.region_id).or_default() += 1;
        // Open on the new node, downgrade, upgrade and publish the route, close on the old one.
        assert_eq!(o.steps.len(), 4, "{o:?}");
    }
    assert!(
        moved.values().all(|n| *n == 1),
        "a region moved twice: {ops:?}"
    );
    assert!(ops.len() <= 20, "{} moves for a minimum of 16", ops.len());
    let events = client.list_events(0, "operator", 0).await.unwrap().events;
    assert_eq!(events.len(), ops.len() + earlier, "one event per operator");
    assert!(
        ops.iter()
            .all(|o| ["balance-region", "hot-region"].contains(&o.scheduler.as_str())),
        "{ops:?}"
    );
    assert!(events_before <= events.len());
    // The frontend writes on.
    let writes = fleet.write_stats().unwrap().writes_ok;
    eventually("writes continuing", || {
        let now = fleet.write_stats().unwrap().writes_ok;
        async move { (now > writes + 50).then_some(()) }
    })
    .await;
    fleet.stop().await;
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_operators_are_in_the_event_log_with_scheduler_and_reason() {
    // One move a minute: the second datanode's moves wait in the queue.
    let args = [
        "--node-heartbeat-interval-ms",
        "500",
        "--scheduler-moves-per-minute-max",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cluster = TestCluster::start_with_args(1, args).await;
    let client = MetaClient::new(vec![cluster.client_addr(0)]).unwrap();
    let config = SimConfig {
        datanodes: 1,
        regions_per_node: 0,
        frontends: 0,
        interval_ms: 500,
        load: cairn_sim::LoadPattern::Constant,
        seed: 12,
        first_node_id: FIRST_DATANODE,
    };
    let mut fleet = Fleet::start(client.clone(), &config, None).expect("fleet");
    fleet
        .start_writes(WriteLoadConfig {
            database: "cancel".into(),
            tables: 4,
            partitions: 4,
            writes_per_sec: 20,
            rows_per_write: 1,
            seed: 6,
        })
        .expect("write load");
    eventually("tables created", || {
        let ready = fleet.write_stats().is_some_and(|s| s.tables_ready == 4);
        async move { ready.then_some(()) }
    })
    .await;
    let joined = FIRST_DATANODE + 1;
    fleet.add_datanode(joined).unwrap();
    let queued = eventually("moves queued behind the rate limit", || async {
        let ops = client.list_operators(false).await.ok()?.operators;
        let queued: Vec<_> = ops.into_iter().filter(|o| o.status == "queued").collect();
        (queued.len() >= 2).then_some(queued)
    })
    .await;
    assert!(
        queued.iter().all(|o| o.deadline_ms > o.created_ms),
        "{queued:?}"
    );

    // A user cancels one; the drain of the node they go to makes the others stale.
    let by_user = client.cancel_operator(queued[0].id).await.unwrap();
    assert_eq!(by_user.status, "cancelled");
    client
        .drain_node(joined, cairn_proto::cairnpb::DrainMode::Drain)
        .await
        .expect("drain");
    let stale = eventually("the other queued moves cancelled as stale", || async {
        let ops = client.list_operators(true).await.ok()?.operators;
        let ended: Vec<_> = ops
            .into_iter()
            .filter(|o| queued[1..].iter().any(|q| q.id == o.id))
            .collect();
        (ended.len() == queued.len() - 1 && ended.iter().all(|o| o.status == "cancelled"))
            .then_some(ended)
    })
    .await;
    assert!(
        stale.iter().all(|o| o.outcome.starts_with("stale: ")),
        "{stale:?}"
    );

    // Each is an `operator` event naming its region, scheduler, status and why.
    let recorded = |o: &cairn_proto::cairnpb::OperatorView,
                    events: &[cairn_proto::cairnpb::EventView]| {
        events.iter().any(|e| {
            e.subject == format!("region {}", o.region_id)
                && e.message
                    == format!(
                        "{}: operator {} cancelled: {}",
                        o.scheduler, o.id, o.outcome
                    )
                && e.figures.get("scheduler") == Some(&o.scheduler)
                && e.figures.get("operator") == Some(&o.id.to_string())
                && e.figures.get("status").map(String::as_str) == Some("cancelled")
                && e.figures.get("outcome") == Some(&o.outcome)
        })
    };
    let events = eventually("the cancellations in the event log", || async {
        let events = client.list_events(0, "operator", 0).await.ok()?.events;
        (recorded(&by_user, &events) && stale.iter().all(|o| recorded(o, &events)))
            .then_some(events)
    })
    .await;
    assert_eq!(by_user.outcome, "cancelled by an operator", "{events:?}");
    fleet.stop().await;
    drop(cluster);
}
