//! `cairn bench heartbeat`: N simulated datanodes (cairn-sim) with M regions each heartbeat to
//! a cluster for a while; reports heartbeats and region stats acknowledged per second, the
//! client-measured round trip of request → response, and the CPU and memory of given server
//! processes.
//!
//! Counting starts after a warm-up of one interval, so stream setup and first registration are
//! not measured. Latencies go into the fixed-size histogram of `bench`, so memory is bounded
//! whatever the duration.
//!
//! JSON shape (stable; fields may be added, never renamed):
//! `{"endpoints": [str], "datanodes": u32, "regions_per_node": u32, "interval_ms": u64,
//!   "duration_secs": u64, "elapsed_secs": f64, "heartbeats": u64, "heartbeats_per_sec": f64,
//!   "region_stats": u64, "region_stats_per_sec": f64, "streams_ended": u64,
//!   "latency_ms": {"p50": f64, "p99": f64, "p999": f64, "mean": f64, "max": f64} | null,
//!   "processes": [{"pid": u32, "cpu_cores": f64 | null, "rss_kib": u64 | null}]}`
//!
//! `cpu_cores` is the CPU time (user + system) the process used during the measured run divided
//! by its wall time; `rss_kib` is its resident memory at the end.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::meta::{HeartbeatObserver, MetaClient};
use cairn_sim::{Fleet, LoadPattern, SimConfig};
use serde::Serialize;

use super::histogram::Histogram;
use super::proc::{cpu_time_ticks, resident_memory_kib, CLOCK_TICKS_PER_SEC};
use super::report::LatencyMs;
use super::BenchError;
use crate::ctl::output::{new_table, OutputFormat};

/// Longest run.
const DURATION_SECS_MAX: u64 = 24 * 3600;
/// Id of the first simulated datanode; far from the ids `cairn sim` uses by default, so a
/// benchmark can run beside a simulation.
const FIRST_NODE_ID: u64 = 100_000;

/// Arguments of `cairn bench heartbeat`.
#[derive(Debug, clap::Args)]
pub struct HeartbeatBenchArgs {
    #[command(flatten)]
    target: super::Endpoints,
    /// Simulated datanodes, each with its own stream.
    #[arg(long, default_value_t = 100)]
    datanodes: u32,
    /// Regions each datanode reports.
    #[arg(long, default_value_t = 1_000)]
    regions_per_node: u32,
    /// Heartbeat interval asked for, ms (the leader's own interval wins once it names one).
    #[arg(long, default_value_t = 3_000)]
    interval_ms: u64,
    /// Measured run, after a warm-up of one interval.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Report CPU (cores used over the run) and resident memory of this process, e.g. the
    /// leader's pid; repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

/// Counts every acknowledged heartbeat of every simulated node.
struct Tally {
    heartbeats: AtomicU64,
    region_stats: AtomicU64,
    streams_ended: AtomicU64,
    latencies: Mutex<Histogram>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            heartbeats: AtomicU64::new(0),
            region_stats: AtomicU64::new(0),
            streams_ended: AtomicU64::new(0),
            latencies: Mutex::new(Histogram::new()),
        }
    }

    fn latencies(&self) -> std::sync::MutexGuard<'_, Histogram> {
        // A histogram is updated by single calls; a panic cannot leave it half-written.
        self.latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts counting afresh (after the warm-up).
    fn reset(&self) {
        self.heartbeats.store(0, Ordering::Relaxed);
        self.region_stats.store(0, Ordering::Relaxed);
        self.streams_ended.store(0, Ordering::Relaxed);
        *self.latencies() = Histogram::new();
    }
}

impl HeartbeatObserver for Tally {
    fn on_acknowledged(&self, round_trip: Duration, region_stats: usize) {
        self.heartbeats.fetch_add(1, Ordering::Relaxed);
        self.region_stats
            .fetch_add(region_stats as u64, Ordering::Relaxed);
        self.latencies().record(round_trip);
    }

    fn on_stream_ended(&self, _reason: &str) {
        self.streams_ended.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Serialize)]
struct HeartbeatBenchReport {
    endpoints: Vec<String>,
    datanodes: u32,
    regions_per_node: u32,
    interval_ms: u64,
    duration_secs: u64,
    elapsed_secs: f64,
    heartbeats: u64,
    heartbeats_per_sec: f64,
    region_stats: u64,
    region_stats_per_sec: f64,
    streams_ended: u64,
    latency_ms: Option<LatencyMs>,
    processes: Vec<ProcessUsage>,
}

#[derive(Debug, Serialize)]
struct ProcessUsage {
    pid: u32,
    cpu_cores: Option<f64>,
    rss_kib: Option<u64>,
}

/// Cores used: CPU ticks over wall seconds.
fn cores_used(ticks_before: u64, ticks_after: u64, elapsed_secs: f64) -> Option<f64> {
    if elapsed_secs <= 0.0 || ticks_after < ticks_before {
        return None;
    }
    Some((ticks_after - ticks_before) as f64 / CLOCK_TICKS_PER_SEC as f64 / elapsed_secs)
}

