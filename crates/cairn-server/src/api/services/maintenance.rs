//! etcd `Maintenance` service: Status, Alarm (list, raise, disarm; the space quota raises
//! NOSPACE), Hash and HashKV (each member hashes its own state, so members can be compared),
//! Defragment (a snapshot that purges the Raft log), MoveLeader, and Snapshot: a backup of this
//! member's state ending with its SHA-256, streamed in chunks (`etcdctl snapshot save` and
//! `cairn ctl snapshot save` write it; `cairn snapshot restore` builds a new cluster from it).

use crate::leader::node::Node;
use crate::replica::peer_request::LeaderRequest;
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmResponse, DefragmentRequest,
    DefragmentResponse, HashKvRequest, HashKvResponse, HashRequest, HashResponse,
    MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest,
    StatusResponse,
};
use futures::Stream;
use openraft::async_runtime::watch::WatchReceiver;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The etcd API version Cairn implements, reported by Status (clients gate features on it).
pub const ETCD_API_VERSION: &str = "3.5.0";

/// Bytes of the backup in one `SnapshotResponse`.
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks encoded ahead of a slow reader.
pub const SNAPSHOT_STREAM_BUFFER_MAX: usize = 4;
/// Snapshot downloads served at once by one node (each holds a whole encoded state in memory).
pub const SNAPSHOT_STREAMS_MAX: usize = 2;

/// The etcd Maintenance service of one node.
pub struct MaintenanceService {
    node: Arc<Node>,
    snapshots: Arc<tokio::sync::Semaphore>,
}

impl MaintenanceService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            snapshots: Arc::new(tokio::sync::Semaphore::new(SNAPSHOT_STREAMS_MAX)),
        }
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
    for a in alarms(node) {
        errors.push(format!(
            "memberID:{} alarm:{}",
            a.member_id,
            alarm_name(a.alarm)
        ));
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

/// The alarms raised in the cluster, as this member has applied them.
pub fn alarms(node: &Node) -> Vec<AlarmMember> {
    node.sm
        .read()
        .cluster
        .alarms
        .iter()
        .map(|(member_id, alarm)| AlarmMember {
            member_id: *member_id,
            alarm: *alarm,
        })
        .collect()
}

/// etcd's name of an alarm type (`NOSPACE`, `CORRUPT`).
pub fn alarm_name(alarm: i32) -> &'static str {
    cairn_proto::etcdserverpb::AlarmType::try_from(alarm)
        .map(|a| a.as_str_name())
        .unwrap_or("UNKNOWN")
}

/// Longest Defragment waits for its snapshot to be built.
const DEFRAGMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Alarm", async {
                let req = request.into_inner();
                let action = AlarmAction::try_from(req.action).map_err(|_| {
                    Status::invalid_argument(format!("cairn: unknown alarm action {}", req.action))
                })?;
                let matches = |a: &AlarmMember| {
                    (req.member_id == 0 || a.member_id == req.member_id)
                        && (req.alarm == 0 || a.alarm == req.alarm)
                };
                let alarms = match action {
                    AlarmAction::Get => alarms(node).into_iter().filter(matches).collect(),
                    AlarmAction::Activate | AlarmAction::Deactivate => {
                        if req.alarm == 0 || alarm_name(req.alarm) == "UNKNOWN" {
                            return Err(Status::invalid_argument(format!(
                                "cairn: alarm must be NOSPACE or CORRUPT, got {}",
                                req.alarm
                            )));
                        }
                        let activate = action == AlarmAction::Activate;
                        let had = alarms(node).iter().any(matches);
                        node.propose(cairn_store::Command::Alarm {
                            activate,
                            member_id: req.member_id,
                            alarm: req.alarm,
                        })
                        .await?;
                        // etcd answers the alarm raised, or the one disarmed (none if it was
                        // not raised).
                        if activate || had {
                            vec![AlarmMember {
                                member_id: req.member_id,
                                alarm: req.alarm,
                            }]
                        } else {
                            Vec::new()
                        }
                    }
                };
                Ok(Response::new(AlarmResponse {
                    header: node.header(node.revision()),
                    alarms,
                }))
            })
            .await
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
        let node = &self.node;
        node.metrics
            .track("Defragment", async {
                // This member's on-disk state is its Raft log and snapshot file: a snapshot of
                // what it has applied lets the log be purged up to it.
                let applied = node
                    .raft
                    .metrics()
                    .borrow_watched()
                    .last_applied
                    .map(|l| l.index);
                node.raft
                    .trigger()
                    .snapshot()
                    .await
                    .map_err(crate::errors::internal)?;
                let built = node
                    .raft
                    .wait(Some(DEFRAGMENT_TIMEOUT))
                    .metrics(
                        |m| m.snapshot.map(|s| s.index) >= applied,
                        "snapshot at the applied index",
                    )
                    .await;
                if let Err(e) = built {
                    return Err(Status::deadline_exceeded(format!(
                        "cairn: defragment: the snapshot was not built within {} s: {e}",
                        DEFRAGMENT_TIMEOUT.as_secs()
                    )));
                }
                Ok(Response::new(DefragmentResponse {
                    header: node.header(node.revision()),
                }))
            })
            .await
    }

    async fn hash(&self, _r: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("Hash", async {
                let image = node.sm.read().kv.snapshot_view();
                let revision = image.revision();
                let hash = tokio::task::spawn_blocking(move || image.hash_all())
                    .await
                    .map_err(crate::errors::internal)?;
                Ok(Response::new(HashResponse {
                    header: node.header(revision),
                    hash,
                }))
            })
            .await
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("HashKV", async {
                let at = request.into_inner().revision;
                let image = node.sm.read().kv.snapshot_view();
                let revision = image.revision();
                let result = tokio::task::spawn_blocking(move || image.hash_kv(at))
                    .await
                    .map_err(crate::errors::internal)?;
                let (hash, compact_revision) = result.map_err(|e| e.to_status())?;
                Ok(Response::new(HashKvResponse {
                    header: node.header(revision),
                    hash,
                    compact_revision,
                }))
            })
            .await
    }

    type SnapshotStream =
        Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

    async fn snapshot(
        &self,
        _r: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let node = self.node.clone();
        let permit = self.snapshots.clone().try_acquire_owned().map_err(|_| {
            crate::errors::too_many_requests(&format!(
                "snapshot_streams_max {SNAPSHOT_STREAMS_MAX} reached"
            ))
        })?;
        let sm = node.sm.clone();
        // The image is taken at once; encoding and hashing it run off the async workers.
        let (revision, bytes) = tokio::task::spawn_blocking(move || {
            let revision = sm.read().kv.revision();
            sm.backup().map(|b| (revision, b))
        })
        .await
        .map_err(crate::errors::internal)?
        .map_err(|e| crate::errors::internal(format!("encoding the snapshot: {e}")))?;
        let header = node.header(revision);
        let (tx, rx) = tokio::sync::mpsc::channel(SNAPSHOT_STREAM_BUFFER_MAX);
        tokio::spawn(async move {
            let _permit = permit;
            let total = bytes.len();
            let mut sent = 0;
            let mut header = header;
            for chunk in bytes.chunks(SNAPSHOT_CHUNK_BYTES) {
                sent += chunk.len();
                let resp = SnapshotResponse {
                    header: header.take(),
                    remaining_bytes: (total - sent) as u64,
                    blob: chunk.to_vec(),
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
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
