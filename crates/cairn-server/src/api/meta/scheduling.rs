//! The schedulers and their operators as the API serves them: scheduler settings from this
//! node's replicated state (any node answers), operators, dry-run plans and the stats history
//! from the leader (they live in its memory; a follower asks it).

use crate::errors;
use crate::leader::node::Node;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse, SchedulingCall};
use cairn_proto::cairnpb::{
    ListOperatorsResponse, ListSchedulersResponse, NodeStatsHistory, OperatorView,
    RegionStatsHistory, SchedulerView,
};
use prost::Message;
use tonic::Status;

/// `ListSchedulers`: every scheduler as the stored settings make it, and whether maintenance
/// mode pauses them.
pub async fn list_schedulers(
    node: &Node,
    serializable: bool,
) -> Result<ListSchedulersResponse, Status> {
    if !serializable {
        node.read_barrier().await?;
    }
    let schedulers = crate::leader::scheduling::configured(node)?
        .list()
        .into_iter()
        .map(|i| SchedulerView {
            name: i.name.to_string(),
            enabled: i.enabled,
            description: i.description.to_string(),
            params: i
                .params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })
        .collect();
    let paused = crate::leader::procedure::maintenance::current(node)?.on;
    Ok(ListSchedulersResponse { schedulers, paused })
}

/// A scheduling call answered by the leader, decoded as `M`.
pub async fn call<M: Message + Default>(node: &Node, call: SchedulingCall) -> Result<M, Status> {
    match node.leader_call(LeaderRequest::Scheduling(call)).await? {
        LeaderResponse::Scheduling(bytes) => M::decode(bytes.as_slice()).map_err(errors::internal),
        other => Err(errors::internal(format!("unexpected answer {other:?}"))),
    }
}

pub async fn plan(node: &Node) -> Result<ListOperatorsResponse, Status> {
    call(node, SchedulingCall::Plan).await
}

pub async fn list_operators(node: &Node, finished: bool) -> Result<ListOperatorsResponse, Status> {
    call(node, SchedulingCall::ListOperators { finished }).await
}

pub async fn get_operator(node: &Node, id: u64) -> Result<OperatorView, Status> {
    call(node, SchedulingCall::GetOperator { id }).await
}

pub async fn cancel_operator(node: &Node, id: u64) -> Result<OperatorView, Status> {
    call(node, SchedulingCall::CancelOperator { id }).await
}

/// `GetNodeStats`: id 0 names no node.
pub async fn node_stats(node: &Node, node_id: u64) -> Result<NodeStatsHistory, Status> {
    if node_id == 0 {
        return Err(Status::invalid_argument("node_id: must be at least 1"));
    }
    call(node, SchedulingCall::NodeStats { node_id }).await
}

/// `GetRegionStats`: id 0 names no region.
pub async fn region_stats(node: &Node, region_id: u64) -> Result<RegionStatsHistory, Status> {
    if region_id == 0 {
        return Err(Status::invalid_argument("region_id: must be at least 1"));
    }
    call(node, SchedulingCall::RegionStats { region_id }).await
}
