//! Replication on a plain TCP connection to the peer port: the append link.
//!
//! The leader's replication stream to a follower ([`crate::stream_append`]) went over a gRPC
//! call before. HTTP/2 puts its connection task between every message and the task that sends
//! or awaits it, on both nodes and both ways, and frames and flow-controls each message on top.
//! etcd's own peers replicate on long-lived plain HTTP streams, not gRPC. Here the leader's
//! replication task writes each message straight onto the socket and reads each answer straight
//! off it, and on the follower openraft's reader task reads the requests straight off it
//! (BENCHMARKS.md, issue 12, eighteenth session, for what that saves).
//!
//! The wire, after the TCP connect to the follower's peer port:
//! - the leader sends [`LINK_HELLO`]; its first byte can start no HTTP/2 connection, so the peer
//!   port tells a link from gRPC by that byte ([`is_link`]); the follower answers [`LINK_ACK`];
//! - then each message either way is a frame: its length as 4 bytes (big-endian), then that many
//!   bytes, at most [`PEER_MESSAGE_BYTES_MAX`]; a larger length ends the link;
//! - leader to follower: each frame is an `AppendEntriesRequest` (postcard, as in the gRPC
//!   messages, and split in parts the same way);
//! - follower to leader: each frame is a tag byte, then either an answer ([`TAG_ANSWER`],
//!   postcard, one per request, in order) or why the follower ends the link ([`TAG_REFUSAL`],
//!   text), after which it closes.
//!
//! A node of an earlier version, without the link, closes the connection at the hello (not an
//! HTTP/2 preface): the leader then replicates to it by gRPC, and tries the link again a while
//! later (`network::LINK_RETRY_AFTER_MS`). Every other guarantee of the gRPC stream holds here
//! as it is the same code: the in-flight bound, the answer timeout, the fault seam.

use crate::peer_wire::{decode, encode, PeerFaults};
use crate::stream_append::Shared;
use crate::stream_append::{answer_stream, network_error, outgoing, AnswerSource, AnswerStream};
use crate::TypeConfig;
use bytes::{Buf, BytesMut};
use cairn_types::limits::PEER_MESSAGE_BYTES_MAX;
use futures::{FutureExt, Stream, StreamExt};
use openraft::error::{Fatal, RPCError};
use openraft::raft::{AppendEntriesRequest, StreamAppendResult};
use std::future::Future;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

/// What a leader sends first on a link. The first byte is not `P`, which starts every HTTP/2
/// connection (its preface), so the peer port can tell the two apart from one byte.
pub const LINK_HELLO: [u8; 8] = *b"\xcaCRN-A1\n";
/// A follower's answer to [`LINK_HELLO`].
pub const LINK_ACK: [u8; 8] = *b"\xcaCRN-OK\n";
/// The tag of an answer frame.
pub const TAG_ANSWER: u8 = 0;
/// The tag of the frame a follower sends before it ends the link, with why.
pub const TAG_REFUSAL: u8 = 1;
/// How long either side waits for the other's half of the handshake, ms.
pub const LINK_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// Most bytes of frames gathered into one write, when several are ready at once (a single
/// frame larger than this still goes, alone).
pub const LINK_WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Bytes a link's reader asks the socket for at a time, past a frame that needs more.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Whether a connection to the peer port whose first byte is `first` is a link (else gRPC).
pub fn is_link(first: u8) -> bool {
    first == LINK_HELLO[0]
}

/// Appends a frame carrying `payload` (after `tag`, if any) to `out`.
pub(crate) fn push_frame(out: &mut Vec<u8>, tag: Option<u8>, payload: &[u8]) {
    let len = payload.len() + usize::from(tag.is_some());
    // Callers keep payloads within PEER_MESSAGE_BYTES_MAX, far below u32::MAX.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend(tag);
    out.extend_from_slice(payload);
}

/// Reads frames off a link, each at most `max` bytes.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
}

impl<R: AsyncRead + Unpin + Send> FrameReader<R> {
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            max,
        }
    }

    /// The next frame's bytes; `None` at a clean end (the other side closed between frames).
    /// A frame over the limit, or a connection closed inside one, is an error. Cancel-safe:
    /// bytes read stay in the buffer for the next call.
    pub async fn next(&mut self) -> io::Result<Option<BytesMut>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if len > self.max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "peer message of {len} bytes is larger than peer_message_bytes_max {}",
                            self.max
                        ),
                    ));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len)));
                }
                self.buf.reserve(4 + len - self.buf.len());
            } else {
                self.buf.reserve(READ_CHUNK_BYTES);
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the link inside a message",
                    ))
                };
            }
        }
    }
}

