//! `cairn bench leader-failover`: how long a 3-node cluster takes to accept a write after its
//! leader is SIGKILLed, for Cairn or a real etcd, both started here as child processes with
//! their default settings.
//!
//! Each round waits until all three nodes run, agree on one leader, a put through that leader
//! succeeds and every node has applied the leader's log; lets the cluster settle; SIGKILLs the
//! leader; then, from the kill, puts through the two survivors in turn, each attempt bounded by
//! `--attempt-timeout-ms` (as etcdctl's `--command-timeout` would), until one succeeds. That
//! interval is the round's failover time. The killed node restarts on its data directory and
//! the next round waits for it to catch up.
//!
//! JSON shape (`--output json`; fields may be added, never renamed):
//! `{"target": "cairn" | "etcd", "binary": str, "version": str, "attempt_timeout_ms": u64,
//!   "settle_ms": u64, "failover_ms": {"p50": f64, "p99": f64, "max": f64, "min": f64,
//!   "mean": f64}, "rounds": [{"round": u64, "killed_node": u64, "killed_at_unix_ms": u64,
//!   "written_via_node": u64, "failover_ms": f64, "attempts": u64, "ready_ms": f64,
//!   "errors": [{"error": str, "count": u64}]}]}`
//! Nodes are numbered 1..3; `ready_ms` is the time from the round's start to the kill: for
//! rounds after the first, the previous victim's restart and catch-up, plus `settle_ms`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_client::proto::etcdserverpb::kv_client::KvClient;
use cairn_client::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_client::proto::etcdserverpb::{PutRequest, StatusRequest, StatusResponse};
use cairn_client::{lazy_channel, ClientConfig};
use tonic::transport::Channel;

use super::failover_report::{self, FailoverReport, RoundErrors, RoundReport, Summary};
use super::local_cluster::{binary_version, find_in_path, LocalCluster, ServerKind, NODES};
use super::BenchError;
use crate::ctl::output::OutputFormat;

/// Most rounds one run may do.
const ROUNDS_MAX: u64 = 1_000;
/// Bounds of `--attempt-timeout-ms`.
const ATTEMPT_TIMEOUT_MS_MIN: u64 = 10;
const ATTEMPT_TIMEOUT_MS_MAX: u64 = 60_000;
/// Bounds of `--failover-timeout-ms` and `--ready-timeout-ms`.
const PHASE_TIMEOUT_MS_MAX: u64 = 600_000;
/// Longest `--settle-ms`.
const SETTLE_MS_MAX: u64 = 600_000;
/// Least time between the starts of two write attempts: a survivor that refuses at once
/// ("no leader") would otherwise be hammered in a busy loop. etcdctl, retried from a shell,
/// pays more than this for each process start.
const ATTEMPT_SPACING_MIN_MS: u64 = 10;
/// How often readiness is polled.
const POLL_INTERVAL_MS: u64 = 50;
/// Longest wait for one Status or readiness put.
const PROBE_TIMEOUT_MS: u64 = 1_000;
/// Distinct error messages kept per round; more are counted under the last one.
const ROUND_ERRORS_MAX: usize = 8;

