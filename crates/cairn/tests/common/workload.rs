//! The register workload of the fault tests, and the verdict on what it recorded.
//!
//! Writer tasks each own a few keys and put unique values (`w<writer>-<seq>`) one at a time,
//! starting on different nodes and moving to the next node after an error; reader tasks do
//! linearizable gets of random keys, each op on the next node. Every operation is recorded with
//! its invoke and complete instants; an error or timeout makes a write's outcome unknown. After
//! the faults, `verify` reads every key from every node and then demands that (1) each key still
//! holds its last acknowledged value or a value whose write had an unknown outcome, and (2) the
//! whole history, final reads included, is linearizable per key.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{PutRequest, RangeRequest};
use rand::Rng;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::linearizability::{
    check_history, Action, HistoryRecorder, Op, Verdict, SEARCH_STEPS_PER_KEY_MAX,
};
use super::{TestCluster, POLL_INTERVAL, RPC_TIMEOUT};

/// Pause after a failed op, so a client does not spin against a dead node.
const ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// How long a final read may keep retrying on one node before the node is declared unable to serve.
const FINAL_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest error text kept per kind in the tally.
const ERROR_TEXT_CHARS_MAX: usize = 120;
/// How long stopped tasks may take to finish their last op.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WorkloadConfig {
    pub key_prefix: String,
    pub writers: usize,
    pub keys_per_writer: usize,
    pub readers: usize,
    /// Upper bound on the ops of each task, so the run is bounded even if stop never comes.
    pub ops_per_task_max: u64,
}

pub struct RegisterWorkload {
    keys: Vec<String>,
    recorder: Arc<HistoryRecorder>,
    stop: Arc<AtomicBool>,
    acked_writes: Arc<AtomicU64>,
    errors: Arc<ErrorTally>,
    tasks: Vec<JoinHandle<()>>,
}

/// Client-side errors by kind, for the report: they tell what clients went through.
#[derive(Default)]
pub struct ErrorTally {
    counts: Mutex<BTreeMap<String, ErrorCount>>,
}

/// How often an error happened and when (ms since the workload started), first and last.
#[derive(Clone, Debug)]
pub struct ErrorCount {
    pub count: usize,
    pub first_ms: u64,
    pub last_ms: u64,
}

impl ErrorTally {
    fn note(&self, at_ns: u64, what: &str, node: usize, error: &str) {
        let mut error: String = error.chars().take(ERROR_TEXT_CHARS_MAX).collect();
        error.retain(|c| c != '\n');
        let key = format!("{what} via node {}: {error}", node + 1);
        let at_ms = at_ns / 1_000_000;
        let mut counts = self.counts.lock().expect("tally lock");
        let entry = counts.entry(key).or_insert(ErrorCount {
            count: 0,
            first_ms: at_ms,
            last_ms: at_ms,
        });
        entry.count += 1;
        entry.last_ms = at_ms;
    }

    fn counts(&self) -> BTreeMap<String, ErrorCount> {
        self.counts.lock().expect("tally lock").clone()
    }
}

fn describe_error(
    result: &Result<Result<impl Sized, tonic::Status>, tokio::time::error::Elapsed>,
) -> String {
    match result {
        Ok(Ok(_)) => String::new(),
        Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
        Err(_) => format!("no answer within {RPC_TIMEOUT:?}"),
    }
}

/// Counts for the test's report.
#[derive(Debug)]
pub struct Summary {
    pub acked_writes: usize,
    pub unknown_writes: usize,
    pub reads: usize,
    pub keys: usize,
    /// Client errors by kind and count.
    pub errors: BTreeMap<String, ErrorCount>,
}

impl RegisterWorkload {
    pub fn start(cluster: &TestCluster, config: &WorkloadConfig) -> RegisterWorkload {
        let clients: Vec<KvClient<Channel>> = (0..cluster.size()).map(|i| cluster.kv(i)).collect();
        let recorder = Arc::new(HistoryRecorder::new());
        let stop = Arc::new(AtomicBool::new(false));
        let acked_writes = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(ErrorTally::default());
        let mut keys = Vec::new();
        let mut tasks = Vec::new();
        for w in 0..config.writers {
            let own: Vec<String> = (0..config.keys_per_writer)
                .map(|k| format!("{}/w{w}/k{k}", config.key_prefix))
                .collect();
            keys.extend(own.iter().cloned());
            let writer = Writer {
                id: w,
                keys: own,
                clients: clients.clone(),
                recorder: recorder.clone(),
                stop: stop.clone(),
                acked_writes: acked_writes.clone(),
                errors: errors.clone(),
            };
            tasks.push(tokio::spawn(writer.run(config.ops_per_task_max)));
        }
        for r in 0..config.readers {
            let reader = Reader {
                id: r,
                keys: keys.clone(),
                clients: clients.clone(),
                recorder: recorder.clone(),
                stop: stop.clone(),
                errors: errors.clone(),
            };
            tasks.push(tokio::spawn(reader.run(config.ops_per_task_max)));
        }
        RegisterWorkload {
            keys,
            recorder,
            stop,
            acked_writes,
            errors,
            tasks,
        }
    }

