//! drain: carry out an operator's `cairn ctl node drain` — move every copy off the drained
//! datanodes. The drain record is the trigger ([`crate::NodeView::drain`]); this scheduler plans
//! the moves, and evict-leaders (its own module) the leaders-only variant.
//!
//! - **Leaders** go to a live follower of the region (nothing to open; the old copy closes, so
//!   the region is one copy short until replica-repair adds one), the one leading the
//!   fewest regions per unit of capacity; a region without one goes to the schedulable node that
//!   leads the fewest per capacity and holds no copy of it.
//! - **Follower copies** go to the schedulable node holding the fewest follower copies per
//!   capacity among those holding none of the region.
//! - Targets that keep the spread rules (zones, see label-spread) come first; when none does, the
//!   drain goes on anyway: emptying the node is what the operator asked for.
//!
//! Failover places the leaders of failed nodes the same way ([`failover_plan`]), so that what
//! it places already keeps the zones and the shares the balancing schedulers keep.
//!
//! Drains are an operator's request, not an inefficiency: they run first, at high priority, in
//! maintenance mode too, ignore the cool-down, and spend a budget of their own
//! ([`crate::ClusterSnapshot::urgent_moves_left`]) rather than the balancing limits. A region busy
//! or planned already waits for the next pass; a region led by a node that is failed or cut off
//! is failover's, so its follower copy here waits too.

use crate::cluster::{ClusterSnapshot, DrainKind, Tally, NO_NODE};
use crate::operator::{MoveKind, Operator, Priority, DRAIN_SCHEDULER, EVICT_LEADERS_SCHEDULER};
use crate::schedule::{unknown_param, ConfigError, Schedule};

/// The scheduler name of [`failover_plan`]'s operators.
pub const FAILOVER: &str = "failover";

/// The drain scheduler (`DrainKind::All`), or evict-leaders (`DrainKind::Leaders`, its own
/// module's docs): the same planning, for the nodes drained that way.
#[derive(Debug, Clone)]
pub(crate) struct DrainScheduler(pub DrainKind);

impl Schedule for DrainScheduler {
    fn name(&self) -> &'static str {
        match self.0 {
            DrainKind::All => DRAIN_SCHEDULER,
            DrainKind::Leaders => EVICT_LEADERS_SCHEDULER,
        }
    }

    fn describe(&self) -> &'static str {
        match self.0 {
            DrainKind::All => {
                "empties the datanodes an operator drains (`node drain`): leaders to a live \
                 follower or the least-loaded node, follower copies to nodes without one"
            }
            DrainKind::Leaders => {
                "hands the leadership of the regions a node leads to their live followers \
                 (`node evict-leaders`); the node stays a follower"
            }
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn set(&mut self, key: &str, _value: &str) -> Result<(), ConfigError> {
        Err(unknown_param(self.name(), key, &[]))
    }

    fn requested(&self) -> bool {
        true
    }

    fn schedule(&self, t: &mut Tally) {
        plan(t, self.0, self.name());
    }
}

/// Plans the moves off every node drained with `kind`, as scheduler `name`, until the drain
/// budget is spent.
pub(crate) fn plan(t: &mut Tally, kind: DrainKind, name: &'static str) {
    let drained: Vec<usize> = (0..t.nodes.len())
        .filter(|i| t.snap.nodes[*i].drain == Some(kind))
        .collect();
    if drained.is_empty() {
        return;
    }
    let live: Vec<usize> = t.schedulable().collect();
    let anywhere = (kind == DrainKind::All).then_some(live.as_slice());
    for from in drained {
        for region in t.nodes[from].led.clone() {
            let region = region as usize;
            if t.urgent_moves_left == 0 {
                return;
            }
            if t.leader_of(region) != from || t.claimed(region) {
                continue;
            }
            if let Some(to) = leader_target(t, region, from, anywhere) {
                let op = operator(t, region, MoveKind::Leader, from, to, name, "is drained");
                t.apply_urgent(op, region, from, to, kind == DrainKind::Leaders);
            }
        }
        if kind != DrainKind::All {
            continue;
        }
        for region in t.nodes[from].followed.clone() {
            let region = region as usize;
            if t.urgent_moves_left == 0 {
                return;
            }
            if !t.followers_of(region).any(|f| f == from) || t.claimed(region) {
                continue;
            }
            // A region whose leader failover is moving is left to it first.
            let leader = t.leader_of(region);
            if leader == NO_NODE
                || !(t.nodes[leader].schedulable || t.snap.nodes[leader].drain.is_some())
            {
                continue;
            }
            if let Some(to) = least(t, region, MoveKind::Follower, from, &live) {
                let op = operator(t, region, MoveKind::Follower, from, to, name, "is drained");
                t.apply_urgent(op, region, from, to, false);
            }
        }
    }
}

