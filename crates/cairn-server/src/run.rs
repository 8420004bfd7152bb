//! Starting and stopping a node: open storage, start Raft, bootstrap or join, serve the client,
//! peer and HTTP ports, and run the leader's background duties until shutdown.

use crate::api::services;
pub use crate::clock::sleep_unless_stopped;
use crate::leader::node::Node;
pub use crate::replica::log_file_size;
use crate::replica::{legacy_log_path, log_path};
use crate::ServerConfig;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::{MemberAddRequest, MemberListRequest};
use cairn_store::log_store::LogStore;
use cairn_store::network::{peer_channel, PeerFaults, PeerNetwork};
use cairn_store::{Command, Raft, StateMachineStore};
use cairn_types::limits::GRPC_OVERHEAD_BYTES;
use cairn_types::NodeAddrs;
use openraft::{Config, SnapshotPolicy};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

/// How often leader changes are counted for `/metrics`.
const LEADER_WATCH_TICK_MS: u64 = 250;
/// Pause between attempts to announce this node's addresses.
const ANNOUNCE_RETRY_MS: u64 = 500;
/// Concurrent RPCs (HTTP/2 streams) one client connection may have open.
const GRPC_STREAMS_PER_CONNECTION_MAX: u32 = 1024;
/// How long a joining node keeps asking the cluster to add it.
const JOIN_TIMEOUT_MS: u64 = 30_000;
/// How long the servers get, once the node stops, to finish what is in flight before the
/// streams still open (a peer's replication, a client's watch) are cut, ms.
const SHUTDOWN_GRACE_MS: u64 = 2_000;
/// Log entries kept after a snapshot so slightly lagging followers need no snapshot.
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 5000;

