//! The Raft peer network, client side: openraft's RPCs sent to a peer's `RaftPeer` gRPC service.
//!
//! Payloads are postcard-encoded openraft messages inside an opaque `RaftMessage` of at most
//! [`PEER_MESSAGE_BYTES_MAX`] bytes (a larger AppendEntries goes out in parts); snapshots are
//! streamed in chunks of at most [`SNAPSHOT_CHUNK_BYTES_MAX`] bytes.

pub use crate::peer_wire::{decode, encode, PeerFaults};
pub(crate) use crate::peer_wire::{entries_that_fit, status_to_rpc_error};
use crate::stream_append::{self, AnswerStream};
use crate::TypeConfig;
use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_proto::raftpb::{RaftMessage, SnapshotChunk};
use cairn_types::limits::{
    APPEND_STREAM_INFLIGHT_MAX, PEER_MESSAGE_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX,
    SNAPSHOT_SEND_MS_PER_MIB,
};
use cairn_types::NodeAddrs;
use futures::Stream;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{stream_append_sequential, RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// A boxed future, as openraft's streaming network calls return.
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

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

/// Creates one [`PeerClient`] per target node.
#[derive(Clone)]
pub struct PeerNetwork {
    faults: PeerFaults,
    append_timeout_min: Duration,
    window: usize,
}

impl PeerNetwork {
    /// A network whose links obey `faults`, giving an append (or heartbeat) at least
    /// `append_timeout_min` to be answered.
    ///
    /// openraft gives an append one heartbeat interval (100 ms). A follower whose fsync takes
    /// longer under load (three members and their snapshots on one disk) then never has an
    /// append acknowledged, though it wrote every one: the leader goes without a quorum's word
    /// for a leader lease and steps its services down, again and again (BENCHMARKS.md). A late
    /// answer still counts for the lease from when the request was sent.
    ///
    /// A replication stream keeps at most `window` messages unanswered (clamped to
    /// 1..=[`APPEND_STREAM_INFLIGHT_MAX`]; the server's configuration refuses values outside).
    pub fn new(faults: PeerFaults, append_timeout_min: Duration, window: usize) -> Self {
        Self {
            faults,
            append_timeout_min,
            window: window.clamp(1, APPEND_STREAM_INFLIGHT_MAX),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeAddrs) -> PeerClient {
        PeerClient {
            target,
            client: peer_channel(&node.peer).ok().map(|channel| {
                RaftPeerClient::new(channel)
                    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX)
            }),
            addr: node.peer.clone(),
            faults: self.faults.clone(),
            append_timeout_min: self.append_timeout_min,
            window: self.window,
            unary_only: false,
            open_failed: false,
        }
    }
}

/// Sends openraft RPCs to one peer.
pub struct PeerClient {
    target: u64,
    addr: String,
    client: Option<RaftPeerClient<Channel>>,
    faults: PeerFaults,
    append_timeout_min: Duration,
    /// Replication window: messages a stream keeps unanswered.
    window: usize,
    /// Set once the peer turned out to have no `StreamAppend` (an older version): replication
    /// to it then goes one unary call at a time.
    unary_only: bool,
    /// Whether the last replication stream failed to open: the next waits
    /// [`STREAM_REOPEN_BACKOFF_MS`] first.
    open_failed: bool,
}

/// How long a replication stream waits before it opens after the last one failed to (openraft's
/// own default backoff), ms: a follower that is down is retried 5 times a second, not in a loop.
pub const STREAM_REOPEN_BACKOFF_MS: u64 = 200;

/// Time for streaming a snapshot of `bytes` and having the receiver install it: openraft's
/// `install_snapshot_timeout` is meant for small snapshots, large ones need time by size.
fn snapshot_send_timeout(base: Duration, bytes: usize) -> Duration {
    let mib = (bytes as u64).div_ceil(1024 * 1024);
    base + Duration::from_millis(mib.saturating_mul(SNAPSHOT_SEND_MS_PER_MIB))
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
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        self.call_encoded(data, option, f).await
    }

    async fn call_encoded<Resp, F, Fut>(
        &mut self,
        data: Vec<u8>,
        option: &RPCOption,
        f: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Resp: DeserializeOwned,
        F: FnOnce(RaftPeerClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let client = self.client()?;
        let mut request = tonic::Request::new(RaftMessage { data });
        request.set_timeout(option.hard_ttl());
        let resp = f(client, request).await.map_err(status_to_rpc_error)?;
        decode(&resp.into_inner().data).map_err(|e| RPCError::Network(NetworkError::from_string(e)))
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<AnswerStream<'s>, RPCError<TypeConfig>>>
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if self.unary_only {
            return stream_append_sequential(self, input, option);
        }
        Box::pin(async move {
            // openraft sleeps out its backoff after a failure inside the request stream, when
            // it is polled; a connection refused (the peer down) fails before anything is
            // polled, so openraft would open the next stream at once: in a loop that took a
            // core and wrote 2 GB of warnings in 13 minutes with both followers stopped. A
            // stream opened after a failed one waits first.
            if self.open_failed {
                tokio::time::sleep(Duration::from_millis(STREAM_REOPEN_BACKOFF_MS)).await;
            }
            let client = self.client().inspect_err(|_| self.open_failed = true)?;
            let timeout = option.hard_ttl().max(self.append_timeout_min);
            let opened = stream_append::open(
                client,
                self.target,
                self.faults.clone(),
                input,
                timeout,
                self.window,
            )
            .await;
            self.open_failed = opened.is_err();
            match opened {
                Ok(answers) => Ok(answers),
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    tracing::info!(
                        target = self.target,
                        "peer has no StreamAppend (an older version): replicating to it by unary calls"
                    );
                    self.unary_only = true;
                    Err(RPCError::Network(NetworkError::from_string(
                        "peer has no StreamAppend; retrying with unary calls",
                    )))
                }
                Err(s) => Err(status_to_rpc_error(s)),
            }
        })
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let option = if option.hard_ttl() < self.append_timeout_min {
            RPCOption::new(self.append_timeout_min)
        } else {
            option
        };
        let data = encode(&rpc).map_err(|e| RPCError::Network(NetworkError::from_string(e)))?;
        let size = data.len();
        if size <= PEER_MESSAGE_BYTES_MAX || rpc.entries.len() <= 1 {
            return self
                .call_encoded(data, &option, |mut c, r| async move {
                    c.append_entries(r).await
                })
                .await;
        }
        drop(data);
        // Too large for one message (openraft batches by count, not bytes): send the entries
        // that fit and report how far they reached; openraft sends the rest next.
        let mut part = rpc;
        let entries = std::mem::take(&mut part.entries);
        let header = postcard::experimental::serialized_size(&part).unwrap_or(0);
        let sizes = entries
            .iter()
            .map(|e| postcard::experimental::serialized_size(e).unwrap_or(0));
        let fit = entries_that_fit(header, sizes, PEER_MESSAGE_BYTES_MAX);
        part.entries = entries;
        part.entries.truncate(fit);
        let last = part.entries.last().map(|e| e.log_id);
        tracing::debug!(
            target = self.target,
            size,
            sent = fit,
            "append entries sent in parts"
        );
        let resp = self
            .call(&part, &option, |mut c, r| async move {
                c.append_entries(r).await
            })
            .await?;
        Ok(match resp {
            AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(last),
            other => other,
        })
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
        let timeout = snapshot_send_timeout(option.hard_ttl(), data.len());
        let pieces = data.len().div_ceil(SNAPSHOT_CHUNK_BYTES_MAX);
        let header = SnapshotChunk {
            meta,
            data: Vec::new(),
            done: pieces == 0,
        };
        // Chunks are copied out of the snapshot only as the stream is polled (HTTP/2 flow
        // control paces it), so sending adds at most a few chunks to the snapshot in memory.
        let body = (0..pieces).map(move |i| {
            let start = i * SNAPSHOT_CHUNK_BYTES_MAX;
            let end = (start + SNAPSHOT_CHUNK_BYTES_MAX).min(data.len());
            SnapshotChunk {
                meta: Vec::new(),
                data: data[start..end].to_vec(),
                done: i + 1 == pieces,
            }
        });
        let chunks = std::iter::once(header).chain(body);
        let mut request = tonic::Request::new(futures::stream::iter(chunks));
        request.set_timeout(timeout);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_entries_parts_fit_the_message_limit() {
        // Everything fits.
        assert_eq!(entries_that_fit(100, [10, 10, 10], 1000), 3);
        // Stops before the entry that would cross the limit (header + varint room + entries).
        assert_eq!(entries_that_fit(100, [300, 300, 300], 1000), 2);
        assert_eq!(entries_that_fit(100, [300, 300, 300], 709), 1);
        // One entry goes even if it alone is too large: replication must progress.
        assert_eq!(entries_that_fit(100, [5000, 1], 1000), 1);
        assert_eq!(entries_that_fit(100, [], 1000), 0);
    }

    #[test]
    fn snapshot_timeout_grows_with_size() {
        let base = Duration::from_millis(200);
        assert_eq!(snapshot_send_timeout(base, 0), base);
        assert_eq!(
            snapshot_send_timeout(base, 124 * 1024 * 1024),
            base + Duration::from_millis(124 * SNAPSHOT_SEND_MS_PER_MIB)
        );
    }
}
