//! hot-region: even out write load (wcus), then read load (rcus), across datanodes, from the
//! smoothed region stats the leader keeps (a moment's burst does not move anything).
//!
//! # When it moves
//! A node is hot when its load per unit of capacity is above `(1 + tolerance)` times the mean,
//! in a dimension whose mean is at least `min_load` (below that, load is noise). A node leading
//! more than one region over its share of regions is judged on the load its share would carry
//! (`load × share / count`): balance-region moves the surplus off in step with load, and a hot
//! move on top would be a trade the count moves then undo. A node's own stats reports must show
//! its load has lasted: where they are known, it gives only if each of its recent reports (its
//! stats history) reached `sustained_share` (a half) of its highest ([`Tally::sustained`]), so a
//! node that has just heated up waits until the heat lasts. The hottest such
//! node gives the coolest one (a node short of its share of regions by more than one is left to
//! balance-region, which fills it coolest regions first) one region: the one whose load comes
//! nearest to equalising the two,
//! among those that leave the target below the hot limit, or, where no region is small enough
//! for that, a tolerance band below the source's load (so the move cannot be reversed).
//! If that would leave the pair's region counts out of balance-region's band, the coolest region
//! the target leads goes back the other way in the same pass (a swap), so balance-region has
//! nothing to undo. Read moves also keep the target below the write limit.

use crate::cluster::Tally;
use crate::operator::{MoveKind, Operator, Priority};
use crate::schedule::{fraction, unknown_param, ConfigError, Schedule};

pub(crate) const NAME: &str = "hot-region";
/// Default: a node more than 10 % above the mean load is hot.
pub const HOT_TOLERANCE_DEFAULT: f64 = 0.1;
/// Default mean load (capacity units per second per node) below which load is not balanced.
pub const HOT_MIN_LOAD_DEFAULT: f64 = 10.0;
/// Hot moves one pass plans per dimension: load shifts with each move, so later moves wait for
/// fresh stats rather than trusting a long chain of estimates.
pub const HOT_OPERATORS_PER_PASS_MAX: usize = 32;
/// Default share of its highest recent report that every report of a hot node must reach for
/// its heat to count as lasting ([`Tally::sustained`]): a node whose load more than doubled
/// within the window has only just heated up, while a steady load that wavers by a third still
/// counts. 0 turns the check off.
pub const HOT_SUSTAINED_SHARE_DEFAULT: f64 = 0.5;

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct HotRegion {
    tolerance: f64,
    min_load: f64,
    sustained_share: f64,
}

impl Default for HotRegion {
    fn default() -> Self {
        HotRegion {
            tolerance: HOT_TOLERANCE_DEFAULT,
            min_load: HOT_MIN_LOAD_DEFAULT,
            sustained_share: HOT_SUSTAINED_SHARE_DEFAULT,
        }
    }
}

impl Schedule for HotRegion {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> &'static str {
        "moves regions off nodes whose smoothed write or read load is above the mean"
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tolerance", self.tolerance.to_string()),
            ("min_load", self.min_load.to_string()),
            ("sustained_share", self.sustained_share.to_string()),
        ]
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "tolerance" => self.tolerance = fraction(NAME, key, value, 0.01, 10.0)?,
            "min_load" => self.min_load = fraction(NAME, key, value, 0.0, 1e12)?,
            "sustained_share" => self.sustained_share = fraction(NAME, key, value, 0.0, 1.0)?,
            _ => {
                let known = ["tolerance", "min_load", "sustained_share"];
                return Err(unknown_param(NAME, key, &known));
            }
        }
        Ok(())
    }

    fn load_limits(&self) -> Option<(f64, f64)> {
        Some((self.tolerance, self.min_load))
    }

    fn schedule(&self, t: &mut Tally) {
        t.set_load_limits(self.tolerance, self.min_load);
        for write in [true, false] {
            for _ in 0..HOT_OPERATORS_PER_PASS_MAX {
                if !self.one_move(t, write) {
                    break;
                }
            }
        }
    }
}

fn load_of(r: crate::regions::RegionLoad, write: bool) -> f64 {
    if write {
        r.wcus
    } else {
        r.rcus
    }
}

