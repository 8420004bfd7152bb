//! [`EtcdClient`]: channels to every endpoint, failover between them, and the convenience calls.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_proto::cairnpb::admin_client::AdminClient;
use cairn_proto::cairnpb::{
    LeaderInfoRequest, LeaderInfoResponse, TransferLeaderRequest, TransferLeaderResponse,
};
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, StatusRequest, StatusResponse, TxnRequest, TxnResponse, WatchCreateRequest,
};
use cairn_proto::mvccpb::KeyValue;
use tonic::transport::{Channel, Endpoint};

use crate::endpoint::{normalize_endpoint, normalize_endpoints};
use crate::error::ClientError;
use crate::keys::prefix_range;
use crate::retry::{classify, is_retryable, Failure};
use crate::watch::WatchStream;
use crate::{ClientConfig, KEEPALIVE_INTERVAL_MS, KEEPALIVE_TIMEOUT_MS, RESPONSE_BYTES_MAX};

/// A client for a list of etcd v3 endpoints. Cheap to clone; clones share channels.
///
/// Must be created inside a Tokio runtime (tonic spawns one background task per channel).
/// Nothing connects until the first call.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// Index of the endpoint that answered last; calls start there.
    preferred: AtomicUsize,
    config: ClientConfig,
}

/// A channel to one endpoint that connects on first use, with the timeouts of `config`.
///
/// The request timeout is not set on the channel: it would also cut long-lived watch streams.
/// [`EtcdClient`] applies it per attempt instead.
pub fn lazy_channel(endpoint: &str, config: &ClientConfig) -> Result<Channel, ClientError> {
    let uri = normalize_endpoint(endpoint)?;
    let endpoint =
        Endpoint::from_shared(uri.clone()).map_err(|e| ClientError::InvalidEndpoint {
            endpoint: uri,
            reason: e.to_string(),
        })?;
    Ok(endpoint
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .http2_keep_alive_interval(Duration::from_millis(KEEPALIVE_INTERVAL_MS))
        .keep_alive_timeout(Duration::from_millis(KEEPALIVE_TIMEOUT_MS))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl EtcdClient {
    /// A client for `endpoints` (`HOST:PORT` or `http://HOST:PORT`) with the default
    /// [`ClientConfig`].
    pub fn new<I, S>(endpoints: I) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::with_config(endpoints, ClientConfig::default())
    }

    /// A client for `endpoints` with explicit timeouts and retry bounds.
    pub fn with_config<I, S>(endpoints: I, config: ClientConfig) -> Result<Self, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints = normalize_endpoints(endpoints)?;
        let channels = endpoints
            .iter()
            .map(|e| lazy_channel(e, &config))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                endpoints,
                channels,
                preferred: AtomicUsize::new(0),
                config,
            }),
        })
    }

    /// The endpoints, normalised to `http://HOST:PORT`, in rotation order.
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The timeouts and retry bounds in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The endpoint calls currently start with.
    pub fn preferred_endpoint(&self) -> &str {
        &self.inner.endpoints[self.preferred_index()]
    }

    fn preferred_index(&self) -> usize {
        self.inner.preferred.load(Ordering::Relaxed) % self.inner.channels.len()
    }

    /// The channel to the preferred endpoint.
    pub fn channel(&self) -> Channel {
        self.inner.channels[self.preferred_index()].clone()
    }

    /// Typed KV client on the preferred endpoint (no retries, no request timeout).
    pub fn kv(&self) -> KvClient<Channel> {
        kv_client(self.channel())
    }

    /// Typed Watch client on the preferred endpoint. See also [`EtcdClient::watch_stream`].
    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// Typed Lease client on the preferred endpoint.
    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// Typed Cluster client on the preferred endpoint.
    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// Typed Maintenance client on the preferred endpoint.
    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// Typed client of Cairn's Admin service on the preferred endpoint.
    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel()).max_decoding_message_size(RESPONSE_BYTES_MAX)
    }

    /// Runs `op` against the endpoints until it succeeds, fails with an error that must not be
    /// retried, or runs out of attempts. Each attempt gets the request timeout.
    ///
    /// A request that could not be sent (no connection) is always retried on the next endpoint.
    /// `idempotent` also allows retrying after `Unavailable` or a timeout, when the first attempt
    /// may have been applied; pass `false` for writes. See [`crate::retry::is_retryable`].
    pub async fn call<T, F, Fut>(&self, idempotent: bool, op: F) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_indexed(idempotent, op)
            .await
            .map(|(value, _)| value)
    }

    /// [`EtcdClient::call`], also returning the index of the endpoint that answered.
    pub(crate) async fn call_indexed<T, F, Fut>(
        &self,
        idempotent: bool,
        op: F,
    ) -> Result<(T, usize), ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let timeout_ms = self.inner.config.request_timeout_ms;
        self.call_indexed_within(idempotent, timeout_ms, op).await
    }

    /// [`EtcdClient::call`] with `timeout_ms` for each attempt instead of the configured request
    /// timeout: for requests that take long by nature (a region migration).
    pub(crate) async fn call_within<T, F, Fut>(
        &self,
        idempotent: bool,
        timeout_ms: u64,
        op: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_indexed_within(idempotent, timeout_ms, op)
            .await
            .map(|(value, _)| value)
    }

    async fn call_indexed_within<T, F, Fut>(
        &self,
        idempotent: bool,
        timeout_ms: u64,
        mut op: F,
    ) -> Result<(T, usize), ClientError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let inner = &self.inner;
        let count = inner.channels.len();
        let policy = inner.config.retry_policy();
        let attempts = policy.attempts(count);
        let timeout = Duration::from_millis(timeout_ms);
        let start = self.preferred_index();
        let mut last: Option<ClientError> = None;
        for attempt in 0..attempts {
            let delay_ms = policy.delay_before_attempt_ms(attempt, count);
            if delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            let index = (start + attempt as usize) % count;
            let endpoint = &inner.endpoints[index];
            let (failure, error) =
                match tokio::time::timeout(timeout, op(inner.channels[index].clone())).await {
                    Ok(Ok(value)) => {
                        inner.preferred.store(index, Ordering::Relaxed);
                        return Ok((value, index));
                    }
                    Ok(Err(status)) => (
                        classify(&status),
                        ClientError::Rpc {
                            endpoint: endpoint.clone(),
                            status: Box::new(status),
                        },
                    ),
                    Err(_elapsed) => (
                        Failure::Timeout,
                        ClientError::Timeout {
                            endpoint: endpoint.clone(),
                            timeout_ms,
                        },
                    ),
                };
            if !is_retryable(failure, idempotent) {
                // The endpoint answered: keep talking to it.
                if matches!(failure, Failure::Status(_)) {
                    inner.preferred.store(index, Ordering::Relaxed);
                }
                return Err(error);
            }
            last = Some(error);
        }
        let last = last.expect("at least one attempt is always made");
        if attempts == 1 {
            return Err(last);
        }
        Err(ClientError::Exhausted {
            attempts,
            last: Box::new(last),
        })
    }

    /// Puts `value` at `key`.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResponse, ClientError> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
        .await
    }

    /// Sends a full `PutRequest` (lease, prev_kv, …).
    pub async fn put_request(&self, request: PutRequest) -> Result<PutResponse, ClientError> {
        self.call(false, |ch| {
            let request = request.clone();
            async move { Ok(kv_client(ch).put(request).await?.into_inner()) }
        })
        .await
    }

    /// The key-value at `key`, if it exists (linearizable read).
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<KeyValue>, ClientError> {
        let response = self
            .range(RangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Every key-value whose key starts with `prefix`, in key order (linearizable read).
    pub async fn get_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<Vec<KeyValue>, ClientError> {
        let (key, range_end) = prefix_range(&prefix.into());
        let response = self
            .range(RangeRequest {
                key,
                range_end,
                ..Default::default()
            })
            .await?;
        Ok(response.kvs)
    }

    /// Sends a full `RangeRequest`.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, ClientError> {
        self.call(true, |ch| {
            let request = request.clone();
            async move { Ok(kv_client(ch).range(request).await?.into_inner()) }
        })
        .await
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<i64, ClientError> {
        let response = self
            .delete_range(DeleteRangeRequest {
                key: key.into(),
                ..Default::default()
            })
            .await?;
        Ok(response.deleted)
    }

    /// Sends a full `DeleteRangeRequest`.
    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, ClientError> {
        self.call(false, |ch| {
            let request = request.clone();
            async move { Ok(kv_client(ch).delete_range(request).await?.into_inner()) }
        })
        .await
    }

    /// Sends a `TxnRequest`.
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, ClientError> {
        self.call(false, |ch| {
            let request = request.clone();
            async move { Ok(kv_client(ch).txn(request).await?.into_inner()) }
        })
        .await
    }

    /// Opens a watch on the first endpoint that accepts it and waits for the server to confirm
    /// it was created. A stream is not resumed on another endpoint when it breaks; start a new
    /// one from the next revision.
    pub async fn watch_stream(
        &self,
        request: WatchCreateRequest,
    ) -> Result<WatchStream, ClientError> {
        let ((created, stream), index) = self
            .call_indexed(true, |ch| WatchStream::open(ch, request.clone()))
            .await?;
        WatchStream::confirm(self.inner.endpoints[index].clone(), created, stream)
    }

    /// Members of the cluster (linearizable).
    pub async fn member_list(&self) -> Result<MemberListResponse, ClientError> {
        self.call(true, |ch| async move {
            let request = MemberListRequest { linearizable: true };
            Ok(cluster_client(ch).member_list(request).await?.into_inner())
        })
        .await
    }

    /// Adds a member with the given peer URLs.
    pub async fn member_add(
        &self,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<MemberAddResponse, ClientError> {
        self.call(false, |ch| {
            let request = MemberAddRequest {
                peer_ur_ls: peer_urls.clone(),
                is_learner,
            };
            async move { Ok(cluster_client(ch).member_add(request).await?.into_inner()) }
        })
        .await
    }

    /// Removes member `id`.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse, ClientError> {
        self.call(false, |ch| async move {
            let request = MemberRemoveRequest { id };
            Ok(cluster_client(ch)
                .member_remove(request)
                .await?
                .into_inner())
        })
        .await
    }

    /// Promotes learner `id` to voter.
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse, ClientError> {
        self.call(false, |ch| async move {
            let request = MemberPromoteRequest { id };
            Ok(cluster_client(ch)
                .member_promote(request)
                .await?
                .into_inner())
        })
        .await
    }

    /// The status of one node, asked of that node only (no failover: the answer is about the
    /// endpoint). `endpoint` need not be one of the client's endpoints.
    pub async fn status(&self, endpoint: &str) -> Result<StatusResponse, ClientError> {
        let endpoint = normalize_endpoint(endpoint)?;
        let channel = match self.inner.endpoints.iter().position(|e| *e == endpoint) {
            Some(index) => self.inner.channels[index].clone(),
            None => lazy_channel(&endpoint, &self.inner.config)?,
        };
        let mut client =
            MaintenanceClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX);
        let timeout_ms = self.inner.config.request_timeout_ms;
        match tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            client.status(StatusRequest {}),
        )
        .await
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ClientError::Rpc {
                endpoint,
                status: Box::new(status),
            }),
            Err(_elapsed) => Err(ClientError::Timeout {
                endpoint,
                timeout_ms,
            }),
        }
    }

    /// Who the answering node believes leads (Cairn's Admin API).
    pub async fn leader_info(&self) -> Result<LeaderInfoResponse, ClientError> {
        self.call(true, |ch| async move {
            Ok(admin_client(ch)
                .leader_info(LeaderInfoRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// Asks the cluster to move Raft leadership to node `to` (Cairn's Admin API).
    pub async fn transfer_leader(&self, to: u64) -> Result<TransferLeaderResponse, ClientError> {
        self.call(false, |ch| async move {
            Ok(admin_client(ch)
                .transfer_leader(TransferLeaderRequest { to })
                .await?
                .into_inner())
        })
        .await
    }
}

fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX)
}

fn cluster_client(channel: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX)
}

fn admin_client(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX)
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.inner.endpoints)
            .field("preferred", &self.preferred_endpoint())
            .field("config", &self.inner.config)
            .finish()
    }
}
