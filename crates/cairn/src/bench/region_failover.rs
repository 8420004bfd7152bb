//! `cairn bench region-failover`: how long a running Cairn cluster takes to make a dead
//! datanode's regions writable elsewhere, and how fast it drains a node.
//!
//! In-process simulated datanodes (cairn-sim's fleet: real heartbeat streams, region leases,
//! writes refused without one) hold tables created here. Each run waits for the victim's next
//! acknowledged heartbeat, kills it at once (its stream stops), and polls every region it led
//! until the stored route names another node *and* that node accepts a write (it holds a
//! lease). The run's time is from that last heartbeat to the last region writable; per-region
//! times are kept too. When the regions have follower copies (`cairn serve --region-followers`),
//! the run also times how long until every region has its follower count back, none on the
//! victim (`copies_ms`, replica-repair's work). The victim restarts before the next run, which
//! kills another node. Then
//! one node is drained and the rate of its led regions moving off is measured.
//!
//! JSON shape (`--output json`; fields may be added, never renamed):
//! `{"datanodes": u32, "regions": u64, "interval_ms": u64, "runs": [{"run": u64, "victim": u64,
//!   "regions": u64, "complete_ms": f64, "region_p50_ms": f64, "region_p99_ms": f64,
//!   "judged_ms": f64 | null, "gap_std_dev_ms": f64 | null, "copies_ms": f64 | null}],
//!   "complete_ms": {"p50": f64, "p99": f64, "max": f64, "min": f64, "mean": f64} | null,
//!   "drain": {"node": u64, "regions": u64, "seconds": f64, "regions_per_sec": f64} | null}`

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cairn_client::meta::MetaClient;
use cairn_client::proto::cairnpb::{CreateDatabaseRequest, DrainMode};
use cairn_sim::{Fleet, LoadPattern, SimConfig, WriteLoadConfig};
use serde::Serialize;

use super::histogram::Histogram;
use super::BenchError;
use crate::ctl::output::OutputFormat;

/// Bounds of the arguments.
const DATANODES_MAX: u32 = 1_000;
const REGIONS_MAX: u64 = 1_000_000;
const RUNS_MAX: u64 = 100;
/// The first simulated datanode's id (clear of the usual ones).
const FIRST_NODE_ID: u64 = 50_001;
/// How often regions are polled while they move.
const POLL_MS: u64 = 20;
/// Heartbeats each datanode has had acknowledged before the first kill: the leader's failure
/// detector judges a node by its first estimate until it has learned a few real gaps, and this
/// measures the failover of settled nodes.
const SETTLE_HEARTBEATS: u64 = 6;
/// Longest wait for any phase (setup, one failover, the drain).
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);
/// The database the bench's tables live in.
const DATABASE: &str = "bench_failover";

/// Arguments of `cairn bench region-failover`.
#[derive(Debug, clap::Args)]
pub struct RegionFailoverArgs {
    #[command(flatten)]
    target: super::Endpoints,
    /// Simulated datanodes.
    #[arg(long, default_value_t = 10)]
    datanodes: u32,
    /// Regions over all tables.
    #[arg(long, default_value_t = 10_000)]
    regions: u64,
    /// Regions per table.
    #[arg(long, default_value_t = 100)]
    regions_per_table: u32,
    /// Datanode kills to measure.
    #[arg(long, default_value_t = 5)]
    runs: u64,
    /// Heartbeat interval the datanodes ask for until the leader names its own, ms.
    #[arg(long, default_value_t = 3_000)]
    interval_ms: u64,
    /// Skip the drain measurement.
    #[arg(long)]
    no_drain: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Serialize)]
