//! Label-aware placement: spread a table over failure domains (the values of one label, such as
//! `zone`), so that losing one domain loses as few of the table's leaders as possible and no
//! region loses all its replicas at once.
//!
//! For each replica it first picks a label value, then a node within it:
//! - **Value.** A region's replicas go to values the region does not use yet, as long as one with
//!   a free node exists; only when there are fewer values than replicas does a region reuse a value
//!   (the one it uses least), still on a distinct node. Among the allowed values, a leader goes to
//!   the value that received the fewest of this request's leaders, a follower to the one that
//!   received the fewest replicas; ties go to the smaller value name. Values are balanced against
//!   each other regardless of how many nodes they hold: a zone with five nodes gets the same share
//!   of the table as a zone with one, because the point is surviving the loss of a zone.
//! - **Node.** Within the value, the least loaded node, by the same score and in-request counting
//!   as the load-based selector ([`crate::load`]), which also spreads evenly over equal nodes.
//!
//! Nodes without the label share the value `""`: they are one more domain, not an error, so a
//! half-labelled cluster still places. The selector keeps no state between calls.

use std::collections::BTreeMap;

use crate::load::{LoadBook, LoadWeights, Role};
use crate::placement::{
    prepare, Candidate, Placement, PlacementRequest, RegionPlacement, SelectError, Selector,
};

/// Spreads regions over the values of one label; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelAware {
    label_key: String,
    weights: LoadWeights,
}

impl LabelAware {
    /// Spread over the values of `label_key` (e.g. `"zone"`), breaking ties within a value by the
    /// default load weights.
    pub fn new(label_key: impl Into<String>) -> Self {
        LabelAware::with_weights(label_key, LoadWeights::default())
    }

    /// As [`LabelAware::new`], with the load weights used to choose a node within a value.
    ///
    /// # Panics
    /// If a weight is negative or not finite (see [`LoadWeights::is_valid`]).
    pub fn with_weights(label_key: impl Into<String>, weights: LoadWeights) -> Self {
        assert!(weights.is_valid(), "invalid load weights {weights:?}");
        LabelAware {
            label_key: label_key.into(),
            weights,
        }
    }

    /// The label whose values are the failure domains.
    pub fn label_key(&self) -> &str {
        &self.label_key
    }
}

/// One label value and what this request has put in it so far.
struct Domain {
    /// Indexes into the prepared candidate list, in node-id order.
    nodes: Vec<usize>,
    leaders: usize,
    replicas: usize,
    /// Replicas of the region being placed right now.
    in_region: usize,
}

