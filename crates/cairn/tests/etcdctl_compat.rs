//! Compatibility with the stock etcd client: Debian's `etcdctl` (etcd 3.4, API v3) against a
//! 3-node Cairn cluster must behave and print exactly as against etcd 3.4.
//!
//! The expected outputs were taken from etcd 3.4.23 (`CAIRN_TEST_BACKEND=etcd` runs this suite
//! against real etcd processes to re-check them). Skipped, with a message, where etcdctl is not
//! installed.

mod common;

use std::time::{Duration, Instant};

use common::etcdctl::{self, base64, Etcdctl};
use common::TestCluster;
use serde_json::Value;

/// How long a waiting elect/lock/watch child may take to print what it must.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a second candidate or lock holder is watched to make sure it does not proceed.
const STILL_WAITING: Duration = Duration::from_millis(1500);
/// How long a 3-second lease may take to expire and take its key along.
const LEASE_EXPIRY_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts the cluster, or returns `None` (printing SKIPPED) when etcdctl is missing.
async fn cluster() -> Option<(TestCluster, Etcdctl)> {
    if !etcdctl::installed() {
        eprintln!("SKIPPED: etcdctl not installed");
        return None;
    }
    let cluster = TestCluster::start(3).await;
    // host:port endpoints, as etcd's docs write them. With URL endpoints (http://host:port)
    // etcdctl 3.4 sends the whole URL as HTTP/2 :authority on its per-endpoint connections
    // (endpoint status, move-leader, defrag); Rust's h2 rejects that with PROTOCOL_ERROR
    // (hyperium/h2#525), so those commands fail against Cairn in that form.
    let ctl = Etcdctl::new(&cluster.client_addrs());
    Some((cluster, ctl))
}

