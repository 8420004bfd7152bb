//! The Raft log, vote and commit marker in one redb file per node.
//!
//! Appends are group-committed by one writer thread: `append` hands the encoded entries to the
//! writer and returns at once (the entries are readable from memory straight away, so the leader
//! can replicate them while its own disk write is in flight); the writer drains every queued batch
//! into one redb transaction committed with `Durability::Immediate` (one fsync for many client
//! writes) and only then reports them flushed. openraft never counts an entry towards a quorum
//! before that report, so a write is acknowledged only once a quorum has it on disk.
//!
//! Correctness requirements this store meets (openraft's storage contract, checked by its suite
//! in `tests/openraft_suite.rs`): reads see appended entries immediately; `truncate_after` and
//! `purge` take effect after every earlier append; the vote is durable before `save_vote` returns.

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
    /// Answered once every earlier op is on disk.
    Barrier(oneshot::Sender<()>),
}

/// Page cache of the redb file holding the Raft log.
pub const LOG_CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;

/// redb-backed [`RaftLogStorage`]. Cloning shares the same database and writer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Appended entries not yet known to be on disk, by index.
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
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
        Ok(Self {
            db,
            pending,
            writer: tx,
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every append queued before this call is durable.
    async fn barrier(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::Barrier(tx))
            .await
            .map_err(|_| io_err("log writer stopped"))?;
        rx.await.map_err(|_| io_err("log writer stopped"))
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

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> io::Result<()> {
        let bytes = encode(value)?;
        let mut txn = self.db.begin_write().map_err(io_err)?;
        txn.set_durability(durability).map_err(io_err)?;
        {
            let mut table = txn.open_table(META).map_err(io_err)?;
            table.insert(key, bytes.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
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

/// The writer thread: merges queued appends into one transaction, commits (fsync), then reports.
fn writer_loop(
    db: Arc<Database>,
    pending: Arc<Mutex<BTreeMap<u64, Entry>>>,
    mut rx: mpsc::Receiver<WriteOp>,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut ops = vec![first];
        while ops.len() < LOG_GROUP_COMMIT_BATCHES_MAX {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let result = (|| {
            let txn = db.begin_write().map_err(io_err)?;
            {
                let mut table = txn.open_table(LOG).map_err(io_err)?;
                for op in &ops {
                    if let WriteOp::Append(entries, _) = op {
                        for (log_id, bytes) in entries {
                            table
                                .insert(log_id.index, bytes.as_slice())
                                .map_err(io_err)?;
                        }
                    }
                }
            }
            txn.commit().map_err(io_err)
        })();
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
        for op in ops {
            match op {
                WriteOp::Append(_, cb) => cb.io_completed(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| io::Error::other(e.to_string())),
                ),
                WriteOp::Barrier(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }
}

fn to_range<RB: RangeBounds<u64>>(range: &RB) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let bounds = to_range(&range);
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
        let last_purged: Option<LogId> = self.get_meta::<Option<LogId>>(KEY_LAST_PURGED)?.flatten();
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
        self.put_meta(KEY_VOTE, vote, Durability::Immediate)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // The commit marker is a restart hint that may lag the truth: it becomes durable with the
        // next append, so it costs no fsync of its own.
        self.put_meta(KEY_COMMITTED, &committed, Durability::None)
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
        self.barrier().await?;
        self.pending().retain(|i, _| *i < from);
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            table.retain_in(from.., |_, _| false).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let started = std::time::Instant::now();
        self.barrier().await?;
        self.pending().retain(|i, _| *i > log_id.index);
        let bytes = encode(&Some(log_id))?;
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut meta = txn.open_table(META).map_err(io_err)?;
            meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                .map_err(io_err)?;
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            table
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(io_err)?;
        }
        txn.commit().map_err(io_err)?;
        // Purging follows every snapshot and runs on openraft's path: its cost is worth seeing.
        tracing::info!(
            up_to = log_id.index,
            ms = started.elapsed().as_millis() as u64,
            "raft log purged"
        );
        Ok(())
    }
}
