//! The Raft log, vote and commit marker in one redb file per node.
//!
//! Appends are group-committed by one writer thread: `append` hands the encoded entries to the
//! writer and returns at once (the entries are readable from memory straight away, so the leader
//! can replicate them while its own disk write is in flight); the writer drains every queued batch
//! into one redb transaction committed with `Durability::Immediate` (one fsync for many client
//! writes) and only then reports them flushed. openraft never counts an entry towards a quorum
//! before that report, so a write is acknowledged only once a quorum has it on disk.
//!
//! Every write to the redb file happens on that writer thread, in queue order: appends, the vote,
//! the commit marker, truncation and purging. openraft's core task only queues them and (for the
//! vote and truncation) awaits the writer's answer, so it never blocks a runtime thread on redb's
//! one-writer lock while an fsync is in flight; the vote shares the group commit's fsync.
//!
//! Correctness requirements this store meets (openraft's storage contract, checked by its suite
//! in `tests/openraft_suite.rs`): reads see appended entries immediately; `truncate_after` and
//! `purge` take effect after every earlier append and before every later one (queue order); the
//! vote is durable before `save_vote` returns.

use crate::{LogId, TypeConfig};
use openraft::alias::{EntryOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

type Entry = EntryOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// Append batches queued for the writer; `append` waits when the queue is full.
pub const LOG_WRITE_QUEUE_MAX: usize = 1024;
/// Most append batches merged into one redb transaction (one fsync).
pub const LOG_GROUP_COMMIT_BATCHES_MAX: usize = 256;

enum WriteOp {
    Append(Vec<(LogId, Vec<u8>)>, IOFlushed<TypeConfig>),
    /// A metadata value (vote, commit marker); `done`, if any, is answered once it is on disk.
    Meta {
        key: &'static str,
        value: Vec<u8>,
        done: Option<oneshot::Sender<io::Result<()>>>,
    },
    /// Deletes entries from `from` on; answered once on disk.
    Truncate {
        from: u64,
        done: oneshot::Sender<io::Result<()>>,
    },
    /// Deletes entries up to `log_id` and records it as the last purged; nobody waits.
    Purge(LogId),
}

/// How often, at most, the commit marker (a restart hint that may lag) is written.
pub const COMMIT_MARKER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Page cache of the redb file holding the Raft log.
pub const LOG_CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// redb-backed [`RaftLogStorage`]. Cloning shares the same database and writer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Appended entries not yet known to be on disk, by index.
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    /// The last purged log id as openraft sees it: set at once by `purge`, while the writer
    /// deletes the entries (and records it on disk) in its own time.
    purged: Arc<Mutex<Option<LogId>>>,
    writer: mpsc::Sender<WriteOp>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(io_err)
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(io_err)
}

impl LogStore {
    /// Opens (or creates) the log database at `path` and starts its writer thread.
    pub fn open(path: &Path) -> io::Result<Self> {
        // The log is read back only by lagging followers and at start-up: a small page cache
        // is enough, and redb's default would take memory the state machine needs.
        let db = redb::Builder::new()
            .set_cache_size(LOG_CACHE_BYTES_MAX)
            .create(path)
            .map_err(io_err)?;
        let txn = db.begin_write().map_err(io_err)?;
        {
            txn.open_table(LOG).map_err(io_err)?;
            txn.open_table(META).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        let db = Arc::new(db);
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, rx) = mpsc::channel(LOG_WRITE_QUEUE_MAX);
        let (wdb, wpending) = (db.clone(), pending.clone());
        std::thread::Builder::new()
            .name("cairn-log-writer".into())
            .spawn(move || writer_loop(wdb, wpending, rx))?;
        let store = Self {
            db,
            pending,
            purged: Arc::new(Mutex::new(None)),
            writer: tx,
        };
        let stored = store.get_meta::<Option<LogId>>(KEY_LAST_PURGED)?.flatten();
        *store.purged() = stored;
        Ok(store)
    }

    fn purged(&self) -> std::sync::MutexGuard<'_, Option<LogId>> {
        self.purged.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn queue(&self, op: WriteOp) -> io::Result<()> {
        self.writer
            .send(op)
            .await
            .map_err(|_| io_err("log writer stopped"))
    }

