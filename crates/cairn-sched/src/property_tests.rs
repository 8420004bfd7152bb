//! Property-style tests: many random clusters and requests, generated from seeds by a small LCG,
//! checked against the invariants every selector promises. A failure names its seed so it replays.

use std::collections::{BTreeMap, BTreeSet};

use crate::kind::SelectorKind;
use crate::placement::{Candidate, PlacementRequest, SelectError};
use crate::test_support::{assert_valid, Lcg};

const CASES: u64 = 3_000;
const SPREAD_LABEL: &str = "zone";

/// Up to 10 candidates with ids drawn from a small range (so duplicates happen), zones z0..z3 or
/// none, and arbitrary load, including cpu readings no datanode should send.
fn random_candidates(rng: &mut Lcg) -> Vec<Candidate> {
    let count = rng.below(11);
    (0..count)
        .map(|_| {
            let mut c = Candidate::new(1 + rng.below(16));
            let zone = rng.below(5);
            if zone < 4 {
                c = c.with_label(SPREAD_LABEL, format!("z{zone}"));
            }
            c.region_count = rng.below(200);
            c.rcus = rng.below(5_000);
            c.wcus = rng.below(5_000);
            c.cpu_usage = match rng.below(20) {
                0 => f64::NAN,
                1 => -1.0,
                n => n as f64 / 4.0,
            };
            c
        })
        .collect()
}

fn random_request(rng: &mut Lcg) -> PlacementRequest {
    PlacementRequest {
        table_id: rng.below(1_000),
        region_numbers: (0..rng.below(17)).map(|_| rng.below(64) as u32).collect(),
        followers: rng.below(5) as u32,
    }
}

/// The error the documented rules demand for these inputs, if any.
fn expected_error(candidates: &[Candidate], request: &PlacementRequest) -> Option<SelectError> {
    let distinct: BTreeSet<u64> = candidates.iter().map(|c| c.node_id).collect();
    let needed = request.followers as usize + 1;
    if request.region_numbers.is_empty() {
        Some(SelectError::NoRegions)
    } else if candidates.is_empty() {
        Some(SelectError::NoCandidates)
    } else if distinct.len() < needed {
        Some(SelectError::NotEnoughNodes {
            needed,
            followers: request.followers,
            available: distinct.len(),
        })
    } else {
        None
    }
}

/// The same candidates in a random order. Entries sharing an id keep their relative order, so
/// "first entry for an id wins" still picks the same one.
fn reordered(candidates: &[Candidate], rng: &mut Lcg) -> Vec<Candidate> {
    let rank: BTreeMap<u64, u64> = candidates
        .iter()
        .map(|c| (c.node_id, rng.next_u64()))
        .collect();
    let mut out = candidates.to_vec();
    // A stable sort: equal ranks (same id) stay in input order.
    out.sort_by_key(|c| rank[&c.node_id]);
    out
}

#[test]
fn every_selector_keeps_its_invariants_on_random_clusters() {
    let mut placed = 0;
    for seed in 0..CASES {
        let mut rng = Lcg::new(seed);
        let candidates = random_candidates(&mut rng);
        let request = random_request(&mut rng);
        let expected = expected_error(&candidates, &request);
        for kind in SelectorKind::ALL {
            let result = kind.build(SPREAD_LABEL).select(&candidates, &request);
            let context = format!("seed {seed}, {kind}: {candidates:?} {request:?}");
            match (&expected, &result) {
                (Some(want), Err(got)) => assert_eq!(want, got, "{context}"),
                (None, Ok(p)) => {
                    assert_valid(&candidates, &request, p);
                    placed += 1;
                }
                _ => panic!("expected {expected:?}, got {result:?}; {context}"),
            }
            // Deterministic, and blind to the order the caller listed nodes in.
            let again = kind.build(SPREAD_LABEL).select(&candidates, &request);
            assert_eq!(result, again, "{context}");
            let shuffled = reordered(&candidates, &mut rng);
            let other_order = kind.build(SPREAD_LABEL).select(&shuffled, &request);
            assert_eq!(result, other_order, "{context}");
        }
    }
    // The generator must actually exercise successful placements, not just errors.
    assert!(
        placed > CASES as usize,
        "only {placed} successful placements"
    );
}

#[test]
fn label_aware_uses_as_many_zones_per_region_as_it_can() {
    for seed in 0..CASES {
        let mut rng = Lcg::new(seed);
        let candidates = random_candidates(&mut rng);
        let request = random_request(&mut rng);
        let Ok(p) = SelectorKind::LabelAware
            .build(SPREAD_LABEL)
            .select(&candidates, &request)
        else {
            continue;
        };
        let zone_of = |id: u64| {
            let c = candidates.iter().find(|c| c.node_id == id).unwrap();
            c.label(SPREAD_LABEL)
        };
        // Zones as the selector sees them: the first entry for each id.
        let mut seen = BTreeSet::new();
        let zones: BTreeSet<&str> = candidates
            .iter()
            .filter(|c| seen.insert(c.node_id))
            .map(|c| c.label(SPREAD_LABEL))
            .collect();
        let want = zones.len().min(request.followers as usize + 1);
        for r in &p.regions {
            let used: BTreeSet<&str> = r.replicas().map(zone_of).collect();
            assert_eq!(used.len(), want, "seed {seed}: {r:?}");
        }
    }
}

