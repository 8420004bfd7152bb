//! The Raft log's entries held in memory: every entry appended but not yet on disk, and the
//! newest entries already on disk, up to a bound.
//!
//! The second part is what makes reads cheap on the write path: an entry is read back soon after
//! it is flushed, by the state machine applying it and by the replication to a follower that was
//! a little behind. Without the cache every such read is a `pread`, a checksum and a decode of
//! entries the store encoded moments before (3.4% of the servers' CPU under `etcdctl check perf`,
//! BENCHMARKS.md). Entries beyond the bound are read from the log files, as before.

use crate::{LogId, TypeConfig};
use openraft::alias::EntryOf;
use std::collections::VecDeque;
use std::ops::Bound;

type Entry = EntryOf<TypeConfig>;

/// Most entries on disk kept in memory for readers.
pub const LOG_CACHE_ENTRIES_MAX: usize = 4096;
/// Most encoded bytes of entries on disk kept in memory for readers.
pub const LOG_CACHE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// The bounds of the cache of entries already on disk.
#[derive(Clone, Copy, Debug)]
pub struct CacheBounds {
    pub entries_max: usize,
    pub bytes_max: usize,
}

impl Default for CacheBounds {
    fn default() -> Self {
        Self {
            entries_max: LOG_CACHE_ENTRIES_MAX,
            bytes_max: LOG_CACHE_BYTES_MAX,
        }
    }
}

/// An entry with its encoded size (what it counts against the byte bound once on disk).
struct Held {
    entry: Entry,
    bytes: usize,
}

impl Held {
    fn index(&self) -> u64 {
        self.entry.log_id.index
    }
}

/// Entries in index order, gaps allowed, as a map by index would hold them; but a ring buffer,
/// because entries come and go at its ends: appended at the back, flushed and evicted from the
/// front. A B-tree map's nodes (over a KiB each, past glibc's per-thread cache) were split,
/// merged and freed as they did, 2.5–3.3% of a follower's CPU at 256 clients (BENCHMARKS.md).
#[derive(Default)]
struct Run(VecDeque<Held>);

impl Run {
    /// Where `index` is, or would go.
    fn search(&self, index: u64) -> Result<usize, usize> {
        match self.0.back() {
            // The usual case: past the end.
            Some(last) if last.index() < index => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&index, Held::index),
        }
    }

    /// Holds `held`, replacing an entry at its index; returns the one replaced.
    fn insert(&mut self, held: Held) -> Option<Held> {
        match self.search(held.index()) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at], held)),
            Err(at) => {
                self.0.insert(at, held);
                None
            }
        }
    }

    /// Takes the entry at `index` out, if there is one.
    fn remove(&mut self, index: u64) -> Option<Held> {
        self.remove_if(index, |_| true)
    }

    /// Takes the entry at `index` out, if there is one and `take` says so.
    fn remove_if(&mut self, index: u64, take: impl FnOnce(&Held) -> bool) -> Option<Held> {
        let at = self.search(index).ok()?;
        if !take(&self.0[at]) {
            return None;
        }
        self.0.remove(at)
    }

    /// Takes out every entry from index `from` on, in order.
    fn split_off(&mut self, from: u64) -> VecDeque<Held> {
        let at = self.0.partition_point(|h| h.index() < from);
        self.0.split_off(at)
    }

    /// The entries in `range`, in order.
    fn range(&self, range: (Bound<u64>, Bound<u64>)) -> impl Iterator<Item = &Held> {
        let start = self.0.partition_point(|h| match range.0 {
            Bound::Included(s) => h.index() < s,
            Bound::Excluded(s) => h.index() <= s,
            Bound::Unbounded => false,
        });
        let end = self.0.partition_point(|h| match range.1 {
            Bound::Included(e) => h.index() <= e,
            Bound::Excluded(e) => h.index() < e,
            Bound::Unbounded => true,
        });
        self.0.range(start..end.max(start))
    }
}

/// Entries evicted from the cache, handed back so that the caller frees them where it costs
/// nothing: the log writer drops them after it has told Raft its group commit is durable, not
/// before and not under the cache's lock (freeing them was 2.5% of the leader's CPU at 256
/// clients, all on the writer's thread, BENCHMARKS.md).
#[derive(Default)]
pub struct Evicted(Vec<Held>);

impl Evicted {
    /// How many entries were evicted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The entries in memory. The two runs never share an index: an entry moves from `pending` to
/// `flushed` when the writer has synced it, and truncation removes from both.
pub struct LogCache {
    bounds: CacheBounds,
    /// Appended, not yet known to be on disk: never evicted.
    pending: Run,
    /// On disk, newest kept; evicted oldest first past the bounds.
    flushed: Run,
    flushed_bytes: usize,
}

/// What [`LogCache::read`] found for a range.
pub struct CachedRead {
    pub entries: Vec<Entry>,
    /// Whether `entries` is the whole range, with no index missing (nothing to read from disk).
    pub complete: bool,
    /// Set to `k` when `entries` is the range's end from index `k` on, with no index missing:
    /// only the indexes before `k` are to be read from disk (a follower catching up from just
    /// before what the cache holds).
    pub tail_from: Option<u64>,
}

impl LogCache {
    pub fn new(bounds: CacheBounds) -> Self {
        Self {
            bounds,
            pending: Run::default(),
            flushed: Run::default(),
            flushed_bytes: 0,
        }
    }

