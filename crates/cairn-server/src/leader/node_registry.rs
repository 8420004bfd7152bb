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
    count_routed(node, &mut nodes)?;
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
            .filter_map(|id| registry.get(id).map(|e| (id, e.regions.ids().collect())))
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

/// Sets each view's drain mode and the regions the stored routes name it leader and follower of
/// (a drain's progress). One pass over the routes, on an operator's request.
fn count_routed(node: &Node, views: &mut [NodeView]) -> Result<(), Status> {
    let drains = crate::leader::procedure::maintenance::drains(node)?;
    let mut counts: std::collections::HashMap<u64, (u64, u64)> = Default::default();
    for v in views.iter() {
        if let Some(i) = &v.identity {
            counts.insert(i.id, (0, 0));
        }
    }
    store::scan_all(node, &store::layout().routes_prefix(), |kv| {
        let Ok(route) = cairn_meta::codec::decode::<TableRoute>(&kv.key, &kv.value) else {
            return Ok(());
        };
        for r in &route.regions {
            if let Some(c) = counts.get_mut(&r.leader_node) {
                c.0 += 1;
            }
            for f in &r.follower_nodes {
                if let Some(c) = counts.get_mut(f) {
                    c.1 += 1;
                }
            }
        }
        Ok(())
    })?;
    for view in views.iter_mut() {
        let id = view.identity.as_ref().map_or(0, |i| i.id);
        (view.led_regions, view.followed_regions) = counts.get(&id).copied().unwrap_or_default();
        if let Some(d) = drains.iter().find(|d| d.node_id == id) {
            view.drain = d.mode.as_str().to_string();
        }
    }
    Ok(())
}
