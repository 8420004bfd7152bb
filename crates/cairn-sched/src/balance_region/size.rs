//! balance-region's size rule: once counts are within their band, even out the bytes each node
//! holds per unit of capacity (its *density*), as TiKV PD counts region size in a store's score.
//! Two nodes with equal counts and ten times the bytes otherwise never move anything. Leaders and
//! follower copies are evened out separately, each in step with its own count rule: a follower
//! copy holds the region's data as its leader does, so disks fill through either.
//!
//! # When it moves
//! Only while the count rule has nothing to do for that role (no pair it would move between,
//! limits aside), and only by moves that leave it so: a single move when the counts stay quiet
//! after it, else a swap (one region each way, counts unchanged). So the count rule never moves
//! after a size move, and the size rule never moves while counts are out of their band.
//!
//! The mean density is the bytes held by the nodes sharing the role's copies (for leaders,
//! schedulable and going nodes: failover or the drain brings the going nodes' regions, as for
//! the shares; for follower copies, schedulable ones) over the schedulable nodes' capacity. A
//! region with no size reported yet (0 bytes: its leader's heartbeat has not come since it
//! started or the region moved) counts as a mean one and never moves for size. A node
//! above the mean gives to one below it when their densities differ by more than
//! `size_tolerance` × the mean and by at least [`SIZE_GAP_REGIONS_MIN`] mean regions (a few
//! regions' worth of bytes is noise as regions grow). The bytes a move shifts are at most what
//! brings either node to the mean: nodes above the mean stay at or above it, nodes below at or
//! below, so no size move is ever reversed by another. A region larger than the mean region
//! goes down (above the mean to below), and in a swap one smaller than the mean region comes
//! back: a region never qualifies for both directions.
//!
//! Like the count moves, size moves respect the cool-down, busy and queued regions, the spread
//! rules and the limits (a swap needs two moves of budget on both nodes); leader moves never
//! leave the target above hot-region's hot limit, so hot-region has no reason to move one back
//! (a follower copy carries no load in the tally).

use crate::cluster::Tally;
use crate::operator::{MoveKind, Operator, Priority};

use super::{NAME, REGIONS_EXAMINED_MAX, REGION_CANDIDATES_SCANNED_MAX};

/// Default dead band of densities (bytes held in a role per unit of capacity), as a fraction of the mean:
/// sizes drift as regions grow, so a tighter band would keep regions moving.
pub const SIZE_TOLERANCE_DEFAULT: f64 = 0.1;
/// Densities closer than this many mean regions' bytes are never evened out, whatever the
/// tolerance: small clusters and tiny regions are left alone.
pub const SIZE_GAP_REGIONS_MIN: f64 = 4.0;
/// How far above the mean load (in hot tolerances) a size move may leave its target: not above
/// the hot limit (counts are already even, so there is no share of hot regions to take).
const SIZE_MOVE_LOAD_BANDS: f64 = 1.0;

/// Node `i`'s bytes in `kind`'s role, a region with no size reported yet counted as a mean one:
/// a node whose heartbeat has not come yet, or regions just handed to it, must not look light.
fn bytes(t: &Tally, i: usize, kind: MoveKind) -> f64 {
    let held = t.nodes[i].held_bytes(kind);
    held.bytes as f64 + held.unknown as f64 * t.mean_sized_region
}

/// Node `i`'s bytes in `kind`'s role per unit of capacity (see [`bytes`]).
fn density(t: &Tally, i: usize, kind: MoveKind) -> f64 {
    bytes(t, i, kind) / t.nodes[i].capacity
}

/// Plans size moves of leaders, then of follower copies, into `t` (see the module docs);
/// `count_tolerance` is the count rule's.
pub(super) fn balance_sizes(t: &mut Tally, count_tolerance: f64, size_tolerance: f64) {
    for kind in [MoveKind::Leader, MoveKind::Follower] {
        balance_kind(t, kind, count_tolerance, size_tolerance);
    }
}

