//! [`CachedRoute`]: one table's route as a frontend uses it — who leads each region, who serves
//! its reads, and at which address. Read-target choice is a pure function
//! ([`choose_read_target`]) so it is tested without a cache or a server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_proto::cairnpb::{GetRoutesResponse, RegionRoute, TableRoute};

/// Which replica of a region a read goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadPreference {
    /// The leader: reads see every acknowledged write.
    Leader,
    /// A follower, spreading reads over them; the leader when the region has none.
    PreferFollower,
}

/// The node that serves a read of `region` with `preference`; `turn` spreads
/// [`ReadPreference::PreferFollower`] reads over the followers (`turn % followers`). `None` when
/// the region has no leader and, for followers, no follower either.
pub fn choose_read_target(
    region: &RegionRoute,
    preference: ReadPreference,
    turn: u64,
) -> Option<u64> {
    let leader = (region.leader_node != 0).then_some(region.leader_node);
    match preference {
        ReadPreference::Leader => leader,
        ReadPreference::PreferFollower => {
            let followers: Vec<u64> = region
                .follower_nodes
                .iter()
                .copied()
                .filter(|node| *node != 0 && Some(*node) != leader)
                .collect();
            if followers.is_empty() {
                return leader;
            }
            // The length fits in u64 on every platform Rust supports.
            let index = turn % followers.len() as u64;
            Some(followers[index as usize])
        }
    }
}

/// One table's route and the addresses of the nodes it names, as fetched at `revision`.
#[derive(Debug)]
pub struct CachedRoute {
    route: TableRoute,
    /// Region id → index in `route.regions`.
    regions: HashMap<u64, usize>,
    addresses: HashMap<u64, String>,
    revision: i64,
    /// Advanced by every follower read, so reads rotate over the followers.
    read_turn: AtomicU64,
}

