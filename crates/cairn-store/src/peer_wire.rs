//! What the peer network's two clients share (the unary calls of `network` and the replication
//! stream of `stream_append`): the payload codec, the fault seam, how a peer's status maps to
//! openraft's errors, and how many entries fit in one message.

use crate::TypeConfig;
use openraft::error::{NetworkError, RPCError, Unreachable};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

/// Encodes a peer payload into a buffer of its exact size (see [`encode_into`]).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_into(v, &mut out).map_err(|e| format!("encode: {e}"))?;
    Ok(out)
}

/// Appends `v`'s postcard encoding to `out` (a peer payload, or a log record's entry), sized
/// first and then written in place: one allocation at most, where growing a vector to a batch
/// of entries took several, each copying what came before. Returns the encoding's size; on an
/// error `out` is as it was.
pub(crate) fn encode_into<T: Serialize>(v: &T, out: &mut Vec<u8>) -> postcard::Result<usize> {
    let size = postcard::experimental::serialized_size(v)?;
    let start = out.len();
    out.resize(start + size, 0);
    match postcard::to_slice(v, &mut out[start..]) {
        Ok(used) => {
            debug_assert_eq!(used.len(), size);
            Ok(size)
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
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

/// A peer's gRPC status as openraft's error for the RPC.
pub(crate) fn status_to_rpc_error(s: tonic::Status) -> RPCError<TypeConfig> {
    match s.code() {
        // No connection: openraft backs off (200 ms by default) before trying that peer again.
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::from_string(s.message())),
        // The peer is there but slow to answer (our client timeout shows as `Cancelled`):
        // retry at once. As `Unreachable`, one slow answer from a follower busy taking its
        // snapshot stopped replication to it for the whole backoff, and when both followers
        // snapshot at the same index (they do), commits stalled that long.
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => RPCError::Network(
            NetworkError::from_string(format!("timed out: {}", s.message())),
        ),
        _ => RPCError::Network(NetworkError::from_string(format!(
            "{}: {}",
            s.code(),
            s.message()
        ))),
    }
}

/// How many of the leading entries fit in one message of `max` bytes next to `header` bytes
/// (the request without entries); at least one, so that replication always makes progress (an
/// entry is a client request, bounded well below the message limit). `entry_sizes` are the
/// encoded sizes; the count prefix of the sequence is allowed for with a varint's longest form.
pub(crate) fn entries_that_fit(
    header: usize,
    entry_sizes: impl IntoIterator<Item = usize>,
    max: usize,
) -> usize {
    const VARINT_BYTES_MAX: usize = 10;
    let mut used = header + VARINT_BYTES_MAX;
    let mut count = 0;
    for size in entry_sizes {
        used += size;
        if used > max && count > 0 {
            break;
        }
        count += 1;
    }
    count
}
