//! Replication on one long-lived gRPC stream per follower (`RaftPeer.StreamAppend`), the client
//! side of openraft's `stream_append`.
//!
//! openraft's default sends a stream's AppendEntries one unary call at a time: the next batch of
//! entries waited for the previous call's answer, so a proposal arriving while the leader was
//! still telling a follower about the last commit waited one more round trip before it left
//! (BENCHMARKS.md, issue 12). Here a request goes out without waiting for the answer to the one
//! before, and the follower answers each in order on the same stream, as etcd's leader streams
//! its MsgApp.
//!
//! At most a window of messages (the `replication_window` setting, at most
//! [`APPEND_STREAM_INFLIGHT_MAX`]) are unanswered at a time, and the next request is made only
//! once a message of the window is answered. openraft makes a request when asked for it, from
//! everything proposed since the last one, so entries proposed while the window is full go
//! together in the next message: a busy leader sends fewer, fuller appends, and each follower
//! wakes, decodes, logs and answers once per batch rather than per proposal. A window of two
//! still lets a proposal leave at once while a commit-only message is unanswered.
//!
//! What a unary call guaranteed still holds:
//! - a request larger than [`PEER_MESSAGE_BYTES_MAX`] goes out as several messages, each within
//!   the limit (openraft batches by count, not bytes); each is answered;
//! - an answer not back within the append timeout of its request's sending fails the stream as a
//!   network error (openraft then opens a new one at once);
//! - a link cut by [`PeerFaults`] fails the stream as unreachable, before the next message is
//!   sent or when an answer arrives;
//! - a peer without `StreamAppend` (an older version, during a rolling upgrade) is answered by
//!   falling back to unary calls for the rest of this client's life.

use crate::peer_wire::{decode, encode, entries_that_fit, status_to_rpc_error, PeerFaults};
use crate::TypeConfig;
use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_proto::raftpb::RaftMessage;
#[cfg(doc)]
use cairn_types::limits::APPEND_STREAM_INFLIGHT_MAX;
use cairn_types::limits::PEER_MESSAGE_BYTES_MAX;
use futures::{Stream, StreamExt};
use openraft::alias::EntryOf;
use openraft::error::{NetworkError, RPCError, Unreachable};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Streaming;

/// The answers of one stream, as openraft reads them.
pub type AnswerStream<'s> = Pin<
    Box<
        dyn Stream<Item = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> + Send + 's,
    >,
>;

/// Encodes `rpc` as one or more peer messages, each within `max` bytes (a single
/// entry larger than that still goes alone: replication must progress, and an entry is a client
/// request, bounded well below the limit). Every part carries the request's vote and commit, and
/// starts where the one before ended.
pub fn encode_parts(
    rpc: AppendEntriesRequest<TypeConfig>,
    max: usize,
) -> Result<Vec<Vec<u8>>, String> {
    let whole = encode(&rpc)?;
    if whole.len() <= max || rpc.entries.len() <= 1 {
        return Ok(vec![whole]);
    }
    drop(whole);
    let mut rest = rpc;
    let mut entries: VecDeque<EntryOf<TypeConfig>> = std::mem::take(&mut rest.entries).into();
    let header = postcard::experimental::serialized_size(&rest).map_err(|e| e.to_string())?;
    let mut parts = Vec::new();
    while !entries.is_empty() {
        let sizes = entries
            .iter()
            .map(|e| postcard::experimental::serialized_size(e).unwrap_or(0));
        let fit = entries_that_fit(header, sizes, max);
        let mut part = AppendEntriesRequest::<TypeConfig> {
            vote: rest.vote,
            prev_log_id: rest.prev_log_id,
            leader_commit: rest.leader_commit,
            entries: entries.drain(..fit).collect(),
        };
        parts.push(encode(&part)?);
        rest.prev_log_id = part.entries.pop().map(|e: EntryOf<TypeConfig>| e.log_id);
    }
    Ok(parts)
}