impl Selector for LabelAware {
    fn name(&self) -> &'static str {
        "label_aware"
    }

    fn select(
        &mut self,
        candidates: &[Candidate],
        request: &PlacementRequest,
    ) -> Result<Placement, SelectError> {
        let nodes = prepare(candidates, request)?;
        let replicas = request.replicas_per_region();
        let mut book = LoadBook::new(
            &nodes,
            &self.weights,
            request.region_numbers.len().saturating_mul(replicas),
        );
        // A BTreeMap orders domains by value name, which is the final tie-break.
        let mut by_value: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, c) in nodes.iter().enumerate() {
            by_value
                .entry(c.label(&self.label_key))
                .or_default()
                .push(i);
        }
        let mut domains: Vec<Domain> = by_value
            .into_values()
            .map(|nodes| Domain {
                nodes,
                leaders: 0,
                replicas: 0,
                in_region: 0,
            })
            .collect();

        let mut in_region = vec![false; nodes.len()];
        let mut regions = Vec::with_capacity(request.region_numbers.len());
        for &region_number in &request.region_numbers {
            in_region.fill(false);
            for d in &mut domains {
                d.in_region = 0;
            }
            let mut chosen = Vec::with_capacity(replicas);
            for slot in 0..replicas {
                let role = if slot == 0 {
                    Role::Leader
                } else {
                    Role::Follower
                };
                let domain = domains
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.nodes.iter().any(|&i| !in_region[i]))
                    .min_by_key(|(index, d)| {
                        // `in_region` first: a new domain beats balance, because surviving the loss
                        // of a domain is the reason this selector exists.
                        let followers = d.replicas - d.leaders;
                        let (first, second) = match role {
                            Role::Leader => (d.leaders, d.replicas),
                            Role::Follower => (d.replicas, followers),
                        };
                        (d.in_region, first, second, *index)
                    })
                    .map(|(index, _)| index)
                    .expect("prepare guarantees enough distinct candidates");
                let node = book
                    .best(
                        role,
                        domains[domain]
                            .nodes
                            .iter()
                            .copied()
                            .filter(|&i| !in_region[i]),
                    )
                    .expect("the chosen domain has a free node");
                in_region[node] = true;
                book.record(node, role);
                let d = &mut domains[domain];
                d.in_region += 1;
                d.replicas += 1;
                if role == Role::Leader {
                    d.leaders += 1;
                }
                chosen.push(book.node_id(node));
            }
            regions.push(RegionPlacement {
                region_number,
                leader: chosen[0],
                followers: chosen.split_off(1),
            });
        }
        Ok(Placement { regions })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::test_support::{assert_valid, request, spread};

    /// Nodes numbered from 1, `zones[k]` of them in zone `z{k}`.
    fn zoned(zones: &[u64]) -> Vec<Candidate> {
        let mut nodes = Vec::new();
        for (z, &count) in zones.iter().enumerate() {
            for _ in 0..count {
                let id = nodes.len() as u64 + 1;
                nodes.push(Candidate::new(id).with_label("zone", format!("z{z}")));
            }
        }
        nodes
    }

    fn zone_of(nodes: &[Candidate], id: u64) -> String {
        let c = nodes.iter().find(|c| c.node_id == id).unwrap();
        c.label("zone").to_string()
    }

    /// Per zone: (leaders, followers) this placement put there.
    fn per_zone(nodes: &[Candidate], p: &Placement) -> BTreeMap<String, (usize, usize)> {
        let mut out: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for c in nodes {
            out.entry(c.label("zone").to_string()).or_default();
        }
        for r in &p.regions {
            out.get_mut(&zone_of(nodes, r.leader)).unwrap().0 += 1;
            for &f in &r.followers {
                out.get_mut(&zone_of(nodes, f)).unwrap().1 += 1;
            }
        }
        out
    }

    fn zone_spread(counts: impl Iterator<Item = usize> + Clone) -> usize {
        counts.clone().max().unwrap() - counts.min().unwrap()
    }

    #[test]
    fn regions_spread_evenly_over_zones_even_when_one_zone_is_bigger() {
        let nodes = zoned(&[5, 1, 1]);
        for region_count in 1..=30u32 {
            let req = request(region_count, 0);
            let p = LabelAware::new("zone").select(&nodes, &req).unwrap();
            assert_valid(&nodes, &req, &p);
            let zones = per_zone(&nodes, &p);
            assert!(
                zone_spread(zones.values().map(|z| z.0)) <= 1,
                "{region_count}: {zones:?}"
            );
            // Within the big zone the regions spread over its five nodes.
            let big: Vec<Candidate> = nodes[..5].to_vec();
            assert!(spread(&big, |n| p.regions_on(n)) <= 1, "{region_count}");
        }
    }

    #[test]
    fn leaders_and_followers_spread_evenly_over_zones_and_nodes() {
        for zone_size in 1..=3u64 {
            let nodes = zoned(&[zone_size, zone_size, zone_size]);
            for followers in 0..=2u32 {
                for region_count in 1..=24u32 {
                    let req = request(region_count, followers);
                    let p = LabelAware::new("zone").select(&nodes, &req).unwrap();
                    assert_valid(&nodes, &req, &p);
                    let case =
                        format!("{zone_size}/zone, {followers} followers, {region_count} regions");
                    let zones = per_zone(&nodes, &p);
                    assert!(
                        zone_spread(zones.values().map(|z| z.0)) <= 1,
                        "leaders, {case}: {zones:?}"
                    );
                    assert!(
                        zone_spread(zones.values().map(|z| z.1)) <= 1,
                        "followers, {case}: {zones:?}"
                    );
                    assert!(
                        spread(&nodes, |n| p.regions_on(n)) <= 1,
                        "replicas per node, {case}"
                    );
                    assert!(
                        spread(&nodes, |n| p.leaders_on(n)) <= 1,
                        "leaders per node, {case}"
                    );
                }
            }
        }
    }

    #[test]
    fn replicas_of_a_region_land_in_different_zones() {
        let nodes = zoned(&[5, 1, 1]);
        let p = LabelAware::new("zone")
            .select(&nodes, &request(12, 2))
            .unwrap();
        for r in &p.regions {
            let zones: BTreeSet<String> = r.replicas().map(|n| zone_of(&nodes, n)).collect();
            assert_eq!(zones.len(), 3, "{r:?}");
        }
    }

    #[test]
    fn two_zones_and_two_followers_fall_back_to_distinct_nodes() {
        let nodes = zoned(&[2, 2]);
        let req = request(8, 2);
        let p = LabelAware::new("zone").select(&nodes, &req).unwrap();
        assert_valid(&nodes, &req, &p);
        for r in &p.regions {
            let zones: BTreeSet<String> = r.replicas().map(|n| zone_of(&nodes, n)).collect();
            assert_eq!(
                zones.len(),
                2,
                "both zones used before one is reused: {r:?}"
            );
        }
        let zones = per_zone(&nodes, &p);
        assert_eq!(zones["z0"].0, 4);
        assert_eq!(zones["z1"].0, 4);
        assert!(spread(&nodes, |n| p.regions_on(n)) <= 1);
        // A single-node zone cannot hold two replicas of one region; the other zone takes them.
        let nodes = zoned(&[3, 1]);
        let p = LabelAware::new("zone").select(&nodes, &req).unwrap();
        assert_valid(&nodes, &req, &p);
        for r in &p.regions {
            assert!(
                r.replicas().any(|n| n == 4),
                "the lone zone is used by every region: {r:?}"
            );
        }
    }

    #[test]
    fn unlabelled_nodes_form_their_own_domain() {
        let nodes = vec![
            Candidate::new(1).with_label("zone", "a"),
            Candidate::new(2).with_label("zone", "a"),
            Candidate::new(3),
            Candidate::new(4).with_label("rack", "r1"),
        ];
        let p = LabelAware::new("zone")
            .select(&nodes, &request(4, 1))
            .unwrap();
        for r in &p.regions {
            let zones: BTreeSet<&str> = r
                .replicas()
                .map(|n| nodes.iter().find(|c| c.node_id == n).unwrap().label("zone"))
                .collect();
            assert_eq!(zones, BTreeSet::from(["", "a"]), "{r:?}");
        }
    }

    #[test]
    fn load_breaks_ties_within_a_zone() {
        let mut nodes = zoned(&[3, 1]);
        nodes[0].wcus = 900;
        nodes[1].region_count = 40;
        let p = LabelAware::new("zone")
            .select(&nodes, &request(1, 0))
            .unwrap();
        assert_eq!(p.regions[0].leader, 3, "the idle node of the first zone");
    }

    #[test]
    fn errors() {
        let mut s = LabelAware::new("zone");
        assert_eq!(
            s.select(&[], &request(1, 0)),
            Err(SelectError::NoCandidates)
        );
        assert_eq!(
            s.select(&zoned(&[1, 1]), &request(0, 1)),
            Err(SelectError::NoRegions)
        );
        assert_eq!(
            s.select(&zoned(&[1, 1]), &request(1, 2)),
            Err(SelectError::NotEnoughNodes {
                needed: 3,
                followers: 2,
                available: 2
            })
        );
    }

    #[test]
    fn same_inputs_same_output_whatever_the_candidate_order() {
        let nodes = zoned(&[4, 2, 3]);
        let mut shuffled = nodes.clone();
        shuffled.reverse();
        let req = request(13, 2);
        let a = LabelAware::new("zone").select(&nodes, &req).unwrap();
        assert_eq!(a, LabelAware::new("zone").select(&nodes, &req).unwrap());
        assert_eq!(a, LabelAware::new("zone").select(&shuffled, &req).unwrap());
    }
}
