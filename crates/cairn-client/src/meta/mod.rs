//! [`MetaClient`]: what a datanode, frontend or flownode needs from Cairn. It keeps one heartbeat
//! stream open to the Cairn leader (finding it from typed `NotLeader` answers), reports the
//! node's stats on it, runs the instructions the leader sends back and returns their replies,
//! and reads the node registry.
//!
//! It also speaks the `cairn.v1.Meta` service: typed DDL, table and route reads and procedures
//! (`ddl`), the self-resuming metadata watch ([`MetaClient::watch_metadata`]), and, on top of
//! them, the frontend's [`RouteCache`].
//!
//! The embedding node provides two things: a [`StatsSource`] (what to report) and an
//! [`InstructionHandler`] (how to obey). Everything else — leader discovery, reconnecting with
//! bounded backoff, the interval the leader asks for, sequence numbers, idempotency by
//! instruction id — is this module's job.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use cairn_client::meta::*;
//! # use cairn_client::proto::cairnpb::{Instruction, NodeIdentity, NodeStats, RegionStat};
//! struct Node;
//! impl StatsSource for Node {
//!     fn collect(&self, _report_interval_ms: u64) -> (NodeStats, Vec<RegionStat>) {
//!         (NodeStats::default(), Vec::new())
//!     }
//! }
//! impl InstructionHandler for Node {
//!     async fn handle(&self, _instruction: Instruction) -> Result<(), String> {
//!         Ok(())
//!     }
//! }
//! # async fn demo() -> Result<(), cairn_client::ClientError> {
//! let client = MetaClient::new(["127.0.0.1:4379", "127.0.0.1:5379"])?;
//! let node = Arc::new(Node);
//! let identity = NodeIdentity { id: 1001, ..Default::default() };
//! let heartbeat = client.run_heartbeat(identity, Arc::clone(&node), node);
//! // ... the node runs ...
//! heartbeat.stop().await;
//! # Ok(())
//! # }
//! ```

mod backoff;
mod cached_route;
mod ddl;
mod fifo_map;
mod heartbeat;
pub use heartbeat::unix_time_ms;
mod ledger;
mod metadata_error;
mod metadata_watch;
mod region_leases;
mod route_retry;
mod routes;
mod scheduling;
mod stats;
mod transport;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::cairnpb::node_registry_client::NodeRegistryClient;
use cairn_proto::cairnpb::{
    Instruction, ListNodesRequest, ListNodesResponse, NodeIdentity, NodeStats, RegionStat,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{ClientConfig, ClientError, EtcdClient, RESPONSE_BYTES_MAX};

pub use backoff::{
    reconnect_delay_ms, reconnect_delay_per_round_ms, RECONNECT_BACKOFF_INITIAL_MS,
    RECONNECT_BACKOFF_MAX_MS, RECONNECT_JITTER_PERCENT_MAX,
};
pub use cached_route::{choose_read_target, CachedRoute, ReadPreference};
pub use ddl::{
    display_table_name, table_name, LIST_ALL_TABLES_PAGES_MAX, MIGRATE_REGION_CALL_SLACK_MS,
    MIGRATE_REGION_DEFAULT_TIMEOUT_MS, ROUTE_TABLES_PER_REQUEST_MAX,
};
pub use ledger::{
    Disposition, InstructionLedger, HANDLED_INSTRUCTION_IDS_MAX, INSTRUCTIONS_IN_FLIGHT_MAX,
};
pub use metadata_error::MetadataError;
pub use metadata_watch::{MetadataWatch, MetadataWatchItem, METADATA_WATCH_BUFFER_MAX};
pub use region_leases::{RegionLeases, REGION_LEASES_PER_NODE_MAX};
pub use route_retry::{
    route_retry_delay_ms, RouteAttemptError, RouteRetryError, ROUTE_RETRIES_MAX,
    ROUTE_RETRY_BACKOFF_INITIAL_MS, ROUTE_RETRY_BACKOFF_MAX_MS,
};
pub use routes::{RouteCache, RouteCacheOptions, RouteCacheStats, ROUTE_CACHE_TABLES_MAX};
pub use transport::{HeartbeatResponses, HeartbeatTransport, OpenFuture};

/// Heartbeat interval used until the leader names its own.
pub const HEARTBEAT_INTERVAL_DEFAULT_MS: u64 = 3_000;
/// Shortest interval accepted, from the options or the leader.
pub const HEARTBEAT_INTERVAL_MIN_MS: u64 = 50;
/// Longest interval accepted, from the options or the leader.
pub const HEARTBEAT_INTERVAL_MAX_MS: u64 = 60_000;
/// Longest wait for the answer to one heartbeat before the stream counts as broken and the
/// client reconnects. Short, because a node re-attaches to a new leader within two intervals.
pub const HEARTBEAT_RESPONSE_TIMEOUT_MS: u64 = 3_000;
/// `not_leader` redirects followed in a row without a successful heartbeat before the client
/// backs off (two nodes naming each other must not make it spin).
pub const LEADER_REDIRECTS_MAX: u32 = 3;

/// Where the heartbeat's stats come from; the embedding node implements it.
///
/// # Correctness requirements
/// `collect` is called once per heartbeat on the heartbeat task: it must return quickly and must
/// not block on I/O. A frontend returns no region stats.
pub trait StatsSource: Send + Sync + 'static {
    /// The node stats and per-region stats to report, covering the last `report_interval_ms`
    /// milliseconds (as the client measured it).
    fn collect(&self, report_interval_ms: u64) -> (NodeStats, Vec<RegionStat>);
}