impl HotRegion {
    /// Plans one move (maybe with its swap); false when there is nothing (more) to do.
    fn one_move(&self, t: &mut Tally, write: bool) -> bool {
        let limit = t.hot_limit(write);
        if !limit.is_finite() || t.moves_left == 0 {
            return false;
        }
        let open: Vec<usize> = t
            .schedulable()
            .filter(|i| t.nodes[*i].moves_left > 0)
            .collect();
        // The same share balance-region evens counts against.
        let share = |i: usize| t.share(i, MoveKind::Leader);
        // A node over its share of regions is judged on the load its share would carry:
        // balance-region moves the surplus off in step with load, and a hot move on top of it
        // would be a trade the counts then undo.
        let judged = |i: usize| {
            let count = t.count(i, MoveKind::Leader) as f64;
            let scale = if count > share(i) + 1.0 {
                share(i) / count
            } else {
                1.0
            };
            t.load(i, write) * scale
        };
        let by_load = |a: &usize, b: &usize| judged(*a).total_cmp(&judged(*b));
        // A node short of its share of regions by more than one is balance-region's to fill,
        // coolest regions first; sending it the hottest would leave it loaded but short, and
        // no cool region could then even out its count.
        let short = |i: usize| share(i) - t.count(i, MoveKind::Leader) as f64 > 1.0;
        // A source's own reports must bear out its heat (`Tally::sustained`).
        let (Some(src), Some(dst)) = (
            open.iter()
                .copied()
                .filter(|i| t.sustained(*i, write, self.sustained_share))
                .max_by(by_load),
            open.iter().copied().filter(|i| !short(*i)).min_by(by_load),
        ) else {
            return false;
        };
        if src == dst || judged(src) <= limit {
            return false;
        }
        let (cs, cd) = (t.nodes[src].capacity, t.nodes[dst].capacity);
        let gap = judged(src) - t.load(dst, write);
        // The region load that would leave both nodes equal.
        let ideal = gap / (1.0 / cs + 1.0 / cd);
        // Where the target may end in this dimension: below the hot limit, or, when a single
        // region is too hot for that (a few regions a node, one of them 10× the rest), a band
        // below where the source stood. Either way the pair's peak falls and the way back
        // would need the source below the target, so a move is never reversed; and each one
        // lowers the sum of squared loads, so the moves end.
        let band = limit * self.tolerance / (1.0 + self.tolerance);
        let ceiling = limit.max(judged(src) - band);
        let fits = |r: usize| {
            let load = load_of(t.snap.regions.load(r), write);
            t.load(dst, write) + load / cd <= ceiling && t.load_fits_in(r, dst, 1.0, !write)
        };
        let regions = &t.snap.regions;
        // The nearest to the ideal load of the regions that may move; the rule checks run only
        // on a region nearer than the best so far (a hot node may lead 100,000 regions).
        let mut pick: Option<(f64, usize)> = None;
        for r in t.held(src, MoveKind::Leader) {
            let load = load_of(regions.load(r), write);
            let d = (load - ideal).abs();
            if load <= 0.0 || pick.is_some_and(|(best, _)| d >= best) || !t.movable(r, false) {
                continue;
            }
            if !t.returns(r, dst) && t.can_move(r, MoveKind::Leader, src, dst) && fits(r) {
                pick = Some((d, r));
            }
        }
        let pick = pick.map(|(_, r)| r);
        let Some(region) = pick else {
            return false;
        };
        let moved = load_of(regions.load(region), write);
        let dim = if write { "wcus" } else { "rcus" };
        let mut figures = vec![
            ("dimension", dim.to_string()),
            ("from_load", format!("{:.1}", t.load(src, write))),
            ("from_judged_load", format!("{:.1}", judged(src))),
            ("to_load", format!("{:.1}", t.load(dst, write))),
            ("region_load", format!("{moved:.1}")),
            ("hot_limit", format!("{limit:.1}")),
        ];
        // What the source's own reports said, where they said anything.
        if let Some((low, high)) = t.reported_range(src, write) {
            figures.push(("from_reported_low", format!("{low:.1}")));
            figures.push(("from_reported_high", format!("{high:.1}")));
        }
        let reason = format!(
            "node {} carries {:.1} {dim} per unit of capacity for its share of regions, above \
             the hot limit {:.1}",
            t.id(src),
            judged(src),
            limit
        );
        // A move that would leave the pair's counts out of balance goes only with a swap: the
        // coolest region of the target back. Without one, no move (balance-region would have to
        // undo the count, and the target's regions may all be cooling down).
        let back = match swap_partner(t, src, dst, moved, write) {
            Ok(back) => back,
            Err(()) => return false,
        };
        let op = Operator {
            region_id: regions.region_id(region),
            kind: MoveKind::Leader,
            from: t.id(src),
            to: t.id(dst),
            // `can_move`: never to a node holding a copy.
            to_follows: false,
            scheduler: NAME,
            priority: Priority::Normal,
            reason,
            figures,
        };
        t.apply(op, region, src, dst);
        if let Some(back) = back {
            swap_back(t, src, dst, back, write);
        }
        true
    }
}

