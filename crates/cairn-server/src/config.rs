//! A node's configuration: from flags, a TOML file or `CAIRN_*` variables (parsed by the binary).

use crate::cpu_policy::CpuPolicy;
use cairn_types::limits;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How often nodes heartbeat unless configured, ms.
pub const NODE_HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 3000;
/// Default of [`ServerConfig::failure_phi_threshold`].
pub const FAILURE_PHI_THRESHOLD_DEFAULT: f64 = 8.0;
/// Default of [`ServerConfig::failure_min_std_dev_ms`].
pub const FAILURE_MIN_STD_DEV_MS_DEFAULT: u64 = 200;
/// Default of [`ServerConfig::failure_acceptable_pause_ms`].
pub const FAILURE_ACCEPTABLE_PAUSE_MS_DEFAULT: u64 = 300;
/// What a datanode may need, beyond one heartbeat interval, to reach a new leader: a stream to
/// a deposed leader that hangs is given up after 3 s (cairn-client's
/// `HEARTBEAT_RESPONSE_TIMEOUT_MS`), then the node finds the new leader and reconnects. Part of
/// the default [`ServerConfig::failure_detection_grace_ms`], so a leader change fails over no
/// datanode.
pub const FAILURE_RECONNECT_ALLOWANCE_MS: u64 = 4_000;
/// Default of [`ServerConfig::failover_migrations_max`].
pub const FAILOVER_MIGRATIONS_MAX_DEFAULT: usize = 8;
/// Default of [`ServerConfig::region_lease_margin_ms`].
pub const REGION_LEASE_MARGIN_MS_DEFAULT: u64 = 500;
/// How long a down node stays listed unless configured, ms (one hour).
pub const NODE_IDLE_FORGET_MS_DEFAULT: u64 = 3_600_000;

/// Revisions of history kept unless configured: watchers can resume from this far back. As
/// etcd's `--auto-compaction-mode=revision`, bounded by write volume: 100k revisions of
/// CREATE TABLE history held ~110 MiB more on every node than 10k (BENCHMARKS.md).
pub const AUTO_COMPACTION_RETENTION_REVISIONS_DEFAULT: u64 = 10_000;
/// Most follower replicas per region.
pub const REGION_FOLLOWERS_MAX: u32 = 8;
/// Most async worker threads `cairn serve` may be given ([`ServerConfig::worker_threads`], or
/// `TOKIO_WORKER_THREADS`).
pub const WORKER_THREADS_MAX: usize = 1024;

