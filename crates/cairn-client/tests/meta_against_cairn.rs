//! `MetaClient` against an in-process 3-node Cairn cluster: a node registers and its stats are
//! visible through ListNodes, an instruction from the leader's mailbox round-trips (and one for
//! a region the node does not hold comes back as a failure), and after a leader transfer the
//! node is re-attached to the new leader within two heartbeat intervals.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cairn_client::meta::{InstructionHandler, MetaClient, StatsSource};
use cairn_client::proto::cairnpb::instruction::Kind;
use cairn_client::proto::cairnpb::{
    CloseRegion, FlushRegion, Instruction, NodeIdentity, NodeRole, NodeStats, RegionRole,
    RegionStat,
};
use cairn_client::EtcdClient;
use cairn_server::node::Node;
use cairn_server::ServerConfig;
use tokio::sync::oneshot;

/// The cluster asks nodes to heartbeat this often, so the test runs in seconds.
const NODE_HEARTBEAT_INTERVAL_MS: u64 = 300;
const WAIT_MAX: Duration = Duration::from_secs(30);
const NODE_ID: u64 = 1001;
const REGION_ID: u64 = (2001 << 32) | 1;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    _dir: tempfile::TempDir,
    client_addrs: Vec<String>,
    nodes: Vec<Arc<OnceLock<Arc<Node>>>>,
    _stops: Vec<oneshot::Sender<()>>,
}

async fn start_cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut configs: Vec<ServerConfig> = (1..=3u64)
        .map(|id| ServerConfig {
            node_id: id,
            data_dir: dir.path().join(id.to_string()),
            listen_client: format!("127.0.0.1:{}", free_port()),
            listen_peer: format!("127.0.0.1:{}", free_port()),
            listen_http: format!("127.0.0.1:{}", free_port()),
            heartbeat_interval_ms: 50,
            election_timeout_ms: 300,
            node_heartbeat_interval_ms: NODE_HEARTBEAT_INTERVAL_MS,
            ..Default::default()
        })
        .collect();
    let initial: Vec<(u64, String)> = configs
        .iter()
        .map(|c| (c.node_id, c.listen_peer.clone()))
        .collect();
    let (mut nodes, mut stops, mut client_addrs) = (Vec::new(), Vec::new(), Vec::new());
    for mut config in configs.drain(..) {
        config.initial_cluster = initial.clone();
        client_addrs.push(config.listen_client.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let slot = Arc::new(OnceLock::new());
        let started = Arc::clone(&slot);
        tokio::spawn(cairn_server::run_with_node(
            config,
            async move {
                let _ = stopped.await;
            },
            move |node| {
                let _ = started.set(node);
            },
        ));
        nodes.push(slot);
        stops.push(stop);
    }
    Cluster {
        _dir: dir,
        client_addrs,
        nodes,
        _stops: stops,
    }
}

impl Cluster {
    fn node(&self, id: u64) -> Arc<Node> {
        self.nodes[(id - 1) as usize]
            .get()
            .expect("node started")
            .clone()
    }
}

/// A datanode holding one region; records what it was asked to do.
#[derive(Default)]
struct Datanode {
    handled: Mutex<Vec<u64>>,
}

impl StatsSource for Datanode {
    fn collect(&self, _report_interval_ms: u64) -> (NodeStats, Vec<RegionStat>) {
        let stats = NodeStats {
            rcus: 42,
            region_count: 1,
            table_count: 1,
            ..Default::default()
        };
        let region = RegionStat {
            region_id: REGION_ID,
            role: RegionRole::Leader as i32,
            rcus: 42,
            ..Default::default()
        };
        (stats, vec![region])
    }
}

impl InstructionHandler for Datanode {
    async fn handle(&self, instruction: Instruction) -> Result<(), String> {
        self.handled.lock().unwrap().push(instruction.id);
        match instruction.kind {
            Some(Kind::FlushRegion(f)) if f.region_id == REGION_ID => Ok(()),
            Some(Kind::CloseRegion(c)) => Err(format!("region {} is not held", c.region_id)),
            _ => Err("unexpected instruction".into()),
        }
    }
}

