//! label-spread: repair failure-domain violations over the spread label (`zone` by default)
//! whenever at least two of its values hold schedulable nodes.
//!
//! - **Replicas.** A follower copy sharing a zone with an earlier copy of its region (the
//!   leader's first) moves to the least-loaded node of a zone holding no copy; the leader stays.
//! - **Tables.** A zone leading more than its share, `ceil(regions / zones)`, of one table's
//!   regions gives the excess to the zones with the fewest, each to that zone's node leading the
//!   fewest regions.
//!
//! Repairs run before the balancing schedulers and ignore the cool-down; balancing never breaks
//! these rules (see [`crate::cluster::Tally::can_move`]), so a repair is never undone.

use crate::cluster::{IdMap, Tally, COUNT_MOVE_LOAD_BANDS, NO_NODE, NO_TABLE};
use crate::operator::{MoveKind, Operator, Priority};
use crate::schedule::{unknown_param, ConfigError, Schedule};

pub(crate) const NAME: &str = "label-spread";

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSpread;

impl Schedule for LabelSpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn describe(&self) -> &'static str {
        "keeps a region's copies, and a table's leaders, spread over the zones (spread label)"
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn set(&mut self, key: &str, _value: &str) -> Result<(), ConfigError> {
        Err(unknown_param(NAME, key, &[]))
    }

    fn schedule(&self, t: &mut Tally) {
        if t.live_zones < 2 {
            return;
        }
        repair_replicas(t);
        repair_tables(t);
    }
}

/// The schedulable node of `zone` (any zone when None) that may take `region`'s `kind` copy
/// from `from`, leading (or following) the fewest regions, the least loaded among equals; a
/// leader goes where it leaves the node below the hot limit, else within two tolerances.
fn best_in_zone(
    t: &Tally,
    region: usize,
    kind: MoveKind,
    from: usize,
    zone: Option<usize>,
) -> Option<usize> {
    let pick = |bands: f64| {
        t.schedulable()
            .filter(|i| zone.is_none_or(|z| t.nodes[*i].zone == z))
            .filter(|i| t.has_budget(from, *i) && t.can_move(region, kind, from, *i))
            .filter(|i| kind == MoveKind::Follower || t.load_fits(region, *i, bands))
            .min_by(|a, b| {
                let key = |i: usize| (t.count(i, kind), t.load(i, true) + t.load(i, false));
                let (ka, kb) = (key(*a), key(*b));
                ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(a.cmp(b))
            })
    };
    pick(1.0).or_else(|| pick(COUNT_MOVE_LOAD_BANDS))
}

fn repair(t: &mut Tally, region: usize, kind: MoveKind, from: usize, to: usize, why: String) {
    let figures = vec![
        ("from_zone", t.zones[t.nodes[from].zone].clone()),
        ("to_zone", t.zones[t.nodes[to].zone].clone()),
    ];
    let op = Operator {
        region_id: t.snap.regions.region_id(region),
        kind,
        from: t.id(from),
        to: t.id(to),
        // `can_move`: never to a node holding a copy.
        to_follows: false,
        scheduler: NAME,
        priority: Priority::High,
        reason: why,
        figures,
    };
    t.apply(op, region, from, to);
}

fn repair_replicas(t: &mut Tally) {
    for region in 0..t.snap.regions.len() {
        if t.followers_of(region).next().is_none() || !t.movable(region, true) || t.moves_left == 0
        {
            continue;
        }
        let zone = |n: usize| t.nodes[n].zone;
        let leader = t.leader_of(region);
        // A follower sharing a zone with an earlier copy (the leader first) is the one to move.
        // Found without collecting the copies: this runs for every region with followers.
        let dup = t
            .followers_of(region)
            .enumerate()
            .find(|(k, n)| {
                zone(leader) == zone(*n)
                    || t.followers_of(region).take(*k).any(|m| zone(m) == zone(*n))
            })
            .map(|(_, n)| n);
        let Some(from) = dup else {
            continue;
        };
        let holders: Vec<usize> = std::iter::once(leader)
            .chain(t.followers_of(region))
            .collect();
        // Only a zone without a copy mends it (the rules would let the copy move within its
        // zone, which changes nothing and could be undone).
        let to = (0..t.zones.len())
            .filter(|z| holders.iter().all(|n| zone(*n) != *z))
            .filter_map(|z| best_in_zone(t, region, MoveKind::Follower, from, Some(z)))
            .min_by_key(|i| (t.count(*i, MoveKind::Follower), *i));
        if let Some(to) = to {
            let why = format!(
                "two copies of the region in zone {:?} while zone {:?} holds none",
                t.zones[zone(from)],
                t.zones[zone(to)]
            );
            repair(t, region, MoveKind::Follower, from, to, why);
        }
    }
}