fn balance_kind(t: &mut Tally, kind: MoveKind, count_tolerance: f64, size_tolerance: f64) {
    let nodes: Vec<usize> = t.schedulable().collect();
    let region_mean = t.mean_sized_region;
    if nodes.len() < 2 || region_mean <= 0.0 {
        return;
    }
    if !counts_quiet(t, &nodes, kind, count_tolerance, None) {
        return;
    }
    let cap_sum: f64 = nodes.iter().map(|i| t.nodes[*i].capacity).sum();
    // The nodes sharing the role's copies, as for the count shares (`Tally::share`).
    let shares =
        |i: usize| t.nodes[i].schedulable || (kind == MoveKind::Leader && t.snap.nodes[i].going);
    let total: f64 = (0..t.nodes.len())
        .filter(|i| shares(*i))
        .map(|i| bytes(t, i, kind))
        .sum();
    if total <= 0.0 {
        return;
    }
    let mean = total / cap_sum;
    let band = (size_tolerance * mean).max(SIZE_GAP_REGIONS_MIN * region_mean);
    // Sources with nothing left to give this pass.
    let mut spent = vec![false; t.nodes.len()];
    while t.moves_left > 0 {
        let open = |t: &Tally, i: usize| t.nodes[i].moves_left > 0;
        let Some(src) = nodes
            .iter()
            .copied()
            .filter(|i| open(t, *i) && !spent[*i] && density(t, *i, kind) > mean)
            .max_by(|a, b| {
                density(t, *a, kind)
                    .total_cmp(&density(t, *b, kind))
                    .then(b.cmp(a))
            })
        else {
            return;
        };
        let mut targets: Vec<usize> = nodes
            .iter()
            .copied()
            .filter(|i| *i != src && open(t, *i) && density(t, *i, kind) < mean)
            .filter(|i| density(t, src, kind) - density(t, *i, kind) > band)
            .collect();
        targets.sort_by(|a, b| {
            density(t, *a, kind)
                .total_cmp(&density(t, *b, kind))
                .then(a.cmp(b))
        });
        let chosen = targets.iter().find_map(|&dst| {
            let pair = Pair { kind, src, dst };
            pick(t, &nodes, count_tolerance, mean, pair).map(|moves| (moves, dst))
        });
        let Some(((give, take), dst)) = chosen else {
            spent[src] = true;
            continue;
        };
        let op = operator(t, give, Pair { kind, src, dst }, mean, take.is_some());
        t.apply(op, give, src, dst);
        if let Some(back) = take {
            let pair = Pair {
                kind,
                src: dst,
                dst: src,
            };
            let op = operator(t, back, pair, mean, true);
            t.apply(op, back, dst, src);
        }
    }
}

/// One size move's role and nodes: a copy of `kind` from `src` to `dst`.
#[derive(Clone, Copy)]
struct Pair {
    kind: MoveKind,
    src: usize,
    dst: usize,
}

/// Whether the count rule would plan no `kind` move, with `moved` (from, to) applied first:
/// no node under its share that some other node exceeds by more than one region, with either
/// one outside its band (the count rule's condition, limits aside).
fn counts_quiet(
    t: &Tally,
    nodes: &[usize],
    kind: MoveKind,
    tolerance: f64,
    moved: Option<(usize, usize)>,
) -> bool {
    let dev = |i: usize| {
        let shift = match moved {
            Some((from, _)) if from == i => -1.0,
            Some((_, to)) if to == i => 1.0,
            _ => 0.0,
        };
        t.count(i, kind) as f64 + shift - t.share(i, kind)
    };
    let band = |i: usize| tolerance * t.share(i, kind);
    let max_dev = nodes.iter().map(|i| dev(*i)).fold(f64::MIN, f64::max);
    let max_over_band = nodes
        .iter()
        .filter(|i| dev(**i) > band(**i))
        .map(|i| dev(*i))
        .fold(f64::MIN, f64::max);
    !nodes.iter().any(|&b| {
        let d = dev(b);
        d < 0.0 && ((-d > band(b) && max_dev - d > 1.0) || max_over_band - d > 1.0)
    })
}

