//! `cairn bench kv`: concurrent clients doing puts, then linearizable and serializable ranges
//! over the keys put, against any etcd v3 endpoints.
//!
//! Keys are `bench/<n>` with `n < --key-space`; request `i` of a workload uses key
//! `bench/<i mod keys>`, where `keys` is the key space for puts and, for ranges, the number of
//! distinct keys the put workload wrote (or the key space, when no put ran before).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_client::proto::etcdserverpb::kv_client::KvClient;
use cairn_client::proto::etcdserverpb::{PutRequest, RangeRequest};
use cairn_client::{endpoint::normalize_endpoints, lazy_channel, ClientConfig};
use clap::ValueEnum;
use tonic::transport::Channel;

use super::histogram::Histogram;
use super::proc::resident_memory_kib;
use super::report::{self, BenchReport, LatencyMs, ProcessRss, WorkloadReport};
use super::BenchError;
use crate::ctl::output::OutputFormat;

/// Most concurrent clients.
const CLIENTS_MAX: usize = 10_000;
/// Most gRPC connections.
const CONNECTIONS_MAX: usize = 1_024;
/// Connections used when `--connections` is not given, at most.
const CONNECTIONS_DEFAULT_MAX: usize = 16;
/// Largest value, in bytes: below etcd's default 1.5 MiB request limit.
const VALUE_SIZE_BYTES_MAX: usize = 1024 * 1024;
/// Longest run per workload.
const DURATION_SECS_MAX: u64 = 24 * 3600;
/// Largest response a range may return (one key, but keep headroom for big values).
const RESPONSE_BYTES_MAX: usize = 4 * VALUE_SIZE_BYTES_MAX;
/// Longest wait for one request; a request that takes longer counts as an error.
pub(super) const REQUEST_TIMEOUT_MS: u64 = cairn_client::REQUEST_TIMEOUT_MS;

/// Arguments of `cairn bench kv`.
#[derive(Debug, clap::Args)]
pub struct KvBenchArgs {
    #[command(flatten)]
    target: super::Endpoints,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// gRPC connections shared by the clients, spread over the endpoints [default: min(clients, 16)].
    #[arg(long)]
    connections: Option<usize>,
    /// Requests per workload.
    #[arg(long, default_value_t = 10_000)]
    total: u64,
    /// Run each workload for this many seconds instead of --total requests.
    #[arg(long)]
    duration_secs: Option<u64>,
    /// What to run; `all` is put, then both ranges over the keys put.
    #[arg(long, value_enum, default_value_t = WorkloadChoice::All)]
    workload: WorkloadChoice,
    /// Size of each value put, in bytes.
    #[arg(long, default_value_t = 256)]
    value_size: usize,
    /// Distinct keys (bench/0 .. bench/K-1).
    #[arg(long, default_value_t = 10_000)]
    key_space: u64,
    /// Report the resident memory of this process after each workload (e.g. the server's pid);
    /// repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
    /// Send the requests as etcd's JSON gateway (`POST /v3/kv/put|range` over HTTP/1.1, one
    /// keep-alive connection per client) instead of gRPC.
    #[arg(long)]
    gateway: bool,
    /// Authenticate as NAME:PASSWORD first and send the token with every request (gRPC
    /// metadata `token`, or the gateway's `Authorization` header).
    #[arg(long)]
    user: Option<String>,
}

/// `--workload` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WorkloadChoice {
    /// Puts.
    Put,
    /// Linearizable single-key ranges.
    RangeLinearizable,
    /// Serializable single-key ranges.
    RangeSerializable,
    /// Put, then both ranges.
    All,
}

/// One workload to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Workload {
    Put,
    RangeLinearizable,
    RangeSerializable,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::RangeLinearizable => "range-linearizable",
            Workload::RangeSerializable => "range-serializable",
        }
    }
}

impl WorkloadChoice {
    fn workloads(self) -> Vec<Workload> {
        match self {
            WorkloadChoice::Put => vec![Workload::Put],
            WorkloadChoice::RangeLinearizable => vec![Workload::RangeLinearizable],
            WorkloadChoice::RangeSerializable => vec![Workload::RangeSerializable],
            WorkloadChoice::All => vec![
                Workload::Put,
                Workload::RangeLinearizable,
                Workload::RangeSerializable,
            ],
        }
    }
}

/// When a workload ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stop {
    AfterRequests(u64),
    At(Instant),
}

/// What every client of one workload shares.
pub(super) struct Plan {
    pub(super) workload: Workload,
    pub(super) stop: Stop,
    pub(super) keys: u64,
    pub(super) value: Arc<Vec<u8>>,
    pub(super) next_request: AtomicU64,
    /// The auth token to send (`--user`).
    pub(super) token: Option<String>,
    /// `--gateway`: the client ports (`HOST:PORT`) to send JSON to, clients spread over them.
    pub(super) gateway: Option<Vec<String>>,
}

impl Plan {
    /// A gRPC request carrying the token, when there is one.
    fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(v) = self.token.as_ref().and_then(|t| t.parse().ok()) {
            r.metadata_mut().insert("token", v);
        }
        r
    }
}

