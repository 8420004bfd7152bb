//! `cairn ctl region`: where a region is (its route, its write lease as the Cairn leader sees
//! it, any migration in flight), and moving its leadership to another datanode.

use cairn_client::meta::MetaClient;
use cairn_server::api::http_ops::region_json;
use cairn_types::json::RegionJson;
use clap::Subcommand;
use serde::Serialize;

use super::output::{self, new_table, print_json, OutputFormat};
use super::table::json::utc_time;
use super::table::spec::parse_seconds;
use super::CtlError;

/// `cairn ctl region` verbs.
#[derive(Debug, Subcommand)]
pub enum RegionCommand {
    /// Where a region is: leader, followers, lease, migration in flight.
    Show {
        /// Region id (decimal, or hex with 0x): the table id in the high 32 bits, the region
        /// number in the low 32, as `route get` prints it.
        #[arg(value_parser = output::parse_id)]
        region_id: u64,
    },
    /// Moves a region's leadership to another datanode; returns once it is writable there, or
    /// rolled back.
    Migrate {
        #[arg(value_parser = output::parse_id)]
        region_id: u64,
        /// The datanode to lead it: alive, not its leader now.
        #[arg(long, value_parser = output::parse_id)]
        to: u64,
        /// Roll back unless done by then: seconds, or a number with s, m or h (server default
        /// 60s, at most its ddl_timeout_ms).
        #[arg(long)]
        timeout: Option<String>,
    },
}

#[derive(Serialize)]
struct RegionShowJson {
    region: RegionJson,
}

#[derive(Serialize)]
struct MigratedJson {
    region_id: u64,
    procedure_id: u64,
    revision: i64,
    region: RegionJson,
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: RegionCommand,
) -> Result<(), CtlError> {
    match command {
        RegionCommand::Show { region_id } => {
            let region = fetch(meta, region_id).await?;
            match out {
                OutputFormat::Json => print_json(&RegionShowJson { region }),
                OutputFormat::Table => {
                    println!("{}", show_table(&region));
                    Ok(())
                }
            }
        }
        RegionCommand::Migrate {
            region_id,
            to,
            timeout,
        } => {
            let timeout_ms = match timeout.as_deref() {
                None => 0,
                Some(raw) => parse_seconds("--timeout", raw)
                    .map_err(CtlError::Usage)?
                    .saturating_mul(1_000),
            };
            if timeout.is_some() && timeout_ms == 0 {
                return Err(CtlError::Usage("--timeout: must be more than 0".into()));
            }
            let what = format!("region migrate {region_id} --to {to}");
            let done = meta
                .migrate_region(region_id, to, timeout_ms)
                .await
                .map_err(CtlError::call(what.clone()))?;
            let region = fetch(meta, region_id).await?;
            match out {
                OutputFormat::Json => print_json(&MigratedJson {
                    region_id,
                    procedure_id: done.procedure_id,
                    revision: done.revision,
                    region,
                }),
                OutputFormat::Table => {
                    println!(
                        "region {region_id} is led by node {} (procedure {})",
                        region.leader_node, done.procedure_id
                    );
                    Ok(())
                }
            }
        }
    }
}

/// The region as the leader sees it now.
async fn fetch(meta: &MetaClient, region_id: u64) -> Result<RegionJson, CtlError> {
    let view = meta
        .get_region(region_id)
        .await
        .map_err(CtlError::call(format!("region show {region_id}")))?;
    Ok(region_json(view))
}

fn show_table(r: &RegionJson) -> comfy_table::Table {
    let mut table = new_table(["FIELD", "VALUE"]);
    let mut row = |k: &str, v: String| {
        table.add_row(vec![k.to_string(), v]);
    };
    let list = |ids: &[u64]| {
        if ids.is_empty() {
            "-".to_string()
        } else {
            ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    };
    row("region id", r.region_id.to_string());
    row("table", format!("{} (id {})", r.table, r.table_id));
    row("region number", r.region_number.to_string());
    row("leader", format!("{} ({})", r.leader_node, r.leader_state));
    row("followers", list(&r.follower_nodes));
    row("route version", r.route_version.to_string());
    row(
        "lease",
        r.lease.as_ref().map_or_else(
            || "none may be held".to_string(),
            |l| format!("node {} for up to {} ms", l.holder, l.remaining_ms),
        ),
    );
    row(
        "migration",
        r.migration.as_ref().map_or_else(
            || "-".to_string(),
            |m| {
                format!(
                    "procedure {}: {} -> {} at {} ({}, started {})",
                    m.procedure_id,
                    m.from_node,
                    m.to_node,
                    m.step,
                    m.reason,
                    utc_time(m.started_ms)
                )
            },
        ),
    );
    table
}
