//! The heartbeat loop behind [`super::MetaClient::run_heartbeat_with`]: one task per node that
//! opens a stream, sends a request every interval, waits for its answer, runs instructions and
//! reconnects when anything goes wrong.
//!
//! One request is in flight at a time: the leader answers every request, so the answer's arrival
//! is the round trip a benchmark measures, and a leader that stops answering is noticed within
//! [`HEARTBEAT_RESPONSE_TIMEOUT_MS`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_proto::cairnpb::heartbeat_client::HeartbeatClient;
use cairn_proto::cairnpb::{
    HeartbeatRequest, HeartbeatResponse, Instruction, InstructionReply, NodeIdentity, NotLeader,
};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use super::{
    clamp_interval_ms, lock, reconnect_delay_ms, Control, Disposition, HeartbeatObserver,
    HeartbeatOptions, HeartbeatStatus, InstructionHandler, InstructionLedger, StatsSource,
    HEARTBEAT_INTERVAL_MAX_MS, HEARTBEAT_RESPONSE_TIMEOUT_MS, LEADER_REDIRECTS_MAX,
};
use crate::endpoint::normalize_endpoint;
use crate::{lazy_channel, EtcdClient, ENDPOINTS_MAX, RESPONSE_BYTES_MAX};

/// Requests queued on the outbound half of a stream; one is in flight at a time, so this is
/// only slack.
const REQUEST_QUEUE_MAX: usize = 2;

/// Why a stream ended.
enum StreamEnd {
    /// The caller stopped the loop.
    Stopped,
    /// The answering node does not lead.
    NotLeader(NotLeader),
    /// Anything else: transport error, refusal, no answer in time.
    Failed(String),
}

pub(super) struct Driver<S, H> {
    etcd: EtcdClient,
    identity: NodeIdentity,
    stats: Arc<S>,
    handler: Arc<H>,
    observer: Option<Arc<dyn HeartbeatObserver>>,
    control: watch::Receiver<Control>,
    status: Arc<Mutex<HeartbeatStatus>>,
    interval_ms: u64,
    initial_delay_ms: u64,
    /// Strictly increasing across streams, so it is also increasing within each.
    sequence: u64,
    /// When the last request was sent: the start of the interval the next one reports on.
    last_report: Instant,
    ledger: InstructionLedger,
    /// Replies not yet sent.
    pending_replies: Vec<InstructionReply>,
    finished_tx: mpsc::UnboundedSender<InstructionReply>,
    finished_rx: mpsc::UnboundedReceiver<InstructionReply>,
    channels: HashMap<String, Channel>,
}

impl<S: StatsSource, H: InstructionHandler> Driver<S, H> {
    pub(super) fn new(
        etcd: EtcdClient,
        identity: NodeIdentity,
        stats: Arc<S>,
        handler: Arc<H>,
        options: HeartbeatOptions,
        control: watch::Receiver<Control>,
        status: Arc<Mutex<HeartbeatStatus>>,
    ) -> Self {
        let (finished_tx, finished_rx) = mpsc::unbounded_channel();
        Driver {
            etcd,
            identity,
            stats,
            handler,
            observer: options.observer,
            control,
            status,
            interval_ms: clamp_interval_ms(options.interval_ms),
            initial_delay_ms: options.initial_delay_ms.min(HEARTBEAT_INTERVAL_MAX_MS),
            sequence: 0,
            last_report: Instant::now(),
            ledger: InstructionLedger::default(),
            pending_replies: Vec::new(),
            finished_tx,
            finished_rx,
            channels: HashMap::new(),
        }
    }

