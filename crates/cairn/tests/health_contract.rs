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