    /// Holds `entry` (of `bytes` encoded bytes) until it is on disk, replacing any entry at its
    /// index.
    pub fn append(&mut self, entry: Entry, bytes: usize) {
        if let Some(old) = self.flushed.remove(entry.log_id.index) {
            self.flushed_bytes -= old.bytes;
        }
        self.pending.insert(Held { entry, bytes });
    }

    /// `ids` are on disk now: their entries move to the bounded part. An index whose pending
    /// entry is another one (appended after a truncation) keeps it pending until its own sync.
    /// Returns the entries evicted past the bounds, for the caller to drop.
    pub fn flushed<'a>(&mut self, ids: impl IntoIterator<Item = &'a LogId>) -> Evicted {
        for id in ids {
            if let Some(held) = self.pending.remove_if(id.index, |h| h.entry.log_id == *id) {
                self.flushed_bytes += held.bytes;
                if let Some(old) = self.flushed.insert(held) {
                    self.flushed_bytes -= old.bytes;
                }
            }
        }
        let mut evicted = Evicted::default();
        while self.flushed.0.len() > self.bounds.entries_max
            || self.flushed_bytes > self.bounds.bytes_max
        {
            let Some(old) = self.flushed.0.pop_front() else {
                break;
            };
            self.flushed_bytes -= old.bytes;
            evicted.0.push(old);
        }
        evicted
    }

    /// Forgets every entry from index `from` on.
    pub fn truncate(&mut self, from: u64) {
        self.pending.split_off(from);
        for old in self.flushed.split_off(from) {
            self.flushed_bytes -= old.bytes;
        }
    }

    /// Forgets the entries on disk up to index `up_to` (purged: never read again).
    pub fn purge(&mut self, up_to: u64) {
        while let Some(old) = self.flushed.0.front() {
            if old.index() > up_to {
                break;
            }
            self.flushed_bytes -= old.bytes;
            self.flushed.0.pop_front();
        }
    }

    /// The newest entry not yet on disk.
    pub fn last_pending(&self) -> Option<LogId> {
        self.pending.0.back().map(|h| h.entry.log_id)
    }

    /// The entries held in `range` (which starts at an included index), in index order.
    pub fn read(&self, range: (Bound<u64>, Bound<u64>)) -> CachedRead {
        let mut held: Vec<(u64, &Held)> = self
            .flushed
            .range(range)
            .chain(self.pending.range(range))
            .map(|h| (h.index(), h))
            .collect();
        // Pending entries follow the flushed ones except after a truncation re-appended below
        // an index still being flushed; order them either way.
        if held.windows(2).any(|w| w[0].0 > w[1].0) {
            held.sort_unstable_by_key(|(i, _)| *i);
        }
        // Whether the held entries run without a gap to the range's end, and from which index.
        let gapless_to_end = match (held.first(), held.last(), range) {
            (Some((first, _)), Some((last, _)), (Bound::Included(_), end)) => {
                let contiguous = last - first + 1 == held.len() as u64;
                let to_end = match end {
                    Bound::Included(e) => *last == e,
                    Bound::Excluded(e) => last + 1 == e,
                    // Whether later entries exist only the log knows.
                    Bound::Unbounded => false,
                };
                (contiguous && to_end).then_some(*first)
            }
            _ => None,
        };
        let start = match range.0 {
            Bound::Included(s) => s,
            _ => 0,
        };
        let complete = gapless_to_end == Some(start);
        let tail_from = gapless_to_end.filter(|first| *first > start);
        CachedRead {
            entries: held.into_iter().map(|(_, h)| h.entry.clone()).collect(),
            complete,
            tail_from,
        }
    }

