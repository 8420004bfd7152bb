//! Region leases, the leader's side: which regions a node may write, granted on the answers to
//! its regular heartbeats, and until when the leader must assume a granted lease still holds.
//!
//! A node gets a lease for a region it reports as leader only while the stored route names it the
//! region's active leader; nothing is granted for a region being moved (its route says
//! `downgrading`) or led elsewhere. The node's lease runs from when it *sent* the request, by its
//! own clock; the leader records the grant from when it *answers*, which is later, and adds a
//! margin for clock drift, so the leader never counts a lease as over while the node may still
//! write. A new leader knows nothing of its predecessor's grants: until one lease plus the margin
//! has passed since its term began, it counts every region as possibly leased.
//!
//! Pure: the clock comes in as `now`.

use super::grant_map::{Grant, GrantMap};
use cairn_sched::IdMap;
use std::time::{Duration, Instant};

/// Grants the leader remembers (one per region), at most; beyond it the oldest-expiring are not
/// dropped but new grants are still made and counted as possibly held until the term floor plus
/// a lease (see [`RegionLeaseTable::surely_over`]).
pub const REGION_LEASE_RECORDS_MAX: usize = 4_000_000;
/// Distinct nodes the leader remembers granting a lease to within one term, at most; past it a
/// new node's grants are handled as when the records are full.
pub const REGION_LEASE_HOLDERS_MAX: usize = 1 << 20;

/// The leader's record of the region leases it granted in one term.
#[derive(Debug)]
pub struct RegionLeaseTable {
    duration: Duration,
    margin: Duration,
    /// When the term began: grants of an earlier leader may run until this plus a lease.
    term_started: Instant,
    /// Region → (the holder's place in `holders`, when its lease is surely over by this
    /// leader's clock, in ms after `base`, rounded up). Renewed on every heartbeat of every
    /// leading region. Two `u32`s rather than a node id and an `Instant`, sorted by region
    /// rather than hashed ([`GrantMap`]): a million regions' grants take 16 MB, where a hash
    /// map of node ids and instants took 69 and one of `u32`s 34.
    granted: GrantMap,
    /// The nodes granted a lease this term, each once, by their place in it.
    holders: Vec<u64>,
    /// Each of `holders`' place.
    holder_at: IdMap<u64, u32>,
    /// What the grants' ends count from: the term's start, moved on every 24 days
    /// ([`RegionLeaseTable::after_base`]).
    base: Instant,
    /// When [`RegionLeaseTable::expire`] next sweeps the grants that ran out.
    next_sweep: Option<Instant>,
    /// Set when a grant could not be recorded (the table was full, or a new node came past
    /// [`REGION_LEASE_HOLDERS_MAX`]): from then on every region counts as leased until
    /// `overflow_until`. A grant not recorded leaves the region's earlier record as it was, so
    /// [`RegionLeaseTable::holder`] may name the earlier holder meanwhile, while
    /// [`RegionLeaseTable::free_for`] and [`RegionLeaseTable::surely_over`] answer no for every
    /// region until then.
    overflow_until: Option<Instant>,
}

impl RegionLeaseTable {
    /// A table for a term that began at `term_started`.
    pub fn new(duration: Duration, margin: Duration, term_started: Instant) -> Self {
        RegionLeaseTable {
            duration,
            margin,
            term_started,
            granted: GrantMap::default(),
            holders: Vec::new(),
            holder_at: IdMap::default(),
            base: term_started,
            next_sweep: None,
            overflow_until: None,
        }
    }

    /// How long a lease lets a node write.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// `at` as ms after the base, rounded up (a lease end read back is never earlier than it
    /// was). Moves the base on once `at` is more than half a `u32` of ms (24 days) after it:
    /// grants that ended before the new base read as ending at it, which is in the past.
    fn after_base(&mut self, at: Instant) -> u32 {
        let ms = |d: Duration| d.as_nanos().div_ceil(1_000_000);
        let half = u32::MAX as u128 / 2;
        let after = ms(at.saturating_duration_since(self.base));
        if after <= half {
            return after as u32;
        }
        let new_base = at - Duration::from_millis(half as u64);
        let shift = ms(new_base.saturating_duration_since(self.base));
        for g in self.granted.grants_mut() {
            g.over_ms = (g.over_ms as u128).saturating_sub(shift) as u32;
        }
        self.base = new_base;
        half as u32
    }