/// Writes every item of `frames` (each already a frame, or several) to `out`, gathering those
/// ready at once into one write of at most [`LINK_WRITE_BATCH_BYTES_MAX`] bytes. Ends at the
/// stream's end, or with the write's error.
async fn write_frames<W, S>(out: &mut W, frames: S) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    S: Stream<Item = Vec<u8>>,
{
    let mut frames = std::pin::pin!(frames.fuse());
    while let Some(mut batch) = frames.next().await {
        while batch.len() < LINK_WRITE_BATCH_BYTES_MAX {
            match frames.next().now_or_never() {
                Some(Some(more)) => batch.extend_from_slice(&more),
                _ => break,
            }
        }
        out.write_all(&batch).await?;
    }
    Ok(())
}

/// Why a link could not be opened.
#[derive(Debug)]
pub enum LinkError {
    /// The peer is there but speaks no link (an earlier version): use gRPC.
    Unsupported(String),
    /// The peer could not be reached, or the handshake failed on the way.
    Io(io::Error),
}

/// Connects to the peer port at `addr` (`HOST:PORT`, `http://` allowed) and shakes hands,
/// giving the connect `connect_timeout`.
pub async fn connect(addr: &str, connect_timeout: Duration) -> Result<TcpStream, LinkError> {
    let host_port = addr.strip_prefix("http://").unwrap_or(addr);
    let mut conn = tokio::time::timeout(connect_timeout, TcpStream::connect(host_port))
        .await
        .map_err(|_| {
            LinkError::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to {host_port} took over {connect_timeout:?}"),
            ))
        })?
        .map_err(LinkError::Io)?;
    conn.set_nodelay(true).map_err(LinkError::Io)?;
    conn.write_all(&LINK_HELLO).await.map_err(LinkError::Io)?;
    let mut ack = [0u8; LINK_ACK.len()];
    let handshake = Duration::from_millis(LINK_HANDSHAKE_TIMEOUT_MS);
    match tokio::time::timeout(handshake, conn.read_exact(&mut ack)).await {
        Err(_) => Err(LinkError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer to the link hello from {host_port} within {handshake:?}"),
        ))),
        Ok(Ok(_)) if ack == LINK_ACK => Ok(conn),
        Ok(Ok(_)) => Err(LinkError::Unsupported(format!(
            "{host_port} answered the link hello with {ack:?}"
        ))),
        // An HTTP/2-only server closes (or resets) a connection that starts with no preface.
        Ok(Err(e)) => Err(LinkError::Unsupported(format!(
            "{host_port} closed the link at its hello: {e}"
        ))),
    }
}

/// The answering half of a link, as the leader reads it.
struct Answers {
    frames: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    /// Stops the sending half when the answers are dropped (openraft closed the stream).
    _writer: AbortOnDrop,
}

struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl AnswerSource for Answers {
    async fn next_payload(&mut self, target: u64) -> Option<Result<Vec<u8>, RPCError<TypeConfig>>> {
        let frame = match self.frames.next().await {
            Ok(frame) => frame?,
            Err(e) => {
                return Some(Err(network_error(format!(
                    "append link to node {target}: {e}"
                ))))
            }
        };
        Some(match frame.split_first() {
            Some((&TAG_ANSWER, answer)) => Ok(answer.to_vec()),
            Some((&TAG_REFUSAL, why)) => Err(network_error(format!(
                "node {target} ended the append link: {}",
                String::from_utf8_lossy(why)
            ))),
            _ => Err(network_error(format!(
                "node {target} sent a frame of unknown kind on the append link"
            ))),
        })
    }
}

/// Starts replication on `conn` (from [`connect`]): each request of `input` goes out as soon as
/// openraft produces it, under the same bounds as the gRPC stream; the answers come back as
/// openraft reads them.
pub fn start<'s, S>(
    conn: TcpStream,
    target: u64,
    faults: PeerFaults,
    input: S,
    timeout: Duration,
) -> AnswerStream<'s>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Send + Unpin + 'static,
{
    let shared = Shared::new();
    let (read, mut write) = conn.into_split();
    let frames = outgoing(input, shared.clone(), faults.clone(), target).map(|payload| {
        let mut frame = Vec::with_capacity(payload.len() + 4);
        push_frame(&mut frame, None, &payload);
        frame
    });
    let sending = shared.clone();
    let writer = tokio::spawn(async move {
        match write_frames(&mut write, frames).await {
            // openraft ended the stream: tell the follower, which ends its side.
            Ok(()) => {
                let _ = write.shutdown().await;
            }
            Err(e) => sending.fail(network_error(format!("append link to node {target}: {e}"))),
        }
    });
    let answers = Answers {
        frames: FrameReader::new(read, PEER_MESSAGE_BYTES_MAX),
        _writer: AbortOnDrop(writer.abort_handle()),
    };
    answer_stream(answers, shared, faults, target, timeout)
}