    /// Milliseconds since the workload started, to line up test events with the error tally.
    pub fn elapsed_ms(&self) -> u64 {
        self.recorder.now_ns() / 1_000_000
    }

    pub fn acked_writes(&self) -> u64 {
        self.acked_writes.load(Ordering::Relaxed)
    }

    /// Waits until `more` writes beyond the current count are acknowledged: the cluster is live.
    pub async fn wait_for_progress(&self, more: u64, timeout: Duration) -> Result<(), String> {
        let target = self.acked_writes() + more;
        let deadline = Instant::now() + timeout;
        while self.acked_writes() < target {
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {target} acknowledged writes after waiting {timeout:?}",
                    self.acked_writes()
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        Ok(())
    }

    /// Stops the clients and waits (bounded) for their last ops.
    pub async fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks.drain(..) {
            match tokio::time::timeout(STOP_TIMEOUT, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("a workload task failed: {e}"),
                Err(_) => panic!("a workload task did not stop within {STOP_TIMEOUT:?}"),
            }
        }
    }

    /// Reads every key from every node, then checks that no acknowledged write was lost and that
    /// the history is linearizable. Call after `stop`.
    pub async fn verify(&self, cluster: &TestCluster) -> Result<Summary, String> {
        assert!(self.tasks.is_empty(), "verify after stop");
        let mut final_reads = Vec::new();
        for key in &self.keys {
            for node in 0..cluster.size() {
                let op = final_read(cluster, node, key, &self.recorder).await?;
                final_reads.push((node, op));
            }
        }
        let ops = self.recorder.ops();
        check_no_acked_write_lost(&ops, &final_reads)?;
        let mut summary = summarize(&ops, self.keys.len());
        summary.errors = self.errors.counts();
        let verdict =
            tokio::task::spawn_blocking(move || check_history(&ops, SEARCH_STEPS_PER_KEY_MAX))
                .await
                .expect("checker thread");
        match verdict {
            Verdict::Linearizable => Ok(summary),
            Verdict::NotLinearizable { key, explanation } => Err(format!(
                "history not linearizable on key {key}: {explanation}"
            )),
            Verdict::Unknown { key, steps } => Err(format!(
                "linearizability undecided on key {key}: search budget of {steps} steps exhausted \
                 ({summary:?}); the history is too concurrent for the checker"
            )),
        }
    }
}

