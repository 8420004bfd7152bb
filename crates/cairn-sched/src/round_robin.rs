//! Round-robin placement: leaders rotate over the candidates in node-id order; each follower goes
//! to the node that has received the fewest followers (then the fewest replicas) in this call,
//! ties going to the node that comes soonest after the leader in the ring.
//!
//! It ignores load on purpose: it is the selector to use when nodes are alike and predictability
//! matters more than reacting to a momentary imbalance. The rotation remembers the last leader it
//! chose (by node id, not by position) and continues from there on the next call, so a stream of
//! small tables still spreads over the whole cluster, and nodes joining or leaving between calls do
//! not reset it.
//!
//! Within one call, leaders and followers each differ by at most one between nodes, so replicas
//! by at most two. Followers are not simply "the next nodes in the ring" because that piles them
//! up when a table has fewer regions than there are nodes (4 nodes, 2 followers, 2 regions: node 3
//! would follow twice and node 1 never); counting them fixes that, and the ring order keeps the
//! common case (one follower, nothing placed yet) exactly "the next node".

use crate::placement::{
    prepare, Candidate, Placement, PlacementRequest, RegionPlacement, SelectError, Selector,
};

/// Rotates leaders over the candidates; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundRobin {
    /// The node that led the most recently placed region; the next region is led by the first
    /// candidate with a larger id, wrapping to the smallest.
    last_leader: Option<u64>,
}

impl RoundRobin {
    /// A rotation that starts at the candidate with the smallest node id.
    pub fn new() -> Self {
        RoundRobin::default()
    }

    /// A rotation that continues after `node_id`, e.g. to resume where a previous leader stopped.
    pub fn resuming_after(node_id: u64) -> Self {
        RoundRobin {
            last_leader: Some(node_id),
        }
    }

    /// The node that led the last region placed, if any: the state that carries across calls.
    pub fn last_leader(&self) -> Option<u64> {
        self.last_leader
    }
}