struct RunReport {
    run: u64,
    victim: u64,
    regions: u64,
    complete_ms: f64,
    region_p50_ms: f64,
    region_p99_ms: f64,
    /// From the leader's `node_failed` event: how long the victim had been silent when judged,
    /// and the gap deviation the detector had learned, ms.
    judged_ms: Option<f64>,
    gap_std_dev_ms: Option<f64>,
    /// From the same last heartbeat until every region had as many follower copies off the
    /// victim as it had before the kill (replica-repair); None when no region had followers.
    copies_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Summary {
    p50: f64,
    p99: f64,
    max: f64,
    min: f64,
    mean: f64,
}

#[derive(Debug, Serialize)]
struct DrainReport {
    node: u64,
    regions: u64,
    seconds: f64,
    regions_per_sec: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    datanodes: u32,
    regions: u64,
    interval_ms: u64,
    runs: Vec<RunReport>,
    complete_ms: Option<Summary>,
    drain: Option<DrainReport>,
}

fn ms(h: &Histogram, q: f64) -> f64 {
    h.value_at_quantile_us(q).unwrap_or(0) as f64 / 1000.0
}

fn check(args: &RegionFailoverArgs) -> Result<(), BenchError> {
    let bad = |m: String| Err(BenchError::Usage(m));
    if !(2..=DATANODES_MAX).contains(&args.datanodes) {
        return bad(format!("--datanodes: 2..={DATANODES_MAX}"));
    }
    if !(1..=REGIONS_MAX).contains(&args.regions) {
        return bad(format!("--regions: 1..={REGIONS_MAX}"));
    }
    if args.regions_per_table == 0 {
        return bad("--regions-per-table: at least 1".into());
    }
    if !(1..=RUNS_MAX).contains(&args.runs) {
        return bad(format!("--runs: 1..={RUNS_MAX}"));
    }
    Ok(())
}

async fn until<T, F, Fut>(what: &str, mut f: F) -> Result<T, BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Cluster(format!("timed out waiting for {what}")));
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// Region → leader, over the bench's tables.
async fn leaders(meta: &MetaClient, tables: &[u64]) -> Option<BTreeMap<u64, u64>> {
    let routes = meta.get_routes(tables).await.ok()?;
    Some(
        routes
            .routes
            .iter()
            .flat_map(|t| t.regions.iter().map(|r| (r.region_id, r.leader_node)))
            .collect(),
    )
}

/// Region → its follower nodes, over the bench's tables.
async fn followers(meta: &MetaClient, tables: &[u64]) -> Option<BTreeMap<u64, Vec<u64>>> {
    let routes = meta.get_routes(tables).await.ok()?;
    Some(
        routes
            .routes
            .iter()
            .flat_map(|t| {
                t.regions
                    .iter()
                    .map(|r| (r.region_id, r.follower_nodes.clone()))
            })
            .collect(),
    )
}

/// Whether `leader` accepts a write of `region` now (it leads it and holds a lease).
fn writable(fleet: &Fleet, region: u64, leader: u64) -> bool {
    fleet
        .node(leader)
        .is_some_and(|n| n.write(region, 1).is_ok())
}

/// Region → leader when every region is writable on its leader.
async fn all_writable(
    meta: &MetaClient,
    fleet: &Fleet,
    tables: &[u64],
) -> Option<BTreeMap<u64, u64>> {
    let l = leaders(meta, tables).await?;
    l.iter().all(|(r, n)| writable(fleet, *r, *n)).then_some(l)
}

