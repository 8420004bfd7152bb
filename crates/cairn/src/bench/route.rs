//! `cairn bench route`: how many table routes one Cairn node serves, and how fast a frontend's
//! route cache answers.
//!
//! Setup: the tables of `--database` are listed; if there are fewer than `--tables`, the
//! missing ones are created first (hash tables of `--regions-per-table` regions, placed on
//! `--datanodes` simulated datanodes run in this process for the setup only).
//!
//! - RPC mode (default): N clients call `GetRoutes` on the first endpoint only, each call
//!   naming `--batch` table ids (walking the tables in turn), for `--duration-secs` after a
//!   one-second warm-up. Reports calls/s, routes/s (tables routed per second) and the latency
//!   of a call.
//! - `--cache`: one `RouteCache` (as a frontend keeps) over the first endpoint, warmed with
//!   every table, then N tasks look routes up for the duration. Reports lookups/s and the
//!   cache's hits, misses and fetches during the measurement.
//!
//! JSON shape (stable; fields may be added, never renamed):
//! `{"endpoint": str, "mode": "rpc" | "cache", "database": str, "tables": u64, "batch": u64,
//!   "clients": u64, "connections": u64, "serializable": bool, "duration_secs": u64,
//!   "elapsed_secs": f64, "calls": u64, "calls_per_sec": f64, "routes": u64,
//!   "routes_per_sec": f64, "errors": u64, "first_error": str | null,
//!   "latency_ms": {"p50": f64, "p99": f64, "p999": f64, "mean": f64, "max": f64} | null,
//!   "cache": {"hits": u64, "misses": u64, "fetches": u64, "hit_ratio": f64,
//!             "cached_tables": u64} | null,
//!   "processes": [{"pid": u32, "cpu_cores": f64 | null, "rss_kib": u64 | null}]}`
//!
//! In cache mode a call is one lookup returning one route (`calls` = `routes`), and no latency
//! is recorded (a hit takes well under a microsecond; timing it would cost more than it).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::meta::{MetaClient, RouteCache, RouteCacheOptions, ROUTE_CACHE_TABLES_MAX};
use cairn_client::proto::cairnpb::meta_client::MetaClient as MetaRpc;
use cairn_client::proto::cairnpb::{CreateDatabaseRequest, GetRoutesRequest};
use cairn_client::{lazy_channel, ClientConfig, RESPONSE_BYTES_MAX};
use serde::Serialize;
use tonic::transport::Channel;

use super::ddl::setup::{
    bench_table_name, connections_for, create_tables, meta_clients, start_datanodes,
    ProcessSampler, ProcessUsage,
};
use super::histogram::Histogram;
use super::report::LatencyMs;
use super::BenchError;
use crate::ctl::output::{new_table, OutputFormat};

/// Most table ids in one `GetRoutes` call (the server's `route_tables_per_request_max`).
const BATCH_MAX: usize = 1_000;
/// Longest measured run.
const DURATION_SECS_MAX: u64 = 24 * 3600;
/// Unmeasured calls before the measurement, so connections and caches are warm.
const WARM_UP: Duration = Duration::from_secs(1);
/// Cache lookups between two looks at the clock (and a yield to the other tasks).
const LOOKUPS_PER_CHECK: u64 = 1_024;
/// Id of the first simulated datanode used for the setup.
const ROUTE_FIRST_NODE_ID: u64 = 300_000;

