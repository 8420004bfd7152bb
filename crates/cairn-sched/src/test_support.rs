//! Helpers shared by the selectors' tests: candidate and request builders, the invariant check
//! every placement must pass, and a small seeded generator for property-style tests (kept
//! hand-rolled so the crate needs no test-only dependency).

use std::collections::BTreeSet;

use crate::placement::{Candidate, Placement, PlacementRequest};

/// `count` idle, unlabelled nodes with ids 1..=count.
pub(crate) fn idle_nodes(count: u64) -> Vec<Candidate> {
    (1..=count).map(Candidate::new).collect()
}

/// Table 1, regions 0..regions.
pub(crate) fn request(regions: u32, followers: u32) -> PlacementRequest {
    PlacementRequest {
        table_id: 1,
        region_numbers: (0..regions).collect(),
        followers,
    }
}

/// Largest minus smallest of `count(node)` over the candidates.
pub(crate) fn spread(nodes: &[Candidate], count: impl Fn(u64) -> usize) -> usize {
    let counts: Vec<usize> = nodes.iter().map(|c| count(c.node_id)).collect();
    counts.iter().max().unwrap() - counts.iter().min().unwrap()
}

/// What every selector promises: every region placed once, in request order, with the requested
/// number of distinct replicas, all on candidates.
pub(crate) fn assert_valid(
    candidates: &[Candidate],
    request: &PlacementRequest,
    placement: &Placement,
) {
    let ids: BTreeSet<u64> = candidates.iter().map(|c| c.node_id).collect();
    let placed: Vec<u32> = placement.regions.iter().map(|r| r.region_number).collect();
    assert_eq!(placed, request.region_numbers, "regions in request order");
    for r in &placement.regions {
        assert_eq!(
            r.followers.len(),
            request.followers as usize,
            "follower count of {r:?}"
        );
        let replicas: BTreeSet<u64> = r.replicas().collect();
        assert_eq!(
            replicas.len(),
            request.replicas_per_region(),
            "distinct replicas in {r:?}"
        );
        assert!(
            replicas.is_subset(&ids),
            "{r:?} uses a node that is not a candidate"
        );
    }
}

/// Knuth's MMIX linear congruential generator: enough randomness to vary test inputs, and every
/// failing case replays from its seed.
pub(crate) struct Lcg(u64);

impl Lcg {
    pub(crate) fn new(seed: u64) -> Self {
        Lcg(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // The high bits of an LCG are the well-mixed ones.
        self.0 >> 33
    }

    /// Uniform-ish in `0..bound` (bound > 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}