/// Arguments of `cairn bench leader-failover`.
#[derive(Debug, clap::Args)]
pub struct LeaderFailoverArgs {
    /// Which server to run a 3-node cluster of.
    #[arg(long, value_enum, default_value_t = ServerKind::Cairn)]
    target: ServerKind,
    /// The cairn binary to run [default: this one].
    #[arg(long)]
    cairn_bin: Option<PathBuf>,
    /// The etcd binary to run [default: `etcd` from PATH].
    #[arg(long)]
    etcd_bin: Option<PathBuf>,
    /// Leader kills to measure.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
    /// Longest wait for one write attempt, ms; a slower attempt is abandoned and the other
    /// survivor tried.
    #[arg(long, default_value_t = 300)]
    attempt_timeout_ms: u64,
    /// Longest wait for the first successful write after a kill, ms; the bench fails beyond it.
    #[arg(long, default_value_t = 30_000)]
    failover_timeout_ms: u64,
    /// Longest wait for the cluster to be ready before a kill (restart, election, catch-up), ms.
    #[arg(long, default_value_t = 60_000)]
    ready_timeout_ms: u64,
    /// How long the ready cluster runs before the kill, ms, so a round does not start while the
    /// previous one's effects (reconnecting peers, a new leader's first heartbeats) last.
    #[arg(long, default_value_t = 1_000)]
    settle_ms: u64,
    /// An extra flag for every server (repeatable), e.g. --server-arg=--election-timeout-ms=800.
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Keep the servers' logs in this directory (node-N.log, appended across restarts) instead
    /// of deleting them with the cluster's data.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

/// Validated settings.
#[derive(Debug)]
struct Plan {
    target: ServerKind,
    bin: PathBuf,
    rounds: u64,
    attempt_timeout: Duration,
    failover_timeout: Duration,
    ready_timeout: Duration,
    settle: Duration,
}

fn validate(args: &LeaderFailoverArgs) -> Result<Plan, BenchError> {
    let bad = |msg: String| Err(BenchError::Usage(msg));
    if args.rounds == 0 || args.rounds > ROUNDS_MAX {
        return bad(format!("--rounds must be in 1..={ROUNDS_MAX}"));
    }
    if !(ATTEMPT_TIMEOUT_MS_MIN..=ATTEMPT_TIMEOUT_MS_MAX).contains(&args.attempt_timeout_ms) {
        return bad(format!(
            "--attempt-timeout-ms must be in {ATTEMPT_TIMEOUT_MS_MIN}..={ATTEMPT_TIMEOUT_MS_MAX}"
        ));
    }
    for (flag, ms) in [
        ("--failover-timeout-ms", args.failover_timeout_ms),
        ("--ready-timeout-ms", args.ready_timeout_ms),
    ] {
        if ms < args.attempt_timeout_ms || ms > PHASE_TIMEOUT_MS_MAX {
            return bad(format!(
                "{flag} must be in --attempt-timeout-ms ({})..={PHASE_TIMEOUT_MS_MAX}",
                args.attempt_timeout_ms
            ));
        }
    }
    if args.settle_ms > SETTLE_MS_MAX {
        return bad(format!("--settle-ms must be at most {SETTLE_MS_MAX}"));
    }
    let bin = match args.target {
        ServerKind::Cairn if args.etcd_bin.is_some() => {
            return bad("--etcd-bin needs --target etcd".into())
        }
        ServerKind::Etcd if args.cairn_bin.is_some() => {
            return bad("--cairn-bin needs --target cairn".into())
        }
        ServerKind::Cairn => match &args.cairn_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe().map_err(|e| {
                BenchError::Usage(format!("cannot find this cairn binary ({e}); pass --cairn-bin"))
            })?,
        },
        ServerKind::Etcd => match &args.etcd_bin {
            Some(path) => path.clone(),
            None => find_in_path("etcd").ok_or_else(|| {
                BenchError::Usage(
                    "etcd is not in PATH: install it (apt-get install etcd-server) or pass --etcd-bin"
                        .into(),
                )
            })?,
        },
    };
    if !bin.is_file() {
        return bad(format!("{}: no such file", bin.display()));
    }
    Ok(Plan {
        target: args.target,
        bin,
        rounds: args.rounds,
        attempt_timeout: Duration::from_millis(args.attempt_timeout_ms),
        failover_timeout: Duration::from_millis(args.failover_timeout_ms),
        ready_timeout: Duration::from_millis(args.ready_timeout_ms),
        settle: Duration::from_millis(args.settle_ms),
    })
}

/// Runs the bench; an interrupt (SIGINT, SIGTERM) drops the cluster, which kills its servers.
pub async fn run(args: LeaderFailoverArgs) -> Result<(), BenchError> {
    let plan = validate(&args)?;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| BenchError::Cluster(format!("cannot watch for SIGTERM: {e}")))?;
    let report = tokio::select! {
        report = measure(&plan, args.server_arg, args.log_dir, args.output) => report?,
        _ = tokio::signal::ctrl_c() => return Err(BenchError::Interrupted("SIGINT")),
        _ = terminate.recv() => return Err(BenchError::Interrupted("SIGTERM")),
    };
    failover_report::print(&report, args.output)
}

/// One node's gRPC clients; the channel reconnects by itself after a restart.
struct NodeClients {
    kv: KvClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
}

