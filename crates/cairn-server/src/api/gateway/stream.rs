//! The gateway's streams: `/v3/watch` and `/v3/lease/keepalive` read JSON messages one after
//! another from the request body; `/v3/election/observe` and `/v3/maintenance/snapshot` take
//! one. Answers are chunked JSON, one `{"result":…}` per line, and an error ends the stream as
//! `{"error":{…}}`, as etcd's gateway writes them.

use std::sync::{Arc, Mutex};

use axum::body::{Body, BodyDataStream};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::json::{self, Method};
use super::{Gateway, Shared};
use crate::api::services::stream::{Inbound, ResponseStream};
use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
use cairn_proto::v3electionpb::election_server::Election;

/// Client messages of one gateway stream decoded ahead of the service taking them.
pub const GATEWAY_STREAM_INBOUND_MAX: usize = 16;

/// `POST /v3/watch`. The stream stays open after the body ends, as etcd's does: a watcher
/// sends its create request and reads events until it disconnects.
pub async fn watch(State(g): Shared, headers: HeaderMap, body: Body) -> Response {
    let method = Method::named("etcdserverpb.Watch.Watch");
    let caller = match g.request(&method, &headers, ()) {
        Ok(r) => crate::api::auth::caller(&r),
        Err(s) => return json::error_response(&s),
    };
    bidi(&g, method, body, true, |inbound| {
        g.watch.open(inbound, caller)
    })
    .await
}

/// `POST /v3/lease/keepalive`: one answer per request; the stream ends with the body.
pub async fn keep_alive(State(g): Shared, headers: HeaderMap, body: Body) -> Response {
    let method = Method::named("etcdserverpb.Lease.LeaseKeepAlive");
    if let Err(s) = g.request(&method, &headers, ()) {
        return json::error_response(&s);
    }
    bidi(&g, method, body, false, |inbound| {
        Ok(g.lease.keep_alive(inbound))
    })
    .await
}

/// `POST /v3/election/observe`.
pub async fn observe(State(g): Shared, headers: HeaderMap, body: Body) -> Response {
    let name = "v3electionpb.Election.Observe";
    one_in_many_out(&g, name, &headers, body, |r| g.election.observe(r)).await
}

/// `POST /v3/maintenance/snapshot`.
pub async fn snapshot(State(g): Shared, headers: HeaderMap, body: Body) -> Response {
    let name = "etcdserverpb.Maintenance.Snapshot";
    one_in_many_out(&g, name, &headers, body, |r| g.maintenance.snapshot(r)).await
}

/// A server stream: one request decoded and admitted, the service's responses chunked.
async fn one_in_many_out<Req, Resp, S, F, Fut>(
    g: &Gateway,
    rpc: &str,
    headers: &HeaderMap,
    body: Body,
    call: F,
) -> Response
where
    Req: Message + Default,
    Resp: Message + Send + 'static,
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<S>, Status>>,
{
    let method = Method::named(rpc);
    let req = async {
        let bytes = g.read_body(body).await?;
        g.request(&method, headers, method.decode(&bytes)?)
    };
    let req = match req.await {
        Ok(r) => r,
        Err(s) => return json::error_response(&s),
    };
    match call(req).await {
        Ok(resp) => answer(method, resp.into_inner(), None),
        Err(s) => json::error_response(&s),
    }
}

