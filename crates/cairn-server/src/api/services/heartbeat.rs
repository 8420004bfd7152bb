//! `cairn.v1.Heartbeat`: one task per node stream.
//!
//! A follower answers the first request with the leader's client address and ends the stream.
//! On the leader each request is validated and recorded, and answered with the node's pending
//! instructions; a refused request gets a typed error and ends only its own stream. Responses go
//! through a bounded buffer: a node that does not read its stream is disconnected. Every stream
//! ends when this node's leadership term ends.
//!
//! Instructions travel at once, not on the next heartbeat: when one is posted for the node, the
//! task pushes a `pushed` response with the instructions this stream has not sent yet. A regular
//! answer still carries every unreplied instruction (at least once); the answer to a replies-only
//! request carries only unsent ones, so a busy node is not flooded with repeats.

use crate::leader::heartbeat::{
    grant_region_leases, on_heartbeat, HeartbeatHub, HEARTBEAT_STREAM_BUFFER_MAX,
};
use crate::leader::node::Node;
use cairn_proto::cairnpb::heartbeat_server::Heartbeat;
use cairn_proto::cairnpb::{HeartbeatError, HeartbeatRequest, HeartbeatResponse, NotLeader};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// What a stream's task sends the node.
pub type Out = Result<HeartbeatResponse, Status>;

/// Heartbeat streams one node serves at once.
pub const HEARTBEAT_STREAMS_MAX: usize = 16_384;

/// The Heartbeat service of one node.
pub struct HeartbeatService {
    node: Arc<Node>,
    streams: Arc<Semaphore>,
}

impl HeartbeatService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            streams: Arc::new(Semaphore::new(HEARTBEAT_STREAMS_MAX)),
        }
    }
}

#[tonic::async_trait]
impl Heartbeat for HeartbeatService {
    type HeartbeatStream = crate::api::services::stream::ResponseStream<HeartbeatResponse>;

    async fn heartbeat(
        &self,
        request: Request<Streaming<HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let node = self.node.clone();
        let caller = crate::api::auth::caller(&request);
        let inbound = request.into_inner();
        // With auth on, a stream may speak only for the node its credential names: every
        // request's node id is checked, the first before the stream is answered (so the refusal
        // is the call's status). Without auth nothing is awaited here: a client may send its
        // first request only once the call is answered.
        let inbound: crate::api::services::stream::Inbound<HeartbeatRequest> = match caller {
            None => Box::pin(inbound),
            Some(caller) => {
                let check = node.clone();
                let mut checked = Box::pin(
                    inbound
                        .map(move |item| {
                            let r = item?;
                            let id = r.node.as_ref().map_or(0, |n| n.id);
                            crate::api::auth::check_node_identity(&check, Some(&caller), id)?;
                            Ok::<_, Status>(r)
                        })
                        .peekable(),
                );
                if let Some(Err(e)) = checked.as_mut().peek().await {
                    return Err(e.clone());
                }
                checked
            }
        };
        let stream = crate::api::services::stream::spawn_stream(
            &self.streams,
            "heartbeat_streams_max",
            HEARTBEAT_STREAM_BUFFER_MAX,
            Box::pin(inbound),
            |inbound, tx| serve_stream(node, inbound, tx),
        )?;
        Ok(Response::new(stream))
    }
}

/// The redirect a follower answers with. Right after start-up the leader may not have published
/// its client address yet; wait for it a little (bounded) rather than send an empty address.
async fn not_leader(node: &Node) -> HeartbeatResponse {
    let deadline = node.clock.now() + node.leader_silence_max();
    let (leader, addr) = loop {
        let leader = node.leader().filter(|l| *l != node.id);
        let addr = leader
            .and_then(|l| node.node_addrs(l))
            .map(|a| a.client)
            .unwrap_or_default();
        if !addr.is_empty() || node.clock.now() >= deadline {
            break (leader, addr);
        }
        tokio::time::sleep(Duration::from_millis(node.config.heartbeat_interval_ms)).await;
    };
    HeartbeatResponse {
        not_leader: Some(NotLeader {
            leader_id: leader.unwrap_or(0),
            leader_addr: addr,
        }),
        ..Default::default()
    }
}

/// Waits (bounded) for the hub to serve the current term; false if this node does not lead.
async fn hub_ready(node: &Node, hub: &HeartbeatHub) -> bool {
    let mut term = hub.subscribe();
    let deadline = node.clock.now() + Duration::from_millis(node.config.request_timeout_ms);
    loop {
        if !node.raft.is_leader() {
            return false;
        }
        if *term.borrow_and_update() != 0 {
            return true;
        }
        let wait = tokio::time::sleep(Duration::from_millis(node.config.heartbeat_interval_ms));
        tokio::select! {
            _ = term.changed() => {}
            _ = wait => {}
        }
        if node.clock.now() >= deadline {
            return false;
        }
    }
}

/// What woke a stream's task.
enum Event {
    Request(Box<HeartbeatRequest>),
    /// Instructions were posted for the node.
    Posted,
    /// The node closed the stream, it broke, or the term ended.
    End,
}

