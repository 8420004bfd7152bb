//! The stats history the leader keeps, against a 3-node Cairn cluster (child processes) with a
//! simulated datanode: a node's history grows with its heartbeats, a region's load history
//! holds exactly what the datanode's heartbeats reported for it and is smoothed as their mean;
//! a follower answers through the leader; gRPC, HTTP and `cairn ctl` give the same history,
//! and unknown or malformed ids get NotFound / InvalidArgument (404 / 400, a non-zero exit).
//! After the leader is killed, the new one is not blind: it serves the old leader's last
//! reports and a region's smoothed load, marked restored.

mod common;
#[path = "common/settle.rs"]
#[allow(dead_code)]
mod settle;

use cairn_client::meta::{unix_time_ms, MetaClient};
use cairn_sim::load::{region_load_per_sec, region_weight, units, REGION_BYTES};
use cairn_sim::{Fleet, LoadPattern, SimConfig, WriteLoadConfig};
use cairn_types::json::{NodeStatsHistoryJson, RegionStatsHistoryJson};
use common::TestCluster;
use settle::eventually;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;

const DATANODE: u64 = 1001;
const SEED: u64 = 23;
const HEARTBEAT_MS: &str = "300";
/// The leader persists what a new leader starts from this often in this test.
const PERSIST_MS: u64 = 600;
/// The leader's clock and the region sample's conversion of the same instant may differ by
/// this much (rounding, and the wall clock's drift between the two reads).
const SAME_REPORT_MS: u64 = 50;