/// Everything one Cairn node needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's id (ignored when joining with `join` on a fresh data dir: the cluster assigns it).
    pub node_id: u64,
    /// Where the Raft log, snapshots and node identity live.
    pub data_dir: PathBuf,
    /// gRPC for clients: etcd v3 API and cairn.v1.
    pub listen_client: String,
    /// gRPC for Raft peers.
    pub listen_peer: String,
    /// HTTP: /health, /metrics.
    pub listen_http: String,
    /// `id=HOST:PEERPORT` for every voter of a new cluster; empty means a single-node cluster.
    pub initial_cluster: Vec<(u64, String)>,
    /// A client endpoint of a running cluster to join as a learner.
    pub join: Option<String>,
    /// Largest request accepted, bytes.
    pub request_bytes_max: usize,
    /// Most operations per Txn branch.
    pub txn_ops_max: usize,
    /// The space quota: a write that would take the key-value data (every retained version, as
    /// Status' `dbSizeInUse` counts it) past this raises the NOSPACE alarm and is refused, as
    /// are all writes that add data until an operator compacts and disarms it.
    pub quota_backend_bytes: u64,
    /// Raft heartbeat period, ms.
    pub heartbeat_interval_ms: u64,
    /// How long followers hear nothing from the leader before one calls an election, ms (each
    /// follower picks between this and 1.2 x this, see [`ServerConfig::raft_election_timeouts_ms`]).
    pub election_timeout_ms: u64,
    /// Log entries between automatic snapshots (each node adds a stagger, see
    /// [`crate::run::snapshot_period`]).
    pub snapshot_logs_since_last: u64,
    /// Largest snapshot accepted from a peer, bytes (held in memory while it is received).
    pub snapshot_bytes_max: usize,
    /// How long a request waits for a leader or a commit before it fails, ms.
    pub request_timeout_ms: u64,
    /// How often datanodes, frontends and flownodes are asked to heartbeat, ms (advertised in
    /// every heartbeat response; not Raft's heartbeat).
    pub node_heartbeat_interval_ms: u64,
    /// How long one heartbeat keeps a node alive, ms; unset means 3 x node_heartbeat_interval_ms.
    /// A node is suspect after one lease without a heartbeat and down after two.
    pub node_lease_ms: Option<u64>,
    /// How long a down node stays listed before it is forgotten, ms.
    pub node_idle_forget_ms: u64,
    /// How long a region lease granted on a heartbeat answer lets a datanode write the region,
    /// ms from when the datanode sent the heartbeat; unset means 4/3 x
    /// node_heartbeat_interval_ms (4 s at 3 s). Longer rides out late heartbeats (a Cairn leader
    /// change) without a pause in writes; shorter lets a dead node's regions move sooner.
    pub region_lease_ms: Option<u64>,
    /// The failure detector (phi accrual, see `leader::heartbeat::phi`): the suspicion level at
    /// which a node is judged failed.
    pub failure_phi_threshold: f64,
    /// The smallest deviation of heartbeat gaps the detector assumes, ms.
    pub failure_min_std_dev_ms: u64,
    /// Silence beyond the usual heartbeat gap not held against a node, ms.
    pub failure_acceptable_pause_ms: u64,
    /// The heartbeat gap assumed before two heartbeats arrived, ms; unset means
    /// node_heartbeat_interval_ms.
    pub failure_first_heartbeat_estimate_ms: Option<u64>,
    /// Nothing is judged failed for this long after a leader term starts (nodes reconnect), ms;
    /// unset means node_heartbeat_interval_ms + [`FAILURE_RECONNECT_ALLOWANCE_MS`].
    pub failure_detection_grace_ms: Option<u64>,
    /// Added to a region lease on the leader's side before it counts the lease as surely over
    /// (clock drift between leader and datanode, and the grant's time in flight), ms.
    pub region_lease_margin_ms: u64,
    /// How new regions are placed: "round_robin", "load_based" or "label_aware".
    pub placement_selector: String,
    /// The datanode label the label-aware selector spreads regions and replicas over.
    pub placement_spread_label: String,
    /// Follower replicas per region (0: leader only).
    pub region_followers: u32,
    /// Migration batches (each up to `MIGRATION_BATCH_REGIONS_MAX` regions) failover and drain
    /// run at once; more wait for a slot.
    pub failover_migrations_max: usize,
    /// How long a datanode gets to answer an open, close or truncate instruction, ms.
    pub region_instruction_timeout_ms: u64,
    /// How often the schedulers plan a pass, ms.
    pub scheduler_interval_ms: u64,
    /// Scheduler operators queued or running at once, cluster-wide.
    pub scheduler_operators_max: usize,
    /// Scheduler operators queued or running at once that move a region off or onto one node.
    pub scheduler_node_operators_max: usize,
    /// Scheduler operators started per minute.
    pub scheduler_moves_per_minute_max: usize,
    /// A region a scheduler moved is not moved again by a balancing scheduler for this long, ms.
    pub scheduler_region_cooldown_ms: u64,
    /// How long the leader remembers the nodes a balancing move took a region's copy off, ms:
    /// meanwhile no balancing scheduler sends a copy of the region back to them. 0: not at all.
    pub scheduler_region_return_ms: u64,
    /// How long a scheduler operator has, from when it is planned, ms: one still queued then is
    /// cancelled (timed out); a running one's migration gets what is left as its deadline.
    pub scheduler_operator_timeout_ms: u64,
    /// How often the leader persists the summary a new leader starts from (cool-downs, the
    /// hottest regions' loads, the nodes' latest stats), ms: what a leader change loses at most.
    pub scheduler_state_persist_interval_ms: u64,
    /// How often the leader looks for orphan regions (open on a datanode, placed there by no
    /// route, opened by no running procedure) and closes them, ms; 0 turns it off.
    pub region_reconcile_interval_ms: u64,
    /// Longest a DDL request may run before the caller gets a timeout, ms (the procedure itself
    /// carries on).
    pub ddl_timeout_ms: u64,
    /// Revisions of history kept for watchers; older ones are compacted automatically by the
    /// leader. 0 keeps everything (then only an explicit Compact frees memory).
    pub auto_compaction_retention_revisions: u64,
    /// Async worker threads of `cairn serve`'s runtime; 0 (the default) takes
    /// `TOKIO_WORKER_THREADS` when set, else one per core the process may use, divided among the
    /// members of the initial cluster on this host ([`ServerConfig::members_on_this_host`]; at
    /// least one). A program that embeds the server builds its own runtime and does not read
    /// this (docs/operations.md, "Threads").
    pub worker_threads: usize,
    /// How `cairn serve`'s threads are scheduled: `batch` (the default, `SCHED_BATCH`: a waking
    /// thread does not preempt the running one) or `normal` ([`crate::cpu_policy`]). Set by
    /// `cairn serve` before its runtime starts; a program that embeds the server calls
    /// [`crate::cpu_policy::apply`] itself, before it starts threads.
    pub cpu_policy: CpuPolicy,
    /// AppendEntries messages this node, as leader, keeps unanswered on each follower's
    /// replication stream (1 to `APPEND_STREAM_INFLIGHT_MAX`, 256). The next message waits for
    /// an answer and then carries every entry proposed meanwhile. Raise it where the round trip
    /// to a follower is long (docs/operations.md, "Replication window").
    pub replication_window: usize,
    /// Test hook: abort the process when a procedure reaches `KIND:STEP`
    /// (e.g. `create_table:open_regions`). Never set in production.
    pub test_crash_at: Option<String>,
    /// With `test_crash_at`: only the node that creates this file first crashes.
    pub test_crash_marker: Option<PathBuf>,
}

