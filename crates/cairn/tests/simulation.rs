//! The deterministic simulation: a 3-node Cairn cluster in one process, on one thread, on a
//! simulated network and clock, with faults chosen by a seed.
//!
//! Every node is a real `cairn_server::node::Node` (Raft, state machine, leader lifecycle, lease
//! keeper, heartbeat hub, DDL procedures, the KV, lease and lock handlers) over an in-memory log
//! and a simulated network
//! (`cairn_store::sim_network`): links that are cut (partitions, one way or both), delayed and
//! lossy, and nodes that crash and restart from what their "disk" holds. tokio's paused clock is
//! the only clock and every random choice (openraft's election timeouts, lease ids, the faults,
//! the links' delays and losses, the clients' operations) comes from the seed.
//!
//! tokio's own generator, which orders the wake-ups of watch receivers and select! branches, is
//! seeded too (`--cfg tokio_unstable`, set in `.cargo/config.toml`), so a seed replays exactly:
//! the same faults, operations and answers at the same simulated instants
//! ([`a_seed_replays_exactly`]). Every fault in the printed trace carries the count of numbers
//! drawn so far, so should two runs ever part, the trace shows where.
//!
//! Each run checks that
//! - the KV history (reads and writes of a few keys through every node) is linearizable;
//! - no two clients ever believed they held the same lease-backed lock at once (a client
//!   believes it holds the lock from Lock's answer until it unlocks or its lease may have expired
//!   by what the server told it: the send time of its last acknowledged grant or keep-alive plus
//!   the TTL);
//! - after the faults heal, every node holds the same keys and values;
//! - simulated datanodes (cairn-sim's `SimNode` behind cairn-client's real heartbeat loop, its
//!   streams carried over the simulated network to the server's stream handler) end up holding
//!   exactly the regions the stored routes give them, while a DDL client creates and drops tables
//!   through random nodes; no procedure is left running; every table whose last create or drop
//!   was acknowledged exists, or not, accordingly;
//! - at no instant do two datanodes hold a valid write lease for one region, while datanodes are
//!   cut off, hung, killed and restarted, Cairn nodes crash and the leader fails their regions
//!   over, and each datanode's clock runs up to `DATANODE_CLOCK_DRIFT_MAX` slower or faster than
//!   the leader's (its leases stretched or shrunk accordingly; the leader's lease margin must
//!   cover it).
//!
//! `CAIRN_SIM_SEEDS` sets how many seeds run (default 200, starting at `CAIRN_SIM_SEED_BASE`,
//! default 1); a failure prints its seed and the command that replays it:
//! `CAIRN_SIM_SEED=<seed> cargo test --release -p cairn --test simulation -- --nocapture`.

mod common;

use cairn_client::meta::{
    HeartbeatHandle, HeartbeatOptions, HeartbeatResponses, HeartbeatTransport, MetaClient,
    OpenFuture,
};
use cairn_meta::procedure::{ProcedureRecord, ProcedureState};
use cairn_meta::route::TableRoute;
use cairn_proto::cairnpb::{
    CreateDatabaseRequest, DropTableRequest, HeartbeatRequest, ListTablesRequest, RegionRole,
};
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_server::clock::TokioClock;
use cairn_server::node::{ForwardFailure, ForwardFuture, Node, PeerLink};
use cairn_server::peer_request::{Ddl, LeaderRequest, LeaderResponse};
use cairn_server::replica::meta::store::{layout, scan_all};
use cairn_server::run::{raft_config, NodeDuties};
use cairn_server::services::heartbeat::{serve_stream, Out};
use cairn_server::services::{kv, lease, lock};
use cairn_server::ServerConfig;
use cairn_sim::node::sim_identity;
use cairn_sim::regions::RegionSet;
use cairn_sim::{LoadPattern, SimNode, SimRole, WriteLoadConfig};
use cairn_store::mem_log_store::MemLogStore;
use cairn_store::network::{decode, encode, PeerFaults};
use cairn_store::runtime::{random_u64, seed_thread_rng};
use cairn_store::sim_network::{SimNet, SimNetwork};
use cairn_store::{Raft, StateMachineStore};
use cairn_types::NodeAddrs;
use common::linearizability::{check_history, Action, Op, Verdict, SEARCH_STEPS_PER_KEY_MAX};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, Instant};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

const NODES: [u64; 3] = [1, 2, 3];
/// Simulated time during which faults are injected.
const FAULT_PHASE_MS: u64 = 20_000;
/// Simulated time the clients keep going after everything healed.
const HEALED_PHASE_MS: u64 = 4_000;
/// Keys the KV clients read and write.
const KV_KEYS: u64 = 8;
const KV_CLIENTS: u64 = 4;
const LOCK_CLIENTS: u64 = 3;
/// The lease TTL lock clients ask for, seconds.
const LOCK_LEASE_TTL_SECS: i64 = 2;
/// How long a client waits for any one answer before counting its outcome unknown.
const CLIENT_TIMEOUT_MS: u64 = 3_000;
const LOCK_NAME: &[u8] = b"sim-lock";
const SEEDS_DEFAULT: u64 = 200;
/// Simulated datanodes; the nemesis cuts them off from every Cairn node, pauses their
/// heartbeats, or kills and restarts them.
const DATANODES: [u64; 3] = [1001, 1002, 1003];
/// How much slower or faster than the leader's each datanode's clock may run (drawn per datanode
/// and seed). The leader's lease margin covers a clock slow by margin / (lease + margin): 300 ms
/// over a 2 s lease here, 13 %.
const DATANODE_CLOCK_DRIFT_MAX: f64 = 0.10;
/// The region lease in the simulation, ms: longer than the failure detector takes to judge a
/// silent datanode (~1.9 s at 500 ms heartbeats), so failover waits for the lease to run out by
/// the leader's count and a margin too small for the drift shows as two writers (checked: with
/// a 1 ms margin and 45 % drift the lease check fails).
const REGION_LEASE_MS: u64 = 2_000;
/// The leader's region lease margin in the simulation, ms.
const REGION_LEASE_MARGIN_MS: u64 = 300;
/// What the leader asks datanodes to heartbeat at, ms.
const DATANODE_HEARTBEAT_MS: u64 = 500;
/// Table names the DDL client creates and drops (`sim_0` …).
const DDL_TABLES: u64 = 6;
/// Most regions per table the DDL client asks for.
const DDL_REGIONS_MAX: u64 = 4;
/// How long the DDL client waits for one answer before counting its outcome unknown.
const DDL_TIMEOUT_MS: u64 = 6_000;
/// How often the simulation looks for two datanodes able to write one region, ms.
const LEASE_CHECK_EVERY_MS: u64 = 10;
/// Heartbeat requests (and responses) in transit on one simulated stream.
const STREAM_IN_TRANSIT_MAX: usize = 16;

