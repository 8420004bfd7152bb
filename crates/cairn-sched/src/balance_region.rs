//! balance-region: even out how many regions each datanode leads (and, separately, how many
//! follower copies it holds), in proportion to its capacity label; among the regions that could
//! move, the one that best evens out approximate size, then the coldest.
//!
//! # When it moves
//! Node `n`'s share of `kind` copies is `total × capacity(n) / Σ capacity` over schedulable
//! nodes (`total` counts the leaders of going nodes too, judged failed, cut off or drained:
//! failover or the drain brings them; and a node under its share gives only to pass on what a
//! node over it cannot place directly); its surplus is `count(n) − share(n)` and its deficit `share(n) − count(n)`. One copy
//! moves from the node with the largest surplus to the node with the largest deficit when
//! - either the surplus or the deficit is above `tolerance × share` (a relative dead band, so a
//!   100,000-region cluster is not shuffled for a handful), and
//! - surplus + deficit > 1: after the move neither node is further from its share than the
//!   other was, so the reverse move can never qualify (no flapping).
//!
//! A node over its share never takes, and a node less than one copy over its share gives only
//! while no node further over it is merely out of moves for the pass: either would mean two
//! moves for one.
//!
//! A move must also leave the target's load within twice hot-region's tolerance of the mean
//! ([`COUNT_MOVE_LOAD_BANDS`]) and break no label-spread rule (see `Tally::can_move`); regions
//! moved within the cool-down stay.
//!
//! Once counts are within their band, the bytes held per unit of capacity are evened out too,
//! leaders' and follower copies' separately, by moves that keep the counts so
//! (`size_tolerance`, see [`size`]).

use crate::cluster::{Tally, COUNT_MOVE_LOAD_BANDS};
use crate::operator::{MoveKind, Operator, Priority};
use crate::schedule::{fraction, unknown_param, ConfigError, Schedule};

mod size;

pub use size::{SIZE_GAP_REGIONS_MIN, SIZE_TOLERANCE_DEFAULT};

pub(crate) const NAME: &str = "balance-region";
/// Default dead band, as a fraction of a node's share.
pub const BALANCE_TOLERANCE_DEFAULT: f64 = 0.02;
/// Regions of the source node examined per move at most, eligible or not: a pair of nodes whose
/// first regions all break a rule is given up on, rather than walking 100,000 regions.
pub const REGIONS_EXAMINED_MAX: usize = 1_024;
/// Eligible regions of the source node compared per move: enough to find a good size match, bounded so
/// a pass over 100,000 regions per node stays fast.
pub const REGION_CANDIDATES_SCANNED_MAX: usize = 64;

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct BalanceRegion {
    tolerance: f64,
    size_tolerance: f64,
}

impl Default for BalanceRegion {
    fn default() -> Self {
        BalanceRegion {
            tolerance: BALANCE_TOLERANCE_DEFAULT,
            size_tolerance: SIZE_TOLERANCE_DEFAULT,
        }
    }
}

impl Schedule for BalanceRegion {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> &'static str {
        "evens out region leaders and follower copies per node, then the bytes each role holds, weighted by the capacity label"
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tolerance", self.tolerance.to_string()),
            ("size_tolerance", self.size_tolerance.to_string()),
        ]
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "tolerance" => self.tolerance = fraction(NAME, key, value, 0.0, 1.0)?,
            "size_tolerance" => self.size_tolerance = fraction(NAME, key, value, 0.0, 1.0)?,
            _ => return Err(unknown_param(NAME, key, &["tolerance", "size_tolerance"])),
        }
        Ok(())
    }

    fn schedule(&self, t: &mut Tally) {
        for kind in [MoveKind::Leader, MoveKind::Follower] {
            self.balance(t, kind);
        }
        size::balance_sizes(t, self.tolerance, self.size_tolerance);
    }
}