/// Arguments of `cairn bench route`.
#[derive(Debug, clap::Args)]
pub struct RouteBenchArgs {
    #[command(flatten)]
    target: super::Endpoints,
    /// Tables looked up (created first when the database has fewer).
    #[arg(long, default_value_t = 10_000)]
    tables: u64,
    /// Table ids per GetRoutes call.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Concurrent clients (tasks, in --cache mode).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// gRPC connections shared by the clients [default: min(clients, 16)].
    #[arg(long)]
    connections: Option<usize>,
    /// Measured run, seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Measure client route-cache lookups instead of GetRoutes calls.
    #[arg(long)]
    cache: bool,
    /// Ask for serializable reads (no read barrier on the serving node).
    #[arg(long)]
    serializable: bool,
    /// Database holding the tables.
    #[arg(long, default_value = "bench_route")]
    database: String,
    /// Hash regions of each table created by the setup.
    #[arg(long, default_value_t = 8)]
    regions_per_table: u32,
    /// Simulated datanodes run during the setup (when tables must be created).
    #[arg(long, default_value_t = 3)]
    datanodes: u32,
    /// Concurrent CREATE TABLE calls of the setup.
    #[arg(long, default_value_t = 64)]
    setup_clients: usize,
    /// Report CPU (cores used during the run) and resident memory of this process, e.g. the
    /// serving node's pid; repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Serialize)]
struct CacheReport {
    hits: u64,
    misses: u64,
    fetches: u64,
    hit_ratio: f64,
    cached_tables: u64,
}

#[derive(Debug, Serialize)]
struct RouteBenchReport {
    endpoint: String,
    mode: &'static str,
    database: String,
    tables: u64,
    batch: usize,
    clients: usize,
    connections: usize,
    serializable: bool,
    duration_secs: u64,
    elapsed_secs: f64,
    calls: u64,
    calls_per_sec: f64,
    routes: u64,
    routes_per_sec: f64,
    errors: u64,
    first_error: Option<String>,
    latency_ms: Option<LatencyMs>,
    cache: Option<CacheReport>,
    processes: Vec<ProcessUsage>,
}

/// The ids of the first `tables` tables of `database`, creating missing ones first.
async fn prepare_tables(args: &RouteBenchArgs, quiet: bool) -> Result<Vec<u64>, BenchError> {
    let metas = meta_clients(&args.target.endpoints, args.setup_clients.clamp(1, 16))?;
    let meta = &metas[0];
    let listed = |e| BenchError::Endpoint(format!("list tables of {}: {e}", args.database));
    meta.create_database(CreateDatabaseRequest {
        catalog: String::new(),
        name: args.database.clone(),
        if_not_exists: true,
        options: Default::default(),
    })
    .await
    .map_err(|e| BenchError::Endpoint(format!("create database {}: {e}", args.database)))?;
    let existing = meta
        .list_all_tables("", &args.database)
        .await
        .map_err(listed)?;
    if (existing.len() as u64) < args.tables {
        let have: BTreeSet<String> = existing
            .into_iter()
            .map(|t| t.name.unwrap_or_default().name)
            .collect();
        let missing: Vec<u64> = (0..args.tables)
            .filter(|i| !have.contains(&bench_table_name(*i)))
            .collect();
        if !quiet {
            eprintln!(
                "bench route: creating {} tables x {} regions in {} on {} in-process datanodes",
                missing.len(),
                args.regions_per_table,
                args.database,
                args.datanodes
            );
        }
        let fleet = start_datanodes(meta, args.datanodes, ROUTE_FIRST_NODE_ID).await?;
        let outcome = create_tables(
            &metas,
            args.setup_clients.max(1),
            &args.database,
            missing,
            args.regions_per_table,
            !quiet,
        )
        .await;
        fleet.stop().await;
        if outcome.errors > 0 {
            return Err(BenchError::Endpoint(format!(
                "setup: {} tables could not be created; first error: {}",
                outcome.errors,
                outcome.first_error.unwrap_or_default()
            )));
        }
    }
    let tables = meta
        .list_all_tables("", &args.database)
        .await
        .map_err(listed)?;
    Ok(tables
        .iter()
        .take(args.tables as usize)
        .map(|t| t.id)
        .collect())
}

/// Counters shared by the client tasks.
struct Tally {
    measuring: AtomicBool,
    calls: AtomicU64,
    routes: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: String) {
        if self.measuring.load(Ordering::Relaxed) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
}

/// One RPC client: batches of ids in turn, starting at its own offset, until `stop`.
async fn rpc_client(
    mut rpc: MetaRpc<Channel>,
    ids: Arc<Vec<u64>>,
    batch: usize,
    offset: usize,
    serializable: bool,
    tally: Arc<Tally>,
    stop: Instant,
) -> Histogram {
    let mut latencies = Histogram::new();
    let mut at = offset;
    while Instant::now() < stop {
        let table_ids: Vec<u64> = (0..batch).map(|k| ids[(at + k) % ids.len()]).collect();
        at = (at + batch) % ids.len();
        let sent = Instant::now();
        match rpc
            .get_routes(GetRoutesRequest {
                table_ids,
                serializable,
            })
            .await
        {
            Ok(answer) if tally.measuring.load(Ordering::Relaxed) => {
                latencies.record(sent.elapsed());
                tally.calls.fetch_add(1, Ordering::Relaxed);
                let routes = answer.into_inner().routes.len() as u64;
                tally.routes.fetch_add(routes, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(status) => tally.error(format!("{:?}: {}", status.code(), status.message())),
        }
    }
    latencies
}

/// One cache task: looks up ids in turn from its own offset until `stop`.
async fn cache_client(
    cache: RouteCache,
    ids: Arc<Vec<u64>>,
    offset: usize,
    tally: Arc<Tally>,
    stop: Instant,
) {
    let mut at = offset;
    let mut done = 0u64;
    loop {
        for _ in 0..LOOKUPS_PER_CHECK {
            match cache.route(ids[at]).await {
                Ok(_) => done += 1,
                Err(e) => tally.error(e.to_string()),
            }
            at = (at + 1) % ids.len();
        }
        if Instant::now() >= stop {
            break;
        }
        tokio::task::yield_now().await;
    }
    tally.calls.fetch_add(done, Ordering::Relaxed);
    tally.routes.fetch_add(done, Ordering::Relaxed);
}

pub async fn run(args: RouteBenchArgs) -> Result<(), BenchError> {
    let connections = connections_for(args.clients, args.connections)?;
    if args.batch == 0 || args.batch > BATCH_MAX {
        return Err(BenchError::Usage(format!(
            "--batch must be in 1..={BATCH_MAX}"
        )));
    }
    if args.duration_secs == 0 || args.duration_secs > DURATION_SECS_MAX {
        return Err(BenchError::Usage(format!(
            "--duration-secs must be in 1..={DURATION_SECS_MAX}"
        )));
    }
    if args.tables == 0 || (args.cache && args.tables > ROUTE_CACHE_TABLES_MAX as u64) {
        return Err(BenchError::Usage(format!(
            "--tables must be at least 1 (and at most {ROUTE_CACHE_TABLES_MAX} with --cache, the cache's capacity)"
        )));
    }
    let quiet = args.output == OutputFormat::Json;
    let ids = Arc::new(prepare_tables(&args, quiet).await?);
    if ids.is_empty() {
        return Err(BenchError::Endpoint(format!(
            "no tables in {}",
            args.database
        )));
    }
    let endpoint = cairn_client::endpoint::normalize_endpoint(&args.target.endpoints[0])
        .map_err(|e| BenchError::Endpoint(format!("--endpoints: {e}")))?;
    if !quiet {
        eprintln!(
            "bench route ({}): {} tables, {} clients on {endpoint} for {} s{}",
            if args.cache { "cache" } else { "rpc" },
            ids.len(),
            args.clients,
            args.duration_secs,
            if args.cache {
                String::new()
            } else {
                format!(", {} ids per call", args.batch)
            }
        );
    }
    let tally = Arc::new(Tally {
        measuring: AtomicBool::new(false),
        calls: AtomicU64::new(0),
        routes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let stride = ids.len() / args.clients.max(1);
    let mut latencies = Histogram::new();
    let mut cache_report = None;
    let (sampler, elapsed);
    if args.cache {
        let client = MetaClient::new([endpoint.as_str()])
            .map_err(|e| BenchError::Endpoint(format!("--endpoints: {e}")))?;
        let cache = RouteCache::with_options(
            client,
            RouteCacheOptions {
                capacity: ids.len(),
                watch: true,
            },
        );
        // Warm: every route fetched once (by many tasks, as misses).
        let mut warm = tokio::task::JoinSet::new();
        for chunk in ids.chunks(ids.len().div_ceil(args.clients.min(64))) {
            let (cache, chunk, tally) = (cache.clone(), chunk.to_vec(), tally.clone());
            warm.spawn(async move {
                for id in chunk {
                    if let Err(e) = cache.route(id).await {
                        tally.error(e.to_string());
                    }
                }
            });
        }
        while warm.join_next().await.is_some() {}
        let before = cache.stats();
        tally.measuring.store(true, Ordering::Relaxed);
        sampler = ProcessSampler::start(&args.pid);
        let started = Instant::now();
        let stop = started + Duration::from_secs(args.duration_secs);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..args.clients {
            tasks.spawn(cache_client(
                cache.clone(),
                ids.clone(),
                c * stride,
                tally.clone(),
                stop,
            ));
        }
        while tasks.join_next().await.is_some() {}
        elapsed = started.elapsed();
        let after = cache.stats();
        let (hits, misses) = (after.hits - before.hits, after.misses - before.misses);
        cache_report = Some(CacheReport {
            hits,
            misses,
            fetches: after.fetches - before.fetches,
            hit_ratio: if hits + misses == 0 {
                0.0
            } else {
                hits as f64 / (hits + misses) as f64
            },
            cached_tables: after.cached_tables,
        });
    } else {
        let config = ClientConfig::default();
        let channels: Vec<Channel> = (0..connections)
            .map(|_| lazy_channel(&endpoint, &config))
            .collect::<Result<_, _>>()
            .map_err(|e| BenchError::Endpoint(format!("--endpoints: {e}")))?;
        let warm_up_end = Instant::now() + WARM_UP;
        let stop = warm_up_end + Duration::from_secs(args.duration_secs);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..args.clients {
            let rpc = MetaRpc::new(channels[c % channels.len()].clone())
                .max_decoding_message_size(RESPONSE_BYTES_MAX);
            tasks.spawn(rpc_client(
                rpc,
                ids.clone(),
                args.batch,
                c * stride,
                args.serializable,
                tally.clone(),
                stop,
            ));
        }
        tokio::time::sleep_until(warm_up_end.into()).await;
        tally.measuring.store(true, Ordering::Relaxed);
        sampler = ProcessSampler::start(&args.pid);
        let started = Instant::now();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(h) = joined {
                latencies.merge(&h);
            }
        }
        elapsed = started.elapsed();
    }
    let processes = sampler.finish();
    let calls = tally.calls.load(Ordering::Relaxed);
    let first_error = tally
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if calls == 0 {
        return Err(BenchError::AllFailed {
            workload: if args.cache {
                "route cache lookup"
            } else {
                "GetRoutes"
            },
            first_error: first_error.unwrap_or_default(),
        });
    }
    let secs = elapsed.as_secs_f64();
    let routes = tally.routes.load(Ordering::Relaxed);
    let report = RouteBenchReport {
        endpoint,
        mode: if args.cache { "cache" } else { "rpc" },
        database: args.database.clone(),
        tables: ids.len() as u64,
        batch: if args.cache { 1 } else { args.batch },
        clients: args.clients,
        connections: if args.cache { 1 } else { connections },
        serializable: args.serializable,
        duration_secs: args.duration_secs,
        elapsed_secs: secs,
        calls,
        calls_per_sec: calls as f64 / secs,
        routes,
        routes_per_sec: routes as f64 / secs,
        errors: tally.errors.load(Ordering::Relaxed),
        first_error,
        latency_ms: LatencyMs::from_histogram(&latencies),
        cache: cache_report,
        processes,
    };
    print(&report, args.output)
}

fn print(report: &RouteBenchReport, out: OutputFormat) -> Result<(), BenchError> {
    if out == OutputFormat::Json {
        let text = serde_json::to_string_pretty(report).map_err(BenchError::Json)?;
        println!("{text}");
        return Ok(());
    }
    let mut table = new_table(["METRIC", "VALUE"]);
    let mut row = |k: &str, v: String| {
        table.add_row(vec![k.to_string(), v]);
    };
    row("elapsed (s)", format!("{:.2}", report.elapsed_secs));
    if report.mode == "cache" {
        row("lookups", report.calls.to_string());
        row("lookups/s", format!("{:.0}", report.calls_per_sec));
    } else {
        row("GetRoutes calls", report.calls.to_string());
        row("calls/s", format!("{:.0}", report.calls_per_sec));
        row("routes returned", report.routes.to_string());
        row("routes/s", format!("{:.0}", report.routes_per_sec));
    }
    row("errors", report.errors.to_string());
    if let Some(e) = &report.first_error {
        row("first error", e.clone());
    }
    if let Some(l) = &report.latency_ms {
        row("call p50 (ms)", format!("{:.3}", l.p50));
        row("call p99 (ms)", format!("{:.3}", l.p99));
        row("call p99.9 (ms)", format!("{:.3}", l.p999));
        row("call max (ms)", format!("{:.3}", l.max));
    }
    if let Some(c) = &report.cache {
        row("cache hits", c.hits.to_string());
        row("cache misses", c.misses.to_string());
        row("GetRoutes fetches", c.fetches.to_string());
        row("hit ratio", format!("{:.4}", c.hit_ratio));
        row("cached tables", c.cached_tables.to_string());
    }
    for p in &report.processes {
        row(
            &format!("pid {} cpu (cores)", p.pid),
            p.cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
        );
        row(
            &format!("pid {} rss (MiB)", p.pid),
            p.rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        );
    }
    println!("{table}");
    Ok(())
}