#[test]
fn a_long_lived_selector_stays_valid_across_many_tables() {
    let mut rng = Lcg::new(7);
    for kind in SelectorKind::ALL {
        let mut selector = kind.build(SPREAD_LABEL);
        for table in 0..500 {
            let candidates = random_candidates(&mut rng);
            let mut request = random_request(&mut rng);
            request.table_id = table;
            if let Ok(p) = selector.select(&candidates, &request) {
                assert_valid(&candidates, &request, &p);
            }
        }
    }
}

/// A random cluster of 2 to 6 nodes (half of them with capacity labels 1 to 3) leading
/// `per_capacity(rng)` regions per unit of capacity each (`None`: a random 0 to 40), with sizes
/// skewed by node (one node's regions up to 20× the others') and by region (1 to 8 MiB).
fn skewed_cluster(rng: &mut Lcg, per_capacity: Option<usize>) -> crate::ClusterSnapshot {
    use crate::{NodeView, CAPACITY_LABEL};
    let count = 2 + rng.below(5);
    let caps: Vec<u64> = (0..count)
        .map(|_| match rng.below(4) {
            0 => 2,
            1 => 3,
            _ => 1,
        })
        .collect();
    let held: Vec<(u64, usize)> = (1..=count)
        .zip(&caps)
        .map(|(n, c)| match per_capacity {
            Some(k) => (n, k * *c as usize),
            None => (n, rng.below(40) as usize),
        })
        .collect();
    let mut snap = crate::test_support::snapshot(count, &held);
    for (n, c) in snap.nodes.iter_mut().zip(&caps) {
        if *c > 1 {
            *n = NodeView::new(n.node_id).with_label(CAPACITY_LABEL, c.to_string());
        }
    }
    let heavy = 1 + rng.below(count);
    let factor = 1 + rng.below(20);
    for r in snap.regions.list_mut() {
        let base = 1 + rng.below(8);
        let mib = if r.leader == heavy {
            base * factor
        } else {
            base
        };
        r.approximate_bytes = mib << 20;
    }
    snap
}

/// Largest minus smallest bytes led per unit of capacity, and what balance-region tolerates:
/// its size band or floor, plus two largest regions (regions come in whole sizes).
fn size_spread(snap: &crate::ClusterSnapshot) -> (f64, f64) {
    use crate::{NodeView, SIZE_GAP_REGIONS_MIN, SIZE_TOLERANCE_DEFAULT};
    let bytes = crate::test_support::led_sum(snap, |r| r.approximate_bytes as f64);
    let caps: Vec<f64> = snap.nodes.iter().map(NodeView::capacity).collect();
    let total: f64 = bytes.iter().sum();
    let mean = total / caps.iter().sum::<f64>();
    let region_mean = total / snap.regions.len().max(1) as f64;
    let d: Vec<f64> = bytes.iter().zip(&caps).map(|(b, c)| b / c).collect();
    let lo = d.iter().cloned().fold(f64::MAX, f64::min);
    let hi = d.iter().cloned().fold(f64::MIN, f64::max);
    let largest = snap
        .regions
        .iter()
        .map(|r| r.approximate_bytes as f64)
        .fold(0.0, f64::max);
    let band = (SIZE_TOLERANCE_DEFAULT * mean).max(SIZE_GAP_REGIONS_MIN * region_mean);
    (hi - lo, band + 2.0 * largest)
}

/// Counts at their shares and sizes skewed, every scheduler on: passes until quiet never move a
/// copy back to a node it left (size moves keep counts within band, so the count rule never
/// answers them, and never take a node across the mean density, so they never answer each
/// other), counts stay, and the bytes per capacity end within the size band.
#[test]
fn every_scheduler_evens_out_skewed_sizes_without_flapping() {
    use crate::test_support::{led_counts, plan_until_quiet};
    let mut size_moves = 0;
    for seed in 0..300 {
        let mut rng = Lcg::new(seed);
        let per_capacity = 1 + rng.below(60) as usize;
        let mut snap = skewed_cluster(&mut rng, Some(per_capacity));
        let counts = led_counts(&snap);
        let (spread_before, _) = size_spread(&snap);
        let schedulers = crate::Schedulers::default();
        size_moves += plan_until_quiet(&mut snap, |s| schedulers.plan(s));
        let after = led_counts(&snap);
        for (a, b) in counts.iter().zip(&after) {
            assert!(
                a.abs_diff(*b) <= 1 + a / 50,
                "seed {seed}: {counts:?} -> {after:?}"
            );
        }
        let (spread, allowed) = size_spread(&snap);
        // A region more than any move may shift without taking a node across the mean stays:
        // with a few big regions a node, that can leave a node up to two regions out.
        assert!(
            spread <= spread_before,
            "seed {seed}: {spread_before} -> {spread}"
        );
        assert!(spread <= allowed, "seed {seed}: {spread} > {allowed}");
    }
    assert!(
        size_moves > 1_000,
        "only {size_moves} size moves: not exercised"
    );
}

