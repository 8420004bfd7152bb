//! The replicated state machine: applies committed [`Command`]s to the MVCC key space, publishes
//! watch events, and takes and installs snapshots.
//!
//! Apply is deterministic: the same log gives the same state on every node. Everything a node
//! needs to rebuild its state lives in the snapshot file plus the log after it.
//!
//! Snapshots never hold up apply or reads for long: building one takes an O(1) image of the
//! state under the read lock and encodes it on a blocking thread; installing one decodes on a
//! blocking thread and takes the write lock only to swap the state in. Builds and installs take
//! turns ([`SnapshotTurn`]), so the snapshot file always holds the newer of the two.

use crate::command::{Command, CommandResult, Outcome, RejectReason};
use crate::mvcc::{KvError, KvState};
use crate::snapshot_file::{
    decode_meta, decode_state, encode_state, io_err, remove_temp_files, write_atomically, SmImage,
    SNAPSHOT_FILE,
};
use crate::{LogId, StoredMembership, TypeConfig};
use cairn_proto::etcdserverpb::TxnRequest;
use cairn_proto::mvccpb::Event;
use cairn_types::limits::{LEASES_MAX, WATCH_BROADCAST_BATCHES_MAX};
use futures::{Stream, TryStreamExt};
use openraft::alias::{SnapshotMetaOf, SnapshotOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use prost::Message;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;
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

pub use crate::snapshot_file::SmState;

struct Shared {
    state: RwLock<SmState>,
    /// The applied state's cluster id, published by every writer before it lets go of the
    /// state ([`StateWriter`]), so that it is read without the lock.
    cluster_id: AtomicU64,
    events: broadcast::Sender<Arc<WatchBatch>>,
    applied_index: watch::Sender<u64>,
}

/// A cheap, cloneable read handle on the state machine, for the server's read paths and watchers.
#[derive(Clone)]
pub struct StateMachineHandle {
    shared: Arc<Shared>,
}

impl StateMachineHandle {
    /// Read access to the applied state. Never hold it across an `.await`, and never read it
    /// again while holding it, not even through a helper: once apply waits to write, a second
    /// read on the same thread waits behind it forever, and so does apply.
    pub fn read(&self) -> RwLockReadGuard<'_, SmState> {
        self.shared.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster's id in the applied state (0 until its first leader's choice is applied),
    /// read without the state lock: safe to call while holding [`Self::read`].
    pub fn cluster_id(&self) -> u64 {
        self.shared.cluster_id.load(Ordering::Acquire)
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

/// One snapshot operation at a time per node. Held from before a build takes its image until
/// its file is written, and from before an install writes its file until its state is swapped
/// in: a build that finished after an install could otherwise replace the installed (newer)
/// file with its older image. Owned guards move into the blocking task doing the work, so the
/// turn lasts as long as the work even if openraft drops the future awaiting it.
type SnapshotTurn = Arc<tokio::sync::Mutex<()>>;

/// The openraft state machine; owns the snapshot directory.
pub struct StateMachineStore {
    handle: StateMachineHandle,
    snapshot_dir: PathBuf,
    snapshot_turn: SnapshotTurn,
    inline: bool,
}

/// Runs `work` off the async workers (on tokio's blocking pool), or right here when `inline`:
/// the deterministic simulation keeps every step of a run on its one thread.
async fn off_core<T: Send + 'static>(
    inline: bool,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    if inline {
        return work();
    }
    tokio::task::spawn_blocking(work).await.map_err(io_err)?
}

fn reject_reason(e: &KvError) -> RejectReason {
    let status = e.to_status();
    RejectReason {
        code: status.code() as i32,
        message: status.message().to_string(),
    }
}

impl StateMachineStore {
    /// Opens the state machine, restoring the last snapshot in `snapshot_dir` if there is one.
    pub fn open(snapshot_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        remove_temp_files(snapshot_dir, SNAPSHOT_FILE)?;
        let mut state = SmState {
            kv: KvState::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            node_addrs: BTreeMap::new(),
            cluster: Default::default(),
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
                    cluster_id: AtomicU64::new(state.cluster.cluster_id),
                    state: RwLock::new(state),
                    events,
                    applied_index,
                }),
            },
            snapshot_dir: snapshot_dir.to_path_buf(),
            snapshot_turn: Arc::default(),
            inline: false,
        })
    }

    /// Does snapshot encoding, decoding and file reads on the calling task instead of other
    /// threads: for the deterministic simulation, where another thread would let real time into
    /// a run under a simulated clock. Production never sets it (a big snapshot would stall the
    /// node).
    pub fn with_inline_snapshot_work(mut self) -> Self {
        self.inline = true;
        self
    }

    /// A read handle for the server.
    pub fn handle(&self) -> StateMachineHandle {
        self.handle.clone()
    }

    pub(crate) fn write(&self) -> StateWriter<'_> {
        self.handle.shared.write()
    }
}