async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datanode_registers_obeys_and_follows_a_leader_change() {
    let cluster = start_cluster().await;
    let etcd = EtcdClient::new(&cluster.client_addrs).unwrap();
    let leader = eventually("a leader", || async {
        etcd.leader_info()
            .await
            .ok()
            .map(|i| i.leader_id)
            .filter(|id| *id != 0)
    })
    .await;

    // Start from a follower only: the client must find the leader from not_leader.
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let meta = MetaClient::new([cluster.client_addrs[(follower - 1) as usize].clone()]).unwrap();
    let datanode = Arc::new(Datanode::default());
    let identity = NodeIdentity {
        id: NODE_ID,
        role: NodeRole::Datanode as i32,
        address: "127.0.0.1:4001".into(),
        version: "test".into(),
        ..Default::default()
    };
    let heartbeat = meta.run_heartbeat(identity, Arc::clone(&datanode), Arc::clone(&datanode));

    let view = eventually("the node alive with its stats", || async {
        let nodes = meta.list_nodes(NODE_ID).await.ok()?;
        let view = nodes.nodes.into_iter().next()?;
        (view.state == "alive" && view.region_count == 1).then_some(view)
    })
    .await;
    assert_eq!(view.stats.unwrap().rcus, 42);
    // The leader lists the node once it has taken its first request, before its answer (which
    // names the interval) has reached the client: wait for the client to have taken an answer.
    eventually("the client to take an answer", || async {
        (heartbeat.status().acknowledged >= 1).then_some(())
    })
    .await;
    assert_eq!(heartbeat.status().interval_ms, NODE_HEARTBEAT_INTERVAL_MS);

    // Instructions round-trip through the leader's mailbox.
    let hub = &cluster.node(leader).heartbeats;
    let timeout = Duration::from_secs(5);
    let flush = Kind::FlushRegion(FlushRegion {
        region_id: REGION_ID,
    });
    let reply = hub.send(NODE_ID, flush, timeout).await.unwrap();
    assert!(reply.ok, "{reply:?}");
    let close = Kind::CloseRegion(CloseRegion { region_id: 99 });
    let reply = hub.send(NODE_ID, close, timeout).await.unwrap();
    assert!(!reply.ok);
    assert!(reply.error.contains("not held"), "{}", reply.error);
    let handled = datanode.handled.lock().unwrap().clone();
    assert_eq!(handled.len(), 2);
    assert_eq!(handled.iter().collect::<HashSet<_>>().len(), 2);

    // Leadership moves; the node follows within two heartbeat intervals of the new leader
    // taking over (plus slack for a loaded test machine).
    let target = (1..=3).find(|id| *id != leader).unwrap();
    etcd.transfer_leader(target).await.unwrap();
    let moved_at = Instant::now();
    let new_leader = eventually("the new leader", || async {
        etcd.leader_info()
            .await
            .ok()
            .map(|i| i.leader_id)
            .filter(|id| *id != 0 && *id != leader)
    })
    .await;
    let new_hub = &cluster.node(new_leader).heartbeats;
    eventually("the node attached to the new leader", || async {
        let views = new_hub.views(NODE_ID, Instant::now());
        let view = views.into_iter().next()?;
        (view.state == "alive" && view.last_heartbeat_age_ms.is_some()).then_some(())
    })
    .await;
    let reattach = moved_at.elapsed();
    assert!(
        reattach <= Duration::from_millis(2 * NODE_HEARTBEAT_INTERVAL_MS + 1_000),
        "re-attached after {reattach:?}"
    );
    let nodes = meta.list_nodes(0).await.unwrap();
    assert_eq!(nodes.leader_id, new_leader);
    assert!(nodes.nodes.iter().all(|n| n.state != "down"));
    heartbeat.stop().await;
}