fn revision(json: &Value) -> i64 {
    json["header"]["revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no header.revision in {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_put_get_del_print_as_etcd() {
    let Some((cluster, ctl)) = cluster().await else {
        return;
    };
    // Each write through a single, different node: followers must serve writes too. These use
    // URL endpoints, which etcdctl's KV path sends with a valid :authority.
    for (i, (key, value)) in [("/kv/a", "1"), ("/kv/b", "2"), ("/kv/c", "3")]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            Etcdctl::new(&cluster.client_endpoint(i)).ok(&["put", key, value]),
            "OK\n"
        );
    }
    ctl.ok(&["put", "/kvx", "outside"]);

    assert_eq!(
        ctl.ok(&["get", "/kv/", "--prefix"]),
        "/kv/a\n1\n/kv/b\n2\n/kv/c\n3\n"
    );
    assert_eq!(ctl.ok(&["get", "/kv/a", "--print-value-only"]), "1\n");
    assert_eq!(
        ctl.ok(&["get", "/kv/", "--prefix", "--keys-only"]),
        "/kv/a\n\n/kv/b\n\n/kv/c\n\n"
    );
    assert_eq!(
        ctl.ok(&["get", "/kv/a", "/kv/c"]),
        "/kv/a\n1\n/kv/b\n2\n",
        "range end is exclusive"
    );
    assert_eq!(
        ctl.ok(&[
            "get",
            "/kv/",
            "--prefix",
            "--sort-by=KEY",
            "--order=DESCEND"
        ]),
        "/kv/c\n3\n/kv/b\n2\n/kv/a\n1\n"
    );
    assert_eq!(ctl.ok(&["get", "/kv/missing"]), "");
    for i in 0..cluster.size() {
        let serializable =
            Etcdctl::new(&cluster.client_endpoint(i)).ok(&["get", "/kv/b", "--consistency=s"]);
        assert!(
            serializable.is_empty() || serializable == "/kv/b\n2\n",
            "node {}: {serializable:?}",
            i + 1
        );
    }
    let limited = ctl.json(&["get", "/kv/", "--prefix", "--limit=2"]);
    assert_eq!(
        limited["kvs"].as_array().map(Vec::len),
        Some(2),
        "{limited}"
    );
    assert_eq!(limited["more"], Value::Bool(true), "{limited}");
    assert_eq!(limited["count"], 3, "{limited}");

    // History: a read at an old revision sees the old value.
    let first = revision(&ctl.json(&["put", "/kv/a", "one"]));
    let second = revision(&ctl.json(&["put", "/kv/a", "two"]));
    assert!(second > first);
    assert_eq!(
        ctl.ok(&["get", "/kv/a", &format!("--rev={first}")]),
        "/kv/a\none\n"
    );
    assert_eq!(
        ctl.ok(&["get", "/kv/a", &format!("--rev={second}")]),
        "/kv/a\ntwo\n"
    );

    // JSON: keys and values in base64, revisions as numbers, as etcd's protobuf JSON prints them.
    let got = ctl.json(&["get", "/kv/a"]);
    assert_eq!(revision(&got), second, "{got}");
    let kv = &got["kvs"][0];
    assert_eq!(kv["key"], base64(b"/kv/a"), "{got}");
    assert_eq!(kv["value"], base64(b"two"), "{got}");
    assert_eq!(kv["mod_revision"], second, "{got}");
    assert_eq!(kv["version"], 3, "{got}");
    assert!(
        kv["create_revision"].as_i64().is_some_and(|c| c < first),
        "{got}"
    );
    assert_eq!(got["count"], 1, "{got}");
    assert!(
        got["header"]["cluster_id"]
            .as_u64()
            .is_some_and(|id| id != 0),
        "{got}"
    );
    assert!(
        got["header"]["raft_term"].as_u64().is_some_and(|t| t >= 1),
        "{got}"
    );

    assert_eq!(ctl.ok(&["del", "/kv/", "--prefix"]), "3\n");
    assert_eq!(ctl.ok(&["get", "/kv/", "--prefix"]), "");
    assert_eq!(
        ctl.ok(&["get", "/kvx"]),
        "/kvx\noutside\n",
        "a prefix delete stays inside its prefix"
    );
    assert_eq!(ctl.ok(&["del", "/kv/missing"]), "0\n");

    // Compaction: history before the compacted revision is gone, with etcd's error.
    assert_eq!(
        ctl.ok(&["compaction", &second.to_string()]),
        format!("compacted revision {second}\n")
    );
    let old = ctl.run(&["get", "/kv/a", &format!("--rev={first}")]);
    assert!(
        !old.status.success(),
        "read below the compacted revision succeeded: {old:?}"
    );
    assert!(
        old.stderr.contains("required revision has been compacted"),
        "{}",
        old.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_from_stdin_prints_as_etcd() {
    let Some((_cluster, ctl)) = cluster().await else {
        return;
    };
    ctl.ok(&["put", "/txn/k", "v1"]);

    let success = ctl.run_with_stdin(
        &["txn"],
        "value(\"/txn/k\") = \"v1\"\n\nput /txn/r yes\nget /txn/k\n\nput /txn/r no\n\n",
    );
    assert!(success.status.success(), "{success:?}");
    assert_eq!(success.stdout, "SUCCESS\n\nOK\n\n/txn/k\nv1\n");
    assert_eq!(ctl.ok(&["get", "/txn/r", "--print-value-only"]), "yes\n");

    let failure = ctl.run_with_stdin(
        &["txn"],
        "value(\"/txn/k\") = \"nope\"\n\nput /txn/r yes\n\nput /txn/r no\nget /txn/r\n\n",
    );
    assert!(failure.status.success(), "{failure:?}");
    assert_eq!(failure.stdout, "FAILURE\n\nOK\n\n/txn/r\nno\n");

    // Several compares on mod revision, version and create revision (0 for an absent key).
    let compares = "mod(\"/txn/k\") > \"0\"\nversion(\"/txn/k\") = \"1\"\ncreate(\"/txn/absent\") = \"0\"\n\ndel /txn/r\n\n\n";
    let multi = ctl.run_with_stdin(&["txn"], compares);
    assert_eq!(multi.stdout, "SUCCESS\n\n1\n", "{multi:?}");

    let json = ctl.run_with_stdin(
        &["txn", "-w", "json"],
        "version(\"/txn/k\") = \"1\"\n\nput /txn/j x\n\n\n",
    );
    let json: Value =
        serde_json::from_str(&json.stdout).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    assert_eq!(json["succeeded"], Value::Bool(true), "{json}");
    // etcdctl 3.4 names the oneof variant `ResponsePut`, 3.5 `response_put`.
    let response = &json["responses"][0]["Response"];
    let put = if response["ResponsePut"].is_null() {
        &response["response_put"]
    } else {
        &response["ResponsePut"]
    };
    assert_eq!(
        put["header"]["revision"], json["header"]["revision"],
        "{json}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_past_and_live_events() {
    let Some((_cluster, ctl)) = cluster().await else {
        return;
    };
    let first = revision(&ctl.json(&["put", "/w/k", "v1"]));
    let last = revision(&ctl.json(&["put", "/w/k", "v2"]));

    // Resumed from a past revision: the stored events come first, then live ones.
    let mut watch = ctl.spawn(&["watch", "/w/k", &format!("--rev={first}")]);
    watch.expect_lines(&["PUT", "/w/k", "v1", "PUT", "/w/k", "v2"], OUTPUT_TIMEOUT);
    let mut prefix = ctl.spawn(&["watch", "/w/", "--prefix", &format!("--rev={}", last + 1)]);
    ctl.ok(&["put", "/w/k", "v3"]);
    ctl.ok(&["del", "/w/k"]);
    ctl.ok(&["put", "/w/other", "x"]);
    watch.expect_lines(&["PUT", "/w/k", "v3", "DELETE", "/w/k", ""], OUTPUT_TIMEOUT);
    prefix.expect_lines(
        &[
            "PUT", "/w/k", "v3", "DELETE", "/w/k", "", "PUT", "/w/other", "x",
        ],
        OUTPUT_TIMEOUT,
    );
    watch.expect_silence(Duration::from_millis(300));
    watch.interrupt();
    prefix.interrupt();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grant_keepalive_timetolive_revoke_and_expiry() {
    let Some((_cluster, ctl)) = cluster().await else {
        return;
    };
    let granted = ctl.ok(&["lease", "grant", "60"]);
    let hex = granted
        .strip_prefix("lease ")
        .and_then(|rest| rest.strip_suffix(" granted with TTL(60s)\n"))
        .unwrap_or_else(|| panic!("grant printed {granted:?}"));
    let id = u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("lease id {hex:?}: {e}"));

    assert_eq!(ctl.ok(&["put", "--lease", hex, "/lease/k", "v"]), "OK\n");
    assert_eq!(
        ctl.ok(&["lease", "keep-alive", "--once", hex]),
        format!("lease {hex} keepalived with TTL(60)\n")
    );
    let ttl = ctl.ok(&["lease", "timetolive", hex, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {hex} granted with TTL(60s), remaining("))
            && ttl.ends_with("s), attached keys([/lease/k])\n"),
        "{ttl:?}"
    );
    let json = ctl.json(&["lease", "timetolive", hex, "--keys"]);
    assert_eq!(json["id"], id, "{json}");
    assert_eq!(json["granted-ttl"], 60, "{json}");
    assert!(
        json["ttl"].as_i64().is_some_and(|t| (1..=60).contains(&t)),
        "{json}"
    );
    assert_eq!(
        json["keys"],
        serde_json::json!([base64(b"/lease/k")]),
        "{json}"
    );
    assert!(ctl.ok(&["lease", "list"]).lines().any(|line| line == hex));

    assert_eq!(
        ctl.ok(&["lease", "revoke", hex]),
        format!("lease {hex} revoked\n")
    );
    assert_eq!(
        ctl.ok(&["get", "/lease/k"]),
        "",
        "revoking a lease deletes its keys"
    );
    let again = ctl.run(&["lease", "revoke", hex]);
    assert!(!again.status.success(), "{again:?}");
    assert!(
        again.stderr.contains("requested lease not found"),
        "{}",
        again.stderr
    );

    // Expiry without keep-alives takes the attached key away.
    let short = ctl.ok(&["lease", "grant", "3"]);
    let short_hex = short
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    ctl.ok(&["put", "--lease", &short_hex, "/lease/short", "v"]);
    let deadline = Instant::now() + LEASE_EXPIRY_TIMEOUT;
    while !ctl.ok(&["get", "/lease/short"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "key of a 3 s lease still there after {LEASE_EXPIRY_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        ctl.ok(&["lease", "timetolive", &short_hex]),
        format!("lease {short_hex} already expired\n")
    );
}

/// `NAME/<hex lease id>`: the key etcd's election and lock services create for a participant.
fn assert_participant_key(line: &str, name: &str) {
    let suffix = line
        .strip_prefix(&format!("{name}/"))
        .unwrap_or_else(|| panic!("{line:?} is not under {name}/"));
    assert!(
        !suffix.is_empty() && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{line:?}: etcd uses NAME/<lease hex>"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_second_candidate_waits_and_observer_follows() {
    let Some((_cluster, ctl)) = cluster().await else {
        return;
    };
    let name = "compat-election";
    let mut alice = ctl.spawn(&["elect", name, "alice"]);
    let alice_key = alice.expect_line(OUTPUT_TIMEOUT);
    assert_participant_key(&alice_key, name);
    alice.expect_lines(&["alice"], OUTPUT_TIMEOUT);

    let mut bob = ctl.spawn(&["elect", name, "bob"]);
    let mut observer = ctl.spawn(&["elect", "-l", name]);
    observer.expect_lines(&[alice_key.as_str(), "alice"], OUTPUT_TIMEOUT);
    bob.expect_silence(STILL_WAITING);

    alice.interrupt(); // resigns
    let bob_key = bob.expect_line(OUTPUT_TIMEOUT);
    assert_participant_key(&bob_key, name);
    assert_ne!(bob_key, alice_key);
    bob.expect_lines(&["bob"], OUTPUT_TIMEOUT);
    observer.expect_lines(&[bob_key.as_str(), "bob"], OUTPUT_TIMEOUT);
    bob.interrupt();
    observer.interrupt();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_second_holder_waits_until_release() {
    let Some((_cluster, ctl)) = cluster().await else {
        return;
    };
    let name = "compat-lock";
    let mut first = ctl.spawn(&["lock", name]);
    let first_key = first.expect_line(OUTPUT_TIMEOUT);
    assert_participant_key(&first_key, name);
    let mut second = ctl.spawn(&["lock", name]);
    second.expect_silence(STILL_WAITING);

    first.interrupt(); // unlocks
    let second_key = second.expect_line(OUTPUT_TIMEOUT);
    assert_participant_key(&second_key, name);
    assert_ne!(second_key, first_key);
    second.interrupt();

    // With a command, etcdctl runs it while holding the lock and prints only its output.
    assert_eq!(ctl.ok(&["lock", name, "echo", "held"]), "held\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_list_and_endpoint_status_describe_the_cluster() {
    let Some((cluster, ctl)) = cluster().await else {
        return;
    };
    let statuses = ctl.json(&["endpoint", "status"]);
    let statuses = statuses.as_array().unwrap_or_else(|| panic!("{statuses}"));
    assert_eq!(statuses.len(), cluster.size());
    let leader = statuses[0]["Status"]["leader"].as_u64().unwrap_or(0);
    assert!(
        cluster.index_of_member(leader).is_some(),
        "leader {leader} is not a member: {statuses:?}"
    );
    for (i, entry) in statuses.iter().enumerate() {
        assert_eq!(entry["Endpoint"], cluster.client_addr(i), "{entry}");
        let status = &entry["Status"];
        assert_eq!(
            status["leader"], leader,
            "every node names the same leader: {entry}"
        );
        assert_eq!(
            status["header"]["member_id"],
            cluster.member_id(i),
            "{entry}"
        );
        assert!(
            status["raftTerm"].as_u64().is_some_and(|t| t >= 1),
            "{entry}"
        );
        assert!(
            status["raftIndex"].as_u64().is_some_and(|t| t >= 1),
            "{entry}"
        );
        assert!(
            status["version"].as_str().is_some_and(|v| !v.is_empty()),
            "{entry}"
        );
    }
    // etcdctl 3.4 prints health results on stderr.
    let health = ctl.run(&["endpoint", "health"]);
    assert!(health.status.success(), "{health:?}");
    let health = health.stderr + &health.stdout;
    for i in 0..cluster.size() {
        let prefix = format!(
            "{} is healthy: successfully committed proposal",
            cluster.client_addr(i)
        );
        assert!(
            health.lines().any(|line| line.starts_with(&prefix)),
            "{health}"
        );
    }

    // Every member has published its name and client URLs by the time the cluster serves
    // clients (etcd publishes before it serves; an unpublished member lists as "unstarted").
    let members = ctl.json(&["member", "list"]);
    let list = members["members"]
        .as_array()
        .unwrap_or_else(|| panic!("{members}"));
    assert_eq!(list.len(), cluster.size(), "{members}");
    for member in list {
        let id = member["ID"]
            .as_u64()
            .unwrap_or_else(|| panic!("member without ID: {member}"));
        let node = cluster
            .index_of_member(id)
            .unwrap_or_else(|| panic!("unknown member id {id}: {members}"));
        let spec = cluster.spec(node);
        // etcd prints URLs (http://host:port); an address must at least be there.
        let client = format!("127.0.0.1:{}", spec.client_port);
        let peer = format!("127.0.0.1:{}", spec.peer_port);
        assert!(
            member["clientURLs"].as_array().is_some_and(|u| u
                .iter()
                .any(|u| u.as_str().is_some_and(|u| u.ends_with(&client)))),
            "{member}"
        );
        assert!(
            member["peerURLs"].as_array().is_some_and(|u| u
                .iter()
                .any(|u| u.as_str().is_some_and(|u| u.ends_with(&peer)))),
            "{member}"
        );
        assert!(
            member["isLearner"].is_null() || member["isLearner"] == Value::Bool(false),
            "{member}"
        );
    }
    let simple = ctl.ok(&["member", "list"]);
    assert_eq!(simple.lines().count(), cluster.size(), "{simple}");
    for line in simple.lines() {
        let fields: Vec<&str> = line.split(", ").collect();
        assert_eq!(
            fields.len(),
            6,
            "ID, status, name, peer addrs, client addrs, is learner: {line:?}"
        );
        assert!(
            u64::from_str_radix(fields[0], 16)
                .is_ok_and(|id| cluster.index_of_member(id).is_some()),
            "{line:?}"
        );
        assert_eq!(fields[1], "started", "{line:?}");
        assert_eq!(fields[5], "false", "{line:?}");
    }
}
