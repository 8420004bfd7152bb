//! The heartbeat loop of `MetaClient` against fake cairn.v1 Heartbeat servers in this process: a
//! follower that names the leader and leaders that answer, push instructions between heartbeats,
//! or leave replies-only requests unanswered. Proves the client follows `not_leader`, keeps
//! sequences increasing over both kinds of request, runs a redelivered instruction once, takes
//! the leader's interval, pauses, runs a pushed instruction at once and returns its reply at once
//! in a replies-only request, and treats an unanswered replies-only request as a broken stream.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::meta::{
    HeartbeatObserver, HeartbeatOptions, InstructionHandler, MetaClient, StatsSource,
    HEARTBEAT_RESPONSE_TIMEOUT_MS,
};
use cairn_client::proto::cairnpb::heartbeat_server::{Heartbeat, HeartbeatServer};
use cairn_client::proto::cairnpb::instruction::Kind;
use cairn_client::proto::cairnpb::{
    FlushRegion, HeartbeatRequest, HeartbeatResponse, Instruction, NodeIdentity, NodeStats,
    NotLeader, RegionStat,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

const LEADER_INTERVAL_MS: u64 = 100;
const INSTRUCTION_ID: u64 = 7;

type ResponseStream = Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send>>;

/// A follower naming `leader_addr`, or (when `leader_addr` is None) a leader that records every
/// request and sends instruction 7 in its first two answers of each stream.
struct FakeNode {
    leader_addr: Option<String>,
    requests: Arc<Mutex<Vec<HeartbeatRequest>>>,
}

#[tonic::async_trait]
impl Heartbeat for FakeNode {
    type HeartbeatStream = ResponseStream;

    async fn heartbeat(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let leader_addr = self.leader_addr.clone();
        let requests = Arc::clone(&self.requests);
        tokio::spawn(async move {
            let mut answered = 0;
            while let Some(Ok(req)) = inbound.next().await {
                let response = match &leader_addr {
                    Some(addr) => HeartbeatResponse {
                        not_leader: Some(NotLeader {
                            leader_id: 2,
                            leader_addr: addr.clone(),
                        }),
                        ..Default::default()
                    },
                    None => {
                        let sequence = req.sequence;
                        requests.lock().unwrap().push(req);
                        answered += 1;
                        let instructions = if answered <= 2 {
                            vec![Instruction {
                                id: INSTRUCTION_ID,
                                timeout_ms: 5_000,
                                kind: Some(Kind::FlushRegion(FlushRegion { region_id: 1 })),
                            }]
                        } else {
                            Vec::new()
                        };
                        HeartbeatResponse {
                            sequence,
                            instructions,
                            heartbeat_interval_ms: LEADER_INTERVAL_MS,
                            ..Default::default()
                        }
                    }
                };
                let follower = leader_addr.is_some();
                if tx.send(Ok(response)).await.is_err() || follower {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve(node: FakeNode) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HeartbeatServer::new(node))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

#[derive(Default)]
struct TestNode {
    handled: AtomicU64,
}

impl StatsSource for TestNode {
    fn collect(&self, _report_interval_ms: u64) -> (NodeStats, Vec<RegionStat>) {
        (
            NodeStats {
                region_count: 1,
                ..Default::default()
            },
            vec![RegionStat {
                region_id: 1,
                ..Default::default()
            }],
        )
    }
}

impl InstructionHandler for TestNode {
    async fn handle(&self, instruction: Instruction) -> Result<(), String> {
        assert_eq!(instruction.id, INSTRUCTION_ID);
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn follows_not_leader_and_runs_a_redelivered_instruction_once() {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let leader = serve(FakeNode {
        leader_addr: None,
        requests: Arc::clone(&requests),
    })
    .await;
    let follower = serve(FakeNode {
        leader_addr: Some(leader.to_string()),
        requests: Arc::new(Mutex::new(Vec::new())),
    })
    .await;

    // Only the follower is configured: the leader is found from its typed answer.
    let client = MetaClient::new([follower.to_string()]).unwrap();
    let node = Arc::new(TestNode::default());
    let identity = NodeIdentity {
        id: 1001,
        ..Default::default()
    };
    let heartbeat = client.run_heartbeat(identity, Arc::clone(&node), Arc::clone(&node));
    let regular = |seen: &[HeartbeatRequest]| seen.iter().filter(|r| !r.replies_only).count();
    // The leader records a request before it answers, so wait for the client to have taken six
    // answers, not for the leader to have seen six requests: the sixth answer may still be on
    // its way when the sixth request is recorded.
    wait_for("six heartbeats acknowledged by the leader", || {
        heartbeat.status().acknowledged >= 6
    })
    .await;
    assert!(regular(&requests.lock().unwrap()) >= 6);

    let status = heartbeat.status();
    assert_eq!(status.leader_id, Some(2));
    assert_eq!(status.interval_ms, LEADER_INTERVAL_MS);
    let seen = requests.lock().unwrap().clone();
    assert!(seen.iter().all(|r| r.node.as_ref().unwrap().id == 1001));
    assert!(
        seen.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequences must increase"
    );
    let (reports, replies_only): (Vec<_>, Vec<_>) = seen.iter().partition(|r| !r.replies_only);
    assert!(reports
        .iter()
        .all(|r| r.report_interval_ms > 0 && r.regions.len() == 1 && r.stats.is_some()));
    assert!(replies_only
        .iter()
        .all(|r| r.stats.is_none() && r.regions.is_empty() && !r.replies.is_empty()));
    // After the leader named its interval, reports come about that often.
    for r in &reports[2..] {
        assert!(
            (LEADER_INTERVAL_MS / 2..=LEADER_INTERVAL_MS * 10).contains(&r.report_interval_ms),
            "{}",
            r.report_interval_ms
        );
    }
    // Delivered twice, run once, answered (at least once, ok).
    assert_eq!(node.handled.load(Ordering::SeqCst), 1);
    let replies: Vec<_> = seen
        .iter()
        .flat_map(|r| r.replies.iter())
        .filter(|r| r.instruction_id == INSTRUCTION_ID)
        .collect();
    assert!(!replies.is_empty());
    assert!(replies.iter().all(|r| r.ok));

    // Paused: no more requests of either kind; resumed: they come again.
    heartbeat.pause();
    // Paused once the loop has seen it (it sends nothing after), and settled once the leader has
    // recorded the last request sent before: waited for, not assumed after a fixed sleep.
    wait_for("the loop to pause", || heartbeat.status().paused).await;
    let last_sent = heartbeat.status().sequence;
    wait_for("the last request sent before the pause", || {
        requests.lock().unwrap().last().map(|r| r.sequence) == Some(last_sent)
    })
    .await;
    let paused_at = requests.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(LEADER_INTERVAL_MS * 4)).await;
    assert_eq!(requests.lock().unwrap().len(), paused_at);
    assert!(heartbeat.status().paused);
    heartbeat.resume();
    wait_for("heartbeats after resume", || {
        requests.lock().unwrap().len() > paused_at + 1
    })
    .await;
    heartbeat.stop().await;
}

/// A leader that names a long interval and, after answering a stream's first request, pushes
/// instruction 7 between heartbeats; after answering the first replies-only request it pushes
/// instruction 7 again (a redelivery). With `answer_replies_only` false it leaves replies-only
/// requests unanswered.
struct Pusher {
    answer_replies_only: bool,
    streams: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<HeartbeatRequest>>>,
}

/// Far longer than the test waits: any request before it is not a regular heartbeat.
const LONG_INTERVAL_MS: u64 = 30_000;

fn push_seven() -> HeartbeatResponse {
    HeartbeatResponse {
        pushed: true,
        instructions: vec![Instruction {
            id: INSTRUCTION_ID,
            timeout_ms: 5_000,
            kind: Some(Kind::FlushRegion(FlushRegion { region_id: 1 })),
        }],
        heartbeat_interval_ms: LONG_INTERVAL_MS,
        ..Default::default()
    }
}

#[tonic::async_trait]
impl Heartbeat for Pusher {
    type HeartbeatStream = ResponseStream;

    async fn heartbeat(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let answer_replies_only = self.answer_replies_only;
        let requests = Arc::clone(&self.requests);
        self.streams.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let (mut reports, mut replies_only) = (0, 0);
            while let Some(Ok(req)) = inbound.next().await {
                let (sequence, is_replies_only) = (req.sequence, req.replies_only);
                requests.lock().unwrap().push(req);
                let push = if is_replies_only {
                    replies_only += 1;
                    if !answer_replies_only {
                        continue;
                    }
                    replies_only == 1
                } else {
                    reports += 1;
                    reports == 1
                };
                let answer = HeartbeatResponse {
                    sequence,
                    heartbeat_interval_ms: LONG_INTERVAL_MS,
                    ..Default::default()
                };
                if tx.send(Ok(answer)).await.is_err()
                    || (push && tx.send(Ok(push_seven())).await.is_err())
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve_pusher(pusher: Pusher) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HeartbeatServer::new(pusher))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

#[tokio::test]
async fn pushed_instruction_runs_at_once_and_its_reply_returns_in_a_replies_only_request() {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let leader = serve_pusher(Pusher {
        answer_replies_only: true,
        streams: Arc::new(AtomicU64::new(0)),
        requests: Arc::clone(&requests),
    })
    .await;
    let client = MetaClient::new([leader.to_string()]).unwrap();
    let node = Arc::new(TestNode::default());
    let identity = NodeIdentity {
        id: 1001,
        ..Default::default()
    };
    let heartbeat = client.run_heartbeat(identity, Arc::clone(&node), Arc::clone(&node));
    wait_for("the report and two replies-only requests", || {
        requests.lock().unwrap().len() >= 3
    })
    .await;
    let seen = requests.lock().unwrap().clone();
    // The first is the report; the next two come long before the next report is due.
    assert!(!seen[0].replies_only && seen[0].stats.is_some());
    for (r, sequence) in seen[1..3].iter().zip(2..) {
        assert!(r.replies_only, "{r:?}");
        assert_eq!(r.sequence, sequence, "the next sequence number");
        assert!(r.stats.is_none() && r.regions.is_empty() && r.report_interval_ms == 0);
        assert_eq!(r.replies.len(), 1);
        assert_eq!(r.replies[0].instruction_id, INSTRUCTION_ID);
        assert!(r.replies[0].ok);
    }
    // The redelivered instruction was answered from memory, not run again.
    assert_eq!(node.handled.load(Ordering::SeqCst), 1);
    let status = heartbeat.status();
    assert_eq!(status.interval_ms, LONG_INTERVAL_MS);
    assert_eq!(
        status.acknowledged, 1,
        "replies-only answers are not heartbeats"
    );
    assert_eq!(status.reconnects, 0);
    heartbeat.stop().await;
}

/// Remembers why streams ended.
#[derive(Default)]
struct Ends(Mutex<Vec<String>>);

impl HeartbeatObserver for Ends {
    fn on_acknowledged(&self, _round_trip: Duration, _region_stats: usize) {}
    fn on_stream_ended(&self, reason: &str) {
        self.0.lock().unwrap().push(reason.to_string());
    }
}

#[tokio::test]
async fn unanswered_replies_only_request_breaks_the_stream() {
    let streams = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let leader = serve_pusher(Pusher {
        answer_replies_only: false,
        streams: Arc::clone(&streams),
        requests: Arc::clone(&requests),
    })
    .await;
    let client = MetaClient::new([leader.to_string()]).unwrap();
    let node = Arc::new(TestNode::default());
    let identity = NodeIdentity {
        id: 1001,
        ..Default::default()
    };
    let ends = Arc::new(Ends::default());
    let options = HeartbeatOptions {
        observer: Some(ends.clone()),
        ..Default::default()
    };
    let heartbeat =
        client.run_heartbeat_with(identity, Arc::clone(&node), Arc::clone(&node), options);
    wait_for("a second stream", || streams.load(Ordering::SeqCst) >= 2).await;
    let why = ends.0.lock().unwrap().first().cloned().unwrap_or_default();
    assert!(
        why.contains(&format!(
            "no answer within {HEARTBEAT_RESPONSE_TIMEOUT_MS} ms"
        )),
        "{why}"
    );
    let seen = requests.lock().unwrap().clone();
    assert!(seen[1].replies_only, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequences keep increasing across streams"
    );
    heartbeat.stop().await;
}