impl Shared {
    fn write(&self) -> StateWriter<'_> {
        StateWriter {
            guard: self.state.write().unwrap_or_else(|p| p.into_inner()),
            cluster_id: &self.cluster_id,
        }
    }
}

/// The state locked for writing. When it lets go, it first publishes what is read without the
/// lock ([`StateMachineHandle::cluster_id`]), whichever way the state changed: an apply, a
/// snapshot installed. (A state opened from its file publishes its id as it is created.)
pub(crate) struct StateWriter<'a> {
    guard: RwLockWriteGuard<'a, SmState>,
    cluster_id: &'a AtomicU64,
}

impl std::ops::Deref for StateWriter<'_> {
    type Target = SmState;
    fn deref(&self) -> &SmState {
        &self.guard
    }
}

impl std::ops::DerefMut for StateWriter<'_> {
    fn deref_mut(&mut self) -> &mut SmState {
        &mut self.guard
    }
}

impl StateWriter<'_> {
    /// Publishes what is read without the lock now, rather than when the writer lets go: apply
    /// answers each command while it still holds the state.
    fn publish(&self) {
        self.cluster_id
            .store(self.guard.cluster.cluster_id, Ordering::Release);
    }
}

impl Drop for StateWriter<'_> {
    fn drop(&mut self) {
        // Still under the lock: whoever reads the state after this write sees the id too.
        self.publish();
    }
}

/// The message of the rejection a fenced command gets when its term is over; the server maps it
/// to "leader changed".
pub const TERM_ENDED_MESSAGE: &str = "cairn: the leader term that decided this write has ended";

/// etcd's `AlarmType::NOSPACE`.
pub const ALARM_NOSPACE: i32 = 1;
/// etcd's refusal while NOSPACE is raised.
pub const NO_SPACE_MESSAGE: &str = "etcdserver: mvcc: database space exceeded";

