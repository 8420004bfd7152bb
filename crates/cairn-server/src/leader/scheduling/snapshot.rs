//! The scheduler's view of the cluster, built on the leader for one pass: datanodes from the
//! registry (schedulable: alive, connected, not draining, not judged failed), regions from the
//! stored routes, and each region's load smoothed over its last heartbeats ([`RegionLoads`]).
//! The samples kept for smoothing are also the region's load history that `GetRegionStats`
//! serves.
//!
//! Routes are decoded once ([`RouteViews`]): each pass reads and decodes just the routes
//! written since the last one. A pass reads the regions where they lie ([`LeaderRegions`]): the
//! routes for where each region lives, the load windows (one per routed region, in the same
//! order) for its load; nothing is copied per region.

use crate::leader::heartbeat::registry::NodeState;
use crate::leader::heartbeat::reported::LedLoad;
use crate::leader::node::Node;
use crate::leader::procedure::maintenance;
use crate::leader::scheduling::routes::RouteViews;
use crate::leader::sorted::{merge_sorted, Cursor};
use cairn_meta::DrainMode;
use cairn_proto::cairnpb::NodeRole;
use cairn_sched::{
    ClusterSnapshot, DrainKind, NodeIndex, NodeView, RegionLoad, RegionRef, RegionSource, Regions,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;

/// Heartbeat samples of a region's load kept to smooth it: a moment's burst moves nothing, a
/// lasting change shows within a few heartbeats. Also the length of the region's load history
/// as served (kept no longer: at 100,000 regions each sample costs 1 MB of leader memory).
pub const REGION_LOAD_SAMPLES_MAX: usize = 6;

/// One heartbeat's report of a region's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSample {
    /// When the leader received the report, Unix ms by its clock.
    pub at_ms: u64,
    pub wcus: u32,
    pub rcus: u32,
}

/// One report of a region's load, as taken from a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    pub region_id: u64,
    /// When the leader received it, Unix ms.
    pub at_ms: u64,
    pub wcus: u32,
    pub rcus: u32,
    pub bytes: u64,
}

impl Reported {
    pub fn of(region_id: u64, stat: &LedLoad, at_ms: u64) -> Self {
        Reported {
            region_id,
            at_ms,
            wcus: stat.wcus,
            rcus: stat.rcus,
            bytes: stat.approximate_bytes,
        }
    }
}

/// How far before the first report [`RegionLoads`] puts its base time, so that reports a little
/// older (a previous leader's summary) still read back at their own time.
const LOAD_BASE_LEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// The longest silence, in ms, between two kept samples of a region: each sample but the
/// newest keeps its time as a `u16` of ms before the next one. A report that comes later than
/// this after the region's newest sample starts its history anew, since the older samples no
/// longer describe its load. Above a datanode's longest heartbeat interval (60 s), so a region
/// reported on every heartbeat keeps its whole window.
pub const REGION_LOAD_GAP_MAX_MS: u32 = u16::MAX as u32;

/// One region's recent load, newest sample first: 72 bytes, where six samples with their own
/// times took 88.
#[derive(Debug, Clone, Default)]
struct LoadWindow {
    /// Samples past `len` are 0, so a sum over all of them is the kept samples' sum.
    wcus: [u32; REGION_LOAD_SAMPLES_MAX],
    rcus: [u32; REGION_LOAD_SAMPLES_MAX],
    /// When the newest sample was received, in ms after [`RegionLoads`]' base.
    newest_after_base_ms: u32,
    /// `gaps_ms[i]`: how long before sample `i` sample `i + 1` was received.
    gaps_ms: [u16; REGION_LOAD_SAMPLES_MAX - 1],
    len: u8,
    /// The oldest kept sample is the previous leader's smoothed load (see
    /// [`RegionLoads::seed_all`]).
    seeded: bool,
    bytes: u64,
}

