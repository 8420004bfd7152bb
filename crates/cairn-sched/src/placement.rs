//! The vocabulary every selector shares: who may take regions (`Candidate`), what to place
//! (`PlacementRequest`), the answer (`Placement`), why there is no answer (`SelectError`), and the
//! `Selector` boundary the leader calls when a table is created or grows.
//!
//! Selectors are pure: the caller hands in a snapshot of the alive datanodes and gets decisions back
//! as data. Writing the routes, opening the regions and retrying are the server's business.

use std::collections::{BTreeMap, BTreeSet};

/// A datanode that may receive new regions, as the leader last heard of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The datanode's id; selectors break ties by it so that decisions replay identically.
    pub node_id: u64,
    /// Failure-domain labels such as `zone`, `rack`, `host`.
    pub labels: BTreeMap<String, String>,
    /// Regions the node holds: last reported plus those placed on it since.
    pub region_count: u64,
    /// Read capacity units over the last report.
    pub rcus: u64,
    /// Write capacity units over the last report.
    pub wcus: u64,
    /// Cores busy.
    pub cpu_usage: f64,
}

impl Candidate {
    /// An idle node with no labels; set the fields that matter to the case at hand.
    pub fn new(node_id: u64) -> Self {
        Candidate {
            node_id,
            labels: BTreeMap::new(),
            region_count: 0,
            rcus: 0,
            wcus: 0,
            cpu_usage: 0.0,
        }
    }

    /// The same node with one more label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The node's value for `key`; a node without the label counts as the value `""`, so unlabelled
    /// nodes form one failure domain of their own rather than being dropped.
    pub fn label(&self, key: &str) -> &str {
        self.labels.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Regions of one table that need a home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRequest {
    /// The table the regions belong to.
    pub table_id: u64,
    /// Regions to place; the answer lists them in this order.
    pub region_numbers: Vec<u32>,
    /// Follower replicas per region (0 = leader only).
    pub followers: u32,
}

impl PlacementRequest {
    /// Distinct datanodes one region needs: its leader plus each follower.
    pub fn replicas_per_region(&self) -> usize {
        (self.followers as usize).saturating_add(1)
    }
}

/// Where one region lives: a leader and its followers, all distinct nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionPlacement {
    /// The region's number within its table.
    pub region_number: u32,
    /// The node that serves writes.
    pub leader: u64,
    /// Nodes holding follower replicas; never contains `leader`.
    pub followers: Vec<u64>,
}

impl RegionPlacement {
    /// Leader first, then followers in order.
    pub fn replicas(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.leader).chain(self.followers.iter().copied())
    }
}

/// A selector's answer for one request: one entry per requested region, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// One entry per requested region, in the request's order.
    pub regions: Vec<RegionPlacement>,
}

impl Placement {
    /// Every node that received a replica (leader or follower).
    pub fn nodes(&self) -> BTreeSet<u64> {
        self.regions
            .iter()
            .flat_map(RegionPlacement::replicas)
            .collect()
    }

    /// Regions that have a replica (leader or follower) on `node`.
    pub fn regions_on(&self, node: u64) -> usize {
        self.regions
            .iter()
            .filter(|r| r.replicas().any(|n| n == node))
            .count()
    }

    /// Regions whose leader is `node`.
    pub fn leaders_on(&self, node: u64) -> usize {
        self.regions.iter().filter(|r| r.leader == node).count()
    }

    /// Regions that have a follower on `node`.
    pub fn followers_on(&self, node: u64) -> usize {
        self.regions
            .iter()
            .filter(|r| r.followers.contains(&node))
            .count()
    }
}

/// Why a request cannot be placed. Each variant is a different thing for the caller to do: wait for
/// datanodes, add datanodes or lower the replica count, or fix the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// The candidate list is empty.
    #[error("no datanode can take regions: none is alive and not draining")]
    NoCandidates,
    /// Fewer distinct candidates than replicas per region.
    #[error(
        "each region needs {needed} distinct datanodes (1 leader + {followers} followers), only {available} are available"
    )]
    NotEnoughNodes {
        /// Distinct nodes one region needs (1 + followers).
        needed: usize,
        /// Followers per region, as requested.
        followers: u32,
        /// Distinct candidates offered.
        available: usize,
    },
    /// The request lists no regions.
    #[error("placement request names no regions")]
    NoRegions,
}