/// The region `src` gives `dst` and, for a swap, the one it takes back: a single move when the
/// counts stay quiet, else a swap. The largest region above the mean region that shifts no more
/// than brings either node to the mean density (for a swap, net of the smallest region below
/// the mean region `dst` can give back).
fn pick(
    t: &Tally,
    nodes: &[usize],
    count_tolerance: f64,
    mean: f64,
    pair: Pair,
) -> Option<(usize, Option<usize>)> {
    let Pair { kind, src, dst } = pair;
    let (s, d) = (&t.nodes[src], &t.nodes[dst]);
    let room = ((density(t, src, kind) - mean) * s.capacity)
        .min((mean - density(t, dst, kind)) * d.capacity);
    let region_mean = t.mean_sized_region;
    let regions = &t.snap.regions;
    let size = |r: usize| regions.load(r).approximate_bytes as f64;
    // Each pass (a second or more apart) starts the scan further on, as the count moves do.
    let start = (t.snap.now_ms / 1_000) as usize * REGIONS_EXAMINED_MAX;
    // A follower copy carries no load in the tally.
    let movable = |r: usize, from: usize, to: usize| {
        t.may_balance(r, kind, from, to)
            && (kind != MoveKind::Leader || t.load_fits(r, to, SIZE_MOVE_LOAD_BANDS))
    };
    // The largest region above the mean region `src` can give `dst` within `limit` bytes.
    let give = |limit: f64| {
        t.held_from(src, kind, start)
            .take(REGIONS_EXAMINED_MAX)
            .filter(|r| size(*r) > region_mean && size(*r) <= limit && movable(*r, src, dst))
            .take(REGION_CANDIDATES_SCANNED_MAX)
            .max_by(|a, b| {
                size(*a)
                    .total_cmp(&size(*b))
                    .then(regions.region_id(*b).cmp(&regions.region_id(*a)))
            })
    };
    if t.has_budget(src, dst) && counts_quiet(t, nodes, kind, count_tolerance, Some((src, dst))) {
        if let Some(r) = give(room) {
            return Some((r, None));
        }
    }
    let budget = t.moves_left >= 2 && s.moves_left >= 2 && d.moves_left >= 2;
    if !budget {
        return None;
    }
    // Each leg is checked before either is applied: the other leg only frees room (a leader
    // per zone, load), so both still hold together.
    let back = t
        .held_from(dst, kind, start)
        .take(REGIONS_EXAMINED_MAX)
        .filter(|r| size(*r) > 0.0 && size(*r) < region_mean && movable(*r, dst, src))
        .take(REGION_CANDIDATES_SCANNED_MAX)
        .min_by(|a, b| {
            size(*a)
                .total_cmp(&size(*b))
                .then(regions.region_id(*a).cmp(&regions.region_id(*b)))
        })?;
    give(room + size(back)).map(|r| (r, Some(back)))
}

