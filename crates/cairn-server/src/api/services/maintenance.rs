//! etcd `Maintenance` service: Status, Alarm, MoveLeader. Operations that have no meaning for an
//! in-memory state machine with a Raft log (Defragment, Hash, HashKV, Snapshot download) answer
//! `Unimplemented` with a reason, never a fake success.

use crate::leader::node::Node;
use crate::replica::peer_request::LeaderRequest;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse,
    SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use futures::Stream;
use openraft::async_runtime::watch::WatchReceiver;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

/// The etcd API version Cairn implements, reported by Status (clients gate features on it).
pub const ETCD_API_VERSION: &str = "3.5.0";

/// The etcd Maintenance service of one node.
pub struct MaintenanceService {
    node: Arc<Node>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// This node's status as etcd reports it.
pub fn status(node: &Node) -> StatusResponse {
    let m = node.raft.metrics().borrow_watched().clone();
    let (db_size, is_learner, revision) = {
        let s = node.sm.read();
        let learner = !s.membership.membership().voter_ids().any(|v| v == node.id);
        (s.kv.approx_size_bytes() as i64, learner, s.kv.revision())
    };
    let log_bytes = crate::replica::log_file_size(&node.config) as i64;
    let mut errors = Vec::new();
    let leader = node.live_leader();
    if leader.is_none() {
        errors.push("etcdserver: no leader".to_string());
    }
    StatusResponse {
        header: node.header(revision),
        version: ETCD_API_VERSION.to_string(),
        db_size: db_size + log_bytes,
        leader: leader.unwrap_or(0),
        raft_index: m.last_log_index.unwrap_or(0),
        raft_term: m.current_term,
        raft_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        errors,
        db_size_in_use: db_size,
        is_learner,
    }
}

fn unsupported(what: &str) -> Status {
    Status::new(
        Code::Unimplemented,
        format!("cairn: {what} is not supported by Cairn"),
    )
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let _ = request;
        // Cairn raises no alarms (no space quota yet), so the list is truly empty.
        Ok(Response::new(AlarmResponse {
            header: self.node.header(self.node.revision()),
            alarms: Vec::new(),
        }))
    }

    async fn status(&self, _r: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Status", async { Ok(Response::new(status(node))) })
            .await
    }

    async fn defragment(
        &self,
        _r: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        Err(unsupported("Defragment"))
    }

    async fn hash(&self, _r: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(unsupported("Hash"))
    }

    async fn hash_kv(
        &self,
        _r: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        Err(unsupported("HashKV"))
    }

    type SnapshotStream =
        Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

    async fn snapshot(
        &self,
        _r: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unsupported("Snapshot download"))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("MoveLeader", async {
                let to = request.into_inner().target_id;
                node.leader_call(LeaderRequest::TransferLeader { to })
                    .await?;
                Ok(Response::new(MoveLeaderResponse {
                    header: node.header(node.revision()),
                }))
            })
            .await
    }
}