impl LoadWindow {
    /// Takes in one report, received `after_base_ms` after the loads' base time. A report
    /// received before the newest sample (two nodes' reports of one region in one pass) reads
    /// as received with it.
    fn observe(&mut self, r: &Reported, after_base_ms: u32) {
        let gap = after_base_ms.saturating_sub(self.newest_after_base_ms);
        if self.len > 0 && gap > REGION_LOAD_GAP_MAX_MS {
            *self = LoadWindow::default();
        }
        if self.len > 0 {
            if self.len as usize == REGION_LOAD_SAMPLES_MAX {
                // The oldest leaves, and with it a seeded sample.
                self.seeded = false;
            }
            self.wcus.copy_within(..REGION_LOAD_SAMPLES_MAX - 1, 1);
            self.rcus.copy_within(..REGION_LOAD_SAMPLES_MAX - 1, 1);
            self.gaps_ms.copy_within(..REGION_LOAD_SAMPLES_MAX - 2, 1);
            self.gaps_ms[0] = gap as u16;
            self.newest_after_base_ms += gap;
        } else {
            self.newest_after_base_ms = after_base_ms;
        }
        self.wcus[0] = r.wcus;
        self.rcus[0] = r.rcus;
        self.len = (self.len + 1).min(REGION_LOAD_SAMPLES_MAX as u8);
        self.bytes = r.bytes;
    }

    /// Mean (wcus, rcus) over the kept samples, and the last reported size.
    fn smoothed(&self) -> (f64, f64, u64) {
        let n = self.len.max(1) as f64;
        // Over all six, not `..len`: a fixed length the compiler sums without a loop.
        let w: u64 = self.wcus.iter().map(|w| *w as u64).sum();
        let r: u64 = self.rcus.iter().map(|r| *r as u64).sum();
        (w as f64 / n, r as f64 / n, self.bytes)
    }

    /// [`LoadWindow::smoothed`] as a scheduler reads it.
    fn region_load(&self) -> RegionLoad {
        let (wcus, rcus, approximate_bytes) = self.smoothed();
        RegionLoad {
            approximate_bytes,
            wcus,
            rcus,
        }
    }
}

/// The smoothed load of every routed region, from its leader's heartbeats.
///
/// Kept as two parallel vectors sorted by region id, not a hash map: a pass reads every region's
/// load in route order, which is region order, so it walks them front to back. A map of a
/// million regions (120 MB) looked up a region at a time cost a cache miss each, 150–200 ms a
/// pass (BENCHMARKS.md). Each pass's [`build`] leaves exactly one window per region the routes
/// hold, in their order (an empty one for a region not reported yet), so that region `i` of the
/// routes is window `i` here ([`LeaderRegions`]).
#[derive(Debug, Default, Clone)]
pub struct RegionLoads {
    ids: Vec<u64>,
    loads: Vec<LoadWindow>,
    /// The routes' generation ([`RouteViews::generation`]) the windows were last aligned with
    /// ([`RegionLoads::align`]).
    aligned_with: Option<u64>,
    /// The nodes holding a region of those routes, each once.
    holders: Vec<u64>,
    /// The Unix ms that samples' times count from; set by the first report (less
    /// [`LOAD_BASE_LEAD_MS`]) and moved on when a report is too late for a `u32` of ms (49 days)
    /// to half that range before the report.
    base_ms: Option<u64>,
}

impl RegionLoads {
    fn find(&self, region_id: u64) -> Option<&LoadWindow> {
        let i = self.ids.binary_search(&region_id).ok()?;
        Some(&self.loads[i])
    }