    /// Queues `op`, built around a reply channel, and waits for the writer's answer.
    async fn queue_and_wait(
        &self,
        op: impl FnOnce(oneshot::Sender<io::Result<()>>) -> WriteOp,
    ) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.queue(op(tx)).await?;
        rx.await.map_err(|_| io_err("log writer stopped"))?
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(META).map_err(io_err)?;
        let value = table.get(key).map_err(io_err)?;
        match value {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn last_stored_log_id(&self) -> io::Result<Option<LogId>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let last = table.last().map_err(io_err)?;
        let log_id = match last {
            Some((_, v)) => Some(decode::<Entry>(v.value())?.log_id),
            None => None,
        };
        Ok(log_id)
    }

    /// Bytes used by the log file on disk.
    pub fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }
}

/// The writer thread: merges queued operations into one transaction, applied in queue order,
/// commits (one fsync), then reports to everyone waiting.
fn writer_loop(
    db: Arc<Database>,
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    mut rx: mpsc::Receiver<WriteOp>,
) {
    // The newest commit marker not written yet, and when one was last written.
    let mut marker: Option<Vec<u8>> = None;
    let mut marker_written: Option<std::time::Instant> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut ops = Vec::with_capacity(8);
        let mut take = |op: WriteOp, ops: &mut Vec<WriteOp>| match op {
            // Only the newest commit marker matters, and it may lag: it is written at most once
            // per COMMIT_MARKER_INTERVAL, with a batch that commits anyway. Writing it with every
            // batch put a second table's pages into every commit.
            WriteOp::Meta {
                key: KEY_COMMITTED,
                value,
                done: None,
            } => marker = Some(value),
            op => ops.push(op),
        };
        take(first, &mut ops);
        for _ in 1..LOG_GROUP_COMMIT_BATCHES_MAX {
            match rx.try_recv() {
                Ok(op) => take(op, &mut ops),
                Err(_) => break,
            }
        }
        if marker_written.is_none_or(|at| at.elapsed() >= COMMIT_MARKER_INTERVAL) {
            if let Some(value) = marker.take() {
                ops.push(WriteOp::Meta {
                    key: KEY_COMMITTED,
                    value,
                    done: None,
                });
                marker_written = Some(std::time::Instant::now());
            }
        }
        if ops.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let result = write_all(&db, &ops);
        if let Some(up_to) = ops.iter().find_map(|op| match op {
            WriteOp::Purge(id) => Some(id.index),
            _ => None,
        }) {
            // Purging follows every snapshot and deletes a large prefix: its cost is worth seeing.
            tracing::info!(
                up_to,
                ms = started.elapsed().as_millis() as u64,
                "raft log purged"
            );
        }
        if result.is_ok() {
            // Durable now: readers find these in redb. A later append may already have replaced
            // an index (after a truncate); that newer entry stays pending until its own commit.
            let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
            for op in &ops {
                if let WriteOp::Append(entries, _) = op {
                    for (log_id, _) in entries {
                        if p.get(&log_id.index).is_some_and(|e| e.log_id == *log_id) {
                            p.remove(&log_id.index);
                        }
                    }
                }
            }
        }
        let outcome = || {
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| io::Error::other(e.to_string()))
        };
        for op in ops {
            match op {
                WriteOp::Append(_, cb) => cb.io_completed(outcome()),
                WriteOp::Meta {
                    done: Some(done), ..
                }
                | WriteOp::Truncate { done, .. } => {
                    let _ = done.send(outcome());
                }
                WriteOp::Meta { done: None, .. } | WriteOp::Purge(_) => {}
            }
        }
    }
}

/// Applies `ops` in order in one transaction, committed with `Durability::Immediate` (an fsync)
/// unless nothing in it needs to be durable now (only the commit marker and purges, which the next
/// durable commit makes durable).
fn write_all(db: &Database, ops: &[WriteOp]) -> io::Result<()> {
    let durable_now = ops.iter().any(|op| match op {
        WriteOp::Append(..) | WriteOp::Truncate { .. } => true,
        WriteOp::Meta { done, .. } => done.is_some(),
        WriteOp::Purge(_) => false,
    });
    let mut txn = db.begin_write().map_err(io_err)?;
    if !durable_now {
        txn.set_durability(Durability::None).map_err(io_err)?;
    }
    {
        let mut log = txn.open_table(LOG).map_err(io_err)?;
        let mut meta = txn.open_table(META).map_err(io_err)?;
        for op in ops {
            match op {
                WriteOp::Append(entries, _) => {
                    for (log_id, bytes) in entries {
                        log.insert(log_id.index, bytes.as_slice()).map_err(io_err)?;
                    }
                }
                WriteOp::Meta { key, value, .. } => {
                    meta.insert(*key, value.as_slice()).map_err(io_err)?;
                }
                WriteOp::Truncate { from, .. } => {
                    log.retain_in(*from.., |_, _| false).map_err(io_err)?;
                }
                WriteOp::Purge(log_id) => {
                    let bytes = encode(&Some(*log_id))?;
                    meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                        .map_err(io_err)?;
                    log.retain_in(..=log_id.index, |_, _| false)
                        .map_err(io_err)?;
                }
            }
        }
    }
    txn.commit().map_err(io_err)
}