/// Accepted connections to the peer port waiting for the gRPC server to take them.
pub const PEER_ACCEPT_QUEUE_MAX: usize = 64;
/// How long the peer port's accept loop pauses after a failed accept (out of file descriptors,
/// say), ms, so that a failure that repeats does not spin a core.
pub const PEER_ACCEPT_ERROR_PAUSE_MS: u64 = 50;

/// Splits the peer port's connections (`incoming`, until `stop` turns true) by their first
/// byte: each link is served by `serve_link` until it ends, or `grace` after `stop`; the
/// returned stream yields every other connection, for the gRPC server. A connection that sends
/// nothing within [`LINK_HANDSHAKE_TIMEOUT_MS`] is dropped.
pub fn split_incoming<I, F, Fut>(
    incoming: I,
    stop: watch::Receiver<bool>,
    grace: Duration,
    serve_link: F,
) -> impl Stream<Item = io::Result<TcpStream>>
where
    I: Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static,
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (grpc_tx, grpc_rx) = mpsc::channel(PEER_ACCEPT_QUEUE_MAX);
    tokio::spawn(accept_loop(
        incoming,
        stop,
        grace,
        Arc::new(serve_link),
        grpc_tx,
    ));
    futures::stream::unfold(grpc_rx, |mut rx| async move {
        rx.recv().await.map(|conn| (Ok(conn), rx))
    })
}

async fn accept_loop<I, F, Fut>(
    mut incoming: I,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    serve_link: Arc<F>,
    grpc: mpsc::Sender<TcpStream>,
) where
    I: Stream<Item = io::Result<TcpStream>> + Unpin,
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = incoming.next() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            None => return,
            Some(Err(e)) => {
                tracing::warn!("accepting a peer connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(PEER_ACCEPT_ERROR_PAUSE_MS)).await;
            }
            Some(Ok(conn)) => {
                let (serve_link, stop, grpc) = (serve_link.clone(), stop.clone(), grpc.clone());
                tokio::spawn(route(conn, stop, grace, serve_link, grpc));
            }
        }
    }
}

/// Serves `conn` as a link if it starts as one, else passes it to the gRPC server.
async fn route<F, Fut>(
    conn: TcpStream,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
    serve_link: Arc<F>,
    grpc: mpsc::Sender<TcpStream>,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut first = [0u8; 1];
    let wait = Duration::from_millis(LINK_HANDSHAKE_TIMEOUT_MS);
    match tokio::time::timeout(wait, conn.peek(&mut first)).await {
        Ok(Ok(1)) if is_link(first[0]) => {
            let cut = async {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(grace).await;
            };
            tokio::select! {
                _ = serve_link(conn) => {}
                _ = cut => {}
            }
        }
        Ok(Ok(1)) => {
            // The gRPC server gone (the node stopping) drops the connection.
            let _ = grpc.send(conn).await;
        }
        // Closed, failed or silent before its first byte: nothing to serve.
        _ => {}
    }
}

/// Serves a link a leader opened to this node on `conn` (whose first byte [`is_link`]):
/// answers the hello, hands each request to `raft` as it arrives (calling `on_request` first),
/// and writes each answer back in order. Returns when either side ends the link; a request
/// that does not decode, or is over the limit, ends it with a refusal naming why, after the
/// answers to those before it.
pub async fn serve(conn: TcpStream, raft: crate::Raft, on_request: impl Fn() + Send + 'static) {
    let peer = conn
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    if let Err(e) = serve_link(conn, raft, on_request).await {
        tracing::debug!(%peer, "append link ended: {e}");
    }
}

async fn serve_link(
    mut conn: TcpStream,
    raft: crate::Raft,
    on_request: impl Fn() + Send + 'static,
) -> io::Result<()> {
    let mut hello = [0u8; LINK_HELLO.len()];
    let handshake = Duration::from_millis(LINK_HANDSHAKE_TIMEOUT_MS);
    tokio::time::timeout(handshake, conn.read_exact(&mut hello))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no link hello"))??;
    if hello != LINK_HELLO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a link hello: {hello:?}"),
        ));
    }
    conn.set_nodelay(true)?;
    conn.write_all(&LINK_ACK).await?;
    let (read, mut write) = conn.into_split();
    let refusal = Arc::new(Mutex::new(None::<String>));
    let refused = refusal.clone();
    let requests = futures::stream::unfold(
        Some(FrameReader::new(read, PEER_MESSAGE_BYTES_MAX)),
        move |reader| {
            let refused = refused.clone();
            async move {
                let mut reader = reader?;
                let why = match reader.next().await {
                    Ok(None) => return None,
                    Ok(Some(frame)) => match decode::<AppendEntriesRequest<TypeConfig>>(&frame) {
                        Ok(req) => return Some((req, Some(reader))),
                        Err(e) => format!("invalid request: {e}"),
                    },
                    Err(e) => e.to_string(),
                };
                *refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                None
            }
        },
    )
    .inspect(move |_| on_request());
    let answers = raft
        .stream_append(requests)
        .map(|answer| answer_frame(&answer));
    write_frames(&mut write, answers).await?;
    let why = refusal.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(why) = why {
        let mut frame = Vec::new();
        push_frame(&mut frame, Some(TAG_REFUSAL), why.as_bytes());
        write.write_all(&frame).await?;
    }
    write.shutdown().await
}

