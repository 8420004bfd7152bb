//! `cairn ctl route`: where each region of a table lives — its leader datanode (writes) with
//! address, followers (reads) and the leader's state — from `GetRoutes`, the call frontends make.

use std::collections::HashMap;

use cairn_client::meta::{display_table_name, MetaClient};
use cairn_client::proto::cairnpb::{
    DescribeTableRequest, GetRoutesResponse, LeaderState, RegionRoute, TableRoute,
};
use clap::Subcommand;
use serde::Serialize;

use super::output::{self, new_table, print_json, OutputFormat};
use super::table::spec::parse_table_name;
use super::CtlError;

/// `cairn ctl route` verbs.
#[derive(Debug, Subcommand)]
pub enum RouteCommand {
    /// Routes of tables by name and/or id: region, leader and its address, followers, state.
    Get {
        /// Tables as SCHEMA.NAME or CATALOG.SCHEMA.NAME.
        names: Vec<String>,
        /// Tables by id (decimal, or hex with 0x); repeatable.
        #[arg(long = "id", value_parser = output::parse_id)]
        ids: Vec<u64>,
        /// Serve from the answering node's state without a read barrier.
        #[arg(long)]
        serializable: bool,
    },
}

/// A node a route names, with its address (null when the server has no record of it).
#[derive(Debug, Clone, Serialize)]
pub struct PeerJson {
    pub node_id: u64,
    pub address: Option<String>,
}

/// One region's placement.
#[derive(Debug, Clone, Serialize)]
pub struct RegionRouteJson {
    pub region_id: u64,
    pub region_number: u32,
    pub leader: Option<PeerJson>,
    pub followers: Vec<PeerJson>,
    pub leader_state: &'static str,
}

/// One table's route.
#[derive(Debug, Clone, Serialize)]
pub struct RouteJson {
    pub table_id: u64,
    /// `catalog.schema.name` when the command was given the name.
    pub table: Option<String>,
    pub version: u64,
    pub regions: Vec<RegionRouteJson>,
}

#[derive(Serialize)]
struct RouteGetJson {
    revision: i64,
    routes: Vec<RouteJson>,
    missing_table_ids: Vec<u64>,
}

fn leader_state_name(state: i32) -> &'static str {
    match LeaderState::try_from(state) {
        Ok(LeaderState::Active) => "active",
        Ok(LeaderState::Downgrading) => "downgrading",
        Ok(LeaderState::Unspecified) | Err(_) => "unspecified",
    }
}

impl RouteJson {
    /// `route` with the addresses in `addresses` (node id → address; missing or empty: null).
    pub fn new(
        route: &TableRoute,
        table: Option<String>,
        addresses: &HashMap<u64, String>,
    ) -> Self {
        let peer = |node_id: u64| PeerJson {
            node_id,
            address: addresses.get(&node_id).filter(|a| !a.is_empty()).cloned(),
        };
        let region = |r: &RegionRoute| RegionRouteJson {
            region_id: r.region_id,
            // Region id = table id << 32 | region number: the low half is the number.
            region_number: (r.region_id & u64::from(u32::MAX)) as u32,
            leader: (r.leader_node != 0).then(|| peer(r.leader_node)),
            followers: r.follower_nodes.iter().map(|n| peer(*n)).collect(),
            leader_state: leader_state_name(r.leader_state),
        };
        RouteJson {
            table_id: route.table_id,
            table,
            version: route.version,
            regions: route.regions.iter().map(region).collect(),
        }
    }
}

/// Node id → address of a `GetRoutes` answer.
pub fn addresses_of(response: &GetRoutesResponse) -> HashMap<u64, String> {
    response
        .nodes
        .iter()
        .map(|n| (n.node_id, n.address.clone()))
        .collect()
}

fn peer_cell(peer: &PeerJson) -> String {
    match &peer.address {
        Some(address) => format!("{} ({address})", peer.node_id),
        None => format!("{} (address unknown)", peer.node_id),
    }
}

