//! The heartbeat hub in process: registration and stats, liveness, the mailbox, follower
//! redirects, refusals that stay on their own stream, and leader changes.

mod common;

use cairn_proto::cairnpb::admin_client::AdminClient;
use cairn_proto::cairnpb::heartbeat_client::HeartbeatClient;
use cairn_proto::cairnpb::node_registry_client::NodeRegistryClient;
use cairn_proto::cairnpb::{
    instruction, FlushRegion, HeartbeatRequest, HeartbeatResponse, InstructionReply,
    ListNodesRequest, NodeIdentity, NodeRole, NodeStats, NodeView, RegionStat,
    TransferLeaderRequest,
};
use cairn_server::heartbeat::mailbox::MailboxError;
use cairn_server::ServerConfig;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const INTERVAL_MS: u64 = 100;
const LEASE_MS: u64 = 300;

fn fast_nodes(c: &mut ServerConfig) {
    c.node_heartbeat_interval_ms = INTERVAL_MS;
    c.node_lease_ms = Some(LEASE_MS);
}

fn request(id: u64, role: NodeRole, address: &str, sequence: u64) -> HeartbeatRequest {
    HeartbeatRequest {
        node: Some(NodeIdentity {
            id,
            role: role as i32,
            address: address.into(),
            labels: [("zone".to_string(), "z1".to_string())]
                .into_iter()
                .collect(),
            version: "test".into(),
            start_time_ms: 1,
        }),
        sequence,
        report_interval_ms: INTERVAL_MS,
        stats: Some(NodeStats {
            rcus: 42,
            cpu_usage: 0.5,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn regions(n: u64) -> Vec<RegionStat> {
    (1..=n)
        .map(|r| RegionStat {
            region_id: (1 << 32) | r,
            ..Default::default()
        })
        .collect()
}

/// One raw heartbeat stream.
struct Stream {
    tx: mpsc::Sender<HeartbeatRequest>,
    rx: Streaming<HeartbeatResponse>,
}

impl Stream {
    async fn open(addr: &str) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let mut client = HeartbeatClient::new(channel(addr).await);
        let rx = client
            .heartbeat(ReceiverStream::new(rx))
            .await
            .expect("open heartbeat stream")
            .into_inner();
        Self { tx, rx }
    }

    /// Sends one request and returns the answer (None when the stream ended).
    async fn call(&mut self, req: HeartbeatRequest) -> Option<HeartbeatResponse> {
        if self.tx.send(req).await.is_err() {
            return None;
        }
        self.next().await
    }

    async fn next(&mut self) -> Option<HeartbeatResponse> {
        tokio::time::timeout(WAIT_MAX, self.rx.message())
            .await
            .expect("heartbeat answer in time")
            .ok()
            .flatten()
    }
}

async fn list(addr: &str, node_id: u64) -> Vec<NodeView> {
    NodeRegistryClient::new(channel(addr).await)
        .list_nodes(ListNodesRequest { node_id })
        .await
        .expect("list nodes")
        .into_inner()
        .nodes
}

async fn state_of(addr: &str, node_id: u64) -> Option<String> {
    list(addr, node_id).await.first().map(|v| v.state.clone())
}

async fn wait_state(addr: &str, node_id: u64, want: &str) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let s = state_of(addr, node_id).await;
        if s.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node_id} never {want}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leader_index(cluster: &TestCluster, leader: u64) -> usize {
    cluster.index_of(leader)
}

fn follower_index(cluster: &TestCluster, leader: u64) -> usize {
    (0..cluster.nodes.len())
        .find(|i| cluster.nodes[*i].config.node_id != leader)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_and_its_stats_show_in_list_nodes_and_http() {
    let cluster = TestCluster::start(3, fast_nodes).await;
    let leader = cluster.wait_leader().await;
    let l = leader_index(&cluster, leader);
    let f = follower_index(&cluster, leader);
    let mut s = Stream::open(&cluster.nodes[l].client_addr()).await;
    let mut req = request(7, NodeRole::Datanode, "10.0.0.1:4000", 1);
    req.regions = regions(3);
    let resp = s.call(req).await.expect("answer");
    assert!(
        resp.error.is_none() && resp.not_leader.is_none(),
        "{resp:?}"
    );
    assert_eq!(resp.sequence, 1);
    assert_eq!(resp.heartbeat_interval_ms, INTERVAL_MS);

    // A follower asks the leader.
    let views = list(&cluster.nodes[f].client_addr(), 0).await;
    assert_eq!(views.len(), 1, "{views:?}");
    let v = &views[0];
    assert_eq!(v.identity.as_ref().unwrap().address, "10.0.0.1:4000");
    assert_eq!(v.state, "alive");
    assert_eq!(v.stats.as_ref().unwrap().rcus, 42);
    assert_eq!((v.region_count, v.unverified_region_count), (3, 3));
    assert_eq!(v.report_interval_ms, INTERVAL_MS);
    assert!(v.last_heartbeat_age_ms.is_some());

    let (code, body) = cluster.nodes[f].http_get("/v1/nodes").await;
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    let n = &json[0];
    assert_eq!(n["id"], 7);
    assert_eq!(n["role"], "datanode");
    assert_eq!(n["state"], "alive");
    assert_eq!(n["labels"]["zone"], "z1");
    assert_eq!(n["stats"]["rcus"], 42);
    assert_eq!(n["region_count"], 3);
    assert_eq!(n["unverified_region_count"], 3);
    let (code, body) = cluster.nodes[f].http_get("/v1/nodes/7").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = cluster.nodes[f].http_get("/v1/nodes/9").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("node 9 is not registered"), "{body}");
    // The leader counts the heartbeats it handled, with their handling time.
    let (code, body) = cluster.nodes[l].http_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("cairn_grpc_requests_total{method=\"Heartbeat\",code=\"OK\"}"),
        "{body}"
    );
    assert!(
        body.contains("cairn_grpc_request_duration_seconds_count{method=\"Heartbeat\"}"),
        "{body}"
    );

    // The identity (not the stats) reached the replicated store.
    let mut kv = cluster.kv(f).await;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(v) = get(&mut kv, "/cairn/default/nodes/7", false).await {
            assert!(v.contains("\"address\":\"10.0.0.1:4000\""), "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "identity never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_node_becomes_suspect_then_down() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let addr = cluster.nodes[0].client_addr();
    let mut s = Stream::open(&addr).await;
    s.call(request(3, NodeRole::Frontend, "h:3", 1))
        .await
        .expect("answer");
    assert_eq!(state_of(&addr, 3).await.as_deref(), Some("alive"));
    drop(s);
    let t0 = Instant::now();
    wait_state(&addr, 3, "suspect").await;
    wait_state(&addr, 3, "down").await;
    assert!(t0.elapsed() >= Duration::from_millis(LEASE_MS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instruction_round_trips_and_is_resent_until_replied() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let node = cluster.nodes[0].node().await;
    let mut s = Stream::open(&cluster.nodes[0].client_addr()).await;
    s.call(request(5, NodeRole::Datanode, "h:5", 1))
        .await
        .unwrap();
    let flush = instruction::Kind::FlushRegion(FlushRegion { region_id: 77 });
    let sender = {
        let node = node.clone();
        let flush = flush.clone();
        tokio::spawn(async move {
            node.heartbeats
                .send(5, flush, Duration::from_secs(10))
                .await
        })
    };
    let mut seq = 1;
    let mut seen = Vec::new();
    // Heartbeat until the instruction rides on a response, and once more: it is sent again.
    while seen.len() < 2 {
        seq += 1;
        let resp = s
            .call(request(5, NodeRole::Datanode, "h:5", seq))
            .await
            .unwrap();
        seen.extend(resp.instructions);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen[0].id, seen[1].id, "re-sent until replied");
    assert_eq!(seen[0].kind, Some(flush));
    assert!(seen[0].timeout_ms > 0 && seen[0].timeout_ms <= 10_000);
    let mut reply = request(5, NodeRole::Datanode, "h:5", seq + 1);
    reply.replies = vec![InstructionReply {
        instruction_id: seen[0].id,
        ok: true,
        error: String::new(),
    }];
    let resp = s.call(reply).await.unwrap();
    assert!(
        resp.instructions.is_empty(),
        "a replied instruction is not sent again"
    );
    let got = sender.await.unwrap().expect("reply");
    assert!(got.ok);
    assert_eq!(got.instruction_id, seen[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_instruction_times_out_and_unreachable_nodes_are_named() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let node = cluster.nodes[0].node().await;
    let flush = || instruction::Kind::FlushRegion(FlushRegion { region_id: 1 });
    let hub = &node.heartbeats;
    let mut s = Stream::open(&cluster.nodes[0].client_addr()).await;
    s.call(request(5, NodeRole::Datanode, "h:5", 1))
        .await
        .unwrap();
    assert_eq!(
        hub.send(9, flush(), Duration::from_secs(1)).await,
        Err(MailboxError::NodeUnknown(9))
    );
    let outcome = hub.send(5, flush(), Duration::from_millis(300)).await;
    assert_eq!(outcome, Err(MailboxError::Timeout { after_ms: 300 }));
    drop(s);
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match hub.send(5, flush(), Duration::from_millis(50)).await {
            Err(MailboxError::NotConnected(5)) => break,
            other => assert!(Instant::now() < deadline, "still connected: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_connected_node_of_the_role() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let node = cluster.nodes[0].node().await;
    let addr = cluster.nodes[0].client_addr();
    let mut streams = Vec::new();
    for (id, role) in [
        (1, NodeRole::Datanode),
        (2, NodeRole::Datanode),
        (3, NodeRole::Frontend),
    ] {
        let mut s = Stream::open(&addr).await;
        s.call(request(id, role, &format!("h:{id}"), 1))
            .await
            .unwrap();
        streams.push((id, role, s));
    }
    let kind = instruction::Kind::FlushRegion(FlushRegion { region_id: 1 });
    let sender = tokio::spawn(async move {
        node.heartbeats
            .broadcast(NodeRole::Datanode, kind, Duration::from_secs(10))
            .await
    });
    // Each datanode answers what it receives; the frontend never gets anything.
    let mut answered = 0;
    let mut seq = 1;
    let deadline = Instant::now() + WAIT_MAX;
    while answered < 2 {
        assert!(Instant::now() < deadline, "broadcast never delivered");
        seq += 2;
        for (id, role, s) in streams.iter_mut() {
            let resp = s
                .call(request(*id, *role, &format!("h:{id}"), seq))
                .await
                .unwrap();
            if *role == NodeRole::Frontend {
                assert!(resp.instructions.is_empty());
            }
            if let Some(i) = resp.instructions.first() {
                let mut reply = request(*id, *role, &format!("h:{id}"), seq + 1);
                reply.replies = vec![InstructionReply {
                    instruction_id: i.id,
                    ok: true,
                    error: String::new(),
                }];
                s.call(reply).await.unwrap();
                answered += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut outcomes = sender.await.unwrap();
    outcomes.sort_by_key(|(id, _)| *id);
    assert_eq!(outcomes.len(), 2);
    assert_eq!(outcomes[0].0, 1);
    assert_eq!(outcomes[1].0, 2);
    assert!(outcomes.iter().all(|(_, r)| r.as_ref().is_ok_and(|r| r.ok)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_to_follower_names_the_leaders_client_address() {
    let cluster = TestCluster::start(3, fast_nodes).await;
    let leader = cluster.wait_leader().await;
    let l = leader_index(&cluster, leader);
    let f = follower_index(&cluster, leader);
    let mut s = Stream::open(&cluster.nodes[f].client_addr()).await;
    let resp = s
        .call(request(1, NodeRole::Datanode, "h:1", 1))
        .await
        .expect("answer");
    let nl = resp.not_leader.expect("not_leader");
    assert_eq!(nl.leader_id, leader);
    assert_eq!(nl.leader_addr, cluster.nodes[l].client_addr());
    assert!(s.next().await.is_none(), "the stream ends");
    assert!(list(&cluster.nodes[l].client_addr(), 1).await.is_empty());
}

/// Sends one request on a fresh stream and returns the refusal it gets; the stream must end.
async fn refused(addr: &str, reqs: Vec<HeartbeatRequest>) -> (i32, String) {
    let mut s = Stream::open(addr).await;
    let mut last = None;
    for r in reqs {
        last = s.call(r).await;
    }
    let e = last.and_then(|r| r.error).expect("a typed error");
    assert!(s.next().await.is_none(), "the stream ends after an error");
    (e.code, e.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_heartbeats_get_typed_errors_and_other_streams_keep_working() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let addr = cluster.nodes[0].client_addr();
    let mut good = Stream::open(&addr).await;
    let mut seq = 1;
    good.call(request(1, NodeRole::Datanode, "10.0.0.1:4000", seq))
        .await
        .unwrap();

    let mut unknown_role = request(2, NodeRole::Datanode, "h:2", 1);
    unknown_role.node.as_mut().unwrap().role = 9;
    let (code, msg) = refused(&addr, vec![unknown_role]).await;
    assert_eq!(code, tonic::Code::InvalidArgument as i32);
    assert!(msg.contains("node.role"), "{msg}");

    let (code, msg) = refused(
        &addr,
        vec![request(1, NodeRole::Datanode, "10.0.0.2:4000", 1)],
    )
    .await;
    assert_eq!(code, tonic::Code::AlreadyExists as i32);
    assert_eq!(msg, "node 1 is already registered at 10.0.0.1:4000");

    let mut frontend = request(3, NodeRole::Frontend, "h:3", 1);
    frontend.regions = regions(1);
    let (code, msg) = refused(&addr, vec![frontend]).await;
    assert_eq!(code, tonic::Code::InvalidArgument as i32);
    assert!(msg.contains("frontend"), "{msg}");

    let (code, msg) = refused(
        &addr,
        vec![
            request(4, NodeRole::Datanode, "h:4", 5),
            request(4, NodeRole::Datanode, "h:4", 5),
        ],
    )
    .await;
    assert_eq!(code, tonic::Code::InvalidArgument as i32);
    assert!(msg.contains("sequence"), "{msg}");

    // The good stream never noticed.
    for _ in 0..3 {
        seq += 1;
        let resp = good
            .call(request(1, NodeRole::Datanode, "10.0.0.1:4000", seq))
            .await
            .expect("good stream still open");
        assert!(resp.error.is_none());
        assert_eq!(resp.sequence, seq);
    }
    assert_eq!(state_of(&addr, 1).await.as_deref(), Some("alive"));
    assert!(state_of(&addr, 2).await.is_none());
}

/// Heartbeats for node `id` every interval, following `not_leader` answers and reconnecting
/// when a stream ends, until `stop`.
fn heartbeat_forever(
    addrs: Vec<String>,
    id: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut target = addrs[0].clone();
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut s = Stream::open(&target).await;
            let mut seq = 0;
            loop {
                seq += 1;
                let req = request(id, NodeRole::Datanode, "h:7", seq);
                match s.call(req).await {
                    Some(r) if r.not_leader.is_some() => {
                        let a = r.not_leader.unwrap().leader_addr;
                        if a.is_empty() {
                            next += 1;
                            target = addrs[next % addrs.len()].clone();
                        } else {
                            target = a;
                        }
                        break;
                    }
                    Some(r) => assert!(r.error.is_none(), "{r:?}"),
                    None => {
                        next += 1;
                        target = addrs[next % addrs.len()].clone();
                        break;
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_leader_change_nodes_are_known_and_not_marked_down() {
    let cluster = TestCluster::start(3, fast_nodes).await;
    let leader = cluster.wait_leader().await;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let beating = heartbeat_forever(addrs.clone(), 7, stop.clone());
    // Registered and stored under the first leader.
    let mut kv = cluster.kv(0).await;
    let deadline = Instant::now() + WAIT_MAX;
    while get(&mut kv, "/cairn/default/nodes/7", false)
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "identity never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let to = cluster.nodes[follower_index(&cluster, leader)]
        .config
        .node_id;
    AdminClient::new(channel(&addrs[0]).await)
        .transfer_leader(TransferLeaderRequest { to })
        .await
        .expect("transfer leader");
    assert_eq!(cluster.wait_leader().await, to);
    let new_leader = &addrs[cluster.index_of(to)];
    // Known at once (from the store), and never judged down while it keeps heartbeating.
    let mut states = Vec::new();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(3 * LEASE_MS) {
        let s = state_of(new_leader, 7)
            .await
            .expect("node 7 known to the new leader");
        if states.last() != Some(&s) {
            states.push(s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !states.iter().any(|s| s == "down" || s == "suspect"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("alive"),
        "{states:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let _ = beating.await;
}