/// The frame that carries `answer` (or, for a fatal error, the refusal that ends the link).
fn answer_frame(answer: &Result<StreamAppendResult<TypeConfig>, Fatal<TypeConfig>>) -> Vec<u8> {
    let mut frame = Vec::new();
    match answer
        .as_ref()
        .map_err(|fatal| fatal.to_string())
        .and_then(encode)
    {
        Ok(payload) => push_frame(&mut frame, Some(TAG_ANSWER), &payload),
        Err(why) => push_frame(&mut frame, Some(TAG_REFUSAL), why.as_bytes()),
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn frame(tag: Option<u8>, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_frame(&mut out, tag, payload);
        out
    }

    #[tokio::test]
    async fn frames_arrive_whole_however_the_bytes_are_cut() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(rx, 1000);
        let mut bytes = frame(None, b"first");
        bytes.extend(frame(Some(TAG_ANSWER), &[9; 700]));
        bytes.extend(frame(None, b""));
        let writer = tokio::spawn(async move {
            // Three bytes at a time: no frame arrives in one read.
            for piece in bytes.chunks(3) {
                tx.write_all(piece).await.unwrap();
            }
        });
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"first");
        let second = reader.next().await.unwrap().unwrap();
        assert_eq!(second.len(), 701);
        assert_eq!(second[0], TAG_ANSWER);
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"");
        writer.await.unwrap();
        // The writer gone between frames: a clean end.
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_or_cut_short_is_an_error() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(rx, 1000);
        // Only the length is read: nothing of the 1,001 bytes is buffered.
        tx.write_all(&1001u32.to_be_bytes()).await.unwrap();
        let e = reader.next().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("peer_message_bytes_max 1000"), "{e}");

        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = FrameReader::new(rx, 1000);
        tx.write_all(&frame(None, b"whole")[..7]).await.unwrap();
        drop(tx);
        let e = reader.next().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    }

    #[tokio::test]
    async fn a_peer_without_the_link_is_told_apart_from_one_that_is_down() {
        // A server that closes a connection that does not start as it expects, as an
        // HTTP/2-only peer port does.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut first = [0u8; 8];
                let _ = conn.read_exact(&mut first).await;
            }
        });
        let connect_timeout = Duration::from_millis(500);
        match connect(&addr, connect_timeout).await {
            Err(LinkError::Unsupported(why)) => assert!(why.contains(&addr), "{why}"),
            other => panic!("expected Unsupported, got {other:?}"),
        }
        // Nothing listening: unreachable, not unsupported.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        match connect(&format!("http://{closed_addr}"), connect_timeout).await {
            Err(LinkError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused),
            other => panic!("expected a connection error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_followers_refusal_ends_the_stream_with_its_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut hello = [0u8; LINK_HELLO.len()];
            conn.read_exact(&mut hello).await.unwrap();
            conn.write_all(&LINK_ACK).await.unwrap();
            let refusal = frame(Some(TAG_REFUSAL), b"invalid request: decode: bad");
            conn.write_all(&refusal).await.unwrap();
            // Read until the leader closes, so the refusal is not lost to a reset.
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest).await;
        });
        let conn = connect(&addr, Duration::from_millis(500)).await.unwrap();
        let input = futures::stream::pending::<AppendEntriesRequest<TypeConfig>>();
        let timeout = Duration::from_secs(5);
        let mut answers = start(conn, 2, PeerFaults::default(), input, timeout);
        match answers.next().await {
            Some(Err(RPCError::Network(e))) => {
                let text = e.to_string();
                assert!(text.contains("node 2 ended the append link"), "{text}");
                assert!(text.contains("invalid request"), "{text}");
            }
            other => panic!("expected the refusal, got {other:?}"),
        }
        assert!(
            answers.next().await.is_none(),
            "the stream ends at its error"
        );
    }
}