/// Default pause between scheduling passes, ms.
pub const SCHEDULER_INTERVAL_MS_DEFAULT: u64 = 2_000;
/// Default cluster-wide limit on queued or running scheduler operators.
pub const SCHEDULER_OPERATORS_MAX_DEFAULT: usize = 64;
/// Default per-node limit on queued or running scheduler operators.
pub const SCHEDULER_NODE_OPERATORS_MAX_DEFAULT: usize = 16;
/// Default limit on scheduler operators started per minute.
pub const SCHEDULER_MOVES_PER_MINUTE_MAX_DEFAULT: usize = 600;
/// Default cool-down of a moved region, ms (a minute): long enough that no scheduler undoes a
/// move on the next stats, short enough that a region which arrived during a repair is free to
/// take part in the next rebalancing.
pub const SCHEDULER_REGION_COOLDOWN_MS_DEFAULT: u64 = 60_000;
/// Default of [`ServerConfig::scheduler_region_return_ms`] (ten minutes, ten cool-downs): long
/// enough that a copy moved for balance is not sent back by the next shift of a few regions,
/// short enough that a real change of load can bring it back.
pub const SCHEDULER_REGION_RETURN_MS_DEFAULT: u64 = 600_000;
/// Most [`ServerConfig::scheduler_region_return_ms`] (a day): every remembered move costs the
/// leader memory and the scheduling summary bytes.
pub const SCHEDULER_REGION_RETURN_MS_MAX: u64 = 86_400_000;
/// Default of [`ServerConfig::scheduler_operator_timeout_ms`] (a minute, the deadline a
/// migration gets when none is named): time for a batch of 256 regions to move, short enough
/// that an operator queued that long is planned afresh rather than run on an old premise.
pub const SCHEDULER_OPERATOR_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// Least [`ServerConfig::scheduler_operator_timeout_ms`]: a migration needs round trips to its
/// datanodes; under a second every move would roll back.
pub const SCHEDULER_OPERATOR_TIMEOUT_MS_MIN: u64 = 1_000;
/// Most [`ServerConfig::scheduler_operator_timeout_ms`] (an hour): a running migration holds its
/// regions until its deadline, and a premise that old is not worth acting on.
pub const SCHEDULER_OPERATOR_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// Default interval of the scheduling summary's writes, ms: each can be several hundred KiB of
/// replicated log, so not every pass.
pub const SCHEDULER_STATE_PERSIST_INTERVAL_MS_DEFAULT: u64 = 30_000;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            node_id: 1,
            data_dir: PathBuf::new(),
            listen_client: "127.0.0.1:4379".into(),
            listen_peer: "127.0.0.1:4380".into(),
            listen_http: "127.0.0.1:4381".into(),
            initial_cluster: Vec::new(),
            join: None,
            request_bytes_max: limits::REQUEST_BYTES_MAX_DEFAULT,
            txn_ops_max: limits::TXN_OPS_MAX_DEFAULT,
            quota_backend_bytes: limits::QUOTA_BACKEND_BYTES_DEFAULT,
            heartbeat_interval_ms: 100,
            election_timeout_ms: 600,
            snapshot_logs_since_last: limits::SNAPSHOT_LOGS_SINCE_LAST_DEFAULT,
            snapshot_bytes_max: limits::SNAPSHOT_BYTES_MAX,
            request_timeout_ms: 7000,
            node_heartbeat_interval_ms: NODE_HEARTBEAT_INTERVAL_MS_DEFAULT,
            node_lease_ms: None,
            node_idle_forget_ms: NODE_IDLE_FORGET_MS_DEFAULT,
            region_lease_ms: None,
            region_lease_margin_ms: REGION_LEASE_MARGIN_MS_DEFAULT,
            failure_phi_threshold: FAILURE_PHI_THRESHOLD_DEFAULT,
            failure_min_std_dev_ms: FAILURE_MIN_STD_DEV_MS_DEFAULT,
            failure_acceptable_pause_ms: FAILURE_ACCEPTABLE_PAUSE_MS_DEFAULT,
            failure_first_heartbeat_estimate_ms: None,
            failure_detection_grace_ms: None,
            placement_selector: "load_based".into(),
            placement_spread_label: "zone".into(),
            region_followers: 0,
            failover_migrations_max: FAILOVER_MIGRATIONS_MAX_DEFAULT,
            region_instruction_timeout_ms: 10_000,
            scheduler_interval_ms: SCHEDULER_INTERVAL_MS_DEFAULT,
            scheduler_operators_max: SCHEDULER_OPERATORS_MAX_DEFAULT,
            scheduler_node_operators_max: SCHEDULER_NODE_OPERATORS_MAX_DEFAULT,
            scheduler_moves_per_minute_max: SCHEDULER_MOVES_PER_MINUTE_MAX_DEFAULT,
            scheduler_region_cooldown_ms: SCHEDULER_REGION_COOLDOWN_MS_DEFAULT,
            scheduler_region_return_ms: SCHEDULER_REGION_RETURN_MS_DEFAULT,
            scheduler_operator_timeout_ms: SCHEDULER_OPERATOR_TIMEOUT_MS_DEFAULT,
            scheduler_state_persist_interval_ms: SCHEDULER_STATE_PERSIST_INTERVAL_MS_DEFAULT,
            region_reconcile_interval_ms: 30_000,
            ddl_timeout_ms: 120_000,
            auto_compaction_retention_revisions: AUTO_COMPACTION_RETENTION_REVISIONS_DEFAULT,
            worker_threads: 0,
            cpu_policy: CpuPolicy::default(),
            replication_window: limits::REPLICATION_WINDOW_DEFAULT,
            test_crash_at: None,
            test_crash_marker: None,
        }
    }
}

