//! `cairn ctl leader`: who leads, and moving leadership, through Cairn's Admin service.

use std::time::{Duration, Instant};

use cairn_client::EtcdClient;
use clap::Subcommand;
use serde::Serialize;

use super::output::{self, new_table, print_json, OutputFormat};
use super::CtlError;

/// How long `leader transfer` waits for the new leader to be reported, in milliseconds. The
/// server may answer before the handover completes, so the command confirms it.
const TRANSFER_CONFIRM_WAIT_MS: u64 = 10_000;
/// Pause between two checks while confirming a transfer.
const TRANSFER_CONFIRM_POLL_MS: u64 = 100;

/// `cairn ctl leader` verbs.
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Show the current leader, as the answering node knows it.
    Show,
    /// Move Raft leadership to another voter.
    Transfer {
        /// Id of the node to lead (decimal, or hex with 0x).
        #[arg(long, value_parser = output::parse_id)]
        to: u64,
    },
}

#[derive(Serialize)]
struct LeaderJson {
    endpoint: String,
    node_id: u64,
    leader_id: Option<u64>,
    leader_client_addr: Option<String>,
    term: u64,
}

#[derive(Serialize)]
struct TransferJson {
    requested: u64,
    leader_id: u64,
}

pub async fn run(
    client: &EtcdClient,
    out: OutputFormat,
    command: LeaderCommand,
) -> Result<(), CtlError> {
    match command {
        LeaderCommand::Show => show(client, out).await,
        LeaderCommand::Transfer { to } => transfer(client, out, to).await,
    }
}

async fn show(client: &EtcdClient, out: OutputFormat) -> Result<(), CtlError> {
    let info = client
        .leader_info()
        .await
        .map_err(CtlError::call("leader show"))?;
    let json = LeaderJson {
        endpoint: client.preferred_endpoint().to_string(),
        node_id: info.node_id,
        leader_id: (info.leader_id != 0).then_some(info.leader_id),
        leader_client_addr: (!info.leader_client_addr.is_empty())
            .then(|| info.leader_client_addr.clone()),
        term: info.term,
    };
    match out {
        OutputFormat::Json => print_json(&json),
        OutputFormat::Table => {
            let mut table = new_table(["LEADER", "LEADER ADDRESS", "TERM", "ASKED", "ASKED NODE"]);
            table.add_row(vec![
                json.leader_id
                    .map_or("none".to_string(), |id| id.to_string()),
                json.leader_client_addr
                    .clone()
                    .unwrap_or_else(|| "-".to_string()),
                json.term.to_string(),
                json.endpoint.clone(),
                json.node_id.to_string(),
            ]);
            println!("{table}");
            Ok(())
        }
    }
}

async fn transfer(client: &EtcdClient, out: OutputFormat, to: u64) -> Result<(), CtlError> {
    let what = format!("leader transfer --to {to}");
    let response = client
        .transfer_leader(to)
        .await
        .map_err(CtlError::call(what.clone()))?;
    let mut leader_id = response.leader_id;
    let deadline = Instant::now() + Duration::from_millis(TRANSFER_CONFIRM_WAIT_MS);
    while leader_id != to {
        if Instant::now() >= deadline {
            return Err(CtlError::Unexpected(format!(
                "{what}: node {to} did not become leader within {TRANSFER_CONFIRM_WAIT_MS} ms \
                 (leader is {})",
                if leader_id == 0 {
                    "unknown".to_string()
                } else {
                    format!("node {leader_id}")
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(TRANSFER_CONFIRM_POLL_MS)).await;
        // A failed check during the handover (no leader yet) is not the end of the transfer.
        if let Ok(info) = client.leader_info().await {
            leader_id = info.leader_id;
        }
    }
    match out {
        OutputFormat::Json => print_json(&TransferJson {
            requested: to,
            leader_id,
        }),
        OutputFormat::Table => {
            println!("leadership transferred: node {leader_id} is the leader");
            Ok(())
        }
    }
}
