//! `cairn serve`: one node. Settings come from flags, `CAIRN_*` environment variables, and a
//! TOML file (`--config`), in that order of precedence, over the defaults of design.md §4.

use cairn_server::cpu_policy::CpuPolicy;
use cairn_server::ServerConfig;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (snake_case keys, e.g. `listen_client`).
    #[arg(long, env = "CAIRN_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id (>= 1). Default 1.
    #[arg(long, env = "CAIRN_NODE_ID")]
    pub node_id: Option<u64>,
    /// Data directory. Default ./cairn-data/<node-id>.
    #[arg(long, env = "CAIRN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Client gRPC address (etcd v3 API + cairn.v1). Default 127.0.0.1:4379.
    #[arg(long, env = "CAIRN_LISTEN_CLIENT")]
    pub listen_client: Option<String>,
    /// Raft peer address. Default 127.0.0.1:4380.
    #[arg(long, env = "CAIRN_LISTEN_PEER")]
    pub listen_peer: Option<String>,
    /// HTTP address for /health and /metrics. Default 127.0.0.1:4381.
    #[arg(long, env = "CAIRN_LISTEN_HTTP")]
    pub listen_http: Option<String>,
    /// Voters of a new cluster: "1=HOST:PEERPORT,2=HOST:PEERPORT,3=HOST:PEERPORT".
    #[arg(long, env = "CAIRN_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Client endpoint of a running cluster to join as a learner (promote with `cairn ctl member promote`).
    #[arg(long, env = "CAIRN_JOIN")]
    pub join: Option<String>,
    /// Largest request accepted, bytes. Default 1572864 (1.5 MiB).
    #[arg(long, env = "CAIRN_REQUEST_BYTES_MAX")]
    pub request_bytes_max: Option<usize>,
    /// Most operations in one Txn branch. Default 1024.
    #[arg(long, env = "CAIRN_TXN_OPS_MAX")]
    pub txn_ops_max: Option<usize>,
    /// Space quota of the key-value data, bytes: past it the NOSPACE alarm is raised and writes
    /// are refused until compaction and `alarm disarm`. Default 2147483648 (2 GiB, etcd's).
    #[arg(long, env = "CAIRN_QUOTA_BACKEND_BYTES")]
    pub quota_backend_bytes: Option<u64>,
    /// Raft heartbeat interval, ms. Default 100.
    #[arg(long, env = "CAIRN_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    /// Raft election timeout (lower bound), ms. Default 600.
    #[arg(long, env = "CAIRN_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Log entries between automatic snapshots; each node adds node id mod 8 sixteenths of it,
    /// so members do not snapshot at the same index. Default 100000.
    #[arg(long, env = "CAIRN_SNAPSHOT_LOGS_SINCE_LAST")]
    pub snapshot_logs_since_last: Option<u64>,
    /// Largest snapshot accepted from a peer, bytes. Default 2147483648 (2 GiB).
    #[arg(long, env = "CAIRN_SNAPSHOT_BYTES_MAX")]
    pub snapshot_bytes_max: Option<usize>,
    /// How long a request waits for a leader or commit, ms. Default 7000.
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// How often datanodes/frontends/flownodes heartbeat to the leader, ms. Default 3000.
    #[arg(long, env = "CAIRN_NODE_HEARTBEAT_INTERVAL_MS")]
    pub node_heartbeat_interval_ms: Option<u64>,
    /// How long one heartbeat keeps a node alive, ms. Default 3 x node-heartbeat-interval-ms.
    #[arg(long, env = "CAIRN_NODE_LEASE_MS")]
    pub node_lease_ms: Option<u64>,
    /// How long a down node stays listed before it is forgotten, ms. Default 3600000.
    #[arg(long, env = "CAIRN_NODE_IDLE_FORGET_MS")]
    pub node_idle_forget_ms: Option<u64>,
    /// How long a region lease lets a datanode write a region after it sent the heartbeat that
    /// renewed it, ms. Default 4/3 x node-heartbeat-interval-ms.
    #[arg(long, env = "CAIRN_REGION_LEASE_MS")]
    pub region_lease_ms: Option<u64>,
    /// Safety margin the leader adds to a region lease before it counts it as over, ms. Default 500.
    #[arg(long, env = "CAIRN_REGION_LEASE_MARGIN_MS")]
    pub region_lease_margin_ms: Option<u64>,
    /// Failure detector: suspicion level (phi) at which a node is judged failed. Default 8.
    #[arg(long, env = "CAIRN_FAILURE_PHI_THRESHOLD")]
    pub failure_phi_threshold: Option<f64>,
    /// Failure detector: smallest deviation of heartbeat gaps assumed, ms. Default 200.
    #[arg(long, env = "CAIRN_FAILURE_MIN_STD_DEV_MS")]
    pub failure_min_std_dev_ms: Option<u64>,
    /// Failure detector: silence beyond the usual gap not held against a node, ms. Default 300.
    #[arg(long, env = "CAIRN_FAILURE_ACCEPTABLE_PAUSE_MS")]
    pub failure_acceptable_pause_ms: Option<u64>,
    /// Failure detector: heartbeat gap assumed before two arrived, ms. Default the interval.
    #[arg(long, env = "CAIRN_FAILURE_FIRST_HEARTBEAT_ESTIMATE_MS")]
    pub failure_first_heartbeat_estimate_ms: Option<u64>,
    /// Nothing is judged failed for this long after a leader term starts, ms. Default the interval + 4 s.
    #[arg(long, env = "CAIRN_FAILURE_DETECTION_GRACE_MS")]
    pub failure_detection_grace_ms: Option<u64>,
    /// How new regions are placed: round_robin, load_based or label_aware. Default load_based.
    #[arg(long, env = "CAIRN_PLACEMENT_SELECTOR")]
    pub placement_selector: Option<String>,
    /// Datanode label the label-aware selector spreads over. Default zone.
    #[arg(long, env = "CAIRN_PLACEMENT_SPREAD_LABEL")]
    pub placement_spread_label: Option<String>,
    /// Follower replicas per region (0 = leader only). Default 0.
    #[arg(long, env = "CAIRN_REGION_FOLLOWERS")]
    pub region_followers: Option<u32>,
    /// Migration batches (each up to 256 regions) failover and drain run at once. Default 8.
    #[arg(long, env = "CAIRN_FAILOVER_MIGRATIONS_MAX")]
    pub failover_migrations_max: Option<usize>,
    /// How often the schedulers plan a pass, ms. Default 2000.
    #[arg(long, env = "CAIRN_SCHEDULER_INTERVAL_MS")]
    pub scheduler_interval_ms: Option<u64>,
    /// Scheduler operators queued or running at once, cluster-wide. Default 64.
    #[arg(long, env = "CAIRN_SCHEDULER_OPERATORS_MAX")]
    pub scheduler_operators_max: Option<usize>,
    /// Scheduler operators queued or running at once per datanode. Default 16.
    #[arg(long, env = "CAIRN_SCHEDULER_NODE_OPERATORS_MAX")]
    pub scheduler_node_operators_max: Option<usize>,
    /// Scheduler operators started per minute. Default 600.
    #[arg(long, env = "CAIRN_SCHEDULER_MOVES_PER_MINUTE_MAX")]
    pub scheduler_moves_per_minute_max: Option<usize>,
    /// A moved region stays put this long, ms. Default 60000.
    #[arg(long, env = "CAIRN_SCHEDULER_REGION_COOLDOWN_MS")]
    pub scheduler_region_cooldown_ms: Option<u64>,
    /// How long the leader remembers the nodes a balancing move took a region's copy off, ms:
    /// meanwhile no balancing scheduler sends a copy of it back there. Default 600000 (0 to
    /// 86400000; 0: not at all).
    #[arg(long, env = "CAIRN_SCHEDULER_REGION_RETURN_MS")]
    pub scheduler_region_return_ms: Option<u64>,
    /// How long a scheduler operator has from when it is planned, ms: queued past it, it is
    /// cancelled; running, its migration rolls back by then. Default 60000 (1000 to 3600000).
    #[arg(long, env = "CAIRN_SCHEDULER_OPERATOR_TIMEOUT_MS")]
    pub scheduler_operator_timeout_ms: Option<u64>,
    /// How often the leader persists what a new leader starts from (cool-downs, hottest
    /// regions' loads, nodes' latest stats), ms. Default 30000.
    #[arg(long, env = "CAIRN_SCHEDULER_STATE_PERSIST_INTERVAL_MS")]
    pub scheduler_state_persist_interval_ms: Option<u64>,
    /// How long a datanode gets to answer a region instruction, ms. Default 10000.
    #[arg(long, env = "CAIRN_REGION_INSTRUCTION_TIMEOUT_MS")]
    pub region_instruction_timeout_ms: Option<u64>,
    /// How often the leader closes orphan regions (placed by no route), ms; 0 = never. Default 30000.
    #[arg(long, env = "CAIRN_REGION_RECONCILE_INTERVAL_MS")]
    pub region_reconcile_interval_ms: Option<u64>,
    /// Revisions of history kept for watchers before automatic compaction (0 = keep all). Default 10000.
    #[arg(long, env = "CAIRN_AUTO_COMPACTION_RETENTION_REVISIONS")]
    pub auto_compaction_retention_revisions: Option<u64>,
    /// Async worker threads (at most 1024). Default 0: TOKIO_WORKER_THREADS when set, else one
    /// per core this process may use.
    #[arg(long, env = "CAIRN_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// How the node's threads are scheduled: batch (SCHED_BATCH: a waking thread does not
    /// preempt the running one) or normal. Default batch.
    #[arg(long, env = "CAIRN_CPU_POLICY")]
    pub cpu_policy: Option<CpuPolicy>,
    /// AppendEntries messages a leader keeps unanswered per follower (1 to 256); the next waits
    /// for an answer and carries what was proposed meanwhile. Default 2.
    #[arg(long, env = "CAIRN_REPLICATION_WINDOW")]
    pub replication_window: Option<usize>,
    /// Test hook: abort when a procedure reaches KIND:STEP. Never use in production.
    #[arg(long, env = "CAIRN_TEST_CRASH_AT", hide = true)]
    pub test_crash_at: Option<String>,
    /// Test hook: only the node that creates this file first crashes.
    #[arg(long, env = "CAIRN_TEST_CRASH_MARKER", hide = true)]
    pub test_crash_marker: Option<PathBuf>,
}

