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
    for r in placement.regions.iter() {
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

/// A snapshot of `nodes` schedulable, unlabelled nodes (ids 1..=nodes) where node `n` of each
/// `(n, count)` leads `count` regions, tables of 4 regions each, numbered in order; limits
/// generous, no cool-down.
pub(crate) fn snapshot(nodes: u64, held: &[(u64, usize)]) -> crate::ClusterSnapshot {
    let mut regions = Vec::new();
    for &(node, count) in held {
        for _ in 0..count {
            let i = regions.len() as u64;
            let id = ((1 + i / 4) << 32) | (i % 4);
            regions.push(crate::RegionView::new(id, node));
        }
    }
    crate::ClusterSnapshot {
        now_ms: 1_000_000,
        nodes: (1..=nodes).map(crate::NodeView::new).collect(),
        regions: regions.into(),
        moves_left: 100_000,
        node_moves_left_default: 100_000,
        urgent_moves_left: 100_000,
        spread_label: "zone".to_string(),
        ..crate::ClusterSnapshot::default()
    }
}

/// Regions each node leads, in node order.
pub(crate) fn led_counts(snap: &crate::ClusterSnapshot) -> Vec<usize> {
    led_sum(snap, |_| 1.0)
        .into_iter()
        .map(|n| n as usize)
        .collect()
}

/// `f` summed over the regions each node leads, in node order.
pub(crate) fn led_sum(
    snap: &crate::ClusterSnapshot,
    f: impl Fn(&crate::RegionView) -> f64,
) -> Vec<f64> {
    snap.nodes
        .iter()
        .map(|n| {
            snap.regions
                .iter()
                .filter(|r| r.leader == n.node_id)
                .map(|r| f(&r))
                .sum()
        })
        .collect()
}

/// Applies an operator to a snapshot, as the executor's migration would.
pub(crate) fn apply(snap: &mut crate::ClusterSnapshot, op: &crate::Operator) {
    let r = snap
        .regions
        .list_mut()
        .iter_mut()
        .find(|r| r.region_id == op.region_id)
        .expect("operator for a known region");
    match op.kind {
        crate::MoveKind::Leader => {
            assert_eq!(r.leader, op.from, "{op:?}");
            r.leader = op.to;
            // Handed to a follower: the old leader follows in its place, or its copy closes.
            if r.followers.contains(&op.to) {
                if op.keeps_source() {
                    r.followers.replace(op.to, op.from);
                } else {
                    r.followers.retain(|f| *f != op.to);
                }
            }
        }
        crate::MoveKind::Follower => {
            assert!(r.followers.contains(&op.from), "follower: {op:?}");
            r.followers.replace(op.from, op.to);
        }
        crate::MoveKind::AddFollower => {
            assert!(!r.followers.contains(&op.to), "{op:?}");
            r.followers.push(op.to);
        }
        crate::MoveKind::RemoveFollower => {
            assert!(r.followers.contains(&op.from), "{op:?}");
            r.followers.retain(|f| *f != op.from);
        }
    }
    assert!(
        r.leader != op.to || op.kind == crate::MoveKind::Leader,
        "a region's copies stay on distinct nodes: {op:?}"
    );
    snap.note_done(op);
}

/// Plans and applies passes, 1 s apart with a cool-down longer than the run as the leader
/// would, until one plans nothing even once every cool-down is over (at most 200 passes); the
/// moves made. Panics on flapping: a copy moving back to a node it left (nothing here changes
/// load between passes, so nothing justifies it).
pub(crate) fn plan_until_quiet(
    snap: &mut crate::ClusterSnapshot,
    plan: impl Fn(&crate::ClusterSnapshot) -> Vec<crate::Operator>,
) -> usize {
    let mut left = BTreeSet::new();
    let mut moves = 0;
    let cooldown = snap.region_cooldown_ms;
    snap.region_cooldown_ms = cooldown.max(3_600_000);
    for _ in 0..200 {
        let mut ops = plan(snap);
        if ops.is_empty() {
            snap.now_ms += snap.region_cooldown_ms;
            ops = plan(snap);
            if ops.is_empty() {
                snap.region_cooldown_ms = cooldown;
                return moves;
            }
        }
        for op in &ops {
            assert!(
                !left.contains(&(op.region_id, op.kind, op.to)),
                "flapping: {op:?} returns to a node it left"
            );
            left.insert((op.region_id, op.kind, op.from));
            apply(snap, op);
            moves += 1;
        }
        snap.now_ms += 1_000;
    }
    panic!("still planning after 200 passes");
}
