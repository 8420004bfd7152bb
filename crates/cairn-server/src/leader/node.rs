//! One running Cairn node as every service sees it: its [`Replica`] (Raft, the applied state,
//! propose, read barrier, forwarding), which it derefs to, and the state of the leader services
//! that run while it leads — the heartbeat hub and the DDL procedures.
//!
//! It answers the leader-only requests the replica cannot (`Meta`, `ListNodes`): it installs
//! itself on its replica as the [`LeaderRequestHandler`].

use crate::clock::SharedClock;
use crate::errors;
use crate::leader::heartbeat::HeartbeatHub;
use crate::leader::procedure::Procedures;
use crate::replica::node::{LeaderRequestHandler, Replica};
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use crate::ServerConfig;
use cairn_sched::SelectorKind;
use cairn_store::network::PeerFaults;
use cairn_store::{Raft, StateMachineHandle};
use std::ops::Deref;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tonic::Status;

/// Shared state of one node, handed to every service.
pub struct Node {
    replica: Arc<Replica>,
    /// Datanodes, frontends and flownodes reporting to this node while it leads.
    pub heartbeats: HeartbeatHub,
    /// DDL procedures, run while this node leads.
    pub procedures: Procedures,
    /// The writer of the event log.
    pub events: crate::leader::events::EventLog,
    /// The schedulers' executor: operators and smoothed region loads.
    pub scheduling: crate::leader::scheduling::Scheduling,
    /// This node itself, for work that outlives a request (procedures).
    me: Weak<Node>,
}

impl Node {
    pub fn new(
        id: u64,
        raft: Raft,
        sm: StateMachineHandle,
        config: ServerConfig,
        peer_faults: PeerFaults,
        clock: SharedClock,
    ) -> Arc<Self> {
        let heartbeats = HeartbeatHub::new(
            config.node_heartbeat_interval_ms,
            Duration::from_millis(config.node_lease_ms()),
            Duration::from_millis(config.node_idle_forget_ms),
            (
                Duration::from_millis(config.region_lease_ms()),
                Duration::from_millis(config.region_lease_margin_ms),
            ),
            config.failure_detector(),
            clock.clone(),
        );
        let selector = config
            .placement_selector
            .parse::<SelectorKind>()
            .unwrap_or(SelectorKind::LoadBased);
        let procedures = Procedures::new(selector, &config.placement_spread_label);
        let replica = Arc::new(Replica::new(id, raft, sm, config, peer_faults, clock));
        Arc::new_cyclic(|me: &Weak<Node>| {
            let handler: Weak<dyn LeaderRequestHandler> = me.clone();
            replica.install_leader_services(handler);
            Self {
                replica,
                heartbeats,
                procedures,
                events: Default::default(),
                scheduling: Default::default(),
                me: me.clone(),
            }
        })
    }

    /// This node's replica, for what serves every node alike (the peer service).
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// A strong handle on this node.
    pub fn arc(&self) -> Result<Arc<Node>, Status> {
        self.me
            .upgrade()
            .ok_or_else(|| errors::internal("node is shutting down"))
    }
}

impl Deref for Node {
    type Target = Replica;

    fn deref(&self) -> &Replica {
        &self.replica
    }
}

#[tonic::async_trait]
impl LeaderRequestHandler for Node {
    async fn serve(&self, req: LeaderRequest) -> Result<LeaderResponse, Status> {
        match req {
            LeaderRequest::Meta { ddl, body } => {
                self.require_leader()?;
                let me = self.arc()?;
                let ddl_timeout = Duration::from_millis(self.config.ddl_timeout_ms);
                let served = crate::leader::ddl::serve_ddl_boxed(me, ddl, body);
                let bytes = tokio::time::timeout(ddl_timeout, served)
                    .await
                    .map_err(|_| errors::timeout())??;
                Ok(LeaderResponse::Meta(bytes))
            }
            LeaderRequest::ListNodes { node_id } => {
                let resp = crate::leader::node_registry::list_as_leader(self, node_id)?;
                Ok(LeaderResponse::Nodes(prost::Message::encode_to_vec(&resp)))
            }
            LeaderRequest::GetRegion { region_id } => {
                let view =
                    crate::leader::meta::region_view::region_as_leader(self, region_id).await?;
                Ok(LeaderResponse::Region(prost::Message::encode_to_vec(&view)))
            }
            LeaderRequest::Scheduling(call) => {
                use crate::leader::scheduling as s;
                use crate::replica::peer_request::SchedulingCall;
                use prost::Message;
                self.require_leader()?;
                let bytes = match call {
                    SchedulingCall::Plan => s::plan(self.arc()?).await?.encode_to_vec(),
                    SchedulingCall::ListOperators { finished } => {
                        s::list_operators(self, finished).encode_to_vec()
                    }
                    SchedulingCall::GetOperator { id } => {
                        s::get_operator(self, id)?.encode_to_vec()
                    }
                    SchedulingCall::CancelOperator { id } => {
                        s::cancel_operator(&self.arc()?, id)?.encode_to_vec()
                    }
                    SchedulingCall::NodeStats { node_id } => {
                        s::stats_history::node_stats(self, node_id)?.encode_to_vec()
                    }
                    SchedulingCall::RegionStats { region_id } => {
                        s::stats_history::region_stats(self, region_id)?.encode_to_vec()
                    }
                };
                Ok(LeaderResponse::Scheduling(bytes))
            }
            other => Err(errors::internal(format!(
                "not a request for the leader's services: {other:?}"
            ))),
        }
    }
}