/// A random number below `n` from the seeded generator.
fn below(n: u64) -> u64 {
    random_u64() % n.max(1)
}

fn between(lo: u64, hi: u64) -> u64 {
    lo + below(hi - lo + 1)
}

/// One running node and what stops it.
struct Running {
    node: Arc<Node>,
    stop: watch::Sender<bool>,
    duties: NodeDuties,
}

/// The running nodes, which the forwarding link and the clients look up.
type Registry = Arc<Mutex<BTreeMap<u64, Arc<Node>>>>;

/// Forwarding between nodes over the simulated network.
struct SimLink {
    net: Arc<SimNet>,
    nodes: Registry,
}

fn lookup(nodes: &Registry, id: u64) -> Option<Arc<Node>> {
    nodes.lock().unwrap().get(&id).cloned()
}

impl PeerLink for SimLink {
    fn forward(
        &self,
        from: u64,
        to: u64,
        req: LeaderRequest,
        timeout: Duration,
    ) -> ForwardFuture<'_> {
        Box::pin(async move {
            // A crashed process refuses the connection: nothing was sent.
            if lookup(&self.nodes, to).is_none() {
                return Err(ForwardFailure::NotSent);
            }
            let round_trip = async {
                if !self.net.transit(from, to).await {
                    return Err(ForwardFailure::Lost);
                }
                let target = lookup(&self.nodes, to).ok_or(ForwardFailure::Lost)?;
                let req: LeaderRequest = encode(&req)
                    .and_then(|b| decode(&b))
                    .map_err(|e| ForwardFailure::Refused(tonic::Status::internal(e)))?;
                let resp = match target.serve_as_leader(req).await {
                    Ok(r) => r,
                    Err(s) => LeaderResponse::Error {
                        code: s.code() as i32,
                        message: s.message().to_string(),
                    },
                };
                if !self.net.transit(to, from).await {
                    return Err(ForwardFailure::Lost);
                }
                Ok(resp)
            };
            tokio::time::timeout(timeout, round_trip)
                .await
                .unwrap_or(Err(ForwardFailure::Lost))
        })
    }
}

/// Carries one datanode's heartbeat streams over the simulated network to the stream handler of
/// the node it dials, as a TCP connection would: a crashed node refuses or resets it, and a
/// message lost on it (a cut link, loss) breaks it.
struct DatanodeLink {
    sim: Weak<Sim>,
    datanode: u64,
}

/// The Cairn node an endpoint (`http://sim-N:4379`) names.
fn node_of_endpoint(endpoint: &str) -> Option<u64> {
    let rest = endpoint.strip_prefix("http://sim-")?;
    rest.split(':').next()?.parse().ok()
}

impl HeartbeatTransport for DatanodeLink {
    fn open(&self, endpoint: &str, requests: mpsc::Receiver<HeartbeatRequest>) -> OpenFuture<'_> {
        let target = node_of_endpoint(endpoint);
        let endpoint = endpoint.to_string();
        Box::pin(async move {
            let refused = || tonic::Status::unavailable(format!("{endpoint}: connection refused"));
            let sim = self.sim.upgrade().ok_or_else(refused)?;
            let target = target.ok_or_else(refused)?;
            // Connecting takes a round trip over the link.
            let dn = self.datanode;
            if !sim.net.transit(dn, target).await || !sim.net.transit(target, dn).await {
                return Err(tonic::Status::unavailable(format!("{endpoint}: timed out")));
            }
            let (node, stopped) = sim.running_node(target).ok_or_else(refused)?;
            let (up_tx, up_rx) = mpsc::channel(STREAM_IN_TRANSIT_MAX);
            let (down_tx, down_rx) = mpsc::channel::<Out>(STREAM_IN_TRANSIT_MAX);
            let (resp_tx, resp_rx) = mpsc::channel::<Out>(STREAM_IN_TRANSIT_MAX);
            let net = sim.net.clone();
            tokio::spawn(relay(
                net.clone(),
                (dn, target),
                requests,
                up_tx,
                stopped.clone(),
            ));
            tokio::spawn(serve_stream(
                node,
                ReceiverStream::new(up_rx).map(Ok),
                down_tx,
            ));
            tokio::spawn(relay(net, (target, dn), down_rx, resp_tx, stopped));
            let responses: HeartbeatResponses = Box::pin(ReceiverStream::new(resp_rx));
            Ok(responses)
        })
    }
}

/// Moves the messages of one direction of a stream across the link `from → to`, in order;
/// returns (closing the stream) when the Cairn node crashes, a message is lost, or either end
/// closes.
async fn relay<T: Send + 'static>(
    net: Arc<SimNet>,
    (from, to): (u64, u64),
    mut rx: mpsc::Receiver<T>,
    tx: mpsc::Sender<T>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let item = tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => return,
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
        if !net.transit(from, to).await || *stopped.borrow() {
            return;
        }
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

/// One DDL request and what its client saw.
#[derive(Debug, Clone)]
struct DdlOp {
    table: u64,
    create: bool,
    /// Acknowledged; false when it failed or its outcome is unknown.
    acknowledged: bool,
}

/// A lock holding as its client saw it, in simulated milliseconds since the start.
#[derive(Debug, Clone)]
struct Holding {
    client: u64,
    from_ms: u64,
    until_ms: u64,
}