    /// Makes sure reports received from `oldest_ms` to `newest_ms` (Unix ms) have a time after
    /// the base that fits a `u32`: sets the base, or moves it on (every 24 days). Samples from
    /// before a moved base (kept 24 days without a newer report) then read as received at the
    /// base.
    fn make_room(&mut self, oldest_ms: u64, newest_ms: u64) {
        let base = *self
            .base_ms
            .get_or_insert(oldest_ms.saturating_sub(LOAD_BASE_LEAD_MS));
        if newest_ms.saturating_sub(base) <= u32::MAX as u64 {
            return;
        }
        let new_base = newest_ms - u32::MAX as u64 / 2;
        let shift = new_base - base;
        for l in &mut self.loads {
            l.newest_after_base_ms = (l.newest_after_base_ms as u64).saturating_sub(shift) as u32;
        }
        self.base_ms = Some(new_base);
    }

    /// `at_ms` as a time after the base ([`RegionLoads::make_room`] made room for it).
    fn after_base(&self, at_ms: u64) -> u32 {
        let base = self.base_ms.unwrap_or(0);
        at_ms.saturating_sub(base).min(u32::MAX as u64) as u32
    }

    /// Takes in reports of regions, in any order.
    pub fn observe_all(&mut self, mut reports: Vec<Reported>) {
        let (Some(oldest), Some(newest)) = (
            reports.iter().map(|r| r.at_ms).min(),
            reports.iter().map(|r| r.at_ms).max(),
        ) else {
            return;
        };
        self.make_room(oldest, newest);
        // Stable: two reports of one region are taken in the order they came.
        reports.sort_by_key(|r| r.region_id);
        let mut cursor = Cursor::default();
        let mut new: Vec<(u64, LoadWindow)> = Vec::new();
        for r in &reports {
            let at = self.after_base(r.at_ms);
            match cursor.find(&self.ids, r.region_id) {
                Ok(i) => self.loads[i].observe(r, at),
                Err(_) => match new.last_mut() {
                    Some((id, l)) if *id == r.region_id => l.observe(r, at),
                    _ => {
                        let mut l = LoadWindow::default();
                        l.observe(r, at);
                        new.push((r.region_id, l));
                    }
                },
            }
        }
        self.insert_sorted(new);
    }

    /// Adds regions not held yet, `new` sorted by id: one merge.
    fn insert_sorted(&mut self, new: Vec<(u64, LoadWindow)>) {
        if !new.is_empty() {
            self.aligned_with = None;
        }
        merge_sorted(&mut self.ids, &mut self.loads, new);
    }

    /// Seeds regions' loads (a new leader, from the persisted summary written at `at_ms`): each
    /// (region, wcus, rcus) as one sample, marked as restored in the history. Only into a region
    /// with no samples.
    pub fn seed_all(&mut self, seeds: Vec<(u64, f64, f64)>, at_ms: u64) {
        self.make_room(at_ms, at_ms);
        let at = self.after_base(at_ms);
        let mut new: Vec<(u64, LoadWindow)> = Vec::new();
        for (region_id, wcus, rcus) in seeds {
            if self.find(region_id).is_some_and(|l| l.len > 0) {
                continue;
            }
            let report = Reported {
                region_id,
                at_ms,
                // Saturating: a load beyond u32::MAX reads as u32::MAX, as reports do.
                wcus: wcus.max(0.0) as u32,
                rcus: rcus.max(0.0) as u32,
                bytes: 0,
            };
            let mut l = LoadWindow::default();
            l.observe(&report, at);
            l.seeded = true;
            new.push((region_id, l));
        }
        new.sort_by_key(|(id, _)| *id);
        new.dedup_by_key(|(id, _)| *id);
        // A region held with no samples is replaced, not added twice.
        let held: Vec<usize> = new
            .iter()
            .filter_map(|(id, _)| self.ids.binary_search(id).ok())
            .collect();
        for i in held.into_iter().rev() {
            self.ids.remove(i);
            self.loads.remove(i);
        }
        self.insert_sorted(new);
    }

    /// Mean (wcus, rcus) over the kept samples, and the last reported size.
    pub fn smoothed(&self, region_id: u64) -> (f64, f64, u64) {
        self.find(region_id)
            .map_or((0.0, 0.0, 0), LoadWindow::smoothed)
    }

