//! Where a table's regions live: region ids, and the per-table route (leader and followers of
//! every region) that frontends cache and the scheduler rewrites.
//!
//! Routes are the largest metadata by count (a million regions is a normal cluster), so their
//! stored JSON uses one- or two-letter field names and leaves out empty and default parts.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A region's id: the table id in the high 32 bits, the region number in the low 32.
pub fn region_id(table_id: u64, region_number: u32) -> u64 {
    debug_assert!(
        table_id <= u64::from(u32::MAX),
        "table id {table_id} does not fit in 32 bits"
    );
    (table_id << 32) | u64::from(region_number)
}

/// The table a region belongs to.
pub fn table_id_of(region_id: u64) -> u64 {
    region_id >> 32
}

/// The region's number within its table.
pub fn region_number_of(region_id: u64) -> u32 {
    // Truncation is the point: the low 32 bits are the number.
    region_id as u32
}

/// Whether a region's leader takes writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaderState {
    /// The leader takes writes.
    #[default]
    Active,
    /// The leader is being moved; writes wait.
    Downgrading,
}

impl LeaderState {
    pub fn is_active(&self) -> bool {
        *self == LeaderState::Active
    }
}

/// Placement of one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionRoute {
    #[serde(rename = "id")]
    pub region_id: u64,
    /// Datanode that takes writes (and leader reads).
    #[serde(rename = "l")]
    pub leader_node: u64,
    /// Datanodes that serve reads.
    #[serde(rename = "f", default, skip_serializing_if = "Vec::is_empty")]
    pub follower_nodes: Vec<u64>,
    #[serde(rename = "s", default, skip_serializing_if = "LeaderState::is_active")]
    pub leader_state: LeaderState,
}

/// Placement of every region of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRoute {
    #[serde(rename = "t")]
    pub table_id: u64,
    /// +1 on every change of any region's placement.
    #[serde(rename = "v")]
    pub version: u64,
    #[serde(rename = "r")]
    pub regions: Vec<RegionRoute>,
}

impl TableRoute {
    /// Every datanode the route names, as leader or follower.
    pub fn nodes(&self) -> BTreeSet<u64> {
        self.regions
            .iter()
            .flat_map(|r| std::iter::once(r.leader_node).chain(r.follower_nodes.iter().copied()))
            .collect()
    }

    /// Regions `node` holds, each with whether it holds it as leader.
    pub fn regions_on(&self, node: u64) -> Vec<(u64, bool)> {
        self.regions
            .iter()
            .filter_map(|r| {
                if r.leader_node == node {
                    Some((r.region_id, true))
                } else if r.follower_nodes.contains(&node) {
                    Some((r.region_id, false))
                } else {
                    None
                }
            })
            .collect()
    }

    pub fn region(&self, region_id: u64) -> Option<&RegionRoute> {
        self.regions.iter().find(|r| r.region_id == region_id)
    }

    /// Whether this route places `region_id` on `node`, as leader or follower.
    pub fn places(&self, region_id: u64, node: u64) -> bool {
        self.region(region_id)
            .is_some_and(|r| r.leader_node == node || r.follower_nodes.contains(&node))
    }

