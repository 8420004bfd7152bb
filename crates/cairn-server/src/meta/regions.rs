//! Telling datanodes to open, close or truncate a table's regions, through the heartbeat
//! mailbox: one batched instruction per node (split at `regions_per_instruction_max`), all nodes
//! at once, each answer awaited up to the configured instruction timeout.

use crate::heartbeat::mailbox::MailboxError;
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

/// Why a node did not carry out a region instruction.
#[derive(Debug, Clone)]
pub struct NodeFailure {
    pub node: u64,
    pub why: String,
    /// The node has no heartbeat stream to this leader (yet): after a leader change nodes take
    /// a moment to reconnect, so this is worth waiting out while the node is not judged down.
    pub unreachable: bool,
}

/// A one-line summary of failures, for procedure errors.
pub fn describe(failed: &[NodeFailure]) -> String {
    failed
        .iter()
        .map(|f| format!("node {}: {}", f.node, f.why))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sends one instruction per chunk of each node's regions; returns the nodes that failed, with
/// why. `make` builds the instruction from a chunk.
async fn send_all(
    node: &Node,
    per_node: BTreeMap<u64, Vec<(u64, bool)>>,
    make: impl Fn(&[(u64, bool)]) -> Kind,
) -> Vec<NodeFailure> {
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
    let mut failed: BTreeMap<u64, NodeFailure> = BTreeMap::new();
    for (target, r) in futures::future::join_all(sends).await {
        let (why, unreachable) = match r {
            Ok(reply) if reply.ok => continue,
            Ok(reply) => (reply.error, false),
            Err(e) => {
                let unreachable = matches!(
                    e,
                    MailboxError::NotConnected(_) | MailboxError::NodeUnknown(_)
                );
                (e.to_string(), unreachable)
            }
        };
        failed.entry(target).or_insert(NodeFailure {
            node: target,
            why,
            unreachable,
        });
    }
    failed.into_values().collect()
}

/// Opens every region of `route` on its nodes (leaders as leader, followers as follower).
pub async fn open_regions(node: &Node, route: &TableRoute) -> Vec<NodeFailure> {
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
pub async fn close_regions(node: &Node, route: &TableRoute) -> Vec<NodeFailure> {
    send_all(node, by_node(route), |chunk| {
        Kind::CloseRegions(CloseRegions {
            region_ids: chunk.iter().map(|(id, _)| *id).collect(),
        })
    })
    .await
}

/// Closes regions given per node (for drops spanning many tables).
pub async fn close_regions_on(node: &Node, per_node: BTreeMap<u64, Vec<u64>>) -> Vec<NodeFailure> {
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

/// Drops every row of the regions of `route`, on leaders and followers, as the TRUNCATE of
/// `epoch` (its procedure id): a node that already applied that epoch keeps the rows written
/// since, so the procedure may repeat this after a retry or a leader change.
pub async fn truncate_regions(node: &Node, route: &TableRoute, epoch: u64) -> Vec<NodeFailure> {
    send_all(node, by_node(route), |chunk| {
        Kind::TruncateRegions(TruncateRegions {
            region_ids: chunk.iter().map(|(id, _)| *id).collect(),
            epoch,
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

/// How often a procedure checks whether datanodes have reconnected.
const RECONNECT_POLL_MS: u64 = 100;

/// How long a procedure waits for its datanodes to reconnect before counting failures: until
/// the leader could have judged them down (one lease of grace for a new leader, two to down).
pub fn reconnect_wait(node: &Node) -> Duration {
    Duration::from_millis(3 * node.config.node_lease_ms())
}

/// Judged down (or forgotten) by the leader: it will not answer in time.
pub fn is_down(node: &Node, id: u64) -> bool {
    node.heartbeats
        .registry()
        .get(id)
        .is_none_or(|e| e.state() == crate::heartbeat::registry::NodeState::Down)
}

/// Right after a leader change datanodes are still reconnecting. When every failure is a node
/// without a stream that is not judged down, and `deadline` has not passed, sleeps a little and
/// returns true: the caller retries without spending an attempt.
pub async fn wait_for_reconnect(
    node: &Node,
    failed: &[NodeFailure],
    deadline: tokio::time::Instant,
) -> bool {
    let waiting = !failed.is_empty()
        && failed
            .iter()
            .all(|f| f.unreachable && !is_down(node, f.node))
        && tokio::time::Instant::now() < deadline;
    if waiting {
        tokio::time::sleep(Duration::from_millis(RECONNECT_POLL_MS)).await;
    }
    waiting
}