    /// The kept samples of a region, oldest first, each with whether it is a seeded one
    /// (restored from the previous leader's summary); at most [`REGION_LOAD_SAMPLES_MAX`].
    pub fn history(&self, region_id: u64) -> Vec<(LoadSample, bool)> {
        let Some(l) = self.find(region_id) else {
            return Vec::new();
        };
        let len = l.len as usize;
        let base = self.base_ms.unwrap_or(0);
        // Each sample's time: the newest's, less the gaps after it.
        let mut at = base + l.newest_after_base_ms as u64;
        let mut out: Vec<(LoadSample, bool)> = (0..len)
            .map(|i| {
                if i > 0 {
                    at = at.saturating_sub(l.gaps_ms[i - 1] as u64).max(base);
                }
                let sample = LoadSample {
                    at_ms: at,
                    wcus: l.wcus[i],
                    rcus: l.rcus[i],
                };
                (sample, l.seeded && i == len - 1)
            })
            .collect();
        out.reverse();
        out
    }

    /// The `max` regions with the most smoothed load: (region, wcus, rcus).
    pub fn hottest(&self, max: usize) -> Vec<(u64, f64, f64)> {
        let mut all: Vec<(u64, f64, f64)> = self
            .ids
            .iter()
            .zip(&self.loads)
            .map(|(r, l)| {
                let (w, rd, _) = l.smoothed();
                (*r, w, rd)
            })
            .filter(|(_, w, r)| *w > 0.0 || *r > 0.0)
            .collect();
        all.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
        all.truncate(max);
        all
    }

    /// Keeps the regions `keep[i]` says (parallel to the ids).
    fn retain(&mut self, keep: &[bool]) {
        self.aligned_with = None;
        let mut k = keep.iter();
        self.ids.retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        self.loads.retain(|_| *k.next().unwrap_or(&false));
    }
}

/// The Unix ms of instant `at`, by a (monotonic, Unix ms) pair read together at one moment.
/// An instant after that moment reads as the moment itself.
pub fn unix_ms_at(at: Instant, now: (Instant, u64)) -> u64 {
    let ago = now.0.saturating_duration_since(at).as_millis() as u64;
    now.1.saturating_sub(ago)
}