    /// The instant `after_base_ms` after the base.
    fn at(&self, after_base_ms: u32) -> Instant {
        self.base + Duration::from_millis(after_base_ms as u64)
    }

    /// Records that `node` was granted `region` on an answer sent at `now`.
    pub fn grant(&mut self, region: u64, node: u64, now: Instant) {
        let over = now + self.duration + self.margin;
        let full = self.granted.len() >= REGION_LEASE_RECORDS_MAX && !self.granted.contains(region);
        let Some(holder) = self.place_of(node).filter(|_| !full) else {
            self.overflow(over);
            return;
        };
        let over_ms = self.after_base(over);
        self.granted.insert(region, Grant { holder, over_ms });
    }

    /// Grants `node` each of `regions` no other node's lease may still hold at `now` (a region
    /// just moved away from one), on a heartbeat answered at `now`. Leaves in `regions`, sorted,
    /// the ones granted: what the node is told it holds.
    pub fn grant_all(&mut self, node: u64, regions: &mut Vec<u64>, now: Instant) {
        regions.sort_unstable();
        regions.dedup();
        let over = now + self.duration + self.margin;
        // First: it may move the base the other figures count from.
        let over_ms = self.after_base(over);
        let now_ms = now.saturating_duration_since(self.base).as_millis();
        let place = self.place_of(node);
        let mut count = self.granted.len();
        let mut overflow = false;
        let mut granted = Vec::with_capacity(regions.len());
        self.granted.update_sorted(regions, |region, held| {
            // A grant runs while its end, rounded up to the ms, is after now.
            if held.is_some_and(|g| g.over_ms as u128 > now_ms && Some(g.holder) != place) {
                return None;
            }
            granted.push(region);
            let new = held.is_none();
            match place {
                Some(holder) if !(new && count >= REGION_LEASE_RECORDS_MAX) => {
                    count += usize::from(new);
                    Some(Grant { holder, over_ms })
                }
                _ => {
                    overflow = true;
                    None
                }
            }
        });
        if overflow {
            self.overflow(over);
        }
        *regions = granted;
    }

    /// `node`'s place in the holders, given one if it has none and there is room.
    fn place_of(&mut self, node: u64) -> Option<u32> {
        if let Some(at) = self.holder_at.get(&node) {
            return Some(*at);
        }
        if self.holders.len() >= REGION_LEASE_HOLDERS_MAX {
            return None;
        }
        let at = self.holders.len() as u32;
        self.holders.push(node);
        self.holder_at.insert(node, at);
        Some(at)
    }

    /// A grant could not be recorded: every region counts as leased until it would have ended.
    fn overflow(&mut self, over: Instant) {
        self.overflow_until = Some(self.overflow_until.map_or(over, |o| o.max(over)));
    }

    /// The node this leader last granted `region` to and until when that lease may hold, if it
    /// may still hold at `now`.
    pub fn holder(&self, region: u64, now: Instant) -> Option<(u64, Instant)> {
        let g = self.granted.get(region)?;
        let over = self.at(g.over_ms);
        (over > now).then_some((self.holders[g.holder as usize], over))
    }

    /// Whether no node can hold a valid lease for `region` at `now`: every lease this leader
    /// granted has run out (with the margin), and so has any a predecessor could have granted.
    /// Only then may another node be made its writable leader (unless the holder acknowledged a
    /// downgrade).
    pub fn surely_over(&self, region: u64, now: Instant) -> bool {
        self.free_of_others(region, None, now)
    }

    /// Whether `node` may be made the writable leader of `region` at `now`: any lease an
    /// earlier leader could have granted has run out, and so has every lease this leader granted
    /// to another node.
    pub fn free_for(&self, region: u64, node: u64, now: Instant) -> bool {
        self.free_of_others(region, Some(node), now)
    }