impl ServeArgs {
    /// Merges file, then flags/env, over the defaults.
    pub fn to_config(&self) -> Result<ServerConfig, String> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("config: cannot read {}: {e}", path.display()))?;
                toml::from_str::<ServerConfig>(&text)
                    .map_err(|e| format!("config: {}: {e}", path.display()))?
            }
            None => ServerConfig::default(),
        };
        if let Some(v) = self.node_id {
            c.node_id = v;
        }
        if let Some(v) = &self.data_dir {
            c.data_dir = v.clone();
        }
        if let Some(v) = &self.listen_client {
            c.listen_client = v.clone();
        }
        if let Some(v) = &self.listen_peer {
            c.listen_peer = v.clone();
        }
        if let Some(v) = &self.listen_http {
            c.listen_http = v.clone();
        }
        if let Some(v) = &self.initial_cluster {
            c.initial_cluster = ServerConfig::parse_initial_cluster(v)?;
        }
        if let Some(v) = &self.join {
            c.join = Some(v.clone());
        }
        if let Some(v) = self.request_bytes_max {
            c.request_bytes_max = v;
        }
        if let Some(v) = self.quota_backend_bytes {
            c.quota_backend_bytes = v;
        }
        if let Some(v) = self.txn_ops_max {
            c.txn_ops_max = v;
        }
        if let Some(v) = self.heartbeat_interval_ms {
            c.heartbeat_interval_ms = v;
        }
        if let Some(v) = self.election_timeout_ms {
            c.election_timeout_ms = v;
        }
        if let Some(v) = self.snapshot_logs_since_last {
            c.snapshot_logs_since_last = v;
        }
        if let Some(v) = self.snapshot_bytes_max {
            c.snapshot_bytes_max = v;
        }
        if let Some(v) = self.request_timeout_ms {
            c.request_timeout_ms = v;
        }
        if let Some(v) = self.node_heartbeat_interval_ms {
            c.node_heartbeat_interval_ms = v;
        }
        if let Some(v) = self.node_lease_ms {
            c.node_lease_ms = Some(v);
        }
        if let Some(v) = self.node_idle_forget_ms {
            c.node_idle_forget_ms = v;
        }
        if let Some(v) = self.region_lease_ms {
            c.region_lease_ms = Some(v);
        }
        if let Some(v) = self.region_lease_margin_ms {
            c.region_lease_margin_ms = v;
        }
        if let Some(v) = self.failure_phi_threshold {
            c.failure_phi_threshold = v;
        }
        if let Some(v) = self.failure_min_std_dev_ms {
            c.failure_min_std_dev_ms = v;
        }
        if let Some(v) = self.failure_acceptable_pause_ms {
            c.failure_acceptable_pause_ms = v;
        }
        if let Some(v) = self.failure_first_heartbeat_estimate_ms {
            c.failure_first_heartbeat_estimate_ms = Some(v);
        }
        if let Some(v) = self.failure_detection_grace_ms {
            c.failure_detection_grace_ms = Some(v);
        }
        if let Some(v) = &self.placement_selector {
            c.placement_selector = v.clone();
        }
        if let Some(v) = &self.placement_spread_label {
            c.placement_spread_label = v.clone();
        }
        if let Some(v) = self.region_followers {
            c.region_followers = v;
        }
        if let Some(v) = self.failover_migrations_max {
            c.failover_migrations_max = v;
        }
        if let Some(v) = self.scheduler_interval_ms {
            c.scheduler_interval_ms = v;
        }
        if let Some(v) = self.scheduler_operators_max {
            c.scheduler_operators_max = v;
        }
        if let Some(v) = self.scheduler_node_operators_max {
            c.scheduler_node_operators_max = v;
        }
        if let Some(v) = self.scheduler_moves_per_minute_max {
            c.scheduler_moves_per_minute_max = v;
        }
        if let Some(v) = self.scheduler_region_cooldown_ms {
            c.scheduler_region_cooldown_ms = v;
        }
        if let Some(v) = self.scheduler_region_return_ms {
            c.scheduler_region_return_ms = v;
        }
        if let Some(v) = self.scheduler_operator_timeout_ms {
            c.scheduler_operator_timeout_ms = v;
        }
        if let Some(v) = self.scheduler_state_persist_interval_ms {
            c.scheduler_state_persist_interval_ms = v;
        }
        if let Some(v) = self.region_instruction_timeout_ms {
            c.region_instruction_timeout_ms = v;
        }
        if let Some(v) = self.region_reconcile_interval_ms {
            c.region_reconcile_interval_ms = v;
        }
        if let Some(v) = self.auto_compaction_retention_revisions {
            c.auto_compaction_retention_revisions = v;
        }
        if let Some(v) = self.worker_threads {
            c.worker_threads = v;
        }
        if let Some(v) = self.cpu_policy {
            c.cpu_policy = v;
        }
        if let Some(v) = self.replication_window {
            c.replication_window = v;
        }
        if let Some(v) = &self.test_crash_at {
            c.test_crash_at = Some(v.clone());
        }
        if let Some(v) = &self.test_crash_marker {
            c.test_crash_marker = Some(v.clone());
        }
        c.validate()?;
        Ok(c)
    }
}

/// Sets up logging to stderr; `RUST_LOG` overrides the default filter.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,cairn=info,cairn_server=info,cairn_store=info")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Runs one node with settings already resolved by [`ServeArgs::to_config`] (before the runtime
/// is built, as they size it).
pub async fn run(config: ServerConfig) -> Result<(), String> {
    init_logging();
    tracing::info!(
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        members_on_this_host = config.members_on_this_host(),
        "async runtime started"
    );
    cairn_server::run(config, shutdown_signal()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults_hold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "node_id = 2\nlisten_client = \"127.0.0.1:9\"\ninitial_cluster = [[2, \"127.0.0.1:8\"]]\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            listen_client: Some("127.0.0.1:7".into()),
            ..Default::default()
        };
        let c = args.to_config().unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.listen_client, "127.0.0.1:7");
        assert_eq!(c.listen_peer, "127.0.0.1:4380");
        assert_eq!(c.data_dir(), PathBuf::from("cairn-data/2"));
    }

    #[test]
    fn unknown_config_keys_are_rejected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "listen_clinet = \"x\"\n").unwrap();
        let args = ServeArgs {
            config: Some(path),
            ..Default::default()
        };
        assert!(args.to_config().unwrap_err().contains("listen_clinet"));
    }
}