/// The snapshot of one pass (limits and busy regions are the operator table's to fill).
pub fn build(
    node: &Node,
    loads_kept: &mut Arc<RegionLoads>,
    routes: Arc<RouteViews>,
) -> Result<ClusterSnapshot, Status> {
    // In place, unless a pass still reads them (a dry-run plan beside a pass): then a copy.
    let loads = Arc::make_mut(loads_kept);
    let failed: HashSet<u64> = node.heartbeats.failed_nodes().into_iter().collect();
    let drained: HashMap<u64, DrainMode> = maintenance::drains(node)?
        .iter()
        .map(|d| (d.node_id, d.mode))
        .collect();
    // The connection table before the registry: the hub takes their locks in that order.
    let connected = node.heartbeats.connected_ids();
    let now = (node.heartbeats.now(), node.clock.unix_ms());
    let mut nodes: BTreeMap<u64, NodeView> = BTreeMap::new();
    // New reports' leader stats, copied out under the registry's lock (every heartbeat waits on
    // it) and folded into the loads after it is released.
    let mut reports: Vec<Reported> = Vec::new();
    {
        let mut registry = node.heartbeats.registry();
        for e in connected.iter().filter_map(|id| registry.get(*id)) {
            let id = e.identity.id;
            if e.identity.role != NodeRole::Datanode as i32 {
                continue;
            }
            let mut view = NodeView::new(id);
            view.labels = e.identity.labels.clone().into_iter().collect();
            view.schedulable = e.state() == NodeState::Alive
                && !e.draining
                && !failed.contains(&id)
                && !drained.contains_key(&id);
            // Failover or the drain moves its leaders; evicting leaders may leave some.
            view.going = failed.contains(&id) || drained.get(&id) == Some(&DrainMode::Drain);
            view.failed = failed.contains(&id);
            // A drained node judged failed is failover's.
            view.drain = match drained.get(&id) {
                _ if failed.contains(&id) => None,
                Some(DrainMode::Drain) => Some(DrainKind::All),
                Some(DrainMode::EvictLeaders) => Some(DrainKind::Leaders),
                None => None,
            };
            nodes.insert(id, view);
        }
        // Every report's loads, the nodes' that went away since included (a report is a report,
        // and one not taken would be held until its node is judged down). The latest report,
        // not the latest request: a replies-only request in between reports nothing new. Its
        // loads are taken, so each counts once however many passes see the report.
        let reported: Vec<(u64, Instant)> = registry
            .nodes()
            .filter_map(|e| Some((e.identity.id, e.latest()?.at)))
            .collect();
        for (id, at) in reported {
            let at_ms = unix_ms_at(at, now);
            let taken = registry.take_loads(id);
            reports.extend(taken.map(|(region, s)| Reported::of(region, &s, at_ms)));
        }
    }
    loads.align(&routes);
    // Regions on nodes not connected: their holders are known, not schedulable.
    for n in &loads.holders {
        if !nodes.contains_key(n) {
            // Cut off: failover moves its leaders unless it comes back first.
            let view = NodeView {
                schedulable: false,
                going: true,
                // Judged once the grace after this leader's start is over.
                failed: failed.contains(n),
                ..NodeView::new(*n)
            };
            nodes.insert(*n, view);
        }
    }
    // Only regions a route holds, which now have a window each: reports of others (a departed
    // node's, a region not created yet) would be dropped at the next pass anyway, and ten
    // thousand nodes registering at once report millions.
    reports.sort_by_key(|r| r.region_id);
    let mut cursor = Cursor::default();
    reports.retain(|r| cursor.find(&loads.ids, r.region_id).is_ok());
    loads.observe_all(reports);
    let regions = LeaderRegions {
        routes,
        loads: loads_kept.clone(),
    };
    Ok(ClusterSnapshot {
        now_ms: node.clock.unix_ms(),
        nodes: nodes.into_values().collect(),
        regions: Regions::shared(Arc::new(regions)),
        spread_label: node.config.placement_spread_label.clone(),
        followers_per_region: node.config.region_followers as usize,
        ..ClusterSnapshot::default()
    })
}

impl RegionLoads {
    /// Leaves exactly one window per region `routes` hold, in their order: the windows of
    /// regions gone from them dropped, an empty one added for each region not reported yet;
    /// and notes every node holding one ([`RegionLoads::holders`]). Both lists are in region
    /// order: one walk, and none while the routes are the ones last aligned with (a walk over
    /// a million regions' routes, each table's in an allocation of its own, costs tens of
    /// milliseconds in cache misses).
    fn align(&mut self, routes: &RouteViews) {
        if self.aligned_with == Some(routes.generation()) {
            return;
        }
        let mut cursor = Cursor::default();
        let mut matched = vec![false; self.ids.len()];
        let mut missing: Vec<(u64, LoadWindow)> = Vec::new();
        let mut holders = NodeIndex::default();
        self.holders.clear();
        for r in routes.regions() {
            for n in std::iter::once(r.leader).chain(r.followers().iter().copied()) {
                if holders.insert(n, 0) {
                    self.holders.push(n);
                }
            }
            match cursor.find(&self.ids, r.region_id) {
                Ok(i) => matched[i] = true,
                Err(_) => missing.push((r.region_id, LoadWindow::default())),
            }
        }
        if matched.contains(&false) {
            self.retain(&matched);
        }
        self.insert_sorted(missing);
        self.aligned_with = Some(routes.generation());
    }
}