fn to_range<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

/// `bounds` starting at `first` at the earliest; None when nothing is left of them.
fn clamp_start(bounds: (Bound<u64>, Bound<u64>), first: u64) -> Option<(Bound<u64>, Bound<u64>)> {
    let start = match bounds.0 {
        Bound::Included(s) => s,
        Bound::Excluded(s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    }
    .max(first);
    let empty = match bounds.1 {
        Bound::Included(e) => e < start,
        Bound::Excluded(e) => e <= start,
        Bound::Unbounded => false,
    };
    (!empty).then_some((Bound::Included(start), bounds.1))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        // Entries purged but not yet deleted by the writer are not returned.
        let first_kept = self.purged().map_or(0, |p| p.index + 1);
        let Some(bounds) = clamp_start(to_range(&range), first_kept) else {
            return Ok(Vec::new());
        };
        // Snapshot the pending entries first: an entry that leaves `pending` meanwhile is in
        // redb by then, so the redb read below finds it.
        let pending: Vec<(u64, Entry)> = self
            .pending()
            .range(bounds)
            .map(|(i, e)| (*i, e.clone()))
            .collect();
        let mut out: BTreeMap<u64, Entry> = BTreeMap::new();
        {
            let txn = self.db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOG).map_err(io_err)?;
            for item in table.range::<u64>(bounds).map_err(io_err)? {
                let (k, v) = item.map_err(io_err)?;
                out.insert(k.value(), decode(v.value())?);
            }
        }
        out.extend(pending);
        Ok(out.into_values().collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = *self.purged();
        let last_pending = self.pending().values().next_back().map(|e| e.log_id);
        let last = last_pending.or(self.last_stored_log_id()?).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let value = encode(vote)?;
        self.queue_and_wait(|done| WriteOp::Meta {
            key: KEY_VOTE,
            value,
            done: Some(done),
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // The commit marker is a restart hint that may lag the truth: it rides along with a later
        // group commit (at most one every COMMIT_MARKER_INTERVAL) and nobody waits for it.
        let value = encode(&committed)?;
        self.queue(WriteOp::Meta {
            key: KEY_COMMITTED,
            value,
            done: None,
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        {
            let mut pending = self.pending();
            for entry in entries {
                encoded.push((entry.log_id, encode(&entry)?));
                pending.insert(entry.log_id.index, entry);
            }
        }
        self.writer
            .send(WriteOp::Append(encoded, callback))
            .await
            .map_err(|_| io_err("log writer stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        // Readers stop seeing the pending entries at once; the writer deletes the stored ones
        // after every earlier append and before any later one, and only then is this answered.
        self.pending().retain(|i, _| *i < from);
        self.queue_and_wait(|done| WriteOp::Truncate { from, done })
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Nobody waits: purged entries are never read again, and until the writer deletes them
        // (after every earlier append, so no hole) they are merely still there. Deleting a large
        // prefix takes a while; the core does not wait for it.
        {
            let mut purged = self.purged();
            if purged.is_none_or(|p| p.index < log_id.index) {
                *purged = Some(log_id);
            }
        }
        self.queue(WriteOp::Purge(log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_skip_purged_entries_and_empty_ranges_stay_empty() {
        use Bound::*;
        assert_eq!(
            clamp_start((Unbounded, Unbounded), 5),
            Some((Included(5), Unbounded))
        );
        assert_eq!(
            clamp_start((Included(7), Excluded(9)), 5),
            Some((Included(7), Excluded(9)))
        );
        assert_eq!(
            clamp_start((Excluded(3), Included(9)), 5),
            Some((Included(5), Included(9)))
        );
        // Wholly purged: nothing to read (and no inverted range for the map).
        assert_eq!(clamp_start((Included(0), Excluded(5)), 5), None);
        assert_eq!(clamp_start((Included(0), Included(4)), 5), None);
        assert_eq!(clamp_start((Excluded(u64::MAX), Unbounded), 0), None);
    }
}
