//! The scheduler's view of the cluster, built on the leader for one pass: datanodes from the
//! registry (schedulable: alive, connected, not draining, not judged failed), regions from the
//! stored routes, and each region's load smoothed over its last heartbeats ([`RegionLoads`]).
//! The samples kept for smoothing are also the region's load history that `GetRegionStats`
//! serves.
//!
//! Routes are decoded once ([`RouteViews`]): each pass scans the route keys only and reads and
//! decodes just the routes written since the last pass. At 600,000 regions, reading and decoding
//! every route took 1.46 s a pass (BENCHMARKS.md).

use crate::leader::heartbeat::registry::NodeState;
use crate::leader::node::Node;
use crate::leader::procedure::maintenance;
use crate::replica::meta::store::{self, layout, SCAN_PAGE_KEYS};
use crate::replica::node::Replica;
use cairn_meta::{codec, DrainMode, TableRoute};
use cairn_proto::cairnpb::{NodeRole, RegionRole, RegionStat};
use cairn_sched::{ClusterSnapshot, DrainKind, IdMap, IdSet, NodeView, RegionView};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tonic::Status;

/// Heartbeat samples of a region's load kept to smooth it: a moment's burst moves nothing, a
/// lasting change shows within a few heartbeats. Also the length of the region's load history
/// as served (kept no longer: at 100,000 regions each sample costs 1.6 MB of leader memory).
pub const REGION_LOAD_SAMPLES_MAX: usize = 6;

/// One heartbeat's report of a region's load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSample {
    /// When the leader received the report, Unix ms by its clock.
    pub at_ms: u64,
    pub wcus: u32,
    pub rcus: u32,
}

/// One region's recent load, oldest sample first once full.
#[derive(Debug, Clone, Default)]
struct RegionLoad {
    /// A ring.
    samples: [LoadSample; REGION_LOAD_SAMPLES_MAX],
    len: u8,
    next: u8,
    /// The sample in slot 0 is the previous leader's smoothed load (see [`RegionLoads::seed`]).
    seeded: bool,
    bytes: u64,
}

/// The smoothed load of every region the leader hears about, from its leader's heartbeats.
#[derive(Debug, Default)]
pub struct RegionLoads {
    /// Looked up once per region each pass: keyed with the id hasher, not SipHash.
    by_region: IdMap<u64, RegionLoad>,
    /// Each node's heartbeat last taken in, so a report is counted once however many passes
    /// see it.
    seen: HashMap<u64, Instant>,
}

fn clamp(v: u64) -> u32 {
    v.min(u32::MAX as u64) as u32
}

impl RegionLoads {
    pub fn clear(&mut self) {
        *self = RegionLoads::default();
    }

    /// Takes in one report of a region, received at `at_ms` (Unix ms).
    fn observe(&mut self, stat: &RegionStat, at_ms: u64) {
        let l = self.by_region.entry(stat.region_id).or_default();
        if l.next == 0 && l.len > 0 {
            // Slot 0 is overwritten: a seeded sample there is gone.
            l.seeded = false;
        }
        l.samples[l.next as usize] = LoadSample {
            at_ms,
            wcus: clamp(stat.wcus),
            rcus: clamp(stat.rcus),
        };
        l.next = ((l.next as usize + 1) % REGION_LOAD_SAMPLES_MAX) as u8;
        l.len = (l.len + 1).min(REGION_LOAD_SAMPLES_MAX as u8);
        l.bytes = stat.approximate_bytes;
    }

    /// Seeds a region's load (a new leader, from the persisted summary written at `at_ms`) as
    /// one sample, marked as restored in the history. Only into a region with no samples.
    pub fn seed(&mut self, region_id: u64, wcus: f64, rcus: f64, at_ms: u64) {
        if self.by_region.get(&region_id).is_some_and(|l| l.len > 0) {
            return;
        }
        let stat = RegionStat {
            region_id,
            wcus: wcus.max(0.0) as u64,
            rcus: rcus.max(0.0) as u64,
            ..Default::default()
        };
        self.observe(&stat, at_ms);
        if let Some(l) = self.by_region.get_mut(&region_id) {
            l.seeded = true;
        }
    }

