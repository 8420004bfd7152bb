//! The heartbeat hub in process: registration and stats, liveness, the mailbox (instructions
//! pushed at once, replies in replies-only requests), follower redirects, refusals that stay on
//! their own stream, and leader changes.

mod common;

use cairn_client::meta::{HeartbeatOptions, InstructionHandler, MetaClient, StatsSource};
use cairn_proto::cairnpb::admin_client::AdminClient;
use cairn_proto::cairnpb::heartbeat_client::HeartbeatClient;
use cairn_proto::cairnpb::node_registry_client::NodeRegistryClient;
use cairn_proto::cairnpb::{
    instruction, FlushRegion, HeartbeatRequest, HeartbeatResponse, Instruction, InstructionReply,
    ListNodesRequest, NodeIdentity, NodeRole, NodeStats, NodeView, RegionStat,
    TransferLeaderRequest,
};
use cairn_server::heartbeat::mailbox::MailboxError;
use cairn_server::heartbeat::registry::INSTRUCTION_REPLIES_PER_REQUEST_MAX;
use cairn_server::ServerConfig;
use common::*;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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

/// A request carrying only `replies`, sent between heartbeats.
fn replies_only(id: u64, address: &str, sequence: u64, ids: &[u64]) -> HeartbeatRequest {
    HeartbeatRequest {
        replies_only: true,
        replies: ids
            .iter()
            .map(|i| InstructionReply {
                instruction_id: *i,
                ok: true,
                error: String::new(),
            })
            .collect(),
        stats: None,
        report_interval_ms: 0,
        ..request(id, NodeRole::Datanode, address, sequence)
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
    /// Pushed responses read while waiting for an answer.
    pushed: Vec<HeartbeatResponse>,
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
        Self {
            tx,
            rx,
            pushed: Vec::new(),
        }
    }

    /// Sends one request and returns its answer (None when the stream ended), keeping pushed
    /// responses that arrive first in `pushed`.
    async fn call(&mut self, req: HeartbeatRequest) -> Option<HeartbeatResponse> {
        if self.tx.send(req).await.is_err() {
            return None;
        }
        loop {
            let resp = self.next().await?;
            if !resp.pushed {
                return Some(resp);
            }
            self.pushed.push(resp);
        }
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
    // The node heartbeats once and is then expected "alive" over several RPCs: a lease far
    // longer than they take, so a slow machine does not see it turn suspect meanwhile.
    let cluster = TestCluster::start(3, |c| {
        fast_nodes(c);
        c.node_lease_ms = Some(WAIT_MAX.as_millis() as u64);
    })
    .await;
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

/// Polls the record of `node_id` in the store until it is (`present`) or is not there.
async fn wait_record(cluster: &TestCluster, node_id: u64, present: bool) {
    let mut kv = cluster.kv(0).await;
    let key = format!("/cairn/default/nodes/{node_id}");
    let deadline = Instant::now() + WAIT_MAX;
    while get(&mut kv, &key, false).await.is_some() != present {
        assert!(
            Instant::now() < deadline,
            "record of node {node_id} never {}",
            if present { "stored" } else { "deleted" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_node_loses_its_record_and_gets_it_back_when_it_returns() {
    let cluster = TestCluster::start(1, |c| {
        fast_nodes(c);
        c.node_idle_forget_ms = 300;
    })
    .await;
    let addr = cluster.nodes[0].client_addr();
    let mut s = Stream::open(&addr).await;
    s.call(request(5, NodeRole::Datanode, "h:5", 1))
        .await
        .expect("answer");
    wait_record(&cluster, 5, true).await;
    drop(s);
    // Down after two leases, forgotten 300 ms later: listed no more, record deleted.
    wait_record(&cluster, 5, false).await;
    assert!(list(&addr, 0).await.is_empty());
    // Back with the same identity: stored again, and it stays while the node heartbeats.
    let mut s = Stream::open(&addr).await;
    for seq in 1..=15 {
        s.call(request(5, NodeRole::Datanode, "h:5", seq))
            .await
            .expect("answer");
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
    }
    wait_record(&cluster, 5, true).await;
    // One more heartbeat right before the check: the last one of the loop may be older than
    // the 300 ms lease by now on a slow machine.
    s.call(request(5, NodeRole::Datanode, "h:5", 16))
        .await
        .expect("answer");
    assert_eq!(state_of(&addr, 5).await.as_deref(), Some("alive"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instruction_is_pushed_at_once_resent_until_replied_and_replied_between_heartbeats() {
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
    // Pushed without any request: it answers nothing.
    let push = s.next().await.expect("a pushed response");
    assert!(push.pushed, "{push:?}");
    assert_eq!(push.sequence, 0);
    assert_eq!(push.heartbeat_interval_ms, INTERVAL_MS);
    assert_eq!(push.instructions.len(), 1, "{push:?}");
    let pushed = push.instructions[0].clone();
    assert_eq!(pushed.kind, Some(flush));
    assert!(pushed.timeout_ms > 0 && pushed.timeout_ms <= 10_000);
    // A regular answer sends it again until it is replied (at least once).
    let resp = s
        .call(request(5, NodeRole::Datanode, "h:5", 2))
        .await
        .unwrap();
    assert_eq!(
        resp.instructions.iter().map(|i| i.id).collect::<Vec<_>>(),
        vec![pushed.id]
    );
    // The reply comes back at once in a replies-only request, answered like any request.
    let resp = s
        .call(replies_only(5, "h:5", 3, &[pushed.id]))
        .await
        .unwrap();
    assert!(resp.error.is_none() && !resp.pushed, "{resp:?}");
    assert_eq!(resp.sequence, 3);
    assert!(resp.instructions.is_empty());
    let got = sender.await.unwrap().expect("reply");
    assert!(got.ok);
    assert_eq!(got.instruction_id, pushed.id);
    let resp = s
        .call(request(5, NodeRole::Datanode, "h:5", 4))
        .await
        .unwrap();
    assert!(
        resp.instructions.is_empty(),
        "a replied instruction is not sent again"
    );
    assert!(
        s.pushed.is_empty(),
        "nothing else was pushed: {:?}",
        s.pushed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_pushed_with_each_instruction_once() {
    const BURST: usize = 50;
    let cluster = TestCluster::start(1, fast_nodes).await;
    let node = cluster.nodes[0].node().await;
    let mut s = Stream::open(&cluster.nodes[0].client_addr()).await;
    s.call(request(5, NodeRole::Datanode, "h:5", 1))
        .await
        .unwrap();
    let senders: Vec<_> = (0..BURST as u64)
        .map(|r| {
            let node = node.clone();
            tokio::spawn(async move {
                let kind = instruction::Kind::FlushRegion(FlushRegion { region_id: r });
                node.heartbeats.send(5, kind, Duration::from_secs(20)).await
            })
        })
        .collect();
    // Pushes alone deliver the whole burst, and none repeats what an earlier push carried.
    let mut pushed = Vec::new();
    let mut pushes = 0;
    while pushed.len() < BURST {
        let push = s.next().await.expect("pushed response");
        assert!(push.pushed, "{push:?}");
        pushes += 1;
        pushed.extend(push.instructions.iter().map(|i| i.id));
    }
    let unique: HashSet<u64> = pushed.iter().copied().collect();
    assert_eq!(unique.len(), pushed.len(), "pushed twice: {pushed:?}");
    assert!(pushes <= BURST);
    let resp = s.call(replies_only(5, "h:5", 2, &pushed)).await.unwrap();
    assert!(resp.error.is_none(), "{resp:?}");
    for sender in senders {
        assert!(sender.await.unwrap().expect("reply").ok);
    }
}

/// A node that obeys every instruction at once and remembers what it ran.
#[derive(Default)]
struct Obedient {
    handled: Mutex<Vec<u64>>,
}

impl StatsSource for Obedient {
    fn collect(&self, _report_interval_ms: u64) -> (NodeStats, Vec<RegionStat>) {
        (NodeStats::default(), Vec::new())
    }
}

impl InstructionHandler for Obedient {
    async fn handle(&self, instruction: Instruction) -> Result<(), String> {
        self.handled.lock().unwrap().push(instruction.id);
        Ok(())
    }
}

/// Heartbeats are this far apart, so an instruction that completes within its shorter timeout
/// cannot have waited for one.
const LONG_INTERVAL_MS: u64 = 10_000;
const SHORT_INSTRUCTION_TIMEOUT: Duration = Duration::from_secs(4);

/// A 1-node cluster asking for [`LONG_INTERVAL_MS`] heartbeats, and a `MetaClient` node 5
/// attached to it (it has heartbeated once and knows the interval).
async fn attached_client() -> (
    TestCluster,
    Arc<cairn_server::node::Node>,
    Arc<Obedient>,
    cairn_client::meta::HeartbeatHandle,
) {
    let cluster = TestCluster::start(1, |c| c.node_heartbeat_interval_ms = LONG_INTERVAL_MS).await;
    let node = cluster.nodes[0].node().await;
    let obedient = Arc::new(Obedient::default());
    let client = MetaClient::new([cluster.nodes[0].client_addr()]).unwrap();
    let identity = NodeIdentity {
        id: 5,
        role: NodeRole::Datanode as i32,
        address: "h:5".into(),
        ..Default::default()
    };
    let heartbeat = client.run_heartbeat_with(
        identity,
        obedient.clone(),
        obedient.clone(),
        HeartbeatOptions::default(),
    );
    let deadline = Instant::now() + WAIT_MAX;
    while heartbeat.status().interval_ms != LONG_INTERVAL_MS {
        assert!(Instant::now() < deadline, "{:?}", heartbeat.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (cluster, node, obedient, heartbeat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instruction_completes_within_a_timeout_shorter_than_the_interval() {
    let (_cluster, node, obedient, heartbeat) = attached_client().await;
    for region_id in 1..=3 {
        let kind = instruction::Kind::FlushRegion(FlushRegion { region_id });
        let reply = node
            .heartbeats
            .send(5, kind, SHORT_INSTRUCTION_TIMEOUT)
            .await
            .expect("pushed and replied without waiting for a heartbeat");
        assert!(reply.ok, "{reply:?}");
    }
    assert_eq!(obedient.handled.lock().unwrap().len(), 3);
    heartbeat.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_200_instructions_to_one_node_all_complete() {
    const BURST: u64 = 200;
    let (_cluster, node, obedient, heartbeat) = attached_client().await;
    let sends = (0..BURST).map(|region_id| {
        let kind = instruction::Kind::FlushRegion(FlushRegion { region_id });
        node.heartbeats.send(5, kind, SHORT_INSTRUCTION_TIMEOUT)
    });
    let outcomes = futures::future::join_all(sends).await;
    for outcome in &outcomes {
        assert!(outcome.as_ref().is_ok_and(|r| r.ok), "{outcome:?}");
    }
    let handled = obedient.handled.lock().unwrap().clone();
    assert_eq!(handled.len(), BURST as usize, "each ran once");
    assert_eq!(handled.iter().collect::<HashSet<_>>().len(), BURST as usize);
    heartbeat.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_only_request_proves_life_but_keeps_the_last_report() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let node = cluster.nodes[0].node().await;
    let last_heartbeat = || node.heartbeats.registry().get(7).unwrap().last_heartbeat;
    let addr = cluster.nodes[0].client_addr();
    let mut s = Stream::open(&addr).await;
    let mut report = request(7, NodeRole::Datanode, "h:7", 1);
    report.regions = regions(3);
    s.call(report).await.unwrap();
    let before = list(&addr, 7).await.remove(0);
    let reported_at = last_heartbeat();
    let resp = s.call(replies_only(7, "h:7", 2, &[])).await.unwrap();
    assert!(resp.error.is_none(), "{resp:?}");
    assert_eq!(resp.sequence, 2);
    let after = list(&addr, 7).await.remove(0);
    assert_eq!(after.stats.as_ref().unwrap().rcus, 42);
    assert_eq!(after.region_count, 3);
    assert_eq!(after.report_interval_ms, INTERVAL_MS);
    assert_eq!(after.stats, before.stats);
    assert!(
        last_heartbeat() > reported_at,
        "the replies-only request counts as a heartbeat"
    );
    // The sequence still has to increase across both kinds.
    let (code, msg) = refused(
        &addr,
        vec![
            request(8, NodeRole::Datanode, "h:8", 4),
            replies_only(8, "h:8", 4, &[]),
        ],
    )
    .await;
    assert_eq!(code, tonic::Code::InvalidArgument as i32);
    assert!(msg.contains("sequence"), "{msg}");
    // Every request is counted: node 7's report and replies-only request, node 8's report (and
    // its refused replies-only request, under its own code).
    let (_, body) = cluster.nodes[0].http_get("/metrics").await;
    assert!(
        body.contains("cairn_grpc_requests_total{method=\"Heartbeat\",code=\"OK\"} 3"),
        "{body}"
    );
    assert!(
        body.contains("cairn_grpc_requests_total{method=\"Heartbeat\",code=\"InvalidArgument\"} 1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_replies_in_one_request_are_refused_naming_the_limit() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let ids: Vec<u64> = (1..=INSTRUCTION_REPLIES_PER_REQUEST_MAX as u64 + 1).collect();
    let (code, msg) = refused(
        &cluster.nodes[0].client_addr(),
        vec![
            request(9, NodeRole::Datanode, "h:9", 1),
            replies_only(9, "h:9", 2, &ids),
        ],
    )
    .await;
    assert_eq!(code, tonic::Code::InvalidArgument as i32);
    assert!(msg.contains("instruction_replies_per_request_max"), "{msg}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_detector_judges_a_silent_node_and_clears_it_when_it_returns() {
    let cluster = TestCluster::start(1, |c| {
        fast_nodes(c);
        c.failure_detection_grace_ms = Some(0);
    })
    .await;
    let addr = cluster.nodes[0].client_addr();
    let mut s = Stream::open(&addr).await;
    for seq in 1..=10 {
        s.call(request(8, NodeRole::Datanode, "h:8", seq))
            .await
            .expect("answer");
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS)).await;
    }
    let view = list(&addr, 8).await.remove(0);
    assert!(!view.failed, "{view:?}");
    assert!(view.phi.is_some_and(|p| p < 8.0), "{view:?}");
    // Silent: judged failed once phi passes the threshold, and shown so.
    let deadline = Instant::now() + WAIT_MAX;
    let judged = loop {
        let v = list(&addr, 8).await.remove(0);
        if v.failed {
            break v;
        }
        assert!(Instant::now() < deadline, "never judged failed: {v:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(judged.phi.is_some_and(|p| p >= 8.0), "{judged:?}");
    // Heard from again: no longer failed.
    s.call(request(8, NodeRole::Datanode, "h:8", 11))
        .await
        .expect("answer");
    let back = list(&addr, 8).await.remove(0);
    assert!(!back.failed, "{back:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_region_lease_for_a_region_no_route_places_on_the_node() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let addr = cluster.nodes[0].client_addr();
    let mut s = Stream::open(&addr).await;
    let mut req = request(9, NodeRole::Datanode, "h:9", 1);
    req.regions = regions(3);
    let resp = s.call(req).await.expect("answer");
    let grant = resp
        .region_leases
        .expect("a regular answer carries a grant");
    assert!(grant.duration_ms > INTERVAL_MS, "{grant:?}");
    assert!(
        grant.region_ids.is_empty(),
        "no route names node 9: {grant:?}"
    );
}

/// Region leases follow the stored route as of each heartbeat: the leader keeps routes decoded
/// between heartbeats, and a route rewritten (or deleted) in between must never be answered from
/// the older decode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_leases_follow_every_rewrite_of_the_route() {
    let cluster = TestCluster::start(1, fast_nodes).await;
    let addr = cluster.nodes[0].client_addr();
    let mut kv = cluster.kv(0).await;
    let key = cairn_server::replica::meta::store::layout().route(1);
    // Region 1 and 2 of table 1 led by node 9, region 3 by node 8.
    let route = |r1: &str, r2_leader: u64| {
        format!(
            r#"{{"t":1,"v":1,"r":[{{"id":4294967297,"l":9{r1}}},{{"id":4294967298,"l":{r2_leader}}},{{"id":4294967299,"l":8}}]}}"#
        )
    };
    let mut s = Stream::open(&addr).await;
    put(&mut kv, &key, &route("", 9)).await;
    assert_eq!(leases_of_9(&mut s, 1).await, [1, 2]);
    // Region 1 being moved (its leader downgrading), region 2 led elsewhere now.
    put(&mut kv, &key, &route(r#","s":"downgrading""#, 8)).await;
    assert_eq!(leases_of_9(&mut s, 2).await, Vec::<u64>::new());
    put(&mut kv, &key, &route("", 8)).await;
    assert_eq!(leases_of_9(&mut s, 3).await, [1]);
    let mut deleted = cluster.kv(0).await;
    deleted
        .delete_range(cairn_proto::etcdserverpb::DeleteRangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        })
        .await
        .expect("delete");
    assert_eq!(
        leases_of_9(&mut s, 4).await,
        Vec::<u64>::new(),
        "no route, no lease"
    );
    // Every grant was checked, and each either against views the route feed kept current or
    // against the stored revisions.
    let (_, body) = cluster.nodes[0].http_get("/metrics").await;
    let grants = |how: &str| {
        let line = format!("cairn_region_lease_grants_total{{checked=\"{how}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {line} in the metrics"))
    };
    assert_eq!(grants("views") + grants("store"), 4, "{body}");
}

/// The region numbers node 9 is granted leases of, reporting regions 1..=3 of table 1 as
/// leader.
async fn leases_of_9(s: &mut Stream, sequence: u64) -> Vec<u64> {
    let mut req = request(9, NodeRole::Datanode, "h:9", sequence);
    req.regions = regions(3);
    for r in &mut req.regions {
        r.role = cairn_proto::cairnpb::RegionRole::Leader as i32;
    }
    let resp = s.call(req).await.expect("answer");
    let mut ids = resp.region_leases.expect("a grant").region_ids;
    ids.sort_unstable();
    ids.iter().map(|r| r & 0xffff_ffff).collect()
}