fn operator(t: &Tally, region: usize, pair: Pair, mean: f64, swap: bool) -> Operator {
    let Pair {
        kind,
        src: from,
        dst: to,
    } = pair;
    let regions = &t.snap.regions;
    let mib = |x: f64| x / (1 << 20) as f64;
    let role = if kind == MoveKind::Leader {
        "leads"
    } else {
        "holds follower copies of"
    };
    Operator {
        region_id: regions.region_id(region),
        kind,
        from: t.id(from),
        to: t.id(to),
        to_follows: false,
        scheduler: NAME,
        priority: Priority::Low,
        reason: format!(
            "node {} {role} {:.1} MiB per unit of capacity, node {} {:.1}, against a mean of {:.1}{}",
            t.id(from),
            mib(density(t, from, kind)),
            t.id(to),
            mib(density(t, to, kind)),
            mib(mean),
            if swap { " (a swap: counts stay)" } else { "" },
        ),
        figures: vec![
            ("from_bytes", t.nodes[from].held_bytes(kind).bytes.to_string()),
            ("to_bytes", t.nodes[to].held_bytes(kind).bytes.to_string()),
            ("mean_bytes_per_capacity", format!("{mean:.0}")),
            (
                "region_bytes",
                regions.load(region).approximate_bytes.to_string(),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance_region::BalanceRegion;
    use crate::cluster::{ClusterSnapshot, NodeView, CAPACITY_LABEL};
    use crate::schedule::Schedule;
    use crate::test_support::{led_counts, led_sum, plan_until_quiet, snapshot};

    const MIB: u64 = 1 << 20;

    fn plan_with(b: &BalanceRegion, snap: &ClusterSnapshot) -> Vec<Operator> {
        let mut t = Tally::new(snap);
        b.schedule(&mut t);
        t.planned
    }

    fn plan(snap: &ClusterSnapshot) -> Vec<Operator> {
        plan_with(&BalanceRegion::default(), snap)
    }

    /// Each node's MiB led per unit of capacity, in node order.
    fn densities(snap: &ClusterSnapshot) -> Vec<f64> {
        let bytes = led_sum(snap, |r| r.approximate_bytes as f64);
        let caps = snap.nodes.iter().map(NodeView::capacity);
        bytes
            .iter()
            .zip(caps)
            .map(|(b, c)| b / c / MIB as f64)
            .collect()
    }

    /// Largest minus smallest density, over the mean density.
    fn spread(snap: &ClusterSnapshot) -> f64 {
        let d = densities(snap);
        let caps: f64 = snap.nodes.iter().map(NodeView::capacity).sum();
        let total: f64 = led_sum(snap, |r| r.approximate_bytes as f64).iter().sum();
        let mean = total / caps / MIB as f64;
        let (lo, hi) = d
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        (hi - lo) / mean
    }

    /// Sets the size of the regions each node leads now, in MiB.
    fn sizes(snap: &mut ClusterSnapshot, mib: impl Fn(u64) -> u64) {
        for r in snap.regions.list_mut() {
            r.approximate_bytes = mib(r.leader) * MIB;
        }
    }

    #[test]
    fn equal_counts_with_the_big_regions_on_one_node_are_evened_by_swaps() {
        let mut snap = snapshot(3, &[(1, 12), (2, 12), (3, 12)]);
        sizes(&mut snap, |n| if n == 1 { 10 } else { 1 });
        assert!(spread(&snap) > 1.0);
        let moves = plan_until_quiet(&mut snap, plan);
        assert_eq!(
            led_counts(&snap),
            [12, 12, 12],
            "counts never leave their band"
        );
        assert!(
            spread(&snap) <= SIZE_TOLERANCE_DEFAULT,
            "{:?}",
            densities(&snap)
        );
        // 8 big regions out and 8 small ones back: exactly the minimum.
        assert_eq!(moves, 16);
    }

    #[test]
    fn balanced_close_or_tiny_differences_plan_nothing() {
        let mut snap = snapshot(2, &[(1, 100), (2, 100)]);
        sizes(&mut snap, |_| 1);
        assert!(plan(&snap).is_empty(), "balanced");
        // 5% apart, under the 10% tolerance.
        for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
            r.approximate_bytes = if i < 100 { 105 } else { 100 } * MIB / 100;
        }
        assert!(plan(&snap).is_empty(), "within tolerance");
        // With no tolerance at all, a gap of two regions' worth is still under the floor.
        let mut b = BalanceRegion::default();
        b.set("size_tolerance", "0").unwrap();
        let mut snap = snapshot(2, &[(1, 8), (2, 8)]);
        sizes(&mut snap, |_| 1);
        snap.regions.list_mut()[0].approximate_bytes = 3 * MIB;
        assert!(plan_with(&b, &snap).is_empty(), "under the floor");
        snap.regions.list_mut()[1].approximate_bytes = 5 * MIB;
        assert!(!plan_with(&b, &snap).is_empty(), "over the floor");
    }

    #[test]
    fn regions_with_no_size_reported_count_as_mean_ones() {
        // Node 2's heartbeat has not come yet: its regions show 0 bytes, not a light node.
        let mut snap = snapshot(2, &[(1, 12), (2, 12)]);
        sizes(&mut snap, |n| if n == 1 { 10 } else { 0 });
        assert!(plan(&snap).is_empty(), "{:?}", plan(&snap));
        // A node with some of its regions unsized is judged on the sized ones plus means.
        sizes(&mut snap, |n| if n == 1 { 10 } else { 1 });
        for r in snap.regions.list_mut().iter_mut().skip(12).take(6) {
            r.approximate_bytes = 0;
        }
        let ops = plan(&snap);
        assert!(!ops.is_empty());
        let unsized_moved = ops.iter().any(|o| {
            let r = snap.regions.iter().find(|r| r.region_id == o.region_id);
            r.unwrap().approximate_bytes == 0
        });
        assert!(!unsized_moved, "{ops:?}");
    }

    #[test]
    fn the_capacity_label_weights_the_bytes_too() {
        // Node 2 has twice the capacity and twice the regions: the same bytes per capacity.
        let mut snap = snapshot(2, &[(1, 10), (2, 20)]);
        snap.nodes[1] = NodeView::new(2).with_label(CAPACITY_LABEL, "2");
        sizes(&mut snap, |_| 1);
        assert!(plan(&snap).is_empty());
        // Its regions twice the size: 20 MiB per capacity against node 1's 10.
        sizes(&mut snap, |n| n);
        let moves = plan_until_quiet(&mut snap, plan);
        assert_eq!(led_counts(&snap), [10, 20]);
        let d = densities(&snap);
        // Swaps of 1 MiB net until the gap is under the floor: 4 mean regions (50 MiB / 30).
        assert!(d[1] - d[0] < SIZE_GAP_REGIONS_MIN * 50.0 / 30.0, "{d:?}");
        assert_eq!(d, [13.0, 18.5]);
        assert_eq!(moves, 6, "3 swaps");
    }

    #[test]
    fn single_moves_stay_within_the_count_band_and_a_node_over_its_share_only_swaps() {
        // Shares of 100 and a band of 2: node 3 is 2 over (within it), node 2 is 2 under.
        let mut snap = snapshot(3, &[(1, 100), (2, 98), (3, 102)]);
        sizes(&mut snap, |n| if n == 1 { 3 } else { 1 });
        let ops = plan(&snap);
        let singles =
            ops.iter().filter(|o| o.to == 2).count() - ops.iter().filter(|o| o.from == 2).count();
        assert_eq!(singles, 2, "node 2 takes 2 more than it gives: {ops:?}");
        let into_3 = ops.iter().filter(|o| o.to == 3).count();
        assert_eq!(into_3, ops.iter().filter(|o| o.from == 3).count());
        plan_until_quiet(&mut snap, plan);
        let counts = led_counts(&snap);
        assert_eq!(counts[2], 102, "{counts:?}");
        assert!(counts.iter().all(|c| c.abs_diff(100) <= 2), "{counts:?}");
        assert!(
            spread(&snap) <= SIZE_TOLERANCE_DEFAULT,
            "{:?}",
            densities(&snap)
        );
    }

    /// MiB held as follower copies per node, in node order.
    fn followed_mib(snap: &ClusterSnapshot) -> Vec<f64> {
        snap.nodes
            .iter()
            .map(|n| {
                let held = snap
                    .regions
                    .iter()
                    .filter(|r| r.followers.contains(&n.node_id));
                held.map(|r| r.approximate_bytes as f64).sum::<f64>() / MIB as f64
            })
            .collect()
    }

    #[test]
    fn follower_copies_are_evened_out_by_size_too_with_leaders_untouched() {
        // Each node leads 6 regions of 10 MiB and 6 of 1 MiB: leaders are even in count and
        // bytes. Follower copies are even in count (12 each) but node 1 follows only big
        // regions, node 2 only small ones: 120 MiB, 12 and 66.
        let mut snap = snapshot(3, &[(1, 12), (2, 12), (3, 12)]);
        for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
            let big = i % 12 < 6;
            r.approximate_bytes = if big { 10 } else { 1 } * MIB;
            let follower = match (r.leader, big) {
                (1, true) => 3,
                (1, false) => 2,
                (2, true) => 1,
                (2, false) => 3,
                (3, true) => 1,
                _ => 2,
            };
            r.followers = vec![follower].into();
        }
        let leaders_before = led_sum(&snap, |r| r.approximate_bytes as f64);
        assert_eq!(followed_mib(&snap), [120.0, 12.0, 66.0]);
        let ops = plan(&snap);
        assert!(!ops.is_empty());
        assert!(ops.iter().all(|o| o.kind == MoveKind::Follower), "{ops:?}");
        assert!(
            ops[0].reason.contains("follower copies"),
            "{}",
            ops[0].reason
        );
        plan_until_quiet(&mut snap, plan);
        assert_eq!(
            led_sum(&snap, |r| r.approximate_bytes as f64),
            leaders_before
        );
        let followed = |n: u64| {
            snap.regions
                .iter()
                .filter(|r| r.followers.contains(&n))
                .count()
        };
        assert_eq!([followed(1), followed(2), followed(3)], [12, 12, 12]);
        // Within the floor of 4 mean regions (5.5 MiB each), from a gap of 108 MiB.
        let mib = followed_mib(&snap);
        let (lo, hi) = mib
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
        assert!(hi - lo <= SIZE_GAP_REGIONS_MIN * 5.5, "{mib:?}");
        for r in snap.regions.iter() {
            assert!(!r.followers.contains(&r.leader), "{r:?}");
        }
    }

    #[test]
    fn size_moves_respect_limits_cooldowns_and_wait_for_counts() {
        let mut snap = snapshot(2, &[(1, 12), (2, 12)]);
        sizes(&mut snap, |n| if n == 1 { 10 } else { 1 });
        snap.moves_left = 1;
        assert!(plan(&snap).is_empty(), "a swap needs two moves");
        snap.moves_left = 100;
        snap.node_moves_left.insert(2, 3);
        assert_eq!(plan(&snap).len(), 2, "one swap within node 2's 3 moves");
        snap.node_moves_left.clear();
        snap.region_cooldown_ms = 60_000;
        for r in snap.regions.iter().filter(|r| r.leader == 2) {
            snap.last_moved_ms.insert(r.region_id, snap.now_ms);
        }
        assert!(plan(&snap).is_empty(), "node 2's small regions are cooling");
        snap.last_moved_ms.clear();
        // Counts out of their band: only count moves, none of them a size rule's swap.
        let mut snap = snapshot(3, &[(1, 12), (2, 12)]);
        sizes(&mut snap, |n| if n == 1 { 10 } else { 1 });
        snap.moves_left = 3;
        let ops = plan(&snap);
        assert!(ops.iter().all(|o| o.to == 3), "{ops:?}");
    }
}
