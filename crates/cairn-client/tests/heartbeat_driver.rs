//! The heartbeat loop of `MetaClient` against fake cairn.v1 Heartbeat servers in this process: a
//! follower that names the leader and a leader that answers and sends instructions. Proves the
//! client follows `not_leader`, keeps sequences increasing, runs a redelivered instruction once,
//! takes the leader's interval, and pauses.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::meta::{InstructionHandler, MetaClient, StatsSource};
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
    wait_for("six heartbeats at the leader", || {
        requests.lock().unwrap().len() >= 6
    })
    .await;

    let status = heartbeat.status();
    assert_eq!(status.leader_id, Some(2));
    assert_eq!(status.interval_ms, LEADER_INTERVAL_MS);
    assert!(status.acknowledged >= 6);
    let seen = requests.lock().unwrap().clone();
    assert!(seen.iter().all(|r| r.node.as_ref().unwrap().id == 1001));
    assert!(
        seen.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "sequences must increase"
    );
    assert!(seen
        .iter()
        .all(|r| r.report_interval_ms > 0 && r.regions.len() == 1));
    // After the leader named its interval, requests come about that often.
    for r in &seen[2..] {
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

    // Paused: no more requests; resumed: they come again.
    heartbeat.pause();
    tokio::time::sleep(Duration::from_millis(LEADER_INTERVAL_MS * 2)).await;
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
