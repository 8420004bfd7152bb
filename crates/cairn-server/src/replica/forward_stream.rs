//! Forwarding on one long-lived stream per leader, as etcd's followers send proposals on their
//! Raft stream: a follower's requests for the leader go out in batches on a `ForwardStream` call
//! and the answers come back in batches on the same call, in whatever order they finish.
//!
//! One request per unary call cost an HTTP/2 stream, its headers and a write of its own, both
//! ways, for two thirds of all writes (BENCHMARKS.md, issue 12); now one write carries every
//! request queued meanwhile.
//!
//! Wire format: a batch is the items one after another, each `id: u64 LE, len: u32 LE, bytes`,
//! where the bytes are a postcard-encoded [`LeaderRequest`] going in and [`LeaderResponse`] coming
//! back. A batch holds at most [`FORWARD_BATCH_ITEMS_MAX`] items and, past its first item,
//! [`FORWARD_BATCH_BYTES_MAX`] bytes.
//!
//! Failure semantics are those of the unary call: a request that never left this node (the
//! leader refused the connection, or the stream was gone before its batch was handed over) is
//! [`ForwardFailure::NotSent`] and may be retried; one that may have reached the leader and got
//! no answer is [`ForwardFailure::Lost`].

use crate::errors;
use crate::replica::forward::ForwardFailure;
use crate::replica::node::Replica;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_proto::raftpb::RaftMessage;
use cairn_store::network::{decode, encode};
use cairn_types::limits::{FORWARD_INFLIGHT_MAX, PEER_MESSAGE_BYTES_MAX};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

/// Most requests (or answers) in one stream message.
pub const FORWARD_BATCH_ITEMS_MAX: usize = 256;
/// Most bytes of items in one stream message past its first item (which may be larger, up to the
/// request size limit).
pub const FORWARD_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Batches handed to the transport and not yet written, per stream.
pub const FORWARD_STREAM_BATCHES_MAX: usize = 16;
/// An answer larger than this is replaced by an error naming the limit: it could not travel.
const FORWARD_ANSWER_BYTES_MAX: usize = PEER_MESSAGE_BYTES_MAX - 1024;
/// Bytes of an item's header: its id and its length.
const ITEM_HEADER_BYTES: usize = 12;

/// What a waiting caller gets: the encoded answer, or why there is none.
type Reply = oneshot::Sender<Result<Vec<u8>, ForwardFailure>>;

/// One request queued for the stream.
struct Outgoing {
    data: Vec<u8>,
    reply: Reply,
}

/// The follower's end of the stream to one leader: a queue served by one task, which opens the
/// stream when there is work and keeps it open while it lasts.
#[derive(Clone)]
pub struct ForwardLink {
    addr: String,
    queue: mpsc::Sender<Outgoing>,
    /// Set when the leader's node has no `ForwardStream` (an older version during a rolling
    /// upgrade): requests then go by the unary call.
    unsupported: Arc<AtomicBool>,
}

impl ForwardLink {
    fn start(addr: String, client: RaftPeerClient<Channel>) -> Self {
        // The forward slots already bound what is queued: one per caller.
        let (queue, rx) = mpsc::channel(FORWARD_INFLIGHT_MAX);
        let unsupported = Arc::new(AtomicBool::new(false));
        tokio::spawn(run_link(client, rx, unsupported.clone()));
        Self {
            addr,
            queue,
            unsupported,
        }
    }

    /// Whether the leader's node answered that it has no `ForwardStream`.
    pub fn unsupported(&self) -> bool {
        self.unsupported.load(Ordering::Relaxed)
    }

    /// Sends `req` and waits for its answer, at most `timeout` (then [`ForwardFailure::Lost`]).
    pub async fn call(
        &self,
        req: &LeaderRequest,
        timeout: std::time::Duration,
    ) -> Result<LeaderResponse, ForwardFailure> {
        let data = encode(req).map_err(|e| ForwardFailure::Refused(errors::internal(e)))?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Outgoing { data, reply })
            .await
            .map_err(|_| ForwardFailure::NotSent)?;
        let bytes = match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => answer?,
            // The link's task ended with the request in its hands: it may have been sent.
            Ok(Err(_)) | Err(_) => return Err(ForwardFailure::Lost),
        };
        decode(&bytes).map_err(|e| ForwardFailure::Refused(errors::internal(e)))
    }
}

