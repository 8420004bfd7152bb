//! Fault tests on a cluster of real `cairn serve` processes: whatever a client was told succeeded
//! survives a killed or frozen leader, a frozen follower and a restart of every node, and what
//! clients observed meanwhile is linearizable.
//!
//! Run with `--release` (as CI does) so timing reflects the server, not the debug build; nothing
//! here asserts speed, only bounded liveness (a new leader and new writes within generous limits).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, RangeResponse};
use common::workload::{RegisterWorkload, WorkloadConfig};
use common::{TestCluster, RPC_TIMEOUT, STARTUP_TIMEOUT};

/// Upper bound of a whole test; past it the test fails (and the cluster is torn down).
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the survivors may take to agree on a new leader.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cluster may take to acknowledge a few more writes after a fault.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(20);
/// Acknowledged writes that prove the cluster is live in a phase.
const PROGRESS_WRITES: u64 = 20;
/// How long clients run undisturbed between faults.
const STEADY_PHASE: Duration = Duration::from_secs(2);
/// How many times `leader_killed_no_acked_write_lost` kills and restarts the leader.
const KILL_ROUNDS: usize = 2;
/// How long a node asked to stop may take to exit.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a leader whose followers are down is watched, and the most its log may grow
/// meanwhile (a warning per follower per heartbeat is a few KB a second).
const LONE_LEADER_WATCH: Duration = Duration::from_secs(5);
const LONE_LEADER_LOG_BYTES_MAX: u64 = 2 * 1024 * 1024;
/// How long a paused node stays frozen: longer than any sane election timeout.
const PAUSE_DURATION: Duration = Duration::from_secs(4);

fn workload_config(key_prefix: &str) -> WorkloadConfig {
    WorkloadConfig {
        key_prefix: key_prefix.to_string(),
        writers: 6,
        keys_per_writer: 3,
        readers: 4,
        ops_per_task_max: 20_000,
    }
}

async fn within_test_timeout<F: std::future::Future<Output = ()>>(test: F) {
    if tokio::time::timeout(TEST_TIMEOUT, test).await.is_err() {
        panic!("test exceeded {TEST_TIMEOUT:?}");
    }
}