fn no_space() -> RejectReason {
    RejectReason {
        code: tonic::Code::ResourceExhausted as i32,
        message: NO_SPACE_MESSAGE.to_string(),
    }
}

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
    // With NOSPACE raised, writes that add data are refused until an operator disarms it
    // (deletes, compaction and revocations still go through), as etcd's capped applier does.
    let capped = state
        .cluster
        .alarms
        .iter()
        .any(|(_, a)| *a == ALARM_NOSPACE);
    let kv = &mut state.kv;
    let (outcome, events) = match cmd {
        Command::Txn(bytes) => match TxnRequest::decode(&bytes[..]) {
            Ok(req) if capped && crate::mvcc::txn_put_bytes(&req) > 0 => {
                (Outcome::Rejected(no_space()), Vec::new())
            }
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
        Command::LeaseGrant { .. } if capped => (Outcome::Rejected(no_space()), Vec::new()),
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
        Command::SetClusterId { id } => {
            if state.cluster.cluster_id == 0 {
                state.cluster.cluster_id = id;
            }
            (Outcome::Done, Vec::new())
        }
        Command::Alarm {
            activate,
            member_id,
            alarm,
        } => {
            if activate {
                state.cluster.alarms.insert((member_id, alarm));
            } else {
                state.cluster.alarms.remove(&(member_id, alarm));
            }
            (Outcome::Done, Vec::new())
        }
        Command::Auth(op) => match state.cluster.auth.apply(op) {
            Ok(()) => (Outcome::Done, Vec::new()),
            Err((code, message)) => {
                let reason = RejectReason {
                    code: code as i32,
                    message: message.to_string(),
                };
                (Outcome::Rejected(reason), Vec::new())
            }
        },
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
                        // Before the proposer or a watcher hears of it: a reply to the write
                        // that set the cluster id is read with the id.
                        state.publish();
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
            snapshot_turn: self.snapshot_turn.clone(),
            inline: self.inline,
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf<TypeConfig>,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let turn = self.snapshot_turn.clone().lock_owned().await;
        let shared = self.handle.shared.clone();
        let dir = self.snapshot_dir.clone();
        let meta = meta.clone();
        // Decoding a million keys takes over a second: keep it off openraft's tasks and the
        // async workers. The whole install runs there, in its turn.
        off_core(self.inline, move || {
            let _turn = turn;
            install_blocking(&shared, &dir, meta, snapshot)
        })
        .await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<TypeConfig, Self::SnapshotData>>, io::Error> {
        let path = self.snapshot_dir.join(SNAPSHOT_FILE);
        // Reading 100+ MB is blocking I/O. No turn needed: the file is only ever replaced by
        // a rename, so this reads one whole snapshot or the other.
        off_core(self.inline, move || {
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let (last_log_id, last_membership) = decode_meta(&bytes)?;
            Ok(Some(openraft::Snapshot {
                meta: openraft::SnapshotMeta {
                    last_log_id,
                    last_membership,
                },
                snapshot: bytes,
            }))
        })
        .await
    }
}

/// Decodes a received snapshot, makes it the node's snapshot file, and swaps it in as the state.
fn install_blocking(
    shared: &Shared,
    dir: &Path,
    meta: SnapshotMetaOf<TypeConfig>,
    snapshot: Vec<u8>,
) -> Result<(), io::Error> {
    let started = Instant::now();
    let mut new_state = decode_state(&snapshot)?;
    // The leader's builder wrote the same meta into the file; if it ever differs, openraft's
    // meta wins and the file is re-encoded to say so.
    let file_matches =
        new_state.last_applied == meta.last_log_id && new_state.membership == meta.last_membership;
    new_state.last_applied = meta.last_log_id;
    new_state.membership = meta.last_membership;
    let bytes = if file_matches {
        snapshot
    } else {
        drop(snapshot);
        encode_state(&new_state.image())?
    };
    write_atomically(dir, SNAPSHOT_FILE, &bytes)?;
    drop(bytes);
    let decoded = started.elapsed();

    let revision = new_state.kv.revision();
    let applied = new_state
        .last_applied
        .as_ref()
        .map(|l| l.index)
        .unwrap_or(0);
    let swap_started = Instant::now();
    let old = std::mem::replace(&mut *shared.write(), new_state);
    let swapped = swap_started.elapsed();
    let _ = shared.events.send(Arc::new(WatchBatch {
        revision,
        events: Vec::new(),
        resync: true,
    }));
    shared.applied_index.send_replace(applied);
    // Freeing a large old state takes a while; not under the lock.
    drop(old);
    tracing::info!(
        revision,
        applied,
        decode_and_write_ms = decoded.as_millis() as u64,
        swap_us = swapped.as_micros() as u64,
        "snapshot installed"
    );
    Ok(())
}

/// Builds a snapshot of the applied state and persists it as the node's current snapshot.
pub struct SnapshotBuilder {
    handle: StateMachineHandle,
    snapshot_dir: PathBuf,
    snapshot_turn: SnapshotTurn,
    inline: bool,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        let turn = self.snapshot_turn.clone().lock_owned().await;
        let started = Instant::now();
        // The only time the state is locked: an O(1) image (examples/snapshot_cost.rs).
        let image = self.handle.read().image();
        let locked = started.elapsed();
        let dir = self.snapshot_dir.clone();
        if self.inline {
            let _turn = turn;
            return encode_and_write(image, &dir, started, locked);
        }
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // A thread of its own rather than tokio's blocking pool: it runs at the lowest CPU
        // priority, which would otherwise stick to a pooled thread and slow later blocking work.
        let encoder = move || {
            lower_thread_priority();
            let _turn = turn;
            let result = encode_and_write(image, &dir, started, locked);
            // The caller may be gone (openraft shutting down); the file is written regardless.
            let _ = done_tx.send(result);
        };
        std::thread::Builder::new()
            .name("cairn-snapshot".into())
            .spawn(encoder)?;
        done_rx.await.map_err(io_err)?
    }
}

