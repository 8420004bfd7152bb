//! `cairn ctl node`: the datanodes, frontends and flownodes the leader knows, from the
//! NodeRegistry service (any Cairn node answers; a follower asks the leader).

use std::collections::BTreeMap;

use cairn_client::meta::MetaClient;
use cairn_client::proto::cairnpb::DrainMode;
use cairn_client::EtcdClient;
// One node as the HTTP API shows it (stable JSON shape, documented in `ctl`'s module docs).
use cairn_server::http::node_json;
use cairn_types::json::{NodeJson, NodeStatsJson};
use clap::Subcommand;
use serde::Serialize;

use super::output::{self, new_table, print_json, OutputFormat};
use super::CtlError;

/// `cairn ctl node` verbs.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node: role, address, labels, state, last heartbeat age and latest stats.
    List,
    /// One node, with all it reported.
    Show {
        /// Node id (decimal, or hex with 0x).
        #[arg(value_parser = output::parse_id)]
        id: u64,
    },
    /// Moves every region a datanode leads or follows elsewhere and places nothing new on it;
    /// progress in `node show` (led and followed regions). Stays drained until `--cancel`.
    Drain {
        #[arg(value_parser = output::parse_id)]
        id: u64,
        /// Stop draining it (regions already moved stay where they are).
        #[arg(long)]
        cancel: bool,
    },
    /// Moves a datanode's leaderships to live followers, where its regions have them.
    EvictLeaders {
        #[arg(value_parser = output::parse_id)]
        id: u64,
        /// Stop evicting.
        #[arg(long)]
        cancel: bool,
    },
}

#[derive(Serialize)]
struct NodeListJson {
    leader_id: u64,
    nodes: Vec<NodeJson>,
}

#[derive(Serialize)]
struct NodeShowJson {
    leader_id: u64,
    node: NodeJson,
}

pub async fn run(
    client: &EtcdClient,
    out: OutputFormat,
    command: NodeCommand,
) -> Result<(), CtlError> {
    let meta = MetaClient::with_config(client.endpoints(), *client.config())
        .map_err(CtlError::Endpoints)?;
    match command {
        NodeCommand::List => {
            let response = meta
                .list_nodes(0)
                .await
                .map_err(CtlError::call("node list"))?;
            let mut nodes: Vec<NodeJson> = response.nodes.into_iter().map(node_json).collect();
            nodes.sort_by_key(|n| n.id);
            match out {
                OutputFormat::Json => print_json(&NodeListJson {
                    leader_id: response.leader_id,
                    nodes,
                }),
                OutputFormat::Table => {
                    println!("{}", list_table(&nodes));
                    Ok(())
                }
            }
        }
        NodeCommand::Drain { id, cancel } | NodeCommand::EvictLeaders { id, cancel } => {
            let (verb, mode) = match (&command, cancel) {
                (_, true) => ("cancel", DrainMode::Cancel),
                (NodeCommand::Drain { .. }, false) => ("drain", DrainMode::Drain),
                _ => ("evict-leaders", DrainMode::EvictLeaders),
            };
            meta.drain_node(id, mode)
                .await
                .map_err(CtlError::call(format!("node {verb} {id}")))?;
            Box::pin(run(client, out, NodeCommand::Show { id })).await
        }
        NodeCommand::Show { id } => {
            let what = format!("node show {id}");
            let response = meta.list_nodes(id).await.map_err(CtlError::call(&what))?;
            let node = response
                .nodes
                .into_iter()
                .map(node_json)
                .find(|n| n.id == id)
                .ok_or_else(|| {
                    CtlError::Unexpected(format!(
                        "{what}: node {id} is not known to the leader ({})",
                        response.leader_id
                    ))
                })?;
            match out {
                OutputFormat::Json => print_json(&NodeShowJson {
                    leader_id: response.leader_id,
                    node,
                }),
                OutputFormat::Table => {
                    println!("{}", show_table(&node));
                    Ok(())
                }
            }
        }
    }
}

