//! The Raft log, vote and commit marker: openraft's [`RaftLogStorage`] over the segmented
//! write-ahead log of [`crate::wal`], in one directory per node.
//!
//! Appends are group-committed by one writer thread: `append` hands the encoded entries to the
//! writer and returns at once (the entries are readable from memory straight away, so the leader
//! can replicate them while its own disk write is in flight, and the newest stay there after the
//! write, bounded, for the state machine to apply: [`crate::log_cache`]); the writer drains every
//! queued batch into one write at the log's end and one `fdatasync` (one fsync for many client writes) and only
//! then reports them flushed. openraft never counts an entry towards a quorum before that report,
//! so a write is acknowledged only once a quorum has it on disk.
//!
//! Every write to the log happens on that writer thread, in queue order: appends, the vote,
//! truncation and purging. The commit marker is not queued for every commit: the newest is left
//! for the writer to take at its next group commit, after every operation queued before it.
//! openraft's core task only queues them and (for the vote and truncation) awaits the writer's
//! answer, so it never blocks a runtime thread on a disk write.
//!
//! Correctness requirements this store meets (openraft's storage contract, checked by its suite
//! in `tests/openraft_suite.rs`): reads see appended entries immediately; `truncate_after` and
//! `purge` take effect after every earlier append and before every later one (queue order); the
//! vote is durable before `save_vote` returns.

