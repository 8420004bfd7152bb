//! What `cairn bench` prints: one row per workload, as a table or as JSON.
//!
//! JSON shape (stable; fields may be added, never renamed):
//! `{"endpoints": [str], "clients": u64, "connections": u64, "total": u64 | null,
//!   "duration_secs": u64 | null, "value_size": u64, "key_space": u64,
//!   "workloads": [{"workload": "put" | "range-linearizable" | "range-serializable",
//!     "requests": u64, "errors": u64, "elapsed_secs": f64, "throughput_rps": f64,
//!     "latency_ms": {"p50": f64, "p99": f64, "p999": f64, "mean": f64, "max": f64} | null,
//!     "first_error": str | null, "rss_kib": [{"pid": u32, "kib": u64 | null}]}]}`
//!
//! `requests` counts completed requests (successes and errors); `throughput_rps` counts
//! successes per second of wall time; latencies are of successful requests only (`null` when
//! there were none). `rss_kib` is the resident memory of each `--pid` after the workload.

use comfy_table::Table;
use serde::Serialize;

use super::histogram::Histogram;
use super::BenchError;
use crate::ctl::output::{new_table, OutputFormat};

/// The whole report.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub connections: usize,
    pub total: Option<u64>,
    pub duration_secs: Option<u64>,
    pub value_size: usize,
    pub key_space: u64,
    pub workloads: Vec<WorkloadReport>,
}

/// The result of one workload.
#[derive(Debug, Serialize)]
pub struct WorkloadReport {
    pub workload: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub elapsed_secs: f64,
    pub throughput_rps: f64,
    pub latency_ms: Option<LatencyMs>,
    pub first_error: Option<String>,
    pub rss_kib: Vec<ProcessRss>,
}

/// Latency summary of the successful requests, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub mean: f64,
    pub max: f64,
}

/// Resident memory of one watched process.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ProcessRss {
    pub pid: u32,
    pub kib: Option<u64>,
}

impl LatencyMs {
    /// From a histogram in microseconds; `None` when it is empty.
    pub fn from_histogram(h: &Histogram) -> Option<Self> {
        if h.count() == 0 {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencyMs {
            p50: ms(h.value_at_quantile_us(0.5)?),
            p99: ms(h.value_at_quantile_us(0.99)?),
            p999: ms(h.value_at_quantile_us(0.999)?),
            mean: h.mean_us()? / 1000.0,
            max: ms(h.max_us()?),
        })
    }
}

/// Prints the configuration line (table output only; JSON carries it in the document).
pub fn print_preamble(report: &BenchReport, out: OutputFormat) {
    if out == OutputFormat::Table {
        let amount = match (report.total, report.duration_secs) {
            (_, Some(secs)) => format!("{secs} s per workload"),
            (Some(total), None) => format!("{total} requests per workload"),
            (None, None) => String::new(),
        };
        eprintln!(
            "bench kv: {} clients over {} connections to {}; {amount}; values {} B; key space {}",
            report.clients,
            report.connections,
            report.endpoints.join(","),
            report.value_size,
            report.key_space
        );
    }
}

/// Prints the report.
pub fn print(report: &BenchReport, out: OutputFormat) -> Result<(), BenchError> {
    match out {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(report).map_err(BenchError::Json)?;
            println!("{text}");
        }
        OutputFormat::Table => println!("{}", table(report)),
    }
    Ok(())
}

fn table(report: &BenchReport) -> Table {
    let with_rss = report.workloads.iter().any(|w| !w.rss_kib.is_empty());
    let mut headers = vec![
        "WORKLOAD",
        "REQUESTS",
        "ERRORS",
        "ELAPSED (s)",
        "THROUGHPUT (req/s)",
        "P50 (ms)",
        "P99 (ms)",
        "P99.9 (ms)",
        "MAX (ms)",
    ];
    if with_rss {
        headers.push("RSS (MiB)");
    }
    let mut table = new_table(headers);
    for w in &report.workloads {
        let lat = |f: fn(&LatencyMs) -> f64| {
            w.latency_ms
                .as_ref()
                .map_or_else(|| "-".to_string(), |l| format!("{:.3}", f(l)))
        };
        let mut row = vec![
            w.workload.to_string(),
            w.requests.to_string(),
            w.errors.to_string(),
            format!("{:.2}", w.elapsed_secs),
            format!("{:.0}", w.throughput_rps),
            lat(|l| l.p50),
            lat(|l| l.p99),
            lat(|l| l.p999),
            lat(|l| l.max),
        ];
        if with_rss {
            let cells: Vec<String> = w
                .rss_kib
                .iter()
                .map(|p| match p.kib {
                    Some(kib) => format!("{}: {:.1}", p.pid, kib as f64 / 1024.0),
                    None => format!("{}: -", p.pid),
                })
                .collect();
            row.push(cells.join(", "));
        }
        table.add_row(row);
    }
    table
}