/// Failover's choice: where the leadership of each region led by a node of `failed` goes, as a
/// drain would place it (a live follower, else the schedulable node leading the fewest per
/// capacity, zones kept first), spread over the pass as it goes; no budget, no cool-down. Regions
/// busy in the snapshot are left out, and so are those with nowhere to go. `failed` is sorted.
pub fn failover_plan(snap: &ClusterSnapshot, failed: &[u64]) -> Vec<Operator> {
    let mut t = Tally::new(snap);
    t.urgent_moves_left = usize::MAX;
    let live: Vec<usize> = t.schedulable().collect();
    let gone: Vec<usize> = (0..t.nodes.len())
        .filter(|i| failed.binary_search(&t.id(*i)).is_ok())
        .collect();
    for from in gone {
        for region in t.nodes[from].led.clone() {
            let region = region as usize;
            if t.leader_of(region) != from || t.claimed(region) {
                continue;
            }
            if let Some(to) = leader_target(&t, region, from, Some(&live)) {
                let op = operator(&t, region, MoveKind::Leader, from, to, FAILOVER, "failed");
                t.apply_urgent(op, region, from, to, false);
            }
        }
    }
    t.planned
}

/// Copies of `kind` per unit of capacity at node `i`: the fewest is the drain's target.
fn per_capacity(t: &Tally, i: usize, kind: MoveKind) -> f64 {
    t.count(i, kind) as f64 / t.nodes[i].capacity
}

/// Of `candidates`, the one with the fewest `kind` copies per capacity, those keeping the spread
/// rules first; ties by node id.
fn least(
    t: &Tally,
    region: usize,
    kind: MoveKind,
    from: usize,
    candidates: &[usize],
) -> Option<usize> {
    let best = |spread: bool| {
        candidates
            .iter()
            .copied()
            .filter(|i| t.can_drain(region, kind, from, *i, spread))
            .min_by(|a, b| {
                per_capacity(t, *a, kind)
                    .total_cmp(&per_capacity(t, *b, kind))
                    .then(t.id(*a).cmp(&t.id(*b)))
            })
    };
    best(true).or_else(|| best(false))
}

/// Where `region`'s leadership goes: a live follower, else one of `anywhere` (the schedulable
/// nodes; None when evicting leaders only).
fn leader_target(
    t: &Tally,
    region: usize,
    from: usize,
    anywhere: Option<&[usize]>,
) -> Option<usize> {
    let followers: Vec<usize> = t.followers_of(region).collect();
    least(t, region, MoveKind::Leader, from, &followers)
        .or_else(|| least(t, region, MoveKind::Leader, from, anywhere?))
}

