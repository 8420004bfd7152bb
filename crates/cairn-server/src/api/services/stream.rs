//! Bidirectional streams served with bounds: a slot per stream out of a named maximum, one task
//! per stream, and a bounded channel for its responses.

use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// A stream of responses as tonic's server traits want it.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;
/// A stream of client messages: a gRPC request stream, or the JSON gateway's decoded body.
pub type Inbound<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Takes a slot from `slots` (refusing with etcd's "too many requests" naming `limit` when none is
/// left), runs `serve` on its own task with a response channel of `buffer` entries, and returns
/// the response stream. The slot is released when `serve` returns.
pub fn spawn_stream<Req, Resp, F, Fut>(
    slots: &Arc<Semaphore>,
    limit: &str,
    buffer: usize,
    inbound: Inbound<Req>,
    serve: F,
) -> Result<ResponseStream<Resp>, Status>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: FnOnce(Inbound<Req>, mpsc::Sender<Result<Resp, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permit = slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| crate::errors::too_many_requests(&format!("{limit} reached")))?;
    let (tx, rx) = mpsc::channel(buffer);
    let task = serve(inbound, tx);
    tokio::spawn(async move {
        task.await;
        drop(permit);
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}