impl Replica {
    /// The stream link to node `id`'s peer address, started on first use and again when the
    /// address changes.
    pub(super) fn forward_link(
        &self,
        id: u64,
        client: impl FnOnce() -> Result<(String, RaftPeerClient<Channel>), Status>,
    ) -> Result<ForwardLink, Status> {
        let addr = self.node_addrs(id).ok_or_else(errors::no_leader)?.peer;
        let mut links = self.forward_links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = links.get(&id) {
            if link.addr == addr && !link.queue.is_closed() {
                return Ok(link.clone());
            }
        }
        let (addr, client) = client()?;
        let link = ForwardLink::start(addr, client);
        links.insert(id, link.clone());
        Ok(link)
    }
}

/// The link's task: takes queued requests in batches, opens the stream when it has none, and
/// hands every answer to its caller. Ends when every sender of the queue is gone.
async fn run_link(
    mut client: RaftPeerClient<Channel>,
    mut queue: mpsc::Receiver<Outgoing>,
    unsupported: Arc<AtomicBool>,
) {
    let mut next_id = 0u64;
    let mut carried: Option<Outgoing> = None;
    loop {
        let first = match carried.take() {
            Some(item) => item,
            None => match queue.recv().await {
                Some(item) => item,
                None => return,
            },
        };
        let mut waiting: HashMap<u64, Reply> = HashMap::new();
        let (batches, outgoing) = mpsc::channel(FORWARD_STREAM_BATCHES_MAX);
        let (batch, rest) = request_batch(first, &mut queue, &mut waiting, &mut next_id);
        carried = rest;
        // A fresh channel has room for the first batch.
        let _ = batches.try_send(batch);
        let mut answers: Streaming<RaftMessage> =
            match client.forward_stream(ReceiverStream::new(outgoing)).await {
                Ok(resp) => resp.into_inner(),
                Err(s) => {
                    let unimplemented = s.code() == Code::Unimplemented;
                    if unimplemented {
                        unsupported.store(true, Ordering::Relaxed);
                    }
                    let not_sent = unimplemented || crate::replica::forward::never_sent(&s);
                    fail_all(&mut waiting, || {
                        if not_sent {
                            ForwardFailure::NotSent
                        } else {
                            ForwardFailure::Lost
                        }
                    });
                    continue;
                }
            };
        'stream: loop {
            // The next request to send, answers read meanwhile.
            let next = match carried.take() {
                Some(item) => item,
                None => tokio::select! {
                    answer = answers.message() => match answer {
                        Ok(Some(msg)) => {
                            deliver(&msg.data, &mut waiting);
                            continue;
                        }
                        Ok(None) | Err(_) => break,
                    },
                    next = queue.recv() => match next {
                        Some(item) => item,
                        None => break,
                    },
                },
            };
            let (batch, rest) = request_batch(next, &mut queue, &mut waiting, &mut next_id);
            carried = rest;
            // Handed to the transport when it has room; answers are still read while it has none,
            // so a leader waiting for this side to take its answers never stalls both.
            let permit = loop {
                tokio::select! {
                    permit = batches.reserve() => break permit.ok(),
                    answer = answers.message() => match answer {
                        Ok(Some(msg)) => deliver(&msg.data, &mut waiting),
                        Ok(None) | Err(_) => break None,
                    },
                }
            };
            match permit {
                Some(permit) => permit.send(batch),
                None => {
                    // The stream is gone: this batch never left.
                    for item in items(&batch.data) {
                        if let Some(reply) = item.ok().and_then(|(id, _)| waiting.remove(&id)) {
                            let _ = reply.send(Err(ForwardFailure::NotSent));
                        }
                    }
                    break 'stream;
                }
            }
        }
        // The stream ended: whatever was sent on it is unanswered now.
        fail_all(&mut waiting, || ForwardFailure::Lost);
    }
}

fn fail_all(waiting: &mut HashMap<u64, Reply>, failure: impl Fn() -> ForwardFailure) {
    for (_, reply) in waiting.drain() {
        let _ = reply.send(Err(failure()));
    }
}

