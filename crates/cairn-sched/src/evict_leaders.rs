//! evict-leaders: carry out an operator's `cairn ctl node evict-leaders` — hand the leadership
//! of every region the node leads to one of the region's live followers (the one leading the
//! fewest regions per unit of capacity, one keeping the table's leaders spread over the zones
//! first). The node stays a follower of each: only leadership moves, and a region without a live
//! follower stays led where it is. Like [`crate::drain`] it runs first, at high priority, in
//! maintenance mode too, within the drain budget.
//!
//! The scheduler itself is [`crate::drain`]'s, for nodes drained with `DrainKind::Leaders`.

#[cfg(test)]
mod tests {
    use crate::cluster::{ClusterSnapshot, DrainKind, Tally};
    use crate::drain::DrainScheduler;
    use crate::operator::{MoveKind, Operator, Step};
    use crate::schedule::Schedule;
    use crate::test_support::{apply, snapshot};

    fn run(snap: &ClusterSnapshot) -> Vec<Operator> {
        let mut t = Tally::new(snap);
        DrainScheduler(DrainKind::Leaders).schedule(&mut t);
        t.planned
    }

    #[test]
    fn leadership_goes_to_followers_and_the_node_stays_a_follower() {
        let mut snap = snapshot(3, &[(1, 4), (2, 1)]);
        for r in &mut snap.regions.list_mut()[..2] {
            r.followers = vec![2, 3].into();
        }
        snap.regions.list_mut()[2].followers = vec![3].into();
        // Region 3 has no follower: it stays.
        snap.regions.list_mut()[4].followers = vec![1].into();
        let n = &mut snap.nodes[0];
        (n.schedulable, n.drain) = (false, Some(DrainKind::Leaders));
        snap.urgent_moves_left = 100;
        let ops = run(&snap);
        let to: Vec<u64> = ops.iter().map(|o| o.to).collect();
        // Evened out: the first to 3 (2 leads one already), the next to 2, then 3, the only one.
        assert_eq!(to, [3, 2, 3], "{ops:?}");
        assert!(ops
            .iter()
            .all(|o| o.kind == MoveKind::Leader && o.from == 1));
        assert_eq!(
            ops[0].steps(),
            [
                Step::DowngradeLeader { node: 1 },
                Step::UpgradeToLeader { node: 3 },
                Step::KeepFollower { node: 1 }
            ],
            "nothing opened; the old leader is downgraded, not closed"
        );
        for op in &ops {
            apply(&mut snap, op);
        }
        assert!(snap.regions.list_mut()[..3]
            .iter()
            .all(|r| r.followers.contains(&1)));
        assert!(run(&snap).is_empty(), "nothing left that can move");
        assert_eq!(snap.regions.list_mut()[3].leader, 1, "no follower: stays");
    }
}
