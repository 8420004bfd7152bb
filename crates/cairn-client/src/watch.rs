//! [`WatchStream`]: one etcd watch on one bidirectional stream, with the server's
//! cancellations turned into errors so a caller's loop only sees events.

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    WatchCancelRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::error::ClientError;
use crate::RESPONSE_BYTES_MAX;

/// Requests queued towards the server on one watch stream (a create and a cancel at most).
const WATCH_REQUESTS_BUFFER_MAX: usize = 4;

/// An open watch. Dropping it closes the stream, which ends the watch on the server.
pub struct WatchStream {
    endpoint: String,
    created: WatchResponse,
    inbound: tonic::Streaming<WatchResponse>,
    /// Kept open for the life of the watch: closing the request side may end the stream.
    outbound: mpsc::Sender<WatchRequest>,
}

/// The halves of a stream whose first response has not been checked yet.
pub(crate) struct OpenedStream {
    inbound: tonic::Streaming<WatchResponse>,
    outbound: mpsc::Sender<WatchRequest>,
}

impl WatchStream {
    /// Opens the stream, sends the create request and reads the server's first answer.
    pub(crate) async fn open(
        channel: Channel,
        create: WatchCreateRequest,
    ) -> Result<(WatchResponse, OpenedStream), tonic::Status> {
        let (outbound, requests) = mpsc::channel(WATCH_REQUESTS_BUFFER_MAX);
        outbound
            .send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })
            .await
            .map_err(|_| tonic::Status::internal("watch request queue closed"))?;
        let requests = futures::stream::unfold(requests, |mut rx| async move {
            rx.recv().await.map(|request| (request, rx))
        });
        let mut inbound = WatchClient::new(channel)
            .max_decoding_message_size(RESPONSE_BYTES_MAX)
            .watch(requests)
            .await?
            .into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            tonic::Status::unavailable("watch stream closed before the watch was created")
        })?;
        Ok((first, OpenedStream { inbound, outbound }))
    }

    /// Checks that the first response confirms the creation.
    pub(crate) fn confirm(
        endpoint: String,
        first: WatchResponse,
        opened: OpenedStream,
    ) -> Result<WatchStream, ClientError> {
        if first.canceled {
            return Err(canceled(endpoint, &first));
        }
        if !first.created {
            return Err(ClientError::WatchEnded {
                endpoint,
                reason: "the server's first response did not confirm the watch".to_string(),
            });
        }
        Ok(WatchStream {
            endpoint,
            created: first,
            inbound: opened.inbound,
            outbound: opened.outbound,
        })
    }

    /// The endpoint serving this watch.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The watch id the server assigned.
    pub fn watch_id(&self) -> i64 {
        self.created.watch_id
    }

    /// The server's response confirming the watch (its header holds the revision at creation).
    pub fn created(&self) -> &WatchResponse {
        &self.created
    }

    /// The next response: events, or an empty progress notification. A cancellation by the
    /// server and the end of the stream are errors.
    pub async fn next(&mut self) -> Result<WatchResponse, ClientError> {
        match self.inbound.message().await {
            Ok(Some(response)) if response.canceled => {
                Err(canceled(self.endpoint.clone(), &response))
            }
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err(ClientError::WatchEnded {
                endpoint: self.endpoint.clone(),
                reason: "closed by the server".to_string(),
            }),
            Err(status) => Err(ClientError::Rpc {
                endpoint: self.endpoint.clone(),
                status: Box::new(status),
            }),
        }
    }

    /// Asks the server to cancel the watch; [`WatchStream::next`] then returns
    /// [`ClientError::WatchCanceled`] once the server confirms.
    pub async fn cancel(&mut self) -> Result<(), ClientError> {
        let request = WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: self.watch_id(),
            })),
        };
        self.outbound
            .send(request)
            .await
            .map_err(|_| ClientError::WatchEnded {
                endpoint: self.endpoint.clone(),
                reason: "the request side is closed".to_string(),
            })
    }
}

fn canceled(endpoint: String, response: &WatchResponse) -> ClientError {
    let reason = if response.compact_revision > 0 {
        format!(
            "required revision has been compacted (compact revision {})",
            response.compact_revision
        )
    } else if response.cancel_reason.is_empty() {
        "cancelled by the server".to_string()
    } else {
        response.cancel_reason.clone()
    };
    ClientError::WatchCanceled {
        endpoint,
        reason,
        compact_revision: response.compact_revision,
    }
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("endpoint", &self.endpoint)
            .field("watch_id", &self.watch_id())
            .finish()
    }
}
