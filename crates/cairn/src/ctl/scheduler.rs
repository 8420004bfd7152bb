//! `cairn ctl scheduler`: the schedulers that carry out drains (evict-leaders, drain) and keep
//! regions and load spread (label-spread, hot-region, balance-region): which are on, their
//! parameters, and a dry run of what they would move now and why. Settings are stored, so every Cairn leader obeys them.

use std::collections::BTreeMap;

use cairn_client::meta::MetaClient;
use cairn_server::api::http_scheduling::{operator_json, schedulers_json};
use clap::Subcommand;

use super::operator::print_operators;
use super::output::{new_table, print_json, OutputFormat};
use super::CtlError;

/// `cairn ctl scheduler` verbs.
#[derive(Debug, Subcommand)]
pub enum SchedulerCommand {
    /// Every scheduler, on or off, with its parameters.
    List,
    /// Switch a scheduler on.
    Enable { name: String },
    /// Switch a scheduler off (its queued operators still run; none are planned).
    Disable { name: String },
    /// Set parameters of a scheduler: `--set tolerance=0.05`.
    Config {
        name: String,
        /// KEY=VALUE, repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", required = true)]
        set: Vec<String>,
    },
    /// What one scheduling pass would move now, and why; moves nothing.
    Plan,
}

fn parse_params(set: &[String]) -> Result<BTreeMap<String, String>, CtlError> {
    set.iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CtlError::Usage(format!(
                "--set: expected KEY=VALUE, got {kv:?}"
            ))),
        })
        .collect()
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: SchedulerCommand,
) -> Result<(), CtlError> {
    let change = match &command {
        SchedulerCommand::Enable { name } => Some((name.clone(), Some(true), BTreeMap::new())),
        SchedulerCommand::Disable { name } => Some((name.clone(), Some(false), BTreeMap::new())),
        SchedulerCommand::Config { name, set } => Some((name.clone(), None, parse_params(set)?)),
        SchedulerCommand::List => None,
        SchedulerCommand::Plan => {
            let plan = meta
                .plan_schedule()
                .await
                .map_err(CtlError::call("scheduler plan"))?;
            let ops = plan.operators.into_iter().map(operator_json).collect();
            return print_operators(out, ops);
        }
    };
    if let Some((name, enabled, params)) = change {
        meta.set_scheduler(&name, enabled, params)
            .await
            .map_err(CtlError::call(format!("scheduler {name}")))?;
    }
    let list = meta
        .list_schedulers()
        .await
        .map_err(CtlError::call("scheduler list"))?;
    let json = schedulers_json(list);
    match out {
        OutputFormat::Json => print_json(&json),
        OutputFormat::Table => {
            let mut table = new_table(["NAME", "ENABLED", "PARAMS", "DESCRIPTION"]);
            for s in &json.schedulers {
                let params: Vec<String> =
                    s.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                table.add_row(vec![
                    s.name.clone(),
                    s.enabled.to_string(),
                    params.join(" "),
                    s.description.clone(),
                ]);
            }
            println!("{table}");
            if json.paused {
                println!(
                    "maintenance mode is on: every scheduler is paused but evict-leaders and \
                     drain (an operator's request)"
                );
            }
            Ok(())
        }
    }
}