/// Decides where new regions go.
///
/// # Correctness requirements
/// - Every requested region appears once in the answer, in request order.
/// - A region's leader and followers are distinct nodes, all taken from `candidates`, and there are
///   exactly `request.followers` followers.
/// - The answer depends only on `candidates`, `request` and the selector's own state (no clock, no
///   global randomness), so a decision can be replayed; the order of `candidates` does not matter.
/// - Errors: `NoRegions` for an empty request, then `NoCandidates` for an empty candidate list, then
///   `NotEnoughNodes` when fewer distinct candidates exist than replicas per region. A failed call
///   leaves the selector's state unchanged.
pub trait Selector: Send {
    /// The selector's configuration name (`round_robin`, `load_based`, `label_aware`).
    fn name(&self) -> &'static str;

    /// Candidates are already filtered by the caller to alive, non-draining datanodes.
    fn select(
        &mut self,
        candidates: &[Candidate],
        request: &PlacementRequest,
    ) -> Result<Placement, SelectError>;
}

/// Checks a request against the candidates and returns the candidates sorted by node id with
/// duplicates removed (the first entry for an id wins).
///
/// Sorting makes every selector independent of the order the caller collected nodes in; dropping
/// duplicates keeps "distinct replicas" true even if a node was listed twice by mistake.
pub(crate) fn prepare<'a>(
    candidates: &'a [Candidate],
    request: &PlacementRequest,
) -> Result<Vec<&'a Candidate>, SelectError> {
    // An empty request is wrong whatever the cluster looks like, so it is reported first.
    if request.region_numbers.is_empty() {
        return Err(SelectError::NoRegions);
    }
    if candidates.is_empty() {
        return Err(SelectError::NoCandidates);
    }
    let mut nodes: Vec<&Candidate> = Vec::with_capacity(candidates.len());
    let mut seen = BTreeSet::new();
    for c in candidates {
        if seen.insert(c.node_id) {
            nodes.push(c);
        }
    }
    nodes.sort_by_key(|c| c.node_id);
    let needed = request.replicas_per_region();
    if nodes.len() < needed {
        return Err(SelectError::NotEnoughNodes {
            needed,
            followers: request.followers,
            available: nodes.len(),
        });
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(regions: &[u32], followers: u32) -> PlacementRequest {
        PlacementRequest {
            table_id: 1,
            region_numbers: regions.to_vec(),
            followers,
        }
    }

    #[test]
    fn prepare_reports_errors_in_documented_order() {
        assert_eq!(prepare(&[], &request(&[], 0)), Err(SelectError::NoRegions));
        assert_eq!(
            prepare(&[], &request(&[1], 2)),
            Err(SelectError::NoCandidates)
        );
        let two = [Candidate::new(1), Candidate::new(2)];
        assert_eq!(
            prepare(&two, &request(&[1], 2)),
            Err(SelectError::NotEnoughNodes {
                needed: 3,
                followers: 2,
                available: 2
            })
        );
    }

    #[test]
    fn prepare_sorts_and_drops_duplicate_ids() {
        let mut dup = Candidate::new(2);
        dup.region_count = 99;
        let nodes = [Candidate::new(3), Candidate::new(2), dup, Candidate::new(1)];
        let prepared = prepare(&nodes, &request(&[1], 0)).unwrap();
        let ids: Vec<u64> = prepared.iter().map(|c| c.node_id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(prepared[1].region_count, 0, "first entry for an id wins");
        // Duplicates do not count towards the distinct nodes a region needs.
        let twice = [Candidate::new(1), Candidate::new(1)];
        assert_eq!(
            prepare(&twice, &request(&[1], 1)),
            Err(SelectError::NotEnoughNodes {
                needed: 2,
                followers: 1,
                available: 1
            })
        );
    }

    #[test]
    fn error_messages_name_the_numbers() {
        let e = SelectError::NotEnoughNodes {
            needed: 3,
            followers: 2,
            available: 1,
        };
        assert_eq!(
            e.to_string(),
            "each region needs 3 distinct datanodes (1 leader + 2 followers), only 1 are available"
        );
    }

    #[test]
    fn placement_counts_replicas_per_node() {
        let p = Placement {
            regions: vec![
                RegionPlacement {
                    region_number: 0,
                    leader: 1,
                    followers: vec![2, 3],
                },
                RegionPlacement {
                    region_number: 1,
                    leader: 2,
                    followers: vec![3],
                },
            ],
        };
        assert_eq!(p.nodes(), BTreeSet::from([1, 2, 3]));
        assert_eq!(p.regions_on(2), 2);
        assert_eq!(p.regions_on(3), 2);
        assert_eq!(p.regions_on(4), 0);
        assert_eq!(p.leaders_on(2), 1);
        assert_eq!(p.followers_on(3), 2);
    }

    #[test]
    fn missing_label_reads_as_empty_value() {
        let c = Candidate::new(1).with_label("zone", "a");
        assert_eq!(c.label("zone"), "a");
        assert_eq!(c.label("rack"), "");
    }
}
