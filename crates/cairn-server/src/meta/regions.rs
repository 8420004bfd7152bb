//! Telling datanodes to open, close or truncate a table's regions, through the heartbeat
//! mailbox: one batched instruction per node (split at `regions_per_instruction_max`), all nodes
//! at once, each answer awaited up to the configured instruction timeout.

use crate::node::Node;
use cairn_meta::TableRoute;
use cairn_proto::cairnpb::instruction::Kind;
use cairn_proto::cairnpb::{CloseRegions, OpenRegion, OpenRegions, TruncateRegions};
use cairn_types::limits::REGIONS_PER_INSTRUCTION_MAX;
use std::collections::BTreeMap;
use std::time::Duration;

/// Regions of `route` per node: (region id, as leader).
fn by_node(route: &TableRoute) -> BTreeMap<u64, Vec<(u64, bool)>> {
    let mut out: BTreeMap<u64, Vec<(u64, bool)>> = BTreeMap::new();
    for r in &route.regions {
        if r.leader_node != 0 {
            out.entry(r.leader_node)
                .or_default()
                .push((r.region_id, true));
        }
        for f in &r.follower_nodes {
            out.entry(*f).or_default().push((r.region_id, false));
        }
    }
    out
}

/// Sends one instruction per chunk of each node's regions; returns the nodes that failed, with
/// why. `make` builds the instruction from a chunk.
async fn send_all(
    node: &Node,
    per_node: BTreeMap<u64, Vec<(u64, bool)>>,
    make: impl Fn(&[(u64, bool)]) -> Kind,
) -> Vec<(u64, String)> {
    let timeout = Duration::from_millis(node.config.region_instruction_timeout_ms);
    let mut sends = Vec::new();
    for (target, regions) in &per_node {
        for chunk in regions.chunks(REGIONS_PER_INSTRUCTION_MAX) {
            let kind = make(chunk);
            sends.push(async move {
                let r = node.heartbeats.send(*target, kind, timeout).await;
                (*target, r)
            });
        }
    }
    let mut failed: BTreeMap<u64, String> = BTreeMap::new();
    for (target, r) in futures::future::join_all(sends).await {
        let why = match r {
            Ok(reply) if reply.ok => continue,
            Ok(reply) => reply.error,
            Err(e) => e.to_string(),
        };
        failed.entry(target).or_insert(why);
    }
    failed.into_iter().collect()
}

/// Opens every region of `route` on its nodes (leaders as leader, followers as follower).
pub async fn open_regions(node: &Node, route: &TableRoute) -> Vec<(u64, String)> {
    send_all(node, by_node(route), |chunk| {
        Kind::OpenRegions(OpenRegions {
            regions: chunk
                .iter()
                .map(|(id, leader)| OpenRegion {
                    region_id: *id,
                    as_leader: *leader,
                })
                .collect(),
        })
    })
    .await
}

/// Closes every region of `route` on its nodes. Closing a region a node does not hold succeeds,
/// so this may be repeated.
pub async fn close_regions(node: &Node, route: &TableRoute) -> Vec<(u64, String)> {
    send_all(node, by_node(route), |chunk| {
        Kind::CloseRegions(CloseRegions {
            region_ids: chunk.iter().map(|(id, _)| *id).collect(),
        })
    })
    .await
}

/// Closes regions given per node (for drops spanning many tables).
pub async fn close_regions_on(
    node: &Node,
    per_node: BTreeMap<u64, Vec<u64>>,
) -> Vec<(u64, String)> {
    let per_node = per_node
        .into_iter()
        .map(|(n, ids)| (n, ids.into_iter().map(|id| (id, false)).collect()))
        .collect();
    send_all(node, per_node, |chunk| {
        Kind::CloseRegions(CloseRegions {
            region_ids: chunk.iter().map(|(id, _)| *id).collect(),
        })
    })
    .await
}

/// Drops every row of the regions of `route`, on leaders and followers.
pub async fn truncate_regions(node: &Node, route: &TableRoute) -> Vec<(u64, String)> {
    send_all(node, by_node(route), |chunk| {
        Kind::TruncateRegions(TruncateRegions {
            region_ids: chunk.iter().map(|(id, _)| *id).collect(),
        })
    })
    .await
}

/// Regions of `route` per node, as plain ids.
pub fn region_ids_by_node(route: &TableRoute, into: &mut BTreeMap<u64, Vec<u64>>) {
    for (n, regions) in by_node(route) {
        into.entry(n)
            .or_default()
            .extend(regions.into_iter().map(|(id, _)| id));
    }
}