/// Whether moving a region of `moved` load from `src` to `dst` needs a swap, and with which
/// region of `dst`: Ok(None) when the counts stay within one region of each other, Err when a
/// swap is needed and none is possible.
fn swap_partner(
    t: &Tally,
    src: usize,
    dst: usize,
    moved: f64,
    write: bool,
) -> Result<Option<usize>, ()> {
    let (cs, cd) = (t.nodes[src].capacity, t.nodes[dst].capacity);
    let count = |i: usize| t.count(i, MoveKind::Leader) as f64;
    // In units of regions at the pair's mean capacity: more than one apart is unbalanced.
    let unit = 2.0 / (1.0 / cs + 1.0 / cd);
    if ((count(dst) + 1.0) / cd - (count(src) - 1.0) / cs) * unit <= 1.0 {
        return Ok(None);
    }
    if t.moves_left < 2 || !t.has_budget(dst, src) {
        return Err(());
    }
    let regions = &t.snap.regions;
    t.held(dst, MoveKind::Leader)
        .filter(|r| load_of(regions.load(*r), write) < moved)
        .filter(|r| t.may_balance(*r, MoveKind::Leader, dst, src))
        .min_by(|a, b| {
            let l = |r: usize| {
                let load = regions.load(r);
                load.wcus + load.rcus
            };
            l(*a).total_cmp(&l(*b)).then(a.cmp(b))
        })
        .map(Some)
        .ok_or(())
}