/// `first` and whatever else is queued, within the batch limits, as one message; their callers
/// wait in `waiting` under fresh ids. Callers that gave up while queued are left out. An item that
/// would pass the byte limit is returned, to go first in the next message.
fn request_batch(
    first: Outgoing,
    queue: &mut mpsc::Receiver<Outgoing>,
    waiting: &mut HashMap<u64, Reply>,
    next_id: &mut u64,
) -> (RaftMessage, Option<Outgoing>) {
    let (data, rest) = fill_batch(
        first,
        || queue.try_recv().ok(),
        |item| item.data.len(),
        |data, item| {
            // Callers that gave up are forgotten once the table is full: each holds a forward
            // slot while it waits, so what is left is at most FORWARD_INFLIGHT_MAX.
            if waiting.len() >= FORWARD_INFLIGHT_MAX {
                waiting.retain(|_, reply| !reply.is_closed());
            }
            if !item.reply.is_closed() {
                *next_id += 1;
                push_item(data, *next_id, &item.data);
                waiting.insert(*next_id, item.reply);
            }
        },
    );
    (RaftMessage { data }, rest)
}

/// One message's items: `first`, then what `more` has ready, until [`FORWARD_BATCH_ITEMS_MAX`]
/// items or an item that would take the message past [`FORWARD_BATCH_BYTES_MAX`] (returned).
fn fill_batch<T>(
    first: T,
    mut more: impl FnMut() -> Option<T>,
    len: impl Fn(&T) -> usize,
    mut push: impl FnMut(&mut Vec<u8>, T),
) -> (Vec<u8>, Option<T>) {
    let mut data = Vec::with_capacity(ITEM_HEADER_BYTES + len(&first));
    push(&mut data, first);
    for _ in 1..FORWARD_BATCH_ITEMS_MAX {
        let Some(item) = more() else { break };
        if data.len() + ITEM_HEADER_BYTES + len(&item) > FORWARD_BATCH_BYTES_MAX {
            return (data, Some(item));
        }
        push(&mut data, item);
    }
    (data, None)
}

fn push_item(data: &mut Vec<u8>, id: u64, bytes: &[u8]) {
    data.extend_from_slice(&id.to_le_bytes());
    data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    data.extend_from_slice(bytes);
}

/// The items of a batch, `(id, bytes)`; ends after the first malformed one.
fn items(data: &[u8]) -> impl Iterator<Item = Result<(u64, &[u8]), String>> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some((header, body)) = rest.split_at_checked(ITEM_HEADER_BYTES) else {
            rest = &[];
            return Some(Err("forward batch: truncated item header".to_string()));
        };
        let (id, len) = header.split_at(8);
        let id = u64::from_le_bytes(id.try_into().unwrap_or_default());
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let Some((bytes, after)) = body.split_at_checked(len) else {
            rest = &[];
            return Some(Err(format!(
                "forward batch: item {id} claims {len} bytes, {} left",
                body.len()
            )));
        };
        rest = after;
        Some(Ok((id, bytes)))
    })
}

/// Hands each answer of a batch to its caller.
fn deliver(data: &[u8], waiting: &mut HashMap<u64, Reply>) {
    for item in items(data) {
        match item {
            Ok((id, bytes)) => {
                if let Some(reply) = waiting.remove(&id) {
                    let _ = reply.send(Ok(bytes.to_vec()));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "malformed answer batch from the leader");
                return;
            }
        }
    }
}

fn encode_answer(resp: &LeaderResponse) -> Vec<u8> {
    match encode(resp) {
        Ok(bytes) if bytes.len() <= FORWARD_ANSWER_BYTES_MAX => bytes,
        Ok(bytes) => error_answer(&Status::new(
            Code::ResourceExhausted,
            format!(
                "cairn: answer of {} bytes larger than peer_message_bytes_max {PEER_MESSAGE_BYTES_MAX}",
                bytes.len()
            ),
        )),
        Err(e) => error_answer(&errors::internal(e)),
    }
}

fn error_answer(s: &Status) -> Vec<u8> {
    let resp = LeaderResponse::Error {
        code: s.code() as i32,
        message: s.message().to_string(),
    };
    encode(&resp).unwrap_or_default()
}

