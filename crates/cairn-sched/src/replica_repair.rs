//! replica-repair: keep every region at its replica count, as PD's replica checker does.
//!
//! - **Failed holders.** A follower copy on a node judged failed ([`crate::NodeView::failed`])
//!   serves nobody: it moves to a live node (the copy there is opened, the route published; the
//!   dead node's copy is closed when it comes back). Failover already moves the leaderships of
//!   such a node; its follower copies are this scheduler's.
//! - **Missing copies.** A region with fewer live-or-failed follower copies than
//!   `followers_per_region` gets new ones ([`MoveKind::AddFollower`]): failover and a drain hand
//!   a leadership to a follower, which leaves the region one copy short.
//! - **Extra copies**, only with `drop_extra` on ([`MoveKind::RemoveFollower`]): the count is
//!   each Cairn node's `--region-followers`, so dropping what exceeds it is a cluster-wide
//!   decision taken once every node runs with the same count. The copy dropped is a failed
//!   node's, else one sharing a zone with another copy, else the one on the node following the
//!   most regions per capacity.
//!
//! The new copy goes to the schedulable node that holds no copy of the region, preferring a zone
//! (spread label) that holds none either, then the node following the fewest regions, then the
//! least loaded. A repair ignores the cool-down (a region one failure away from losing its last
//! copy must not wait) and is never undone: the balancing schedulers only move copies between
//! live nodes and never empty a follower slot. Regions whose leader is moving (failover, drain)
//! or that are busy are left for a later pass.

use crate::cluster::Tally;
use crate::operator::{MoveKind, Operator, Priority, REPLICA_REPAIR_SCHEDULER};
use crate::schedule::{flag, unknown_param, ConfigError, Schedule};

pub(crate) const NAME: &str = REPLICA_REPAIR_SCHEDULER;
const DROP_EXTRA: &str = "drop_extra";

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplicaRepair {
    /// Drop follower copies beyond the count.
    pub drop_extra: bool,
}

impl Schedule for ReplicaRepair {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> &'static str {
        "replaces follower copies on failed nodes and adds the copies a region lacks \
         (drops extra ones with drop_extra)"
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        vec![(DROP_EXTRA, self.drop_extra.to_string())]
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            DROP_EXTRA => self.drop_extra = flag(NAME, key, value)?,
            _ => return Err(unknown_param(NAME, key, &[DROP_EXTRA])),
        }
        Ok(())
    }

    fn schedule(&self, t: &mut Tally) {
        let want = t.snap.followers_per_region;
        let failed_hold = t.nodes.iter().any(|n| n.failed && n.followers > 0);
        let extra = self.drop_extra && t.followers_extra > 0;
        // Nothing short, extra or failed: no walk over a million complete regions.
        if t.followers_short == 0 && !failed_hold && !extra {
            return;
        }
        for region in 0..t.snap.regions.len() {
            if t.urgent_moves_left == 0 {
                return;
            }
            if !t.repairable(region) {
                continue;
            }
            let have = t.followers_of(region).count();
            let extra = self.drop_extra && have > want;
            let dead = t.followers_of(region).find(|f| t.nodes[*f].failed);
            if let Some(from) = dead {
                let why = format!(
                    "node {} holding a follower copy was judged failed",
                    t.id(from)
                );
                if extra {
                    plan(t, region, MoveKind::RemoveFollower, from, from, why);
                } else if let Some(to) = target(t, region, Some(from)) {
                    plan(t, region, MoveKind::Follower, from, to, why);
                }
            } else if have < want {
                if let Some(to) = target(t, region, None) {
                    let why = format!("{have} of {want} follower copies");
                    plan(t, region, MoveKind::AddFollower, to, to, why);
                }
            } else if extra {
                if let Some(from) = worst_copy(t, region) {
                    let why = format!("{have} follower copies, {want} wanted");
                    plan(t, region, MoveKind::RemoveFollower, from, from, why);
                }
            }
        }
    }
}

