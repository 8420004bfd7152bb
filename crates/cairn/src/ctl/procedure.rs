//! `cairn ctl procedure`: the DDL runs the leader keeps as persistent procedures — what they act
//! on, the step they are at or ended at, attempts and the last error.

use cairn_client::meta::MetaClient;
use cairn_client::proto::cairnpb::{ListProceduresRequest, ProcedureView};
use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use super::output::{self, new_table, print_json, OutputFormat};
use super::table::json::utc_time;
use super::CtlError;

/// `cairn ctl procedure` verbs.
#[derive(Debug, Subcommand)]
pub enum ProcedureCommand {
    /// Procedures, newest first.
    List {
        /// Only procedures in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
        /// At most N (server default 100, at most 1000).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One procedure, e.g. the procedure id a DDL command printed.
    Show {
        /// Procedure id (decimal, or hex with 0x).
        #[arg(value_parser = output::parse_id)]
        id: u64,
    },
}

/// `--state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    Running,
    Done,
    Failed,
}

impl StateFilter {
    fn as_str(self) -> &'static str {
        match self {
            StateFilter::Running => "running",
            StateFilter::Done => "done",
            StateFilter::Failed => "failed",
        }
    }
}

/// One procedure (stable JSON shape, documented in docs/ctl.md).
#[derive(Debug, Serialize)]
struct ProcedureJson {
    id: u64,
    kind: String,
    target: String,
    state: String,
    step: String,
    attempts: u32,
    last_error: Option<String>,
    created_ms: u64,
    updated_ms: u64,
}

impl ProcedureJson {
    fn new(p: &ProcedureView) -> Self {
        ProcedureJson {
            id: p.id,
            kind: p.kind.clone(),
            target: p.target.clone(),
            state: p.state.clone(),
            step: p.step.clone(),
            attempts: p.attempts,
            last_error: (!p.last_error.is_empty()).then(|| p.last_error.clone()),
            created_ms: p.created_ms,
            updated_ms: p.updated_ms,
        }
    }
}

#[derive(Serialize)]
struct ProcedureListJson {
    procedures: Vec<ProcedureJson>,
}

#[derive(Serialize)]
struct ProcedureShowJson {
    procedure: ProcedureJson,
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: ProcedureCommand,
) -> Result<(), CtlError> {
    match command {
        ProcedureCommand::List { state, limit } => {
            let response = meta
                .list_procedures(ListProceduresRequest {
                    state: state
                        .map(StateFilter::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    limit: limit.unwrap_or(0),
                })
                .await
                .map_err(CtlError::call("procedure list"))?;
            let procedures: Vec<ProcedureJson> =
                response.procedures.iter().map(ProcedureJson::new).collect();
            match out {
                OutputFormat::Json => print_json(&ProcedureListJson { procedures }),
                OutputFormat::Table => {
                    println!("{}", list_table(&procedures));
                    Ok(())
                }
            }
        }
        ProcedureCommand::Show { id } => {
            let view = meta
                .get_procedure(id)
                .await
                .map_err(CtlError::call(format!("procedure show {id}")))?;
            let procedure = ProcedureJson::new(&view);
            match out {
                OutputFormat::Json => print_json(&ProcedureShowJson { procedure }),
                OutputFormat::Table => {
                    println!("{}", show_table(&procedure));
                    Ok(())
                }
            }
        }
    }
}

fn list_table(procedures: &[ProcedureJson]) -> comfy_table::Table {
    let mut table = new_table([
        "ID",
        "KIND",
        "TARGET",
        "STATE",
        "STEP",
        "ATTEMPTS",
        "LAST ERROR",
        "CREATED (UTC)",
        "UPDATED (UTC)",
    ]);
    for p in procedures {
        table.add_row(vec![
            p.id.to_string(),
            p.kind.clone(),
            p.target.clone(),
            p.state.clone(),
            p.step.clone(),
            p.attempts.to_string(),
            p.last_error.clone().unwrap_or_else(|| "-".to_string()),
            utc_time(p.created_ms),
            utc_time(p.updated_ms),
        ]);
    }
    table
}

fn show_table(p: &ProcedureJson) -> comfy_table::Table {
    let mut table = new_table(["FIELD", "VALUE"]);
    let mut row = |k: &str, v: String| {
        table.add_row(vec![k.to_string(), v]);
    };
    row("id", p.id.to_string());
    row("kind", p.kind.clone());
    row("target", p.target.clone());
    row("state", p.state.clone());
    row("step", p.step.clone());
    row("attempts", p.attempts.to_string());
    row(
        "last error",
        p.last_error.clone().unwrap_or_else(|| "-".to_string()),
    );
    row("created (UTC)", utc_time(p.created_ms));
    row("updated (UTC)", utc_time(p.updated_ms));
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_is_stable() {
        let view = ProcedureView {
            id: 9,
            kind: "create_table".into(),
            target: "default.db.cpu".into(),
            state: "done".into(),
            step: "publish".into(),
            attempts: 1,
            last_error: String::new(),
            created_ms: 5,
            updated_ms: 6,
        };
        let json = serde_json::to_value(ProcedureJson::new(&view)).unwrap();
        assert!(json["last_error"].is_null());
        assert_eq!(json["kind"], "create_table");
        assert_eq!(json.as_object().unwrap().len(), 9);
    }
}