/// Everything one run shares.
struct Sim {
    net: Arc<SimNet>,
    link: Arc<SimLink>,
    nodes: Registry,
    running: Mutex<BTreeMap<u64, Running>>,
    logs: BTreeMap<u64, MemLogStore>,
    dir: tempfile::TempDir,
    start: Instant,
    history: Mutex<Vec<Op>>,
    holdings: Mutex<Vec<Holding>>,
    /// The simulated datanodes and their heartbeat loops (None while killed).
    datanodes: Mutex<Vec<(Arc<SimNode>, Option<HeartbeatHandle>)>>,
    /// The client the datanodes' heartbeat loops run on.
    datanode_client: Mutex<Option<MetaClient>>,
    /// The DDL client's requests, in order.
    ddl: Mutex<Vec<DdlOp>>,
    /// The first instant two datanodes could write one region, if any.
    lease_violation: Mutex<Option<String>>,
    /// What happened, for a failing seed's report.
    trace: Mutex<Vec<String>>,
    me: Weak<Sim>,
}

impl Sim {
    fn new(seed: u64) -> Arc<Self> {
        let net = SimNet::new(seed);
        let nodes: Registry = Arc::default();
        Arc::new_cyclic(|me| Self {
            link: Arc::new(SimLink {
                net: net.clone(),
                nodes: nodes.clone(),
            }),
            net,
            nodes,
            running: Mutex::default(),
            logs: NODES
                .iter()
                .map(|id| (*id, MemLogStore::default()))
                .collect(),
            dir: tempfile::tempdir().expect("temp dir"),
            start: Instant::now(),
            history: Mutex::default(),
            holdings: Mutex::default(),
            datanodes: Mutex::default(),
            datanode_client: Mutex::default(),
            ddl: Mutex::default(),
            lease_violation: Mutex::default(),
            trace: Mutex::default(),
            me: me.clone(),
        })
    }

    /// Node `id` if it runs, and what tells that it crashed.
    fn running_node(&self, id: u64) -> Option<(Arc<Node>, watch::Receiver<bool>)> {
        let running = self.running.lock().unwrap();
        running
            .get(&id)
            .map(|r| (r.node.clone(), r.stop.subscribe()))
    }

    /// Starts the simulated datanodes, each reporting to the cluster through its heartbeat loop.
    fn start_datanodes(&self, seed: u64) {
        let endpoints = NODES.iter().map(|n| format!("sim-{n}:4379"));
        let client = MetaClient::new(endpoints).expect("endpoints");
        let mut datanodes = self.datanodes.lock().unwrap();
        for id in DATANODES {
            self.net.add_host(id);
            let node = Arc::new(SimNode::new(
                id,
                SimRole::Datanode,
                RegionSet::default(),
                LoadPattern::Constant,
                seed,
                Instant::now(),
            ));
            // Slow (positive) or fast, within the bound.
            let drift = DATANODE_CLOCK_DRIFT_MAX * (below(2_001) as f64 - 1_000.0) / 1_000.0;
            node.leases().set_clock_drift(drift);
            let handle = self.heartbeat(&client, &node);
            datanodes.push((node, Some(handle)));
        }
        *self.datanode_client.lock().unwrap() = Some(client);
    }

    /// A heartbeat loop for datanode `node`, as its process starts one.
    fn heartbeat(&self, client: &MetaClient, node: &Arc<SimNode>) -> HeartbeatHandle {
        let id = node.id();
        let options = HeartbeatOptions {
            interval_ms: DATANODE_HEARTBEAT_MS,
            initial_delay_ms: below(DATANODE_HEARTBEAT_MS),
            observer: None,
            transport: Some(Arc::new(DatanodeLink {
                sim: self.me.clone(),
                datanode: id,
            })),
            region_leases: Some(node.leases().clone()),
        };
        let identity = sim_identity(id, SimRole::Datanode, self.now_ms());
        client.run_heartbeat_with(identity, node.clone(), node.clone(), options)
    }

    /// Kills datanode `i` as its process dies: its heartbeat loop stops and it takes no write.
    /// Its regions stay on its disk, and its leases count in the check until they run out (a
    /// node the leader cannot hear may still be alive). False when it is killed already.
    async fn kill_datanode(&self, i: usize) -> bool {
        let handle = {
            let mut datanodes = self.datanodes.lock().unwrap();
            let Some((node, handle)) = datanodes.get_mut(i) else {
                return false;
            };
            let Some(handle) = handle.take() else {
                return false;
            };
            node.set_running(false);
            handle
        };
        handle.stop().await;
        true
    }

    /// Restarts killed datanode `i`: a new heartbeat loop (a new start time, so the leader sees a
    /// new incarnation), holding the regions it held.
    fn restart_datanode(&self, i: usize) {
        let client = self.datanode_client.lock().unwrap().clone();
        let mut datanodes = self.datanodes.lock().unwrap();
        let (Some(client), Some((node, handle))) = (client, datanodes.get_mut(i)) else {
            return;
        };
        if handle.is_none() {
            node.set_running(true);
            *handle = Some(self.heartbeat(&client, node));
        }
    }

    fn resume_datanodes(&self) {
        for (_, heartbeat) in self.datanodes.lock().unwrap().iter() {
            if let Some(h) = heartbeat {
                h.resume();
            }
        }
    }

