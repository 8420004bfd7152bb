//! The HTTP contract of `cairn serve`: `/health` answers 200 only while the node sees a leader
//! and has caught up, 503 otherwise; `/metrics` serves Prometheus text. Load balancers and
//! monitoring rely on both.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestCluster, POLL_INTERVAL, STARTUP_TIMEOUT};

/// How long a node that lost its quorum may keep reporting healthy before it notices.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(20);

/// Polls `GET /health` on `node` until it answers `code`; returns the last body.
async fn wait_for_health(
    cluster: &TestCluster,
    node: usize,
    code: u16,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = cluster.http_get(node, "/health").await;
        match answer {
            Ok((got, body)) if got == code => return body,
            _ if Instant::now() > deadline => {
                panic!("node {}: /health did not answer {code} within {timeout:?}; last answer {answer:?}", node + 1)
            }
            _ => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_without_quorum_and_200_once_it_returns() {
    let mut cluster = TestCluster::start(3).await;
    for node in 0..cluster.size() {
        wait_for_health(&cluster, node, 200, STARTUP_TIMEOUT).await;
    }
    // Node 1 alone has no quorum: it cannot know a leader, whoever led before.
    cluster.kill(1);
    cluster.kill(2);
    let body = wait_for_health(&cluster, 0, 503, NOTICE_TIMEOUT).await;
    eprintln!("node 1 alone: /health 503 {body}");

    cluster.restart(1);
    cluster.restart(2);
    cluster
        .wait_ready(STARTUP_TIMEOUT)
        .await
        .expect("the cluster comes back");
    for node in 0..cluster.size() {
        wait_for_health(&cluster, node, 200, STARTUP_TIMEOUT).await;
    }
    cluster.check_alive().expect("no node crashed");
}

/// The value of a Prometheus sample line `name[{labels}] value [timestamp]`.
fn sample_value(line: &str) -> Option<&str> {
    let after_name = match line.rfind('}') {
        Some(end) => &line[end + 1..],
        None => line.split_once(' ')?.1,
    };
    after_name.split_whitespace().next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serves_prometheus_text() {
    let cluster = TestCluster::start(3).await;
    for node in 0..cluster.size() {
        let (code, body) = cluster
            .http_get(node, "/metrics")
            .await
            .expect("GET /metrics");
        assert_eq!(code, 200, "node {}: {body}", node + 1);
        if cluster.backend() == Backend::Etcd {
            // etcd 3.4 prints a HELP text with a raw newline; only its status is comparable.
            continue;
        }
        let mut samples = 0;
        for line in body.lines().filter(|line| !line.is_empty()) {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                    "node {}: not a Prometheus comment: {line:?}",
                    node + 1
                );
                continue;
            }
            let value = sample_value(line).unwrap_or_default();
            assert!(
                value.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&value),
                "node {}: sample without a numeric value: {line:?}",
                node + 1
            );
            samples += 1;
        }
        assert!(samples > 0, "node {}: /metrics has no samples", node + 1);
    }
}

/// The value of the unlabelled sample `name` in a `/metrics` body, if present.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// The `le` bounds and cumulative counts of histogram `name`'s buckets, in order.
fn buckets(body: &str, name: &str) -> Vec<(String, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    body.lines()
        .filter_map(|line| {
            let (le, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
            Some((le.to_string(), count.parse().ok()?))
        })
        .collect()
}

/// A write taken by a follower shows where its time went, as operators read it off `/metrics`:
/// the follower's round trip to the leader, the leader's proposal, every node's log syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_time_a_forwarded_write_on_every_node_it_crosses() {
    let mut cluster = TestCluster::start(3).await;
    if cluster.backend() == Backend::Etcd {
        eprintln!("skipped: Cairn's own histograms (etcd has its own names)");
        return;
    }
    cluster.wait_ready(STARTUP_TIMEOUT).await.expect("a leader");
    let leader = cluster.leader_index().await.expect("a leader");
    let follower = (leader + 1) % cluster.size();
    let scrape = |node: usize| {
        let cluster = &cluster;
        async move {
            let (code, body) = cluster
                .http_get(node, "/metrics")
                .await
                .expect("GET /metrics");
            assert_eq!(code, 200, "node {}: {body}", node + 1);
            body
        }
    };
    let count = |body: &str, name: &str| sample(body, &format!("{name}_count")).unwrap_or(0.0);
    let before_forward = count(&scrape(follower).await, "cairn_forward_round_trip_seconds");
    let before_proposals = count(
        &scrape(leader).await,
        "cairn_raft_proposal_duration_seconds",
    );

    let mut kv = cluster.kv(follower);
    for i in 0..5 {
        kv.put(cairn_proto::etcdserverpb::PutRequest {
            key: format!("timed/{i}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .expect("a put through the follower");
    }

    let body = scrape(follower).await;
    assert!(
        count(&body, "cairn_forward_round_trip_seconds") >= before_forward + 5.0,
        "the follower timed its five forwarded puts:\n{body}"
    );
    let leader_body = scrape(leader).await;
    assert!(
        count(&leader_body, "cairn_raft_proposal_duration_seconds") >= before_proposals + 5.0,
        "the leader timed the five proposals:\n{leader_body}"
    );
    // Every node wrote the entries to its log and synced it: followers acknowledge only then.
    for node in 0..cluster.size() {
        let body = scrape(node).await;
        let name = "cairn_wal_sync_duration_seconds";
        let syncs = count(&body, name);
        assert!(
            syncs >= 1.0,
            "node {}: no log sync timed:\n{body}",
            node + 1
        );
        let b = buckets(&body, name);
        assert_eq!(b.first().map(|(le, _)| le.as_str()), Some("0.0001"));
        assert_eq!(
            b.last(),
            Some(&("+Inf".to_string(), syncs)),
            "node {}",
            node + 1
        );
        assert!(
            b.windows(2).all(|w| w[0].1 <= w[1].1),
            "node {}: buckets not cumulative: {b:?}",
            node + 1
        );
        let sum = sample(&body, &format!("{name}_sum")).expect("a sum");
        assert!(sum > 0.0, "node {}: syncs take time: {sum}", node + 1);
    }
    cluster.check_alive().expect("no node crashed");
}
