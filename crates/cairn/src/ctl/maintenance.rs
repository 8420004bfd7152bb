//! `cairn ctl maintenance`: while on, the leader moves no region on its own (no failover, no
//! scheduling), for rolling upgrades and restarts; replicated, so it survives a leader change.

use cairn_client::meta::MetaClient;
use cairn_types::json::MaintenanceJson;
use clap::Subcommand;

use super::output::{new_table, print_json, OutputFormat};
use super::table::json::utc_time;
use super::CtlError;

/// `cairn ctl maintenance` verbs.
#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Pause failover and every scheduler.
    On {
        /// Why, shown by `status` (at most 1024 bytes).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resume failover and scheduling.
    Off,
    /// Whether maintenance mode is on, since when and why.
    Status,
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: MaintenanceCommand,
) -> Result<(), CtlError> {
    let (what, set) = match &command {
        MaintenanceCommand::On { reason } => ("maintenance on", Some((true, reason.as_str()))),
        MaintenanceCommand::Off => ("maintenance off", Some((false, ""))),
        MaintenanceCommand::Status => ("maintenance status", None),
    };
    if let Some((on, reason)) = set {
        meta.set_maintenance(on, reason)
            .await
            .map_err(CtlError::call(what))?;
    }
    let state = meta
        .get_maintenance()
        .await
        .map_err(CtlError::call("maintenance status"))?;
    let json = MaintenanceJson {
        on: state.on,
        reason: state.reason,
        since_ms: state.since_ms,
    };
    match out {
        OutputFormat::Json => print_json(&json),
        OutputFormat::Table => {
            let mut table = new_table(["FIELD", "VALUE"]);
            table.add_row(vec![
                "maintenance".to_string(),
                if json.on { "on" } else { "off" }.to_string(),
            ]);
            let since = if json.since_ms == 0 {
                "-".to_string()
            } else {
                utc_time(json.since_ms)
            };
            table.add_row(vec!["since (UTC)".to_string(), since]);
            let reason = if json.reason.is_empty() {
                "-".to_string()
            } else {
                json.reason
            };
            table.add_row(vec!["reason".to_string(), reason]);
            println!("{table}");
            Ok(())
        }
    }
}