    /// Mean (wcus, rcus) over the kept samples, and the last reported size.
    pub fn smoothed(&self, region_id: u64) -> (f64, f64, u64) {
        let Some(l) = self.by_region.get(&region_id) else {
            return (0.0, 0.0, 0);
        };
        let n = l.len.max(1) as f64;
        let kept = &l.samples[..l.len as usize];
        let w: u64 = kept.iter().map(|s| s.wcus as u64).sum();
        let r: u64 = kept.iter().map(|s| s.rcus as u64).sum();
        (w as f64 / n, r as f64 / n, l.bytes)
    }

    /// The kept samples of a region, oldest first, each with whether it is a seeded one
    /// (restored from the previous leader's summary); at most [`REGION_LOAD_SAMPLES_MAX`].
    pub fn history(&self, region_id: u64) -> Vec<(LoadSample, bool)> {
        let Some(l) = self.by_region.get(&region_id) else {
            return Vec::new();
        };
        let len = l.len as usize;
        let start = if len < REGION_LOAD_SAMPLES_MAX {
            0
        } else {
            l.next as usize
        };
        (0..len)
            .map(|i| (start + i) % REGION_LOAD_SAMPLES_MAX)
            .map(|slot| (l.samples[slot], l.seeded && slot == 0))
            .collect()
    }

    /// The `max` regions with the most smoothed load: (region, wcus, rcus).
    pub fn hottest(&self, max: usize) -> Vec<(u64, f64, f64)> {
        let mut all: Vec<(u64, f64, f64)> = self
            .by_region
            .keys()
            .map(|r| {
                let (w, rd, _) = self.smoothed(*r);
                (*r, w, rd)
            })
            .filter(|(_, w, r)| *w > 0.0 || *r > 0.0)
            .collect();
        all.sort_by(|a, b| (b.1 + b.2).total_cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
        all.truncate(max);
        all
    }
}

/// One region of a stored route, as the schedulers need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRegion {
    pub region_id: u64,
    pub leader: u64,
    pub followers: Box<[u64]>,
}

/// One stored route as last read.
#[derive(Debug)]
struct CachedRoute {
    mod_revision: i64,
    regions: Arc<[RouteRegion]>,
    /// The refresh that last found the key.
    seen: u64,
}

/// The stored routes, decoded once: each table's regions as of the route's mod revision, in key
/// (table) order. About 32 bytes a region on the leader, the price of not decoding a million
/// regions' JSON every pass.
#[derive(Debug, Default)]
pub struct RouteViews {
    by_key: BTreeMap<Vec<u8>, CachedRoute>,
    refreshes: u64,
}