/// `a=1,b=2`, in key order.
fn labels_cell(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A heartbeat age as a person reads it: `850ms`, `3.2s`, `-` when none arrived.
fn age_cell(age_ms: Option<u64>) -> String {
    match age_ms {
        None => "-".to_string(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
    }
}

fn stat_cell<T: ToString>(node: &NodeJson, f: impl Fn(&NodeStatsJson) -> T) -> String {
    node.stats
        .as_ref()
        .map_or_else(|| "-".to_string(), |s| f(s).to_string())
}

fn list_table(nodes: &[NodeJson]) -> comfy_table::Table {
    let mut table = new_table([
        "ID", "ROLE", "ADDRESS", "LABELS", "STATE", "LAST HB", "REGIONS", "CPU", "LOAD", "RCUS",
        "WCUS",
    ]);
    for n in nodes {
        table.add_row(vec![
            n.id.to_string(),
            n.role.to_string(),
            n.address.clone(),
            labels_cell(&n.labels),
            n.state.clone(),
            age_cell(n.last_heartbeat_age_ms),
            n.region_count.to_string(),
            stat_cell(n, |s| format!("{:.2}", s.cpu_usage)),
            stat_cell(n, |s| format!("{:.2}", s.load)),
            stat_cell(n, |s| s.rcus),
            stat_cell(n, |s| s.wcus),
        ]);
    }
    table
}

fn show_table(n: &NodeJson) -> comfy_table::Table {
    let mut table = new_table(["FIELD", "VALUE"]);
    let mut row = |k: &str, v: String| {
        table.add_row(vec![k.to_string(), v]);
    };
    row("id", n.id.to_string());
    row("role", n.role.to_string());
    row("address", n.address.clone());
    row("labels", labels_cell(&n.labels));
    row("version", n.version.clone());
    row("start time (ms since epoch)", n.start_time_ms.to_string());
    row("state", n.state.clone());
    row("last heartbeat", age_cell(n.last_heartbeat_age_ms));
    row(
        "failure detector",
        match n.phi {
            Some(phi) if n.failed => format!("judged failed (phi {phi:.2})"),
            Some(phi) => format!("phi {phi:.2}"),
            None => "-".into(),
        },
    );
    row("report interval (ms)", n.report_interval_ms.to_string());
    row("regions", n.region_count.to_string());
    row(
        "routed regions",
        format!("{} led, {} followed", n.led_regions, n.followed_regions),
    );
    row(
        "drain",
        match (n.drain.as_deref(), n.led_regions, n.followed_regions) {
            (None, _, _) => "-".into(),
            // Evicting leaders keeps the follower copies.
            (Some(mode @ "evict_leaders"), 0, _) | (Some(mode), 0, 0) => format!("{mode}: done"),
            (Some(mode @ "evict_leaders"), led, _) => format!("{mode}: {led} led regions to move"),
            (Some(mode), led, followed) => {
                format!("{mode}: {led} led and {followed} followed regions to move")
            }
        },
    );
    row("unverified regions", n.unverified_region_count.to_string());
    if let Some(s) = &n.stats {
        row("rcus", s.rcus.to_string());
        row("wcus", s.wcus.to_string());
        row("tables", s.table_count.to_string());
        row("cpu usage", format!("{:.2}", s.cpu_usage));
        row("load", format!("{:.2}", s.load));
        row("disk read (B/s)", s.disk_read_bytes_per_sec.to_string());
        row("disk write (B/s)", s.disk_write_bytes_per_sec.to_string());
        row("attributes", labels_cell(&s.attributes));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_client::proto::cairnpb::{NodeIdentity, NodeRole, NodeStats, NodeView};

    fn view() -> NodeView {
        NodeView {
            identity: Some(NodeIdentity {
                id: 1001,
                role: NodeRole::Datanode as i32,
                address: "10.0.0.1:4001".into(),
                labels: [("zone".to_string(), "a".to_string())].into(),
                version: "v1".into(),
                start_time_ms: 5,
            }),
            state: "alive".into(),
            last_heartbeat_age_ms: Some(1_250),
            stats: Some(NodeStats {
                rcus: 10,
                cpu_usage: 0.5,
                ..Default::default()
            }),
            region_count: 3,
            unverified_region_count: 3,
            report_interval_ms: 3_000,
            phi: Some(0.25),
            failed: false,
            drain: "drain".into(),
            led_regions: 2,
            followed_regions: 0,
        }
    }

    #[test]
    fn json_shape_is_stable() {
        let json = serde_json::to_value(node_json(view())).unwrap();
        assert_eq!(json["id"], 1001);
        assert_eq!(json["role"], "datanode");
        assert_eq!(json["labels"]["zone"], "a");
        assert_eq!(json["last_heartbeat_age_ms"], 1250);
        assert_eq!(json["stats"]["rcus"], 10);
        assert_eq!(json["stats"]["cpu_usage"], 0.5);
        assert_eq!(json["phi"], 0.25);
        assert_eq!(json["failed"], false);
        assert_eq!(json["drain"], "drain");
        assert_eq!(json["led_regions"], 2);
        assert_eq!(json["followed_regions"], 0);
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 17, "{keys:?}");
        let quiet = NodeView {
            last_heartbeat_age_ms: None,
            stats: None,
            phi: None,
            ..view()
        };
        let json = serde_json::to_value(node_json(quiet)).unwrap();
        assert!(json["last_heartbeat_age_ms"].is_null());
        assert!(json["stats"].is_null());
        assert!(json.get("phi").is_none(), "not heard from: no phi");
    }

    #[test]
    fn cells_read_well() {
        assert_eq!(age_cell(None), "-");
        assert_eq!(age_cell(Some(850)), "850ms");
        assert_eq!(age_cell(Some(3_240)), "3.2s");
        let unknown_role = NodeView {
            identity: Some(NodeIdentity {
                role: 99,
                ..Default::default()
            }),
            ..view()
        };
        assert_eq!(node_json(unknown_role).role, "unspecified");
        let labels: BTreeMap<String, String> =
            [("zone".into(), "a".into()), ("host".into(), "h".into())].into();
        assert_eq!(labels_cell(&labels), "host=h,zone=a");
    }
}
