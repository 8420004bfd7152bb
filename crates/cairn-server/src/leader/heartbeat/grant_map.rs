//! The region-lease grants by region, as [`super::region_leases::RegionLeaseTable`] keeps them:
//! 16 bytes a region in two vectors sorted by region id, where a hash map took 35 at a million
//! regions (a power-of-two table, at most seven-eighths full). Regions granted for the first
//! time wait in a small hash map and are merged in together, so a heartbeat that brings new
//! regions does not copy the whole table. A heartbeat's regions are looked up in ascending
//! order, each a few places after the last.

use crate::leader::sorted::{merge_sorted, Cursor};
use cairn_sched::IdMap;

/// One region's grant: the holder's place in the table's holders, and when its lease is surely
/// over, in ms after the table's base (rounded up). A grant that ends at the base (0) is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub holder: u32,
    pub over_ms: u32,
}

/// Regions first granted since the last merge are held apart until they are this many, or an
/// eighth of the merged ones ([`GRANTS_RECENT_SHARE_DIVISOR`]), whichever is more.
pub const GRANTS_RECENT_MIN: usize = 4096;
/// See [`GRANTS_RECENT_MIN`]: a merge copies every grant, so it waits for an eighth more.
pub const GRANTS_RECENT_SHARE_DIVISOR: usize = 8;
/// Room for grants is given back once it is more than this many times the grants held (and
/// the grants held are at least [`GRANTS_ROOM_KEPT_MIN`]): after the nodes holding most of them
/// went away.
pub const GRANTS_ROOM_SLACK_MAX: usize = 4;
/// Grants' room kept however few are held.
pub const GRANTS_ROOM_KEPT_MIN: usize = 1024;

#[derive(Debug, Default)]
pub struct GrantMap {
    ids: Vec<u64>,
    grants: Vec<Grant>,
    recent: IdMap<u64, Grant>,
}

impl GrantMap {
    pub fn len(&self) -> usize {
        self.ids.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, region: u64) -> Option<Grant> {
        if let Some(g) = self.recent.get(&region) {
            return Some(*g);
        }
        let at = self.ids.binary_search(&region).ok()?;
        Some(self.grants[at])
    }

    pub fn contains(&self, region: u64) -> bool {
        self.get(region).is_some()
    }

    pub fn insert(&mut self, region: u64, grant: Grant) {
        match self.ids.binary_search(&region) {
            Ok(at) => self.grants[at] = grant,
            Err(_) => {
                self.recent.insert(region, grant);
                self.merge_when_due();
            }
        }
    }

    /// Ends `region`'s grant now: it reads as over, and the next [`GrantMap::retain`] of grants
    /// still running drops it (taking it out of the sorted part at once would copy the rest).
    pub fn end(&mut self, region: u64) {
        if self.recent.remove(&region).is_none() {
            if let Ok(at) = self.ids.binary_search(&region) {
                self.grants[at].over_ms = 0;
            }
        }
    }

    /// Calls `f` with each of `regions` (ascending, no repeats) and its grant if it has one;
    /// `f` returns the grant to hold from now, or None to leave it as it was.
    pub fn update_sorted(
        &mut self,
        regions: &[u64],
        mut f: impl FnMut(u64, Option<Grant>) -> Option<Grant>,
    ) {
        let mut cursor = Cursor::default();
        for &region in regions {
            match cursor.find(&self.ids, region) {
                Ok(at) => {
                    if let Some(g) = f(region, Some(self.grants[at])) {
                        self.grants[at] = g;
                    }
                }
                Err(_) => {
                    let held = self.recent.get(&region).copied();
                    if let Some(g) = f(region, held) {
                        self.recent.insert(region, g);
                    }
                }
            }
        }
        self.merge_when_due();
    }

    /// Every grant, to shift when the base moves.
    pub fn grants_mut(&mut self) -> impl Iterator<Item = &mut Grant> {
        self.grants.iter_mut().chain(self.recent.values_mut())
    }