    async fn stop_datanodes(&self) {
        let datanodes = std::mem::take(&mut *self.datanodes.lock().unwrap());
        for (_, handle) in datanodes {
            if let Some(h) = handle {
                h.stop().await;
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn note(&self, what: String) {
        let line = format!(
            "{:>6} ms  {what} (draw {})",
            self.now_ms(),
            cairn_store::runtime::draws()
        );
        self.trace.lock().unwrap().push(line);
    }

    fn config(&self, id: u64) -> ServerConfig {
        ServerConfig {
            node_id: id,
            data_dir: self.dir.path().join(id.to_string()),
            listen_client: format!("sim-{id}:4379"),
            listen_peer: format!("sim-{id}:4380"),
            listen_http: format!("sim-{id}:4381"),
            // Snapshots (and installs over the network after a long absence) happen in a run.
            snapshot_logs_since_last: 200,
            request_timeout_ms: 2_000,
            node_heartbeat_interval_ms: DATANODE_HEARTBEAT_MS,
            // Orphan regions (left by a rolled-back create) are closed within the healed phase.
            region_reconcile_interval_ms: 1_000,
            ddl_timeout_ms: DDL_TIMEOUT_MS,
            region_lease_ms: Some(REGION_LEASE_MS),
            region_lease_margin_ms: REGION_LEASE_MARGIN_MS,
            ..ServerConfig::default()
        }
    }

    async fn start_node(&self, id: u64, bootstrap: bool) {
        let config = self.config(id);
        let sm = StateMachineStore::open(&config.data_dir.join("snapshots"))
            .expect("open state machine")
            .with_inline_snapshot_work();
        let handle = sm.handle();
        let mut raft_cfg = raft_config(&config).expect("raft config");
        // Keep few entries after a snapshot, so that a node back from a crash or a partition
        // often needs a snapshot sent over the network.
        raft_cfg.max_in_snapshot_log_to_keep = 20;
        raft_cfg.purge_batch_size = 1;
        let raft = Raft::new(
            id,
            Arc::new(raft_cfg),
            SimNetwork::new(id, self.net.clone()),
            self.logs[&id].clone(),
            sm,
        )
        .await
        .expect("start raft");
        if bootstrap {
            let members: BTreeMap<u64, NodeAddrs> = NODES
                .iter()
                .map(|n| {
                    let addrs = NodeAddrs {
                        peer: format!("sim-{n}:4380"),
                        // Where a follower redirects a datanode's heartbeat stream.
                        client: format!("sim-{n}:4379"),
                        ..Default::default()
                    };
                    (*n, addrs)
                })
                .collect();
            raft.initialize(members).await.expect("bootstrap");
        }
        let node = Node::new(
            id,
            raft.clone(),
            handle,
            config,
            PeerFaults::default(),
            Arc::new(TokioClock),
        );
        node.use_peer_link(self.link.clone());
        let weak = Arc::downgrade(&node);
        self.net.attach(
            id,
            raft,
            Arc::new(move || {
                if let Some(n) = weak.upgrade() {
                    n.touch_leader_contact();
                }
            }),
        );
        let (stop, stop_rx) = watch::channel(false);
        let duties = NodeDuties::start(&node, &stop_rx);
        self.nodes.lock().unwrap().insert(id, node.clone());
        self.running
            .lock()
            .unwrap()
            .insert(id, Running { node, stop, duties });
    }

    /// Kills node `id` at once: what it had in memory is gone, its log and snapshot stay.
    async fn crash(&self, id: u64) {
        let Some(r) = self.running.lock().unwrap().remove(&id) else {
            return;
        };
        self.nodes.lock().unwrap().remove(&id);
        self.net.detach(id);
        r.duties.abort();
        let _ = r.stop.send(true);
        let _ = r.node.raft.shutdown().await;
    }

    fn is_running(&self, id: u64) -> bool {
        self.running.lock().unwrap().contains_key(&id)
    }

    /// A random running node, if any.
    fn any_node(&self) -> Option<Arc<Node>> {
        let nodes = self.nodes.lock().unwrap();
        let ids: Vec<u64> = nodes.keys().copied().collect();
        if ids.is_empty() {
            return None;
        }
        nodes.get(&ids[below(ids.len() as u64) as usize]).cloned()
    }

    fn leader(&self) -> Option<u64> {
        let nodes = self.nodes.lock().unwrap();
        nodes.values().find_map(|n| n.leader_term().map(|_| n.id))
    }

    async fn stop_all(&self) {
        let running: Vec<Running> = std::mem::take(&mut *self.running.lock().unwrap())
            .into_values()
            .collect();
        self.nodes.lock().unwrap().clear();
        for r in running {
            let _ = r.stop.send(true);
            r.duties.abort();
            let _ = r.node.raft.shutdown().await;
        }
    }
}

/// Reads and writes the keys through random nodes, recording every operation.
async fn kv_client(sim: Arc<Sim>, client: u64, until_ms: u64) {
    let mut n = 0;
    while sim.now_ms() < until_ms {
        sleep(Duration::from_millis(between(5, 120))).await;
        let Some(node) = sim.any_node() else {
            continue;
        };
        let key = format!("k{}", below(KV_KEYS));
        let invoke_ns = sim.start.elapsed().as_nanos() as u64;
        let timeout = Duration::from_millis(CLIENT_TIMEOUT_MS);
        if below(2) == 0 {
            n += 1;
            let value = format!("c{client}-{n}");
            let put = kv::put(
                &node,
                PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.clone().into_bytes(),
                    ..Default::default()
                },
            );
            let ok = matches!(tokio::time::timeout(timeout, put).await, Ok(Ok(_)));
            // A failed write may still have been applied: its outcome is unknown.
            let complete_ns = ok.then(|| sim.start.elapsed().as_nanos() as u64);
            sim.history.lock().unwrap().push(Op {
                key,
                action: Action::Write { value },
                invoke_ns,
                complete_ns,
            });
        } else {
            let req = RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            };
            if let Ok(Ok(resp)) = tokio::time::timeout(timeout, kv::range(&node, &req)).await {
                let observed = resp
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                sim.history.lock().unwrap().push(Op {
                    key,
                    action: Action::Read { observed },
                    invoke_ns,
                    complete_ns: Some(sim.start.elapsed().as_nanos() as u64),
                });
            }
        }
    }
}

/// Takes the lock again and again with a lease of its own, keeping the lease alive as a client
/// library does, and records when it believed it held the lock.
async fn lock_client(sim: Arc<Sim>, client: u64, until_ms: u64) {
    let timeout = Duration::from_millis(CLIENT_TIMEOUT_MS);
    while sim.now_ms() < until_ms {
        sleep(Duration::from_millis(between(10, 300))).await;
        let Some(node) = sim.any_node() else {
            continue;
        };
        let sent = sim.now_ms();
        let Ok(Ok((lease_id, ttl))) =
            tokio::time::timeout(timeout, lease::grant(&node, 0, LOCK_LEASE_TTL_SECS)).await
        else {
            continue;
        };
        // The lease lives at least until then, by what the cluster has acknowledged.
        let safe_until = Arc::new(Mutex::new(sent + ttl as u64 * 1000));
        let keeper = tokio::spawn(keep_alive(sim.clone(), lease_id, safe_until.clone()));
        let Some(node) = sim.any_node() else {
            keeper.abort();
            continue;
        };
        let locked = tokio::time::timeout(timeout, lock::lock(&node, LOCK_NAME, lease_id)).await;
        let acquired = sim.now_ms();
        if let Ok(Ok(resp)) = locked {
            let hold_ms = between(20, 400);
            let mut until = acquired;
            // Held while the lease is surely alive, for the time the work takes.
            while sim.now_ms() < acquired + hold_ms && sim.now_ms() < *safe_until.lock().unwrap() {
                sleep(Duration::from_millis(5)).await;
                until = sim.now_ms().min(*safe_until.lock().unwrap());
            }
            if acquired < until {
                sim.holdings.lock().unwrap().push(Holding {
                    client,
                    from_ms: acquired,
                    until_ms: until,
                });
            }
            if let Some(node) = sim.any_node() {
                let _ = tokio::time::timeout(timeout, lock::unlock(&node, resp.key)).await;
            }
        }
        keeper.abort();
    }
}

async fn keep_alive(sim: Arc<Sim>, lease_id: i64, safe_until: Arc<Mutex<u64>>) {
    loop {
        sleep(Duration::from_millis(LOCK_LEASE_TTL_SECS as u64 * 1000 / 4)).await;
        let Some(node) = sim.any_node() else {
            continue;
        };
        let sent = sim.now_ms();
        let renewed = tokio::time::timeout(
            Duration::from_millis(CLIENT_TIMEOUT_MS),
            lease::keep_alive_once(&node, lease_id),
        )
        .await;
        match renewed {
            Ok(Ok(ttl)) if ttl > 0 => {
                let mut s = safe_until.lock().unwrap();
                *s = (*s).max(sent + ttl as u64 * 1000);
            }
            Ok(Ok(_)) => return, // the lease is gone
            _ => {}
        }
    }
}

/// Creates and drops tables (`sim_0` … in database `sim`) through random nodes, one request at a
/// time, recording what it was told.
async fn ddl_client(sim: Arc<Sim>, until_ms: u64) {
    let load = WriteLoadConfig::default();
    let database = CreateDatabaseRequest {
        catalog: String::new(),
        name: load.database.clone(),
        if_not_exists: true,
        options: Default::default(),
    };
    loop {
        if sim.now_ms() >= until_ms {
            return;
        }
        sleep(Duration::from_millis(between(50, 300))).await;
        let outcome = ddl_call(&sim, Ddl::CreateDatabase, database.encode_to_vec()).await;
        sim.note(format!("create database: {outcome:?}"));
        if outcome.is_ok() {
            break;
        }
    }
    while sim.now_ms() < until_ms {
        sleep(Duration::from_millis(between(100, 1_500))).await;
        let table = below(DDL_TABLES);
        let create = below(3) != 0;
        let (ddl, body) = if create {
            let config = WriteLoadConfig {
                partitions: between(1, DDL_REGIONS_MAX) as u32,
                ..load.clone()
            };
            let request = config.create_table_request(table as u32);
            (Ddl::CreateTable, request.encode_to_vec())
        } else {
            let request = DropTableRequest {
                name: Some(load.table_name(table as u32)),
                if_exists: true,
            };
            (Ddl::DropTable, request.encode_to_vec())
        };
        let outcome = ddl_call(&sim, ddl, body).await;
        let acknowledged = outcome.is_ok();
        sim.note(format!(
            "{} sim_{table}: {outcome:?}",
            if create { "create" } else { "drop" },
        ));
        sim.ddl.lock().unwrap().push(DdlOp {
            table,
            create,
            acknowledged,
        });
    }
}

/// One DDL request through a random node: acknowledged, or why not.
async fn ddl_call(sim: &Sim, ddl: Ddl, body: Vec<u8>) -> Result<(), String> {
    let node = sim.any_node().ok_or("no node runs")?;
    let call = node.leader_call(LeaderRequest::Meta { ddl, body });
    match tokio::time::timeout(Duration::from_millis(DDL_TIMEOUT_MS), call).await {
        Ok(Ok(LeaderResponse::Meta(_))) => Ok(()),
        Ok(Ok(other)) => Err(format!("unexpected answer {other:?}")),
        Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => Err("no answer in time".into()),
    }
}

/// Injects faults until `until_ms`: partitions (of the leader or any node, both ways or one
/// way), lossy and slow links, crashes and restarts; datanodes cut off from every Cairn node or
/// hanging (heartbeats paused).
async fn nemesis(sim: Arc<Sim>, until_ms: u64) {
    let mut down: Vec<(u64, u64)> = Vec::new(); // (node, restart at ms)
    let mut down_datanodes: Vec<(usize, u64)> = Vec::new(); // (index, restart at ms)
    while sim.now_ms() < until_ms {
        sleep(Duration::from_millis(between(300, 2_500))).await;
        let now = sim.now_ms();
        let mut back = Vec::new();
        down.retain(|(id, at)| {
            let due = *at <= now;
            if due {
                back.push(*id);
            }
            !due
        });
        for id in back {
            sim.note(format!("restart node {id}"));
            sim.start_node(id, false).await;
        }
        down_datanodes.retain(|(i, at)| {
            let due = *at <= now;
            if due {
                sim.note(format!("restart datanode {}", DATANODES[*i]));
                sim.restart_datanode(*i);
            }
            !due
        });
        match below(10) {
            0 => {
                let victim = sim.leader().unwrap_or(NODES[below(3) as usize]);
                sim.note(format!("isolate leader {victim}"));
                sim.net.partition(&[victim], &NODES);
            }
            1 => {
                let victim = NODES[below(3) as usize];
                sim.note(format!("isolate node {victim}"));
                sim.net.partition(&[victim], &NODES);
            }
            2 => {
                let from = NODES[below(3) as usize];
                let to = NODES[((from + below(2)) % 3) as usize];
                sim.note(format!("cut link {from} -> {to}"));
                sim.net.cut_one_way(from, to);
            }
            3 => {
                let victim = if below(2) == 0 {
                    sim.leader()
                } else {
                    Some(NODES[below(3) as usize])
                };
                if let Some(victim) = victim.filter(|v| sim.is_running(*v)) {
                    let at = now + between(200, 3_000);
                    sim.note(format!("crash node {victim}, restart at {at} ms"));
                    sim.crash(victim).await;
                    down.push((victim, at));
                }
            }
            4 => {
                let delay = (between(1, 5), between(5, 60));
                let loss = below(150) as u32;
                sim.note(format!("links {delay:?} ms, loss {loss}/1000"));
                sim.net.set_links(delay, loss);
            }
            5 => {
                let dn = DATANODES[below(3) as usize];
                sim.note(format!("isolate datanode {dn}"));
                sim.net.partition(&[dn], &NODES);
            }
            6 => {
                // A datanode that hangs: its stream stays open, it sends nothing.
                let i = below(3) as usize;
                sim.note(format!("pause datanode {}", DATANODES[i]));
                if let Some((_, Some(heartbeat))) = sim.datanodes.lock().unwrap().get(i) {
                    heartbeat.pause();
                }
            }
            7 => {
                // A datanode that dies, and comes back (as a new process) a little or a long
                // while later: after its regions failed over, or before.
                let i = below(3) as usize;
                let at = now + between(300, 5_000);
                if sim.kill_datanode(i).await {
                    sim.note(format!(
                        "kill datanode {}, restart at {at} ms",
                        DATANODES[i]
                    ));
                    down_datanodes.push((i, at));
                }
            }
            _ => {
                sim.note("heal".into());
                sim.net.heal();
                sim.net.set_links((1, 5), 0);
                sim.resume_datanodes();
            }
        }
    }
    sim.note("heal all".into());
    sim.net.heal();
    sim.net.set_links((1, 5), 0);
    sim.resume_datanodes();
    for (id, _) in down {
        sim.note(format!("restart node {id}"));
        sim.start_node(id, false).await;
    }
    for (i, _) in down_datanodes {
        sim.note(format!("restart datanode {}", DATANODES[i]));
        sim.restart_datanode(i);
    }
}

/// A key as a node stores it: key, value, modification revision.
type StoredKey = (Vec<u8>, Vec<u8>, i64);

/// Waits (bounded) until every node applied the same index, then compares their keys.
async fn check_convergence(sim: &Sim) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..200 {
        sleep(Duration::from_millis(50)).await;
        let nodes: Vec<Arc<Node>> = sim.nodes.lock().unwrap().values().cloned().collect();
        let states: Vec<(u64, Vec<StoredKey>)> = nodes
            .iter()
            .map(|n| {
                let all = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    serializable: true,
                    ..Default::default()
                };
                let s = n.sm.read();
                let kvs = s.kv.range(&all).map(|r| r.kvs).unwrap_or_default();
                let applied = s.last_applied.map_or(0, |l| l.index);
                let kvs = kvs
                    .into_iter()
                    .map(|kv| (kv.key, kv.value, kv.mod_revision))
                    .collect();
                (applied, kvs)
            })
            .collect();
        if states.len() == NODES.len() && states.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        last = format!(
            "applied indexes {:?}",
            states.iter().map(|s| s.0).collect::<Vec<_>>()
        );
    }
    Err(format!("nodes did not converge after healing: {last}"))
}

