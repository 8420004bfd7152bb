//! The Raft peer network, client side: openraft's RPCs sent to a peer's `RaftPeer` gRPC service.
//!
//! Payloads are postcard-encoded openraft messages inside an opaque `RaftMessage`; snapshots are
//! streamed in chunks of at most [`SNAPSHOT_CHUNK_BYTES_MAX`] bytes.

use crate::TypeConfig;
use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_proto::raftpb::{RaftMessage, SnapshotChunk};
use cairn_types::limits::SNAPSHOT_CHUNK_BYTES_MAX;
use cairn_types::NodeAddrs;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long connecting to a peer may take before it counts as unreachable.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 500;

/// A lazily connecting gRPC channel to `addr` (`HOST:PORT`).
pub fn peer_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .connect_lazy())
}

/// Encodes a peer payload.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(v).map_err(|e| format!("encode: {e}"))
}

/// Decodes a peer payload.
pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| format!("decode: {e}"))
}

/// The peers this node must not reach: the seam through which tests (and the deterministic
/// simulation) cut the network between nodes, a partition. Empty unless a test fills it; every
/// message to a blocked peer fails as unreachable before it is sent, as if the link were down.
#[derive(Clone, Default, Debug)]
pub struct PeerFaults {
    blocked: Arc<RwLock<BTreeSet<u64>>>,
}

impl PeerFaults {
    /// Cuts the links to `peers` (adds to those already cut).
    pub fn block(&self, peers: impl IntoIterator<Item = u64>) {
        self.write().extend(peers);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.write().clear();
    }

    /// Whether the link to `peer` is cut.
    pub fn blocks(&self, peer: u64) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&peer)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeSet<u64>> {
        self.blocked.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Creates one [`PeerClient`] per target node.
#[derive(Clone, Default)]
pub struct PeerNetwork {
    faults: PeerFaults,
}

impl PeerNetwork {
    /// A network whose links obey `faults`.
    pub fn new(faults: PeerFaults) -> Self {
        Self { faults }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeAddrs) -> PeerClient {
        PeerClient {
            target,
            client: peer_channel(&node.peer).ok().map(RaftPeerClient::new),
            addr: node.peer.clone(),
            faults: self.faults.clone(),
        }
    }
}

/// Sends openraft RPCs to one peer.
pub struct PeerClient {
    target: u64,
    addr: String,
    client: Option<RaftPeerClient<Channel>>,
    faults: PeerFaults,
}

fn status_to_rpc_error(s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
            RPCError::Unreachable(Unreachable::from_string(s.message()))
        }
        _ => RPCError::Network(NetworkError::from_string(format!(
            "{}: {}",
            s.code(),
            s.message()
        ))),
    }
}

impl PeerClient {
    fn client(&self) -> Result<RaftPeerClient<Channel>, RPCError<TypeConfig>> {
        if self.faults.blocks(self.target) {
            return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                "link to node {} is cut (peer fault)",
                self.target
            ))));
        }
        self.client.clone().ok_or_else(|| {
            RPCError::Unreachable(Unreachable::from_string(format!(
                "bad peer address {:?} of node {}",
                self.addr, self.target
            )))
        })
    }

    async fn call<Req, Resp, F, Fut>(
        &mut self,
        req: &Req,
        option: &RPCOption,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = self.client()?;
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        let mut request = tonic::Request::new(RaftMessage { data });
        request.set_timeout(option.hard_ttl());
        let resp = f(client, request).await.map_err(status_to_rpc_error)?;
        decode(&resp.into_inner().data).map_err(|e| RPCError::Network(NetworkError::from_string(e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&rpc, &option, |mut c, r| async move { c.pre_vote(r).await })
            .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(&req, &option, |mut c, r| async move {
            c.transfer_leader(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self
            .client()
            .map_err(|e| StreamingError::Unreachable(Unreachable::from_string(e.to_string())))?;
        let meta = encode(&(vote, snapshot.meta))
            .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))?;
        let data = snapshot.snapshot;
        let mut chunks = Vec::with_capacity(data.len() / SNAPSHOT_CHUNK_BYTES_MAX + 1);
        let mut pieces = data.chunks(SNAPSHOT_CHUNK_BYTES_MAX).peekable();
        chunks.push(SnapshotChunk {
            meta,
            data: Vec::new(),
            done: pieces.peek().is_none(),
        });
        while let Some(piece) = pieces.next() {
            chunks.push(SnapshotChunk {
                meta: Vec::new(),
                data: piece.to_vec(),
                done: pieces.peek().is_none(),
            });
        }
        let mut request = tonic::Request::new(futures::stream::iter(chunks));
        request.set_timeout(option.hard_ttl());
        let send = client.full_snapshot(request);
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            resp = send => {
                let resp = resp.map_err(|s| match status_to_rpc_error(s) {
                    RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                    RPCError::Network(n) => StreamingError::Network(n),
                    other => StreamingError::Network(NetworkError::from_string(other.to_string())),
                })?;
                decode(&resp.into_inner().data)
                    .map_err(|e| StreamingError::Network(NetworkError::from_string(e)))
            }
        }
    }
}
