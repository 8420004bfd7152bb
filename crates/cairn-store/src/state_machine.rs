//! The replicated state machine: applies committed [`Command`]s to the MVCC key space, publishes
//! watch events, and takes and installs snapshots.
//!
//! Apply is deterministic: the same log gives the same state on every node. Everything a node
//! needs to rebuild its state lives in the snapshot file plus the log after it.

use crate::command::{Command, CommandResult, Outcome, RejectReason};
use crate::mvcc::{KvError, KvState};
use crate::{LogId, StoredMembership, TypeConfig};
use cairn_proto::etcdserverpb::TxnRequest;
use cairn_proto::mvccpb::Event;
use cairn_types::limits::{LEASES_MAX, WATCH_BROADCAST_BATCHES_MAX};
use futures::{Stream, TryStreamExt};
use openraft::alias::{SnapshotMetaOf, SnapshotOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use prost::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use tokio::sync::{broadcast, watch};

/// Applied events of one revision range, published to watchers in apply order.
#[derive(Debug, Clone)]
pub struct WatchBatch {
    /// The store revision after these events.
    pub revision: i64,
    /// Events in order. Empty with `resync` set after a snapshot install.
    pub events: Vec<Event>,
    /// The state was replaced wholesale (snapshot install): watchers must re-read history.
    pub resync: bool,
}

/// Everything the state machine holds.
pub struct SmState {
    pub kv: KvState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Client and HTTP addresses announced by each node.
    pub node_addrs: BTreeMap<u64, (String, String)>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    node_addrs: BTreeMap<u64, (String, String)>,
    #[serde(with = "crate::serde_bytes")]
    kv: Vec<u8>,
}

struct Shared {
    state: RwLock<SmState>,
    events: broadcast::Sender<Arc<WatchBatch>>,
    applied_index: watch::Sender<u64>,
}

/// A cheap, cloneable read handle on the state machine, for the server's read paths and watchers.
#[derive(Clone)]
pub struct StateMachineHandle {
    shared: Arc<Shared>,
}

impl StateMachineHandle {
    /// Read access to the applied state. Never hold it across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, SmState> {
        self.shared.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to applied events. Subscribe while holding [`Self::read`] to see no gap.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchBatch>> {
        self.shared.events.subscribe()
    }

    /// The index of the last applied log entry, observable for read-index waits.
    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }
}

/// The openraft state machine; owns the snapshot directory.
pub struct StateMachineStore {
    handle: StateMachineHandle,
    snapshot_dir: PathBuf,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn reject_reason(e: &KvError) -> RejectReason {
    let status = e.to_status();
    RejectReason {
        code: status.code() as i32,
        message: status.message().to_string(),
    }
}

const SNAPSHOT_FILE: &str = "snapshot.bin";

impl StateMachineStore {
    /// Opens the state machine, restoring the last snapshot in `snapshot_dir` if there is one.
    pub fn open(snapshot_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        let mut state = SmState {
            kv: KvState::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            node_addrs: BTreeMap::new(),
        };
        let path = snapshot_dir.join(SNAPSHOT_FILE);
        if path.exists() {
            let bytes = std::fs::read(&path)?;
            state = decode_state(&bytes)?;
        }
        let applied = state.last_applied.as_ref().map(|l| l.index).unwrap_or(0);
        let (events, _) = broadcast::channel(WATCH_BROADCAST_BATCHES_MAX);
        let (applied_index, _) = watch::channel(applied);
        Ok(Self {
            handle: StateMachineHandle {
                shared: Arc::new(Shared {
                    state: RwLock::new(state),
                    events,
                    applied_index,
                }),
            },
            snapshot_dir: snapshot_dir.to_path_buf(),
        })
    }