/// Obeys the instructions the leader sends; the embedding node implements it.
///
/// # Correctness requirements
/// - Each call runs on its own task, so instructions may run concurrently (at most
///   [`INSTRUCTIONS_IN_FLIGHT_MAX`]). The client never runs one instruction id twice while it
///   remembers the id (the last [`HANDLED_INSTRUCTION_IDS_MAX`]); beyond that, the handler
///   must itself tolerate a repeat (opening an open region succeeds, and so on).
/// - A `TruncateRegions` carries an `epoch`: remember the highest epoch applied per region and
///   treat one at or below it as done without dropping rows. A retried or resumed TRUNCATE
///   repeats its instruction, under a new id, and rows written after the first one must stay.
/// - The reply goes back on the heartbeat after the call returns: `Ok(())` is a success,
///   `Err(why)` a failure the leader sees with `why`.
pub trait InstructionHandler: Send + Sync + 'static {
    /// Runs one instruction.
    fn handle(&self, instruction: Instruction) -> impl Future<Output = Result<(), String>> + Send;
}

/// Told about every heartbeat answered and every reconnect; for benchmarks and metrics.
///
/// # Correctness requirements
/// Called on the heartbeat task: return quickly.
pub trait HeartbeatObserver: Send + Sync + 'static {
    /// A heartbeat carrying `region_stats` region stats was answered after `round_trip`.
    fn on_acknowledged(&self, round_trip: Duration, region_stats: usize);
    /// The stream ended for `reason`; the client is about to reconnect.
    fn on_stream_ended(&self, reason: &str) {
        let _ = reason;
    }
}

/// Settings of one heartbeat loop.
#[derive(Clone)]
pub struct HeartbeatOptions {
    /// Interval until the leader names one (clamped to
    /// [`HEARTBEAT_INTERVAL_MIN_MS`]..=[`HEARTBEAT_INTERVAL_MAX_MS`]).
    pub interval_ms: u64,
    /// Wait before the first stream opens, ms: many nodes started together (a simulator, a
    /// benchmark) spread their heartbeats over the interval instead of sending in lockstep.
    pub initial_delay_ms: u64,
    /// Told about acknowledgements and reconnects.
    pub observer: Option<Arc<dyn HeartbeatObserver>>,
    /// How streams reach the nodes; gRPC when `None`.
    pub transport: Option<Arc<dyn HeartbeatTransport>>,
    /// Where the region leases the leader grants are recorded; the node checks them before
    /// writing. Not recorded when `None` (a node that holds no regions).
    pub region_leases: Option<Arc<RegionLeases>>,
}

impl Default for HeartbeatOptions {
    fn default() -> Self {
        HeartbeatOptions {
            interval_ms: HEARTBEAT_INTERVAL_DEFAULT_MS,
            initial_delay_ms: 0,
            observer: None,
            transport: None,
            region_leases: None,
        }
    }
}

/// What a heartbeat loop is doing, as last observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeartbeatStatus {
    /// The endpoint of the open stream, if one is open.
    pub connected_to: Option<String>,
    /// The leader named in the last `not_leader` answer, if any.
    pub leader_id: Option<u64>,
    /// Sequence number of the last request sent.
    pub sequence: u64,
    /// Heartbeats answered by a leader.
    pub acknowledged: u64,
    /// Streams opened after the first.
    pub reconnects: u64,
    /// The interval in use, ms.
    pub interval_ms: u64,
    /// Whether sending is paused ([`HeartbeatHandle::pause`]).
    pub paused: bool,
    /// Why the last stream ended, if one did.
    pub last_error: Option<String>,
}

/// What the caller asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Pause,
    Stop,
}

/// Controls a running heartbeat loop. Dropping it stops the loop.
pub struct HeartbeatHandle {
    control: watch::Sender<Control>,
    status: Arc<Mutex<HeartbeatStatus>>,
    task: Option<JoinHandle<()>>,
}

