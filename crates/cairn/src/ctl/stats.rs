//! `cairn ctl stats`: the stats history the leader keeps — a node's last reports, and a
//! region's load samples with the smoothed load the schedulers use.

use cairn_client::meta::MetaClient;
use cairn_server::api::http_stats::{node_stats_json, region_stats_json};
use cairn_types::json::{NodeStatsHistoryJson, RegionStatsHistoryJson};
use clap::Subcommand;

use super::output::{human_bytes, new_table, parse_id, print_json, OutputFormat};
use super::table::json::utc_time;
use super::CtlError;

/// `cairn ctl stats` verbs.
#[derive(Debug, Subcommand)]
pub enum StatsCommand {
    /// A node's last stats reports (at most 64), oldest first.
    Node {
        /// Node id (decimal, or hex with 0x).
        id: String,
    },
    /// A region's last load samples (at most 6, the window the schedulers smooth over) and
    /// its smoothed load.
    Region {
        /// Region id (decimal, or hex with 0x).
        id: String,
    },
}

/// A sample's time to the millisecond, UTC; samples come a heartbeat apart.
fn at(ms: u64) -> String {
    if ms == 0 {
        return utc_time(0);
    }
    format!("{}.{:03}", utc_time(ms), ms % 1000)
}

/// Where a sample came from: this leader's heartbeats, or the previous leader's summary.
fn source(restored: bool) -> &'static str {
    if restored {
        "restored"
    } else {
        "live"
    }
}

fn print_node(out: OutputFormat, h: NodeStatsHistoryJson) -> Result<(), CtlError> {
    match out {
        OutputFormat::Json => print_json(&h),
        OutputFormat::Table => {
            let mut table = new_table([
                "AT (UTC)",
                "INTERVAL MS",
                "WCUS",
                "RCUS",
                "REGIONS",
                "TABLES",
                "CPU",
                "LOAD",
                "DISK READ/S",
                "DISK WRITE/S",
                "SOURCE",
            ]);
            for s in &h.samples {
                table.add_row(vec![
                    at(s.at_ms),
                    s.report_interval_ms.to_string(),
                    s.wcus.to_string(),
                    s.rcus.to_string(),
                    s.region_count.to_string(),
                    s.table_count.to_string(),
                    format!("{:.2}", s.cpu_usage),
                    format!("{:.2}", s.load),
                    human_bytes(s.disk_read_bytes_per_sec.min(i64::MAX as u64) as i64),
                    human_bytes(s.disk_write_bytes_per_sec.min(i64::MAX as u64) as i64),
                    source(s.restored).to_string(),
                ]);
            }
            println!("node {}: {} reports", h.node_id, h.samples.len());
            println!("{table}");
            Ok(())
        }
    }
}

fn print_region(out: OutputFormat, h: RegionStatsHistoryJson) -> Result<(), CtlError> {
    match out {
        OutputFormat::Json => print_json(&h),
        OutputFormat::Table => {
            println!(
                "region {}: leader {}, {} approximately; smoothed over {} samples: {:.1} wcus, \
                 {:.1} rcus",
                h.region_id,
                h.leader_node,
                human_bytes(h.approximate_bytes.min(i64::MAX as u64) as i64),
                h.samples.len(),
                h.smoothed_wcus,
                h.smoothed_rcus
            );
            let mut table = new_table(["AT (UTC)", "WCUS", "RCUS", "SOURCE"]);
            for s in &h.samples {
                table.add_row(vec![
                    at(s.at_ms),
                    s.wcus.to_string(),
                    s.rcus.to_string(),
                    source(s.restored).to_string(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: StatsCommand,
) -> Result<(), CtlError> {
    let id = |raw: &str| parse_id(raw).map_err(|e| CtlError::Usage(format!("ID: {e}")));
    match command {
        StatsCommand::Node { id: raw } => {
            let id = id(&raw)?;
            let h = meta
                .get_node_stats(id)
                .await
                .map_err(CtlError::call(format!("stats node {id}")))?;
            print_node(out, node_stats_json(h))
        }
        StatsCommand::Region { id: raw } => {
            let id = id(&raw)?;
            let h = meta
                .get_region_stats(id)
                .await
                .map_err(CtlError::call(format!("stats region {id}")))?;
            print_region(out, region_stats_json(h))
        }
    }
}
