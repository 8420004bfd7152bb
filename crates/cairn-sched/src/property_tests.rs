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