/// Waits (bounded) until the datanodes hold exactly what the stored routes give them and no
/// procedure runs, then checks the DDL client's acknowledged outcomes. Returns how many region
/// migrations (failovers) finished.
async fn check_datanodes(sim: &Sim) -> Result<usize, String> {
    let mut last = String::new();
    for _ in 0..300 {
        sleep(Duration::from_millis(50)).await;
        match datanodes_agree(sim) {
            Ok((node, migrated)) => return check_ddl_outcomes(sim, &node).await.map(|()| migrated),
            Err(why) => last = why,
        }
    }
    Err(format!("datanodes did not settle after healing: {last}"))
}

fn decoded<T: serde::de::DeserializeOwned>(
    kv: &cairn_proto::mvccpb::KeyValue,
) -> Result<T, tonic::Status> {
    cairn_meta::codec::decode(&kv.key, &kv.value)
        .map_err(|e| tonic::Status::internal(e.to_string()))
}

/// The leader, if the datanodes hold what its routes say and none of its procedures runs, and
/// the region migrations it finished.
fn datanodes_agree(sim: &Sim) -> Result<(Arc<Node>, usize), String> {
    let node = sim
        .leader()
        .and_then(|id| lookup(&sim.nodes, id))
        .ok_or("no leader")?;
    let mut running = Vec::new();
    let mut migrated = 0;
    scan_all(&node, &layout().procedures_prefix(), |kv| {
        let p: ProcedureRecord = decoded(&kv)?;
        if p.kind == "migrate_region" && p.state == ProcedureState::Done {
            migrated += 1;
        }
        if p.state == ProcedureState::Running {
            running.push(format!(
                "{} {} at {} after {} attempts (last error: {:?})",
                p.kind, p.target, p.step, p.attempts, p.last_error
            ));
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if !running.is_empty() {
        return Err(format!("procedures still running: {running:?}"));
    }
    // Node → region → role, by the stored routes.
    let mut routed: BTreeMap<u64, BTreeMap<u64, RegionRole>> = BTreeMap::new();
    scan_all(&node, &layout().routes_prefix(), |kv| {
        let route: TableRoute = decoded(&kv)?;
        for r in &route.regions {
            let on = routed.entry(r.leader_node).or_default();
            on.insert(r.region_id, RegionRole::Leader);
            for f in &r.follower_nodes {
                routed
                    .entry(*f)
                    .or_default()
                    .insert(r.region_id, RegionRole::Follower);
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    for (dn, _) in sim.datanodes.lock().unwrap().iter() {
        let held: BTreeMap<u64, RegionRole> = dn.held_regions().into_iter().collect();
        let want = routed.remove(&dn.id()).unwrap_or_default();
        if held != want {
            return Err(format!(
                "datanode {} holds {held:?}, the routes give it {want:?}",
                dn.id()
            ));
        }
        // Every region it leads is writable: the leader keeps its lease renewed.
        let unleased: Vec<u64> = want
            .iter()
            .filter(|(r, role)| **role == RegionRole::Leader && !dn.leases().is_valid_now(**r))
            .map(|(r, _)| *r)
            .collect();
        if !unleased.is_empty() {
            return Err(format!(
                "datanode {} leads {unleased:?} without a valid lease",
                dn.id()
            ));
        }
    }
    if let Some((n, regions)) = routed.into_iter().next() {
        return Err(format!(
            "routes place {regions:?} on node {n}, not a datanode"
        ));
    }
    Ok((node, migrated))
}

/// A table whose every create and drop was acknowledged exists exactly when the last was a
/// create. (A request whose outcome is unknown may take effect at any later moment, so tables
/// with one are not judged.)
async fn check_ddl_outcomes(sim: &Sim, node: &Node) -> Result<(), String> {
    let request = ListTablesRequest {
        schema: WriteLoadConfig::default().database,
        page_size: 100,
        serializable: true,
        ..Default::default()
    };
    let listed = cairn_server::api::meta::read::list_tables(node, &request)
        .await
        .map_err(|e| format!("listing tables: {e}"))?;
    let tables: BTreeSet<String> = listed
        .tables
        .into_iter()
        .filter_map(|t| t.name.map(|n| n.name))
        .collect();
    let ops = sim.ddl.lock().unwrap().clone();
    for t in 0..DDL_TABLES {
        let on_t: Vec<&DdlOp> = ops.iter().filter(|o| o.table == t).collect();
        let Some(last) = on_t.last() else {
            continue;
        };
        if on_t.iter().any(|o| !o.acknowledged) {
            continue;
        }
        let exists = tables.contains(&format!("sim_{t}"));
        if exists != last.create {
            return Err(format!(
                "table sim_{t}: last acknowledged {} but it {}",
                if last.create { "create" } else { "drop" },
                if exists { "exists" } else { "does not exist" }
            ));
        }
    }
    Ok(())
}

/// Every few simulated milliseconds until `until_ms`: no two datanodes may write one region at
/// the same instant (both leading it with a valid lease). The first violation is kept.
async fn watch_region_leases(sim: Arc<Sim>, until_ms: u64) {
    while sim.now_ms() < until_ms {
        sleep(Duration::from_millis(LEASE_CHECK_EVERY_MS)).await;
        let mut writers: BTreeMap<u64, Vec<(u64, u128)>> = BTreeMap::new();
        let now = tokio::time::Instant::now();
        for (dn, _) in sim.datanodes.lock().unwrap().iter() {
            for (region, role) in dn.held_regions() {
                if role != RegionRole::Leader {
                    continue;
                }
                if let Some(until) = dn.leases().valid_until(region, now) {
                    let left_ms = (until - now).as_millis();
                    writers.entry(region).or_default().push((dn.id(), left_ms));
                }
            }
        }
        if let Some((region, nodes)) = writers.into_iter().find(|(_, n)| n.len() > 1) {
            let mut v = sim.lease_violation.lock().unwrap();
            if v.is_none() {
                // What the leader's routes say, for the one replaying the seed.
                let route = sim
                    .leader()
                    .and_then(|id| lookup(&sim.nodes, id))
                    .and_then(|n| {
                        let key = layout().route(cairn_meta::route::table_id_of(region));
                        cairn_server::replica::meta::store::get::<TableRoute>(&n, &key).ok()?
                    })
                    .and_then(|r| r.value.region(region).cloned());
                *v = Some(format!(
                    "at {} ms datanodes (id, lease ms left) {nodes:?} could all write region \
                     {region}; the leader's route: {route:?}",
                    sim.now_ms()
                ));
            }
        }
    }
}

/// Two different clients must never have believed they held the lock at the same moment.
fn check_lock_exclusive(holdings: &[Holding]) -> Result<(), String> {
    let mut sorted = holdings.to_vec();
    sorted.sort_by_key(|h| (h.from_ms, h.until_ms));
    for pair in sorted.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.from_ms < a.until_ms {
            return Err(format!(
                "clients {} and {} both held the lock: {a:?} and {b:?}",
                a.client, b.client
            ));
        }
    }
    Ok(())
}

/// What one seed's run produced.
struct Outcome {
    ops: Vec<Op>,
    /// DDL requests the DDL client made.
    ddl: Vec<DdlOp>,
    /// What the datanodes hold against the stored routes, after healing.
    /// Region migrations finished, if the datanodes agree with the routes after healing.
    datanodes: Result<usize, String>,
    holdings: Vec<Holding>,
    trace: Vec<String>,
    converged: Result<(), String>,
    /// The highest Raft term any node had once the first leader was elected, and at the end.
    terms: (u64, u64),
}

/// What a run does to the cluster.
#[derive(Clone, Copy)]
struct Plan {
    /// Partitions, lossy links, crashes (the nemesis); none when false.
    faults: bool,
    /// Every node's disk takes this long (ms, a range) to flush.
    flush_delay_ms: (u64, u64),
}

const FAULTS: Plan = Plan {
    faults: true,
    flush_delay_ms: (0, 0),
};

fn highest_term(sim: &Sim) -> u64 {
    let nodes = sim.nodes.lock().unwrap();
    nodes.values().map(|n| n.term()).max().unwrap_or(0)
}

async fn simulate(seed: u64, plan: Plan) -> Outcome {
    // tokio's timer counts whole milliseconds from an instant taken just before the clock was
    // paused; until the clock first moves, "now" sits a few real nanoseconds off that grid, and
    // a deadline with a fraction of a millisecond (openraft draws some) could round to either
    // side. One sleep puts "now" on the grid, and every later instant stays on it.
    sleep(Duration::from_millis(1)).await;
    seed_thread_rng(seed);
    let sim = Sim::new(seed);
    for log in sim.logs.values() {
        log.set_flush_delay_ms(plan.flush_delay_ms.0, plan.flush_delay_ms.1);
    }
    for id in NODES {
        sim.start_node(id, true).await;
    }
    while sim.leader().is_none() {
        sleep(Duration::from_millis(10)).await;
    }
    let first_term = highest_term(&sim);
    let end_ms = FAULT_PHASE_MS + HEALED_PHASE_MS;
    sim.start_datanodes(seed);
    let mut tasks = vec![
        tokio::spawn(ddl_client(sim.clone(), end_ms)),
        tokio::spawn(watch_region_leases(sim.clone(), end_ms)),
    ];
    for c in 0..KV_CLIENTS {
        tasks.push(tokio::spawn(kv_client(sim.clone(), c, end_ms)));
    }
    for c in 0..LOCK_CLIENTS {
        tasks.push(tokio::spawn(lock_client(sim.clone(), c, end_ms)));
    }
    if plan.faults {
        nemesis(sim.clone(), FAULT_PHASE_MS).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let converged = check_convergence(&sim).await;
    let violation = sim.lease_violation.lock().unwrap().clone();
    let datanodes = match violation {
        Some(v) => Err(v),
        None => check_datanodes(&sim).await,
    };
    let terms = (first_term, highest_term(&sim));
    sim.stop_datanodes().await;
    sim.stop_all().await;
    let ops = sim.history.lock().unwrap().clone();
    let ddl = sim.ddl.lock().unwrap().clone();
    let holdings = sim.holdings.lock().unwrap().clone();
    let trace = sim.trace.lock().unwrap().clone();
    Outcome {
        ops,
        ddl,
        datanodes,
        holdings,
        trace,
        converged,
        terms,
    }
}

/// Runs one seed on a runtime of its own: one thread, paused clock.
fn run_seed(seed: u64, plan: Plan) -> Outcome {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time().start_paused(true);
    // tokio's own generator orders the wake-ups of watch receivers (and select! branches): seeded
    // too, a seed replays exactly. It needs `--cfg tokio_unstable` (set in .cargo/config.toml).
    #[cfg(tokio_unstable)]
    builder.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let rt = builder.build().expect("runtime");
    rt.block_on(simulate(seed, plan))
}

/// Everything that is wrong with a run.
fn verdict(outcome: &Outcome) -> Result<(), String> {
    outcome.converged.clone()?;
    outcome.datanodes.clone()?;
    check_lock_exclusive(&outcome.holdings)?;
    match check_history(&outcome.ops, SEARCH_STEPS_PER_KEY_MAX) {
        Verdict::Linearizable => Ok(()),
        Verdict::NotLinearizable { key, explanation } => {
            Err(format!("history of {key} not linearizable:\n{explanation}"))
        }
        Verdict::Unknown { key, steps } => Err(format!(
            "linearizability of {key} undecided after {steps} steps"
        )),
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn seeded_runs_stay_linearizable_with_exclusive_locks() {
    let replaying = env_u64("CAIRN_SIM_SEED").is_some();
    if replaying && std::env::var_os("RUST_LOG").is_some() {
        // A replayed seed can show the nodes' own logs too: RUST_LOG=cairn_server=debug.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let seeds: Vec<u64> = match env_u64("CAIRN_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = env_u64("CAIRN_SIM_SEED_BASE").unwrap_or(1);
            let count = env_u64("CAIRN_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
            (base..base + count).collect()
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = Mutex::new(seeds.clone().into_iter());
    let failures: Mutex<Vec<(u64, String, Vec<String>)>> = Mutex::default();
    // ops, holdings, seeds, DDL acks, region migrations
    let totals = Mutex::new((0usize, 0usize, 0usize, 0usize, 0usize));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let Some(seed) = next.lock().unwrap().next() else {
                    return;
                };
                let outcome = run_seed(seed, FAULTS);
                if replaying {
                    println!("seed {seed} faults:\n  {}", outcome.trace.join("\n  "));
                }
                {
                    let mut t = totals.lock().unwrap();
                    t.0 += outcome.ops.len();
                    t.1 += outcome.holdings.len();
                    t.2 += 1;
                    t.3 += outcome.ddl.iter().filter(|d| d.acknowledged).count();
                    t.4 += outcome.datanodes.as_ref().map_or(0, |m| *m);
                }
                if let Err(why) = verdict(&outcome) {
                    failures.lock().unwrap().push((seed, why, outcome.trace));
                }
            });
        }
    });
    let (ops, holdings, runs, ddl, migrated) = *totals.lock().unwrap();
    println!(
        "simulation: {runs} seeds from {}, {ops} KV operations, {holdings} lock holdings, \
         {ddl} acknowledged DDL requests, {migrated} region failovers",
        seeds.first().copied().unwrap_or(0)
    );
    let failures = failures.into_inner().unwrap();
    for (seed, why, trace) in &failures {
        eprintln!(
            "seed {seed} FAILED: {why}\nfaults:\n  {}",
            trace.join("\n  ")
        );
        eprintln!(
            "replay: CAIRN_SIM_SEED={seed} cargo test --release -p cairn --test simulation -- --nocapture"
        );
    }
    assert!(failures.is_empty(), "{} seeds failed", failures.len());
}

/// A seed runs the same way twice, down to every operation's timing: what makes a failing seed
/// worth printing.
#[cfg(tokio_unstable)]
#[test]
fn a_seed_replays_exactly() {
    let lines = |o: &Outcome| {
        let mut l: Vec<String> = o.trace.clone();
        l.extend(o.ops.iter().map(|op| format!("{op:?}")));
        l.extend(o.holdings.iter().map(|h| format!("{h:?}")));
        l.extend(o.ddl.iter().map(|d| format!("{d:?}")));
        l
    };
    for seed in [3, 4242] {
        let first = lines(&run_seed(seed, FAULTS));
        let again = lines(&run_seed(seed, FAULTS));
        assert!(first.len() > 100, "seed {seed}: the clients did nothing");
        let parted = (0..first.len().max(again.len())).find(|i| first.get(*i) != again.get(*i));
        if let Some(i) = parted {
            panic!(
                "seed {seed} ran differently twice, from line {i}:\n  {:?}\n  {:?}",
                first.get(i),
                again.get(i)
            );
        }
    }
}

/// Heartbeats and AppendEntries keep their deadlines when fsync is slow (up to 50 ms, several
/// times a healthy disk's): with no network fault, no follower starts an election, and the
/// history stays linearizable.
#[test]
fn slow_disks_cause_no_leader_change() {
    let plan = Plan {
        faults: false,
        flush_delay_ms: (1, 50),
    };
    for seed in 1..=10 {
        let outcome = run_seed(seed, plan);
        assert!(
            !outcome.ops.is_empty(),
            "seed {seed}: the clients did nothing"
        );
        if let Err(why) = verdict(&outcome) {
            panic!("seed {seed} with slow disks: {why}");
        }
        let (first, last) = outcome.terms;
        assert_eq!(
            first, last,
            "seed {seed}: leadership changed (term {first} -> {last}) with slow disks and no fault"
        );
    }
}

#[test]
fn the_lock_check_catches_overlapping_holders() {
    let ok = [
        Holding {
            client: 1,
            from_ms: 0,
            until_ms: 10,
        },
        Holding {
            client: 2,
            from_ms: 10,
            until_ms: 20,
        },
    ];
    assert!(check_lock_exclusive(&ok).is_ok());
    let overlapping = [
        ok[0].clone(),
        Holding {
            client: 2,
            from_ms: 9,
            until_ms: 20,
        },
    ];
    assert!(check_lock_exclusive(&overlapping).is_err());
}
