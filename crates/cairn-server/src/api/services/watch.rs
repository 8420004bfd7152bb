//! etcd `Watch` service: many watchers per stream, resumable from a revision.
//!
//! Each watcher is a task. It subscribes to applied events while holding the state's read lock
//! (so nothing falls between history and live events), replays history from its start revision
//! out of the MVCC store, then follows live batches. A watcher that falls behind the bounded
//! broadcast re-reads the gap from the MVCC store; one whose gap was compacted away is cancelled
//! with etcd's compacted response. Responses go through one bounded channel per stream.

use crate::leader::node::Node;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use cairn_store::mvcc::KvError;
use cairn_types::limits::{
    WATCHERS_PER_STREAM_MAX, WATCH_CATCHUP_EVENTS_MAX, WATCH_STREAMS_MAX, WATCH_STREAM_BUFFER_MAX,
};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// How often a watcher that asked for progress notifications gets one (etcd's default is 10 min).
pub const WATCH_PROGRESS_NOTIFY_INTERVAL_SECS: u64 = 600;

/// The etcd Watch service of one node.
pub struct WatchService {
    node: Arc<Node>,
    streams: Arc<Semaphore>,
}

impl WatchService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            streams: Arc::new(Semaphore::new(WATCH_STREAMS_MAX)),
        }
    }
}

type Out = Result<WatchResponse, Status>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = super::stream::ResponseStream<WatchResponse>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = crate::api::auth::caller(&request);
        self.open(Box::pin(request.into_inner()), caller)
            .map(Response::new)
    }
}

impl WatchService {
    /// Serves one watch stream of client messages (gRPC's or the JSON gateway's), within
    /// `watch_streams_max`.
    pub fn open(
        &self,
        inbound: super::stream::Inbound<WatchRequest>,
        caller: Option<crate::api::auth::AuthInfo>,
    ) -> Result<super::stream::ResponseStream<WatchResponse>, Status> {
        let node = self.node.clone();
        super::stream::spawn_stream(
            &self.streams,
            "watch_streams_max",
            WATCH_STREAM_BUFFER_MAX,
            inbound,
            |inbound, tx| serve_stream(node, caller, inbound, tx),
        )
    }
}

struct StreamState {
    node: Arc<Node>,
    /// Who opened the stream (auth enabled): each watch needs read permission on its keys.
    caller: Option<crate::api::auth::AuthInfo>,
    tx: mpsc::Sender<Out>,
    watchers: HashMap<i64, JoinHandle<()>>,
    next_id: i64,
}

async fn serve_stream(
    node: Arc<Node>,
    caller: Option<crate::api::auth::AuthInfo>,
    mut inbound: super::stream::Inbound<WatchRequest>,
    tx: mpsc::Sender<Out>,
) {
    let mut st = StreamState {
        node,
        caller,
        tx,
        watchers: HashMap::new(),
        next_id: 0,
    };
    loop {
        tokio::select! {
            msg = inbound.next() => {
                let req = match msg {
                    Some(Ok(r)) => r,
                    _ => break,
                };
                if !st.handle(req).await {
                    break;
                }
            }
            _ = st.tx.closed() => break,
        }
        st.watchers.retain(|_, h| !h.is_finished());
    }
    for (_, h) in st.watchers.drain() {
        h.abort();
    }
}