    pub(super) async fn run(mut self) {
        let endpoints = self.etcd.endpoints().to_vec();
        let mut rotation = 0usize;
        let mut leader_hint: Option<String> = None;
        let mut failures = 0u32;
        let mut redirects = 0u32;
        let mut streams = 0u64;
        if self.initial_delay_ms > 0
            && self
                .wait(Duration::from_millis(self.initial_delay_ms))
                .await
        {
            return;
        }
        self.last_report = Instant::now();
        loop {
            let delay = reconnect_delay_ms(failures, self.identity.id);
            if delay > 0 && self.wait(Duration::from_millis(delay)).await {
                return;
            }
            let endpoint = leader_hint
                .take()
                .unwrap_or_else(|| endpoints[rotation % endpoints.len()].clone());
            {
                let mut status = lock(&self.status);
                status.connected_to = Some(endpoint.clone());
                streams += 1;
                status.reconnects = streams - 1;
            }
            let (end, acknowledged) = self.stream(&endpoint).await;
            lock(&self.status).connected_to = None;
            if acknowledged {
                failures = 0;
                redirects = 0;
            }
            let reason = match end {
                StreamEnd::Stopped => return,
                StreamEnd::NotLeader(not_leader) => {
                    lock(&self.status).leader_id =
                        (not_leader.leader_id != 0).then_some(not_leader.leader_id);
                    let named = normalize_endpoint(&not_leader.leader_addr).ok();
                    redirects += 1;
                    match named {
                        // Follow the redirect at once, unless nodes keep naming each other.
                        Some(addr) if addr != endpoint && redirects <= LEADER_REDIRECTS_MAX => {
                            leader_hint = Some(addr);
                        }
                        _ => {
                            failures = failures.saturating_add(1);
                            rotation += 1;
                        }
                    }
                    format!(
                        "{endpoint} does not lead (leader {} at {:?})",
                        not_leader.leader_id, not_leader.leader_addr
                    )
                }
                StreamEnd::Failed(why) => {
                    failures = failures.saturating_add(1);
                    rotation += 1;
                    format!("{endpoint}: {why}")
                }
            };
            tracing::debug!(node = self.identity.id, "heartbeat stream ended: {reason}");
            if let Some(observer) = &self.observer {
                observer.on_stream_ended(&reason);
            }
            lock(&self.status).last_error = Some(reason);
        }
    }

