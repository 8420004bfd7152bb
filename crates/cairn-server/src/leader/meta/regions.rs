//! Telling datanodes to open, close or truncate a table's regions, through the heartbeat
//! mailbox: one batched instruction per node (split at `regions_per_instruction_max`), all nodes
//! at once, each answer awaited up to the configured instruction timeout.
//! [`RegionInstructions::send`] is the one way procedures send them: it waits out datanodes
//! that are reconnecting to a new leader and returns what still failed.

use crate::leader::heartbeat::mailbox::MailboxError;
use crate::leader::node::Node;
use cairn_meta::TableRoute;
use cairn_proto::cairnpb::instruction::Kind;
use cairn_proto::cairnpb::{
    CloseRegions, DowngradeRegionLeaders, OpenRegion, OpenRegions, TruncateRegions,
    UpgradeRegionsToLeader,
};
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
    per_node: &BTreeMap<u64, Vec<(u64, bool)>>,
    chunk_max: usize,
    make: impl Fn(&[(u64, bool)]) -> Kind,
) -> Vec<NodeFailure> {
    let timeout = Duration::from_millis(node.config.region_instruction_timeout_ms);
    let mut sends = Vec::new();
    for (target, regions) in per_node {
        for chunk in regions.chunks(chunk_max) {
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

/// What a datanode is told to do with regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionAction {
    /// Open each region (leaders as leader, followers as follower).
    Open,
    /// Close each region. Closing a region a node does not hold succeeds, so this may repeat.
    Close,
    /// Drop every row, as the TRUNCATE of `epoch` (its procedure id): a node that already
    /// applied that epoch keeps the rows written since, so this may repeat after a retry or a
    /// leader change.
    Truncate { epoch: u64 },
    /// Stop taking writes for each region, keeping it open as a follower; the node drops its
    /// lease when the instruction arrives.
    Downgrade,
    /// Take writes for each region (held as a follower), leased from when it arrives: sent only
    /// once no other node can hold a lease for it.
    Upgrade,
}

/// One action on regions, addressed per node: what procedures send to datanodes.
#[derive(Debug, Clone)]
pub struct RegionInstructions {
    action: RegionAction,
    /// Per node: (region id, as leader).
    per_node: BTreeMap<u64, Vec<(u64, bool)>>,
}

impl RegionInstructions {
    /// Opens every region of `route` on its nodes.
    pub fn open(route: &TableRoute) -> Self {
        Self::on_route(RegionAction::Open, route)
    }

    /// Closes every region of `route` on its nodes.
    pub fn close(route: &TableRoute) -> Self {
        Self::on_route(RegionAction::Close, route)
    }

    /// Truncates every region of `route`, on leaders and followers, as the TRUNCATE of `epoch`.
    pub fn truncate(route: &TableRoute, epoch: u64) -> Self {
        Self::on_route(RegionAction::Truncate { epoch }, route)
    }

    /// Closes regions given per node (for drops spanning many tables).
    pub fn close_on(per_node: BTreeMap<u64, Vec<u64>>) -> Self {
        let per_node = per_node
            .into_iter()
            .map(|(n, ids)| (n, ids.into_iter().map(|id| (id, false)).collect()))
            .collect();
        Self {
            action: RegionAction::Close,
            per_node,
        }
    }

    /// `action` on one region on one node; `as_leader` matters for opens only.
    pub fn one(action: RegionAction, node: u64, region: u64, as_leader: bool) -> Self {
        Self::on(action, [(node, region)], as_leader)
    }

    /// `action` on each (node, region) of `targets`; `as_leader` matters for opens only.
    pub fn on(
        action: RegionAction,
        targets: impl IntoIterator<Item = (u64, u64)>,
        as_leader: bool,
    ) -> Self {
        let as_leader = as_leader || action == RegionAction::Upgrade;
        let mut per_node: BTreeMap<u64, Vec<(u64, bool)>> = BTreeMap::new();
        for (node, region) in targets {
            per_node.entry(node).or_default().push((region, as_leader));
        }
        Self { action, per_node }
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.per_node.is_empty()
    }

    /// The nodes addressed, with their regions.
    pub fn targets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.per_node
            .iter()
            .flat_map(|(n, regions)| regions.iter().map(move |(r, _)| (*n, *r)))
    }

    fn on_route(action: RegionAction, route: &TableRoute) -> Self {
        Self {
            action,
            per_node: by_node(route),
        }
    }

    /// Sends once to every node; returns the nodes that failed, with why.
    pub async fn send_once(&self, node: &Node) -> Vec<NodeFailure> {
        let action = self.action;
        let lease_ms = node.config.region_lease_ms();
        if matches!(action, RegionAction::Open | RegionAction::Upgrade) {
            // The node's lease runs from when it receives the open or upgrade, at most the
            // instruction's timeout after now: recorded from then, so this leader never counts it
            // over early.
            let timeout = Duration::from_millis(node.config.region_instruction_timeout_ms);
            let received_by = node.heartbeats.now() + timeout;
            let mut leases = node.heartbeats.region_leases();
            for (target, regions) in &self.per_node {
                for (region, _) in regions.iter().filter(|(_, leader)| *leader) {
                    leases.grant(*region, *target, received_by);
                }
            }
        }
        send_all(node, &self.per_node, REGIONS_PER_INSTRUCTION_MAX, |chunk| {
            let region_ids = || chunk.iter().map(|(id, _)| *id).collect();
            match action {
                RegionAction::Open => Kind::OpenRegions(OpenRegions {
                    regions: chunk
                        .iter()
                        .map(|(id, leader)| OpenRegion {
                            region_id: *id,
                            as_leader: *leader,
                            lease_ms: if *leader { lease_ms } else { 0 },
                        })
                        .collect(),
                }),
                RegionAction::Close => Kind::CloseRegions(CloseRegions {
                    region_ids: region_ids(),
                }),
                RegionAction::Truncate { epoch } => Kind::TruncateRegions(TruncateRegions {
                    region_ids: region_ids(),
                    epoch,
                }),
                RegionAction::Downgrade => Kind::DowngradeRegionLeaders(DowngradeRegionLeaders {
                    region_ids: region_ids(),
                }),
                RegionAction::Upgrade => Kind::UpgradeRegionsToLeader(UpgradeRegionsToLeader {
                    region_ids: region_ids(),
                    lease_ms,
                }),
            }
        })
        .await
    }

    /// Sends to every node and waits out reconnecting ones: right after a leader change
    /// datanodes are still reconnecting, so while every failure is a node without a stream that
    /// is not judged down, and `reconnect_deadline` has not passed, it sends again (to those
    /// nodes only) after a short pause. Returns the failures that remain, for the caller to
    /// count as a failed attempt.
    pub async fn send(
        mut self,
        node: &Node,
        reconnect_deadline: tokio::time::Instant,
    ) -> Vec<NodeFailure> {
        loop {
            let failed = self.send_once(node).await;
            if !wait_for_reconnect(node, &failed, reconnect_deadline).await {
                return failed;
            }
            self.per_node
                .retain(|n, _| failed.iter().any(|f| f.node == *n));
        }
    }
}

/// Closes regions given per node, once (the orphan reconciler retries on its own schedule).
pub async fn close_regions_on(node: &Node, per_node: BTreeMap<u64, Vec<u64>>) -> Vec<NodeFailure> {
    RegionInstructions::close_on(per_node).send_once(node).await
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
        .is_none_or(|e| e.state() == crate::leader::heartbeat::registry::NodeState::Down)
}

/// Right after a leader change datanodes are still reconnecting. When every failure is a node
/// without a stream that is not judged down, and `deadline` has not passed, sleeps a little and
/// returns true: the caller retries without spending an attempt.
async fn wait_for_reconnect(
    node: &Node,
    failed: &[NodeFailure],
    deadline: tokio::time::Instant,
) -> bool {
    let waiting = !failed.is_empty()
        && failed
            .iter()
            .all(|f| f.unreachable && !is_down(node, f.node))
        && node.clock.now() < deadline;
    if waiting {
        tokio::time::sleep(Duration::from_millis(RECONNECT_POLL_MS)).await;
    }
    waiting
}