/// `cairn ctl --endpoints E ARGS`: (exit success, stdout, stderr).
async fn ctl(endpoints: String, args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(["ctl", "--endpoints", &endpoints])
            .args(&args)
            .env_remove("CAIRN_ENDPOINTS")
            .output()
            .expect("run cairn ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_and_region_histories_show_what_the_datanode_reported() {
    let started_ms = unix_time_ms();
    let args = [
        "--node-heartbeat-interval-ms",
        HEARTBEAT_MS,
        "--scheduler-interval-ms",
        HEARTBEAT_MS,
        "--scheduler-state-persist-interval-ms",
        &PERSIST_MS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut cluster = TestCluster::start_with_args(3, args).await;
    let endpoints: Vec<String> = (0..3).map(|i| cluster.client_addr(i)).collect();
    let client = MetaClient::new(endpoints.clone()).unwrap();
    let config = SimConfig {
        datanodes: 1,
        regions_per_node: 0,
        frontends: 0,
        interval_ms: 300,
        load: LoadPattern::Constant,
        seed: SEED,
        first_node_id: DATANODE,
    };
    let mut fleet = Fleet::start(client.clone(), &config, None).expect("fleet");
    fleet
        .start_writes(WriteLoadConfig {
            database: "stats".into(),
            tables: 1,
            partitions: 2,
            writes_per_sec: 5,
            rows_per_write: 1,
            seed: 5,
        })
        .expect("write load");
    let regions: Vec<u64> = eventually("the datanode leads both regions", || {
        let held = fleet.node(DATANODE).map(|n| n.held_regions());
        async move {
            let ids: Vec<u64> = held?.into_iter().map(|(id, _)| id).collect();
            (ids.len() == 2).then_some(ids)
        }
    })
    .await;

    // A follower answers by asking the leader.
    let leader = cluster.leader_index().await.expect("a leader");
    let follower = MetaClient::new([cluster.client_addr((leader + 1) % 3)]).unwrap();

    // The node's history grows with its heartbeats, each report in order and in time.
    let first = eventually("three reports counting both regions", || async {
        let h = follower.get_node_stats(DATANODE).await.ok()?;
        (h.samples.len() >= 3 && h.samples.last()?.region_count == 2).then_some(h)
    })
    .await;
    let grown = eventually("more reports", || async {
        let h = client.get_node_stats(DATANODE).await.ok()?;
        (h.samples.len() > first.samples.len()).then_some(h)
    })
    .await;
    assert_eq!(grown.node_id, DATANODE);
    let now_ms = unix_time_ms();
    for pair in grown.samples.windows(2) {
        assert!(pair[0].at_ms < pair[1].at_ms, "{pair:?}");
    }
    for s in &grown.samples {
        assert!(
            (started_ms..=now_ms).contains(&s.at_ms),
            "{s:?} not in {started_ms}..={now_ms}"
        );
        assert!(s.report_interval_ms > 0 && !s.restored, "{s:?}");
    }

    // Each region's samples are the datanode's reports for it: each sample matches one node
    // report (by time) and holds the load the simulator derives from that report's interval.
    for &region in &regions {
        let h = eventually("two load samples", || async {
            let h = follower.get_region_stats(region).await.ok()?;
            (h.samples.len() >= 2).then_some(h)
        })
        .await;
        let node = client.get_node_stats(DATANODE).await.unwrap();
        let w = region_weight(SEED, region);
        // Per second at load factor 1 (a constant load), as the simulator derives it.
        let (wcus_per_sec, rcus_per_sec) = region_load_per_sec(SEED, region, fleet.table_load());
        assert_eq!(h.region_id, region);
        assert_eq!(h.leader_node, DATANODE);
        assert_eq!(h.approximate_bytes, (REGION_BYTES as f64 * w) as u64);
        for s in &h.samples {
            let report = node
                .samples
                .iter()
                .find(|n| n.at_ms.abs_diff(s.at_ms) <= SAME_REPORT_MS)
                .unwrap_or_else(|| panic!("no node report at {s:?}: {node:?}"));
            let interval = report.report_interval_ms;
            assert_eq!(s.wcus, units(wcus_per_sec, interval), "{s:?}");
            assert_eq!(s.rcus, units(rcus_per_sec, interval), "{s:?}");
            assert!(!s.restored);
        }
        let n = h.samples.len() as f64;
        let mean = h.samples.iter().map(|s| s.wcus as f64).sum::<f64>() / n;
        assert!((h.smoothed_wcus - mean).abs() < 1e-9, "{h:?}");
        assert!(h.samples.len() <= 6, "{h:?}");
    }

    // Unknown and malformed ids.
    let status = |e: cairn_client::ClientError| e.status().expect("a gRPC status").clone();
    let e = status(follower.get_node_stats(999).await.unwrap_err());
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("999"), "{e:?}");
    let e = status(client.get_region_stats(4242).await.unwrap_err());
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("4242"), "{e:?}");
    let e = status(client.get_node_stats(0).await.unwrap_err());
    assert_eq!(e.code(), Code::InvalidArgument);

    // HTTP, on a follower.
    let f = (leader + 1) % 3;
    let (code, body) = cluster
        .http_get(f, &format!("/v1/stats/nodes/{DATANODE}"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let h: NodeStatsHistoryJson = serde_json::from_str(&body).unwrap();
    assert!(h.samples.len() >= grown.samples.len(), "{h:?}");
    let (code, body) = cluster
        .http_get(f, &format!("/v1/stats/regions/{}", regions[0]))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let h: RegionStatsHistoryJson = serde_json::from_str(&body).unwrap();
    assert_eq!(h.leader_node, DATANODE);
    let (code, body) = cluster.http_get(f, "/v1/stats/regions/4242").await.unwrap();
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("4242") && body.contains("error"), "{body}");
    let (code, body) = cluster.http_get(f, "/v1/stats/nodes/abc").await.unwrap();
    assert_eq!(code, 400, "{body}");

    // cairn ctl: JSON and table output, and a failure for an unknown id.
    let all = endpoints.join(",");
    let (ok, out, err) = ctl(all.clone(), &["-o", "json", "stats", "node", "1001"]).await;
    assert!(ok, "{err}");
    let h: NodeStatsHistoryJson = serde_json::from_str(&out).unwrap();
    assert!(h.samples.len() >= grown.samples.len(), "{out}");
    let region = regions[0].to_string();
    let (ok, out, err) = ctl(all.clone(), &["stats", "region", &region]).await;
    assert!(ok, "{err}");
    assert!(out.contains("leader 1001") && out.contains("WCUS"), "{out}");
    let (ok, table, err) = ctl(all.clone(), &["stats", "node", "1001"]).await;
    assert!(ok && table.contains("live"), "{table}{err}");
    eprintln!("{out}{table}");
    let (ok, _, err) = ctl(all.clone(), &["stats", "node", "999"]).await;
    assert!(!ok);
    assert!(
        err.contains("stats node 999") && err.contains("999"),
        "{err}"
    );
    let (ok, _, err) = ctl(all, &["stats", "region", "x"]).await;
    assert!(!ok && err.contains("ID"), "{err}");

    // A new leader is not blind. Two persist intervals (and passes) pass; what the old leader
    // persisted is then among what it serves now.
    tokio::time::sleep(Duration::from_millis(2 * PERSIST_MS + 300)).await;
    let old = client.get_node_stats(DATANODE).await.unwrap();
    let killed_ms = unix_time_ms();
    let leader = cluster.leader_index().await.expect("a leader");
    cluster.kill(leader);
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != leader)
        .map(|i| cluster.client_addr(i))
        .collect();
    let client = MetaClient::new(survivors).unwrap();
    // The restored region sample leaves the window after 6 live ones: poll both together.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut node, mut region) = (None, None);
    while (node.is_none() || region.is_none()) && Instant::now() < deadline {
        if node.is_none() {
            node = client
                .get_node_stats(DATANODE)
                .await
                .ok()
                .filter(|h| h.samples.iter().any(|s| s.restored));
        }
        if region.is_none() {
            region = client
                .get_region_stats(regions[0])
                .await
                .ok()
                .filter(|h| h.samples.first().is_some_and(|s| s.restored));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let node = node.expect("the new leader serves restored node reports");
    let restored: Vec<_> = node.samples.iter().take_while(|s| s.restored).collect();
    assert!(
        (1..=4).contains(&restored.len())
            && node.samples.iter().filter(|s| s.restored).count() == restored.len(),
        "restored reports first, at most 4: {node:?}"
    );
    for s in &restored {
        let was = old
            .samples
            .iter()
            .find(|o| o.at_ms.abs_diff(s.at_ms) <= SAME_REPORT_MS)
            .unwrap_or_else(|| panic!("{s:?} is not one of the old leader's reports: {old:?}"));
        assert_eq!(
            (s.wcus, s.rcus, s.region_count),
            (was.wcus, was.rcus, was.region_count)
        );
    }
    let region = region.expect("the new leader serves the restored smoothed load");
    let seeded = &region.samples[0];
    assert!(seeded.wcus > 0 && seeded.rcus > 0, "{region:?}");
    assert!(
        (started_ms..=killed_ms).contains(&seeded.at_ms),
        "{region:?}"
    );
    assert!(
        region.samples[1..].iter().all(|s| !s.restored),
        "{region:?}"
    );

    fleet.stop().await;
    drop(cluster);
}