/// What the sending half and the answering half of one stream share.
struct Shared {
    /// When each message on the wire and not yet answered was handed to the transport.
    sent: Mutex<VecDeque<Instant>>,
    /// Signalled when a message is handed over, so that a reader waiting without a deadline
    /// starts timing it.
    sent_signal: Notify,
    /// One per message that may still be sent before an answer comes back.
    slots: Semaphore,
    /// Why the sending half stopped early, if it did; the answering half reports it.
    failure: Mutex<Option<RPCError<TypeConfig>>>,
}

impl Shared {
    fn fail(&self, e: RPCError<TypeConfig>) {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(e);
    }

    fn take_failure(&self) -> Option<RPCError<TypeConfig>> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    fn oldest_sent(&self) -> Option<Instant> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .front()
            .copied()
    }

    fn answered(&self) {
        if self
            .sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
            .is_some()
        {
            self.slots.add_permits(1);
        }
    }
}

fn network_error(e: impl ToString) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::from_string(e.to_string()))
}

fn cut(target: u64) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::from_string(format!(
        "link to node {target} is cut (peer fault)"
    )))
}

/// Opens a `StreamAppend` call to `target` carrying `input`, and returns its answers; `timeout`
/// is how long any one message may wait for its answer, `window` how many may be unanswered
/// (at least one). `Err(Unimplemented)` status means the peer has no such call.
pub async fn open<'s, S>(
    mut client: RaftPeerClient<Channel>,
    target: u64,
    faults: PeerFaults,
    input: S,
    timeout: Duration,
    window: usize,
) -> Result<AnswerStream<'s>, tonic::Status>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let shared = Arc::new(Shared {
        sent: Mutex::new(VecDeque::new()),
        sent_signal: Notify::new(),
        slots: Semaphore::new(window.max(1)),
        failure: Mutex::new(None),
    });
    let outgoing = outgoing(input, shared.clone(), faults.clone(), target);
    let answers = client
        .stream_append(tonic::Request::new(outgoing))
        .await?
        .into_inner();
    Ok(Box::pin(futures::stream::unfold(
        Some((answers, shared)),
        move |state| {
            let faults = faults.clone();
            async move {
                let (mut answers, shared) = state?;
                let item = next_answer(&mut answers, &shared, &faults, target, timeout).await;
                let more = matches!(item, Some(Ok(Ok(_))));
                item.map(|item| (item, more.then_some((answers, shared))))
            }
        },
    )))
}

/// The messages to send: each request encoded (in parts if need be) and stamped with its
/// sending time as the transport takes it. Every message waits for a slot of the window first,
/// and a request is asked of `input` only once its first message has one, so that it carries
/// what was proposed while the window was full. Ends, recording why, at a link cut by `faults`
/// or a request that cannot be encoded.
fn outgoing<S>(
    input: S,
    shared: Arc<Shared>,
    faults: PeerFaults,
    target: u64,
) -> impl Stream<Item = RaftMessage> + Send + 'static
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    futures::stream::unfold(
        (input, VecDeque::<Vec<u8>>::new()),
        move |(mut input, mut parts)| {
            let shared = shared.clone();
            let faults = faults.clone();
            async move {
                // The semaphore is never closed. A slot taken by a stream that then ends is
                // never given back: the stream is done with.
                if let Ok(slot) = shared.slots.acquire().await {
                    slot.forget();
                }
                if parts.is_empty() {
                    let rpc = input.next().await?;
                    match encode_parts(rpc, PEER_MESSAGE_BYTES_MAX) {
                        Ok(p) => parts = p.into(),
                        Err(e) => {
                            shared.fail(network_error(e));
                            return None;
                        }
                    }
                }
                // `encode_parts` gives at least one part.
                let data = parts.pop_front()?;
                if faults.blocks(target) {
                    shared.fail(cut(target));
                    return None;
                }
                shared
                    .sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(Instant::now());
                shared.sent_signal.notify_one();
                Some((RaftMessage { data }, (input, parts)))
            }
        },
    )
}