    /// Waits `delay` unless the loop is stopped first; true when stopped.
    async fn wait(&mut self, delay: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            if *self.control.borrow_and_update() == Control::Stop {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return false,
                changed = self.control.changed() => if changed.is_err() { return true },
            }
        }
    }

    fn channel(&mut self, endpoint: &str) -> Result<Channel, String> {
        if let Some(channel) = self.channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = lazy_channel(endpoint, self.etcd.config()).map_err(|e| e.to_string())?;
        // Leaders come and go; a client never needs more channels than a cluster has nodes.
        if self.channels.len() >= ENDPOINTS_MAX {
            self.channels.clear();
        }
        self.channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }

    /// One stream: returns why it ended and whether any request on it was acknowledged.
    async fn stream(&mut self, endpoint: &str) -> (StreamEnd, bool) {
        let channel = match self.channel(endpoint) {
            Ok(channel) => channel,
            Err(why) => return (StreamEnd::Failed(why), false),
        };
        let mut client =
            HeartbeatClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX);
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE_MAX);
        let response_timeout = Duration::from_millis(HEARTBEAT_RESPONSE_TIMEOUT_MS);
        let mut acknowledged = false;
        // The first request goes into the queue before the call, so the server has something
        // to answer as soon as the stream opens.
        let (request, mut sent_at, mut regions) = self.next_request();
        if tx.send(request).await.is_err() {
            return (StreamEnd::Failed("request queue closed".into()), false);
        }
        let opened = tokio::select! {
            opened = tokio::time::timeout(
                response_timeout,
                client.heartbeat(tokio_stream::wrappers::ReceiverStream::new(rx)),
            ) => opened,
            () = stop_requested(&mut self.control) => return (StreamEnd::Stopped, false),
        };
        let mut inbound = match opened {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                return (
                    StreamEnd::Failed(format!("{:?}: {}", status.code(), status.message())),
                    false,
                )
            }
            Err(_) => return (StreamEnd::Failed("no answer when opening".into()), false),
        };
        loop {
            let answer = tokio::select! {
                answer = tokio::time::timeout(response_timeout, inbound.message()) => answer,
                () = stop_requested(&mut self.control) => {
                    return (StreamEnd::Stopped, acknowledged)
                }
            };
            let response = match answer {
                Ok(Ok(Some(response))) => response,
                Ok(Ok(None)) => return (StreamEnd::Failed("stream ended".into()), acknowledged),
                Ok(Err(status)) => {
                    let why = format!("{:?}: {}", status.code(), status.message());
                    return (StreamEnd::Failed(why), acknowledged);
                }
                Err(_) => {
                    let why = format!("no answer within {HEARTBEAT_RESPONSE_TIMEOUT_MS} ms");
                    return (StreamEnd::Failed(why), acknowledged);
                }
            };
            if let Some(end) = self.on_response(response, sent_at.elapsed(), regions) {
                return (end, acknowledged);
            }
            acknowledged = true;
            // Wait out the interval (and any pause), collecting replies of instructions that
            // finish meanwhile.
            let next_at =
                tokio::time::Instant::from_std(sent_at) + Duration::from_millis(self.interval_ms);
            if self.wait_until_due(next_at).await {
                return (StreamEnd::Stopped, acknowledged);
            }
            let (request, at, count) = self.next_request();
            (sent_at, regions) = (at, count);
            if tx.send(request).await.is_err() {
                return (
                    StreamEnd::Failed("request stream closed".into()),
                    acknowledged,
                );
            }
        }
    }

    /// Sleeps until `at` and then for as long as the loop is paused; true when stopped.
    async fn wait_until_due(&mut self, at: tokio::time::Instant) -> bool {
        loop {
            let control = *self.control.borrow_and_update();
            lock(&self.status).paused = control == Control::Pause;
            match control {
                Control::Stop => return true,
                Control::Run if tokio::time::Instant::now() >= at => return false,
                Control::Run => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => return false,
                        changed = self.control.changed() => if changed.is_err() { return true },
                    }
                }
                Control::Pause => {
                    if self.control.changed().await.is_err() {
                        return true;
                    }
                }
            }
        }
    }

    /// Handles one answer; `Some` when the stream must end.
    fn on_response(
        &mut self,
        response: HeartbeatResponse,
        round_trip: Duration,
        regions: usize,
    ) -> Option<StreamEnd> {
        if let Some(not_leader) = response.not_leader {
            return Some(StreamEnd::NotLeader(not_leader));
        }
        if let Some(error) = response.error {
            return Some(StreamEnd::Failed(format!(
                "refused (code {}): {}",
                error.code, error.message
            )));
        }
        if let Some(observer) = &self.observer {
            observer.on_acknowledged(round_trip, regions);
        }
        if response.heartbeat_interval_ms > 0 {
            self.interval_ms = clamp_interval_ms(response.heartbeat_interval_ms);
        }
        {
            let mut status = lock(&self.status);
            status.acknowledged += 1;
            status.interval_ms = self.interval_ms;
            status.last_error = None;
        }
        for instruction in response.instructions {
            self.dispatch(instruction);
        }
        None
    }

    /// Runs a new instruction on its own task, or re-queues the reply of one already handled.
    fn dispatch(&mut self, instruction: Instruction) {
        match self.ledger.receive(instruction.id) {
            Disposition::Run => {
                let handler = Arc::clone(&self.handler);
                let finished = self.finished_tx.clone();
                tokio::spawn(async move {
                    let id = instruction.id;
                    // Run on a task of its own so a panicking handler still yields a reply
                    // (and frees its place among the instructions in flight).
                    let run = tokio::spawn(async move { handler.handle(instruction).await });
                    let result = run
                        .await
                        .unwrap_or_else(|e| Err(format!("instruction handler failed: {e}")));
                    let reply = InstructionReply {
                        instruction_id: id,
                        ok: result.is_ok(),
                        error: result.err().unwrap_or_default(),
                    };
                    // The driver is gone only when the loop stopped; nobody wants the reply.
                    let _ = finished.send(reply);
                });
            }
            Disposition::Reply(reply) => self.pending_replies.push(reply),
            Disposition::AlreadyRunning | Disposition::Busy => {}
        }
    }

    /// The next request, when it was built, and how many region stats it carries.
    fn next_request(&mut self) -> (HeartbeatRequest, Instant, usize) {
        while let Ok(reply) = self.finished_rx.try_recv() {
            self.ledger.finish(reply.clone());
            self.pending_replies.push(reply);
        }
        let now = Instant::now();
        let report_interval_ms = u64::try_from(now.duration_since(self.last_report).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.last_report = now;
        self.sequence += 1;
        let (stats, regions) = self.stats.collect(report_interval_ms);
        let count = regions.len();
        lock(&self.status).sequence = self.sequence;
        let request = HeartbeatRequest {
            node: Some(self.identity.clone()),
            sequence: self.sequence,
            report_interval_ms,
            stats: Some(stats),
            regions,
            replies: std::mem::take(&mut self.pending_replies),
            replies_only: false,
        };
        (request, now, count)
    }
}

/// Returns once the loop is asked to stop (or its handle is gone); never otherwise.
async fn stop_requested(control: &mut watch::Receiver<Control>) {
    loop {
        if *control.borrow_and_update() == Control::Stop {
            return;
        }
        if control.changed().await.is_err() {
            return;
        }
    }
}

/// Milliseconds since the Unix epoch now, for [`NodeIdentity::start_time_ms`].
pub fn unix_time_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