impl BalanceRegion {
    fn balance(&self, t: &mut Tally, kind: MoveKind) {
        let nodes: Vec<usize> = t.schedulable().collect();
        // Shares count the leaders of going nodes too (see `Tally::share`): failover or the
        // drain brings them, so evening out the rest first would make moves their arrival undoes.
        let total: usize = nodes.iter().map(|i| t.count(*i, kind)).sum();
        if nodes.len() < 2 || total == 0 {
            return;
        }
        let share = |t: &Tally, i: usize| t.share(i, kind);
        let dev = |t: &Tally, i: usize| t.count(i, kind) as f64 - share(t, i);
        // Sources with nothing left to give this pass.
        let mut spent = vec![false; t.nodes.len()];
        while t.moves_left > 0 {
            let open = |t: &Tally, i: &usize| t.nodes[*i].moves_left > 0;
            let Some(src) = nodes
                .iter()
                .copied()
                .filter(|i| open(t, i) && !spent[*i])
                .max_by(|a, b| dev(t, *a).total_cmp(&dev(t, *b)).then(b.cmp(a)))
            else {
                return;
            };
            let surplus = dev(t, src);
            // A node not over its share gives only when no node over it could: one that is
            // merely out of moves this pass is waited for, or the giver would need refilling.
            let over_waiting = |t: &Tally| {
                nodes
                    .iter()
                    .any(|i| !spent[*i] && t.nodes[*i].moves_left == 0 && dev(t, *i) >= 1.0)
            };
            if surplus < 1.0 && over_waiting(t) {
                return;
            }
            // A node under its share gives only to pass on what a node over it cannot give
            // directly (every region it could move breaks a spread rule): with no such node,
            // the missing copies are on their way from nodes that are going.
            let over_stuck = |t: &Tally| nodes.iter().any(|i| spent[*i] && dev(t, *i) > 0.0);
            if surplus <= 0.0 && !over_stuck(t) {
                return;
            }
            // Targets by deficit, largest first.
            let mut targets: Vec<usize> = nodes
                .iter()
                .copied()
                .filter(|i| *i != src && open(t, i))
                .filter(|i| {
                    // A node over its share takes nothing: it would have to give it on again.
                    let deficit = -dev(t, *i);
                    let band = |n| self.tolerance * share(t, n);
                    deficit > 0.0
                        && surplus + deficit > 1.0
                        && (surplus > band(src) || deficit > band(*i))
                })
                .collect();
            targets.sort_by(|a, b| dev(t, *a).total_cmp(&dev(t, *b)).then(a.cmp(b)));
            let chosen = targets
                .iter()
                .find_map(|&dst| self.pick(t, kind, src, dst).map(|r| (r, dst)));
            let Some((region, dst)) = chosen else {
                spent[src] = true;
                continue;
            };
            let figures = vec![
                ("from_count", t.count(src, kind).to_string()),
                ("to_count", t.count(dst, kind).to_string()),
                ("from_share", format!("{:.1}", share(t, src))),
                ("to_share", format!("{:.1}", share(t, dst))),
            ];
            let op = Operator {
                region_id: t.snap.regions.region_id(region),
                kind,
                from: t.id(src),
                to: t.id(dst),
                // `can_move`: never to a node holding a copy.
                to_follows: false,
                scheduler: NAME,
                priority: Priority::Low,
                reason: format!(
                    "node {} holds {} {} copies against a share of {:.1}; node {} holds {}",
                    t.id(src),
                    t.count(src, kind),
                    kind.as_str(),
                    share(t, src),
                    t.id(dst),
                    t.count(dst, kind),
                ),
                figures,
            };
            t.apply(op, region, src, dst);
        }
    }

