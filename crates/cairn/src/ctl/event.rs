//! `cairn ctl event list`: the leader's decisions — failure judgements, failovers, migrations,
//! drains and maintenance switches — with the figures behind them, newest first.

use cairn_client::meta::MetaClient;
use cairn_server::api::http_ops::event_json;
use cairn_types::json::EventJson;
use clap::Subcommand;
use serde::Serialize;

use super::output::{new_table, print_json, OutputFormat};
use super::table::json::utc_time;
use super::table::spec::parse_seconds;
use super::CtlError;

/// `cairn ctl event` verbs.
#[derive(Debug, Subcommand)]
pub enum EventCommand {
    /// Events, newest first.
    List {
        /// Only events of the last D: seconds, or a number with s, m, h or d.
        #[arg(long)]
        since: Option<String>,
        /// Only this kind: node_failed, node_recovered, failover, migration, drain,
        /// evict_leaders, maintenance.
        #[arg(long)]
        kind: Option<String>,
        /// At most N (server default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
}

#[derive(Serialize)]
struct EventListJson {
    events: Vec<EventJson>,
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: EventCommand,
) -> Result<(), CtlError> {
    let EventCommand::List { since, kind, limit } = command;
    let since_ms = match since.as_deref() {
        None => 0,
        Some(raw) => {
            let ago_ms = parse_seconds("--since", raw)
                .map_err(CtlError::Usage)?
                .saturating_mul(1_000);
            cairn_client::meta::unix_time_ms().saturating_sub(ago_ms)
        }
    };
    let response = meta
        .list_events(since_ms, kind.as_deref().unwrap_or(""), limit.unwrap_or(0))
        .await
        .map_err(CtlError::call("event list"))?;
    let events: Vec<EventJson> = response.events.into_iter().map(event_json).collect();
    match out {
        OutputFormat::Json => print_json(&EventListJson { events }),
        OutputFormat::Table => {
            let mut table = new_table(["ID", "AT (UTC)", "KIND", "SUBJECT", "MESSAGE", "FIGURES"]);
            for e in &events {
                let figures = e
                    .figures
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                table.add_row(vec![
                    e.id.to_string(),
                    utc_time(e.at_ms),
                    e.kind.clone(),
                    e.subject.clone(),
                    e.message.clone(),
                    figures,
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}