    /// A read handle for the server.
    pub fn handle(&self) -> StateMachineHandle {
        self.handle.clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SmState> {
        self.handle
            .shared
            .state
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }
}

fn decode_state(bytes: &[u8]) -> io::Result<SmState> {
    let file: SnapshotFile = postcard::from_bytes(bytes).map_err(io_err)?;
    Ok(SmState {
        kv: KvState::decode_snapshot(&file.kv).map_err(io_err)?,
        last_applied: file.last_applied,
        membership: file.membership,
        node_addrs: file.node_addrs,
    })
}

/// The longest postcard varint of a `usize` (the length prefix of the `kv` byte string).
const VARINT_USIZE_BYTES_MAX: usize = 10;

/// Encodes `state` as a [`SnapshotFile`], byte for byte, in one buffer: the key-value image
/// (the bulk, 100+ MB with a million keys) is encoded in place after room left for the header
/// and its length prefix, which are then written right before it. Encoding the image first and
/// then the file around it would hold two full copies at once.
fn encode_state(state: &SmState) -> io::Result<Vec<u8>> {
    // A struct is encoded as its fields in order, so this is the file up to `kv`.
    let header =
        postcard::to_allocvec(&(&state.last_applied, &state.membership, &state.node_addrs))
            .map_err(io_err)?;
    let room = header.len() + VARINT_USIZE_BYTES_MAX;
    let mut out = vec![0u8; room];
    state.kv.encode_snapshot_into(&mut out);
    let kv_len = out.len() - room;
    // `serialize_bytes` writes the length as a varint, as a `usize` (a u64) is written.
    let prefix = postcard::to_extend(&kv_len, header).map_err(io_err)?;
    let start = room - prefix.len();
    out[start..room].copy_from_slice(&prefix);
    out.drain(..start);
    Ok(out)
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, fsync the directory.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The message of the rejection a fenced command gets when its term is over; the server maps it
/// to "leader changed".
pub const TERM_ENDED_MESSAGE: &str = "cairn: the leader term that decided this write has ended";

fn term_ended() -> RejectReason {
    RejectReason {
        code: tonic::Code::Unavailable as i32,
        message: TERM_ENDED_MESSAGE.to_string(),
    }
}

/// Applies one command, appended by the leader of `entry_term`, to the state, returning its
/// result and the watch events it produced. A [`Command::Fenced`] is unwrapped if its term is
/// the entry's, else rejected.
fn apply_command(
    state: &mut SmState,
    entry_term: u64,
    cmd: Command,
) -> (CommandResult, Vec<Event>) {
    let cmd = match cmd {
        Command::Fenced { term, cmd } if term == entry_term => *cmd,
        other => other,
    };
    let kv = &mut state.kv;
    let (outcome, events) = match cmd {
        Command::Txn(bytes) => match TxnRequest::decode(bytes.as_slice()) {
            Ok(req) => match kv.apply_txn(&req) {
                Ok(applied) => (
                    Outcome::Txn(applied.response.encode_to_vec()),
                    applied.events,
                ),
                Err(e) => (Outcome::Rejected(reject_reason(&e)), Vec::new()),
            },
            Err(e) => {
                let reason = RejectReason {
                    code: tonic::Code::InvalidArgument as i32,
                    message: format!("cairn: malformed transaction: {e}"),
                };
                (Outcome::Rejected(reason), Vec::new())
            }
        },
        Command::Compact { revision } => match kv.compact(revision) {
            Ok(()) => (Outcome::Done, Vec::new()),
            Err(e) => (Outcome::Rejected(reject_reason(&e)), Vec::new()),
        },
        Command::LeaseGrant { id, ttl_secs } => {
            if kv.lease_count() >= LEASES_MAX {
                let reason = RejectReason {
                    code: tonic::Code::ResourceExhausted as i32,
                    message: format!(
                        "etcdserver: too many requests (leases_max {LEASES_MAX} reached)"
                    ),
                };
                (Outcome::Rejected(reason), Vec::new())
            } else {
                match kv.lease_grant(id, ttl_secs) {
                    Ok(()) => (Outcome::LeaseGranted { id }, Vec::new()),
                    Err(e) => (Outcome::Rejected(reject_reason(&e)), Vec::new()),
                }
            }
        }
        Command::LeaseRevoke { id } => match kv.lease_revoke(id) {
            Ok(applied) => (Outcome::Done, applied.events),
            Err(e) => (Outcome::Rejected(reject_reason(&e)), Vec::new()),
        },
        Command::SetNodeAddrs {
            node_id,
            client,
            http,
        } => {
            state.node_addrs.insert(node_id, (client, http));
            (Outcome::Done, Vec::new())
        }
        // A stale fence, or one nested in another: never applied.
        Command::Fenced { .. } => (Outcome::Rejected(term_ended()), Vec::new()),
    };
    let result = CommandResult {
        revision: state.kv.revision(),
        outcome,
    };
    (result, events)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let s = self.handle.read();
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<Strm>(&mut self, entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let batch: Vec<EntryResponder<TypeConfig>> = entries.try_collect().await?;
        let mut last_index = None;
        {
            let mut state = self.write();
            for (entry, responder) in batch {
                last_index = Some(entry.log_id.index);
                state.last_applied = Some(entry.log_id);
                let result = match entry.payload {
                    EntryPayload::Blank => CommandResult {
                        revision: state.kv.revision(),
                        outcome: Outcome::Done,
                    },
                    EntryPayload::Normal(cmd) => {
                        let (result, events) =
                            apply_command(&mut state, entry.log_id.leader_id.term, cmd);
                        if !events.is_empty() {
                            // No receivers is fine: nobody watches.
                            let _ = self.handle.shared.events.send(Arc::new(WatchBatch {
                                revision: result.revision,
                                events,
                                resync: false,
                            }));
                        }
                        result
                    }
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandResult {
                            revision: state.kv.revision(),
                            outcome: Outcome::Done,
                        }
                    }
                };
                if let Some(r) = responder {
                    r.send(result);
                }
            }
        }
        if let Some(i) = last_index {
            self.handle.shared.applied_index.send_replace(i);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            handle: self.handle.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let mut new_state = decode_state(&snapshot)?;
        new_state.last_applied = meta.last_log_id;
        new_state.membership = meta.last_membership.clone();
        let bytes = encode_state(&new_state)?;
        write_atomically(&self.snapshot_dir, SNAPSHOT_FILE, &bytes)?;
        let revision = new_state.kv.revision();
        let applied = new_state
            .last_applied
            .as_ref()
            .map(|l| l.index)
            .unwrap_or(0);
        *self.write() = new_state;
        let _ = self.handle.shared.events.send(Arc::new(WatchBatch {
            revision,
            events: Vec::new(),
            resync: true,
        }));
        self.handle.shared.applied_index.send_replace(applied);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        let path = self.snapshot_dir.join(SNAPSHOT_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bytes = std::fs::read(&path)?;
        let file: SnapshotFile = postcard::from_bytes(&bytes).map_err(io_err)?;
        Ok(Some(openraft::Snapshot {
            meta: openraft::SnapshotMeta {
                last_log_id: file.last_applied,
                last_membership: file.membership,
            },
            snapshot: bytes,
        }))
    }
}

/// Builds a snapshot of the applied state and persists it as the node's current snapshot.
pub struct SnapshotBuilder {
    handle: StateMachineHandle,
    snapshot_dir: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let handle = self.handle.clone();
        let dir = self.snapshot_dir.clone();
        // Encoding a large key space takes a while: keep it off the async workers.
        tokio::task::spawn_blocking(move || {
            // Encode under the read lock: reads go on, apply waits for the encoding. Measured on
            // 1M keys (examples/snapshot_cost.rs): encoding takes ~0.43 s, a copy to encode
            // outside the lock would take ~0.93 s, so encoding in place stalls apply least.
            let (bytes, meta) = {
                let s = handle.read();
                let meta = openraft::SnapshotMeta {
                    last_log_id: s.last_applied,
                    last_membership: s.membership.clone(),
                };
                (encode_state(&s)?, meta)
            };
            write_atomically(&dir, SNAPSHOT_FILE, &bytes)?;
            Ok(openraft::Snapshot {
                meta,
                snapshot: bytes,
            })
        })
        .await
        .map_err(io_err)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::put;

    fn state(keys: usize) -> SmState {
        let mut kv = KvState::new();
        for i in 0..keys {
            put(
                &mut kv,
                format!("key/{i:05}").as_bytes(),
                &vec![b'v'; i % 300],
            );
        }
        SmState {
            kv,
            last_applied: None,
            membership: StoredMembership::default(),
            node_addrs: [
                (1, ("127.0.0.1:1".to_string(), "127.0.0.1:2".to_string())),
                (2, ("127.0.0.1:3".to_string(), String::new())),
            ]
            .into(),
        }
    }

    #[test]
    fn one_buffer_encoding_is_the_snapshot_file_format() {
        // Sizes around the varint boundaries of the kv length (1, 2, 3 bytes and more).
        for keys in [0, 1, 5, 200, 3_000] {
            let s = state(keys);
            let framed = postcard::to_allocvec(&SnapshotFile {
                last_applied: s.last_applied,
                membership: s.membership.clone(),
                node_addrs: s.node_addrs.clone(),
                kv: s.kv.encode_snapshot(),
            })
            .unwrap();
            let bytes = encode_state(&s).unwrap();
            assert_eq!(bytes, framed, "{keys} keys");
            let back = decode_state(&bytes).unwrap();
            assert_eq!(back.kv, s.kv);
            assert_eq!(back.node_addrs, s.node_addrs);
        }
    }

    fn fenced_put(term: u64, key: &[u8]) -> Command {
        let req = crate::mvcc::test_util::txn(vec![crate::mvcc::test_util::op_put(key, b"v")]);
        Command::Fenced {
            term,
            cmd: Box::new(Command::txn(&req)),
        }
    }

    #[test]
    fn a_fenced_write_applies_only_in_the_term_that_decided_it() {
        let mut s = state(0);
        let (r, events) = apply_command(&mut s, 7, fenced_put(7, b"a"));
        assert!(matches!(r.outcome, Outcome::Txn(_)), "{r:?}");
        assert_eq!(events.len(), 1);
        assert_eq!(s.kv.revision(), 2);

        // Decided in term 7 but appended by the leader of term 9 (forwarded, or queued across a
        // leader change): refused, nothing written.
        let (r, events) = apply_command(&mut s, 9, fenced_put(7, b"b"));
        assert_eq!(r.outcome, Outcome::Rejected(term_ended()));
        assert!(events.is_empty());
        assert_eq!(s.kv.revision(), 2);

        // A fence inside a fence is never applied.
        let nested = Command::Fenced {
            term: 9,
            cmd: Box::new(fenced_put(9, b"c")),
        };
        let (r, _) = apply_command(&mut s, 9, nested);
        assert_eq!(r.outcome, Outcome::Rejected(term_ended()));
        assert_eq!(s.kv.revision(), 2);
    }
}
