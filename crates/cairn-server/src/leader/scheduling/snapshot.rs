//! The scheduler's view of the cluster, built on the leader for one pass: datanodes from the
//! registry (schedulable: alive, connected, not draining, not judged failed), regions from the
//! stored routes, and each region's load smoothed over its last heartbeats ([`RegionLoads`]).

use crate::leader::heartbeat::registry::NodeState;
use crate::leader::node::Node;
use crate::leader::procedure::maintenance;
use crate::replica::meta::store::{self, layout};
use cairn_meta::{codec, TableRoute};
use cairn_proto::cairnpb::{NodeRole, RegionRole, RegionStat};
use cairn_sched::{ClusterSnapshot, NodeView, RegionView};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;
use tonic::Status;

/// Heartbeat samples of a region's load kept to smooth it: a moment's burst moves nothing, a
/// lasting change shows within a few heartbeats.
pub const REGION_LOAD_SAMPLES_MAX: usize = 6;

/// One region's recent load, oldest sample first once full.
#[derive(Debug, Clone, Default)]
struct RegionLoad {
    /// (wcus, rcus) per heartbeat, a ring.
    samples: [(u32, u32); REGION_LOAD_SAMPLES_MAX],
    len: u8,
    next: u8,
    bytes: u64,
}

/// The smoothed load of every region the leader hears about, from its leader's heartbeats.
#[derive(Debug, Default)]
pub struct RegionLoads {
    by_region: HashMap<u64, RegionLoad>,
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

    fn observe(&mut self, stat: &RegionStat) {
        let l = self.by_region.entry(stat.region_id).or_default();
        l.samples[l.next as usize] = (clamp(stat.wcus), clamp(stat.rcus));
        l.next = ((l.next as usize + 1) % REGION_LOAD_SAMPLES_MAX) as u8;
        l.len = (l.len + 1).min(REGION_LOAD_SAMPLES_MAX as u8);
        l.bytes = stat.approximate_bytes;
    }

    /// Seeds a region's load (a new leader, from the persisted summary) as one sample.
    pub fn seed(&mut self, region_id: u64, wcus: f64, rcus: f64) {
        self.observe(&RegionStat {
            region_id,
            wcus: wcus.max(0.0) as u64,
            rcus: rcus.max(0.0) as u64,
            ..Default::default()
        });
    }

    /// Mean (wcus, rcus) over the kept samples, and the last reported size.
    pub fn smoothed(&self, region_id: u64) -> (f64, f64, u64) {
        let Some(l) = self.by_region.get(&region_id) else {
            return (0.0, 0.0, 0);
        };
        let n = l.len.max(1) as f64;
        let kept = &l.samples[..l.len as usize];
        let w: u64 = kept.iter().map(|s| s.0 as u64).sum();
        let r: u64 = kept.iter().map(|s| s.1 as u64).sum();
        (w as f64 / n, r as f64 / n, l.bytes)
    }

    /// The kept (wcus, rcus) samples of a region, oldest first.
    pub fn history(&self, region_id: u64) -> Vec<(u32, u32)> {
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
            .map(|i| l.samples[(start + i) % REGION_LOAD_SAMPLES_MAX])
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

/// The snapshot of one pass (limits and busy regions are the operator table's to fill).
pub fn build(node: &Node, loads: &mut RegionLoads) -> Result<ClusterSnapshot, Status> {
    let failed: HashSet<u64> = node.heartbeats.failed_nodes().into_iter().collect();
    let drained: HashSet<u64> = maintenance::drains(node)?
        .iter()
        .map(|d| d.node_id)
        .collect();
    // The connection table before the registry: the hub takes their locks in that order.
    let connected = node.heartbeats.connected_ids();
    let mut nodes: BTreeMap<u64, NodeView> = BTreeMap::new();
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
                && !drained.contains(&id);
            nodes.insert(id, view);
            let Some(at) = e.last_heartbeat else { continue };
            if loads.seen.get(&id) == Some(&at) {
                continue;
            }
            loads.seen.insert(id, at);
            for stat in e
                .regions
                .iter()
                .filter(|s| s.role == RegionRole::Leader as i32)
            {
                loads.observe(stat);
            }
        }
    }
    let mut regions = Vec::new();
    store::scan_all(node, &layout().routes_prefix(), |kv| {
        let Ok(route) = codec::decode::<TableRoute>(&kv.key, &kv.value) else {
            return Ok(());
        };
        for r in &route.regions {
            let (wcus, rcus, bytes) = loads.smoothed(r.region_id);
            regions.push(RegionView {
                region_id: r.region_id,
                leader: r.leader_node,
                followers: r.follower_nodes.clone(),
                approximate_bytes: bytes,
                wcus,
                rcus,
            });
        }
        Ok(())
    })?;
    // Regions on nodes not connected: their holders are known, not schedulable.
    for r in &regions {
        for n in std::iter::once(r.leader).chain(r.followers.iter().copied()) {
            nodes.entry(n).or_insert_with(|| NodeView {
                schedulable: false,
                ..NodeView::new(n)
            });
        }
    }
    let live: HashSet<u64> = regions.iter().map(|r| r.region_id).collect();
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
        l.observe(&stat(1, 10));
        l.observe(&stat(1, 20));
        assert_eq!(l.smoothed(1), (15.0, 7.5, 100));
        for w in 0..REGION_LOAD_SAMPLES_MAX as u64 {
            l.observe(&stat(1, 100 + w));
        }
        let h: Vec<u32> = l.history(1).iter().map(|s| s.0).collect();
        assert_eq!(
            h,
            [100, 101, 102, 103, 104, 105],
            "the two old samples left"
        );
        assert_eq!(l.smoothed(1).0, 102.5);
        l.observe(&stat(2, 1));
        assert_eq!(l.hottest(1), [(1, 102.5, 51.0)]);
    }
}