pub async fn run(args: RegionFailoverArgs) -> Result<(), BenchError> {
    check(&args)?;
    let meta = MetaClient::new(args.target.endpoints.clone())
        .map_err(|e| BenchError::Endpoint(e.to_string()))?;
    let config = SimConfig {
        datanodes: args.datanodes,
        regions_per_node: 0,
        frontends: 0,
        interval_ms: args.interval_ms,
        load: LoadPattern::Constant,
        seed: 1,
        first_node_id: FIRST_NODE_ID,
    };
    let mut fleet =
        Fleet::start(meta.clone(), &config, None).map_err(|e| BenchError::Usage(e.to_string()))?;
    let ids: Vec<u64> = (FIRST_NODE_ID..FIRST_NODE_ID + u64::from(args.datanodes)).collect();
    until("the datanodes to register", || async {
        let nodes = meta.list_nodes(0).await.ok()?;
        let alive = nodes
            .nodes
            .iter()
            .filter(|n| {
                n.state == "alive" && n.identity.as_ref().is_some_and(|i| ids.contains(&i.id))
            })
            .count();
        (alive == ids.len()).then_some(())
    })
    .await?;
    // Tables: regions / regions_per_table of them, created once (a rerun reuses them).
    let _ = meta
        .create_database(CreateDatabaseRequest {
            name: DATABASE.into(),
            if_not_exists: true,
            ..Default::default()
        })
        .await;
    let per_table = args.regions_per_table;
    let table_count = args.regions.div_ceil(u64::from(per_table)) as u32;
    let load = WriteLoadConfig {
        database: DATABASE.into(),
        partitions: per_table,
        ..WriteLoadConfig::default()
    };
    let mut tables = Vec::new();
    for i in 0..table_count {
        let mut req = load.create_table_request(i);
        req.if_not_exists = true;
        let created = meta
            .create_table(req)
            .await
            .map_err(|e| BenchError::Cluster(format!("create table {i}: {e}")))?;
        tables.extend(created.table.map(|t| t.id));
    }
    eprintln!(
        "bench: {} tables, {} regions on {} datanodes",
        tables.len(),
        u64::from(table_count) * u64::from(per_table),
        args.datanodes
    );
    until("every region writable", || {
        all_writable(&meta, &fleet, &tables)
    })
    .await?;
    until("the datanodes to settle", || {
        let settled = fleet
            .status()
            .iter()
            .all(|s| s.heartbeat.acknowledged >= SETTLE_HEARTBEATS);
        async move { settled.then_some(()) }
    })
    .await?;
    let mut runs = Vec::new();
    let mut complete = Histogram::new();
    let mut killed: BTreeSet<u64> = BTreeSet::new();
    for run in 1..=args.runs {
        let before = until("every region writable", || {
            all_writable(&meta, &fleet, &tables)
        })
        .await?;
        // The busiest node not killed before.
        let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
        for leader in before.values() {
            *counts.entry(*leader).or_default() += 1;
        }
        let victim = counts
            .iter()
            .filter(|(n, _)| !killed.contains(n))
            .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))
            .map(|(n, _)| *n)
            .ok_or_else(|| BenchError::Cluster("no datanode leads a region".into()))?;
        let led: Vec<u64> = before
            .iter()
            .filter(|(_, l)| **l == victim)
            .map(|(r, _)| *r)
            .collect();
        let copies_before = followers(&meta, &tables)
            .await
            .ok_or_else(|| BenchError::Cluster("reading the routes".into()))?;
        // Kill right after an acknowledged heartbeat: that is its last one.
        let acked = |fleet: &Fleet| {
            fleet
                .status()
                .iter()
                .find(|s| s.id == victim)
                .map_or(0, |s| s.heartbeat.acknowledged)
        };
        let seen = acked(&fleet);
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while acked(&fleet) == seen && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let last_heartbeat = Instant::now();
        fleet
            .kill(victim)
            .await
            .map_err(|e| BenchError::Cluster(e.to_string()))?;
        killed.insert(victim);
        let mut pending: BTreeSet<u64> = led.iter().copied().collect();
        let mut per_region = Histogram::new();
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while !pending.is_empty() {
            if Instant::now() >= deadline {
                return Err(BenchError::Cluster(format!(
                    "run {run}: {} regions of node {victim} still not writable",
                    pending.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            let Some(now_leaders) = leaders(&meta, &tables).await else {
                continue;
            };
            let at = last_heartbeat.elapsed();
            pending.retain(|r| {
                let done = now_leaders
                    .get(r)
                    .is_some_and(|l| *l != victim && writable(&fleet, *r, *l));
                if done {
                    per_region.record(at);
                }
                !done
            });
        }
        let took = last_heartbeat.elapsed();
        complete.record(took);
        let copies_ms = if copies_before.values().all(Vec::is_empty) {
            None
        } else {
            let made_up = |now: &BTreeMap<u64, Vec<u64>>| {
                copies_before.iter().all(|(r, was)| {
                    now.get(r)
                        .is_some_and(|f| f.len() >= was.len() && !f.contains(&victim))
                })
            };
            until("every region's follower copies made up", || async {
                let now = followers(&meta, &tables).await?;
                made_up(&now).then_some(())
            })
            .await?;
            Some(last_heartbeat.elapsed().as_secs_f64() * 1000.0)
        };
        let judged = meta
            .list_events(0, "node_failed", 1)
            .await
            .ok()
            .and_then(|r| r.events.into_iter().next())
            .filter(|e| e.subject == format!("node {victim}"));
        let figure =
            |name: &str| -> Option<f64> { judged.as_ref()?.figures.get(name)?.parse().ok() };
        let report = RunReport {
            run,
            victim,
            regions: led.len() as u64,
            complete_ms: took.as_secs_f64() * 1000.0,
            region_p50_ms: ms(&per_region, 0.5),
            region_p99_ms: ms(&per_region, 0.99),
            judged_ms: figure("silent_ms"),
            gap_std_dev_ms: figure("gap_std_dev_ms"),
            copies_ms,
        };
        eprintln!(
            "bench: run {run}: node {victim}, {} regions writable elsewhere {:.0} ms after its \
             last heartbeat",
            report.regions, report.complete_ms
        );
        runs.push(report);
        fleet
            .restart(victim)
            .await
            .map_err(|e| BenchError::Cluster(e.to_string()))?;
    }
    let drain = if args.no_drain {
        None
    } else {
        Some(measure_drain(&meta, &fleet, &tables, &killed).await?)
    };
    let report = Report {
        datanodes: args.datanodes,
        regions: u64::from(table_count) * u64::from(per_table),
        interval_ms: args.interval_ms,
        runs,
        complete_ms: (complete.count() > 0).then(|| Summary {
            p50: ms(&complete, 0.5),
            p99: ms(&complete, 0.99),
            max: complete.max_us().unwrap_or(0) as f64 / 1000.0,
            min: ms(&complete, 0.0),
            mean: complete.mean_us().unwrap_or(0.0) / 1000.0,
        }),
        drain,
    };
    fleet.stop().await;
    print(&report, args.output)
}

/// Drains the node leading the most regions (one not killed, so the moves are downgrades that
/// are acknowledged) and measures regions moved per second.
async fn measure_drain(
    meta: &MetaClient,
    fleet: &Fleet,
    tables: &[u64],
    killed: &BTreeSet<u64>,
) -> Result<DrainReport, BenchError> {
    let before = until("every region writable", || {
        all_writable(meta, fleet, tables)
    })
    .await?;
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for leader in before.values() {
        *counts.entry(*leader).or_default() += 1;
    }
    let (node, regions) = counts
        .iter()
        .filter(|(n, _)| !killed.contains(n))
        .max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n)))
        .map(|(n, c)| (*n, *c))
        .ok_or_else(|| BenchError::Cluster("no datanode to drain".into()))?;
    let start = Instant::now();
    meta.drain_node(node, DrainMode::Drain)
        .await
        .map_err(|e| BenchError::Cluster(format!("drain: {e}")))?;
    until("the drained node to lead nothing", || async {
        let l = leaders(meta, tables).await?;
        l.iter()
            .all(|(r, n)| *n != node && writable(fleet, *r, *n))
            .then_some(())
    })
    .await?;
    let seconds = start.elapsed().as_secs_f64();
    meta.drain_node(node, DrainMode::Cancel)
        .await
        .map_err(|e| BenchError::Cluster(format!("cancel drain: {e}")))?;
    Ok(DrainReport {
        node,
        regions,
        seconds,
        regions_per_sec: regions as f64 / seconds,
    })
}