async fn stop_and_verify(mut workload: RegisterWorkload, cluster: &mut TestCluster) {
    workload.stop().await;
    cluster.check_alive().expect("no node crashed");
    match workload.verify(cluster).await {
        Ok(summary) => eprintln!("verified: {summary:#?}"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_no_acked_write_lost() {
    // The cluster starts outside the test's time limit: it may first wait for its turn.
    let mut cluster = TestCluster::start(3).await;
    within_test_timeout(async {
        let workload = RegisterWorkload::start(&cluster, &workload_config("/ft/leader-killed"));
        workload
            .wait_for_progress(PROGRESS_WRITES, PROGRESS_TIMEOUT)
            .await
            .expect("writes before the fault");
        tokio::time::sleep(STEADY_PHASE).await;

        // Twice: the second time the node restarted first has to have caught up, as it may
        // be the one elected.
        for _ in 0..KILL_ROUNDS {
            let old_leader = cluster
                .wait_for_leader(None, ELECTION_TIMEOUT)
                .await
                .expect("a leader");
            eprintln!(
                "[{} ms] killing leader node {}",
                workload.elapsed_ms(),
                old_leader + 1
            );
            cluster.kill(old_leader);
            let new_leader = cluster
                .wait_for_leader(Some(old_leader), ELECTION_TIMEOUT)
                .await
                .expect("a new leader");
            eprintln!(
                "[{} ms] node {} took over",
                workload.elapsed_ms(),
                new_leader + 1
            );
            workload
                .wait_for_progress(PROGRESS_WRITES, PROGRESS_TIMEOUT)
                .await
                .expect("writes without the old leader");
            tokio::time::sleep(STEADY_PHASE).await;

            eprintln!(
                "[{} ms] restarting node {}",
                workload.elapsed_ms(),
                old_leader + 1
            );
            cluster.restart(old_leader);
            cluster
                .wait_ready(STARTUP_TIMEOUT)
                .await
                .expect("the restarted node rejoins");
            workload
                .wait_for_progress(PROGRESS_WRITES, PROGRESS_TIMEOUT)
                .await
                .expect("writes after the restart");
            tokio::time::sleep(STEADY_PHASE).await;
        }

        stop_and_verify(workload, &mut cluster).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_node_no_acked_write_lost() {
    // The cluster starts outside the test's time limit: it may first wait for its turn.
    let mut cluster = TestCluster::start(3).await;
    within_test_timeout(async {
        let workload = RegisterWorkload::start(&cluster, &workload_config("/ft/paused"));
        workload
            .wait_for_progress(PROGRESS_WRITES, PROGRESS_TIMEOUT)
            .await
            .expect("writes before the fault");
        tokio::time::sleep(STEADY_PHASE).await;

        // A frozen leader keeps its sockets open: clients and peers see silence, not errors.
        let leader = cluster
            .wait_for_leader(None, ELECTION_TIMEOUT)
            .await
            .expect("a leader");
        eprintln!(
            "[{} ms] pausing leader node {}",
            workload.elapsed_ms(),
            leader + 1
        );
        cluster.pause(leader);
        let new_leader = cluster
            .wait_for_leader(Some(leader), ELECTION_TIMEOUT)
            .await
            .expect("a new leader");
        eprintln!(
            "[{} ms] node {} took over",
            workload.elapsed_ms(),
            new_leader + 1
        );
        workload
            .wait_for_progress(PROGRESS_WRITES, PROGRESS_TIMEOUT)
            .await
            .expect("writes without the old leader");
        tokio::time::sleep(PAUSE_DURATION).await;
        eprintln!(
            "[{} ms] resuming node {}",
            workload.elapsed_ms(),
            leader + 1
        );
        cluster.resume(leader);
        let leader = cluster
            .wait_ready(STARTUP_TIMEOUT)
            .await
            .expect("the old leader catches up");
        workload
            .wait_for_progress(PROGRESS_WRITES, PROGRESS_TIMEOUT)
            .await
            .expect("writes after resuming");
        tokio::time::sleep(STEADY_PHASE).await;

        let follower = (leader + 1) % cluster.size();
        eprintln!(
            "[{} ms] pausing follower node {}",
            workload.elapsed_ms(),
            follower + 1
        );
        cluster.pause(follower);
        workload
            .wait_for_progress(PROGRESS_WRITES, PROGRESS_TIMEOUT)
            .await
            .expect("writes without a follower");
        tokio::time::sleep(PAUSE_DURATION).await;
        eprintln!(
            "[{} ms] resuming node {}",
            workload.elapsed_ms(),
            follower + 1
        );
        cluster.resume(follower);
        cluster
            .wait_ready(STARTUP_TIMEOUT)
            .await
            .expect("the follower catches up");
        workload
            .wait_for_progress(PROGRESS_WRITES, PROGRESS_TIMEOUT)
            .await
            .expect("writes after resuming");
        tokio::time::sleep(STEADY_PHASE).await;

        stop_and_verify(workload, &mut cluster).await;
    })
    .await;
}

/// Keys written by `restart_all_nodes_loses_nothing`.
const RESTART_KEYS: usize = 200;
/// How long a restarted node may take to hold every key in its own store.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait before re-reading, to tell a stale read from lost data.
const RECHECK_DELAY: Duration = Duration::from_secs(3);
/// Attempts per put before the test gives up on a healthy cluster.
const PUT_ATTEMPTS_MAX: usize = 5;

/// What a key must look like after the restart: (value, create revision, mod revision, version).
type KeyRecord = (Vec<u8>, i64, i64, i64);

/// A range over `prefix` on `node`; `serializable` reads that node's own state without the leader.
async fn range_prefix(
    cluster: &TestCluster,
    node: usize,
    prefix: &str,
    serializable: bool,
) -> RangeResponse {
    let mut range_end = prefix.as_bytes().to_vec();
    *range_end.last_mut().expect("non-empty prefix") += 1;
    let request = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end,
        serializable,
        ..Default::default()
    };
    let mut last_error = String::new();
    for _ in 0..PUT_ATTEMPTS_MAX {
        match tokio::time::timeout(RPC_TIMEOUT, cluster.kv(node).range(request.clone())).await {
            Ok(Ok(response)) => return response.into_inner(),
            Ok(Err(status)) => last_error = status.to_string(),
            Err(_) => last_error = "timed out".to_string(),
        }
        tokio::time::sleep(common::POLL_INTERVAL).await;
    }
    panic!("node {}: range {prefix} failed: {last_error}", node + 1);
}

async fn put(cluster: &TestCluster, node: usize, key: &str, value: &str) -> i64 {
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    };
    let mut last_error = String::new();
    for _ in 0..PUT_ATTEMPTS_MAX {
        match tokio::time::timeout(RPC_TIMEOUT, cluster.kv(node).put(request.clone())).await {
            Ok(Ok(response)) => {
                return response
                    .into_inner()
                    .header
                    .expect("put response header")
                    .revision
            }
            Ok(Err(status)) => last_error = status.to_string(),
            Err(_) => last_error = "timed out".to_string(),
        }
        tokio::time::sleep(common::POLL_INTERVAL).await;
    }
    panic!("node {}: put {key} failed: {last_error}", node + 1);
}

/// Which keys `actual` lacks or holds differently from `expected` (the first few).
fn describe_difference(
    expected: &BTreeMap<Vec<u8>, KeyRecord>,
    actual: &BTreeMap<Vec<u8>, KeyRecord>,
) -> String {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(key, record)| actual.get(*key) != Some(*record))
        .map(|(key, record)| {
            format!(
                "{} expected (value, create, mod, version) {:?} got {:?}",
                String::from_utf8_lossy(key),
                record,
                actual.get(key)
            )
        })
        .take(5)
        .collect();
    let extra = actual
        .keys()
        .filter(|key| !expected.contains_key(*key))
        .count();
    format!(
        "{} keys wrong ({}), {extra} extra",
        wrong.len(),
        wrong.join("; ")
    )
}

fn records(response: &RangeResponse) -> BTreeMap<Vec<u8>, KeyRecord> {
    response
        .kvs
        .iter()
        .map(|kv| {
            (
                kv.key.clone(),
                (
                    kv.value.clone(),
                    kv.create_revision,
                    kv.mod_revision,
                    kv.version,
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_all_nodes_loses_nothing() {
    // The cluster starts outside the test's time limit: it may first wait for its turn.
    let mut cluster = TestCluster::start(3).await;
    within_test_timeout(async {
        let prefix = "/ft/restart-all/";
        // Every fifth key is written twice, so versions and create/mod revisions differ.
        let mut put_revisions = BTreeMap::new();
        for i in 0..RESTART_KEYS {
            let key = format!("{prefix}{i:04}");
            let mut revision = put(&cluster, i % cluster.size(), &key, &format!("v{i}")).await;
            if i % 5 == 0 {
                revision = put(
                    &cluster,
                    (i + 1) % cluster.size(),
                    &key,
                    &format!("v{i}-again"),
                )
                .await;
            }
            put_revisions.insert(key.into_bytes(), revision);
        }
        let before_response = range_prefix(&cluster, 0, prefix, false).await;
        let before = records(&before_response);
        assert_eq!(
            before.len(),
            RESTART_KEYS,
            "all keys readable before the restart"
        );
        for (key, (_, _, mod_revision, _)) in &before {
            assert_eq!(
                Some(mod_revision),
                put_revisions.get(key),
                "mod revision of {key:?} is its put's revision"
            );
        }
        let revision_before = before_response.header.expect("range header").revision;

        for i in 0..cluster.size() {
            cluster.kill(i);
        }
        eprintln!("killed all nodes at revision {revision_before}; restarting");
        for i in 0..cluster.size() {
            cluster.restart(i);
        }
        cluster
            .wait_ready(STARTUP_TIMEOUT)
            .await
            .expect("the cluster comes back");

        for node in 0..cluster.size() {
            let after_response = range_prefix(&cluster, node, prefix, false).await;
            let after = records(&after_response);
            if after != before {
                // Tell a stale read (the data comes back) from a loss (it does not).
                tokio::time::sleep(RECHECK_DELAY).await;
                let later = records(&range_prefix(&cluster, node, prefix, false).await);
                panic!(
                    "node {}: a linearizable read after the restart differs from before: {}; \
                     {RECHECK_DELAY:?} later the same read {}",
                    node + 1,
                    describe_difference(&before, &after),
                    if later == before {
                        "matched, so the first read was stale".to_string()
                    } else {
                        format!("still differs: {}", describe_difference(&before, &later))
                    }
                );
            }
            let revision_after = after_response.header.expect("range header").revision;
            assert!(
                revision_after >= revision_before,
                "node {}: store revision went back from {revision_before} to {revision_after}",
                node + 1
            );
        }
        // Each node's own store holds it all too (after catching up, if it must).
        for node in 0..cluster.size() {
            let deadline = Instant::now() + CATCH_UP_TIMEOUT;
            loop {
                let local = records(&range_prefix(&cluster, node, prefix, true).await);
                if local == before {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {}: its serializable view still differs after {CATCH_UP_TIMEOUT:?}: {} of {} keys",
                    node + 1,
                    local.len(),
                    before.len()
                );
                tokio::time::sleep(common::POLL_INTERVAL).await;
            }
        }
        // The revision counter itself survived: a new write gets a revision never handed out before.
        let new_revision = put(&cluster, 1, &format!("{prefix}after-restart"), "x").await;
        assert!(
            new_revision > revision_before,
            "revision {new_revision} reused (was {revision_before} before)"
        );
        cluster.check_alive().expect("no node crashed");
    })
    .await;
}

/// Rounds of `write_then_restart_all_read_sees_write`.
const WRITE_RESTART_ROUNDS: usize = 8;

/// A write acknowledged just before every node dies must be seen by every linearizable read that
/// succeeds after they restart, even the very first one, served before the cluster reports
/// healthy: no node may answer from a commit index older than the acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_then_restart_all_read_sees_write() {
    // The cluster starts outside the test's time limit: it may first wait for its turn.
    let mut cluster = TestCluster::start(3).await;
    within_test_timeout(async {
        for round in 0..WRITE_RESTART_ROUNDS {
            let key = format!("/ft/write-restart/{round}");
            let revision = put(&cluster, round % cluster.size(), &key, "v").await;
            for i in 0..cluster.size() {
                cluster.kill(i);
            }
            for i in 0..cluster.size() {
                cluster.restart(i);
            }
            // The first successful read from each node, as early as the node answers.
            let reads =
                (0..cluster.size()).map(|node| first_read_after_restart(&cluster, node, &key));
            for (node, seen) in futures::future::join_all(reads)
                .await
                .into_iter()
                .enumerate()
            {
                if seen != Some(revision) {
                    tokio::time::sleep(RECHECK_DELAY).await;
                    let later = records(&range_prefix(&cluster, node, &key, false).await);
                    panic!(
                        "round {round}: the first linearizable read of {key} on node {} after \
                         restarting all nodes saw mod revision {seen:?}, but the put was \
                         acknowledged at revision {revision}; {RECHECK_DELAY:?} later node {} \
                         reads {:?}",
                        node + 1,
                        node + 1,
                        later.get(key.as_bytes())
                    );
                }
            }
            cluster
                .wait_ready(STARTUP_TIMEOUT)
                .await
                .expect("the cluster comes back");
        }
        cluster.check_alive().expect("no node crashed");
    })
    .await;
}

/// Retries a linearizable get of `key` on `node` until one succeeds; returns its mod revision.
async fn first_read_after_restart(cluster: &TestCluster, node: usize, key: &str) -> Option<i64> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut client = cluster.kv(node);
    loop {
        if let Ok(Ok(response)) =
            tokio::time::timeout(RPC_TIMEOUT, client.range(request.clone())).await
        {
            return response.into_inner().kvs.first().map(|kv| kv.mod_revision);
        }
        assert!(
            Instant::now() < deadline,
            "node {} served no linearizable read within {STARTUP_TIMEOUT:?} of its restart",
            node + 1
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A follower asked to stop (SIGTERM) while its leader runs exits, though the leader's
/// replication stream into it never ends by itself; and a leader left alone, both followers
/// gone, waits for them quietly instead of retrying its connections in a loop (which filled
/// its log at 10 MB/s and took a core).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_stops_under_its_leader_and_a_lone_leader_stays_quiet() {
    within_test_timeout(async {
        let mut cluster = TestCluster::start(3).await;
        cluster.wait_ready(STARTUP_TIMEOUT).await.expect("ready");
        let leader = cluster
            .wait_for_leader(None, ELECTION_TIMEOUT)
            .await
            .expect("leader");
        put(&cluster, leader, "stop/a", "1").await;
        let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        assert!(
            cluster.terminate(followers[0], STOP_TIMEOUT).await,
            "follower {} still running {STOP_TIMEOUT:?} after SIGTERM",
            followers[0] + 1
        );
        cluster.kill(followers[1]);
        let log = &cluster.spec(leader).log_path;
        let size = || std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
        // Past the first failures (each peer's first warnings), then measured.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = size();
        tokio::time::sleep(LONE_LEADER_WATCH).await;
        let grown = size() - before;
        assert!(
            grown < LONE_LEADER_LOG_BYTES_MAX,
            "the leader's log grew {grown} bytes in {LONE_LEADER_WATCH:?} with both followers down"
        );
    })
    .await;
}
