//! `cairn bench ddl`: N concurrent clients create T tables of R hash regions each in a fresh
//! database, optionally against D simulated datanodes run in this process (cairn-sim, which
//! really open and close the regions they are told to); reports tables per second, the latency
//! of each CREATE TABLE, errors, the regions the datanodes hold afterwards, optionally the time
//! to drop the whole database, and the CPU and memory of given server processes (e.g. the
//! leader's RSS once 100k tables x 10 regions are loaded).
//!
//! JSON shape (stable; fields may be added, never renamed):
//! `{"endpoints": [str], "clients": u64, "connections": u64, "tables": u64,
//!   "regions_per_table": u32, "datanodes": u32, "database": str, "created": u64,
//!   "errors": u64, "first_error": str | null, "elapsed_secs": f64, "tables_per_sec": f64,
//!   "regions_per_sec": f64,
//!   "latency_ms": {"p50": f64, "p99": f64, "p999": f64, "mean": f64, "max": f64} | null,
//!   "regions_open": u64 | null,
//!   "drop": {"elapsed_secs": f64, "dropped_tables": u64, "regions_open_after": u64 | null,
//!            "error": str | null} | null,
//!   "processes": [{"pid": u32, "cpu_cores": f64 | null, "rss_kib": u64 | null}]}`
//!
//! `tables_per_sec` counts created tables over the wall time of the creation phase; latencies
//! are of successful creates. `regions_open` is what the in-process datanodes hold (null
//! without `--datanodes`); `cpu_cores` covers the creation phase, `rss_kib` is read after it.

pub mod setup;

use std::time::{Duration, Instant};

use cairn_client::meta::unix_time_ms;
use cairn_client::proto::cairnpb::{CreateDatabaseRequest, DropDatabaseRequest};
use serde::Serialize;

use super::report::LatencyMs;
use super::BenchError;
use crate::ctl::output::{new_table, OutputFormat};
use setup::{
    connections_for, create_tables, meta_clients, regions_held, start_datanodes, ProcessSampler,
    ProcessUsage,
};

/// Most tables one run creates.
const TABLES_MAX: u64 = 10_000_000;
/// Most regions per table (the server's `regions_per_table_max`).
const REGIONS_PER_TABLE_MAX: u32 = 1_024;
/// Id of the first simulated datanode: apart from `cairn sim` (1000) and `bench heartbeat`
/// (100,000), so the benchmarks can run beside them.
const DDL_FIRST_NODE_ID: u64 = 200_000;

/// Arguments of `cairn bench ddl`.
#[derive(Debug, clap::Args)]
pub struct DdlBenchArgs {
    #[command(flatten)]
    target: super::Endpoints,
    /// Concurrent clients, each with one CREATE TABLE in flight.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// gRPC connections shared by the clients [default: min(clients, 16)].
    #[arg(long)]
    connections: Option<usize>,
    /// Tables to create.
    #[arg(long, default_value_t = 1_000)]
    tables: u64,
    /// Hash regions per table.
    #[arg(long, default_value_t = 8)]
    regions_per_table: u32,
    /// Simulated datanodes to run in this process (0: rely on datanodes already connected).
    #[arg(long, default_value_t = 0)]
    datanodes: u32,
    /// Database to create the tables in [default: bench_ddl_<unix ms>, new each run].
    #[arg(long)]
    database: Option<String>,
    /// Drop the database afterwards and report how long it took.
    #[arg(long)]
    drop: bool,
    /// Report CPU (cores used while creating) and resident memory of this process, e.g. the
    /// leader's pid; repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Serialize)]
struct DropReport {
    elapsed_secs: f64,
    dropped_tables: u64,
    regions_open_after: Option<u64>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct DdlBenchReport {
    endpoints: Vec<String>,
    clients: usize,
    connections: usize,
    tables: u64,
    regions_per_table: u32,
    datanodes: u32,
    database: String,
    created: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed_secs: f64,
    tables_per_sec: f64,
    regions_per_sec: f64,
    latency_ms: Option<LatencyMs>,
    regions_open: Option<u64>,
    drop: Option<DropReport>,
    processes: Vec<ProcessUsage>,
}

pub async fn run(args: DdlBenchArgs) -> Result<(), BenchError> {
    let connections = connections_for(args.clients, args.connections)?;
    if args.tables == 0 || args.tables > TABLES_MAX {
        return Err(BenchError::Usage(format!(
            "--tables must be in 1..={TABLES_MAX}"
        )));
    }
    if args.regions_per_table == 0 || args.regions_per_table > REGIONS_PER_TABLE_MAX {
        return Err(BenchError::Usage(format!(
            "--regions-per-table must be in 1..={REGIONS_PER_TABLE_MAX}"
        )));
    }
    let metas = meta_clients(&args.target.endpoints, connections)?;
    let endpoints = metas[0].endpoints().to_vec();
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("bench_ddl_{}", unix_time_ms()));
    let table_out = args.output == OutputFormat::Table;
    if table_out {
        eprintln!(
            "bench ddl: {} tables x {} regions into {database} with {} clients over {connections} connections to {}; {} in-process datanodes",
            args.tables,
            args.regions_per_table,
            args.clients,
            endpoints.join(","),
            args.datanodes
        );
    }
    let fleet = match args.datanodes {
        0 => None,
        n => Some(start_datanodes(&metas[0], n, DDL_FIRST_NODE_ID).await?),
    };
    let created_db = metas[0]
        .create_database(CreateDatabaseRequest {
            catalog: String::new(),
            name: database.clone(),
            if_not_exists: true,
            options: Default::default(),
        })
        .await;
    if let Err(e) = created_db {
        if let Some(fleet) = fleet {
            fleet.stop().await;
        }
        return Err(BenchError::Endpoint(format!(
            "create database {database}: {e}"
        )));
    }