fn repair_tables(t: &mut Tally) {
    // Tables with a zone over its share, found from the per-table tallies.
    let mut over: Vec<(u64, u32, usize)> = Vec::new();
    for k in 0..t.tables.len() as u32 {
        let share = t.share_of(k);
        over.extend(
            (0..t.zones.len())
                .filter(|z| t.tables.leaders(k, *z) > share)
                .map(|z| (t.tables.id(k), k, z)),
        );
    }
    if over.is_empty() || t.moves_left == 0 {
        return;
    }
    over.sort_unstable();
    // The regions of the tables concerned, in one walk over all regions.
    let mut of_table: IdMap<u32, Vec<usize>> =
        over.iter().map(|(_, k, _)| (*k, Vec::new())).collect();
    for (i, k) in t.region_table.iter().enumerate() {
        if *k != NO_TABLE {
            if let Some(list) = of_table.get_mut(k) {
                list.push(i);
            }
        }
    }
    for (table, k, zone) in over {
        let share = t.share_of(k);
        let mut regions: Vec<usize> = of_table[&k]
            .iter()
            .copied()
            .filter(|r| t.leader_of(*r) != NO_NODE && t.nodes[t.leader_of(*r)].zone == zone)
            .collect();
        // From the zone's busiest nodes first: the repair then evens out counts too.
        regions.sort_by_key(|r| {
            (
                std::cmp::Reverse(t.count(t.leader_of(*r), MoveKind::Leader)),
                *r,
            )
        });
        for region in regions {
            if t.tables.leaders(k, zone) <= share || t.moves_left == 0 {
                break;
            }
            if !t.movable(region, true) {
                continue;
            }
            let from = t.leader_of(region);
            // The busiest node is out of moves for this pass: wait for the next one rather than
            // take the region from a less busy node, which balancing would then have to refill.
            if t.nodes[from].moves_left == 0 {
                break;
            }
            // The zone leading the fewest of the table's regions that can take it.
            let mut zones: Vec<usize> = (0..t.zones.len()).filter(|z| *z != zone).collect();
            zones.sort_by_key(|z| (t.tables.leaders(k, *z), *z));
            let to = zones
                .iter()
                .find_map(|z| best_in_zone(t, region, MoveKind::Leader, from, Some(*z)));
            if let Some(to) = to {
                let why = format!(
                    "zone {:?} leads {} of table {table}'s regions, above its share of {share}",
                    t.zones[zone],
                    t.tables.leaders(k, zone)
                );
                repair(t, region, MoveKind::Leader, from, to, why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance_region::BalanceRegion;
    use crate::cluster::{ClusterSnapshot, NodeView};
    use crate::test_support::{plan_until_quiet, snapshot};

    fn zoned(snap: &mut ClusterSnapshot, zones: &[&str]) {
        for (n, z) in snap.nodes.iter_mut().zip(zones) {
            *n = NodeView::new(n.node_id).with_label("zone", *z);
        }
    }

    fn plan(snap: &ClusterSnapshot) -> Vec<Operator> {
        let mut t = Tally::new(snap);
        LabelSpread.schedule(&mut t);
        BalanceRegion::default().schedule(&mut t);
        t.planned
    }

    /// Regions whose leader is in `zone`.
    fn led_in(snap: &ClusterSnapshot, zone: &str) -> usize {
        snap.regions
            .iter()
            .filter(|r| zone_of(snap, r.leader) == zone)
            .count()
    }

    fn zone_of(snap: &ClusterSnapshot, node: u64) -> String {
        let n = snap.nodes.iter().find(|n| n.node_id == node).unwrap();
        n.labels["zone"].clone()
    }

    #[test]
    fn a_table_led_from_one_zone_is_spread_over_the_zones() {
        // Table 1's 4 regions all in zone a (nodes 1, 2); zone b (nodes 3, 4) leads nothing.
        let mut snap = snapshot(4, &[(1, 2), (2, 2)]);
        zoned(&mut snap, &["a", "a", "b", "b"]);
        let ops = plan(&snap);
        assert!(ops
            .iter()
            .all(|o| o.priority == Priority::High || o.scheduler != NAME));
        plan_until_quiet(&mut snap, plan);
        assert_eq!(led_in(&snap, "b"), 2);
    }

    #[test]
    fn a_repair_waits_for_the_busiest_node_rather_than_take_from_another() {
        // Table 1 is led 3 + 1 from zone a's two nodes (share 2); node 1 may move once.
        let mut snap = snapshot(3, &[(1, 3), (2, 1)]);
        zoned(&mut snap, &["a", "a", "b"]);
        snap.node_moves_left.insert(1, 1);
        let mut t = Tally::new(&snap);
        LabelSpread.schedule(&mut t);
        assert_eq!(t.planned.len(), 1, "{:?}", t.planned);
        assert_eq!((t.planned[0].from, t.planned[0].to), (1, 3));
        // With moves again, the second repair comes from node 1 too: counts end 1, 1, 2.
        snap.node_moves_left.clear();
        plan_until_quiet(&mut snap, plan);
        assert_eq!(led_in(&snap, "b"), 2);
        assert_eq!(crate::test_support::led_counts(&snap), [1, 1, 2]);
    }

    #[test]
    fn two_copies_in_one_zone_move_apart() {
        let mut snap = snapshot(3, &[(1, 2)]);
        zoned(&mut snap, &["a", "a", "b"]);
        for r in snap.regions.list_mut() {
            r.followers = vec![2].into();
        }
        plan_until_quiet(&mut snap, plan);
        for r in snap.regions.iter() {
            let mut zones: Vec<String> = std::iter::once(r.leader)
                .chain(r.followers.iter().copied())
                .map(|n| zone_of(&snap, n))
                .collect();
            zones.dedup();
            assert_eq!(zones.len(), 2, "{r:?}");
        }
    }

    #[test]
    fn a_shared_zone_with_no_free_zone_left_is_not_shuffled_within_it() {
        // Copies on nodes 1 and 2 (zone a) and 4 (zone b): every zone holds one, so moving the
        // second zone-a copy to node 3 (zone a) would mend nothing.
        let mut snap = snapshot(4, &[(1, 1)]);
        zoned(&mut snap, &["a", "a", "a", "b"]);
        snap.regions.list_mut()[0].followers = vec![2, 4].into();
        let mut t = Tally::new(&snap);
        LabelSpread.schedule(&mut t);
        assert!(t.planned.is_empty(), "{:?}", t.planned);
    }

    #[test]
    fn one_zone_or_no_label_means_nothing_to_repair() {
        let mut snap = snapshot(3, &[(1, 2)]);
        zoned(&mut snap, &["a", "a", "a"]);
        for r in snap.regions.list_mut() {
            r.followers = vec![2].into();
        }
        let mut t = Tally::new(&snap);
        LabelSpread.schedule(&mut t);
        assert!(t.planned.is_empty());
        snap.spread_label.clear();
        zoned(&mut snap, &["a", "b", "c"]);
        let mut t = Tally::new(&snap);
        LabelSpread.schedule(&mut t);
        assert!(t.planned.is_empty());
    }

    #[test]
    fn balancing_never_breaks_the_spread_it_keeps() {
        // Zone a has 3 nodes, zone b one; a 4-region table spread 2/2 stays 2/2 even though
        // the count balance alone would rather move leaders into zone a's empty nodes.
        let mut snap = snapshot(4, &[(1, 2), (4, 2)]);
        zoned(&mut snap, &["a", "a", "a", "b"]);
        plan_until_quiet(&mut snap, plan);
        assert_eq!(led_in(&snap, "b"), 2);
    }
}