/// A bidirectional stream: the first message decides the call (a bad one is an ordinary
/// error answer); later ones are fed to the service as they arrive, and a bad one ends the
/// stream with an error chunk. `hold_open`: the body's end does not end the stream.
async fn bidi<Req, Resp, F>(
    g: &Gateway,
    method: Method,
    body: Body,
    hold_open: bool,
    open: F,
) -> Response
where
    Req: Message + Default + Send + 'static,
    Resp: Message + Send + 'static,
    F: FnOnce(Inbound<Req>) -> Result<ResponseStream<Resp>, Status>,
{
    let mut reader = JsonReader {
        chunks: body.into_data_stream(),
        buf: Vec::new(),
        max: g.body_max,
        eof: false,
    };
    let first: Option<Req> = match reader.next_value().await {
        Ok(Some(v)) => match method.decode(&v) {
            Ok(m) => Some(m),
            Err(s) => return json::error_response(&s),
        },
        Ok(None) => None,
        Err(s) => return json::error_response(&s),
    };
    let (tx, rx) = mpsc::channel(GATEWAY_STREAM_INBOUND_MAX);
    let failed = Arc::new(Mutex::new(None));
    let responses = match open(Box::pin(ReceiverStream::new(rx))) {
        Ok(r) => r,
        Err(s) => return json::error_response(&s),
    };
    let (input, noted) = (method.clone(), failed.clone());
    tokio::spawn(async move {
        if let Some(m) = first {
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
        }
        loop {
            let next = reader
                .next_value()
                .await
                .and_then(|v| v.map(|v| input.decode::<Req>(&v)).transpose());
            match next {
                Ok(Some(m)) => {
                    if tx.send(Ok(m)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(s) => {
                    *noted.lock().expect("not poisoned") = Some(s.clone());
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            }
        }
        if hold_open {
            tx.closed().await;
        }
    });
    answer(method, responses, Some(failed))
}

/// The chunked answer: each response as `{"result":…}`, an error as the stream's last chunk
/// (the service's, or a bad client message noted in `failed`).
fn answer<S, Resp>(
    method: Method,
    responses: S,
    failed: Option<Arc<Mutex<Option<Status>>>>,
) -> Response
where
    S: Stream<Item = Result<Resp, Status>> + Send + Unpin + 'static,
    Resp: Message + Send + 'static,
{
    let chunks = futures::stream::unfold(Some(responses), move |state| {
        let (method, failed) = (method.clone(), failed.clone());
        async move {
            let mut responses = state?;
            let chunk = match responses.next().await {
                Some(Ok(resp)) => match method.encode(&resp) {
                    Ok(json) => {
                        let mut line = Vec::with_capacity(json.len() + 12);
                        line.extend_from_slice(b"{\"result\":");
                        line.extend_from_slice(&json);
                        line.extend_from_slice(b"}\n");
                        return Some((Ok::<_, std::convert::Infallible>(line), Some(responses)));
                    }
                    Err(s) => json::stream_error_chunk(&s),
                },
                Some(Err(s)) => json::stream_error_chunk(&s),
                None => {
                    let noted = failed.and_then(|f| f.lock().expect("not poisoned").take());
                    json::stream_error_chunk(&noted?)
                }
            };
            Some((Ok(chunk.into_bytes()), None))
        }
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// JSON values, one after another, from a request body, each at most `max` bytes.
struct JsonReader {
    chunks: BodyDataStream,
    buf: Vec<u8>,
    max: usize,
    eof: bool,
}

impl JsonReader {
    /// The next complete value; `None` at the end of the body.
    async fn next_value(&mut self) -> Result<Option<Vec<u8>>, Status> {
        let mut fresh = true;
        loop {
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            // Every request is an object, which ends in `}`: parse only when one may have.
            if !self.buf.is_empty() && fresh {
                let mut values = serde_json::Deserializer::from_slice(&self.buf)
                    .into_iter::<serde::de::IgnoredAny>();
                match values.next() {
                    Some(Ok(_)) => {
                        let end = values.byte_offset();
                        let value = self.buf[..end].to_vec();
                        self.buf.drain(..end);
                        return Ok(Some(value));
                    }
                    Some(Err(e)) if !e.is_eof() => {
                        return Err(Status::invalid_argument(format!(
                            "a streamed message is not JSON: {e}"
                        )))
                    }
                    _ => {}
                }
            }
            if self.eof {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Status::invalid_argument(
                        "a streamed message ends before its JSON does",
                    ))
                };
            }
            if self.buf.len() > self.max {
                return Err(Status::invalid_argument(format!(
                    "etcdserver: request is too large (a streamed message over {} bytes)",
                    self.max
                )));
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) => {
                    fresh = chunk.contains(&b'}');
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    return Err(Status::cancelled(format!("reading the body: {e}")));
                }
                None => {
                    self.eof = true;
                    fresh = true;
                }
            }
        }
    }
}
