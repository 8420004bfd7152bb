//! The heartbeat loop behind [`super::MetaClient::run_heartbeat_with`]: one task per node that
//! opens a stream, sends a stats report every interval, runs instructions and reconnects when
//! anything goes wrong.
//!
//! Instructions do not wait for the interval: the loop keeps reading the stream, runs what the
//! leader pushes between heartbeats at once, and sends replies as soon as instructions finish in
//! a replies-only request (replies finishing together share one). Regular reports keep their
//! cadence.
//!
//! One request (regular or replies-only) is in flight at a time: the leader answers every
//! request with its sequence, so the answer's arrival is the round trip a benchmark measures, and
//! a leader that stops answering is noticed within [`HEARTBEAT_RESPONSE_TIMEOUT_MS`]. Replies
//! that finish while a request is in flight go in the next one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_proto::cairnpb::{
    HeartbeatRequest, HeartbeatResponse, Instruction, InstructionReply, NodeIdentity, NotLeader,
};
use tokio::sync::{mpsc, watch};
// tokio's clock, not std's: under a paused clock (the deterministic simulation) the interval and
// the answer deadline go by simulated time.
use tokio::time::Instant;
use tokio_stream::StreamExt;

use super::region_leases::RegionLeases;
use super::transport::{GrpcTransport, HeartbeatTransport};
use super::{
    clamp_interval_ms, ledger::INSTRUCTION_REPLIES_PER_REQUEST_MAX, lock,
    reconnect_delay_per_round_ms, Control, Disposition, HeartbeatObserver, HeartbeatOptions,
    HeartbeatStatus, InstructionHandler, InstructionLedger, StatsSource, HEARTBEAT_INTERVAL_MAX_MS,
    HEARTBEAT_RESPONSE_TIMEOUT_MS, LEADER_REDIRECTS_MAX,
};
use crate::endpoint::normalize_endpoint;
use crate::EtcdClient;

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

/// The request of a stream that awaits its answer.
struct InFlight {
    sequence: u64,
    sent_at: Instant,
    /// Region stats it carries; None for a replies-only request (not a report).
    regions: Option<usize>,
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
    /// When the last regular request was sent: the start of the interval the next one reports
    /// on.
    last_report: Instant,
    ledger: InstructionLedger,
    /// Replies not yet sent, oldest first.
    pending_replies: Vec<InstructionReply>,
    finished_tx: mpsc::UnboundedSender<InstructionReply>,
    finished_rx: mpsc::UnboundedReceiver<InstructionReply>,
    transport: Arc<dyn HeartbeatTransport>,
    region_leases: Option<Arc<RegionLeases>>,
    /// (sequence, sent at) of the latest requests, newest last, at most
    /// [`SENT_REQUESTS_REMEMBERED_MAX`]: where the leases of instructions start.
    sent: VecDeque<(u64, Instant)>,
}

