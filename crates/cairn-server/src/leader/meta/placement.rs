//! Where new regions go: the leader's view of datanodes turned into selector candidates, and the
//! configured selector's answer.
//!
//! Reported region counts lag behind placements by up to one heartbeat, so regions placed since a
//! node's last report are added on top until the report changes; without that, a burst of
//! creates would all land on the node that looked emptiest.

use crate::leader::node::Node;
use cairn_proto::cairnpb::NodeRole;
use cairn_sched::{Candidate, Placement, PlacementRequest, SelectError};
use std::collections::HashSet;
use tonic::{Code, Status};

/// Alive, non-draining, connected datanodes, except `exclude`.
/// A node counts only with an open heartbeat stream: one the registry still calls alive but
/// whose stream closed would take regions it cannot be told to open. Only connected nodes are
/// walked, so the cost does not grow with the down nodes the registry still lists.
pub fn candidates(node: &Node, exclude: &HashSet<u64>) -> Vec<Candidate> {
    // Never hold the registry lock while taking the connection lock: the hub takes them in the
    // other order.
    let connected = node.heartbeats.connected_ids();
    let registry = node.heartbeats.registry();
    let mut placed = node.procedures.placed();
    let mut out = Vec::new();
    for e in connected.iter().filter_map(|id| registry.get(*id)) {
        if e.identity.role != NodeRole::Datanode as i32
            || e.state() != crate::leader::heartbeat::registry::NodeState::Alive
            || exclude.contains(&e.identity.id)
        {
            continue;
        }
        let reported = e.region_count;
        let extra = match placed.get(&e.identity.id) {
            Some((base, n)) if *base == reported => *n,
            Some(_) => {
                placed.remove(&e.identity.id);
                0
            }
            None => 0,
        };
        let stats = e.latest().map(|s| s.stats.clone()).unwrap_or_default();
        out.push(Candidate {
            node_id: e.identity.id,
            labels: e
                .identity
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            region_count: reported as u64 + extra,
            rcus: stats.rcus,
            wcus: stats.wcus,
            cpu_usage: stats.cpu_usage,
        });
    }
    out
}

/// Places `region_numbers` of `table_id` on datanodes other than `exclude`.
pub fn place(
    node: &Node,
    table_id: u64,
    region_numbers: Vec<u32>,
    exclude: &HashSet<u64>,
) -> Result<Placement, Status> {
    let followers = node.config.region_followers;
    place_with(node, table_id, region_numbers, exclude, followers)
}

/// New leaders for `count` regions on datanodes other than `exclude`, in one selector call so
/// they spread (failover: the regions of a dead node, whatever their tables). Unlike new
/// regions, these carry their traffic with them, which no node's stats show yet: the nodes are
/// compared by region count alone, so the busiest-looking node is not skipped only for the
/// quietest to take every region.
pub fn place_leaders(
    node: &Node,
    count: usize,
    exclude: &HashSet<u64>,
) -> Result<Vec<u64>, Status> {
    let mut candidates = candidates(node, exclude);
    for c in &mut candidates {
        (c.rcus, c.wcus, c.cpu_usage) = (0, 0, 0.0);
    }
    let slots = (0..count as u32).collect();
    let placement = select(node, &candidates, 0, slots, 0)?;
    Ok(placement.regions.iter().map(|r| r.leader).collect())
}

fn place_with(
    node: &Node,
    table_id: u64,
    region_numbers: Vec<u32>,
    exclude: &HashSet<u64>,
    followers: u32,
) -> Result<Placement, Status> {
    select(
        node,
        &candidates(node, exclude),
        table_id,
        region_numbers,
        followers,
    )
}

/// The configured selector's placement among `candidates`, counted as placed.
fn select(
    node: &Node,
    candidates: &[Candidate],
    table_id: u64,
    region_numbers: Vec<u32>,
    followers: u32,
) -> Result<Placement, Status> {
    let request = PlacementRequest {
        table_id,
        region_numbers,
        followers,
    };
    let placement = node
        .procedures
        .selector()
        .select(candidates, &request)
        .map_err(|e| select_status(&e))?;
    // Count what we placed until the nodes report it.
    let registry = node.heartbeats.registry();
    let mut placed = node.procedures.placed();
    for r in &placement.regions {
        for n in std::iter::once(&r.leader).chain(r.followers.iter()) {
            let reported = registry.get(*n).map_or(0, |e| e.region_count);
            let entry = placed.entry(*n).or_insert((reported, 0));
            if entry.0 != reported {
                *entry = (reported, 0);
            }
            entry.1 += 1;
        }
    }
    Ok(placement)
}

fn select_status(e: &SelectError) -> Status {
    Status::new(Code::FailedPrecondition, format!("cairn: placement: {e}"))
}