    /// No lease on `region` can hold at `now` but one of `node`'s.
    fn free_of_others(&self, region: u64, node: Option<u64>, now: Instant) -> bool {
        let predecessors = self.term_started + self.duration + self.margin;
        now >= predecessors
            && self
                .holder(region, now)
                .is_none_or(|(holder, _)| Some(holder) == node)
            && self.overflow_until.is_none_or(|o| now >= o)
    }

    /// Forgets the grant of `region` to `node`: the node acknowledged giving the region up (a
    /// downgrade or a close), so it holds no lease for it any more.
    pub fn release(&mut self, region: u64, node: u64) {
        let Some(holder) = self.holder_at.get(&node) else {
            return;
        };
        if self
            .granted
            .get(region)
            .is_some_and(|g| g.holder == *holder)
        {
            self.granted.end(region);
        }
    }

    /// Forgets grants that have run out (called on the hub's tick; keeps the table bounded by
    /// the regions leased within one and a half leases). Sweeps at most every half lease: a
    /// sweep walks every grant, a million of them at a million regions, and the hub ticks
    /// several times a lease.
    pub fn expire(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        self.next_sweep = Some(now + self.duration / 2);
        let base = self.base;
        // Gives back the room of grants that ended for good (their nodes gone).
        self.granted
            .retain(|g| base + Duration::from_millis(g.over_ms as u64) > now);
        if self.overflow_until.is_some_and(|o| now >= o) {
            self.overflow_until = None;
        }
    }

    /// Grants remembered now.
    pub fn len(&self) -> usize {
        self.granted.len()
    }