    let sampler = ProcessSampler::start(&args.pid);
    let outcome = create_tables(
        &metas,
        args.clients,
        &database,
        (0..args.tables).collect(),
        args.regions_per_table,
        table_out,
    )
    .await;
    let processes = sampler.finish();
    let regions_open = fleet.as_ref().map(regions_held);

    let drop = if args.drop {
        let started = Instant::now();
        let answer = metas[0]
            .drop_database(DropDatabaseRequest {
                catalog: String::new(),
                name: database.clone(),
                if_exists: true,
            })
            .await;
        let elapsed_secs = started.elapsed().as_secs_f64();
        // Regions are closed chunk by chunk before the drop answers; give the last replies a
        // moment to be counted.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some(match answer {
            Ok(r) => DropReport {
                elapsed_secs,
                dropped_tables: r.dropped_tables,
                regions_open_after: fleet.as_ref().map(regions_held),
                error: None,
            },
            Err(e) => DropReport {
                elapsed_secs,
                dropped_tables: 0,
                regions_open_after: fleet.as_ref().map(regions_held),
                error: Some(e.to_string()),
            },
        })
    } else {
        None
    };
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    if outcome.created == 0 {
        return Err(BenchError::AllFailed {
            workload: "create table",
            first_error: outcome.first_error.unwrap_or_default(),
        });
    }
    let secs = outcome.elapsed.as_secs_f64();
    let report = DdlBenchReport {
        endpoints,
        clients: args.clients,
        connections,
        tables: args.tables,
        regions_per_table: args.regions_per_table,
        datanodes: args.datanodes,
        database,
        created: outcome.created,
        errors: outcome.errors,
        first_error: outcome.first_error,
        elapsed_secs: secs,
        tables_per_sec: outcome.created as f64 / secs,
        regions_per_sec: (outcome.created * u64::from(args.regions_per_table)) as f64 / secs,
        latency_ms: LatencyMs::from_histogram(&outcome.latencies),
        regions_open,
        drop,
        processes,
    };
    print(&report, args.output)
}

fn print(report: &DdlBenchReport, out: OutputFormat) -> Result<(), BenchError> {
    if out == OutputFormat::Json {
        let text = serde_json::to_string_pretty(report).map_err(BenchError::Json)?;
        println!("{text}");
        return Ok(());
    }
    let mut table = new_table(["METRIC", "VALUE"]);
    let mut row = |k: &str, v: String| {
        table.add_row(vec![k.to_string(), v]);
    };
    row(
        "tables created",
        format!("{} of {}", report.created, report.tables),
    );
    row("errors", report.errors.to_string());
    if let Some(e) = &report.first_error {
        row("first error", e.clone());
    }
    row("elapsed (s)", format!("{:.2}", report.elapsed_secs));
    row("tables/s", format!("{:.1}", report.tables_per_sec));
    row("regions/s", format!("{:.0}", report.regions_per_sec));
    if let Some(l) = &report.latency_ms {
        row("create p50 (ms)", format!("{:.2}", l.p50));
        row("create p99 (ms)", format!("{:.2}", l.p99));
        row("create p99.9 (ms)", format!("{:.2}", l.p999));
        row("create max (ms)", format!("{:.2}", l.max));
    }
    if let Some(open) = report.regions_open {
        row("regions open on datanodes", open.to_string());
    }
    if let Some(d) = &report.drop {
        row("drop database (s)", format!("{:.2}", d.elapsed_secs));
        row("tables dropped", d.dropped_tables.to_string());
        if let Some(open) = d.regions_open_after {
            row("regions open after drop", open.to_string());
        }
        if let Some(e) = &d.error {
            row("drop error", e.clone());
        }
    }
    for p in &report.processes {
        row(
            &format!("pid {} cpu while creating (cores)", p.pid),
            p.cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
        );
        row(
            &format!("pid {} rss after creating (MiB)", p.pid),
            p.rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
        );
    }
    println!("{table}");
    Ok(())
}