impl ServerConfig {
    /// The data directory, defaulting to `./cairn-data/<node-id>`.
    pub fn data_dir(&self) -> PathBuf {
        if self.data_dir.as_os_str().is_empty() {
            PathBuf::from("cairn-data").join(self.node_id.to_string())
        } else {
            self.data_dir.clone()
        }
    }

    /// openraft's `(election_timeout_min, election_timeout_max)`, from `election_timeout_ms` (E).
    ///
    /// An openraft follower first honours the leader's lease, `election_timeout_max` from when it
    /// last heard from the leader (it refuses to vote for anyone else meanwhile), then waits its
    /// election timeout, sampled in `[min, max)`: it calls an election after a silence of
    /// `max + [min, max)`. Passing E and 2E, as Cairn first did, meant 1.8 to 2.4 s of silence at
    /// E = 600 ms before any election: that was where failover time went. These bounds make the
    /// silence E to 1.2 E, and the leader lease (what a leader may rely on after a quorum last
    /// answered) 0.6 E.
    pub fn raft_election_timeouts_ms(&self) -> (u64, u64) {
        (
            self.election_timeout_ms * 2 / 5,
            self.election_timeout_ms * 3 / 5,
        )
    }

    /// The node lease, ms: as configured, else three heartbeat intervals.
    /// The failure detector's settings and the grace after a term starts.
    pub fn failure_detector(
        &self,
    ) -> (
        crate::leader::heartbeat::phi::FailureDetectorSettings,
        std::time::Duration,
    ) {
        use std::time::Duration;
        let interval = self.node_heartbeat_interval_ms;
        let settings = crate::leader::heartbeat::phi::FailureDetectorSettings {
            threshold: self.failure_phi_threshold,
            min_std_dev: Duration::from_millis(self.failure_min_std_dev_ms),
            acceptable_pause: Duration::from_millis(self.failure_acceptable_pause_ms),
            first_heartbeat_estimate: Duration::from_millis(
                self.failure_first_heartbeat_estimate_ms.unwrap_or(interval),
            ),
        };
        let grace = self
            .failure_detection_grace_ms
            .unwrap_or(interval + FAILURE_RECONNECT_ALLOWANCE_MS);
        (settings, Duration::from_millis(grace))
    }