/// A table with one row per region of every route.
pub fn routes_table(routes: &[RouteJson]) -> comfy_table::Table {
    let mut table = new_table([
        "TABLE",
        "REGION ID",
        "REGION",
        "LEADER",
        "FOLLOWERS",
        "STATE",
    ]);
    for route in routes {
        let name = route
            .table
            .clone()
            .unwrap_or_else(|| format!("id {}", route.table_id));
        for r in &route.regions {
            let followers: Vec<String> = r.followers.iter().map(peer_cell).collect();
            table.add_row(vec![
                format!("{name} (v{})", route.version),
                r.region_id.to_string(),
                r.region_number.to_string(),
                r.leader.as_ref().map_or_else(|| "-".to_string(), peer_cell),
                if followers.is_empty() {
                    "-".to_string()
                } else {
                    followers.join(", ")
                },
                r.leader_state.to_string(),
            ]);
        }
    }
    table
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: RouteCommand,
) -> Result<(), CtlError> {
    let RouteCommand::Get {
        names,
        ids,
        serializable,
    } = command;
    if names.is_empty() && ids.is_empty() {
        return Err(CtlError::Usage(
            "route get: name at least one table (SCHEMA.NAME) or --id ID".to_string(),
        ));
    }
    // Names become ids first; a name that does not exist is an error, like `table describe`.
    let mut wanted: Vec<(u64, Option<String>)> = Vec::new();
    for raw in &names {
        let name = parse_table_name(raw).map_err(CtlError::Usage)?;
        let shown = display_table_name(&name);
        let answer = meta
            .describe_table(DescribeTableRequest {
                name: Some(name),
                serializable,
            })
            .await
            .map_err(CtlError::call(format!("route get {shown}")))?;
        let id = answer.table.map(|t| t.id).ok_or_else(|| {
            CtlError::Unexpected(format!("route get {shown}: the answer holds no table"))
        })?;
        wanted.push((id, Some(shown)));
    }
    wanted.extend(ids.iter().map(|id| (*id, None)));
    let table_ids: Vec<u64> = wanted.iter().map(|(id, _)| *id).collect();
    let response = meta
        .get_routes(&table_ids)
        .await
        .map_err(CtlError::call("route get"))?;
    let addresses = addresses_of(&response);
    let names: HashMap<u64, String> = wanted
        .into_iter()
        .filter_map(|(id, name)| Some((id, name?)))
        .collect();
    let routes: Vec<RouteJson> = response
        .routes
        .iter()
        .map(|r| RouteJson::new(r, names.get(&r.table_id).cloned(), &addresses))
        .collect();
    let missing = response.missing_table_ids.clone();
    match out {
        OutputFormat::Json => print_json(&RouteGetJson {
            revision: response.revision,
            routes,
            missing_table_ids: missing.clone(),
        })?,
        OutputFormat::Table => println!("{}", routes_table(&routes)),
    }
    if !missing.is_empty() {
        let ids: Vec<String> = missing.iter().map(u64::to_string).collect();
        return Err(CtlError::Unexpected(format!(
            "route get: no table has id {}",
            ids.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_json_names_regions_and_addresses() {
        let route = TableRoute {
            table_id: 1024,
            version: 2,
            regions: vec![
                RegionRoute {
                    region_id: (1024 << 32) | 3,
                    leader_node: 7,
                    follower_nodes: vec![8],
                    leader_state: LeaderState::Active as i32,
                },
                RegionRoute {
                    region_id: (1024 << 32) | 4,
                    leader_node: 0,
                    follower_nodes: vec![],
                    leader_state: LeaderState::Downgrading as i32,
                },
            ],
        };
        let addresses = HashMap::from([(7, "10.0.0.7:4001".to_string()), (8, String::new())]);
        let json = serde_json::to_value(RouteJson::new(&route, None, &addresses)).unwrap();
        assert_eq!(json["regions"][0]["region_number"], 3);
        assert_eq!(json["regions"][0]["leader"]["address"], "10.0.0.7:4001");
        assert!(json["regions"][0]["followers"][0]["address"].is_null());
        assert!(json["regions"][1]["leader"].is_null());
        assert_eq!(json["regions"][1]["leader_state"], "downgrading");
        assert!(json["table"].is_null());
    }
}