impl Selector for RoundRobin {
    fn name(&self) -> &'static str {
        "round_robin"
    }

    fn select(
        &mut self,
        candidates: &[Candidate],
        request: &PlacementRequest,
    ) -> Result<Placement, SelectError> {
        let nodes = prepare(candidates, request)?;
        let ids: Vec<u64> = nodes.iter().map(|c| c.node_id).collect();
        let replicas = request.replicas_per_region();
        // Position of the first node after the remembered leader; ids are sorted, so this is where
        // the previous call's rotation would have gone next.
        let mut next = match self.last_leader {
            Some(last) => ids.partition_point(|&id| id <= last) % ids.len(),
            None => 0,
        };
        // Followers and replicas this call has put on each node, by position in `ids`.
        let mut followers_placed = vec![0usize; ids.len()];
        let mut replicas_placed = vec![0usize; ids.len()];
        let mut regions = Vec::with_capacity(request.region_numbers.len());
        for &region_number in &request.region_numbers {
            let mut members = vec![next];
            replicas_placed[next] += 1;
            for _ in 1..replicas {
                // `prepare` guaranteed `replicas <= ids.len()`, so a node outside the region exists.
                let follower = (0..ids.len())
                    .filter(|j| !members.contains(j))
                    .min_by_key(|&j| {
                        let ring_distance = (j + ids.len() - next) % ids.len();
                        (followers_placed[j], replicas_placed[j], ring_distance)
                    })
                    .expect("prepare guarantees enough distinct candidates");
                followers_placed[follower] += 1;
                replicas_placed[follower] += 1;
                members.push(follower);
            }
            regions.push(RegionPlacement {
                region_number,
                leader: ids[next],
                followers: members[1..].iter().map(|&j| ids[j]).collect(),
            });
            self.last_leader = Some(ids[next]);
            next = (next + 1) % ids.len();
        }
        Ok(Placement { regions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{assert_valid, idle_nodes, request, spread};

    #[test]
    fn leaders_and_followers_spread_evenly() {
        for node_count in 1..=7u64 {
            for followers in 0..node_count as u32 {
                for region_count in 1..=20u32 {
                    let nodes = idle_nodes(node_count);
                    let req = request(region_count, followers);
                    let p = RoundRobin::new().select(&nodes, &req).unwrap();
                    assert_valid(&nodes, &req, &p);
                    let case = format!(
                        "{node_count} nodes, {followers} followers, {region_count} regions"
                    );
                    assert!(spread(&nodes, |n| p.leaders_on(n)) <= 1, "leaders, {case}");
                    assert!(
                        spread(&nodes, |n| p.followers_on(n)) <= 1,
                        "followers, {case}"
                    );
                    // Leaders and followers each within 1 leaves replicas within 2 (4 nodes, 1
                    // follower, 2 regions: {1, 2} and {2, 3}).
                    assert!(spread(&nodes, |n| p.regions_on(n)) <= 2, "replicas, {case}");
                }
            }
        }
    }

    fn layout(p: &Placement) -> Vec<(u64, Vec<u64>)> {
        p.regions
            .iter()
            .map(|r| (r.leader, r.followers.clone()))
            .collect()
    }

    #[test]
    fn followers_fill_the_ring_evenly() {
        let nodes = idle_nodes(4);
        // Fewer regions than nodes: the second region's followers avoid node 3, which already
        // follows, instead of taking "the next two" (3 and 4).
        let p = RoundRobin::new().select(&nodes, &request(2, 2)).unwrap();
        assert_eq!(layout(&p), vec![(1, vec![2, 3]), (2, vec![4, 1])]);
        let p = RoundRobin::new().select(&nodes, &request(4, 2)).unwrap();
        assert_eq!(
            layout(&p),
            vec![
                (1, vec![2, 3]),
                (2, vec![4, 1]),
                (3, vec![4, 1]),
                (4, vec![2, 3])
            ]
        );
        // One follower: simply the next node in the ring.
        let p = RoundRobin::new().select(&nodes, &request(4, 1)).unwrap();
        assert_eq!(
            layout(&p),
            vec![(1, vec![2]), (2, vec![3]), (3, vec![4]), (4, vec![1])]
        );
    }

    #[test]
    fn rotation_continues_across_calls() {
        let nodes = idle_nodes(3);
        let mut rr = RoundRobin::new();
        let first = rr.select(&nodes, &request(2, 0)).unwrap();
        let second = rr.select(&nodes, &request(2, 0)).unwrap();
        let leaders = |p: &Placement| p.regions.iter().map(|r| r.leader).collect::<Vec<_>>();
        assert_eq!(leaders(&first), vec![1, 2]);
        assert_eq!(leaders(&second), vec![3, 1]);
        assert_eq!(rr.last_leader(), Some(1));
        // Many one-region tables still cover every node evenly.
        let mut rr = RoundRobin::new();
        let mut led = [0usize; 3];
        for _ in 0..9 {
            let p = rr.select(&nodes, &request(1, 0)).unwrap();
            led[(p.regions[0].leader - 1) as usize] += 1;
        }
        assert_eq!(led, [3, 3, 3]);
    }

    #[test]
    fn rotation_survives_membership_changes() {
        let mut rr = RoundRobin::resuming_after(2);
        // Node 2 left and node 5 joined: the rotation picks up at the next id after 2.
        let nodes: Vec<Candidate> = [1, 3, 5].into_iter().map(Candidate::new).collect();
        let p = rr.select(&nodes, &request(3, 0)).unwrap();
        let leaders: Vec<u64> = p.regions.iter().map(|r| r.leader).collect();
        assert_eq!(leaders, vec![3, 5, 1]);
        // Past the largest id it wraps to the smallest.
        let mut rr = RoundRobin::resuming_after(9);
        let p = rr.select(&nodes, &request(1, 0)).unwrap();
        assert_eq!(p.regions[0].leader, 1);
    }

    #[test]
    fn errors_leave_the_rotation_alone() {
        let mut rr = RoundRobin::new();
        let nodes = idle_nodes(2);
        rr.select(&nodes, &request(1, 0)).unwrap();
        assert_eq!(
            rr.select(&[], &request(1, 0)),
            Err(SelectError::NoCandidates)
        );
        assert_eq!(
            rr.select(&nodes, &request(0, 0)),
            Err(SelectError::NoRegions)
        );
        assert_eq!(
            rr.select(&nodes, &request(1, 2)),
            Err(SelectError::NotEnoughNodes {
                needed: 3,
                followers: 2,
                available: 2
            })
        );
        assert_eq!(rr.last_leader(), Some(1));
    }

    #[test]
    fn candidate_order_does_not_matter() {
        let nodes = idle_nodes(5);
        let mut reversed = nodes.clone();
        reversed.reverse();
        let req = request(7, 2);
        assert_eq!(
            RoundRobin::new().select(&nodes, &req),
            RoundRobin::new().select(&reversed, &req)
        );
    }
}
