//! A Raft log kept in memory, for the deterministic simulation.
//!
//! The simulation runs a whole cluster on one thread under tokio's paused clock; the redb log's
//! writer thread would let real time leak into it (the clock jumps ahead while the runtime waits
//! for an fsync). This log answers every write at once, as a disk with instant fsync would.
//!
//! What it stores stands for the disk: a "crash" drops the node's Raft and state machine but
//! keeps its [`MemLogStore`] (clone it before), and the restarted node reads the vote, entries
//! and purge point back from it, exactly what the redb log would hold after `append` reported
//! the entries flushed. openraft's storage suite runs against it too.
//!
//! A slow disk can be simulated ([`MemLogStore::set_flush_delay_ms`]): appends are then reported
//! flushed, in order, a random delay later, and a vote is saved after one such delay.

use crate::{LogId, TypeConfig};
use openraft::alias::{EntryOf, VoteOf};
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Appends whose flush the simulated slow disk has not reported yet; more wait in `append`.
pub const SIMULATED_FLUSHES_PENDING_MAX: usize = 1024;

type Entry = EntryOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

#[derive(Default)]
struct Stored {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

/// A log in memory; clones share it (one per node, kept across the node's simulated crashes).
#[derive(Clone, Default)]
pub struct MemLogStore {
    stored: Arc<Mutex<Stored>>,
    disk: Arc<Mutex<SlowDisk>>,
}

/// The simulated disk's flush latency, and the queue of flushes it has yet to report.
#[derive(Default)]
struct SlowDisk {
    /// Flush delay range, milliseconds; (0, 0) for an instant fsync.
    delay_ms: (u64, u64),
    /// When the last queued flush completes: flushes complete in order.
    last_done: Option<Instant>,
    flusher: Option<mpsc::Sender<(Instant, IOFlushed<TypeConfig>)>>,
}

impl MemLogStore {
    fn stored(&self) -> MutexGuard<'_, Stored> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn disk(&self) -> MutexGuard<'_, SlowDisk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes every flush take a delay drawn from `lo..=hi` milliseconds (from the thread's seeded
    /// generator), as a slow disk's fsync would; (0, 0) restores instant flushes.
    pub fn set_flush_delay_ms(&self, lo: u64, hi: u64) {
        let mut disk = self.disk();
        disk.delay_ms = (lo, hi.max(lo));
        disk.flusher = None;
        disk.last_done = None;
    }

    /// The delay of the next flush, if the disk is slow.
    fn next_flush_delay(&self) -> Option<Duration> {
        let (lo, hi) = self.disk().delay_ms;
        (hi > 0).then(|| {
            let ms = lo + crate::runtime::random_u64() % (hi - lo + 1);
            Duration::from_millis(ms)
        })
    }

    /// Queues `callback` to be reported a flush delay after the previous queued flush.
    async fn report_later(&self, delay: Duration, callback: IOFlushed<TypeConfig>) {
        let sender = {
            let mut disk = self.disk();
            let due = disk
                .last_done
                .map_or(Instant::now(), |d| d.max(Instant::now()))
                + delay;
            disk.last_done = Some(due);
            let sender = disk.flusher.get_or_insert_with(|| {
                let (tx, mut rx) = mpsc::channel::<(Instant, IOFlushed<TypeConfig>)>(
                    SIMULATED_FLUSHES_PENDING_MAX,
                );
                tokio::spawn(async move {
                    while let Some((due, callback)) = rx.recv().await {
                        tokio::time::sleep_until(due).await;
                        callback.io_completed(Ok(()));
                    }
                });
                tx
            });
            (sender.clone(), due)
        };
        let (sender, due) = sender;
        if let Err(mpsc::error::SendError((_, callback))) = sender.send((due, callback)).await {
            callback.io_completed(Err(io::Error::other("simulated disk stopped")));
        }
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self
            .stored()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.stored().vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = MemLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let s = self.stored();
        let last = s
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(s.purged);
        Ok(LogState {
            last_purged_log_id: s.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.stored().vote = Some(*vote);
        if let Some(delay) = self.next_flush_delay() {
            tokio::time::sleep(delay).await;
        }
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.stored().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.stored().committed)
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
        {
            let mut s = self.stored();
            for entry in entries {
                s.entries.insert(entry.log_id.index, entry);
            }
        }
        match self.next_flush_delay() {
            Some(delay) => self.report_later(delay, callback).await,
            None => callback.io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        self.stored().entries.retain(|i, _| *i < from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut s = self.stored();
        if s.purged.is_none_or(|p| p.index < log_id.index) {
            s.purged = Some(log_id);
        }
        s.entries.retain(|i, _| *i > log_id.index);
        Ok(())
    }
}