impl StreamState {
    /// Handles one client message; false when the stream is gone.
    async fn handle(&mut self, req: WatchRequest) -> bool {
        let header = |node: &Node| node.header(node.revision());
        match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => self.create(c).await,
            Some(RequestUnion::CancelRequest(c)) => {
                let existed = match self.watchers.remove(&c.watch_id) {
                    Some(h) => {
                        h.abort();
                        true
                    }
                    None => false,
                };
                let resp = WatchResponse {
                    header: header(&self.node),
                    watch_id: c.watch_id,
                    canceled: true,
                    cancel_reason: if existed {
                        String::new()
                    } else {
                        "watch id not found".into()
                    },
                    ..Default::default()
                };
                self.tx.send(Ok(resp)).await.is_ok()
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // etcd answers a progress request with watch id -1 and the current revision.
                let resp = WatchResponse {
                    header: header(&self.node),
                    watch_id: -1,
                    ..Default::default()
                };
                self.tx.send(Ok(resp)).await.is_ok()
            }
            None => true,
        }
    }

    async fn create(&mut self, c: WatchCreateRequest) -> bool {
        let node = self.node.clone();
        let refuse = |watch_id: i64, reason: String| WatchResponse {
            header: node.header(node.revision()),
            watch_id,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        };
        if let Err(denied) = crate::api::auth::check_keys(
            &self.node,
            self.caller.as_ref(),
            &c.key,
            &c.range_end,
            false,
        ) {
            let r = refuse(-1, denied.message().to_string());
            return self.tx.send(Ok(r)).await.is_ok();
        }
        if self.watchers.len() >= WATCHERS_PER_STREAM_MAX {
            let r = refuse(
                -1,
                format!("cairn: too many watchers on this stream (watchers_per_stream_max {WATCHERS_PER_STREAM_MAX})"),
            );
            return self.tx.send(Ok(r)).await.is_ok();
        }
        let id = if c.watch_id != 0 {
            if self.watchers.contains_key(&c.watch_id) {
                let r = refuse(c.watch_id, "etcdserver: duplicate watch ID".into());
                return self.tx.send(Ok(r)).await.is_ok();
            }
            c.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        if c.key.is_empty() {
            let r = refuse(id, "etcdserver: key is not provided".into());
            return self.tx.send(Ok(r)).await.is_ok();
        }
        if !c.range_end.is_empty() && c.range_end != [0] && c.range_end <= c.key {
            let r = refuse(id, "cairn: range_end must be greater than key".into());
            return self.tx.send(Ok(r)).await.is_ok();
        }
        // Subscribe under the read lock: no event can fall between history and live events.
        let (rx, current) = {
            let s = node.sm.read();
            (node.sm.subscribe(), s.kv.revision())
        };
        let created = WatchResponse {
            header: node.header(current),
            watch_id: id,
            created: true,
            ..Default::default()
        };
        if self.tx.send(Ok(created)).await.is_err() {
            return false;
        }
        let start = if c.start_revision > 0 {
            c.start_revision
        } else {
            current + 1
        };
        let w = Watcher {
            node: node.clone(),
            id,
            key: c.key,
            range_end: c.range_end,
            next_revision: start,
            prev_kv: c.prev_kv,
            no_put: c.filters.contains(&(FilterType::Noput as i32)),
            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
            progress_notify: c.progress_notify,
            tx: self.tx.clone(),
        };
        self.watchers.insert(id, tokio::spawn(w.run(rx)));
        true
    }
}

/// Follows `[key, range_end)` from `start_revision` on (0: from now), sending etcd watch
/// responses — history first, then live events, or a compacted cancellation — to `tx` until it
/// closes. The metadata watch builds on this.
pub(crate) fn spawn_range_watch(
    node: Arc<Node>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: i64,
    tx: mpsc::Sender<Out>,
) -> JoinHandle<()> {
    // Subscribe under the read lock: no event can fall between history and live events.
    let (rx, current) = {
        let s = node.sm.read();
        (node.sm.subscribe(), s.kv.revision())
    };
    let w = Watcher {
        node,
        id: 0,
        key,
        range_end,
        next_revision: if start_revision > 0 {
            start_revision
        } else {
            current + 1
        },
        prev_kv: true,
        no_put: false,
        no_delete: false,
        progress_notify: false,
        tx,
    };
    tokio::spawn(w.run(rx))
}

struct Watcher {
    node: Arc<Node>,
    id: i64,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The lowest revision not yet delivered.
    next_revision: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress_notify: bool,
    tx: mpsc::Sender<Out>,
}

enum Step {
    Continue,
    Stop,
}