    /// Keeps the grants `keep` says; gives back the room of many dropped.
    pub fn retain(&mut self, keep: impl Fn(&Grant) -> bool) {
        self.recent.retain(|_, g| keep(g));
        // One walk over both vectors, each grant asked about once.
        let mut kept = 0;
        for at in 0..self.ids.len() {
            if keep(&self.grants[at]) {
                self.ids[kept] = self.ids[at];
                self.grants[kept] = self.grants[at];
                kept += 1;
            }
        }
        self.ids.truncate(kept);
        self.grants.truncate(kept);
        let slack = |capacity: usize, len: usize, min: usize| {
            capacity > GRANTS_ROOM_SLACK_MAX * len.max(min)
        };
        if slack(self.ids.capacity(), kept, GRANTS_ROOM_KEPT_MIN) {
            self.ids.shrink_to_fit();
            self.grants.shrink_to_fit();
        }
        if slack(self.recent.capacity(), self.recent.len(), GRANTS_RECENT_MIN) {
            self.recent.shrink_to_fit();
        }
    }

    fn merge_when_due(&mut self) {
        let due = GRANTS_RECENT_MIN.max(self.ids.len() / GRANTS_RECENT_SHARE_DIVISOR);
        if self.recent.len() < due {
            return;
        }
        let mut new: Vec<(u64, Grant)> = self.recent.drain().collect();
        new.sort_unstable_by_key(|(id, _)| *id);
        merge_sorted(&mut self.ids, &mut self.grants, new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(holder: u32, over_ms: u32) -> Grant {
        Grant { holder, over_ms }
    }

    #[test]
    fn grants_read_back_before_and_after_a_merge() {
        let mut m = GrantMap::default();
        let n = GRANTS_RECENT_MIN as u64 * 3;
        // Every other region one at a time, in descending order, then the rest in one batch.
        for r in (0..n).rev().filter(|r| r % 2 == 0) {
            m.insert(r, g(1, r as u32 + 10));
        }
        assert!(m.ids.len() >= GRANTS_RECENT_MIN, "merged at least once");
        assert!(m.ids.windows(2).all(|w| w[0] < w[1]));
        let odd: Vec<u64> = (0..n).filter(|r| r % 2 == 1).collect();
        let mut seen = Vec::new();
        m.update_sorted(&odd, |r, held| {
            seen.push(held);
            Some(g(2, r as u32 + 10))
        });
        assert!(seen.iter().all(Option::is_none), "new regions have none");
        assert_eq!(m.len(), n as usize);
        for r in 0..n {
            assert_eq!(m.get(r), Some(g(1 + (r % 2) as u32, r as u32 + 10)), "{r}");
        }
        // A renewal in a batch sees the grant it replaces; None leaves it.
        m.update_sorted(&[0, 1, n + 5], |r, held| {
            assert_eq!(held.is_some(), r < n);
            (r == 0).then(|| g(7, 99))
        });
        assert_eq!((m.get(0), m.get(1)), (Some(g(7, 99)), Some(g(2, 11))));
        assert!(!m.contains(n + 5));
    }

    #[test]
    fn an_ended_grant_reads_as_over_and_leaves_at_the_next_sweep() {
        let mut m = GrantMap::default();
        let n = 2 * GRANTS_RECENT_MIN;
        for r in 0..n as u64 {
            m.insert(r, g(1, 500));
        }
        assert_eq!(m.ids.len(), n, "merged twice");
        m.insert(1_000_000, g(2, 500));
        assert!(
            m.recent.contains_key(&1_000_000),
            "held apart until a merge"
        );
        m.end(3);
        m.end(1_000_000);
        assert_eq!(m.get(3), Some(g(1, 0)));
        assert_eq!(m.get(1_000_000), None);
        m.retain(|g| g.over_ms > 100);
        assert_eq!(m.get(3), None);
        assert_eq!(m.len(), n - 1);
        m.retain(|_| false);
        assert_eq!(m.len(), 0);
        assert!(m.ids.capacity() < n, "the room given back");
    }
}