/// Logs in as `NAME:PASSWORD` (etcd's Auth.Authenticate) and returns the token.
async fn authenticate(channel: &Channel, user: &str) -> Result<String, BenchError> {
    let (name, password) = user
        .split_once(':')
        .ok_or_else(|| BenchError::Usage("--user must be NAME:PASSWORD".into()))?;
    let mut auth = cairn_client::proto::etcdserverpb::auth_client::AuthClient::new(channel.clone());
    auth.authenticate(cairn_client::proto::etcdserverpb::AuthenticateRequest {
        name: name.into(),
        password: password.into(),
    })
    .await
    .map(|r| r.into_inner().token)
    .map_err(|s| BenchError::Endpoint(format!("--user {name}: {}", s.message())))
}

/// What one client measured.
pub(super) struct ClientResult {
    pub(super) latencies: Histogram,
    pub(super) requests: u64,
    pub(super) errors: u64,
    pub(super) first_error: Option<String>,
}

fn validate(args: &KvBenchArgs) -> Result<usize, BenchError> {
    let bad = |msg: String| Err(BenchError::Usage(msg));
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        return bad(format!("--clients must be in 1..={CLIENTS_MAX}"));
    }
    let connections = args
        .connections
        .unwrap_or(args.clients.min(CONNECTIONS_DEFAULT_MAX));
    if connections == 0 || connections > CONNECTIONS_MAX {
        return bad(format!("--connections must be in 1..={CONNECTIONS_MAX}"));
    }
    if args.value_size > VALUE_SIZE_BYTES_MAX {
        return bad(format!(
            "--value-size must be at most {VALUE_SIZE_BYTES_MAX}"
        ));
    }
    if args.key_space == 0 {
        return bad("--key-space must be at least 1".to_string());
    }
    match args.duration_secs {
        Some(secs) if secs == 0 || secs > DURATION_SECS_MAX => bad(format!(
            "--duration-secs must be in 1..={DURATION_SECS_MAX}"
        )),
        None if args.total == 0 => bad("--total must be at least 1".to_string()),
        _ => Ok(connections),
    }
}

pub async fn run(args: KvBenchArgs) -> Result<(), BenchError> {
    let connections = validate(&args)?;
    let endpoints = normalize_endpoints(&args.target.endpoints)
        .map_err(|e| BenchError::Endpoint(format!("--endpoints: {e}")))?;
    let config = ClientConfig::default();
    // Connection j goes to endpoint j mod n, so load spreads evenly over the endpoints.
    let channels = (0..connections)
        .map(|j| lazy_channel(&endpoints[j % endpoints.len()], &config))
        .collect::<Result<Vec<Channel>, _>>()
        .map_err(|e| BenchError::Endpoint(e.to_string()))?;
    let token = match &args.user {
        Some(user) => Some(authenticate(&channels[0], user).await?),
        None => None,
    };
    warm_up(&channels, &endpoints, token.as_deref()).await?;
    let gateway = args.gateway.then(|| {
        endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://").to_string())
            .collect::<Vec<_>>()
    });

    let mut report = BenchReport {
        endpoints,
        clients: args.clients,
        connections,
        total: args.duration_secs.is_none().then_some(args.total),
        duration_secs: args.duration_secs,
        value_size: args.value_size,
        key_space: args.key_space,
        workloads: Vec::new(),
    };
    report::print_preamble(&report, args.output);

    let value = Arc::new(vec![b'v'; args.value_size]);
    let mut keys_written: Option<u64> = None;
    for workload in args.workload.workloads() {
        let keys = match workload {
            Workload::Put => args.key_space,
            _ => keys_written.unwrap_or(args.key_space),
        };
        let stop = match args.duration_secs {
            Some(secs) => Stop::At(Instant::now() + Duration::from_secs(secs)),
            None => Stop::AfterRequests(args.total),
        };
        let plan = Arc::new(Plan {
            workload,
            stop,
            keys,
            value: Arc::clone(&value),
            next_request: AtomicU64::new(0),
            token: token.clone(),
            gateway: gateway.clone(),
        });
        let result = run_workload(&channels, args.clients, plan).await;
        if workload == Workload::Put {
            // Request i wrote bench/(i mod key space): this many distinct keys exist.
            keys_written = Some(result.requests.min(args.key_space).max(1));
        }
        if result.requests > 0 && result.errors == result.requests {
            return Err(BenchError::AllFailed {
                workload: workload.name(),
                first_error: result.first_error.unwrap_or_default(),
            });
        }
        let rss_kib = args
            .pid
            .iter()
            .map(|&pid| ProcessRss {
                pid,
                kib: resident_memory_kib(pid),
            })
            .collect();
        report.workloads.push(WorkloadReport { rss_kib, ..result });
    }
    report::print(&report, args.output)
}