/// A pass's regions, read where the leader keeps them: region `i` is the `i`th region of the
/// routes (for where it lives) and window `i` of the loads (for its id and load), which
/// [`RegionLoads::align`] made the same region. Both are shared, not copied: a new pass's
/// [`build`] changes the loads in place once this one is dropped (a copy, if it is not).
#[derive(Debug)]
pub struct LeaderRegions {
    routes: Arc<RouteViews>,
    loads: Arc<RegionLoads>,
}

impl RegionSource for LeaderRegions {
    fn len(&self) -> usize {
        self.loads.ids.len()
    }

    fn region_id(&self, i: usize) -> u64 {
        self.loads.ids[i]
    }

    fn load(&self, i: usize) -> RegionLoad {
        self.loads.loads[i].region_load()
    }

    fn holders(&self, i: usize) -> (u64, &[u64]) {
        // Every id the loads hold is a routed region's (aligned); a leader no node has else.
        self.routes
            .region(self.loads.ids[i])
            .map_or((u64::MAX, &[][..]), |r| (r.leader, &r.followers()[..]))
    }

    fn walk(&self, f: &mut dyn FnMut(usize, RegionRef<'_>)) {
        let routed = self.routes.regions().zip(&self.loads.loads);
        for (i, (r, load)) in routed.enumerate() {
            let view = RegionRef {
                region_id: r.region_id,
                leader: r.leader,
                followers: r.followers(),
                load: load.region_load(),
            };
            f(i, view);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report of `region_id` at `at_ms`: `wcus`, half as many rcus, 100 bytes.
    fn stat(region_id: u64, wcus: u32, at_ms: u64) -> Reported {
        let load = LedLoad {
            wcus,
            rcus: wcus / 2,
            approximate_bytes: 100,
        };
        Reported::of(region_id, &load, at_ms)
    }

    impl RegionLoads {
        fn observe(&mut self, (region_id, wcus): (u64, u32), at_ms: u64) {
            self.observe_all(vec![stat(region_id, wcus, at_ms)]);
        }

        fn seed(&mut self, region_id: u64, wcus: f64, rcus: f64, at_ms: u64) {
            self.seed_all(vec![(region_id, wcus, rcus)], at_ms);
        }
    }

    #[test]
    fn reports_in_any_order_land_on_their_regions_and_stay_sorted() {
        let mut l = RegionLoads::default();
        let batch = |ids: &[u64], w: u64, at: u64| -> Vec<Reported> {
            ids.iter().map(|r| stat(*r, w as u32, at)).collect()
        };
        l.observe_all(batch(&[30, 10, 20], 4, 1));
        // New regions between held ones, a region reported twice, held ones again.
        let mut second = batch(&[25, 5, 30, 35], 8, 2);
        second.push(stat(25, 12, 3));
        l.observe_all(second);
        assert_eq!(l.ids, [5, 10, 20, 25, 30, 35]);
        assert_eq!(l.smoothed(25).0, 10.0, "both reports, in order");
        assert_eq!(l.smoothed(30).0, 6.0);
        assert_eq!(l.smoothed(10).0, 4.0);
        l.retain(&[true, false, true, true, false, true]);
        assert_eq!(l.ids, [5, 20, 25, 35]);
        assert_eq!(l.loads.len(), 4);
        assert_eq!(l.smoothed(35).0, 8.0);
        assert_eq!(l.smoothed(30), (0.0, 0.0, 0));
    }

    #[test]
    fn load_is_the_mean_of_the_last_samples_and_history_is_oldest_first() {
        let mut l = RegionLoads::default();
        assert_eq!(l.smoothed(1), (0.0, 0.0, 0));
        l.observe((1, 10), 1);
        l.observe((1, 20), 2);
        assert_eq!(l.smoothed(1), (15.0, 7.5, 100));
        for w in 0..REGION_LOAD_SAMPLES_MAX as u64 {
            l.observe((1, 100 + w as u32), 10 + w);
        }
        let h: Vec<u32> = l.history(1).iter().map(|s| s.0.wcus).collect();
        assert_eq!(
            h,
            [100, 101, 102, 103, 104, 105],
            "the two old samples left"
        );
        let at: Vec<u64> = l.history(1).iter().map(|s| s.0.at_ms).collect();
        assert_eq!(at, [10, 11, 12, 13, 14, 15]);
        assert_eq!(l.smoothed(1).0, 102.5);
        l.observe((2, 1), 20);
        assert_eq!(l.hottest(1), [(1, 102.5, 51.0)]);
    }

    #[test]
    fn a_seeded_sample_is_marked_until_it_leaves_the_window() {
        let mut l = RegionLoads::default();
        l.seed(1, 40.0, 20.0, 500);
        assert_eq!(
            l.history(1),
            [(
                LoadSample {
                    at_ms: 500,
                    wcus: 40,
                    rcus: 20
                },
                true
            )]
        );
        // Seeding a region that has samples changes nothing.
        l.seed(1, 1.0, 1.0, 600);
        assert_eq!(l.history(1).len(), 1);
        for i in 1..REGION_LOAD_SAMPLES_MAX as u64 {
            l.observe((1, 10), 1000 + i);
        }
        let h = l.history(1);
        assert_eq!(h.len(), REGION_LOAD_SAMPLES_MAX);
        assert!(h[0].1 && h[1..].iter().all(|s| !s.1), "{h:?}");
        assert_eq!(
            l.smoothed(1).0,
            (40.0 + 10.0 * 5.0) / 6.0,
            "smoothed over 6"
        );
        l.observe((1, 10), 2000);
        assert!(l.history(1).iter().all(|s| !s.1), "the seeded sample left");
        assert_eq!(l.smoothed(1).0, 10.0);
    }

    #[test]
    fn sample_times_read_back_as_reported_across_a_moved_base() {
        let mut l = RegionLoads::default();
        let t0 = 1_767_225_600_123;
        l.observe((1, 10), t0);
        // A previous leader's summary from an hour before the first report.
        l.seed(2, 5.0, 5.0, t0 - 3_600_000);
        assert_eq!(l.history(1)[0].0.at_ms, t0);
        assert_eq!(l.history(2)[0].0.at_ms, t0 - 3_600_000);
        // Fifty days on: past what a u32 of ms after the first base holds.
        let later = t0 + 50 * 24 * 3_600_000;
        l.observe((1, 20), later);
        l.observe((1, 30), later + 1_000);
        let h: Vec<u64> = l.history(1).iter().map(|s| s.0.at_ms).collect();
        assert_eq!(h, [later, later + 1_000], "each at its own time");
        assert_eq!(
            l.history(2)[0].0.at_ms,
            later - u32::MAX as u64 / 2,
            "a sample older than the moved base reads as at it"
        );
        assert_eq!(l.smoothed(1).0, 25.0, "loads are unchanged by the move");
    }

    #[test]
    fn a_history_keeps_exact_times_and_starts_anew_after_a_long_silence() {
        let mut l = RegionLoads::default();
        let t0 = 1_767_225_600_000;
        let gap = REGION_LOAD_GAP_MAX_MS as u64;
        let times = [t0, t0 + 3_001, t0 + 3_001 + gap, t0 + 3_002 + gap];
        for (i, at) in times.iter().enumerate() {
            l.observe((1, 10 * (i as u32 + 1)), *at);
        }
        let h: Vec<u64> = l.history(1).iter().map(|s| s.0.at_ms).collect();
        assert_eq!(h, times, "a gap of up to {gap} ms is kept to the ms");
        // A report older than the newest (another node's, in the same pass) reads as with it.
        l.observe((1, 50), t0 + 10);
        assert_eq!(
            l.history(1)[4].0,
            LoadSample {
                at_ms: times[3],
                wcus: 50,
                rcus: 25
            }
        );
        assert_eq!(l.smoothed(1).0, 30.0);
        // Silent for longer than the gap: the old samples no longer tell its load.
        let back = times[3] + gap + 1;
        l.observe((1, 7), back);
        let h = l.history(1);
        assert_eq!(
            h,
            [(
                LoadSample {
                    at_ms: back,
                    wcus: 7,
                    rcus: 3
                },
                false
            )]
        );
        assert_eq!(l.smoothed(1).0, 7.0);
        // So is a seeded sample followed by a report long after it.
        l.seed(2, 40.0, 20.0, t0);
        l.observe((2, 8), t0 + gap + 1);
        assert_eq!(l.history(2).len(), 1);
        assert!(!l.history(2)[0].1, "the seed is gone");
    }

    #[test]
    fn a_pass_reads_each_routed_region_with_its_own_load_and_holders() {
        let t = |n: u64| (1u64 << 32) | n;
        let u = |n: u64| (2u64 << 32) | n;
        let routes = RouteViews::default()
            .with_route(
                1,
                5,
                &format!(
                    r#"{{"t":1,"v":1,"r":[{{"id":{},"l":3,"f":[4,5]}},{{"id":{},"l":4}}]}}"#,
                    t(2),
                    t(0)
                ),
            )
            .with_route(
                2,
                6,
                &format!(r#"{{"t":2,"v":1,"r":[{{"id":{},"l":5,"f":[3]}}]}}"#, u(1)),
            );
        let mut loads = RegionLoads::default();
        // Reports of a routed region, and of regions no route holds (gone, or not yet routed).
        for (r, w) in [(t(2), 40), (t(1), 7), (9 << 32, 1)] {
            loads.observe((r, w), 1_000);
        }
        loads.align(&routes);
        assert_eq!(
            loads.ids,
            [t(0), t(2), u(1)],
            "the routed regions, in order"
        );
        assert_eq!(
            loads.history(t(1)),
            [],
            "an unrouted region's window is gone"
        );
        assert_eq!(loads.holders, [4, 3, 5], "each holder once, in route order");
        // A window added since (a seed of a region no route holds) is dropped by the next
        // alignment, though the routes are the same.
        loads.seed(7 << 32, 1.0, 1.0, 2_000);
        loads.align(&routes);
        assert_eq!(loads.ids, [t(0), t(2), u(1)]);
        let regions = Regions::shared(Arc::new(LeaderRegions {
            routes: Arc::new(routes),
            loads: Arc::new(loads),
        }));
        assert_eq!(regions.len(), 3);
        assert_eq!(regions.region_id(1), t(2));
        assert_eq!(regions.holders(1), (3, &[4, 5][..]));
        assert_eq!(regions.holders(2), (5, &[3][..]));
        assert_eq!(regions.load(1).wcus, 40.0);
        assert_eq!(regions.load(1).approximate_bytes, 100);
        assert_eq!(regions.load(0), RegionLoad::default(), "not reported yet");
        assert_eq!(regions.position(u(1)), Some(2));
        let mut walked = Vec::new();
        regions.walk(|i, r| walked.push((i, r.region_id, r.leader, r.load.wcus)));
        assert_eq!(
            walked,
            [(0, t(0), 4, 0.0), (1, t(2), 3, 40.0), (2, u(1), 5, 0.0)]
        );
    }

    #[test]
    fn a_region_load_is_72_bytes() {
        // Six samples with a u32 of ms each took 88.
        assert_eq!(std::mem::size_of::<LoadWindow>(), 72);
    }

    #[test]
    fn instants_read_as_unix_ms_against_a_pair_read_together() {
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_millis(1_500);
        assert_eq!(unix_ms_at(t0, (later, 10_000)), 8_500);
        assert_eq!(unix_ms_at(later, (later, 10_000)), 10_000);
        assert_eq!(unix_ms_at(later, (t0, 10_000)), 10_000, "not after now");
        assert_eq!(unix_ms_at(t0, (later, 1_000)), 0, "saturates");
    }
}