    /// Entries on disk held in memory, and their encoded bytes.
    pub fn flushed_len(&self) -> (usize, usize) {
        (self.flushed.0.len(), self.flushed_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::vote::RaftLeaderIdExt;
    use openraft::EntryPayload;
    use Bound::*;

    fn id(term: u64, index: u64) -> LogId {
        LogId::new(
            <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
            index,
        )
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: id(term, index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(read: &CachedRead) -> Vec<u64> {
        read.entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn flushed_entries_stay_readable_within_the_bounds_oldest_leave_first() {
        let mut c = LogCache::new(CacheBounds {
            entries_max: 3,
            bytes_max: 1000,
        });
        for i in 1..=5 {
            c.append(entry(1, i), 10);
        }
        // Not on disk yet: all held, whatever the bound.
        let r = c.read((Included(1), Included(5)));
        assert!(r.complete);
        assert_eq!(indexes(&r), vec![1, 2, 3, 4, 5]);
        let evicted = c.flushed(&[id(1, 1), id(1, 2), id(1, 3), id(1, 4)]);
        assert_eq!(evicted.len(), 1, "index 1, handed back to be dropped");
        assert_eq!(c.flushed_len(), (3, 30));
        assert_eq!(c.last_pending(), Some(id(1, 5)));
        let r = c.read((Included(2), Excluded(6)));
        assert!(r.complete);
        assert_eq!(indexes(&r), vec![2, 3, 4, 5]);
        // Index 1 left the cache: it must be read from disk, and only it.
        let r = c.read((Included(1), Included(3)));
        assert!(!r.complete);
        assert_eq!(r.tail_from, Some(2));
        assert_eq!(indexes(&r), vec![2, 3]);
        // Held entries that stop short of the range's end are no tail.
        let r = c.read((Included(1), Included(9)));
        assert_eq!((r.complete, r.tail_from), (false, None));
    }

    #[test]
    fn entries_out_of_order_or_with_gaps_are_kept_in_index_order_as_a_map_would() {
        let mut c = LogCache::new(CacheBounds {
            entries_max: 3,
            bytes_max: 1000,
        });
        for i in [1, 2, 5, 3] {
            c.append(entry(1, i), 10);
        }
        assert_eq!(c.last_pending(), Some(id(1, 5)));
        let r = c.read((Included(1), Included(5)));
        assert_eq!(indexes(&r), vec![1, 2, 3, 5]);
        assert!(!r.complete, "index 4 is missing");
        // Flushed out of order and with an id the cache does not hold (index 4).
        c.flushed(&[id(1, 5), id(1, 4), id(1, 1)]);
        assert_eq!(c.last_pending(), Some(id(1, 3)));
        assert_eq!(c.flushed_len(), (2, 20));
        c.flushed(&[id(1, 2), id(1, 3)]);
        assert_eq!(c.last_pending(), None);
        // Four flushed, three kept: index 1 left first.
        assert_eq!(c.flushed_len(), (3, 30));
        assert_eq!(indexes(&c.read((Included(1), Included(5)))), vec![2, 3, 5]);
        assert_eq!(indexes(&c.read((Excluded(2), Unbounded))), vec![3, 5]);
        // A replaced entry counts once.
        c.append(entry(2, 5), 10);
        c.flushed(&[id(2, 5)]);
        assert_eq!(c.flushed_len(), (3, 30));
        assert_eq!(
            c.read((Included(5), Included(5))).entries[0].log_id,
            id(2, 5)
        );
        c.purge(3);
        assert_eq!(indexes(&c.read((Included(1), Included(5)))), vec![5]);
        assert_eq!(c.flushed_len(), (1, 10));
    }

    #[test]
    fn the_byte_bound_evicts_too() {
        let mut c = LogCache::new(CacheBounds {
            entries_max: 100,
            bytes_max: 25,
        });
        for i in 1..=4 {
            c.append(entry(1, i), 10);
        }
        let evicted = c.flushed(&[id(1, 1), id(1, 2), id(1, 3), id(1, 4)]);
        assert_eq!(evicted.len(), 2);
        assert_eq!(c.flushed_len(), (2, 20));
        assert!(c.read((Included(3), Included(4))).complete);
        assert!(!c.read((Included(2), Included(4))).complete);
    }

    #[test]
    fn ranges_past_the_end_or_unbounded_are_not_complete() {
        let mut c = LogCache::new(CacheBounds::default());
        for i in 1..=3 {
            c.append(entry(1, i), 10);
        }
        assert!(!c.read((Included(1), Included(4))).complete);
        assert!(!c.read((Included(1), Unbounded)).complete);
        assert_eq!(c.read((Included(1), Unbounded)).tail_from, None);
        assert!(!c.read((Included(0), Included(3))).complete);
        assert_eq!(c.read((Included(0), Included(3))).tail_from, Some(1));
        assert!(c.read((Included(1), Included(3))).complete);
    }

    #[test]
    fn truncation_and_purge_forget_entries_and_a_replaced_entry_stays_pending() {
        let mut c = LogCache::new(CacheBounds::default());
        for i in 1..=4 {
            c.append(entry(1, i), 10);
        }
        c.flushed(&[id(1, 1), id(1, 2), id(1, 3)]);
        c.truncate(3);
        assert_eq!(c.flushed_len(), (2, 20));
        assert_eq!(c.last_pending(), None);
        // A new leader's entry at index 3; the writer then reports the old one flushed.
        c.append(entry(2, 3), 10);
        c.flushed(&[id(1, 3)]);
        assert_eq!(c.last_pending(), Some(id(2, 3)));
        let r = c.read((Included(1), Included(3)));
        assert!(r.complete);
        assert_eq!(r.entries[2].log_id, id(2, 3));
        c.purge(2);
        assert_eq!(c.flushed_len(), (0, 0));
        assert!(!c.read((Included(1), Included(3))).complete);
        assert!(c.read((Included(3), Included(3))).complete);
        c.purge(u64::MAX);
        assert_eq!(c.flushed_len(), (0, 0));
    }
}