impl RouteViews {
    /// Brings the views up to the stored routes: a keys-only scan (revisions, no values), then a
    /// read and decode of each route written since, and routes deleted since forgotten. A route
    /// that does not decode counts as no regions (as every other reader of routes treats it).
    pub fn refresh(&mut self, node: &Replica) -> Result<(), Status> {
        self.refreshes += 1;
        let now = self.refreshes;
        let prefix = layout().routes_prefix();
        let mut after: Option<String> = None;
        let mut changed = Vec::new();
        loop {
            let (kvs, _) = store::scan(node, &prefix, after.as_deref(), SCAN_PAGE_KEYS, true)?;
            let Some(last) = kvs.last() else {
                break;
            };
            after = Some(String::from_utf8_lossy(&last.key).into_owned());
            for kv in kvs {
                match self.by_key.get_mut(&kv.key) {
                    Some(c) if c.mod_revision == kv.mod_revision => c.seen = now,
                    _ => changed.push(kv.key),
                }
            }
        }
        for key in changed {
            let Some(kv) = store::get_raw(node, &String::from_utf8_lossy(&key))? else {
                continue;
            };
            let regions = codec::decode::<TableRoute>(&kv.key, &kv.value)
                .map(|route| {
                    route
                        .regions
                        .iter()
                        .map(|r| RouteRegion {
                            region_id: r.region_id,
                            leader: r.leader_node,
                            followers: r.follower_nodes.clone().into_boxed_slice(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let route = CachedRoute {
                mod_revision: kv.mod_revision,
                regions,
                seen: now,
            };
            self.by_key.insert(key, route);
        }
        self.by_key.retain(|_, c| c.seen == now);
        Ok(())
    }

    /// Every region of every route, in table order.
    pub fn regions(&self) -> impl Iterator<Item = &RouteRegion> {
        self.by_key.values().flat_map(|c| c.regions.iter())
    }

    pub fn clear(&mut self) {
        *self = RouteViews::default();
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
    loads: &mut RegionLoads,
    routes: &mut RouteViews,
) -> Result<ClusterSnapshot, Status> {
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
    let mut reports: Vec<(u64, Vec<RegionStat>)> = Vec::new();
    {
        let registry = node.heartbeats.registry();
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
            // A drained node judged failed is failover's.
            view.drain = match drained.get(&id) {
                _ if failed.contains(&id) => None,
                Some(DrainMode::Drain) => Some(DrainKind::All),
                Some(DrainMode::EvictLeaders) => Some(DrainKind::Leaders),
                None => None,
            };
            nodes.insert(id, view);
            // The latest report, not the latest request: a replies-only request in between
            // reports nothing new.
            let Some(at) = e.latest().map(|s| s.at) else {
                continue;
            };
            if loads.seen.get(&id) == Some(&at) {
                continue;
            }
            loads.seen.insert(id, at);
            let led = e
                .regions
                .iter()
                .filter(|s| s.role == RegionRole::Leader as i32);
            reports.push((unix_ms_at(at, now), led.cloned().collect()));
        }
    }
    for (at_ms, stats) in &reports {
        for stat in stats {
            loads.observe(stat, *at_ms);
        }
    }
    routes.refresh(node)?;
    let regions: Vec<RegionView> = routes
        .regions()
        .map(|r| {
            let (wcus, rcus, bytes) = loads.smoothed(r.region_id);
            RegionView {
                region_id: r.region_id,
                leader: r.leader,
                followers: r.followers.to_vec(),
                approximate_bytes: bytes,
                wcus,
                rcus,
            }
        })
        .collect();
    // Regions on nodes not connected: their holders are known, not schedulable.
    let mut known: IdSet<u64> = nodes.keys().copied().collect();
    for r in &regions {
        for n in std::iter::once(r.leader).chain(r.followers.iter().copied()) {
            if known.insert(n) {
                // Cut off: failover moves its leaders unless it comes back first.
                let view = NodeView {
                    schedulable: false,
                    going: true,
                    ..NodeView::new(n)
                };
                nodes.insert(n, view);
            }
        }
    }
    let live: IdSet<u64> = regions.iter().map(|r| r.region_id).collect();
    loads.by_region.retain(|r, _| live.contains(r));
    Ok(ClusterSnapshot {
        now_ms: node.clock.unix_ms(),
        nodes: nodes.into_values().collect(),
        regions,
        spread_label: node.config.placement_spread_label.clone(),
        ..ClusterSnapshot::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(region_id: u64, wcus: u64) -> RegionStat {
        RegionStat {
            region_id,
            wcus,
            rcus: wcus / 2,
            approximate_bytes: 100,
            ..Default::default()
        }
    }

    #[test]
    fn load_is_the_mean_of_the_last_samples_and_history_is_oldest_first() {
        let mut l = RegionLoads::default();
        assert_eq!(l.smoothed(1), (0.0, 0.0, 0));
        l.observe(&stat(1, 10), 1);
        l.observe(&stat(1, 20), 2);
        assert_eq!(l.smoothed(1), (15.0, 7.5, 100));
        for w in 0..REGION_LOAD_SAMPLES_MAX as u64 {
            l.observe(&stat(1, 100 + w), 10 + w);
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
        l.observe(&stat(2, 1), 20);
        assert_eq!(l.hottest(1), [(1, 102.5, 51.0)]);
    }

    #[test]
    fn a_seeded_sample_is_marked_until_the_ring_passes_it() {
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
            l.observe(&stat(1, 10), 1000 + i);
        }
        let h = l.history(1);
        assert_eq!(h.len(), REGION_LOAD_SAMPLES_MAX);
        assert!(h[0].1 && h[1..].iter().all(|s| !s.1), "{h:?}");
        assert_eq!(
            l.smoothed(1).0,
            (40.0 + 10.0 * 5.0) / 6.0,
            "smoothed over 6"
        );
        l.observe(&stat(1, 10), 2000);
        assert!(l.history(1).iter().all(|s| !s.1), "the seeded sample left");
        assert_eq!(l.smoothed(1).0, 10.0);
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