    /// The region `src` should give `dst`: of the first movable ones, the one that best keeps
    /// size and load in step with counts. Each term is a distance in units of the mean region:
    /// the size from half the pair's size gap, and each load from what would bring `dst` to the
    /// mean load per region. So an empty node receives average regions (not only the coolest,
    /// which would leave the hot ones behind for hot-region to trade), and a node already
    /// carrying more than its count's worth receives cool ones.
    fn pick(&self, t: &Tally, kind: MoveKind, src: usize, dst: usize) -> Option<usize> {
        let (s, d) = (&t.nodes[src], &t.nodes[dst]);
        let density = |n: &crate::cluster::NodeTally| n.held_bytes(kind).bytes as f64 / n.capacity;
        let half_gap = (density(s) - density(d)).max(0.0) / 2.0;
        let mean = t.mean_region;
        let after = (t.count(dst, kind) + 1) as f64;
        let want = (
            (mean.1 * after - d.wcus).max(0.0),
            (mean.2 * after - d.rcus).max(0.0),
        );
        let dist = |x: f64, target: f64, unit: f64| {
            if unit > 0.0 {
                (x - target).abs() / unit
            } else {
                0.0
            }
        };
        let regions = &t.snap.regions;
        let score = |r: usize| {
            let r = regions.load(r);
            let size = dist(r.approximate_bytes as f64, half_gap, mean.0);
            if kind == MoveKind::Follower {
                return size;
            }
            size + dist(r.wcus, want.0, mean.1) + dist(r.rcus, want.1, mean.2)
        };
        // Each pass (a second or more apart) starts the scan further on.
        let start = (t.snap.now_ms / 1_000) as usize * REGIONS_EXAMINED_MAX;
        t.held_from(src, kind, start)
            .take(REGIONS_EXAMINED_MAX)
            .filter(|r| t.may_balance(*r, kind, src, dst))
            .filter(|r| kind == MoveKind::Follower || t.load_fits(*r, dst, COUNT_MOVE_LOAD_BANDS))
            .take(REGION_CANDIDATES_SCANNED_MAX)
            .min_by(|a, b| {
                score(*a)
                    .total_cmp(&score(*b))
                    .then(regions.region_id(*a).cmp(&regions.region_id(*b)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterSnapshot, NodeView, CAPACITY_LABEL};
    use crate::test_support::{led_counts, plan_until_quiet, snapshot};

    fn plan(snap: &ClusterSnapshot) -> Vec<Operator> {
        let mut t = Tally::new(snap);
        BalanceRegion::default().schedule(&mut t);
        t.planned
    }

    #[test]
    fn two_new_nodes_take_their_share_of_a_loaded_pair() {
        // 8 tables × 4 regions on nodes 1 and 2; nodes 3 and 4 join empty.
        let mut snap = snapshot(4, &[(1, 16), (2, 16)]);
        let moves = plan_until_quiet(&mut snap, plan);
        assert_eq!(led_counts(&snap), [8, 8, 8, 8]);
        assert_eq!(moves, 16, "exactly the minimum");
    }

    #[test]
    fn a_balanced_cluster_plans_nothing() {
        let snap = snapshot(3, &[(1, 11), (2, 11), (3, 10)]);
        assert!(plan(&snap).is_empty());
        // Within the dead band at scale: 1% off is left alone.
        let snap = snapshot(2, &[(1, 1_010), (2, 990)]);
        assert!(plan(&snap).is_empty());
    }

    #[test]
    fn capacity_labels_weight_the_share() {
        let mut snap = snapshot(2, &[(1, 30)]);
        snap.nodes[1] = NodeView::new(2).with_label(CAPACITY_LABEL, "2");
        plan_until_quiet(&mut snap, plan);
        assert_eq!(led_counts(&snap), [10, 20]);
    }

    #[test]
    fn unschedulable_nodes_neither_give_nor_take() {
        let mut snap = snapshot(3, &[(1, 12), (3, 6)]);
        snap.nodes[2].schedulable = false;
        let ops = plan(&snap);
        assert!(ops.iter().all(|o| o.from == 1 && o.to == 2), "{ops:?}");
        assert_eq!(ops.len(), 6, "node 3 keeps its copies: it is not going");
        // Going (failed, drained): its 6 count toward the shares, 9 each once they land.
        snap.nodes[2].going = true;
        let ops = plan(&snap);
        assert!(ops.iter().all(|o| o.from == 1 && o.to == 2), "{ops:?}");
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn a_node_at_its_share_never_gives_while_the_node_over_it_waits_for_moves() {
        // Node 1 is 10 over, node 3 10 under, node 2 at its share; node 1 may move 2 this pass.
        let mut snap = snapshot(3, &[(1, 20), (2, 10)]);
        snap.node_moves_left.insert(1, 2);
        let ops = plan(&snap);
        assert_eq!(ops.len(), 2, "{ops:?}");
        assert!(ops.iter().all(|o| o.from == 1 && o.to == 3), "{ops:?}");
        // Over the passes, exactly the surplus moves: node 2 never gives and needs refilling.
        let moves = plan_until_quiet(&mut snap, plan);
        assert_eq!(led_counts(&snap), [10, 10, 10]);
        assert_eq!(moves, 10);
    }

    #[test]
    fn a_node_over_its_share_takes_nothing_while_the_nodes_under_it_are_out_of_moves() {
        // Share 10: nodes 1 and 2 are 3 and 1 over, nodes 3 and 4 2 under but out of moves.
        let mut snap = snapshot(4, &[(1, 13), (2, 11), (3, 8), (4, 8)]);
        snap.node_moves_left.insert(3, 0);
        snap.node_moves_left.insert(4, 0);
        assert!(
            plan(&snap).is_empty(),
            "1 → 2 would only pass the surplus on"
        );
        snap.node_moves_left.clear();
        assert_eq!(plan_until_quiet(&mut snap, plan), 4);
        assert_eq!(led_counts(&snap), [10, 10, 10, 10]);
    }

    #[test]
    fn copies_on_a_node_that_is_going_count_toward_the_shares() {
        // Node 4 is down with 12 regions failover will spread: share 12 each, nobody over.
        let mut snap = snapshot(4, &[(1, 13), (2, 11), (3, 12), (4, 12)]);
        snap.nodes[3].schedulable = false;
        snap.nodes[3].going = true;
        assert!(plan(&snap).is_empty(), "{:?}", plan(&snap));
        // Follower copies on it stay (failover moves leaders): they do not inflate the shares,
        // so an empty node joining still gets follower copies from the others.
        let mut snap = snapshot(5, &[(1, 4), (2, 4), (3, 4), (4, 4)]);
        for (i, r) in snap.regions.list_mut().iter_mut().enumerate() {
            r.followers = vec![[2, 3, 4, 1][i / 4]].into();
        }
        snap.nodes[3].schedulable = false;
        snap.nodes[3].going = true;
        let ops = plan(&snap);
        assert!(
            ops.iter()
                .any(|o| o.kind == MoveKind::Follower && o.to == 5),
            "{ops:?}"
        );
    }

    #[test]
    fn limits_cap_the_moves_of_one_pass() {
        let mut snap = snapshot(4, &[(1, 16), (2, 16)]);
        snap.moves_left = 5;
        assert_eq!(plan(&snap).len(), 5);
        snap.moves_left = 100;
        snap.node_moves_left.insert(3, 1);
        snap.node_moves_left.insert(4, 0);
        let ops = plan(&snap);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].to, 3);
    }

    #[test]
    fn cooling_and_busy_regions_stay_and_a_move_never_makes_a_node_hot() {
        let mut snap = snapshot(2, &[(1, 4)]);
        snap.region_cooldown_ms = 60_000;
        for r in snap.regions.iter() {
            snap.last_moved_ms.insert(r.region_id, snap.now_ms);
        }
        assert!(plan(&snap).is_empty(), "all cooling down");
        snap.last_moved_ms.clear();
        snap.busy = snap.regions.iter().map(|r| r.region_id).collect();
        assert!(plan(&snap).is_empty(), "all busy");
        snap.busy.clear();
        // One hot region: moving it would make node 2 hot, so a cold one goes.
        snap.regions.list_mut()[0].wcus = 1_000.0;
        let mut t = Tally::new(&snap);
        t.set_load_limits(0.2, 1.0);
        BalanceRegion::default().schedule(&mut t);
        assert_eq!(t.planned.len(), 2);
        assert!(t
            .planned
            .iter()
            .all(|o| o.region_id != snap.regions.region_id(0)));
    }

    #[test]
    fn follower_copies_are_balanced_too_and_never_onto_a_holder() {
        let mut snap = snapshot(3, &[(1, 6)]);
        for r in snap.regions.list_mut() {
            r.followers = vec![2].into();
        }
        let ops = plan(&snap);
        let followers: Vec<&Operator> = ops
            .iter()
            .filter(|o| o.kind == MoveKind::Follower)
            .collect();
        assert!(!followers.is_empty());
        for o in &ops {
            let r = snap
                .regions
                .iter()
                .find(|r| r.region_id == o.region_id)
                .unwrap();
            assert!(!(r.leader == o.to || r.followers.contains(&o.to)), "{o:?}");
        }
    }

    #[test]
    fn a_region_is_never_sent_back_to_a_node_it_left() {
        // Node 1 leads 4, node 2 none: two move, but three of node 1's regions came from
        // node 2; only the fourth may go there, so one move, not two.
        let mut snap = snapshot(2, &[(1, 4)]);
        let ids: Vec<u64> = snap.regions.iter().map(|r| r.region_id).collect();
        for id in &ids[..3] {
            snap.last_left.entry(*id).or_default().push(2);
        }
        let ops = plan(&snap);
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert_eq!(ops[0].region_id, ids[3]);
        // A node left earlier is remembered too, behind a later one.
        snap.last_left.entry(ids[3]).or_default().push(2);
        snap.last_left.entry(ids[3]).or_default().push(3);
        assert!(plan(&snap).is_empty());
    }
}
