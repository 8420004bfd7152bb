//! How a heartbeat loop reaches a Cairn node: over gRPC unless [`HeartbeatOptions::transport`]
//! names another way (the deterministic simulation carries streams over its simulated network).
//!
//! [`HeartbeatOptions::transport`]: super::HeartbeatOptions::transport

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use cairn_proto::cairnpb::heartbeat_client::HeartbeatClient;
use cairn_proto::cairnpb::{HeartbeatRequest, HeartbeatResponse};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::Channel;
use tonic::Status;

use crate::{lazy_channel, ClientConfig, ENDPOINTS_MAX, RESPONSE_BYTES_MAX};

/// The node's side of an open heartbeat stream.
pub type HeartbeatResponses =
    Pin<Box<dyn Stream<Item = Result<HeartbeatResponse, Status>> + Send + 'static>>;

/// A stream being opened.
pub type OpenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<HeartbeatResponses, Status>> + Send + 'a>>;

/// Opens heartbeat streams.
///
/// # Correctness requirements
/// `open` sends what arrives on `requests`, in order, and yields the node's responses in the
/// order the node sent them; a broken connection ends the response stream (with an error or
/// without). The heartbeat loop bounds the wait for the stream to open itself.
pub trait HeartbeatTransport: Send + Sync + 'static {
    /// Opens a heartbeat stream to `endpoint` (`http://HOST:PORT`) that sends `requests`.
    fn open(&self, endpoint: &str, requests: mpsc::Receiver<HeartbeatRequest>) -> OpenFuture<'_>;
}

/// gRPC, one lazily connected channel per endpoint.
pub(super) struct GrpcTransport {
    config: ClientConfig,
    channels: Mutex<HashMap<String, Channel>>,
}

impl GrpcTransport {
    pub(super) fn new(config: ClientConfig) -> Self {
        GrpcTransport {
            config,
            channels: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, endpoint: &str) -> Result<Channel, Status> {
        // A map of channels cannot be left half-updated by a panic.
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(channel) = channels.get(endpoint) {
            return Ok(channel.clone());
        }
        let channel = lazy_channel(endpoint, &self.config)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Leaders come and go; a client never needs more channels than a cluster has nodes.
        if channels.len() >= ENDPOINTS_MAX {
            channels.clear();
        }
        channels.insert(endpoint.to_string(), channel.clone());
        Ok(channel)
    }
}

impl HeartbeatTransport for GrpcTransport {
    fn open(&self, endpoint: &str, requests: mpsc::Receiver<HeartbeatRequest>) -> OpenFuture<'_> {
        let channel = self.channel(endpoint);
        Box::pin(async move {
            let mut client =
                HeartbeatClient::new(channel?).max_decoding_message_size(RESPONSE_BYTES_MAX);
            let inbound = client
                .heartbeat(tokio_stream::wrappers::ReceiverStream::new(requests))
                .await?
                .into_inner();
            let responses: HeartbeatResponses = Box::pin(inbound.map(|r| r));
            Ok(responses)
        })
    }
}
