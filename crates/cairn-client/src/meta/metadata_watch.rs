//! [`MetadataWatch`]: the `WatchMetadata` stream kept open on a background task. It reconnects
//! by itself (any endpoint, bounded backoff) and resumes after the last revision it delivered,
//! so the consumer sees each change once and in order. When the server no longer has the
//! history to resume from, the consumer gets [`MetadataWatchItem::Reset`] instead of a gap.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_proto::cairnpb::{MetadataEvent, WatchMetadataRequest, WatchMetadataResponse};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::backoff::reconnect_delay_ms;
use super::ddl::meta_rpc;
use super::MetaClient;

/// Items buffered between the watch task and a consumer that is slower than the server; when
/// full, the task stops reading the stream (and the server's flow control holds back).
pub const METADATA_WATCH_BUFFER_MAX: usize = 1_024;

/// What a [`MetadataWatch`] delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataWatchItem {
    /// One change, in revision order.
    Event(MetadataEvent),
    /// The server no longer holds the changes the watch needed to resume (they were compacted):
    /// some changes are lost to this watch. Drop every piece of metadata cached from earlier
    /// reads. Events from `revision + 1` on follow.
    Reset {
        /// The store revision when the server noticed; reads made after this item reflect it.
        revision: i64,
    },
}

/// A metadata watch running on a background task; see [`MetaClient::watch_metadata`].
/// Dropping it stops the task and closes the stream.
pub struct MetadataWatch {
    items: mpsc::Receiver<MetadataWatchItem>,
    task: JoinHandle<()>,
}

impl MetadataWatch {
    /// The next item. Waits while nothing changes; `None` only if the watch task ended
    /// (it does not end by itself while the watch is alive, so this means it panicked).
    pub async fn next(&mut self) -> Option<MetadataWatchItem> {
        self.items.recv().await
    }
}

impl futures::Stream for MetadataWatch {
    type Item = MetadataWatchItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.items.poll_recv(cx)
    }
}

impl Drop for MetadataWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for MetadataWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataWatch").finish_non_exhaustive()
    }
}

impl MetaClient {
    /// Watches metadata changes (databases and tables created, altered or dropped, routes
    /// changed) from `start_revision` on; 0 means "changes after now", which the watch pins to
    /// a revision first (with [`MetaClient::metadata_revision`]) so that a reconnect before the
    /// first change still misses nothing.
    ///
    /// The stream runs on a background task: when it breaks it is reopened on any endpoint,
    /// after [`super::reconnect_delay_ms`] of the failures in a row, from the revision after
    /// the last event delivered. When the server answers that this revision was compacted, the
    /// watch yields [`MetadataWatchItem::Reset`] and continues after the server's current
    /// revision. At most [`METADATA_WATCH_BUFFER_MAX`] items wait for the consumer.
    ///
    /// Resuming after the last revision assumes the server sends all events of one revision in
    /// one response (one DDL writes its keys in one transaction, so its events share it).
    pub fn watch_metadata(&self, start_revision: i64) -> MetadataWatch {
        let (tx, items) = mpsc::channel(METADATA_WATCH_BUFFER_MAX);
        let task = tokio::spawn(run(self.clone(), start_revision, tx));
        MetadataWatch { items, task }
    }
}

/// Distinguishes the backoff jitter of watches in one process.
static WATCHES_STARTED: AtomicU64 = AtomicU64::new(0);

/// Why one stream ended.
enum StreamEnd {
    /// The consumer is gone.
    Closed,
    /// The server compacted the revision asked for; resume after `revision`.
    Compacted { revision: i64 },
    /// The stream broke or ended; `delivered` says whether it carried anything first.
    Broken { delivered: bool, reason: String },
}

async fn run(client: MetaClient, start_revision: i64, tx: mpsc::Sender<MetadataWatchItem>) {
    let jitter_seed =
        (u64::from(std::process::id()) << 20) ^ WATCHES_STARTED.fetch_add(1, Ordering::Relaxed);
    let mut failures = 0u32;
    let mut next_revision = start_revision;
    while next_revision <= 0 {
        match client.metadata_revision().await {
            Ok(revision) => next_revision = revision.max(0) + 1,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, "metadata watch: cannot read the current revision");
                if pause(&tx, reconnect_delay_ms(failures, jitter_seed)).await {
                    return;
                }
            }
        }
    }
    failures = 0;
    loop {
        if failures > 0 && pause(&tx, reconnect_delay_ms(failures, jitter_seed)).await {
            return;
        }
        let request = WatchMetadataRequest {
            start_revision: next_revision,
        };
        let opened = client
            .etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch).watch_metadata(request).await?.into_inner())
            })
            .await;
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, next_revision, "metadata watch: cannot open");
                continue;
            }
        };
        match follow(&mut stream, &mut next_revision, &tx).await {
            StreamEnd::Closed => return,
            StreamEnd::Compacted { revision } => {
                // Counted as a failure: a server that keeps answering "compacted" must not
                // make the watch spin.
                failures = failures.saturating_add(1);
                if tx
                    .send(MetadataWatchItem::Reset { revision })
                    .await
                    .is_err()
                {
                    return;
                }
                next_revision = next_revision.max(revision + 1);
            }
            StreamEnd::Broken { delivered, reason } => {
                tracing::debug!(reason, next_revision, "metadata watch: stream ended");
                failures = if delivered {
                    1
                } else {
                    failures.saturating_add(1)
                };
            }
        }
    }
}

/// Delivers the events of one stream until it ends, advancing `next_revision` past each.
async fn follow(
    stream: &mut tonic::Streaming<WatchMetadataResponse>,
    next_revision: &mut i64,
    tx: &mpsc::Sender<MetadataWatchItem>,
) -> StreamEnd {
    let mut delivered = false;
    loop {
        let message = tokio::select! {
            _ = tx.closed() => return StreamEnd::Closed,
            message = stream.message() => message,
        };
        let response = match message {
            Ok(Some(response)) => response,
            Ok(None) => {
                return StreamEnd::Broken {
                    delivered,
                    reason: "closed by the server".to_string(),
                }
            }
            Err(status) => {
                return StreamEnd::Broken {
                    delivered,
                    reason: status.to_string(),
                }
            }
        };
        delivered = true;
        if response.compact_revision != 0 {
            return StreamEnd::Compacted {
                revision: response.revision,
            };
        }
        // Events below the revision asked for were delivered by an earlier stream.
        let from = *next_revision;
        for event in response.events {
            if event.revision < from {
                continue;
            }
            *next_revision = (*next_revision).max(event.revision + 1);
            if tx.send(MetadataWatchItem::Event(event)).await.is_err() {
                return StreamEnd::Closed;
            }
        }
    }
}

/// Sleeps `delay_ms`, or less if the consumer goes away; true when it did.
async fn pause(tx: &mpsc::Sender<MetadataWatchItem>, delay_ms: u64) -> bool {
    tokio::select! {
        _ = tx.closed() => true,
        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => false,
    }
}
