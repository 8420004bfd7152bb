//! `cairn bench`: measure throughput and latency against any etcd v3 endpoints, Cairn or a real
//! etcd, with the same workload, so the two can be compared.
//!
//! ```text
//! cairn bench kv [--endpoints A,B,C] [--clients N] [--connections C] [--total M | --duration-secs S]
//!                [--workload put|range-linearizable|range-serializable|all] [--value-size BYTES]
//!                [--key-space K] [--pid PID ...] [--output table|json]
//! cairn bench heartbeat [--endpoints A,B,C] [--datanodes N] [--regions-per-node M]
//!                [--interval-ms T] [--duration-secs S] [--pid PID ...] [--output table|json]
//! cairn bench ddl [--endpoints A,B,C] [--clients N] [--tables T] [--regions-per-table R]
//!                [--datanodes D] [--database NAME] [--drop] [--pid PID ...] [--output table|json]
//! cairn bench route [--endpoints A] [--tables T] [--batch B] [--clients N] [--duration-secs S]
//!                [--cache] [--serializable] [--database NAME] [--pid PID ...] [--output table|json]
//! cairn bench leader-failover [--target cairn|etcd] [--cairn-bin PATH] [--etcd-bin PATH]
//!                [--rounds N] [--attempt-timeout-ms T] [--settle-ms S] [--server-arg ARG ...]
//!                [--log-dir DIR] [--output table|json]
//! cairn bench region-failover [--endpoints A,B,C] [--datanodes N] [--regions R]
//!                [--regions-per-table P] [--runs K] [--interval-ms T] [--no-drain]
//!                [--output table|json]
//! ```
//!
//! All but `leader-failover` drive endpoints that already run; `leader-failover` starts (and
//! kills) a cluster of its own.

mod ddl;
mod failover_report;
mod gateway_client;
mod heartbeat;
mod histogram;
mod kv;
mod leader_failover;
mod local_cluster;
pub mod proc;
mod region_failover;
mod report;
mod route;
mod schedule;

use clap::Subcommand;

/// Arguments of `cairn bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub workload: BenchWorkload,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchWorkload {
    /// Puts and ranges over the etcd KV API, against any etcd v3 server; connections spread
    /// over the endpoints.
    Kv(kv::KvBenchArgs),
    /// Simulated datanodes heartbeating to a Cairn cluster (cairn.v1 Heartbeat).
    Heartbeat(heartbeat::HeartbeatBenchArgs),
    /// Concurrent CREATE TABLE (cairn.v1 Meta) against in-process simulated datanodes.
    Ddl(ddl::DdlBenchArgs),
    /// GetRoutes lookups served by one node, or client route-cache lookups (--cache). Lookups
    /// go to the first endpoint only; the setup uses all of them.
    Route(route::RouteBenchArgs),
    /// Leader SIGKILL to first successful write through the survivors, over N rounds, on a
    /// 3-node Cairn or etcd cluster this command starts (and restarts) as child processes.
    LeaderFailover(leader_failover::LeaderFailoverArgs),
    /// Datanode killed to every region it led writable elsewhere, over K kills, and the rate of
    /// a drain, with in-process simulated datanodes against a running Cairn cluster.
    RegionFailover(region_failover::RegionFailoverArgs),
    /// The schedulers on the scenario model (time to balance, imbalance, moves against the
    /// minimum) and the time of one planning pass at a million regions. No cluster needed.
    Schedule(schedule::ScheduleBenchArgs),
}

/// Where a benchmark sends its requests; every benchmark takes it.
#[derive(Debug, clap::Args)]
pub struct Endpoints {
    /// Endpoints (HOST:PORT or http://HOST:PORT), comma separated.
    #[arg(
        long,
        env = "CAIRN_ENDPOINTS",
        default_value = "127.0.0.1:4379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
}

/// Why a benchmark could not run or produced nothing.
#[derive(Debug)]
pub enum BenchError {
    /// The arguments are out of bounds or inconsistent.
    Usage(String),
    /// The endpoints are unusable or unreachable.
    Endpoint(String),
    /// Every request of a workload failed.
    AllFailed {
        /// The workload.
        workload: &'static str,
        /// The first error seen.
        first_error: String,
    },
    /// The JSON report could not be encoded.
    Json(serde_json::Error),
    /// A cluster the benchmark started failed (a server exited, never became ready, ...).
    Cluster(String),
    /// The benchmark was interrupted by this signal; the servers it started were stopped.
    Interrupted(&'static str),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Usage(msg) => write!(f, "{msg}"),
            BenchError::Endpoint(msg) => write!(f, "{msg}"),
            BenchError::AllFailed {
                workload,
                first_error,
            } => write!(
                f,
                "bench: every {workload} request failed; first error: {first_error}"
            ),
            BenchError::Json(e) => write!(f, "cannot encode the JSON report: {e}"),
            BenchError::Cluster(msg) => write!(f, "bench: {msg}"),
            BenchError::Interrupted(signal) => {
                write!(
                    f,
                    "bench: interrupted by {signal}; the servers it started were killed"
                )
            }
        }
    }
}

impl std::error::Error for BenchError {}

/// Runs one benchmark.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    match args.workload {
        BenchWorkload::Kv(args) => kv::run(args).await,
        BenchWorkload::Heartbeat(args) => heartbeat::run(args).await,
        BenchWorkload::Ddl(args) => ddl::run(args).await,
        BenchWorkload::Route(args) => route::run(args).await,
        BenchWorkload::LeaderFailover(args) => leader_failover::run(args).await,
        BenchWorkload::RegionFailover(args) => region_failover::run(args).await,
        BenchWorkload::Schedule(args) => schedule::run(args).await,
    }
}