/// Reads the node id a previous run (or join) recorded in the data dir.
fn stored_node_id(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("node_id"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn store_node_id(dir: &Path, id: u64) -> std::io::Result<()> {
    std::fs::write(dir.join("node_id"), format!("{id}\n"))
}

/// `cairn snapshot restore`: makes `data_dir` (empty or missing) the data directory of member
/// `node_id` of a new cluster whose voters are `voters`, holding the key space and leases of
/// the backup in `file`. Every member of the new cluster is restored from the same file with
/// the same voters; `cairn serve --data-dir D` then starts each. A corrupt or truncated file is
/// refused before anything is written.
pub fn restore_snapshot(
    file: &Path,
    data_dir: &Path,
    node_id: u64,
    voters: &std::collections::BTreeMap<u64, NodeAddrs>,
) -> Result<cairn_store::backup::BackupSummary, String> {
    if !voters.contains_key(&node_id) {
        return Err(format!(
            "--node-id {node_id} is not one of the new cluster's voters {:?}",
            voters.keys().collect::<Vec<_>>()
        ));
    }
    let occupied = std::fs::read_dir(data_dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if occupied {
        return Err(format!(
            "--data-dir {} is not empty: a restore builds a new member, so give it an empty \
             or new directory",
            data_dir.display()
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    let summary = cairn_store::backup::verify_backup(&bytes)
        .map_err(|e| format!("{}: {e}", file.display()))?
        .1;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("creating {}: {e}", data_dir.display()))?;
    cairn_store::backup::restore_backup(&bytes, &data_dir.join("snapshots"), voters)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    store_node_id(data_dir, node_id).map_err(|e| format!("writing the node id: {e}"))?;
    Ok(summary)
}

async fn bind(what: &str, addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {what} address {addr}: {e}"))
}

/// Asks a running cluster (at a client endpoint) to add this node as a learner; returns our id.
/// If an operator already added this peer address (`member add`), the existing member is ours.
async fn join_cluster(endpoint: &str, peer_addr: &str) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_millis(JOIN_TIMEOUT_MS);
    let peer_url = format!("http://{peer_addr}");
    loop {
        let attempt = async {
            let channel = peer_channel(endpoint).map_err(|e| e.to_string())?;
            let mut client = ClusterClient::new(channel);
            let added = client
                .member_add(MemberAddRequest {
                    peer_ur_ls: vec![peer_url.clone()],
                    is_learner: true,
                })
                .await;
            match added {
                Ok(resp) => resp
                    .into_inner()
                    .member
                    .map(|m| m.id)
                    .ok_or_else(|| "MemberAdd returned no member".to_string()),
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    let members = client
                        .member_list(MemberListRequest { linearizable: true })
                        .await
                        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
                        .into_inner()
                        .members;
                    members
                        .iter()
                        .find(|m| m.peer_ur_ls.contains(&peer_url))
                        .map(|m| m.id)
                        .ok_or_else(|| format!("{}: {}", s.code(), s.message()))
                }
                Err(s) => Err(format!("{}: {}", s.code(), s.message())),
            }
        };
        match attempt.await {
            Ok(id) => return Ok(id),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!("join via {endpoint} failed, retrying: {e}");
                tokio::time::sleep(Duration::from_millis(ANNOUNCE_RETRY_MS)).await;
            }
            Err(e) => return Err(format!("join via {endpoint} failed: {e}")),
        }
    }
}

/// Log entries between this node's snapshots: `snapshot_logs_since_last`, plus node id mod 8
/// sixteenths of it, so the members of a cluster do not all snapshot at the same index. Taking
/// a snapshot of a large state costs a core for a second or more (and its file and the log purge
/// after it load the disk): both followers doing it at once, beside the leader, held up commits
/// and the leader's quorum contact (BENCHMARKS.md).
pub fn snapshot_period(config: &ServerConfig) -> u64 {
    let n = config.snapshot_logs_since_last;
    n.saturating_add(n / 16 * (config.node_id % 8))
}

/// The Raft settings of a node with `config`.
pub fn raft_config(config: &ServerConfig) -> Result<Config, String> {
    let (election_timeout_min, election_timeout_max) = config.raft_election_timeouts_ms();
    Config {
        cluster_name: "cairn".into(),
        heartbeat_interval: config.heartbeat_interval_ms,
        election_timeout_min,
        election_timeout_max,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_period(config)),
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
        enable_pre_vote: Some(true),
        // Replicate entries while the leader's own fsync is in flight (the log store returns
        // from append before the flush and reports it later).
        broadcast_submitted_on_append: Some(true),
        // Standard Raft: a restarted leader must win a new election (and commit an entry of its
        // term) before it serves; restoring leadership could serve reads from a lagging commit.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .map_err(|e| format!("raft config: {e}"))
}

/// The tasks every running node has beside its servers: the leader lifecycle (which starts and
/// stops every leader service), the address announcement and the leader-change counter. They
/// run until `stop` turns true; the lifecycle then ends the term it runs.
pub struct NodeDuties {
    pub lifecycle: tokio::task::JoinHandle<()>,
    others: Vec<tokio::task::JoinHandle<()>>,
}

impl NodeDuties {
    pub fn start(node: &Arc<Node>, stop: &watch::Receiver<bool>) -> Self {
        Self {
            lifecycle: tokio::spawn(crate::leader::lifecycle::run(node.clone(), stop.clone())),
            others: vec![
                tokio::spawn(count_leader_changes(node.clone(), stop.clone())),
                tokio::spawn(announce_addrs(node.clone(), stop.clone())),
            ],
        }
    }

    /// Stops the side tasks at once and waits for the lifecycle (after `stop` was set).
    pub async fn finish(self) {
        for t in &self.others {
            t.abort();
        }
        let _ = self.lifecycle.await;
    }

    /// Aborts everything at once, as a crash would.
    pub fn abort(&self) {
        self.lifecycle.abort();
        for t in &self.others {
            t.abort();
        }
    }
}

/// Runs one node until `shutdown` resolves.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> Result<(), String> {
    run_with_node(config, shutdown, |_| {}).await
}

/// [`run`], handing the started [`Node`] to `on_started` — for in-process embedding and tests
/// that drive leader services (such as the mailbox) directly.
pub async fn run_with_node(
    mut config: ServerConfig,
    shutdown: impl Future<Output = ()>,
    on_started: impl FnOnce(Arc<Node>),
) -> Result<(), String> {
    config.validate()?;
    let dir = config.data_dir();
    std::fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create data dir {}: {e}", dir.display()))?;
    config.data_dir = dir.clone();

    // Bind first: a port in use is the most common start-up error and must be reported clearly.
    let client_listener = bind("client", &config.listen_client).await?;
    let peer_listener = bind("peer", &config.listen_peer).await?;
    let http_listener = bind("http", &config.listen_http).await?;
    config.listen_client = client_listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    config.listen_peer = peer_listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    config.listen_http = http_listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();

    let fresh = stored_node_id(&dir).is_none();
    let node_id = match (stored_node_id(&dir), &config.join) {
        (Some(id), _) => id,
        (None, Some(endpoint)) => join_cluster(endpoint, &config.listen_peer).await?,
        (None, None) => config.node_id,
    };
    store_node_id(&dir, node_id).map_err(|e| format!("cannot write node id: {e}"))?;
    config.node_id = node_id;

    cairn_store::log_migrate::migrate_redb_log(&legacy_log_path(&dir), &log_path(&dir))
        .map_err(|e| format!("cannot move the raft log out of raft.redb: {e}"))?;
    let log = LogStore::open(&log_path(&dir)).map_err(|e| format!("cannot open raft log: {e}"))?;
    let sm = StateMachineStore::open(&dir.join("snapshots"))
        .map_err(|e| format!("cannot open snapshots: {e}"))?;
    let sm_handle = sm.handle();
    let raft_config = raft_config(&config)?;
    let peer_faults = PeerFaults::default();
    let (election_timeout_min, _) = config.raft_election_timeouts_ms();
    let append_timeout_min = Duration::from_millis(election_timeout_min / 2);
    let network = PeerNetwork::new(
        peer_faults.clone(),
        append_timeout_min,
        config.replication_window,
    );
    let log_syncs = log.sync_latency();
    let raft = Raft::new(node_id, Arc::new(raft_config), network, log, sm)
        .await
        .map_err(|e| format!("cannot start raft: {e}"))?;

    if fresh && config.join.is_none() {
        let mut members = BTreeMap::new();
        if config.initial_cluster.is_empty() {
            members.insert(
                node_id,
                NodeAddrs {
                    peer: config.listen_peer.clone(),
                    ..Default::default()
                },
            );
        }
        for (id, addr) in &config.initial_cluster {
            members.insert(
                *id,
                NodeAddrs {
                    peer: addr.clone(),
                    ..Default::default()
                },
            );
        }
        if !raft.is_initialized().await.map_err(|e| e.to_string())? {
            raft.initialize(members)
                .await
                .map_err(|e| format!("cannot bootstrap the cluster: {e}"))?;
        }
    }

    let node = Node::new(
        node_id,
        raft.clone(),
        sm_handle,
        config.clone(),
        peer_faults,
        Arc::new(crate::clock::TokioClock),
    );
    node.replica().metrics.show_log_syncs(log_syncs);
    let (stop_tx, stop_rx) = watch::channel(false);

    let max_msg = config.request_bytes_max + GRPC_OVERHEAD_BYTES;
    let mut grpc = tonic::service::Routes::builder();
    grpc.add_service(services::kv_server(node.clone(), max_msg))
        .add_service(services::watch_server(node.clone(), max_msg))
        .add_service(services::lease_server(node.clone(), max_msg))
        .add_service(services::cluster_server(node.clone(), max_msg))
        .add_service(services::maintenance_server(node.clone(), max_msg))
        .add_service(services::election_server(node.clone(), max_msg))
        .add_service(services::lock_server(node.clone(), max_msg))
        .add_service(services::admin_server(node.clone(), max_msg))
        .add_service(services::heartbeat_server(node.clone(), max_msg))
        .add_service(services::node_registry_server(node.clone(), max_msg))
        .add_service(services::meta_server(node.clone(), max_msg))
        .add_service(services::auth_server(node.clone(), max_msg));
    // etcd's JSON gateway on the same port: its paths (`/v3/…`) are not gRPC's, and the
    // server takes HTTP/1.1 beside HTTP/2.
    let client_routes = grpc
        .routes()
        .into_axum_router()
        .layer(crate::api::auth::GrpcAdmissionLayer(node.clone()))
        .merge(crate::api::gateway::router(node.clone()));
    let client_server = tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(Some(GRPC_STREAMS_PER_CONNECTION_MAX))
        .add_routes(client_routes.into())
        .serve_with_incoming_shutdown(incoming(client_listener), wait_stop(stop_rx.clone()));
    let peer_server = tonic::transport::Server::builder()
        .add_service(crate::replica::peer_service::peer_server(
            node.replica().clone(),
        ))
        .serve_with_incoming_shutdown(incoming(peer_listener), wait_stop(stop_rx.clone()));
    let http_server = axum::serve(http_listener, crate::api::http::router(node.clone()))
        .with_graceful_shutdown(wait_stop(stop_rx.clone()));

    let client_task = tokio::spawn(client_server);
    let peer_task = tokio::spawn(peer_server);
    let http_task = tokio::spawn(async move { http_server.await });
    let duties = NodeDuties::start(&node, &stop_rx);
    let trim = tokio::spawn(crate::memory::trim_periodically(stop_rx.clone()));
    on_started(node.clone());

    tracing::info!(
        node_id,
        client = %config.listen_client,
        peer = %config.listen_peer,
        http = %config.listen_http,
        data_dir = %dir.display(),
        "cairn node started"
    );

    shutdown.await;
    tracing::info!(node_id, "shutting down");
    let _ = stop_tx.send(true);
    // The lifecycle ends the leader term it runs, and with it every leader service (bounded).
    duties.finish().await;
    trim.abort();
    // Streams end and pending instructions fail now, whatever state the term was in.
    node.heartbeats.stop();
    let _ = raft.shutdown().await;
    // A graceful stop waits for open streams, and some never end while their other side runs:
    // the leader's replication stream into a follower, a client's watch. Past the grace they
    // are cut, or a follower stopped before its leader would wait for the leader forever.
    let grace = Duration::from_millis(SHUTDOWN_GRACE_MS);
    let (client_abort, peer_abort, http_abort) = (
        client_task.abort_handle(),
        peer_task.abort_handle(),
        http_task.abort_handle(),
    );
    let all = async {
        let _ = client_task.await;
        let _ = peer_task.await;
        let _ = http_task.await;
    };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::info!(
            node_id,
            grace_ms = SHUTDOWN_GRACE_MS,
            "streams still open after the shutdown grace: cut"
        );
        client_abort.abort();
        peer_abort.abort();
        http_abort.abort();
    }
    Ok(())
}