async fn measure(
    plan: &Plan,
    server_args: Vec<String>,
    log_dir: Option<PathBuf>,
    output: OutputFormat,
) -> Result<FailoverReport, BenchError> {
    let version = binary_version(&plan.bin);
    let mut cluster = LocalCluster::start(plan.target, plan.bin.clone(), server_args, log_dir)
        .map_err(BenchError::Cluster)?;
    let config = ClientConfig::default();
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let channel = lazy_channel(&cluster.client_endpoint(i), &config)
            .map_err(|e| BenchError::Endpoint(e.to_string()))?;
        nodes.push(NodeClients {
            kv: KvClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel),
        });
    }
    if output == OutputFormat::Table {
        eprintln!(
            "bench leader-failover: {} ({version}), 3 nodes, {} rounds; write attempts time out \
             after {} ms and alternate between the two survivors; {} ms settle before each kill",
            plan.bin.display(),
            plan.rounds,
            plan.attempt_timeout.as_millis(),
            plan.settle.as_millis()
        );
    }
    let mut rounds = Vec::new();
    for round in 1..=plan.rounds {
        let ready_started = Instant::now();
        let leader = wait_ready(&mut cluster, &mut nodes, plan)
            .await
            .map_err(|e| BenchError::Cluster(format!("round {round}: {e}")))?;
        let ready_ms = ms(ready_started.elapsed());
        // Wall-clock time too, to find the kill in the servers' logs.
        let killed_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let killed_at = cluster.kill_node(leader).map_err(BenchError::Cluster)?;
        let survivors: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();
        let key = format!("bench/failover/{round}");
        let written = first_write(&mut nodes, &survivors, &key, killed_at, plan)
            .await
            .map_err(|e| BenchError::Cluster(format!("round {round}: {e}")))?;
        if output == OutputFormat::Table {
            eprintln!(
                "round {round}: killed node {} at unix {:.3} s, written via node {} after \
                 {:.1} ms ({} attempts)",
                leader + 1,
                killed_at_unix_ms as f64 / 1000.0,
                written.via + 1,
                ms(written.elapsed),
                written.attempts
            );
        }
        rounds.push(RoundReport {
            round,
            killed_node: leader as u64 + 1,
            killed_at_unix_ms,
            written_via_node: written.via as u64 + 1,
            failover_ms: ms(written.elapsed),
            attempts: written.attempts,
            ready_ms,
            errors: written.errors.into_list(),
        });
        cluster.start_node(leader).map_err(BenchError::Cluster)?;
    }
    let failover: Vec<f64> = rounds.iter().map(|r| r.failover_ms).collect();
    Ok(FailoverReport {
        target: plan.target,
        binary: plan.bin.display().to_string(),
        version,
        attempt_timeout_ms: plan.attempt_timeout.as_millis() as u64,
        settle_ms: plan.settle.as_millis() as u64,
        failover_ms: Summary::of(&failover).expect("at least one round ran"),
        rounds,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Waits until the cluster can lose its leader cleanly: all nodes run and agree on a leader, a
/// put through it succeeded, every node has applied the leader's log, and after `settle` the
/// same leader still leads. Returns the leader's index.
async fn wait_ready(
    cluster: &mut LocalCluster,
    nodes: &mut [NodeClients],
    plan: &Plan,
) -> Result<usize, String> {
    let deadline = Instant::now() + plan.ready_timeout;
    let mut last_problem = String::from("no node answered yet");
    // The leader a readiness put went through, and the log index every node must then reach.
    let mut written: Option<(usize, u64)> = None;
    loop {
        cluster.check_running()?;
        if Instant::now() >= deadline {
            return Err(format!(
                "cluster not ready within {} ms: {last_problem}",
                plan.ready_timeout.as_millis()
            ));
        }
        match agreed_leader(nodes).await {
            Err(problem) => last_problem = problem,
            Ok((leader, _)) if written.is_none_or(|(l, _)| l != leader) => {
                match put(&mut nodes[leader].kv, "bench/failover/ready").await {
                    Ok(()) => match status(&mut nodes[leader].maintenance).await {
                        Ok(s) => written = Some((leader, s.raft_index)),
                        Err(e) => last_problem = format!("node {}: {e}", leader + 1),
                    },
                    Err(e) => last_problem = format!("put through node {}: {e}", leader + 1),
                }
                continue;
            }
            Ok((leader, statuses)) => {
                let index = written.map_or(0, |(_, index)| index);
                match statuses.iter().position(|s| s.raft_applied_index < index) {
                    Some(i) => {
                        last_problem = format!(
                            "node {} has applied index {} of the leader's {index}",
                            i + 1,
                            statuses[i].raft_applied_index
                        )
                    }
                    None => {
                        tokio::time::sleep(plan.settle).await;
                        match agreed_leader(nodes).await {
                            Ok((again, _)) if again == leader => return Ok(leader),
                            Ok((again, _)) => {
                                last_problem = format!(
                                    "leadership moved from node {} to node {} while settling",
                                    leader + 1,
                                    again + 1
                                )
                            }
                            Err(problem) => last_problem = problem,
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

/// Every node's Status, if all answer and all name the same leader, which is one of them.
async fn agreed_leader(nodes: &mut [NodeClients]) -> Result<(usize, Vec<StatusResponse>), String> {
    let mut statuses = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter_mut().enumerate() {
        let s = status(&mut node.maintenance)
            .await
            .map_err(|e| format!("node {}: {e}", i + 1))?;
        statuses.push(s);
    }
    let leader = statuses[0].leader;
    if leader == 0 || statuses.iter().any(|s| s.leader != leader) {
        let seen: Vec<u64> = statuses.iter().map(|s| s.leader).collect();
        return Err(format!("nodes name different leaders or none: {seen:?}"));
    }
    // etcd's member ids are hashes, Cairn's node ids: either way each node says who it is.
    let index = statuses
        .iter()
        .position(|s| s.header.as_ref().is_some_and(|h| h.member_id == leader))
        .ok_or_else(|| format!("the leader {leader} is none of the three nodes"))?;
    Ok((index, statuses))
}

async fn status(client: &mut MaintenanceClient<Channel>) -> Result<StatusResponse, String> {
    match tokio::time::timeout(
        Duration::from_millis(PROBE_TIMEOUT_MS),
        client.status(StatusRequest {}),
    )
    .await
    {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(s)) => Err(format!("Status: {:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("Status: no answer within {PROBE_TIMEOUT_MS} ms")),
    }
}

async fn put(kv: &mut KvClient<Channel>, key: &str) -> Result<(), String> {
    let request = PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"x".to_vec(),
        ..Default::default()
    };
    match tokio::time::timeout(Duration::from_millis(PROBE_TIMEOUT_MS), kv.put(request)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err(format!("no answer within {PROBE_TIMEOUT_MS} ms")),
    }
}

/// The first write accepted after a kill.
struct Written {
    elapsed: Duration,
    via: usize,
    attempts: u64,
    errors: RoundErrors,
}

/// Puts `key` through the survivors in turn until one succeeds; the time is from `killed_at`.
async fn first_write(
    nodes: &mut [NodeClients],
    survivors: &[usize],
    key: &str,
    killed_at: Instant,
    plan: &Plan,
) -> Result<Written, String> {
    let mut errors = RoundErrors::new(ROUND_ERRORS_MAX);
    for attempt in 0u64.. {
        if killed_at.elapsed() >= plan.failover_timeout {
            return Err(format!(
                "no write succeeded within {} ms of the kill; errors: {}",
                plan.failover_timeout.as_millis(),
                errors.summary()
            ));
        }
        let via = survivors[attempt as usize % survivors.len()];
        let started = Instant::now();
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        };
        match tokio::time::timeout(plan.attempt_timeout, nodes[via].kv.put(request)).await {
            Ok(Ok(_)) => {
                return Ok(Written {
                    elapsed: killed_at.elapsed(),
                    via,
                    attempts: attempt + 1,
                    errors,
                })
            }
            Ok(Err(s)) => errors.add(format!("{:?}: {}", s.code(), s.message())),
            Err(_) => errors.add(format!(
                "no answer within {} ms",
                plan.attempt_timeout.as_millis()
            )),
        }
        let spacing = Duration::from_millis(ATTEMPT_SPACING_MIN_MS);
        if let Some(rest) = spacing.checked_sub(started.elapsed()) {
            tokio::time::sleep(rest).await;
        }
    }
    unreachable!("the attempt counter cannot run out before the failover timeout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LeaderFailoverArgs,
    }

    fn plan(argv: &[&str]) -> Result<Plan, BenchError> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .expect("parses");
        validate(&cli.args)
    }

    fn usage_error(argv: &[&str]) -> String {
        match plan(argv) {
            Err(BenchError::Usage(msg)) => msg,
            other => panic!("{argv:?}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_run_this_binary_twenty_times() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.target, ServerKind::Cairn);
        assert_eq!(plan.rounds, 20);
        assert_eq!(plan.attempt_timeout, Duration::from_millis(300));
        assert_eq!(plan.bin, std::env::current_exe().unwrap());
    }

    #[test]
    fn out_of_bounds_flags_are_refused() {
        assert!(usage_error(&["--rounds", "0"]).contains("--rounds"));
        assert!(usage_error(&["--rounds", "1001"]).contains("--rounds"));
        assert!(usage_error(&["--attempt-timeout-ms", "5"]).contains("--attempt-timeout-ms"));
        let msg = usage_error(&[
            "--attempt-timeout-ms",
            "500",
            "--failover-timeout-ms",
            "400",
        ]);
        assert!(msg.contains("--failover-timeout-ms"), "{msg}");
        assert!(usage_error(&["--ready-timeout-ms", "700000"]).contains("--ready-timeout-ms"));
        assert!(usage_error(&["--settle-ms", "600001"]).contains("--settle-ms"));
    }

    #[test]
    fn binaries_must_match_the_target_and_exist() {
        assert!(usage_error(&["--etcd-bin", "/bin/sh"]).contains("--target etcd"));
        assert!(
            usage_error(&["--target", "etcd", "--cairn-bin", "/bin/sh"]).contains("--target cairn")
        );
        let msg = usage_error(&["--cairn-bin", "/nonexistent/cairn"]);
        assert!(msg.contains("no such file"), "{msg}");
        let plan = plan(&["--target", "etcd", "--etcd-bin", "/bin/sh"]).unwrap();
        assert_eq!(plan.bin, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn server_args_may_look_like_flags() {
        let cli = Cli::try_parse_from(["bench", "--server-arg=--election-timeout-ms=800"]).unwrap();
        assert_eq!(cli.args.server_arg, vec!["--election-timeout-ms=800"]);
    }
}