fn print(report: &Report, out: OutputFormat) -> Result<(), BenchError> {
    match out {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(report).map_err(BenchError::Json)?;
            println!("{text}");
        }
        OutputFormat::Table => {
            println!(
                "region failover: {} datanodes, {} regions, heartbeat interval asked {} ms",
                report.datanodes, report.regions, report.interval_ms
            );
            println!(
                "run  victim  regions  complete_ms  region_p50_ms  region_p99_ms  judged_ms  \
                 gap_std_ms  copies_ms"
            );
            let opt = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
            for r in &report.runs {
                println!(
                    "{:>3}  {:>6}  {:>7}  {:>11.0}  {:>13.0}  {:>13.0}  {:>9}  {:>10}  {:>9}",
                    r.run,
                    r.victim,
                    r.regions,
                    r.complete_ms,
                    r.region_p50_ms,
                    r.region_p99_ms,
                    opt(r.judged_ms),
                    opt(r.gap_std_dev_ms),
                    opt(r.copies_ms)
                );
            }
            if let Some(s) = &report.complete_ms {
                println!(
                    "complete (last heartbeat -> every region writable): p50 {:.0} ms, p99 {:.0} \
                     ms, max {:.0} ms, min {:.0} ms",
                    s.p50, s.p99, s.max, s.min
                );
            }
            if let Some(d) = &report.drain {
                println!(
                    "drain: node {} led {} regions, moved in {:.2} s ({:.0} regions/s)",
                    d.node, d.regions, d.seconds, d.regions_per_sec
                );
            }
        }
    }
    Ok(())
}
