//! `cairn ctl operator`: the moves the schedulers queued and run (each a step list executed by a
//! migration procedure), recently finished ones, and cancelling a queued one.

use cairn_client::meta::{unix_time_ms, MetaClient};
use cairn_server::api::http_scheduling::operator_json;
use cairn_types::json::OperatorJson;
use clap::Subcommand;

use super::output::{new_table, parse_id, print_json, OutputFormat};
use super::table::json::utc_time;
use super::CtlError;

/// `cairn ctl operator` verbs.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Queued and running operators (with --finished, the recently finished too).
    List {
        #[arg(long)]
        finished: bool,
    },
    /// One operator: its steps, figures and outcome.
    Show { id: String },
    /// Cancel a queued operator (a running one finishes or rolls back by its deadline).
    Cancel { id: String },
}

/// Prints operators as a table or a JSON array.
pub fn print_operators(out: OutputFormat, ops: Vec<OperatorJson>) -> Result<(), CtlError> {
    match out {
        OutputFormat::Json => print_json(&ops),
        OutputFormat::Table => {
            let mut table = new_table([
                "ID",
                "REGION",
                "KIND",
                "FROM",
                "TO",
                "SCHEDULER",
                "PRIORITY",
                "STATUS",
                "LEFT",
                "REASON",
            ]);
            let now_ms = unix_time_ms();
            for o in &ops {
                table.add_row(vec![
                    // A planned operator (`scheduler plan`) has no id yet.
                    id_or_dash(o.id),
                    o.region_id.to_string(),
                    o.kind.clone(),
                    id_or_dash(o.from_node),
                    id_or_dash(o.to_node),
                    o.scheduler.clone(),
                    o.priority.clone(),
                    o.status.clone(),
                    time_left(o, now_ms),
                    o.reason.clone(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}

/// An id, or `-` for none (0): an added copy has no source node, a dropped one no target, a
/// planned operator no id.
fn id_or_dash(id: u64) -> String {
    match id {
        0 => "-".to_string(),
        n => n.to_string(),
    }
}

/// Time left until a queued or running operator's deadline (`past`: a running one's migration
/// is rolling back); `-` for one finished or planned.
fn time_left(o: &OperatorJson, now_ms: u64) -> String {
    if !matches!(o.status.as_str(), "queued" | "running") || o.deadline_ms == 0 {
        return "-".to_string();
    }
    match o.deadline_ms.saturating_sub(now_ms) {
        0 => "past".to_string(),
        ms => format!("{}s", ms.div_ceil(1000)),
    }
}

/// The steps joined by "; ", a running operator's done and running ones marked so.
fn steps_text(steps: &[String], states: &[String]) -> String {
    let pending = String::new();
    steps
        .iter()
        .zip(states.iter().chain(std::iter::repeat(&pending)))
        .map(|(step, state)| match state.as_str() {
            "done" | "running" => format!("{step} ({state})"),
            _ => step.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn print_one(out: OutputFormat, o: OperatorJson) -> Result<(), CtlError> {
    match out {
        OutputFormat::Json => print_json(&o),
        OutputFormat::Table => {
            let mut table = new_table(["FIELD", "VALUE"]);
            let deadline = match time_left(&o, unix_time_ms()).as_str() {
                "-" => utc_time(o.deadline_ms),
                left => format!("{} UTC ({left} left)", utc_time(o.deadline_ms)),
            };
            let rows = [
                ("id", o.id.to_string()),
                ("region", o.region_id.to_string()),
                ("kind", o.kind),
                ("from", id_or_dash(o.from_node)),
                ("to", id_or_dash(o.to_node)),
                ("scheduler", o.scheduler),
                ("priority", o.priority),
                ("status", o.status),
                ("deadline", deadline),
                ("reason", o.reason),
                ("steps", steps_text(&o.steps, &o.step_states)),
                ("outcome", o.outcome),
                ("procedure", o.procedure_id.to_string()),
            ];
            for (k, v) in rows {
                table.add_row(vec![k.to_string(), v]);
            }
            for (k, v) in o.figures {
                table.add_row(vec![k, v]);
            }
            println!("{table}");
            Ok(())
        }
    }
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: OperatorCommand,
) -> Result<(), CtlError> {
    let id = |raw: &str| parse_id(raw).map_err(|e| CtlError::Usage(format!("ID: {e}")));
    match command {
        OperatorCommand::List { finished } => {
            let list = meta
                .list_operators(finished)
                .await
                .map_err(CtlError::call("operator list"))?;
            print_operators(out, list.operators.into_iter().map(operator_json).collect())
        }
        OperatorCommand::Show { id: raw } => {
            let id = id(&raw)?;
            let o = meta
                .get_operator(id)
                .await
                .map_err(CtlError::call(format!("operator show {id}")))?;
            print_one(out, operator_json(o))
        }
        OperatorCommand::Cancel { id: raw } => {
            let id = id(&raw)?;
            let o = meta
                .cancel_operator(id)
                .await
                .map_err(CtlError::call(format!("operator cancel {id}")))?;
            print_one(out, operator_json(o))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_operators_steps_are_marked_done_and_running() {
        let steps: Vec<String> = ["downgrade node 1", "upgrade node 2", "close on node 1"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            steps_text(&steps, &[]),
            "downgrade node 1; upgrade node 2; close on node 1"
        );
        let states = ["done", "running", "pending"].map(String::from);
        assert_eq!(
            steps_text(&steps, &states),
            "downgrade node 1 (done); upgrade node 2 (running); close on node 1"
        );
    }
}
