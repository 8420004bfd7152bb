//! In-process Cairn clusters for tests: every node runs `cairn_server::run` on 127.0.0.1 with
//! ports picked at run time and data in a temporary directory; dropping the cluster stops them.

#![allow(dead_code)]

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest, StatusRequest};
use cairn_server::node::Node;
use cairn_server::ServerConfig;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Upper bound on waiting for a cluster condition.
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// A port the kernel reports free that this test process has not handed out before: tests run
/// in parallel, and a port released here could otherwise be handed to two nodes before either
/// binds it.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut used = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if !used.contains(&port) {
            used.push(port);
            return port;
        }
    }
}

pub struct TestNode {
    pub config: ServerConfig,
    /// The running node, once started (for driving leader services such as the mailbox).
    node: Arc<OnceLock<Arc<Node>>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl TestNode {
    pub fn client_addr(&self) -> String {
        self.config.listen_client.clone()
    }

    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// The in-process node; waits until it has started.
    pub async fn node(&self) -> Arc<Node> {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Some(n) = self.node.get() {
                return n.clone();
            }
            assert!(Instant::now() < deadline, "node never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A minimal HTTP/1.1 GET on this node's HTTP port; returns status code and body.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        let addr = &self.config.listen_http;
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect http");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        tokio::time::timeout(WAIT_MAX, stream.read_to_end(&mut response))
            .await
            .expect("http timeout")
            .expect("read");
        let response = String::from_utf8_lossy(&response).into_owned();
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .expect("status code");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<TestNode>,
}

/// A config for node `id` with fresh ports, tuned for fast tests.
pub fn node_config(dir: &std::path::Path, id: u64) -> ServerConfig {
    ServerConfig {
        node_id: id,
        data_dir: dir.join(id.to_string()),
        listen_client: format!("127.0.0.1:{}", free_port()),
        listen_peer: format!("127.0.0.1:{}", free_port()),
        listen_http: format!("127.0.0.1:{}", free_port()),
        heartbeat_interval_ms: 50,
        election_timeout_ms: 300,
        ..Default::default()
    }
}

impl TestCluster {
    /// Starts `n` voters and waits until every node sees the same leader.
    pub async fn start(n: u64, tweak: impl Fn(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut configs: Vec<ServerConfig> = (1..=n).map(|i| node_config(dir.path(), i)).collect();
        let initial: Vec<(u64, String)> = configs
            .iter()
            .map(|c| (c.node_id, c.listen_peer.clone()))
            .collect();
        for c in configs.iter_mut() {
            c.initial_cluster = initial.clone();
            tweak(c);
        }
        let mut cluster = TestCluster {
            dir,
            nodes: Vec::new(),
        };
        for c in configs {
            cluster.nodes.push(spawn_node(c));
        }
        cluster.wait_leader().await;
        cluster
    }

    /// Adds a node that joins through `via`'s client endpoint.
    pub fn join(&mut self, id_hint: u64, via: usize, tweak: impl Fn(&mut ServerConfig)) -> usize {
        let mut c = node_config(self.dir.path(), id_hint);
        c.join = Some(self.nodes[via].client_addr());
        tweak(&mut c);
        self.nodes.push(spawn_node(c));
        self.nodes.len() - 1
    }

    /// Starts a node from a prepared config (e.g. one whose peer address was registered first).
    pub fn start_node(&mut self, config: ServerConfig) -> usize {
        self.nodes.push(spawn_node(config));
        self.nodes.len() - 1
    }

    pub async fn stop(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(tx) = node.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = node.task.take() {
            let _ = tokio::time::timeout(WAIT_MAX, t).await;
        }
    }

    pub fn restart(&mut self, i: usize) {
        assert!(!self.nodes[i].is_running());
        let c = self.nodes[i].config.clone();
        self.nodes[i] = spawn_node(c);
    }

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(channel(&self.nodes[i].client_addr()).await)
    }

    pub async fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(channel(&self.nodes[i].client_addr()).await)
    }

    /// Waits until every running node reports the same leader, itself running; returns its id.
    pub async fn wait_leader(&self) -> u64 {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let mut leaders = Vec::new();
            for (i, n) in self.nodes.iter().enumerate() {
                if !n.is_running() {
                    continue;
                }
                let mut m = self.maintenance(i).await;
                let l = match m.status(StatusRequest {}).await {
                    Ok(r) => r.into_inner().leader,
                    Err(_) => 0,
                };
                leaders.push(l);
            }
            let running = |id: u64| {
                self.nodes
                    .iter()
                    .any(|n| n.is_running() && n.config.node_id == id)
            };
            if !leaders.is_empty()
                && running(leaders[0])
                && leaders.iter().all(|l| *l == leaders[0])
            {
                return leaders[0];
            }
            assert!(Instant::now() < deadline, "no agreed leader: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index into `nodes` of the node with the given id.
    pub fn index_of(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.config.node_id == id)
            .expect("node id")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut() {
            if let Some(tx) = n.stop.take() {
                let _ = tx.send(());
            }
            if let Some(t) = n.task.take() {
                t.abort();
            }
        }
    }
}

fn spawn_node(config: ServerConfig) -> TestNode {
    let (tx, rx) = oneshot::channel();
    let c = config.clone();
    let node = Arc::new(OnceLock::new());
    let slot = node.clone();
    let task = tokio::spawn(async move {
        cairn_server::run_with_node(
            c,
            async move {
                let _ = rx.await;
            },
            move |n| {
                let _ = slot.set(n);
            },
        )
        .await
    });
    TestNode {
        config,
        node,
        stop: Some(tx),
        task: Some(task),
    }
}

pub async fn channel(addr: &str) -> Channel {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot connect to {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    kv.put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .unwrap()
    .revision
}

pub async fn get(kv: &mut KvClient<Channel>, key: &str, serializable: bool) -> Option<String> {
    let r = kv
        .range(RangeRequest {
            key: key.into(),
            serializable,
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}
