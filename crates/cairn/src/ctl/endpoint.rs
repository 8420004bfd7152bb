//! `cairn ctl endpoint`: ask every endpoint about itself (etcd Maintenance.Status), so an
//! operator sees which node leads, which lag and which are down.

use cairn_client::proto::etcdserverpb::StatusResponse;
use cairn_client::EtcdClient;
use clap::Subcommand;
use serde::Serialize;

use super::output::{human_bytes, new_table, print_json, OutputFormat};
use super::CtlError;

/// `cairn ctl endpoint` verbs.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Status of each endpoint: id, version, db size, leadership, Raft progress, errors.
    Status,
}

#[derive(Debug, Serialize)]
struct StatusJson {
    endpoint: String,
    id: Option<u64>,
    version: Option<String>,
    db_size: Option<i64>,
    db_size_in_use: Option<i64>,
    leader: Option<u64>,
    is_leader: Option<bool>,
    is_learner: Option<bool>,
    raft_term: Option<u64>,
    raft_index: Option<u64>,
    raft_applied_index: Option<u64>,
    errors: Vec<String>,
}

impl StatusJson {
    fn new(endpoint: String, result: Result<StatusResponse, String>) -> Self {
        match result {
            Ok(s) => {
                let id = s.header.as_ref().map_or(0, |h| h.member_id);
                StatusJson {
                    endpoint,
                    id: Some(id),
                    version: Some(s.version),
                    db_size: Some(s.db_size),
                    db_size_in_use: Some(s.db_size_in_use),
                    leader: Some(s.leader),
                    // etcd's definition: the member that answered is the one it names as leader.
                    is_leader: Some(s.leader != 0 && s.leader == id),
                    is_learner: Some(s.is_learner),
                    raft_term: Some(s.raft_term),
                    raft_index: Some(s.raft_index),
                    raft_applied_index: Some(s.raft_applied_index),
                    errors: s.errors,
                }
            }
            Err(error) => StatusJson {
                endpoint,
                id: None,
                version: None,
                db_size: None,
                db_size_in_use: None,
                leader: None,
                is_leader: None,
                is_learner: None,
                raft_term: None,
                raft_index: None,
                raft_applied_index: None,
                errors: vec![error],
            },
        }
    }

    fn answered(&self) -> bool {
        self.id.is_some()
    }
}

pub async fn run(
    client: &EtcdClient,
    out: OutputFormat,
    command: EndpointCommand,
) -> Result<(), CtlError> {
    match command {
        EndpointCommand::Status => status(client, out).await,
    }
}

async fn status(client: &EtcdClient, out: OutputFormat) -> Result<(), CtlError> {
    let asks = client.endpoints().iter().map(|endpoint| async move {
        let result = client.status(endpoint).await.map_err(|e| e.to_string());
        StatusJson::new(endpoint.clone(), result)
    });
    let rows: Vec<StatusJson> = futures::future::join_all(asks).await;
    match out {
        OutputFormat::Json => print_json(&rows)?,
        OutputFormat::Table => print_table(&rows),
    }
    let failed = rows.iter().filter(|r| !r.answered()).count();
    if failed > 0 {
        return Err(CtlError::PartialFailure {
            what: "endpoint status".to_string(),
            failed,
            total: rows.len(),
        });
    }
    Ok(())
}

fn print_table(rows: &[StatusJson]) {
    let mut table = new_table([
        "ENDPOINT",
        "ID",
        "VERSION",
        "DB SIZE",
        "IS LEADER",
        "IS LEARNER",
        "RAFT TERM",
        "RAFT INDEX",
        "APPLIED INDEX",
        "ERRORS",
    ]);
    fn cell<T: ToString>(value: &Option<T>) -> String {
        value.as_ref().map_or_else(|| "-".to_string(), T::to_string)
    }
    for r in rows {
        table.add_row(vec![
            r.endpoint.clone(),
            cell(&r.id),
            cell(&r.version),
            r.db_size.map_or_else(|| "-".to_string(), human_bytes),
            cell(&r.is_leader),
            cell(&r.is_learner),
            cell(&r.raft_term),
            cell(&r.raft_index),
            cell(&r.raft_applied_index),
            r.errors.join("; "),
        ]);
    }
    println!("{table}");
}