/// Random counts and skewed sizes: count moves come first, then size moves. A size move may
/// take back a region a count move brought (the size rule cannot tell), but never more than
/// once: after the first size move the count rule stays quiet and every size move lowers the
/// spread of densities, so nothing ping-pongs and the passes end.
#[test]
fn count_then_size_moves_end_and_return_a_region_at_most_once() {
    use crate::test_support::{apply, led_counts};
    let mut returns = 0;
    for seed in 0..300 {
        let mut rng = Lcg::new(seed);
        let mut snap = skewed_cluster(&mut rng, None);
        snap.region_cooldown_ms = 3_600_000;
        let schedulers = crate::Schedulers::default();
        let mut moved: std::collections::HashMap<u64, Vec<u64>> = Default::default();
        let mut quiet = false;
        for _ in 0..200 {
            let mut ops = schedulers.plan(&snap);
            if ops.is_empty() {
                snap.now_ms += snap.region_cooldown_ms;
                ops = schedulers.plan(&snap);
                if ops.is_empty() {
                    quiet = true;
                    break;
                }
            }
            for op in &ops {
                let path = moved.entry(op.region_id).or_insert_with(|| vec![op.from]);
                if path.contains(&op.to) {
                    returns += 1;
                }
                path.push(op.to);
                let back = path.iter().filter(|n| **n == op.to).count();
                assert!(back <= 2, "seed {seed}: {op:?} after {path:?}");
                apply(&mut snap, op);
            }
            snap.now_ms += 1_000;
        }
        assert!(quiet, "seed {seed}: still planning after 200 passes");
        let counts = led_counts(&snap);
        let caps: Vec<f64> = snap.nodes.iter().map(crate::NodeView::capacity).collect();
        let share = counts.iter().sum::<usize>() as f64 / caps.iter().sum::<f64>();
        for (c, cap) in counts.iter().zip(&caps) {
            assert!(
                (*c as f64 - share * cap).abs() < 2.0,
                "seed {seed}: {counts:?}"
            );
        }
    }
    assert_eq!(returns, 0, "regions came back");
}

/// A random cluster of 3 to 6 nodes in 1 to 3 zones, some with capacity labels, leading random
/// counts of regions (0 to 40 each) with 0 to 2 followers each, sizes of 1 to 8 MiB and, in
/// half the cases, random write and read loads (some regions 10× the rest).
fn zoned_cluster(rng: &mut Lcg) -> crate::ClusterSnapshot {
    use crate::{NodeView, CAPACITY_LABEL};
    let count = 3 + rng.below(4);
    let zones = 1 + rng.below(3);
    let held: Vec<(u64, usize)> = (1..=count).map(|n| (n, rng.below(40) as usize)).collect();
    let mut snap = crate::test_support::snapshot(count, &held);
    for (i, n) in snap.nodes.iter_mut().enumerate() {
        let mut v = NodeView::new(n.node_id);
        if zones > 1 {
            v = v.with_label(SPREAD_LABEL, format!("z{}", i as u64 % zones));
        }
        if rng.below(4) == 0 {
            v = v.with_label(CAPACITY_LABEL, "2");
        }
        *n = v;
    }
    let followers = rng.below(3);
    let loads = rng.below(2) == 0;
    for r in snap.regions.list_mut() {
        r.approximate_bytes = (1 + rng.below(8)) << 20;
        if loads {
            let hot = if rng.below(10) == 0 { 10.0 } else { 1.0 };
            r.wcus = rng.below(100) as f64 * hot;
            r.rcus = rng.below(100) as f64 * hot;
        }
        let mut f = Vec::new();
        while (f.len() as u64) < followers.min(count - 1) {
            let n = 1 + rng.below(count);
            if n != r.leader && !f.contains(&n) {
                f.push(n);
            }
        }
        r.followers = f.into();
    }
    snap
}

/// Any start (counts, zones, capacities, followers, loads far from even), every scheduler on,
/// nothing changing between passes: the passes end, and no copy ever goes back to a node it
/// left, neither within the cool-down nor after it, whichever schedulers made the two moves.
#[test]
fn from_any_start_no_copy_ever_returns_to_a_node_it_left() {
    use crate::test_support::plan_until_quiet;
    let mut moves = 0;
    for seed in 0..2_000 {
        let mut rng = Lcg::new(seed);
        let mut snap = zoned_cluster(&mut rng);
        let schedulers = crate::Schedulers::default();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            plan_until_quiet(&mut snap, |s| schedulers.plan(s))
        }));
        match run {
            Ok(n) => moves += n,
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!("seed {seed}: {}", why.unwrap_or_default());
            }
        }
    }
    assert!(moves > 10_000, "only {moves} moves: not exercised");
}