/// The follower copy of `region` to drop: one sharing a zone with another copy first, then the
/// one on the node following the most regions per capacity, then the highest index; None for a
/// region without followers.
fn worst_copy(t: &Tally, region: usize) -> Option<usize> {
    let shares_zone = |i: usize| {
        t.live_zones >= 2
            && std::iter::once(t.leader_of(region))
                .chain(t.followers_of(region))
                .filter(|n| *n != i && *n < t.nodes.len())
                .any(|n| t.nodes[n].zone == t.nodes[i].zone)
    };
    let per_capacity = |i: usize| t.count(i, MoveKind::Follower) as f64 / t.nodes[i].capacity;
    t.followers_of(region).max_by(|a, b| {
        shares_zone(*a)
            .cmp(&shares_zone(*b))
            .then(per_capacity(*a).total_cmp(&per_capacity(*b)))
            .then(a.cmp(b))
    })
}

/// The node to take a new copy of `region` (in place of `from`'s, if given): schedulable and
/// holding no copy; a zone without a copy first, then the fewest follower
/// copies, then the least load, then the lowest index.
fn target(t: &Tally, region: usize, from: Option<usize>) -> Option<usize> {
    let zones_used = |i: usize| {
        t.live_zones >= 2
            && std::iter::once(t.leader_of(region))
                .chain(t.followers_of(region))
                .filter(|n| Some(*n) != from && *n < t.nodes.len())
                .any(|n| t.nodes[n].zone == t.nodes[i].zone)
    };
    t.schedulable()
        .filter(|i| !t.holds(region, *i))
        .min_by(|a, b| {
            let key = |i: usize| {
                (
                    zones_used(i),
                    t.count(i, MoveKind::Follower),
                    t.load(i, true) + t.load(i, false),
                )
            };
            let (ka, kb) = (key(*a), key(*b));
            ka.0.cmp(&kb.0)
                .then(ka.1.cmp(&kb.1))
                .then(ka.2.total_cmp(&kb.2))
                .then(a.cmp(b))
        })
}

