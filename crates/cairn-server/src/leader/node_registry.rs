//! The leader's answer to `ListNodes`: the heartbeat hub's node views, with the regions each node
//! reports that no route places on it. The `cairn.v1.NodeRegistry` service asks for it through
//! the leader path (the registry lives in the leader's memory only).

use crate::errors;
use crate::leader::meta::reconcile::find_orphans;
use crate::leader::node::Node;
use crate::replica::meta::store;
use cairn_meta::TableRoute;
use cairn_proto::cairnpb::{ListNodesResponse, NodeView};
use std::collections::HashSet;
use tonic::Status;

/// Answers ListNodes on the leader; "leader changed" (retried by the caller) while the hub is
/// not serving this term yet.
pub fn list_as_leader(node: &Node, node_id: u64) -> Result<ListNodesResponse, Status> {
    if !node.raft.is_leader() || !node.heartbeats.is_active() {
        return Err(errors::leader_changed());
    }
    let mut nodes = node.heartbeats.views(node_id, node.heartbeats.now());
    count_unverified(node, &mut nodes)?;
    Ok(ListNodesResponse {
        nodes,
        leader_id: node.id,
    })
}

/// Sets each view's `unverified_region_count`: regions the node reports that no table route
/// places on it (an orphan left by a node that was unreachable during a drop, or a route that
/// moved without it; the leader closes them every `region_reconcile_interval_ms`, except while
/// a procedure is opening them). Done here, on an operator's request, rather than on every
/// heartbeat.
fn count_unverified(node: &Node, views: &mut [NodeView]) -> Result<(), Status> {
    let reported: Vec<(u64, Vec<u64>)> = {
        let registry = node.heartbeats.registry();
        views
            .iter()
            .filter_map(|v| v.identity.as_ref().map(|i| i.id))
            .filter_map(|id| {
                registry
                    .get(id)
                    .map(|e| (id, e.regions.iter().map(|r| r.region_id).collect()))
            })
            .collect()
    };
    let unverified = find_orphans(&reported, &HashSet::new(), usize::MAX, |table| {
        Ok(store::get::<TableRoute>(node, &store::layout().route(table))?.map(|r| r.value))
    })?;
    for view in views.iter_mut() {
        let id = view.identity.as_ref().map_or(0, |i| i.id);
        view.unverified_region_count = unverified.get(&id).map_or(0, |r| r.len() as u64);
    }
    Ok(())
}