impl HeartbeatHandle {
    /// Stops sending heartbeats but keeps the stream open (a node that hangs).
    pub fn pause(&self) {
        self.control.send_replace(Control::Pause);
    }

    /// Sends heartbeats again after [`HeartbeatHandle::pause`].
    pub fn resume(&self) {
        self.control.send_replace(Control::Run);
    }

    /// A snapshot of the loop's state.
    pub fn status(&self) -> HeartbeatStatus {
        lock(&self.status).clone()
    }

    /// Stops the loop, closes its stream and waits for it to end.
    pub async fn stop(mut self) {
        self.control.send_replace(Control::Stop);
        if let Some(task) = self.task.take() {
            // The loop returns as soon as it sees Stop; a panic in it has been reported already.
            let _ = task.await;
        }
    }
}

impl Drop for HeartbeatHandle {
    fn drop(&mut self) {
        self.control.send_replace(Control::Stop);
    }
}

fn lock(status: &Mutex<HeartbeatStatus>) -> std::sync::MutexGuard<'_, HeartbeatStatus> {
    // The status is plain data; a panic elsewhere cannot leave it inconsistent.
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A client for the cairn.v1 services a node uses: heartbeats, the node registry and the
/// metadata service (DDL, routes, the metadata watch). Cheap to clone. Must be created inside a
/// Tokio runtime; nothing connects until first use.
#[derive(Clone)]
pub struct MetaClient {
    etcd: EtcdClient,
}

impl MetaClient {
    /// A client for `endpoints` (`HOST:PORT` or `http://HOST:PORT`, any Cairn nodes).
    pub fn new<I, S>(endpoints: I) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::with_config(endpoints, ClientConfig::default())
    }

    /// A client with explicit timeouts and retry bounds (used by every unary call, e.g.
    /// [`MetaClient::list_nodes`]).
    pub fn with_config<I, S>(endpoints: I, config: ClientConfig) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Ok(MetaClient {
            etcd: EtcdClient::with_config(endpoints, config)?,
        })
    }

    /// The endpoints, normalised to `http://HOST:PORT`.
    pub fn endpoints(&self) -> &[String] {
        self.etcd.endpoints()
    }

    /// The nodes the leader knows (`node_id` 0), or only `node_id`. Any Cairn node answers;
    /// unreachable endpoints are skipped with the usual bounded retries.
    pub async fn list_nodes(&self, node_id: u64) -> Result<ListNodesResponse, ClientError> {
        self.etcd
            .call(true, |channel| async move {
                let mut registry =
                    NodeRegistryClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX);
                Ok(registry
                    .list_nodes(ListNodesRequest { node_id })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Starts the heartbeat loop of node `identity` with default options. See
    /// [`MetaClient::run_heartbeat_with`].
    pub fn run_heartbeat<S, H>(
        &self,
        identity: NodeIdentity,
        stats: Arc<S>,
        handler: Arc<H>,
    ) -> HeartbeatHandle
    where
        S: StatsSource,
        H: InstructionHandler,
    {
        self.run_heartbeat_with(identity, stats, handler, HeartbeatOptions::default())
    }

    /// Starts the heartbeat loop of node `identity` on a background task and returns its handle.
    ///
    /// The loop keeps one stream open to the leader and sends a request every interval (the
    /// leader's `heartbeat_interval_ms` once it named one), with a strictly increasing sequence
    /// number and the elapsed time it actually covers. Each instruction received is handed to
    /// `handler` once per id; its reply rides on the next request. When the stream breaks, the
    /// leader refuses a request, or the answering node does not lead, the loop reconnects — to
    /// the leader named in `not_leader` first, else to the next endpoint — with bounded backoff
    /// ([`reconnect_delay_per_round_ms`]: it grows once per round of endpoints). It runs until
    /// the handle is stopped or dropped.
    pub fn run_heartbeat_with<S, H>(
        &self,
        identity: NodeIdentity,
        stats: Arc<S>,
        handler: Arc<H>,
        options: HeartbeatOptions,
    ) -> HeartbeatHandle
    where
        S: StatsSource,
        H: InstructionHandler,
    {
        let (control, control_rx) = watch::channel(Control::Run);
        let status = Arc::new(Mutex::new(HeartbeatStatus::default()));
        let driver = heartbeat::Driver::new(
            self.etcd.clone(),
            identity,
            stats,
            handler,
            options,
            control_rx,
            Arc::clone(&status),
        );
        let task = tokio::spawn(driver.run());
        HeartbeatHandle {
            control,
            status,
            task: Some(task),
        }
    }
}

/// `interval_ms` bounded to what the client accepts.
pub fn clamp_interval_ms(interval_ms: u64) -> u64 {
    interval_ms.clamp(HEARTBEAT_INTERVAL_MIN_MS, HEARTBEAT_INTERVAL_MAX_MS)
}