impl Drop for RegisterWorkload {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Writer {
    id: usize,
    keys: Vec<String>,
    clients: Vec<KvClient<Channel>>,
    recorder: Arc<HistoryRecorder>,
    stop: Arc<AtomicBool>,
    acked_writes: Arc<AtomicU64>,
    errors: Arc<ErrorTally>,
}

impl Writer {
    async fn run(self, ops_max: u64) {
        let mut node = self.id % self.clients.len();
        for seq in 0..ops_max {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let key = self.keys[seq as usize % self.keys.len()].clone();
            let value = format!("w{}-{seq}", self.id);
            let request = PutRequest {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
                ..Default::default()
            };
            let mut client = self.clients[node].clone();
            let invoke_ns = self.recorder.now_ns();
            let result = tokio::time::timeout(RPC_TIMEOUT, client.put(request)).await;
            // Any error may hide a write that was applied: only a success is a known outcome.
            let complete_ns = matches!(result, Ok(Ok(_))).then(|| self.recorder.now_ns());
            let result = result.map(|r| r.map(drop));
            self.recorder.record(Op {
                key,
                action: Action::Write { value },
                invoke_ns,
                complete_ns,
            });
            if complete_ns.is_some() {
                self.acked_writes.fetch_add(1, Ordering::Relaxed);
            } else {
                self.errors
                    .note(invoke_ns, "put", node, &describe_error(&result));
                node = (node + 1) % self.clients.len();
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

struct Reader {
    id: usize,
    keys: Vec<String>,
    clients: Vec<KvClient<Channel>>,
    recorder: Arc<HistoryRecorder>,
    stop: Arc<AtomicBool>,
    errors: Arc<ErrorTally>,
}

impl Reader {
    async fn run(self, ops_max: u64) {
        for i in 0..ops_max {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let key = self.keys[rand::rng().random_range(0..self.keys.len())].clone();
            let node = (self.id + i as usize) % self.clients.len();
            if let Err(e) = read(&self.clients[node], &key, &self.recorder).await {
                self.errors.note(self.recorder.now_ns(), "get", node, &e);
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
    }
}

/// One linearizable get, recorded when it succeeds (a failed read observed nothing).
async fn read(
    client: &KvClient<Channel>,
    key: &str,
    recorder: &HistoryRecorder,
) -> Result<Op, String> {
    let mut client = client.clone();
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        serializable: false,
        ..Default::default()
    };
    let invoke_ns = recorder.now_ns();
    let response = match tokio::time::timeout(RPC_TIMEOUT, client.range(request)).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => return Err(format!("{:?}: {}", status.code(), status.message())),
        Err(_) => return Err(format!("no answer within {RPC_TIMEOUT:?}")),
    };
    let complete_ns = recorder.now_ns();
    let observed = response
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    let op = Op {
        key: key.to_string(),
        action: Action::Read { observed },
        invoke_ns,
        complete_ns: Some(complete_ns),
    };
    recorder.record(op.clone());
    Ok(op)
}

async fn final_read(
    cluster: &TestCluster,
    node: usize,
    key: &str,
    recorder: &HistoryRecorder,
) -> Result<Op, String> {
    let client = cluster.kv(node);
    let deadline = Instant::now() + FINAL_READ_TIMEOUT;
    loop {
        match read(&client, key, recorder).await {
            Ok(op) => return Ok(op),
            Err(e) if Instant::now() > deadline => {
                return Err(format!(
                    "node {} cannot serve a linearizable read of {key} after {FINAL_READ_TIMEOUT:?}: {e}",
                    node + 1
                ))
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Each final read must see the key's last acknowledged value or a value whose write has an
/// unknown outcome (such a write may still be applied late); anything else lost an acked write.
fn check_no_acked_write_lost(ops: &[Op], final_reads: &[(usize, Op)]) -> Result<(), String> {
    let mut last_acked: HashMap<&str, &Op> = HashMap::new();
    let mut unknown: HashMap<&str, Vec<&str>> = HashMap::new();
    for op in ops {
        let Action::Write { value } = &op.action else {
            continue;
        };
        match op.complete_ns {
            Some(_) => {
                let slot = last_acked.entry(op.key.as_str()).or_insert(op);
                if op.invoke_ns > slot.invoke_ns {
                    *slot = op;
                }
            }
            None => unknown.entry(op.key.as_str()).or_default().push(value),
        }
    }
    for (node, read) in final_reads {
        let Action::Read { observed } = &read.action else {
            unreachable!("final ops are reads")
        };
        let key = read.key.as_str();
        let acked = last_acked.get(key).map(|op| match &op.action {
            Action::Write { value } => value.as_str(),
            Action::Read { .. } => unreachable!(),
        });
        let fine = match observed.as_deref() {
            None => acked.is_none(),
            Some(v) => acked == Some(v) || unknown.get(key).is_some_and(|u| u.contains(&v)),
        };
        if !fine {
            return Err(format!(
                "acknowledged write lost: node {} reads {key} = {observed:?}, but the last acknowledged \
                 write set {acked:?} and the unknown-outcome writes were {:?}",
                node + 1,
                unknown.get(key).cloned().unwrap_or_default()
            ));
        }
    }
    Ok(())
}

fn summarize(ops: &[Op], keys: usize) -> Summary {
    let is_write = |op: &&Op| matches!(op.action, Action::Write { .. });
    Summary {
        acked_writes: ops
            .iter()
            .filter(is_write)
            .filter(|op| op.complete_ns.is_some())
            .count(),
        unknown_writes: ops
            .iter()
            .filter(is_write)
            .filter(|op| op.complete_ns.is_none())
            .count(),
        reads: ops.iter().filter(|op| !is_write(op)).count(),
        keys,
        errors: BTreeMap::new(),
    }
}