pub async fn run(args: HeartbeatBenchArgs) -> Result<(), BenchError> {
    if args.duration_secs == 0 || args.duration_secs > DURATION_SECS_MAX {
        return Err(BenchError::Usage(format!(
            "--duration-secs must be in 1..={DURATION_SECS_MAX}"
        )));
    }
    let client = MetaClient::new(&args.target.endpoints)
        .map_err(|e| BenchError::Endpoint(format!("--endpoints: {e}")))?;
    let config = SimConfig {
        datanodes: args.datanodes,
        regions_per_node: args.regions_per_node,
        frontends: 0,
        interval_ms: args.interval_ms,
        load: LoadPattern::Constant,
        seed: 0,
        first_node_id: FIRST_NODE_ID,
    };
    let tally = Arc::new(Tally::new());
    let observer: Arc<dyn HeartbeatObserver> = Arc::clone(&tally) as _;
    let endpoints = client.endpoints().to_vec();
    if args.output == OutputFormat::Table {
        eprintln!(
            "bench heartbeat: {} datanodes x {} regions every {} ms to {}; warm-up {} ms, then {} s",
            args.datanodes,
            args.regions_per_node,
            args.interval_ms,
            endpoints.join(","),
            args.interval_ms,
            args.duration_secs
        );
    }
    let fleet = Fleet::start(client, &config, Some(observer))
        .map_err(|e| BenchError::Usage(e.to_string()))?;

    tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    tally.reset();
    let ticks_before: Vec<Option<u64>> = args.pid.iter().map(|&p| cpu_time_ticks(p)).collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration_secs)).await;
    let elapsed_secs = started.elapsed().as_secs_f64();
    let processes: Vec<ProcessUsage> = args
        .pid
        .iter()
        .zip(&ticks_before)
        .map(|(&pid, before)| ProcessUsage {
            pid,
            cpu_cores: before
                .zip(cpu_time_ticks(pid))
                .and_then(|(b, a)| cores_used(b, a, elapsed_secs)),
            rss_kib: resident_memory_kib(pid),
        })
        .collect();
    let heartbeats = tally.heartbeats.load(Ordering::Relaxed);
    let region_stats = tally.region_stats.load(Ordering::Relaxed);
    let latency_ms = LatencyMs::from_histogram(&tally.latencies());
    let first_problem = fleet
        .status()
        .into_iter()
        .find_map(|s| s.heartbeat.last_error);
    fleet.stop().await;
    if heartbeats == 0 {
        return Err(BenchError::AllFailed {
            workload: "heartbeat",
            first_error: first_problem.unwrap_or_else(|| "no heartbeat was answered".into()),
        });
    }
    let report = HeartbeatBenchReport {
        endpoints,
        datanodes: args.datanodes,
        regions_per_node: args.regions_per_node,
        interval_ms: args.interval_ms,
        duration_secs: args.duration_secs,
        elapsed_secs,
        heartbeats,
        heartbeats_per_sec: heartbeats as f64 / elapsed_secs,
        region_stats,
        region_stats_per_sec: region_stats as f64 / elapsed_secs,
        streams_ended: tally.streams_ended.load(Ordering::Relaxed),
        latency_ms,
        processes,
    };
    print(&report, args.output)
}

fn print(report: &HeartbeatBenchReport, out: OutputFormat) -> Result<(), BenchError> {
    match out {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(report).map_err(BenchError::Json)?;
            println!("{text}");
        }
        OutputFormat::Table => {
            let mut table = new_table(["METRIC", "VALUE"]);
            let mut row = |k: &str, v: String| {
                table.add_row(vec![k.to_string(), v]);
            };
            row("elapsed (s)", format!("{:.2}", report.elapsed_secs));
            row("heartbeats acknowledged", report.heartbeats.to_string());
            row("heartbeats/s", format!("{:.1}", report.heartbeats_per_sec));
            row("region stats acknowledged", report.region_stats.to_string());
            row(
                "region stats/s",
                format!("{:.0}", report.region_stats_per_sec),
            );
            row(
                "streams ended (reconnects)",
                report.streams_ended.to_string(),
            );
            if let Some(l) = &report.latency_ms {
                row("round trip p50 (ms)", format!("{:.3}", l.p50));
                row("round trip p99 (ms)", format!("{:.3}", l.p99));
                row("round trip p99.9 (ms)", format!("{:.3}", l.p999));
                row("round trip max (ms)", format!("{:.3}", l.max));
            }
            for p in &report.processes {
                row(
                    &format!("pid {} cpu (cores)", p.pid),
                    p.cpu_cores.map_or("-".into(), |c| format!("{c:.3}")),
                );
                row(
                    &format!("pid {} rss (MiB)", p.pid),
                    p.rss_kib
                        .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
                );
            }
            println!("{table}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_ticks_over_wall_time() {
        assert_eq!(cores_used(100, 250, 1.5), Some(1.0));
        assert_eq!(cores_used(0, 50, 1.0), Some(0.5));
        assert_eq!(cores_used(10, 5, 1.0), None);
        assert_eq!(cores_used(0, 5, 0.0), None);
    }

    #[test]
    fn tally_counts_and_resets() {
        let tally = Tally::new();
        tally.on_acknowledged(Duration::from_millis(2), 1_000);
        tally.on_acknowledged(Duration::from_millis(4), 1_000);
        tally.on_stream_ended("gone");
        assert_eq!(tally.heartbeats.load(Ordering::Relaxed), 2);
        assert_eq!(tally.region_stats.load(Ordering::Relaxed), 2_000);
        assert_eq!(tally.latencies().count(), 2);
        tally.reset();
        assert_eq!(tally.heartbeats.load(Ordering::Relaxed), 0);
        assert_eq!(tally.latencies().count(), 0);
    }
}