    /// See [`ServerConfig::region_lease_ms`].
    pub fn region_lease_ms(&self) -> u64 {
        self.region_lease_ms
            .unwrap_or(self.node_heartbeat_interval_ms.saturating_mul(4) / 3)
    }

    pub fn node_lease_ms(&self) -> u64 {
        self.node_lease_ms
            .unwrap_or(3 * self.node_heartbeat_interval_ms)
    }

    /// Members of the initial cluster that run on this node's host, this node included (at least
    /// 1): those whose peer address names the same host as this node's own entry (its
    /// `listen_peer` when the list has none), every loopback name counting as one host. A test
    /// bed of three nodes on one machine counts 3; a node per machine counts 1.
    pub fn members_on_this_host(&self) -> usize {
        let own = self
            .initial_cluster
            .iter()
            .find(|(id, _)| *id == self.node_id)
            .map_or(self.listen_peer.as_str(), |(_, addr)| addr.as_str());
        let own = peer_host(own);
        let others = self
            .initial_cluster
            .iter()
            .filter(|(id, addr)| *id != self.node_id && peer_host(addr) == own)
            .count();
        1 + others
    }

    /// Parses `"1=HOST:PORT,2=HOST:PORT"`.
    pub fn parse_initial_cluster(s: &str) -> Result<Vec<(u64, String)>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| format!("initial-cluster: {part:?} is not ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("initial-cluster: node id {id:?} is not a number"))?;
            if id == 0 {
                return Err("initial-cluster: node id 0 is reserved".into());
            }
            let addr = addr.trim().trim_start_matches("http://").to_string();
            if !addr.contains(':') {
                return Err(format!("initial-cluster: address {addr:?} has no port"));
            }
            if out.iter().any(|(i, _)| *i == id) {
                return Err(format!("initial-cluster: node id {id} appears twice"));
            }
            out.push((id, addr));
        }
        Ok(out)
    }

    /// Checks values a user can get wrong, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 && self.join.is_none() {
            return Err("node-id: must be at least 1".into());
        }
        if self.request_bytes_max == 0
            || self.request_bytes_max > limits::REQUEST_BYTES_MAX_CONFIGURABLE
        {
            return Err(format!(
                "request-bytes-max: must be between 1 and {}",
                limits::REQUEST_BYTES_MAX_CONFIGURABLE
            ));
        }
        if self.snapshot_bytes_max == 0 {
            return Err("snapshot-bytes-max: must be at least 1".into());
        }
        if self.quota_backend_bytes == 0 {
            return Err("quota-backend-bytes: must be at least 1".into());
        }
        if self.txn_ops_max == 0 {
            return Err("txn-ops-max: must be at least 1".into());
        }
        if self.heartbeat_interval_ms == 0
            || self.election_timeout_ms < 3 * self.heartbeat_interval_ms
            || self.raft_election_timeouts_ms().0 <= self.heartbeat_interval_ms
        {
            return Err(
                "election-timeout-ms: must be at least 3 x heartbeat-interval-ms (and both > 0)"
                    .into(),
            );
        }
        if self.node_heartbeat_interval_ms == 0 {
            return Err("node-heartbeat-interval-ms: must be at least 1".into());
        }
        if self.node_lease_ms() < self.node_heartbeat_interval_ms {
            return Err("node-lease-ms: must be at least node-heartbeat-interval-ms".into());
        }
        if self.node_idle_forget_ms == 0 {
            return Err("node-idle-forget-ms: must be at least 1".into());
        }
        if !(self.failure_phi_threshold.is_finite() && self.failure_phi_threshold > 0.0) {
            return Err("failure-phi-threshold: must be a positive number (8 is usual)".into());
        }
        if self.failure_first_heartbeat_estimate_ms == Some(0) {
            return Err("failure-first-heartbeat-estimate-ms: must be at least 1".into());
        }
        if self.region_lease_ms() <= self.node_heartbeat_interval_ms {
            return Err(
                "region-lease-ms: must exceed node-heartbeat-interval-ms (a lease must outlast \
                 the wait for the next heartbeat)"
                    .into(),
            );
        }
        if let Err(e) = self.placement_selector.parse::<cairn_sched::SelectorKind>() {
            return Err(format!("placement-selector: {e}"));
        }
        if self.scheduler_interval_ms == 0
            || self.scheduler_operators_max == 0
            || self.scheduler_node_operators_max == 0
            || self.scheduler_moves_per_minute_max == 0
            || self.scheduler_state_persist_interval_ms == 0
        {
            return Err("scheduler-interval-ms, scheduler-operators-max, \
                 scheduler-node-operators-max, scheduler-moves-per-minute-max and \
                 scheduler-state-persist-interval-ms: must be at least 1"
                .into());
        }
        let timeout_bounds = SCHEDULER_OPERATOR_TIMEOUT_MS_MIN..=SCHEDULER_OPERATOR_TIMEOUT_MS_MAX;
        if !timeout_bounds.contains(&self.scheduler_operator_timeout_ms) {
            return Err(format!(
                "scheduler-operator-timeout-ms: must be between {SCHEDULER_OPERATOR_TIMEOUT_MS_MIN} \
                 and {SCHEDULER_OPERATOR_TIMEOUT_MS_MAX} (scheduler_operator_timeout_ms_min, \
                 _max), got {}",
                self.scheduler_operator_timeout_ms
            ));
        }
        if self.scheduler_region_return_ms > SCHEDULER_REGION_RETURN_MS_MAX {
            return Err(format!(
                "scheduler-region-return-ms: at most {SCHEDULER_REGION_RETURN_MS_MAX} \
                 (scheduler_region_return_ms_max), got {}",
                self.scheduler_region_return_ms
            ));
        }
        if self.failover_migrations_max == 0 {
            return Err("failover-migrations-max: must be at least 1".into());
        }
        if self.region_followers > REGION_FOLLOWERS_MAX {
            return Err(format!(
                "region-followers: at most {REGION_FOLLOWERS_MAX} (region_followers_max)"
            ));
        }
        if self.worker_threads > WORKER_THREADS_MAX {
            return Err(format!(
                "worker-threads: at most {WORKER_THREADS_MAX} (worker_threads_max; 0: one per \
                 core), got {}",
                self.worker_threads
            ));
        }
        if !(1..=limits::APPEND_STREAM_INFLIGHT_MAX).contains(&self.replication_window) {
            return Err(format!(
                "replication-window: must be between 1 and {} (append_stream_inflight_max), got {}",
                limits::APPEND_STREAM_INFLIGHT_MAX,
                self.replication_window
            ));
        }
        if self.region_instruction_timeout_ms == 0 || self.ddl_timeout_ms == 0 {
            return Err(
                "region-instruction-timeout-ms and ddl-timeout-ms: must be at least 1".into(),
            );
        }
        if !self.initial_cluster.is_empty()
            && self.join.is_none()
            && !self
                .initial_cluster
                .iter()
                .any(|(id, _)| *id == self.node_id)
        {
            return Err(format!(
                "initial-cluster: does not list this node (node-id {})",
                self.node_id
            ));
        }
        Ok(())
    }
}