    /// Whether no grant is remembered.
    pub fn is_empty(&self) -> bool {
        self.granted.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(4);
    const MARGIN: Duration = Duration::from_millis(500);

    /// A table for a term begun two leases ago, and now.
    fn term_under_way() -> (RegionLeaseTable, Instant) {
        let t0 = Instant::now();
        (RegionLeaseTable::new(LEASE, MARGIN, t0), t0 + 2 * LEASE)
    }

    #[test]
    fn a_new_leader_waits_out_its_predecessors_leases() {
        let t0 = Instant::now();
        let table = RegionLeaseTable::new(LEASE, MARGIN, t0);
        assert!(!table.surely_over(7, t0));
        assert!(!table.surely_over(7, t0 + LEASE));
        assert!(table.surely_over(7, t0 + LEASE + MARGIN));
    }

    #[test]
    fn a_grant_holds_for_the_lease_plus_the_margin() {
        let (mut table, later) = term_under_way();
        table.grant(7, 1001, later);
        assert_eq!(table.holder(7, later), Some((1001, later + LEASE + MARGIN)));
        assert!(!table.surely_over(7, later + LEASE));
        assert!(table.surely_over(7, later + LEASE + MARGIN));
        assert!(table.surely_over(8, later), "another region is free");
        assert!(table.free_for(7, 1001, later), "the holder may keep it");
        assert!(!table.free_for(7, 1002, later), "another node must wait");
        assert!(table.free_for(7, 1002, later + LEASE + MARGIN));
        // A renewal moves the end.
        table.grant(7, 1001, later + LEASE);
        assert!(!table.surely_over(7, later + LEASE + MARGIN));
        table.expire(later + 3 * LEASE);
        assert!(table.is_empty());
    }

    #[test]
    fn run_out_grants_are_swept_at_most_every_half_lease_and_never_count() {
        let t0 = Instant::now();
        let mut table = RegionLeaseTable::new(LEASE, MARGIN, t0);
        table.grant(7, 1001, t0);
        table.expire(t0 + LEASE);
        assert_eq!(table.len(), 1, "not run out yet");
        let over = t0 + LEASE + MARGIN;
        table.expire(over);
        assert_eq!(
            table.len(),
            1,
            "within half a lease of the last sweep: kept"
        );
        assert_eq!(table.holder(7, over), None, "but run out all the same");
        table.expire(t0 + LEASE + LEASE / 2);
        assert!(table.is_empty());
    }

    #[test]
    fn lease_ends_read_back_rounded_up_and_survive_a_moved_base() {
        let t0 = Instant::now();
        let mut table = RegionLeaseTable::new(LEASE, MARGIN, t0);
        let odd = t0 + Duration::from_micros(1_500);
        table.grant(7, 1001, odd);
        let (_, over) = table.holder(7, odd).unwrap();
        assert!(over >= odd + LEASE + MARGIN, "never earlier than granted");
        assert!(over < odd + LEASE + MARGIN + Duration::from_millis(1));
        // Thirty days into the term: past half of what a u32 of ms holds after the base.
        let late = t0 + Duration::from_secs(30 * 24 * 3600);
        table.grant(8, 1002, late);
        assert_eq!(table.holder(8, late), Some((1002, late + LEASE + MARGIN)));
        assert_eq!(table.holder(7, late), None, "the early grant stays over");
        assert!(!table.free_for(8, 1001, late + LEASE));
        assert!(table.free_for(8, 1001, late + LEASE + MARGIN));
        table.grant(8, 1002, late + LEASE);
        assert_eq!(
            table.holder(8, late + LEASE),
            Some((1002, late + 2 * LEASE + MARGIN))
        );
    }

    #[test]
    fn a_released_grant_frees_the_region_but_not_a_new_term() {
        let (mut table, later) = term_under_way();
        table.grant(7, 1001, later);
        table.release(7, 1002);
        assert!(!table.free_for(7, 1002, later), "only the holder releases");
        table.release(7, 1001);
        assert!(table.free_for(7, 1002, later));
        // Within a new term's floor a release frees nothing: an earlier leader's grants count.
        let mut fresh = RegionLeaseTable::new(LEASE, MARGIN, later);
        fresh.grant(7, 1001, later);
        fresh.release(7, 1001);
        assert!(!fresh.free_for(7, 1002, later + LEASE));
        assert!(fresh.free_for(7, 1002, later + LEASE + MARGIN));
    }

    #[test]
    fn each_region_reads_back_the_node_it_was_granted_to() {
        let (mut table, later) = term_under_way();
        for region in 0..300u64 {
            table.grant(region, 5000 + region % 7, later);
        }
        // A region handed to another node (after the first's release) reads back the new one.
        table.release(3, 5003);
        table.grant(3, 5006, later);
        for region in 0..300u64 {
            let want = if region == 3 { 5006 } else { 5000 + region % 7 };
            assert_eq!(table.holder(region, later).map(|(n, _)| n), Some(want));
            assert!(table.free_for(region, want, later));
            assert!(!table.free_for(region, want + 1, later));
        }
        // A node never granted anything releases nothing.
        table.release(8, 9999);
        assert_eq!(table.holder(8, later).map(|(n, _)| n), Some(5001));
    }

    #[test]
    fn a_heartbeat_is_granted_the_regions_no_other_node_may_hold() {
        let (mut table, later) = term_under_way();
        table.grant(5, 1001, later);
        let mut led = vec![7, 5, 6, 7];
        table.grant_all(1002, &mut led, later);
        assert_eq!(led, [6, 7], "5 is still 1001's; sorted, once each");
        for r in [6, 7] {
            assert_eq!(table.holder(r, later), Some((1002, later + LEASE + MARGIN)));
        }
        assert_eq!(table.holder(5, later).map(|(n, _)| n), Some(1001));
        // The holder renews its own; the other waits until the lease is surely over.
        let renew = later + LEASE / 2;
        let mut own = vec![5, 6];
        table.grant_all(1001, &mut own, renew);
        assert_eq!(own, [5]);
        assert_eq!(table.holder(5, renew), Some((1001, renew + LEASE + MARGIN)));
        let over = renew + LEASE + MARGIN;
        let mut moved = vec![5];
        table.grant_all(1002, &mut moved, over - Duration::from_millis(1));
        assert!(moved.is_empty(), "a ms before the end it may still hold");
        moved.push(5);
        table.grant_all(1002, &mut moved, over);
        assert_eq!(moved, [5]);
        assert_eq!(table.holder(5, over).map(|(n, _)| n), Some(1002));
        // A released grant is free at once.
        table.release(5, 1002);
        let mut back = vec![5];
        table.grant_all(1001, &mut back, over);
        assert_eq!(back, [5]);
    }
}