/// The next answer, `None` once the stream ended with every message answered.
async fn next_answer(
    answers: &mut Streaming<RaftMessage>,
    shared: &Shared,
    faults: &PeerFaults,
    target: u64,
    timeout: Duration,
) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
    let message = loop {
        let deadline = shared.oldest_sent().map(|t| t + timeout);
        tokio::select! {
            m = answers.next() => break m,
            _ = shared.sent_signal.notified(), if deadline.is_none() => continue,
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                return Some(Err(network_error(format!(
                    "timed out: no answer from node {target} within {} ms on the append stream",
                    timeout.as_millis()
                ))));
            }
        }
    };
    if faults.blocks(target) {
        return Some(Err(cut(target)));
    }
    match message {
        Some(Ok(m)) => {
            shared.answered();
            Some(decode(&m.data).map_err(network_error))
        }
        Some(Err(status)) => Some(Err(status_to_rpc_error(status))),
        None => {
            if let Some(e) = shared.take_failure() {
                return Some(Err(e));
            }
            let unanswered = shared.sent.lock().unwrap_or_else(|p| p.into_inner()).len();
            (unanswered > 0).then(|| {
                Err(network_error(format!(
                    "append stream to node {target} ended with {unanswered} messages unanswered"
                )))
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{PeerClient, PeerNetwork};
    use cairn_proto::raftpb::raft_peer_server::{RaftPeer, RaftPeerServer};
    use cairn_proto::raftpb::{JoinRequest, JoinResponse, SnapshotChunk};
    use cairn_types::limits::{APPEND_STREAM_INFLIGHT_MAX, REPLICATION_WINDOW_DEFAULT};
    use cairn_types::NodeAddrs;
    use openraft::network::{RPCOption, RaftNetworkFactory};
    use openraft::raft::AppendEntriesResponse;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::{EntryPayload, RaftNetworkV2};
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use tonic::{Request, Response, Status};

    type Vote = openraft::alias::VoteOf<TypeConfig>;
    type LogId = openraft::alias::LogIdOf<TypeConfig>;
    type BoxedAnswers = Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send>>;

    const TARGET: u64 = 2;

    fn id(index: u64) -> LogId {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(1, 1),
            index,
        )
    }

    fn vote() -> Vote {
        Vote::new_committed(1, 1)
    }

    /// An append of the entries `from..=to` (none when `from > to`), each of `payload` bytes.
    fn append(from: u64, to: u64, payload: usize) -> AppendEntriesRequest<TypeConfig> {
        let entries = (from..=to)
            .map(|i| EntryOf::<TypeConfig> {
                log_id: id(i),
                payload: EntryPayload::Normal(crate::Command::Txn(vec![7; payload].into())),
            })
            .collect();
        AppendEntriesRequest {
            vote: vote(),
            prev_log_id: (from > 1).then(|| id(from - 1)),
            leader_commit: None,
            entries,
        }
    }

    fn last_of(req: &AppendEntriesRequest<TypeConfig>) -> Option<LogId> {
        req.entries.last().map(|e| e.log_id).or(req.prev_log_id)
    }

    /// How a fake follower answers a replication stream.
    #[derive(Clone, Copy)]
    enum Mode {
        /// Answers nothing until three requests arrived, then all three, in order.
        AnswerInThrees,
        /// Reads every request and never answers.
        Silent,
        /// Has no `StreamAppend`, like a node of an older version.
        NoStreamAppend,
        /// Answers each request in order, one per permit the test adds to `release`.
        AnswerWhenReleased,
    }

    #[derive(Clone)]
    struct FakePeer {
        mode: Mode,
        unary_appends: Arc<AtomicUsize>,
        /// Messages read from replication streams.
        streamed: Arc<AtomicUsize>,
        /// With [`Mode::AnswerWhenReleased`]: a permit per answer the peer may give.
        release: Arc<Semaphore>,
    }

    fn unimplemented<T>() -> Result<T, Status> {
        Err(Status::unimplemented("not in this fake peer"))
    }

    #[tonic::async_trait]
    impl RaftPeer for FakePeer {
        async fn append_entries(
            &self,
            _: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            self.unary_appends.fetch_add(1, Ordering::SeqCst);
            let data = encode(&AppendEntriesResponse::<TypeConfig>::Success).unwrap();
            Ok(Response::new(RaftMessage { data }))
        }

        type StreamAppendStream = BoxedAnswers;

        async fn stream_append(
            &self,
            request: Request<Streaming<RaftMessage>>,
        ) -> Result<Response<BoxedAnswers>, Status> {
            let mut requests = request.into_inner();
            let answers: BoxedAnswers = match self.mode {
                Mode::NoStreamAppend => return unimplemented(),
                Mode::Silent => {
                    let streamed = self.streamed.clone();
                    tokio::spawn(async move {
                        while requests_next(&mut requests).await {
                            streamed.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                    Box::pin(futures::stream::pending())
                }
                Mode::AnswerInThrees => Box::pin(async_stream_of_threes(requests)),
                Mode::AnswerWhenReleased => {
                    Box::pin(answered_when_released(requests, self.release.clone()))
                }
            };
            Ok(Response::new(answers))
        }

        async fn vote(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            unimplemented()
        }
        async fn pre_vote(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            unimplemented()
        }
        async fn transfer_leader(
            &self,
            _: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            unimplemented()
        }
        async fn full_snapshot(
            &self,
            _: Request<Streaming<SnapshotChunk>>,
        ) -> Result<Response<RaftMessage>, Status> {
            unimplemented()
        }
        async fn join(&self, _: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
            unimplemented()
        }
        async fn forward(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            unimplemented()
        }
        type ForwardStreamStream = BoxedAnswers;
        async fn forward_stream(
            &self,
            _: Request<Streaming<RaftMessage>>,
        ) -> Result<Response<BoxedAnswers>, Status> {
            unimplemented()
        }
    }

    /// Whether another request arrived (and was read).
    async fn requests_next(requests: &mut Streaming<RaftMessage>) -> bool {
        matches!(requests.next().await, Some(Ok(_)))
    }

    /// Reads requests three at a time and answers each group only once it is complete.
    fn async_stream_of_threes(
        requests: Streaming<RaftMessage>,
    ) -> impl Stream<Item = Result<RaftMessage, Status>> + Send {
        futures::stream::unfold(requests, |mut requests| async move {
            let mut group = Vec::new();
            while group.len() < 3 {
                let m = requests.next().await?.ok()?;
                let req: AppendEntriesRequest<TypeConfig> = decode(&m.data).ok()?;
                let answer: StreamAppendResult<TypeConfig> = Ok(last_of(&req));
                group.push(Ok(RaftMessage {
                    data: encode(&answer).unwrap(),
                }));
            }
            Some((futures::stream::iter(group), requests))
        })
        .flatten()
    }

    /// Answers each request in order, once `release` has a permit for it.
    fn answered_when_released(
        requests: Streaming<RaftMessage>,
        release: Arc<Semaphore>,
    ) -> impl Stream<Item = Result<RaftMessage, Status>> + Send {
        futures::stream::unfold(requests, move |mut requests| {
            let release = release.clone();
            async move {
                let m = requests.next().await?.ok()?;
                release.acquire().await.ok()?.forget();
                let req: AppendEntriesRequest<TypeConfig> = decode(&m.data).ok()?;
                let answer: StreamAppendResult<TypeConfig> = Ok(last_of(&req));
                let data = encode(&answer).unwrap();
                Some((Ok(RaftMessage { data }), requests))
            }
        })
    }

    /// A fake follower on a port picked at run time, and a client of it with the default window.
    async fn start(mode: Mode, faults: PeerFaults) -> (PeerClient, FakePeer) {
        start_with_window(mode, faults, REPLICATION_WINDOW_DEFAULT).await
    }

    /// A fake follower on a port picked at run time, and a client of it keeping at most `window`
    /// messages unanswered.
    async fn start_with_window(
        mode: Mode,
        faults: PeerFaults,
        window: usize,
    ) -> (PeerClient, FakePeer) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = FakePeer {
            mode,
            unary_appends: Arc::default(),
            streamed: Arc::default(),
            release: Arc::new(Semaphore::new(0)),
        };
        let counters = peer.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftPeerServer::new(peer))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let node = NodeAddrs {
            peer: addr.to_string(),
            client: String::new(),
            http: String::new(),
        };
        let mut network = PeerNetwork::new(faults, Duration::from_millis(300), window);
        (network.new_client(TARGET, &node).await, counters)
    }

    fn option() -> RPCOption {
        RPCOption::new(Duration::from_millis(100))
    }

    /// Streams `requests` and returns what each answer acknowledged, every one a success.
    async fn acknowledged<const N: usize>(
        client: &mut PeerClient,
        requests: [AppendEntriesRequest<TypeConfig>; N],
    ) -> Vec<Option<LogId>> {
        let answers: Vec<_> = client
            .stream_append(futures::stream::iter(requests), option())
            .await
            .unwrap()
            .collect()
            .await;
        answers.into_iter().map(|a| a.unwrap().unwrap()).collect()
    }

    #[test]
    fn a_large_append_goes_in_parts_within_the_limit_each_starting_where_the_last_ended() {
        let req = append(5, 14, 1000);
        let parts = encode_parts(req.clone(), 3500).unwrap();
        assert!(parts.len() >= 4, "{} parts", parts.len());
        let mut prev = req.prev_log_id;
        let mut sent = Vec::new();
        for p in &parts {
            assert!(p.len() <= 3500, "a part of {} bytes", p.len());
            let part: AppendEntriesRequest<TypeConfig> = decode(p).unwrap();
            assert_eq!(part.prev_log_id, prev);
            assert_eq!(part.vote, req.vote);
            prev = last_of(&part);
            sent.extend(part.entries.iter().map(|e| e.log_id.index));
        }
        assert_eq!(sent, (5..=14).collect::<Vec<_>>());
        // Small enough, or a single entry however large: one message.
        assert_eq!(encode_parts(append(5, 14, 10), 3500).unwrap().len(), 1);
        assert_eq!(encode_parts(append(5, 5, 5000), 3500).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn requests_within_the_window_go_out_without_waiting_for_answers_which_come_back_in_order(
    ) {
        let (mut client, peer) =
            start_with_window(Mode::AnswerInThrees, PeerFaults::default(), 3).await;
        // The follower answers only once three requests are in: sent one call at a time, the
        // first would never be answered.
        let input = [append(1, 2, 10), append(3, 3, 10), append(4, 6, 10)];
        let answers = acknowledged(&mut client, input).await;
        assert_eq!(answers, vec![Some(id(2)), Some(id(3)), Some(id(6))]);
        assert_eq!(peer.unary_appends.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_unanswered_append_fails_the_stream_as_a_network_error() {
        let (mut client, _) = start(Mode::Silent, PeerFaults::default()).await;
        let input = futures::stream::iter([append(1, 1, 10)]).chain(futures::stream::pending());
        let mut answers = client.stream_append(input, option()).await.unwrap();
        match answers.next().await {
            Some(Err(RPCError::Network(e))) => assert!(e.to_string().contains("timed out"), "{e}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(
            answers.next().await.is_none(),
            "the stream ends at its error"
        );
    }

    #[tokio::test]
    async fn unanswered_messages_on_a_stream_are_bounded_by_the_window() {
        for window in [REPLICATION_WINDOW_DEFAULT, APPEND_STREAM_INFLIGHT_MAX] {
            let (mut client, peer) =
                start_with_window(Mode::Silent, PeerFaults::default(), window).await;
            let n = window as u64 + 50;
            let input = futures::stream::iter((1..=n).map(|i| append(i, i, 10)));
            let long = RPCOption::new(Duration::from_secs(60));
            // The answers are not read (the peer sends none): the requests go out regardless.
            let _answers = client.stream_append(input, long).await.unwrap();
            let streamed = || peer.streamed.load(Ordering::SeqCst);
            wait_until("a full window", || streamed() >= window).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(peer.streamed.load(Ordering::SeqCst), window);
        }
    }

    /// Waits until `done` holds, for at most 5 s; then fails the test naming `what`.
    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A request stream made the way openraft makes it: each request asked for carries every
    /// entry proposed (up to `proposed`) since the last one, and waits for one when there is none.
    /// Every request made is recorded in `made` as its first and last index.
    fn made_on_demand(
        proposed: Arc<AtomicU64>,
        proposal: Arc<Notify>,
        made: Arc<Mutex<Vec<(u64, u64)>>>,
    ) -> impl Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static {
        Box::pin(futures::stream::unfold(1u64, move |from| {
            let (proposed, proposal, made) = (proposed.clone(), proposal.clone(), made.clone());
            async move {
                loop {
                    let notified = proposal.notified();
                    let to = proposed.load(Ordering::SeqCst);
                    if to >= from {
                        made.lock().unwrap().push((from, to));
                        return Some((append(from, to, 10), to + 1));
                    }
                    notified.await;
                }
            }
        }))
    }

    #[tokio::test]
    async fn a_full_window_holds_the_next_request_which_then_carries_what_was_proposed_meanwhile() {
        for window in [1, REPLICATION_WINDOW_DEFAULT] {
            let (mut client, peer) =
                start_with_window(Mode::AnswerWhenReleased, PeerFaults::default(), window).await;
            let proposed = Arc::new(AtomicU64::new(0));
            let proposal = Arc::new(Notify::new());
            let made = Arc::new(Mutex::new(Vec::new()));
            let input = made_on_demand(proposed.clone(), proposal.clone(), made.clone());
            let mut answers = client.stream_append(input, option()).await.unwrap();
            let made_count = || made.lock().unwrap().len();
            // One proposal at a time fills the window, a request each.
            for i in 1..=window as u64 {
                proposed.store(i, Ordering::SeqCst);
                proposal.notify_waiters();
                wait_until("a request per proposal", || made_count() == i as usize).await;
            }
            // Three more while every message of the window is unanswered: no request is made.
            let w = window as u64;
            proposed.store(w + 3, Ordering::SeqCst);
            proposal.notify_waiters();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                made_count(),
                window,
                "window {window}: {:?}",
                made.lock().unwrap()
            );
            // One answer frees a slot: the next request carries all three.
            peer.release.add_permits(1);
            let first = answers.next().await.unwrap().unwrap().unwrap();
            assert_eq!(first, Some(id(1)));
            wait_until("the request after an answer", || made_count() == window + 1).await;
            assert_eq!(made.lock().unwrap()[window], (w + 1, w + 3));
            peer.release.add_permits(window);
            let mut last = None;
            for _ in 0..window {
                last = answers.next().await.unwrap().unwrap().unwrap();
            }
            assert_eq!(last, Some(id(w + 3)), "window {window}");
        }
    }

    #[tokio::test]
    async fn a_cut_link_fails_the_stream_as_unreachable() {
        let faults = PeerFaults::default();
        let (mut client, _) = start(Mode::AnswerInThrees, faults.clone()).await;
        faults.block([TARGET]);
        let input = futures::stream::iter([append(1, 1, 10)]);
        match client.stream_append(input, option()).await {
            Err(RPCError::Unreachable(_)) => {}
            Err(e) => panic!("expected unreachable, got {e}"),
            Ok(_) => panic!("expected unreachable, got a stream"),
        }
        faults.heal();
        // Cut while the stream is open: the next message is not sent.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let input = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut answers = client.stream_append(input, option()).await.unwrap();
        faults.block([TARGET]);
        tx.send(append(1, 1, 10)).await.unwrap();
        assert!(matches!(
            answers.next().await,
            Some(Err(RPCError::Unreachable(_)))
        ));
    }

    #[tokio::test]
    async fn a_peer_without_stream_append_gets_unary_calls() {
        let (mut client, peer) = start(Mode::NoStreamAppend, PeerFaults::default()).await;
        let input = futures::stream::iter([append(1, 1, 10)]);
        let first = client.stream_append(input, option()).await.err();
        assert!(matches!(first, Some(RPCError::Network(_))), "{first:?}");
        // openraft opens the next stream at once; this one goes by unary calls.
        let answers = acknowledged(&mut client, [append(1, 1, 10), append(2, 3, 10)]).await;
        assert_eq!(answers, vec![Some(id(1)), Some(id(3))]);
        assert_eq!(peer.unary_appends.load(Ordering::SeqCst), 2);
    }
}