/// Accepted connections with Nagle off: small RPCs must not wait for delayed ACKs.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(30)))
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Publishes this node's client and HTTP addresses into the replicated state once a leader exists.
async fn announce_addrs(node: Arc<Node>, stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let want = (
            node.config.listen_client.clone(),
            node.config.listen_http.clone(),
        );
        let have = node.sm.read().node_addrs.get(&node.id).cloned();
        let is_member = node.node_addrs(node.id).is_some();
        if have.as_ref() == Some(&want) {
            return;
        }
        if is_member && node.leader().is_some() {
            let cmd = Command::SetNodeAddrs {
                node_id: node.id,
                client: want.0,
                http: want.1,
            };
            if let Err(e) = node.propose(cmd).await {
                tracing::debug!("announcing addresses failed, will retry: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(ANNOUNCE_RETRY_MS)).await;
    }
}

/// Counts the leader changes this node sees, for `/metrics`.
async fn count_leader_changes(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut last_leader = node.leader();
    while !sleep_unless_stopped(&mut stop, Duration::from_millis(LEADER_WATCH_TICK_MS)).await {
        let leader = node.leader();
        if leader != last_leader {
            node.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
            last_leader = leader;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_snapshot_at_different_indexes() {
        let period = |node_id: u64| {
            let config = ServerConfig {
                node_id,
                snapshot_logs_since_last: 100_000,
                ..ServerConfig::default()
            };
            snapshot_period(&config)
        };
        assert_eq!(period(8), 100_000);
        assert_eq!(period(1), 106_250);
        assert_eq!(period(3), 118_750);
        let mut three: Vec<u64> = (1..=3).map(period).collect();
        three.dedup();
        assert_eq!(three.len(), 3);
    }
}