/// How far snapshot encoding is niced (19 is the lowest priority), where `SCHED_IDLE` cannot be
/// set. Encoding is the bulk of a snapshot's CPU (about a second for 1M keys on a loaded 2-core
/// machine) and has no deadline: at the lowest priority it uses what serving requests leaves,
/// instead of taking a core from apply and replication at every snapshot (on a machine running
/// the three nodes of a cluster, which all snapshot at the same log index, from all three at
/// once).
const SNAPSHOT_ENCODE_NICE: libc::c_int = 19;

/// Puts the calling thread under `SCHED_IDLE` (Linux applies policies and nice per thread),
/// else nices it. Best effort.
///
/// `SCHED_IDLE` rather than nice alone: a server thread that wakes preempts an idle-policy
/// thread at once, whatever its own policy, while under `SCHED_BATCH` (`cairn serve`'s default,
/// `cairn_server::cpu_policy`) it would wait for a niced encoder's time slice. With the encoder
/// niced only, the 1M-key load's p99.9 under `SCHED_BATCH` read 77–99 ms (median 92) against
/// 73–85 with the normal policy; with `SCHED_IDLE`, 78–95 (median 78) (BENCHMARKS.md, issue 12,
/// twenty-first session). The encoder still gets a small share of a busy CPU, so snapshots are
/// never starved.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this thread's own id; `param` is a valid sched_param for
    // SCHED_IDLE, whose only priority is 0.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, SNAPSHOT_ENCODE_NICE);
        }
    }
}

/// Encodes a snapshot image and makes it the node's snapshot file.
fn encode_and_write(
    image: SmImage,
    dir: &Path,
    started: Instant,
    locked: std::time::Duration,
) -> Result<SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
    let meta = openraft::SnapshotMeta {
        last_log_id: image.last_applied,
        last_membership: image.membership.clone(),
    };
    let bytes = encode_state(&image)?;
    // Dropping the image frees the nodes apply has replaced since it was taken.
    drop(image);
    let encoded = started.elapsed();
    write_atomically(dir, SNAPSHOT_FILE, &bytes)?;
    tracing::info!(
        index = meta.last_log_id.as_ref().map(|l| l.index).unwrap_or(0),
        bytes = bytes.len(),
        locked_us = locked.as_micros() as u64,
        encode_ms = encoded.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        "snapshot built"
    );
    Ok(openraft::Snapshot {
        meta,
        snapshot: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder's thread gives way to every other thread that wakes: it runs under
    /// `SCHED_IDLE`.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_snapshot_encoder_runs_under_the_idle_policy() {
        let after = std::thread::spawn(|| {
            lower_thread_priority();
            // SAFETY: reads the calling thread's policy; no memory handed over.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        assert_eq!(after, libc::SCHED_IDLE);
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
        let mut s = SmState {
            kv: KvState::new(),
            last_applied: None,
            membership: StoredMembership::default(),
            node_addrs: Default::default(),
            cluster: Default::default(),
        };
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

    #[test]
    fn the_cluster_id_is_read_while_the_state_is_held_and_apply_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StateMachineStore::open(dir.path()).unwrap());
        let handle = store.handle();
        assert_eq!(handle.cluster_id(), 0, "a new cluster has none yet");
        let (answer, answered) = std::sync::mpsc::channel();
        let (reader, apply) = (handle.clone(), store.clone());
        // Threads of their own, so that a deadlock fails the test instead of hanging it.
        let held = std::thread::spawn(move || {
            let held = reader.read();
            // Apply wants to write meanwhile: it waits behind the read...
            let apply = std::thread::spawn(move || apply.write().cluster.cluster_id = 0xc0ffee);
            std::thread::sleep(std::time::Duration::from_millis(50));
            // ...and a response header built under the read still gets the id (through the
            // lock, this thread would wait behind the writer, and the writer behind it).
            let _ = answer.send((reader.cluster_id(), held.cluster.cluster_id));
            drop(held);
            apply.join().unwrap();
        });
        let seen = answered
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the cluster id read under the state lock deadlocked");
        assert_eq!(seen, (0, 0));
        held.join().unwrap();
        assert_eq!(handle.cluster_id(), 0xc0ffee, "published with the write");
        assert_eq!(handle.read().cluster.cluster_id, 0xc0ffee);
    }
}