/// Serves one node's stream until it ends: requests from `inbound`, responses to `tx`. Behind
/// the gRPC service, and run directly by the deterministic simulation over its own network.
pub async fn serve_stream<S>(node: Arc<Node>, mut inbound: S, tx: mpsc::Sender<Out>)
where
    S: tokio_stream::Stream<Item = Result<HeartbeatRequest, Status>> + Unpin + Send,
{
    let first = match inbound.next().await {
        Some(Ok(r)) => r,
        _ => return,
    };
    let hub = &node.heartbeats;
    if !hub_ready(&node, hub).await {
        let _ = tx.send(Ok(not_leader(&node).await)).await;
        return;
    }
    let mut term = hub.subscribe();
    let serving = *term.borrow_and_update();
    if serving == 0 {
        let _ = tx.send(Ok(not_leader(&node).await)).await;
        return;
    }
    let mut last_sequence = None;
    // When the request of `last_sequence` arrived: pushes say how long ago, for their leases.
    let mut last_received = node.heartbeats.now();
    let mut attached: Option<u64> = None;
    // Wakes the task when instructions are posted for the attached node.
    let mut posted: Option<watch::Receiver<u64>> = None;
    // The highest instruction id sent on this stream: ids grow, so everything above is unsent.
    let mut sent_up_to = 0u64;
    let mut next = Some(first);
    loop {
        let event = match next.take() {
            Some(r) => Event::Request(Box::new(r)),
            None => tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(r)) => Event::Request(Box::new(r)),
                    _ => Event::End,
                },
                _ = term.wait_for(|t| *t != serving) => Event::End,
                () = instructions_posted(&mut posted) => Event::Posted,
            },
        };
        let req = match event {
            Event::Request(req) => *req,
            Event::End => break,
            Event::Posted => {
                // Let the rest of a burst of posts land, so one push carries them together.
                tokio::task::yield_now().await;
                if *term.borrow() != serving {
                    break;
                }
                let node_id = attached.expect("only an attached stream is woken");
                let instructions =
                    hub.mailbox
                        .outbound_after(node_id, sent_up_to, node.heartbeats.now());
                let Some(last) = instructions.last() else {
                    // Already sent on an answer, replied or expired meanwhile.
                    continue;
                };
                sent_up_to = last.id;
                let push = HeartbeatResponse {
                    pushed: true,
                    instructions,
                    heartbeat_interval_ms: hub.heartbeat_interval_ms,
                    lease_base_sequence: last_sequence.unwrap_or(0),
                    lease_base_age_ms: node
                        .heartbeats
                        .now()
                        .saturating_duration_since(last_received)
                        .as_millis() as u64,
                    ..Default::default()
                };
                if !deliver(&tx, node_id, push) {
                    break;
                }
                continue;
            }
        };
        if *term.borrow() != serving {
            break;
        }
        let claimed = req.node.as_ref().map(|n| n.id);
        if attached.is_some() && claimed != attached {
            // One stream speaks for one node; another id on it is a client bug.
            let _ = tx.try_send(Ok(refusal(
                req.sequence,
                tonic::Code::InvalidArgument as i32,
                "node.id: a stream reports for one node only".into(),
            )));
            break;
        }
        let now = node.heartbeats.now();
        let node_id = match on_heartbeat(&node, &req, last_sequence, now) {
            Ok(id) => id,
            Err(e) => {
                node.metrics
                    .observe("Heartbeat", tonic::Code::from(e.code()), now.elapsed());
                tracing::info!(node = claimed.unwrap_or(0), "heartbeat refused: {e}");
                let _ = tx.try_send(Ok(refusal(req.sequence, e.code(), e.to_string())));
                break;
            }
        };
        if attached.is_none() {
            posted = Some(hub.attach(node_id));
            attached = Some(node_id);
        }
        last_sequence = Some(req.sequence);
        last_received = now;
        // A regular answer re-sends every unreplied instruction (at least once); a replies-only
        // one comes between heartbeats and adds only what this stream has not sent yet.
        let instructions = if req.replies_only {
            hub.mailbox.outbound_after(node_id, sent_up_to, now)
        } else {
            hub.mailbox.outbound(node_id, now)
        };
        if let Some(last) = instructions.last() {
            sent_up_to = sent_up_to.max(last.id);
        }
        let resp = HeartbeatResponse {
            sequence: req.sequence,
            instructions,
            heartbeat_interval_ms: hub.heartbeat_interval_ms,
            region_leases: grant_region_leases(&node, node_id, &req, now).await,
            lease_base_sequence: req.sequence,
            ..Default::default()
        };
        // Handling time of one request (regular or replies-only) on the leader (registry,
        // mailbox), in the per-RPC series of /metrics under method "Heartbeat".
        node.metrics
            .observe("Heartbeat", tonic::Code::Ok, now.elapsed());
        if !deliver(&tx, node_id, resp) {
            break;
        }
    }
    if let Some(id) = attached {
        hub.detach(id);
    }
}

/// Returns when an instruction was posted since the last wake; never before the stream attached.
async fn instructions_posted(posted: &mut Option<watch::Receiver<u64>>) {
    if let Some(rx) = posted {
        // The sender lives as long as an attached stream of the node, this one included.
        if rx.changed().await.is_ok() {
            return;
        }
    }
    std::future::pending().await
}

/// Queues a response without waiting (answers and pushes alike); false when the stream must end
/// because the node does not read it or is gone.
fn deliver(tx: &mpsc::Sender<Out>, node_id: u64, resp: HeartbeatResponse) -> bool {
    match tx.try_send(Ok(resp)) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            tracing::warn!(
                node = node_id,
                "disconnecting node: it does not read its heartbeat stream \
                 (heartbeat_stream_buffer_max {HEARTBEAT_STREAM_BUFFER_MAX} reached)"
            );
            false
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

fn refusal(sequence: u64, code: i32, message: String) -> HeartbeatResponse {
    HeartbeatResponse {
        sequence,
        error: Some(HeartbeatError { code, message }),
        ..Default::default()
    }
}