pub(crate) fn operator(
    t: &Tally,
    region: usize,
    kind: MoveKind,
    from: usize,
    to: usize,
    name: &'static str,
    what_happened: &str,
) -> Operator {
    let to_follower = kind == MoveKind::Leader && t.followers_of(region).any(|f| f == to);
    let what = match (kind, to_follower) {
        (MoveKind::Leader, true) => "its leadership goes to a live follower",
        (MoveKind::Leader, false) => "its leadership goes to the node leading the fewest",
        (MoveKind::Follower | MoveKind::AddFollower | MoveKind::RemoveFollower, _) => {
            "its follower copy goes to the node holding the fewest"
        }
    };
    Operator {
        region_id: t.snap.regions.region_id(region),
        kind,
        from: t.id(from),
        to: t.id(to),
        to_follows: to_follower,
        scheduler: name,
        priority: Priority::High,
        reason: format!("node {} {what_happened}: {what}", t.id(from)),
        figures: vec![
            (
                "from_left",
                t.count(from, kind).saturating_sub(1).to_string(),
            ),
            ("to_count", t.count(to, kind).to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{ClusterSnapshot, NodeView};
    use crate::regions::RegionView;
    use crate::test_support::{apply, led_counts, snapshot};

    pub(crate) fn run(snap: &ClusterSnapshot) -> Vec<Operator> {
        let mut t = Tally::new(snap);
        DrainScheduler(DrainKind::All).schedule(&mut t);
        t.planned
    }

    fn drained(mut snap: ClusterSnapshot, node: u64, kind: DrainKind) -> ClusterSnapshot {
        let n = snap.nodes.iter_mut().find(|n| n.node_id == node).unwrap();
        (n.schedulable, n.going, n.drain) = (false, kind == DrainKind::All, Some(kind));
        snap.urgent_moves_left = 100_000;
        snap
    }

    #[test]
    fn a_drained_node_is_emptied_evenly_onto_the_others() {
        let snap = snapshot(4, &[(1, 30), (2, 10), (3, 10), (4, 10)]);
        let mut snap = drained(snap, 1, DrainKind::All);
        let ops = run(&snap);
        assert_eq!(ops.len(), 30, "every region once");
        assert!(ops
            .iter()
            .all(|o| o.from == 1 && o.priority == Priority::High));
        for op in &ops {
            apply(&mut snap, op);
        }
        assert_eq!(led_counts(&snap), [0, 20, 20, 20]);
        assert!(run(&snap).is_empty(), "nothing left: nothing planned");
    }

    #[test]
    fn leadership_goes_to_a_live_follower_and_follower_copies_move_too() {
        let mut snap = snapshot(4, &[(1, 2), (2, 2)]);
        // Region 0: led by 1, followed by 3 (live) — the follower takes it.
        // Region 1: led by 1, followed by 4, which is down — a schedulable node takes it.
        // Region 2: led by 2, followed by 1 — the copy moves to a node without one.
        snap.regions.list_mut()[0].followers = vec![3].into();
        snap.regions.list_mut()[1].followers = vec![4].into();
        snap.regions.list_mut()[2].followers = vec![1].into();
        snap.nodes[3].schedulable = false;
        let snap = drained(snap, 1, DrainKind::All);
        let ops = run(&snap);
        let by_region = |i: usize| {
            ops.iter()
                .find(|o| o.region_id == snap.regions.region_id(i))
                .unwrap()
        };
        assert_eq!((by_region(0).kind, by_region(0).to), (MoveKind::Leader, 3));
        assert_eq!(by_region(1).kind, MoveKind::Leader);
        assert!([2, 3].contains(&by_region(1).to), "{:?}", by_region(1));
        assert_eq!(by_region(2).kind, MoveKind::Follower);
        assert!(
            [3, 4].contains(&by_region(2).to) && by_region(2).to != 4,
            "{ops:?}"
        );
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn the_drain_spends_its_own_budget_and_leaves_busy_regions() {
        let mut snap = snapshot(3, &[(1, 10), (2, 5), (3, 5)]);
        snap.moves_left = 0;
        snap.busy = vec![snap.regions.region_id(0)];
        let mut snap = drained(snap, 1, DrainKind::All);
        snap.urgent_moves_left = 4;
        let ops = run(&snap);
        assert_eq!(ops.len(), 4, "the drain budget, not the balancing one");
        assert!(ops.iter().all(|o| o.region_id != snap.regions.region_id(0)));
    }

    #[test]
    fn follower_copies_wait_while_failover_moves_the_leader() {
        let mut snap = snapshot(3, &[(2, 1)]);
        snap.regions.list_mut()[0].followers = vec![1].into();
        snap.nodes[1].schedulable = false;
        snap.nodes[1].going = true;
        let snap = drained(snap, 1, DrainKind::All);
        assert!(run(&snap).is_empty());
    }

    #[test]
    fn nothing_moves_without_a_drain_or_a_place_to_go() {
        let snap = snapshot(3, &[(1, 10), (2, 1)]);
        assert!(run(&snap).is_empty(), "no drain: balancing is not ours");
        let mut alone = drained(snapshot(1, &[(1, 3)]), 1, DrainKind::All);
        assert!(run(&alone).is_empty(), "no other node");
        alone.nodes.push(NodeView::new(2));
        alone.regions.list_mut().push(RegionView::new(9 << 32, 2));
        assert_eq!(run(&alone).len(), 3);
    }

    #[test]
    fn failover_spreads_a_failed_nodes_leaders_by_count_and_keeps_tables_spread_over_zones() {
        // Nodes 1..=6 in zones a, b, c, a, b, c; node 1 (zone a) failed. Every table has 3
        // regions, one led in each zone.
        let zones = ["a", "b", "c", "a", "b", "c"];
        let mut snap = snapshot(6, &[]);
        snap.nodes = zones
            .iter()
            .zip(1..)
            .map(|(z, id)| NodeView::new(id).with_label("zone", *z))
            .collect();
        snap.nodes[0].schedulable = false;
        // 6 tables: table k's regions led by node 1 (zone a), node 2 (b), node 3 (c); and 6
        // more tables led by 4, 5, 6.
        for k in 0..12u64 {
            let leaders = if k < 6 { [1, 2, 3] } else { [4, 5, 6] };
            for (i, l) in leaders.iter().enumerate() {
                snap.regions
                    .list_mut()
                    .push(RegionView::new(((k + 1) << 32) | i as u64, *l));
            }
        }
        let ops = failover_plan(&snap, &[1]);
        assert_eq!(ops.len(), 6, "each region of node 1 once");
        assert!(ops.iter().all(|o| o.from == 1 && o.scheduler == FAILOVER));
        // Each zone's share of a table is 1: node 4, zone a's only live node, takes them all,
        // though it leads more than the others (zone b or c would lead two of a table).
        assert!(ops.iter().all(|o| o.to == 4), "{ops:?}");
        // Without zones the regions spread by count over the five live nodes.
        snap.spread_label.clear();
        let ops = failover_plan(&snap, &[1]);
        let mut to: Vec<u64> = ops.iter().map(|o| o.to).collect();
        to.sort_unstable();
        to.dedup();
        assert_eq!(to, [2, 3, 4, 5, 6], "{ops:?}");
        // Busy regions are left out.
        snap.busy = vec![1 << 32];
        assert_eq!(failover_plan(&snap, &[1]).len(), 5);
    }

    #[test]
    fn targets_that_keep_copies_in_distinct_zones_come_first() {
        let mut snap = snapshot(4, &[]);
        snap.nodes = ["a", "b", "a", "b"]
            .iter()
            .zip(1..)
            .map(|(z, id)| NodeView::new(id).with_label("zone", *z))
            .collect();
        // Region 0: led by 1, followed by 2: 2 takes the leadership. Region 1: led by 2 (zone
        // b), followed by 1 (zone a): the copy goes to node 3 (zone a), not node 4 (zone b, with
        // the leader), though 4 holds fewer copies.
        let region = |id: u64, leader: u64, followers: Vec<u64>| RegionView {
            followers: followers.into(),
            ..RegionView::new(id, leader)
        };
        snap.regions = vec![
            region(1 << 32, 1, vec![2]),
            region((1 << 32) | 1, 2, vec![1]),
        ]
        .into();
        snap.regions
            .list_mut()
            .extend((0..3).map(|i| region((2 << 32) | i, 2, vec![3])));
        let snap = drained(snap, 1, DrainKind::All);
        let to: Vec<(u64, u64)> = run(&snap).iter().map(|o| (o.region_id, o.to)).collect();
        assert_eq!(to, [(1 << 32, 2), ((1 << 32) | 1, 3)]);
    }
}