use crate::log_cache::{CacheBounds, LogCache};
use crate::wal::{EncodedEntries, Wal, WalReader, SEGMENT_BYTES_MAX};
use crate::{LogId, TypeConfig};
use cairn_types::latency::LatencyHistogram;
use openraft::alias::{EntryOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

type Entry = EntryOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// Append batches queued for the writer; `append` waits when the queue is full.
pub const LOG_WRITE_QUEUE_MAX: usize = 1024;
/// Most queued operations merged into one group commit (one fsync).
pub const LOG_GROUP_COMMIT_BATCHES_MAX: usize = 256;

enum WriteOp {
    Append(EncodedEntries, IOFlushed<TypeConfig>),
    /// Answered once the vote is on disk.
    Vote(Vote, oneshot::Sender<io::Result<()>>),
    /// A commit marker is due: the writer takes the newest one saved (see
    /// [`LogStore::save_committed`]). Nobody waits.
    MarkerDue,
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

/// The newest commit marker saved and not yet taken by the writer, and how many operations had
/// been queued before it was saved: the writer takes it only once it has taken those, so a
/// marker is never written ahead of an entry it names.
#[derive(Default)]
struct PendingMarker {
    committed: Option<Option<LogId>>,
    after_ops: u64,
    /// When the writer was last woken for a marker ([`WriteOp::MarkerDue`]).
    woken: Option<Instant>,
}

impl PendingMarker {
    /// The marker, once every operation queued before it is among the `taken` first.
    fn take_if_ready(&mut self, taken: u64) -> Option<Option<LogId>> {
        if self.after_ops <= taken {
            self.committed.take()
        } else {
            None
        }
    }
}

/// [`RaftLogStorage`] over the write-ahead log. Cloning shares the same log and writer.
#[derive(Clone)]
pub struct LogStore {
    reader: WalReader,
    /// Appended entries not yet known to be on disk, and the newest ones on disk.
    cache: Arc<Mutex<LogCache>>,
    /// The last purged log id as openraft sees it: set at once by `purge`, while the writer
    /// deletes the entries (and records it on disk) in its own time.
    purged: Arc<Mutex<Option<LogId>>>,
    /// The vote as last saved (on disk before `save_vote` returned).
    vote: Arc<Mutex<Option<Vote>>>,
    /// The commit marker found at open.
    committed: Option<LogId>,
    writer: mpsc::Sender<WriteOp>,
    /// Operations handed to the writer so far.
    queued_ops: Arc<AtomicU64>,
    /// The newest commit marker saved, for the writer to take.
    marker: Arc<Mutex<PendingMarker>>,
    /// How long each durable group commit took to write and `fdatasync` (the writer records it).
    sync_latency: Arc<LatencyHistogram>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogStore {
    /// Opens (or creates) the log in directory `dir` and starts its writer thread.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with(dir, SEGMENT_BYTES_MAX, CacheBounds::default())
    }

    /// [`LogStore::open`] with segments closed at `segment_bytes_max` and the cache of entries
    /// on disk held to `cache` (both small in tests).
    pub fn open_with(dir: &Path, segment_bytes_max: u64, cache: CacheBounds) -> io::Result<Self> {
        let (wal, recovered) = Wal::open(dir, segment_bytes_max)?;
        let cache = Arc::new(Mutex::new(LogCache::new(cache)));
        let (tx, rx) = mpsc::channel(LOG_WRITE_QUEUE_MAX);
        let marker = Arc::new(Mutex::new(PendingMarker::default()));
        let sync_latency = Arc::new(LatencyHistogram::new());
        let store = Self {
            reader: wal.reader(),
            cache: cache.clone(),
            purged: Arc::new(Mutex::new(recovered.meta.last_purged)),
            vote: Arc::new(Mutex::new(recovered.meta.vote)),
            committed: recovered.committed,
            writer: tx,
            queued_ops: Arc::new(AtomicU64::new(0)),
            marker: marker.clone(),
            sync_latency: sync_latency.clone(),
        };
        std::thread::Builder::new()
            .name("cairn-log-writer".into())
            .spawn(move || writer_loop(wal, cache, marker, &sync_latency, rx))?;
        Ok(store)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, LogCache> {
        lock(&self.cache)
    }

    async fn queue(&self, op: WriteOp) -> io::Result<()> {
        self.writer
            .send(op)
            .await
            .map_err(|_| io_err("log writer stopped"))?;
        self.queued_ops.fetch_add(1, Ordering::AcqRel);
        Ok(())
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

    /// The durations of the writer's syncs so far (one per group commit that had to be
    /// durable), shared: it keeps counting.
    pub fn sync_latency(&self) -> Arc<LatencyHistogram> {
        self.sync_latency.clone()
    }

    /// Bytes the log in `dir` takes on disk.
    pub fn disk_size(dir: &Path) -> u64 {
        crate::wal::disk_size(dir)
    }
}

/// Applies `op` to the log (not synced yet), or fails it once an earlier one failed: after a
/// failed write the files may not be what the index says, so nothing more is written.
fn apply(wal: &mut Wal, op: &WriteOp) -> io::Result<()> {
    match op {
        WriteOp::Append(entries, _) => wal.append(entries),
        WriteOp::Vote(vote, _) => wal.save_vote(*vote),
        WriteOp::MarkerDue => Ok(()),
        WriteOp::Truncate { from, .. } => wal.truncate(*from),
        WriteOp::Purge(log_id) => wal.purge(*log_id),
    }
}

/// The writer thread: applies queued operations in order, syncs once, then reports to everyone
/// waiting.
fn writer_loop(
    mut wal: Wal,
    cache: Arc<Mutex<LogCache>>,
    saved_marker: Arc<Mutex<PendingMarker>>,
    sync_latency: &LatencyHistogram,
    mut rx: mpsc::Receiver<WriteOp>,
) {
    // The newest commit marker taken and not written yet, and when one was last written. Held
    // here until COMMIT_MARKER_INTERVAL allows the write: left in the pending slot, it could be
    // replaced on a busy node by newer markers that are never ready when the writer looks.
    let mut marker: Option<Option<LogId>> = None;
    let mut marker_written: Option<Instant> = None;
    // Operations taken from the queue so far.
    let mut taken: u64 = 0;
    // Set by the first failed write; every later operation fails with it.
    let mut failed: Option<String> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut ops = Vec::with_capacity(8);
        ops.push(first);
        while ops.len() < LOG_GROUP_COMMIT_BATCHES_MAX {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        taken += ops.len() as u64;
        let started = Instant::now();
        let mut result: Result<(), String> = match &failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        };
        for op in &ops {
            if result.is_ok() {
                result = apply(&mut wal, op).map_err(|e| e.to_string());
            }
        }
        // Written after this group's entries, so never ahead of them on disk either.
        if let Some(c) = lock(&saved_marker).take_if_ready(taken) {
            marker = Some(c);
        }
        // Only the newest commit marker matters, and it may lag: it is written at most once
        // per COMMIT_MARKER_INTERVAL.
        if result.is_ok() && marker_written.is_none_or(|at| at.elapsed() >= COMMIT_MARKER_INTERVAL)
        {
            if let Some(c) = marker.take() {
                result = wal.commit_marker(&c).map_err(|e| e.to_string());
                marker_written = Some(Instant::now());
            }
        }
        // The marker alone need not be durable now: the next durable sync takes it along.
        let durable_now = ops.iter().any(|op| {
            matches!(
                op,
                WriteOp::Append(..) | WriteOp::Vote(..) | WriteOp::Truncate { .. }
            )
        });
        if result.is_ok() {
            let syncing = Instant::now();
            result = wal.sync(durable_now).map_err(|e| e.to_string());
            if durable_now && result.is_ok() {
                sync_latency.record(syncing.elapsed());
            }
        }
        if let Err(e) = &result {
            if failed.is_none() {
                tracing::error!("raft log write failed; no further writes are made: {e}");
                failed = Some(e.clone());
            }
        }
        if let Some(up_to) = ops.iter().find_map(|op| match op {
            WriteOp::Purge(id) => Some(id.index),
            _ => None,
        }) {
            tracing::info!(
                up_to,
                ms = started.elapsed().as_millis() as u64,
                "raft log purged"
            );
        }
        // Durable now: readers find these in the log, and the newest in the cache. A later
        // append may already have replaced an index (after a truncate); that newer entry stays
        // pending until its own sync.
        let evicted = result.is_ok().then(|| {
            lock(&cache).flushed(
                ops.iter()
                    .filter_map(|op| match op {
                        WriteOp::Append(entries, _) => Some(entries),
                        _ => None,
                    })
                    .flat_map(EncodedEntries::ids),
            )
        });
        let outcome = || result.clone().map_err(io::Error::other);
        for op in ops {
            match op {
                WriteOp::Append(_, cb) => cb.io_completed(outcome()),
                WriteOp::Vote(_, done) | WriteOp::Truncate { done, .. } => {
                    let _ = done.send(outcome());
                }
                WriteOp::MarkerDue | WriteOp::Purge(_) => {}
            }
        }
        // Freed once the commit is acknowledged, not on its way.
        drop(evicted);
    }
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
        let first_kept = lock(&self.purged).map_or(0, |p| p.index + 1);
        let Some(bounds) = clamp_start(to_range(&range), first_kept) else {
            return Ok(Vec::new());
        };
        // Read the cache first: an entry that leaves it meanwhile is in the log by then, so the
        // read below finds it.
        let cached = self.cache().read(bounds);
        if cached.complete {
            return Ok(cached.entries);
        }
        if let Some(k) = cached.tail_from {
            // Only what is older than the cache from the files; should they not hold exactly
            // that (a truncation or purge meanwhile), the whole range is read below instead.
            let mut head = self.reader.read((bounds.0, Bound::Excluded(k)))?;
            let start = match bounds.0 {
                Bound::Included(s) => s,
                _ => 0,
            };
            let head_index = |i: usize| head.get(i).map(|e| e.log_id.index);
            if head.len() as u64 == k - start && head_index(0) == Some(start) {
                head.extend(cached.entries);
                return Ok(head);
            }
        }
        let mut out: BTreeMap<u64, Entry> = self
            .reader
            .read(bounds)?
            .into_iter()
            .map(|e| (e.log_id.index, e))
            .collect();
        out.extend(cached.entries.into_iter().map(|e| (e.log_id.index, e)));
        Ok(out.into_values().collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(*lock(&self.vote))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = *lock(&self.purged);
        let last_pending = self.cache().last_pending();
        let last = last_pending.or(self.reader.last()).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.queue_and_wait(|done| WriteOp::Vote(vote, done))
            .await?;
        *lock(&self.vote) = Some(vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // The commit marker is a restart hint that may lag the truth: it rides along with a later
        // group commit (at most one every COMMIT_MARKER_INTERVAL) and nobody waits for it. It is
        // left for the writer to take at its next group commit, and the writer is woken for it
        // only when a marker is due: on a busy node every commit would otherwise wake the writer
        // for nothing (BENCHMARKS.md, issue 12, nineteenth session).
        let due = {
            let mut pending = lock(&self.marker);
            pending.committed = Some(committed);
            pending.after_ops = self.queued_ops.load(Ordering::Acquire);
            let due = pending
                .woken
                .is_none_or(|at| at.elapsed() >= COMMIT_MARKER_INTERVAL);
            if due {
                pending.woken = Some(Instant::now());
            }
            due
        };
        if due {
            self.queue(WriteOp::MarkerDue).await?;
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.committed)
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
        let entries = entries.into_iter();
        let mut encoded = EncodedEntries::with_capacity(entries.size_hint().0);
        {
            let mut cache = self.cache();
            for entry in entries {
                let bytes = encoded.push(&entry)?;
                cache.append(entry, bytes);
            }
        }
        self.queue(WriteOp::Append(encoded, callback)).await
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|id| id.index + 1).unwrap_or(0);
        // Readers stop seeing the pending entries at once; the writer deletes the stored ones
        // after every earlier append and before any later one, and only then is this answered.
        self.cache().truncate(from);
        self.queue_and_wait(|done| WriteOp::Truncate { from, done })
            .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Nobody waits: purged entries are never read again, and until the writer deletes them
        // (after every earlier append, so no hole) they are merely still there. Deleting a large
        // prefix takes a while; the core does not wait for it.
        {
            let mut purged = lock(&self.purged);
            if purged.is_none_or(|p| p.index < log_id.index) {
                *purged = Some(log_id);
            }
        }
        self.cache().purge(log_id.index);
        self.queue(WriteOp::Purge(log_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::type_config::TypeConfigExt;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::{EntryPayload, RaftTypeConfig};

    fn id(index: u64) -> LogId {
        LogId::new(
            <TypeConfig as RaftTypeConfig>::LeaderId::new_committed(1, 1),
            index,
        )
    }

    /// Appends entries `from..=to` and waits until they are on disk.
    async fn append_synced(log: &mut LogStore, from: u64, to: u64) {
        let entries: Vec<Entry> = (from..=to)
            .map(|i| Entry {
                log_id: id(i),
                payload: EntryPayload::Normal(crate::Command::Txn(vec![1; 10].into())),
            })
            .collect();
        let (tx, rx) = TypeConfig::oneshot();
        log.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx.await.unwrap().unwrap();
    }

    /// The commit marker a fresh open of the log at `path` finds.
    async fn committed_at_reopen(path: &Path) -> Option<LogId> {
        LogStore::open(path)
            .unwrap()
            .read_committed()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn saved_commit_markers_are_found_at_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = LogStore::open(&path).unwrap();
        append_synced(&mut log, 1, 3).await;
        // The first marker wakes the writer; the vote after it is answered once written.
        log.save_committed(Some(id(3))).await.unwrap();
        log.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
        assert_eq!(committed_at_reopen(&path).await, Some(id(3)));
        // Saved within COMMIT_MARKER_INTERVAL of it: written with the next group commit once
        // the interval is over.
        append_synced(&mut log, 4, 5).await;
        log.save_committed(Some(id(5))).await.unwrap();
        tokio::time::sleep(COMMIT_MARKER_INTERVAL).await;
        append_synced(&mut log, 6, 6).await;
        assert_eq!(committed_at_reopen(&path).await, Some(id(5)));
    }

    #[test]
    fn a_commit_marker_waits_for_the_operations_queued_before_it() {
        let mut pending = PendingMarker {
            committed: Some(Some(id(7))),
            after_ops: 4,
            woken: None,
        };
        assert_eq!(pending.take_if_ready(3), None);
        assert_eq!(pending.take_if_ready(4), Some(Some(id(7))));
        assert_eq!(pending.take_if_ready(5), None, "taken once");
    }

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