impl CachedRoute {
    /// `route` with the addresses of `nodes` (node id, address) that it names; others, and
    /// empty addresses, are ignored. `revision` is the store revision of the read that returned it.
    pub fn new(
        route: TableRoute,
        nodes: impl IntoIterator<Item = (u64, String)>,
        revision: i64,
    ) -> Self {
        let regions = route
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.region_id, i))
            .collect();
        let named = |node: u64| {
            route
                .regions
                .iter()
                .any(|r| r.leader_node == node || r.follower_nodes.contains(&node))
        };
        // An empty address is the server saying it has no record of the node.
        let addresses = nodes
            .into_iter()
            .filter(|(node, address)| !address.is_empty() && named(*node))
            .collect();
        CachedRoute {
            route,
            regions,
            addresses,
            revision,
            read_turn: AtomicU64::new(0),
        }
    }

    /// The routes in a `GetRoutes` answer, each with the addresses it needs.
    pub fn from_response(response: &GetRoutesResponse) -> Vec<CachedRoute> {
        let nodes: Vec<(u64, String)> = response
            .nodes
            .iter()
            .map(|n| (n.node_id, n.address.clone()))
            .collect();
        response
            .routes
            .iter()
            .map(|route| CachedRoute::new(route.clone(), nodes.iter().cloned(), response.revision))
            .collect()
    }

    /// The table this routes.
    pub fn table_id(&self) -> u64 {
        self.route.table_id
    }

    /// The route's version (+1 on every placement change).
    pub fn version(&self) -> u64 {
        self.route.version
    }

    /// The store revision of the read that returned this route.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The route as the server sent it.
    pub fn route(&self) -> &TableRoute {
        &self.route
    }

    /// Region ids in the server's order.
    pub fn region_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.route.regions.iter().map(|r| r.region_id)
    }

    /// The route of one region.
    pub fn region(&self, region_id: u64) -> Option<&RegionRoute> {
        self.regions
            .get(&region_id)
            .map(|index| &self.route.regions[*index])
    }

    /// The address of a node this route names.
    pub fn address(&self, node_id: u64) -> Option<&str> {
        self.addresses.get(&node_id).map(String::as_str)
    }

    /// The leader of `region_id` and its address: where writes go. `None` when the region is
    /// not in this route, has no leader, or the leader's address was not in the answer. The
    /// leader may be moving (`leader_state` downgrading); it then refuses writes for a moment.
    pub fn leader_of(&self, region_id: u64) -> Option<(u64, &str)> {
        let leader = self.region(region_id)?.leader_node;
        if leader == 0 {
            return None;
        }
        Some((leader, self.address(leader)?))
    }

    /// The node that should serve a read of `region_id` ([`choose_read_target`]); follower
    /// reads rotate over the followers, one step per call.
    pub fn read_target(&self, region_id: u64, preference: ReadPreference) -> Option<u64> {
        let region = self.region(region_id)?;
        let turn = match preference {
            ReadPreference::Leader => 0,
            ReadPreference::PreferFollower => self.read_turn.fetch_add(1, Ordering::Relaxed),
        };
        choose_read_target(region, preference, turn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::cairnpb::{LeaderState, NodeAddress};

    fn region(region_id: u64, leader: u64, followers: &[u64]) -> RegionRoute {
        RegionRoute {
            region_id,
            leader_node: leader,
            follower_nodes: followers.to_vec(),
            leader_state: LeaderState::Active as i32,
        }
    }

    #[test]
    fn leader_reads_go_to_the_leader() {
        let r = region(1, 7, &[8, 9]);
        for turn in 0..5 {
            assert_eq!(
                choose_read_target(&r, ReadPreference::Leader, turn),
                Some(7)
            );
        }
        assert_eq!(
            choose_read_target(&region(1, 0, &[8]), ReadPreference::Leader, 0),
            None
        );
    }

    #[test]
    fn follower_reads_rotate_over_followers() {
        let r = region(1, 7, &[8, 9, 10]);
        let picks: Vec<Option<u64>> = (0..6)
            .map(|turn| choose_read_target(&r, ReadPreference::PreferFollower, turn))
            .collect();
        assert_eq!(
            picks,
            vec![Some(8), Some(9), Some(10), Some(8), Some(9), Some(10)]
        );
    }

    #[test]
    fn follower_reads_fall_back_to_the_leader() {
        let pref = ReadPreference::PreferFollower;
        assert_eq!(choose_read_target(&region(1, 7, &[]), pref, 3), Some(7));
        // A follower list naming the leader (or node 0) has no real follower.
        assert_eq!(choose_read_target(&region(1, 7, &[7, 0]), pref, 1), Some(7));
        assert_eq!(choose_read_target(&region(1, 0, &[]), pref, 0), None);
        // No leader, but a follower can still serve reads.
        assert_eq!(choose_read_target(&region(1, 0, &[5]), pref, 9), Some(5));
    }

    #[test]
    fn cached_route_finds_leaders_addresses_and_rotates_reads() {
        let response = GetRoutesResponse {
            routes: vec![TableRoute {
                table_id: 42,
                version: 3,
                regions: vec![region(42 << 32, 1, &[2, 3]), region((42 << 32) | 1, 2, &[])],
            }],
            missing_table_ids: vec![],
            nodes: [(1, "a:1"), (2, "b:2"), (3, ""), (4, "d:4")]
                .into_iter()
                .map(|(node_id, address)| NodeAddress {
                    node_id,
                    address: address.into(),
                })
                .collect(),
            revision: 17,
        };
        let routes = CachedRoute::from_response(&response);
        assert_eq!(routes.len(), 1);
        let route = &routes[0];
        assert_eq!(
            (route.table_id(), route.version(), route.revision()),
            (42, 3, 17)
        );
        assert_eq!(route.leader_of(42 << 32), Some((1, "a:1")));
        assert_eq!(route.leader_of((42 << 32) | 1), Some((2, "b:2")));
        assert_eq!(route.leader_of(43 << 32), None);
        assert_eq!(route.address(4), None, "node 4 is not in this route");
        assert_eq!(route.address(3), None, "node 3 has no known address");
        let reads: Vec<Option<u64>> = (0..4)
            .map(|_| route.read_target(42 << 32, ReadPreference::PreferFollower))
            .collect();
        assert_eq!(reads, vec![Some(2), Some(3), Some(2), Some(3)]);
        assert_eq!(
            route.read_target((42 << 32) | 1, ReadPreference::PreferFollower),
            Some(2)
        );
        assert_eq!(route.region_ids().count(), 2);
    }
}