/// Sends `region` (chosen by [`swap_partner`]) from `dst` back to `src`.
fn swap_back(t: &mut Tally, src: usize, dst: usize, region: usize, write: bool) {
    {
        let regions = &t.snap.regions;
        if !t.can_move(region, MoveKind::Leader, dst, src) {
            return;
        }
        let op = Operator {
            region_id: regions.region_id(region),
            kind: MoveKind::Leader,
            from: t.id(dst),
            to: t.id(src),
            // `can_move`: never to a node holding a copy.
            to_follows: false,
            scheduler: NAME,
            priority: Priority::Normal,
            reason: format!(
                "swapped for a hot region so nodes {} and {} keep even counts",
                t.id(src),
                t.id(dst)
            ),
            figures: vec![(
                "region_load",
                format!("{:.1}", load_of(regions.load(region), write)),
            )],
        };
        t.apply(op, region, dst, src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance_region::BalanceRegion;
    use crate::cluster::{ClusterSnapshot, ReportedLoad};
    use crate::test_support::{led_counts, led_sum, plan_until_quiet, snapshot};

    fn plan(snap: &ClusterSnapshot) -> Vec<Operator> {
        let mut t = Tally::new(snap);
        HotRegion::default().schedule(&mut t);
        BalanceRegion::default().schedule(&mut t);
        t.planned
    }

    /// Write load per node, in node order.
    fn loads(snap: &ClusterSnapshot) -> Vec<f64> {
        led_sum(snap, |r| r.wcus)
    }

    #[test]
    fn a_hot_table_is_spread_and_counts_stay_even() {
        // 4 nodes, 8 regions each; table 1's 4 regions (all on node 1) get 10× the load.
        let mut snap = snapshot(4, &[(1, 8), (2, 8), (3, 8), (4, 8)]);
        for r in snap.regions.list_mut() {
            r.wcus = if r.table_id() == 1 { 100.0 } else { 10.0 };
        }
        let moves = plan_until_quiet(&mut snap, plan);
        let l = loads(&snap);
        let mean = l.iter().sum::<f64>() / 4.0;
        let max = l.iter().cloned().fold(0.0, f64::max);
        assert!(max / mean <= 1.2, "{l:?}");
        assert_eq!(led_counts(&snap), [8, 8, 8, 8]);
        assert!(moves <= 6, "{moves} moves");
    }

    #[test]
    fn new_nodes_get_their_share_of_regions_and_of_load() {
        // The growing cluster with every region written to, a little unevenly.
        let mut snap = snapshot(4, &[(1, 16), (2, 16)]);
        for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
            r.wcus = 3.0 + (i % 5) as f64;
        }
        let moves = plan_until_quiet(&mut snap, plan);
        let counts = led_counts(&snap);
        assert!(counts.iter().all(|c| (7..=9).contains(c)), "{counts:?}");
        let l = loads(&snap);
        let mean = l.iter().sum::<f64>() / 4.0;
        assert!(l.iter().all(|x| x / mean <= 1.2), "{l:?}");
        // 16 count moves, and load trades (a swap is two moves) on top.
        assert!(moves <= 24, "{moves} moves for a minimum of 16");
    }

    #[test]
    fn a_node_hot_only_for_its_surplus_of_regions_is_left_to_balance_region() {
        // Every region carries 10 wcus: node 1 leads 24 (240, 20 % above the mean), but only
        // because it leads 4 regions over its share; the count moves even out both.
        let mut snap = snapshot(3, &[(1, 24), (2, 20), (3, 16)]);
        for r in snap.regions.list_mut() {
            r.wcus = 10.0;
        }
        let mut t = Tally::new(&snap);
        HotRegion::default().schedule(&mut t);
        assert!(t.planned.is_empty(), "{:?}", t.planned);
        assert_eq!(plan_until_quiet(&mut snap, plan), 4);
        assert_eq!(led_counts(&snap), [20, 20, 20]);
    }

    #[test]
    fn a_node_waits_until_its_own_reports_show_the_heat_has_lasted() {
        // Table 1's regions on node 1 are hot by their smoothed loads (node 1 leads 440 wcus,
        // the others 80).
        let mut snap = snapshot(4, &[(1, 8), (2, 8), (3, 8), (4, 8)]);
        for r in snap.regions.list_mut() {
            r.wcus = if r.table_id() == 1 { 100.0 } else { 10.0 };
        }
        let hot_plan = |snap: &ClusterSnapshot| {
            let mut t = Tally::new(snap);
            HotRegion::default().schedule(&mut t);
            t.planned
        };
        let hot_moves = |snap: &ClusterSnapshot| {
            let ops = hot_plan(snap);
            ops.iter().filter(|o| o.from == 1).count()
        };
        let figure = |op: &Operator, name: &str| {
            let f = op.figures.iter().find(|(n, _)| *n == name);
            f.map(|(_, v)| v.clone())
        };
        let report = |wcus: f64| ReportedLoad { wcus, rcus: 0.0 };
        let reports = |newest_first: &[f64]| newest_first.iter().map(|w| report(*w)).collect();
        // By its own account node 1 carried a quarter of today's load until the latest
        // reports: it has just heated up, so it waits.
        snap.nodes[0].reported = reports(&[600.0, 580.0, 150.0, 150.0, 150.0, 150.0]);
        for n in &mut snap.nodes[1..] {
            n.reported = reports(&[100.0; 6]);
        }
        assert_eq!(hot_moves(&snap), 0);
        // With the check off, region loads decide at once.
        let mut off = HotRegion::default();
        off.set("sustained_share", "0").unwrap();
        let mut t = Tally::new(&snap);
        off.schedule(&mut t);
        assert!(t.planned.iter().any(|o| o.from == 1));
        // Steady within the window (wavering by a third): the heat has lasted. The figures say
        // what its reports said.
        snap.nodes[0].reported = reports(&[600.0, 580.0, 450.0, 620.0, 500.0, 410.0]);
        let ops = hot_plan(&snap);
        assert!(ops.iter().any(|o| o.from == 1), "{ops:?}");
        assert_eq!(
            figure(&ops[0], "from_reported_low").as_deref(),
            Some("410.0")
        );
        assert_eq!(
            figure(&ops[0], "from_reported_high").as_deref(),
            Some("620.0")
        );
        // Follower load that every node's totals include (all equal here) does not hold it
        // back: each node is held to its own reports.
        for n in &mut snap.nodes {
            n.reported = reports(&[900.0; 6]);
        }
        assert!(hot_moves(&snap) > 0);
        // A node that reports no totals (zeros), or one report only, says nothing: region
        // loads decide, and its zeros do not hold others back.
        snap.nodes[0].reported = reports(&[0.0; 6]);
        assert!(hot_moves(&snap) > 0);
        assert_eq!(figure(&hot_plan(&snap)[0], "from_reported_high"), None);
        snap.nodes[0].reported = reports(&[600.0]);
        assert!(hot_moves(&snap) > 0);
        snap.nodes[0].reported.clear();
        assert!(hot_moves(&snap) > 0);
    }

    #[test]
    fn load_below_the_floor_or_within_tolerance_moves_nothing() {
        let mut snap = snapshot(2, &[(1, 4), (2, 4)]);
        for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
            r.wcus = if i < 4 { 2.0 } else { 1.0 };
        }
        assert!(
            plan(&snap).is_empty(),
            "mean 6 per node is under min_load 10"
        );
        for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
            r.wcus = if i < 4 { 105.0 } else { 100.0 };
        }
        assert!(plan(&snap).is_empty(), "2.4% above the mean");
    }

    #[test]
    fn read_load_is_balanced_without_making_a_node_write_hot() {
        let mut snap = snapshot(2, &[(1, 4), (2, 4)]);
        for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
            r.rcus = if i < 4 { 100.0 } else { 0.0 };
            // Node 2's regions write a lot, node 1's do not.
            r.wcus = if i < 4 { 0.0 } else { 100.0 };
        }
        let ops = plan(&snap);
        // Writes and reads both call for a swap: 2 regions each way, counts even.
        let mut after = snap.clone();
        for op in &ops {
            crate::test_support::apply(&mut after, op);
        }
        assert_eq!(led_counts(&after), [4, 4]);
        assert!(!ops.is_empty());
    }

    #[test]
    fn a_hot_table_spreads_from_any_start_at_a_few_regions_a_node() {
        // The sim's hot-table at its size: 4 nodes of 8 regions, one table's 4 regions 10×
        // hotter, wherever they happen to be, the other regions' load uneven. Found stuck in
        // CI: two hot regions on one node, none on another, and every hot region too hot to
        // land below the hot limit, so nothing moved with the load 1.31× the mean.
        for seed in 0..300 {
            let mut rng = crate::test_support::Lcg::new(seed);
            let mut snap = snapshot(4, &[(1, 8), (2, 8), (3, 8), (4, 8)]);
            let mut hot = std::collections::BTreeSet::new();
            while hot.len() < 4 {
                hot.insert(rng.below(32) as usize);
            }
            for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
                let cool = 4.0 + rng.below(16) as f64;
                r.wcus = if hot.contains(&i) { 100.0 } else { cool };
            }
            let moves = plan_until_quiet(&mut snap, plan);
            let l = loads(&snap);
            let mean = l.iter().sum::<f64>() / 4.0;
            let max = l.iter().cloned().fold(0.0, f64::max);
            assert!(max / mean <= 1.2, "seed {seed}: {l:?} after {moves} moves");
            // At most two hot regions to relocate, each with its swap, and a trim or two.
            assert!(moves <= 8, "seed {seed}: {moves} moves");
            let counts = led_counts(&snap);
            assert!(
                counts.iter().all(|c| (7..=9).contains(c)),
                "seed {seed}: {counts:?}"
            );
        }
    }

    #[test]
    fn a_single_huge_region_is_not_bounced_between_nodes() {
        let mut snap = snapshot(2, &[(1, 2), (2, 2)]);
        snap.regions.list_mut()[0].wcus = 1_000.0;
        let moves = plan_until_quiet(&mut snap, plan);
        assert_eq!(moves, 0, "moving it would only make the other node hot");
    }

    #[test]
    fn a_hot_move_never_sends_a_region_back_to_a_node_it_left() {
        // Node 1 is hot; its hottest-fitting region came from node 2, so another goes there.
        let mut snap = snapshot(2, &[(1, 4), (2, 4)]);
        for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
            r.wcus = if i < 4 { 40.0 + i as f64 } else { 10.0 };
        }
        let first = plan(&snap);
        assert!(!first.is_empty() && first[0].from == 1, "{first:?}");
        let came_from_2 = first[0].region_id;
        snap.last_left.entry(came_from_2).or_default().push(2);
        let second = plan(&snap);
        assert!(!second.is_empty(), "another region goes instead");
        assert!(
            second
                .iter()
                .all(|o| !(o.region_id == came_from_2 && o.to == 2)),
            "{second:?}"
        );
    }
}