/// The leader's end: serves each request of each incoming batch as the unary `Forward` does (on
/// this node, which must lead; never forwarded again) and streams the answers back in batches.
/// At most [`FORWARD_INFLIGHT_MAX`] requests of one stream run at once; past that a request is
/// answered with `ResourceExhausted` naming the limit.
pub fn serve_stream(
    node: Arc<Replica>,
    mut incoming: Streaming<RaftMessage>,
) -> impl tokio_stream::Stream<Item = Result<RaftMessage, Status>> + Send + 'static {
    let (answers, answered) = mpsc::channel::<(u64, Vec<u8>)>(FORWARD_INFLIGHT_MAX);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(FORWARD_INFLIGHT_MAX));
        while let Some(Ok(msg)) = incoming.next().await {
            for item in items(&msg.data) {
                let (id, bytes) = match item {
                    Ok(item) => item,
                    Err(e) => {
                        tracing::warn!(error = %e, "malformed forward batch");
                        return;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    let refused = errors::too_many_requests("forward_inflight_max reached");
                    let _ = answers.send((id, error_answer(&refused))).await;
                    continue;
                };
                let req: Result<LeaderRequest, String> = decode(bytes);
                let (node, answers) = (node.clone(), answers.clone());
                tokio::spawn(async move {
                    let answer = match req {
                        Ok(req) => match node.serve_as_leader(req).await {
                            Ok(resp) => encode_answer(&resp),
                            Err(s) => error_answer(&s),
                        },
                        Err(e) => error_answer(&Status::new(Code::InvalidArgument, e)),
                    };
                    let _ = answers.send((id, answer)).await;
                    drop(slot);
                });
            }
        }
    });
    futures::stream::unfold(
        (answered, None::<(u64, Vec<u8>)>),
        |(mut answered, carried)| async move {
            let first = match carried {
                Some(item) => item,
                None => answered.recv().await?,
            };
            let (data, rest) = fill_batch(
                first,
                || answered.try_recv().ok(),
                |(_, bytes)| bytes.len(),
                |data, (id, bytes)| push_item(data, id, &bytes),
            );
            Some((Ok(RaftMessage { data }), (answered, rest)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_malformed_ones_stop_at_the_damage() {
        let mut data = Vec::new();
        push_item(&mut data, 7, b"seven");
        push_item(&mut data, 8, b"");
        push_item(&mut data, u64::MAX, &[1; 300]);
        let got: Vec<_> = items(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![
                (7, &b"seven"[..]),
                (8, &b""[..]),
                (u64::MAX, &[1u8; 300][..])
            ]
        );
        // Cut inside the last item's bytes, then inside a header: the good items come first.
        let cut: Vec<_> = items(&data[..data.len() - 1]).collect();
        assert_eq!(cut.len(), 3);
        assert!(cut[2].as_ref().unwrap_err().contains("claims 300 bytes"));
        let cut: Vec<_> = items(&data[..5]).collect();
        assert_eq!(cut.len(), 1);
        assert!(cut[0].is_err());
    }

    #[test]
    fn a_batch_stops_at_its_item_and_byte_limits_and_carries_the_rest() {
        let mut queue: Vec<Vec<u8>> = (0..FORWARD_BATCH_ITEMS_MAX + 5)
            .map(|_| vec![0; 10])
            .collect();
        queue.reverse();
        let first = queue.pop().unwrap();
        let (data, rest) = fill_batch(first, || queue.pop(), Vec::len, |d, b| push_item(d, 0, &b));
        assert!(rest.is_none());
        assert_eq!(items(&data).count(), FORWARD_BATCH_ITEMS_MAX);
        assert_eq!(queue.len(), 5);

        // A large item waits for the next message, however small the first one was.
        let mut queue = vec![vec![0; 10], vec![0; FORWARD_BATCH_BYTES_MAX]];
        let (data, rest) = fill_batch(
            vec![1; 100],
            || queue.pop(),
            Vec::len,
            |d, b| push_item(d, 0, &b),
        );
        assert_eq!(items(&data).count(), 1);
        assert_eq!(rest.map(|r| r.len()), Some(FORWARD_BATCH_BYTES_MAX));
        assert_eq!(queue.len(), 1);
    }
}