fn plan(t: &mut Tally, region: usize, kind: MoveKind, from: usize, to: usize, why: String) {
    let op = Operator {
        region_id: t.snap.regions.region_id(region),
        kind,
        from: if kind == MoveKind::AddFollower {
            0
        } else {
            t.id(from)
        },
        to: if kind == MoveKind::RemoveFollower {
            0
        } else {
            t.id(to)
        },
        to_follows: false,
        scheduler: NAME,
        priority: Priority::High,
        reason: why,
        figures: vec![
            ("followers", t.followers_of(region).count().to_string()),
            ("wanted", t.snap.followers_per_region.to_string()),
        ],
    };
    t.apply_urgent(op, region, from, to, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance_region::BalanceRegion;
    use crate::cluster::{ClusterSnapshot, NodeView};
    use crate::label_spread::LabelSpread;
    use crate::test_support::{plan_until_quiet, snapshot};

    fn plan_all(snap: &ClusterSnapshot) -> Vec<Operator> {
        let mut t = Tally::new(snap);
        ReplicaRepair::default().schedule(&mut t);
        LabelSpread.schedule(&mut t);
        BalanceRegion::default().schedule(&mut t);
        t.planned
    }

    fn repairs(snap: &ClusterSnapshot) -> Vec<Operator> {
        let mut t = Tally::new(snap);
        ReplicaRepair::default().schedule(&mut t);
        t.planned
    }

    /// Follower copies per node, in node order.
    fn followed(snap: &ClusterSnapshot) -> Vec<usize> {
        snap.nodes
            .iter()
            .map(|n| {
                let held = |r: &crate::RegionView| r.followers.contains(&n.node_id);
                snap.regions.iter().filter(held).count()
            })
            .collect()
    }

    #[test]
    fn a_region_short_of_followers_gets_them_on_distinct_live_nodes() {
        // 4 nodes, 8 regions led 2 each, no followers; two wanted.
        let mut snap = snapshot(4, &[(1, 2), (2, 2), (3, 2), (4, 2)]);
        snap.followers_per_region = 2;
        let ops = repairs(&snap);
        assert_eq!(ops.len(), 8, "one per region per pass: {ops:?}");
        assert!(ops.iter().all(|o| o.kind == MoveKind::AddFollower
            && o.from == 0
            && o.priority == Priority::High));
        plan_until_quiet(&mut snap, plan_all);
        for r in snap.regions.iter() {
            let mut holders: Vec<u64> = r.followers.to_vec();
            holders.push(r.leader);
            holders.sort_unstable();
            holders.dedup();
            assert_eq!((r.followers.len(), holders.len()), (2, 3), "{r:?}");
        }
        // 16 follower copies over 4 nodes, evenly.
        assert_eq!(followed(&snap), [4, 4, 4, 4]);
    }

    /// Three nodes; node 1 leads 4 regions, each followed by node 3; one follower wanted.
    fn followed_by_node_3() -> ClusterSnapshot {
        let mut snap = snapshot(3, &[(1, 4)]);
        for r in snap.regions.list_mut() {
            r.followers = vec![3].into();
        }
        snap.followers_per_region = 1;
        snap
    }

    #[test]
    fn a_follower_on_a_failed_node_moves_to_a_live_one() {
        let mut snap = followed_by_node_3();
        snap.nodes[2].schedulable = false;
        snap.nodes[2].going = true;
        snap.nodes[2].failed = true;
        let ops = repairs(&snap);
        assert_eq!(ops.len(), 4, "{ops:?}");
        assert!(ops
            .iter()
            .all(|o| (o.kind, o.from, o.to) == (MoveKind::Follower, 3, 2)));
        plan_until_quiet(&mut snap, plan_all);
        assert!(snap.regions.iter().all(|r| r.followers == [2]));
    }

    #[test]
    fn a_node_merely_unschedulable_keeps_its_followers() {
        // Node 3 is draining (or cut off a moment): not failed, nothing to repair.
        let mut snap = followed_by_node_3();
        snap.nodes[2].schedulable = false;
        assert!(repairs(&snap).is_empty());
    }

    #[test]
    fn nothing_to_do_when_counts_are_met_or_no_node_can_take_a_copy() {
        let mut snap = snapshot(2, &[(1, 2), (2, 2)]);
        snap.followers_per_region = 1;
        for r in snap.regions.list_mut() {
            r.followers = vec![if r.leader == 1 { 2 } else { 1 }].into();
        }
        assert!(repairs(&snap).is_empty(), "counts met");
        // Two followers wanted, but two nodes can hold only one each besides the leader.
        snap.followers_per_region = 2;
        assert!(repairs(&snap).is_empty(), "no third node");
        // Extra copies are left alone, unless dropping them is switched on.
        snap.followers_per_region = 0;
        assert!(repairs(&snap).is_empty());
        let mut t = Tally::new(&snap);
        ReplicaRepair { drop_extra: true }.schedule(&mut t);
        assert_eq!(t.planned.len(), 4);
        assert!(t
            .planned
            .iter()
            .all(|o| o.kind == MoveKind::RemoveFollower && o.to == 0 && o.from != 0));
    }

    #[test]
    fn an_extra_copy_dropped_is_a_failed_nodes_then_a_zone_sharing_one() {
        // Leader on node 1 (zone a); followers on 2 (zone a), 3 (zone b), 4 (zone c, failed).
        let mut snap = snapshot(4, &[(1, 1)]);
        for (n, z) in snap.nodes.iter_mut().zip(["a", "a", "b", "c"]) {
            *n = NodeView::new(n.node_id).with_label("zone", z);
        }
        snap.regions.list_mut()[0].followers = vec![2, 3, 4].into();
        (snap.nodes[3].schedulable, snap.nodes[3].failed) = (false, true);
        snap.followers_per_region = 1;
        let mut s = ReplicaRepair::default();
        s.set("drop_extra", "true").unwrap();
        assert_eq!(s.params(), [("drop_extra", "true".to_string())]);
        let plan = |snap: &ClusterSnapshot| {
            let mut t = Tally::new(snap);
            s.schedule(&mut t);
            t.planned
        };
        let first = plan(&snap);
        assert_eq!(
            (first[0].kind, first[0].from),
            (MoveKind::RemoveFollower, 4)
        );
        crate::test_support::apply(&mut snap, &first[0]);
        let second = plan(&snap);
        assert_eq!(second[0].from, 2, "shares zone a with the leader");
        crate::test_support::apply(&mut snap, &second[0]);
        assert!(plan(&snap).is_empty());
        assert_eq!(snap.regions.list_mut()[0].followers, [3]);
        assert!(s.set("drop_extra", "yes please").is_err());
        assert!(s.set("speed", "1").is_err());
    }

    #[test]
    fn a_new_copy_goes_to_a_zone_without_one_and_busy_regions_wait() {
        let mut snap = snapshot(4, &[(1, 4)]);
        for (n, z) in snap.nodes.iter_mut().zip(["a", "a", "a", "b"]) {
            *n = NodeView::new(n.node_id).with_label("zone", z);
        }
        snap.followers_per_region = 1;
        snap.busy = vec![snap.regions.region_id(0)];
        // A balancing operator queued behind the rate limit does not hold a repair back.
        snap.queued = vec![snap.regions.region_id(1)];
        let ops = repairs(&snap);
        assert_eq!(ops.len(), 3, "the busy region waits: {ops:?}");
        assert!(ops.iter().any(|o| o.region_id == snap.regions.region_id(1)));
        // Zone b (node 4) first, although it then follows more than nodes 2 and 3.
        assert!(ops.iter().all(|o| o.to == 4), "{ops:?}");
    }

    #[test]
    fn with_one_zone_left_a_copy_shares_a_zone_rather_than_go_missing() {
        // Zone b's only node failed: its follower copies come back into zone a.
        let mut snap = snapshot(3, &[(1, 2)]);
        for (n, z) in snap.nodes.iter_mut().zip(["a", "a", "b"]) {
            *n = NodeView::new(n.node_id).with_label("zone", z);
        }
        for r in snap.regions.list_mut() {
            r.followers = vec![3].into();
        }
        snap.followers_per_region = 1;
        snap.nodes[2].schedulable = false;
        snap.nodes[2].failed = true;
        let ops = repairs(&snap);
        assert!(ops.iter().all(|o| (o.from, o.to) == (3, 2)), "{ops:?}");
        assert_eq!(ops.len(), 2);
    }

    #[test]
    fn every_scheduler_together_makes_up_copies_on_random_clusters_without_flapping() {
        for seed in 0..300 {
            let mut rng = crate::test_support::Lcg::new(seed);
            let count = 3 + rng.below(6);
            let mut snap = snapshot(count, &[]);
            for n in &mut snap.nodes {
                *n = NodeView::new(n.node_id).with_label("zone", format!("z{}", rng.below(3)));
                if rng.below(4) == 0 {
                    (n.schedulable, n.going, n.failed) = (false, true, true);
                }
            }
            let live = snap.node_ids(|n| n.schedulable);
            if live.is_empty() {
                continue;
            }
            snap.followers_per_region = rng.below(3) as usize;
            for i in 0..rng.below(40) {
                let leader = live[rng.below(live.len() as u64) as usize];
                let mut r = crate::RegionView::new(((1 + i / 4) << 32) | (i % 4), leader);
                for _ in 0..rng.below(3) {
                    let f = 1 + rng.below(count);
                    if f != leader && !r.followers.contains(&f) {
                        r.followers.push(f);
                    }
                }
                snap.regions.list_mut().push(r);
            }
            let mut schedulers = crate::Schedulers::default();
            let drop_extra = seed % 2 == 1;
            if drop_extra {
                schedulers.configure(NAME, DROP_EXTRA, "true").unwrap();
            }
            plan_until_quiet(&mut snap, |s| schedulers.plan(s));
            let want = snap.followers_per_region.min(live.len() - 1);
            for r in snap.regions.iter() {
                let on_live = r.followers.iter().filter(|f| live.contains(f)).count();
                assert!(on_live >= want, "seed {seed}: {r:?}, {want} wanted");
                if drop_extra {
                    assert!(
                        r.followers.len() <= snap.followers_per_region,
                        "seed {seed}: {r:?}"
                    );
                }
                let mut holders = r.followers.to_vec();
                holders.push(r.leader);
                holders.sort_unstable();
                holders.dedup();
                assert_eq!(holders.len(), r.followers.len() + 1, "seed {seed}: {r:?}");
            }
        }
    }

    #[test]
    fn the_urgent_budget_bounds_a_pass_and_the_balancing_limits_do_not() {
        let mut snap = snapshot(3, &[(1, 6)]);
        snap.followers_per_region = 1;
        snap.urgent_moves_left = 2;
        assert_eq!(repairs(&snap).len(), 2);
        // After a failover thousands of regions may be short: the balancing limits (cluster,
        // per node) would make them wait minutes.
        snap.urgent_moves_left = 100;
        snap.moves_left = 0;
        snap.node_moves_left.insert(2, 1);
        snap.node_moves_left.insert(3, 1);
        let ops = repairs(&snap);
        assert_eq!(ops.len(), 6);
        assert!(ops.iter().all(Operator::urgent) && !ops.iter().any(Operator::requested));
        // Spread over the two nodes that can take them.
        assert_eq!(ops.iter().filter(|o| o.to == 2).count(), 3);
    }
}