/// Requests whose send time is remembered for instruction leases (a response names one of the
/// latest; one naming an older request grants no lease, which errs on the safe side).
pub const SENT_REQUESTS_REMEMBERED_MAX: usize = 32;

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
        let transport = options
            .transport
            .unwrap_or_else(|| Arc::new(GrpcTransport::new(*etcd.config())));
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
            transport,
            region_leases: options.region_leases,
            sent: VecDeque::with_capacity(SENT_REQUESTS_REMEMBERED_MAX),
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
            let delay = reconnect_delay_per_round_ms(failures, endpoints.len(), self.identity.id);
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

    /// One stream: returns why it ended and whether any request on it was acknowledged.
    async fn stream(&mut self, endpoint: &str) -> (StreamEnd, bool) {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE_MAX);
        let response_timeout = Duration::from_millis(HEARTBEAT_RESPONSE_TIMEOUT_MS);
        let mut acknowledged = false;
        // The first request goes into the queue before the call, so the server has something
        // to answer as soon as the stream opens.
        let (request, first) = self.regular_request();
        let mut last_regular = first.sent_at;
        let mut in_flight = Some(first);
        if tx.send(request).await.is_err() {
            return (StreamEnd::Failed("request queue closed".into()), false);
        }
        let opened = tokio::select! {
            opened = tokio::time::timeout(
                response_timeout,
                self.transport.open(endpoint, rx),
            ) => opened,
            () = stop_requested(&mut self.control) => return (StreamEnd::Stopped, false),
        };
        let mut inbound = match opened {
            Ok(Ok(responses)) => responses,
            Ok(Err(status)) => {
                return (
                    StreamEnd::Failed(format!("{:?}: {}", status.code(), status.message())),
                    false,
                )
            }
            Err(_) => return (StreamEnd::Failed("no answer when opening".into()), false),
        };
        loop {
            let control = *self.control.borrow_and_update();
            lock(&self.status).paused = control == Control::Pause;
            if control == Control::Stop {
                return (StreamEnd::Stopped, acknowledged);
            }
            let due = last_regular + Duration::from_millis(self.interval_ms);
            // A paused node sends nothing, not even replies: it plays a node that hangs.
            if in_flight.is_none() && control == Control::Run {
                let next = if Instant::now() >= due {
                    Some(self.regular_request())
                } else if self.has_replies() {
                    Some(self.replies_only_request())
                } else {
                    None
                };
                if let Some((request, sent)) = next {
                    if sent.regions.is_some() {
                        last_regular = sent.sent_at;
                    }
                    if self.sent.len() >= SENT_REQUESTS_REMEMBERED_MAX {
                        self.sent.pop_front();
                    }
                    self.sent.push_back((sent.sequence, sent.sent_at));
                    in_flight = Some(sent);
                    if tx.send(request).await.is_err() {
                        let why = "request stream closed".into();
                        return (StreamEnd::Failed(why), acknowledged);
                    }
                }
            }
            let deadline = in_flight.as_ref().map(|f| f.sent_at + response_timeout);
            let idle = in_flight.is_none();
            // Read while an answer is awaited, and while running (pushed instructions); a paused
            // node with nothing in flight reads nothing, like a node that hangs.
            let reading = !idle || control == Control::Run;
            let answer = tokio::select! {
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return (StreamEnd::Stopped, acknowledged);
                    }
                    continue;
                }
                answer = inbound.next(), if reading => answer,
                Some(reply) = self.finished_rx.recv() => {
                    self.on_finished(reply);
                    continue;
                }
                () = tokio::time::sleep_until(deadline.unwrap_or(due)), if deadline.is_some() => {
                    let why = format!("no answer within {HEARTBEAT_RESPONSE_TIMEOUT_MS} ms");
                    return (StreamEnd::Failed(why), acknowledged);
                }
                () = tokio::time::sleep_until(due), if idle && control == Control::Run => continue,
            };
            let response = match answer {
                Some(Ok(response)) => response,
                None => return (StreamEnd::Failed("stream ended".into()), acknowledged),
                Some(Err(status)) => {
                    let why = format!("{:?}: {}", status.code(), status.message());
                    return (StreamEnd::Failed(why), acknowledged);
                }
            };
            match self.on_response(response, &mut in_flight) {
                Ok(answered) => acknowledged |= answered,
                Err(end) => return (end, acknowledged),
            }
        }
    }

    /// Handles one response: the answer to the request in flight, or a push. Returns whether it
    /// answered a request; `Err` when the stream must end.
    fn on_response(
        &mut self,
        response: HeartbeatResponse,
        in_flight: &mut Option<InFlight>,
    ) -> Result<bool, StreamEnd> {
        if let Some(not_leader) = response.not_leader {
            return Err(StreamEnd::NotLeader(not_leader));
        }
        if let Some(error) = response.error {
            return Err(StreamEnd::Failed(format!(
                "refused (code {}): {}",
                error.code, error.message
            )));
        }
        if response.heartbeat_interval_ms > 0 {
            self.interval_ms = clamp_interval_ms(response.heartbeat_interval_ms);
        }
        if !response.pushed {
            // Answers come in order, one per request; anything else is a broken stream.
            let answered = match in_flight.take() {
                Some(f) if f.sequence == response.sequence => f,
                Some(f) => {
                    return Err(StreamEnd::Failed(format!(
                        "answer to sequence {} while {} awaits one",
                        response.sequence, f.sequence
                    )))
                }
                None => {
                    return Err(StreamEnd::Failed(format!(
                        "answer to sequence {} while no request awaits one",
                        response.sequence
                    )))
                }
            };
            if let (Some(_), Some(grant), Some(leases)) = (
                answered.regions,
                response.region_leases.as_ref(),
                self.region_leases.as_ref(),
            ) {
                // From when the request left: the lease ends here before the leader's record.
                let until = answered.sent_at + Duration::from_millis(grant.duration_ms);
                leases.renew(&grant.region_ids, answered.sent_at, until, Instant::now());
            }
            let mut status = lock(&self.status);
            if let Some(regions) = answered.regions {
                if let Some(observer) = &self.observer {
                    observer.on_acknowledged(answered.sent_at.elapsed(), regions);
                }
                status.acknowledged += 1;
            }
            status.interval_ms = self.interval_ms;
            status.last_error = None;
        }
        let age = Duration::from_millis(response.lease_base_age_ms);
        let lease_base = self
            .sent
            .iter()
            .find(|(sequence, _)| *sequence == response.lease_base_sequence)
            .map(|(_, at)| LeaseBase { sent_at: *at, age });
        for instruction in response.instructions {
            self.dispatch(instruction, lease_base);
        }
        Ok(!response.pushed)
    }

    /// Runs a new instruction on its own task, or re-queues the reply of one already handled.
    /// Leases it grants start at `lease_base` (none when unknown).
    fn dispatch(&mut self, instruction: Instruction, lease_base: Option<LeaseBase>) {
        match self.ledger.receive(instruction.id) {
            Disposition::Run => {
                if let Some(leases) = &self.region_leases {
                    apply_to_leases(leases, &instruction, lease_base);
                }
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

    /// Records the reply of an instruction that finished, and of any others that finished with
    /// it, so they leave together.
    fn on_finished(&mut self, reply: InstructionReply) {
        self.ledger.finish(reply.clone());
        self.pending_replies.push(reply);
        self.collect_finished();
    }

    fn collect_finished(&mut self) {
        while let Ok(reply) = self.finished_rx.try_recv() {
            self.ledger.finish(reply.clone());
            self.pending_replies.push(reply);
        }
    }

    /// Whether replies wait to be sent (including those of instructions that just finished).
    fn has_replies(&mut self) -> bool {
        self.collect_finished();
        !self.pending_replies.is_empty()
    }

    /// The next stats report, with the replies that fit.
    fn regular_request(&mut self) -> (HeartbeatRequest, InFlight) {
        self.collect_finished();
        let now = Instant::now();
        let report_interval_ms = u64::try_from(now.duration_since(self.last_report).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.last_report = now;
        let (stats, regions) = self.stats.collect(report_interval_ms);
        let count = regions.len();
        let request = HeartbeatRequest {
            node: Some(self.identity.clone()),
            sequence: self.next_sequence(),
            report_interval_ms,
            stats: Some(stats),
            regions,
            replies: take_reply_batch(&mut self.pending_replies),
            replies_only: false,
        };
        let sent = InFlight {
            sequence: request.sequence,
            sent_at: now,
            regions: Some(count),
        };
        (request, sent)
    }

    /// A request carrying only replies (as many as fit; the rest follow in the next one).
    fn replies_only_request(&mut self) -> (HeartbeatRequest, InFlight) {
        let request = HeartbeatRequest {
            node: Some(self.identity.clone()),
            sequence: self.next_sequence(),
            replies: take_reply_batch(&mut self.pending_replies),
            replies_only: true,
            ..Default::default()
        };
        let sent = InFlight {
            sequence: request.sequence,
            sent_at: Instant::now(),
            regions: None,
        };
        (request, sent)
    }

    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        lock(&self.status).sequence = self.sequence;
        self.sequence
    }
}

/// Where the leases an instruction grants start: the send time of the request the leader had
/// last received when it wrote the response, and how long after receiving it the leader wrote.
#[derive(Debug, Clone, Copy)]
struct LeaseBase {
    sent_at: Instant,
    age: Duration,
}

/// What an instruction does to the node's region leases, on arrival: regions it opens or
/// upgrades as leader with a lease come leased for `lease_ms` plus the base's age from the
/// base's send time (not from when the instruction is read: a node that hung with it in its
/// buffer must not start a fresh lease); regions it downgrades or closes lose their lease before
/// the instruction runs (and so before it is acknowledged).
fn apply_to_leases(leases: &RegionLeases, instruction: &Instruction, base: Option<LeaseBase>) {
    use cairn_proto::cairnpb::instruction::Kind;
    let now = Instant::now();
    let lease = |region: u64, lease_ms: u64| {
        if let (Some(b), true) = (base, lease_ms > 0) {
            let until = b.sent_at + b.age + Duration::from_millis(lease_ms);
            // Asked for when the base request left: a revocation after that wins.
            leases.renew(&[region], b.sent_at, until, now);
        }
    };
    let open = |o: &cairn_proto::cairnpb::OpenRegion| {
        if o.as_leader {
            lease(o.region_id, o.lease_ms);
        }
    };
    match &instruction.kind {
        Some(Kind::OpenRegion(o)) => open(o),
        Some(Kind::OpenRegions(many)) => many.regions.iter().for_each(open),
        Some(Kind::UpgradeRegionToLeader(u)) => lease(u.region_id, u.lease_ms),
        Some(Kind::UpgradeRegionsToLeader(u)) => {
            u.region_ids.iter().for_each(|r| lease(*r, u.lease_ms))
        }
        Some(Kind::DowngradeRegionLeader(d)) => leases.revoke(d.region_id),
        Some(Kind::DowngradeRegionLeaders(d)) => {
            d.region_ids.iter().for_each(|r| leases.revoke(*r))
        }
        Some(Kind::CloseRegion(c)) => leases.revoke(c.region_id),
        Some(Kind::CloseRegions(c)) => c.region_ids.iter().for_each(|r| leases.revoke(*r)),
        _ => {}
    }
}

/// Takes the oldest replies, at most as many as one request may carry.
fn take_reply_batch(pending: &mut Vec<InstructionReply>) -> Vec<InstructionReply> {
    let n = pending.len().min(INSTRUCTION_REPLIES_PER_REQUEST_MAX);
    pending.drain(..n).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_batches_are_bounded_and_keep_order() {
        let reply = |id| InstructionReply {
            instruction_id: id,
            ok: true,
            error: String::new(),
        };
        let total = INSTRUCTION_REPLIES_PER_REQUEST_MAX as u64 + 5;
        let mut pending: Vec<_> = (1..=total).map(reply).collect();
        let first = take_reply_batch(&mut pending);
        assert_eq!(first.len(), INSTRUCTION_REPLIES_PER_REQUEST_MAX);
        assert_eq!(first[0].instruction_id, 1);
        let second = take_reply_batch(&mut pending);
        assert_eq!(
            second.iter().map(|r| r.instruction_id).collect::<Vec<_>>(),
            (INSTRUCTION_REPLIES_PER_REQUEST_MAX as u64 + 1..=total).collect::<Vec<_>>()
        );
        assert!(pending.is_empty() && take_reply_batch(&mut pending).is_empty());
    }

    #[test]
    fn instruction_leases_run_from_the_request_the_leader_had() {
        use cairn_proto::cairnpb::instruction::Kind;
        use cairn_proto::cairnpb::{
            DowngradeRegionLeader, DowngradeRegionLeaders, UpgradeRegionToLeader,
            UpgradeRegionsToLeader,
        };
        let instruction = |kind| Instruction {
            id: 1,
            timeout_ms: 1_000,
            kind: Some(kind),
        };
        let upgrade = instruction(Kind::UpgradeRegionToLeader(UpgradeRegionToLeader {
            region_id: 7,
            lease_ms: 4_000,
        }));
        let base = |sent_at| LeaseBase {
            sent_at,
            age: Duration::ZERO,
        };
        let leases = RegionLeases::new();
        // Read 1 s after the request went: leased for what is left of 4 s from then.
        let sent = Instant::now() - Duration::from_secs(1);
        apply_to_leases(&leases, &upgrade, Some(base(sent)));
        let until = leases.valid_until(7, Instant::now());
        assert_eq!(until, Some(sent + Duration::from_secs(4)));
        // Read after the node hung for 10 s with it in its buffer: nothing to write with.
        let hung = RegionLeases::new();
        apply_to_leases(
            &hung,
            &upgrade,
            Some(base(Instant::now() - Duration::from_secs(11))),
        );
        assert!(!hung.is_valid_now(7));
        // A response naming a request the node no longer remembers grants nothing.
        apply_to_leases(&hung, &upgrade, None);
        assert!(!hung.is_valid_now(7));
        // A downgrade drops the lease on arrival.
        let down = instruction(Kind::DowngradeRegionLeader(DowngradeRegionLeader {
            region_id: 7,
        }));
        let fresh = Instant::now();
        apply_to_leases(&leases, &upgrade, Some(base(fresh)));
        assert!(leases.is_valid_now(7));
        apply_to_leases(&leases, &down, None);
        assert!(!leases.is_valid_now(7));
        // Written by the leader 2 s after it received the base request: the lease runs 2 s more.
        let aged = RegionLeases::new();
        let sent_at = Instant::now() - Duration::from_secs(5);
        let age = Duration::from_secs(2);
        apply_to_leases(&aged, &upgrade, Some(LeaseBase { sent_at, age }));
        let until = aged.valid_until(7, Instant::now());
        assert_eq!(until, Some(sent_at + Duration::from_secs(6)));
        // The batched forms lease and revoke every region they name.
        let many = RegionLeases::new();
        let up = instruction(Kind::UpgradeRegionsToLeader(UpgradeRegionsToLeader {
            region_ids: vec![8, 9],
            lease_ms: 4_000,
        }));
        apply_to_leases(&many, &up, Some(base(Instant::now())));
        assert!(many.is_valid_now(8) && many.is_valid_now(9));
        let down = instruction(Kind::DowngradeRegionLeaders(DowngradeRegionLeaders {
            region_ids: vec![9],
        }));
        apply_to_leases(&many, &down, None);
        assert!(many.is_valid_now(8) && !many.is_valid_now(9));
    }
}
