//! The schedulers and their operators as the API serves them: scheduler settings from this
//! node's replicated state (any node answers), operators and dry-run plans from the leader (they
//! live in its memory; a follower asks it).

use crate::errors;
use crate::leader::node::Node;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse, SchedulingCall};
use cairn_proto::cairnpb::{
    ListOperatorsResponse, ListSchedulersResponse, OperatorView, SchedulerView,
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