/// The host of a `HOST:PORT` peer address, with every loopback name (`localhost`, `127.x.y.z`,
/// `::1`) as `"loopback"` and case folded: addresses that name one host compare equal.
fn peer_host(addr: &str) -> String {
    let addr = addr.trim().trim_start_matches("http://");
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        "loopback".to_string()
    } else {
        host.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_on_this_host_are_those_whose_peer_address_names_it() {
        let config = |node_id: u64, cluster: &str, listen_peer: &str| ServerConfig {
            node_id,
            initial_cluster: ServerConfig::parse_initial_cluster(cluster).unwrap(),
            listen_peer: listen_peer.to_string(),
            ..ServerConfig::default()
        };
        // Three nodes on one machine, however loopback is spelled.
        let bed = "1=127.0.0.1:2380,2=localhost:2381,3=[::1]:2382";
        assert_eq!(config(2, bed, "0.0.0.0:2381").members_on_this_host(), 3);
        // One node per machine.
        let spread = "1=10.0.0.1:2380,2=10.0.0.2:2380,3=db-3.example:2380";
        assert_eq!(config(1, spread, "0.0.0.0:2380").members_on_this_host(), 1);
        // Two of five share a host; names compare without case.
        let five = "1=A.example:1,2=a.example:2,3=b.example:1,4=c.example:1,5=d.example:1";
        assert_eq!(config(2, five, "0.0.0.0:2").members_on_this_host(), 2);
        assert_eq!(config(3, five, "0.0.0.0:1").members_on_this_host(), 1);
        // Without an initial cluster (a restart or a join), only this node is known.
        assert_eq!(config(1, "", "127.0.0.1:2380").members_on_this_host(), 1);
        // Not in the list (a joining node): its own listen address decides.
        assert_eq!(config(9, bed, "127.0.0.1:2390").members_on_this_host(), 4);
    }

    #[test]
    fn initial_cluster_parses_and_rejects_bad_entries() {
        let c = ServerConfig::parse_initial_cluster("1=127.0.0.1:1, 2=http://h:2").unwrap();
        assert_eq!(c, vec![(1, "127.0.0.1:1".into()), (2, "h:2".into())]);
        assert!(ServerConfig::parse_initial_cluster("x=1:1").is_err());
        assert!(ServerConfig::parse_initial_cluster("1=a:1,1=b:2").is_err());
        assert!(ServerConfig::parse_initial_cluster("1=nohost").is_err());
    }

    #[test]
    fn validate_names_the_setting() {
        let c = ServerConfig {
            initial_cluster: vec![(2, "a:1".into())],
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("initial-cluster"));
        let c = ServerConfig {
            node_heartbeat_interval_ms: 1000,
            node_lease_ms: Some(500),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("node-lease-ms"));
        for timeout in [
            SCHEDULER_OPERATOR_TIMEOUT_MS_MIN - 1,
            SCHEDULER_OPERATOR_TIMEOUT_MS_MAX + 1,
        ] {
            let c = ServerConfig {
                scheduler_operator_timeout_ms: timeout,
                ..Default::default()
            };
            let err = c.validate().unwrap_err();
            assert!(err.contains("scheduler-operator-timeout-ms"), "{err}");
        }
        let c = ServerConfig {
            worker_threads: WORKER_THREADS_MAX + 1,
            ..Default::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.contains("worker-threads: at most 1024"), "{err}");
        let c = ServerConfig {
            worker_threads: WORKER_THREADS_MAX,
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
        for window in [0, limits::APPEND_STREAM_INFLIGHT_MAX + 1] {
            let c = ServerConfig {
                replication_window: window,
                ..Default::default()
            };
            let err = c.validate().unwrap_err();
            assert!(
                err.contains("replication-window: must be between 1 and 256"),
                "{err}"
            );
        }
        let c = ServerConfig {
            replication_window: limits::APPEND_STREAM_INFLIGHT_MAX,
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
        let c = ServerConfig {
            scheduler_region_return_ms: SCHEDULER_REGION_RETURN_MS_MAX + 1,
            ..Default::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.contains("scheduler-region-return-ms"), "{err}");
    }

    #[test]
    fn node_lease_defaults_to_three_heartbeat_intervals() {
        let c = ServerConfig::default();
        assert_eq!(c.node_lease_ms(), 9000);
        let c = ServerConfig {
            node_heartbeat_interval_ms: 100,
            ..Default::default()
        };
        assert_eq!(c.node_lease_ms(), 300);
    }
}