/// Connects every channel before any clock starts, so connection setup is not measured, and
/// fails early with the endpoint's name when one cannot be reached.
async fn warm_up(
    channels: &[Channel],
    endpoints: &[String],
    token: Option<&str>,
) -> Result<(), BenchError> {
    let probes = channels.iter().enumerate().map(|(j, channel)| async move {
        let mut kv = KvClient::new(channel.clone());
        let mut request = tonic::Request::new(RangeRequest {
            key: b"bench/".to_vec(),
            serializable: true,
            count_only: true,
            ..Default::default()
        });
        if let Some(v) = token.and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert("token", v);
        }
        match tokio::time::timeout(Duration::from_millis(REQUEST_TIMEOUT_MS), kv.range(request))
            .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(format!(
                "{}: {:?}: {}",
                endpoints[j % endpoints.len()],
                status.code(),
                status.message()
            )),
            Err(_) => Err(format!(
                "{}: no answer within {REQUEST_TIMEOUT_MS} ms",
                endpoints[j % endpoints.len()]
            )),
        }
    });
    for result in futures::future::join_all(probes).await {
        result.map_err(|e| BenchError::Endpoint(format!("bench kv: cannot reach {e}")))?;
    }
    Ok(())
}

async fn run_workload(channels: &[Channel], clients: usize, plan: Arc<Plan>) -> WorkloadReport {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let kv = KvClient::new(channels[i % channels.len()].clone())
                .max_decoding_message_size(RESPONSE_BYTES_MAX);
            match &plan.gateway {
                Some(ports) => {
                    let port = ports[i % ports.len()].clone();
                    tokio::spawn(super::gateway_client::client_loop(port, Arc::clone(&plan)))
                }
                None => tokio::spawn(client_loop(kv, Arc::clone(&plan))),
            }
        })
        .collect();
    let mut latencies = Histogram::new();
    let (mut requests, mut errors, mut first_error) = (0u64, 0u64, None);
    for task in tasks {
        match task.await {
            Ok(r) => {
                latencies.merge(&r.latencies);
                requests += r.requests;
                errors += r.errors;
                first_error = first_error.or(r.first_error);
            }
            // A panicking client is a bug in the benchmark, not a result to report.
            Err(e) => panic!("bench client task failed: {e}"),
        }
    }
    let elapsed_secs = started.elapsed().as_secs_f64();
    let successes = requests - errors;
    WorkloadReport {
        workload: plan.workload.name(),
        requests,
        errors,
        elapsed_secs,
        throughput_rps: if elapsed_secs > 0.0 {
            successes as f64 / elapsed_secs
        } else {
            0.0
        },
        latency_ms: LatencyMs::from_histogram(&latencies),
        first_error,
        rss_kib: Vec::new(),
    }
}

async fn client_loop(mut kv: KvClient<Channel>, plan: Arc<Plan>) -> ClientResult {
    let mut d = Driver::new(&plan);
    while let Some(key) = d.next_key() {
        let sent = Instant::now();
        let request = async {
            match plan.workload {
                Workload::Put => {
                    let request = plan.request(PutRequest {
                        key,
                        value: plan.value.to_vec(),
                        ..Default::default()
                    });
                    kv.put(request).await.map(drop)
                }
                Workload::RangeLinearizable | Workload::RangeSerializable => {
                    let request = plan.request(RangeRequest {
                        key,
                        serializable: plan.workload == Workload::RangeSerializable,
                        ..Default::default()
                    });
                    kv.range(request).await.map(drop)
                }
            }
            .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
        };
        let outcome = tokio::time::timeout(d.timeout, request).await;
        d.record(sent, outcome);
    }
    d.result
}

/// One client's walk through a plan: the key of each next request until the plan says stop,
/// and the tally of what came back.
pub(super) struct Driver<'a> {
    plan: &'a Plan,
    pub(super) timeout: Duration,
    pub(super) result: ClientResult,
}

impl<'a> Driver<'a> {
    pub(super) fn new(plan: &'a Plan) -> Self {
        Driver {
            plan,
            timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
            result: ClientResult {
                latencies: Histogram::new(),
                requests: 0,
                errors: 0,
                first_error: None,
            },
        }
    }

    /// The next request's key, or `None` when the workload is over.
    pub(super) fn next_key(&mut self) -> Option<Vec<u8>> {
        let i = self.plan.next_request.fetch_add(1, Ordering::Relaxed);
        let done = match self.plan.stop {
            Stop::AfterRequests(total) => i >= total,
            Stop::At(deadline) => Instant::now() >= deadline,
        };
        (!done).then(|| format!("bench/{}", i % self.plan.keys).into_bytes())
    }

    /// Counts one request sent at `sent`: its latency, or its error.
    pub(super) fn record(
        &mut self,
        sent: Instant,
        outcome: Result<Result<(), String>, tokio::time::error::Elapsed>,
    ) {
        let r = &mut self.result;
        r.requests += 1;
        match outcome {
            Ok(Ok(())) => r.latencies.record(sent.elapsed()),
            Ok(Err(e)) => {
                r.errors += 1;
                r.first_error.get_or_insert(e);
            }
            Err(_elapsed) => {
                r.errors += 1;
                r.first_error
                    .get_or_insert_with(|| format!("no answer within {REQUEST_TIMEOUT_MS} ms"));
            }
        }
    }
}