impl Watcher {
    async fn run(mut self, mut rx: broadcast::Receiver<Arc<crate::WatchBatch>>) {
        if let Step::Stop = self.catch_up().await {
            return;
        }
        let period = std::time::Duration::from_secs(WATCH_PROGRESS_NOTIFY_INTERVAL_SECS);
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let step = tokio::select! {
                batch = rx.recv() => match batch {
                    Ok(b) if b.resync => self.catch_up().await,
                    Ok(b) => self.deliver_live(&b).await,
                    Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up().await,
                    Err(broadcast::error::RecvError::Closed) => Step::Stop,
                },
                _ = progress.tick(), if self.progress_notify => {
                    let r = WatchResponse {
                        header: self.node.header(self.next_revision - 1),
                        watch_id: self.id,
                        ..Default::default()
                    };
                    if self.tx.send(Ok(r)).await.is_err() { Step::Stop } else { Step::Continue }
                }
            };
            if let Step::Stop = step {
                return;
            }
        }
    }

    /// Replays history from `next_revision` up to the current revision out of the MVCC store.
    async fn catch_up(&mut self) -> Step {
        loop {
            let read = {
                let s = self.node.sm.read();
                let current = s.kv.revision();
                if self.next_revision > current {
                    return Step::Continue;
                }
                let r = s.kv.events_since(
                    &self.key,
                    &self.range_end,
                    self.next_revision,
                    WATCH_CATCHUP_EVENTS_MAX,
                );
                (r, current, s.kv.compact_revision())
            };
            let (events, current) = match read {
                (Ok(ev), current, _) => (ev, current),
                (Err(KvError::Compacted), _, compact_revision) => {
                    // As etcd answers: no revision in the header and no reason (clients name
                    // the error from compact_revision).
                    let r = WatchResponse {
                        header: self.node.header(0),
                        watch_id: self.id,
                        canceled: true,
                        compact_revision,
                        ..Default::default()
                    };
                    let _ = self.tx.send(Ok(r)).await;
                    return Step::Stop;
                }
                (Err(e), _, _) => {
                    let _ = self.tx.send(Err(e.to_status())).await;
                    return Step::Stop;
                }
            };
            let done = events.len() < WATCH_CATCHUP_EVENTS_MAX;
            let last = events
                .last()
                .and_then(|e| e.kv.as_ref())
                .map(|kv| kv.mod_revision)
                .unwrap_or(current);
            let upto = if done { current } else { last };
            if let Step::Stop = self.send(events, upto).await {
                return Step::Stop;
            }
            self.next_revision = upto + 1;
            if done {
                return Step::Continue;
            }
        }
    }

    async fn deliver_live(&mut self, batch: &crate::WatchBatch) -> Step {
        if batch.revision < self.next_revision {
            return Step::Continue;
        }
        let first = batch
            .events
            .first()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
            .unwrap_or(batch.revision);
        if first > self.next_revision {
            // A gap (we subscribed before our start revision was applied, or missed a batch):
            // fill it from history, which also covers this batch.
            return self.catch_up().await;
        }
        let events: Vec<Event> = batch
            .events
            .iter()
            .filter(|e| {
                let key = e.kv.as_ref().map(|kv| kv.key.as_slice()).unwrap_or(&[]);
                let rev = e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0);
                rev >= self.next_revision && in_range(&self.key, &self.range_end, key)
            })
            .cloned()
            .collect();
        let step = self.send(events, batch.revision).await;
        self.next_revision = batch.revision + 1;
        step
    }

    /// Filters and sends events; an empty result sends nothing.
    async fn send(&self, events: Vec<Event>, revision: i64) -> Step {
        let events: Vec<Event> = events
            .into_iter()
            .filter(|e| {
                let put = e.r#type == EventType::Put as i32;
                !(put && self.no_put || !put && self.no_delete)
            })
            .map(|mut e| {
                if !self.prev_kv {
                    e.prev_kv = None;
                }
                e
            })
            .collect();
        if events.is_empty() {
            return Step::Continue;
        }
        let r = WatchResponse {
            header: self.node.header(revision),
            watch_id: self.id,
            events,
            ..Default::default()
        };
        if self.tx.send(Ok(r)).await.is_err() {
            Step::Stop
        } else {
            Step::Continue
        }
    }
}

/// Whether `key` falls in etcd's `[key, range_end)` selection.
fn in_range(start: &[u8], range_end: &[u8], key: &[u8]) -> bool {
    if range_end.is_empty() {
        key == start
    } else if range_end == [0] {
        key >= start
    } else {
        key >= start && key < range_end
    }
}

#[cfg(test)]
mod tests {
    use super::in_range;

    #[test]
    fn range_forms_match_etcd() {
        assert!(in_range(b"a", b"", b"a"));
        assert!(!in_range(b"a", b"", b"ab"));
        assert!(in_range(b"a", b"b", b"ab"));
        assert!(!in_range(b"a", b"b", b"b"));
        assert!(in_range(b"a", &[0], b"zzz"));
        assert!(in_range(&[0], &[0], b"any"));
    }
}