    /// The placements in `earlier` (regions of this table as an earlier placement put them)
    /// that this route does not keep: what must be closed once this route is in force. A region
    /// placed again on a node that already held it stays open there, so it is left out; a
    /// dropped leader placement is returned with `leader_node` 0.
    pub fn dropped_placements(&self, earlier: &[RegionRoute]) -> Vec<RegionRoute> {
        earlier
            .iter()
            .filter_map(|r| {
                let leader_node = if self.places(r.region_id, r.leader_node) {
                    0
                } else {
                    r.leader_node
                };
                let follower_nodes: Vec<u64> = r
                    .follower_nodes
                    .iter()
                    .copied()
                    .filter(|f| !self.places(r.region_id, *f))
                    .collect();
                (leader_node != 0 || !follower_nodes.is_empty()).then_some(RegionRoute {
                    region_id: r.region_id,
                    leader_node,
                    follower_nodes,
                    leader_state: r.leader_state,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(table_id: u64, regions: u32) -> TableRoute {
        TableRoute {
            table_id,
            version: 7,
            regions: (0..regions)
                .map(|n| RegionRoute {
                    region_id: region_id(table_id, n),
                    leader_node: 1 + u64::from(n % 3),
                    follower_nodes: vec![4 + u64::from(n % 3), 7 + u64::from(n % 3)],
                    leader_state: LeaderState::Active,
                })
                .collect(),
        }
    }

    #[test]
    fn region_id_math() {
        assert_eq!(region_id(1, 0), 1 << 32);
        assert_eq!(region_id(1024, 5), (1024 << 32) | 5);
        let id = region_id(u64::from(u32::MAX), u32::MAX);
        assert_eq!(id, u64::MAX);
        assert_eq!(table_id_of(id), u64::from(u32::MAX));
        assert_eq!(region_number_of(id), u32::MAX);
        for (t, n) in [(0, 0), (1, 7), (123_456, 1023)] {
            assert_eq!(table_id_of(region_id(t, n)), t);
            assert_eq!(region_number_of(region_id(t, n)), n);
        }
    }

    #[test]
    fn dropped_placements_keep_what_the_new_route_still_places() {
        // Earlier: regions 0..3 on leaders 1, 2, 3 with followers (4|5|6, 7|8|9).
        let earlier = route(5, 3).regions;
        // Now: every region led by node 1, followed by node 8 only.
        let mut now = route(5, 3);
        for r in &mut now.regions {
            r.leader_node = 1;
            r.follower_nodes = vec![8];
        }
        let dropped = now.dropped_placements(&earlier);
        let pairs: BTreeSet<(u64, u64)> = dropped
            .iter()
            .flat_map(|r| {
                std::iter::once(r.leader_node)
                    .chain(r.follower_nodes.iter().copied())
                    .filter(|n| *n != 0)
                    .map(move |n| (region_number_of(r.region_id) as u64, n))
            })
            .collect();
        // Region 0 stays on node 1; region 1 stays followed on node 8.
        let want: BTreeSet<(u64, u64)> = [(0, 4), (0, 7), (1, 2), (1, 5), (2, 3), (2, 6), (2, 9)]
            .into_iter()
            .collect();
        assert_eq!(pairs, want);
        // Region 0 lost only followers: its leader placement is kept (0 = nothing to close).
        assert_eq!(dropped[0].leader_node, 0);
        // Nothing is dropped when the route is unchanged.
        assert!(now.dropped_placements(&now.regions).is_empty());
    }

    #[test]
    fn nodes_and_regions_on_a_node() {
        let mut r = route(5, 3);
        r.regions[2].follower_nodes.clear();
        assert_eq!(r.nodes(), BTreeSet::from([1, 2, 3, 4, 5, 7, 8]));
        assert_eq!(r.regions_on(2), vec![(region_id(5, 1), true)]);
        assert_eq!(r.regions_on(4), vec![(region_id(5, 0), false)]);
        assert_eq!(r.regions_on(6), vec![]);
        assert_eq!(r.region(region_id(5, 2)).unwrap().leader_node, 3);
        assert!(r.region(region_id(5, 3)).is_none());
    }

    #[test]
    fn stored_form_is_compact() {
        // Ten regions, a leader and two followers each: about 39 bytes a region. A regression
        // guard: a million regions must stay well under the store's memory budget.
        let bytes = serde_json::to_vec(&route(1024, 10)).unwrap();
        assert!(
            bytes.len() < 400,
            "{} bytes: {}",
            bytes.len(),
            String::from_utf8_lossy(&bytes)
        );
    }

    #[test]
    fn stored_form_round_trips_and_omits_defaults() {
        let mut r = route(100_000, 4);
        r.regions[3].leader_state = LeaderState::Downgrading;
        r.regions[2].follower_nodes.clear();
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""s":"downgrading""#), "{text}");
        assert!(!text.contains("active"), "{text}");
        assert_eq!(text.matches(r#""f":"#).count(), 3, "{text}");
        let back: TableRoute = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn leader_only_region_is_short() {
        let r = RegionRoute {
            region_id: region_id(1, 0),
            leader_node: 3,
            follower_nodes: vec![],
            leader_state: LeaderState::Active,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"id":4294967296,"l":3}"#
        );
    }
}
