//! Closing orphan regions. A region is an orphan on a datanode when the datanode reports it
//! open but no table route places it there and no running procedure is opening it: a create
//! that rolled back while the node was unreachable, a placement replaced after a leader crash,
//! a drop whose close never reached the node. Left alone, an orphan holds memory and files on
//! the datanode forever and could take writes from a client with a stale route, so the leader
//! looks for them every `region_reconcile_interval_ms` and tells their nodes to close them.
//!
//! The same pass repairs the opposite case: a region its route names a node the active leader of,
//! while that node reports it as a follower (a migration rolled back and its upgrade of the old
//! leader did not reach it). Nobody could write the region; the leader tells the node to lead it
//! again, under the region's lock (so no migration runs meanwhile) and only once no other node
//! can hold a lease for it.
//!
//! The pass is safe against DDL running at the same time because of the order of its reads:
//! (1) the regions datanodes reported, (2) the running procedures, (3) the routes. A procedure
//! stores its record (with `opening_tables`) before it opens anything, so a region reported in
//! (1) was opened by a procedure that either still runs at (2) (its tables are skipped) or had
//! finished by then: committed (its route is visible at (3)) or rolled back (the region is an
//! orphan indeed).

use crate::leader::heartbeat::registry::{NodeEntry, NodeRegistry};
use crate::leader::meta::regions::{close_regions_on, describe, RegionAction, RegionInstructions};
use crate::leader::node::Node;
use crate::leader::procedure::lock::Mode;
use crate::leader::procedure::migrate_region::region_lock;
use crate::leader::LeaderTerm;
use crate::replica::meta::store::{self, layout};
use cairn_meta::{codec, ProcedureRecord, ProcedureState, TableRoute};
use cairn_proto::cairnpb::NodeRole;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// Region ids per datanode.
type PerNode = BTreeMap<u64, Vec<u64>>;

/// Orphan regions closed in one pass at most; the rest wait for the next pass.
pub const ORPHAN_REGIONS_PER_PASS_MAX: usize = 8_192;

/// How often the loop checks whether a pass is due (and whether this node leads).
const RECONCILE_TICK_MS: u64 = 200;

/// Runs passes every `region_reconcile_interval_ms` in one leader term, once DDL is served
/// (its running procedures resumed); does nothing when the interval is 0.
pub async fn run_term(node: Arc<Node>, term: LeaderTerm) {
    let interval = Duration::from_millis(node.config.region_reconcile_interval_ms);
    if interval.is_zero() {
        return;
    }
    let tick = Duration::from_millis(RECONCILE_TICK_MS);
    while !node.procedures.serving(term.term()) {
        if term.sleep(tick).await {
            return;
        }
    }
    // The first pass of a term waits one interval: datanodes reconnect and report first.
    while !term.sleep(interval).await {
        let started = node.clock.now();
        let outcome = close_orphans(&node, &term).await;
        tracing::debug!(
            node_id = node.id,
            elapsed_ms = node.clock.now().duration_since(started).as_millis() as u64,
            "orphan region pass done"
        );
        match outcome {
            Ok(0) => {}
            Ok(n) => tracing::info!(node_id = node.id, closed = n, "orphan regions closed"),
            Err(e) => tracing::warn!("orphan region pass failed, will retry: {e}"),
        }
    }
}

/// One pass in leader term `term`: finds orphan regions and tells their datanodes to close them.
/// Returns how many regions were closed.
pub async fn close_orphans(node: &Arc<Node>, term: &LeaderTerm) -> Result<usize, Status> {
    // (1) What datanodes report.
    let reported = reported_regions(node);
    if reported.is_empty() {
        return Ok(0);
    }
    let followed: Vec<(u64, Vec<u64>)> = reported_followers(node);
    // (2) and (3) must see every procedure that finished before (1): a read barrier, so the
    // state read is at least as new as everything committed so far.
    node.read_barrier().await?;
    // A million reported regions means a hundred thousand route reads: off the async workers.
    let finder = node.clone();
    let (orphans, demoted) =
        tokio::task::spawn_blocking(move || orphans_among(&finder, &reported, &followed))
            .await
            .map_err(|e| Status::internal(format!("orphan region pass: {e}")))??;
    if !demoted.is_empty() && term.is_current() {
        upgrade_demoted(node, demoted).await;
    }
    let count = orphans.values().map(Vec::len).sum();
    if count == 0 {
        return Ok(0);
    }
    if !term.is_current() {
        return Err(crate::errors::leader_changed());
    }
    for (n, regions) in &orphans {
        tracing::info!(
            node = n,
            regions = regions.len(),
            "closing regions no route places on the node"
        );
    }
    let failed = close_regions_on(node, orphans).await;
    if !failed.is_empty() {
        tracing::info!("some orphan regions were not closed: {}", describe(&failed));
    }
    Ok(count)
}

/// The registry entries of the nodes with a heartbeat stream open to this leader, in id order:
/// only they can be told to close or lead a region. A node gone silent keeps its last report in
/// the registry for `node_idle_forget_ms` (an hour); thousands of those would make each pass
/// read millions of stale region ids and spend its `ORPHAN_REGIONS_PER_PASS_MAX` on nodes no
/// instruction reaches. A node that reconnects reports afresh and is looked at in the next pass.
fn connected_entries<'a>(
    registry: &'a NodeRegistry,
    connected: &'a [u64],
) -> impl Iterator<Item = &'a NodeEntry> + 'a {
    connected.iter().filter_map(|id| registry.get(*id))
}

/// The regions each connected datanode reports, from the leader's registry.
fn reported_regions(node: &Node) -> Vec<(u64, Vec<u64>)> {
    // The connection table before the registry: the hub takes their locks in that order.
    let connected = node.heartbeats.connected_ids();
    let registry = node.heartbeats.registry();
    connected_entries(&registry, &connected)
        .filter(|e| e.identity.role == NodeRole::Datanode as i32 && !e.regions.is_empty())
        .map(|e| (e.identity.id, e.regions.ids().collect()))
        .collect()
}

/// The regions each connected datanode reports holding as a follower.
fn reported_followers(node: &Node) -> Vec<(u64, Vec<u64>)> {
    let connected = node.heartbeats.connected_ids();
    let registry = node.heartbeats.registry();
    connected_entries(&registry, &connected)
        .filter(|e| e.identity.role == NodeRole::Datanode as i32)
        .map(|e| (e.identity.id, e.regions.followed().collect::<Vec<_>>()))
        .filter(|(_, regions)| !regions.is_empty())
        .collect()
}

/// Tells each node of `demoted` to lead its regions again, one by one confirmed under the
/// region's lock: the route still names the node the active leader and no other node can hold
/// a lease. Best effort: what is skipped or fails waits for the next pass.
async fn upgrade_demoted(node: &Arc<Node>, demoted: BTreeMap<u64, Vec<u64>>) {
    let mut held = Vec::new();
    let mut targets = Vec::new();
    let now = node.heartbeats.now();
    for (n, regions) in demoted {
        for region in regions {
            let set = vec![(region_lock(region), Mode::Exclusive)];
            let Ok(lock) = node.procedures.locks.try_acquire(&set) else {
                continue;
            };
            let key = layout().route(cairn_meta::route::table_id_of(region));
            let leads = store::get::<TableRoute>(node, &key)
                .ok()
                .flatten()
                .and_then(|r| r.value.region(region).cloned())
                .is_some_and(|r| r.leader_node == n && r.leader_state.is_active());
            if leads && node.heartbeats.region_leases().free_for(region, n, now) {
                held.push(lock);
                targets.push((n, region));
            }
        }
    }
    if targets.is_empty() {
        return;
    }
    tracing::info!(
        regions = targets.len(),
        "telling nodes to lead again regions their routes give them but they only follow"
    );
    let failed = RegionInstructions::on(RegionAction::Upgrade, targets, true)
        .send_once(node)
        .await;
    if !failed.is_empty() {
        tracing::info!("some regions were not led again: {}", describe(&failed));
    }
    drop(held);
}

/// The orphans among `reported`, and the regions of `followed` whose route names their node the
/// active leader, read in the order the module documentation explains.
fn orphans_among(
    node: &Node,
    reported: &[(u64, Vec<u64>)],
    followed: &[(u64, Vec<u64>)],
) -> Result<(PerNode, PerNode), Status> {
    // (2) Tables running procedures are opening.
    let mut opening: HashSet<u64> = HashSet::new();
    store::scan_all(node, &layout().procedures_prefix(), |kv| {
        if let Ok(r) = codec::decode::<ProcedureRecord>(&kv.key, &kv.value) {
            if r.state == ProcedureState::Running {
                opening.extend(r.opening_tables);
            }
        }
        Ok(())
    })?;
    // (3) Routes, each table's read once.
    let route_of =
        |table| Ok(store::get::<TableRoute>(node, &layout().route(table))?.map(|r| r.value));
    let orphans = find_orphans(reported, &opening, ORPHAN_REGIONS_PER_PASS_MAX, route_of)?;
    let demoted = find_demoted(followed, &opening, ORPHAN_REGIONS_PER_PASS_MAX, route_of)?;
    Ok((orphans, demoted))
}

/// Regions each node reports that the route of their table does not place on that node,
/// skipping tables being opened; at most `limit` of them. Each table's route is read once.
pub fn find_orphans(
    reported: &[(u64, Vec<u64>)],
    opening: &HashSet<u64>,
    limit: usize,
    route_of: impl FnMut(u64) -> Result<Option<TableRoute>, Status>,
) -> Result<BTreeMap<u64, Vec<u64>>, Status> {
    find_among(reported, opening, limit, route_of, |route, n, region| {
        !route.is_some_and(|r| r.places(region, n))
    })
}

/// Regions each node reports following (`followed`) while the route of their table names it
/// the active leader, skipping tables being opened or moved; at most `limit`.
pub fn find_demoted(
    followed: &[(u64, Vec<u64>)],
    opening: &HashSet<u64>,
    limit: usize,
    route_of: impl FnMut(u64) -> Result<Option<TableRoute>, Status>,
) -> Result<BTreeMap<u64, Vec<u64>>, Status> {
    find_among(followed, opening, limit, route_of, |route, n, region| {
        route
            .and_then(|r| r.region(region))
            .is_some_and(|r| r.leader_node == n && r.leader_state.is_active())
    })
}

/// The (node, region) pairs of `reported` that `keep` picks given the region's table route,
/// skipping tables being opened; at most `limit`. Each table's route is read once.
fn find_among(
    reported: &[(u64, Vec<u64>)],
    opening: &HashSet<u64>,
    limit: usize,
    mut route_of: impl FnMut(u64) -> Result<Option<TableRoute>, Status>,
    keep: impl Fn(Option<&TableRoute>, u64, u64) -> bool,
) -> Result<BTreeMap<u64, Vec<u64>>, Status> {
    let mut routes: HashMap<u64, Option<TableRoute>> = HashMap::new();
    let mut out: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut count = 0;
    for (n, regions) in reported {
        for region in regions {
            let table = cairn_meta::route::table_id_of(*region);
            if opening.contains(&table) {
                continue;
            }
            let route = match routes.entry(table) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(route_of(table)?),
            };
            if !keep(route.as_ref(), *n, *region) {
                continue;
            }
            out.entry(*n).or_default().push(*region);
            count += 1;
            if count >= limit {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_meta::route::region_id;
    use cairn_meta::RegionRoute;

    fn route(table: u64, leaders: &[u64]) -> TableRoute {
        TableRoute {
            table_id: table,
            version: 1,
            regions: leaders
                .iter()
                .enumerate()
                .map(|(n, l)| RegionRoute {
                    region_id: region_id(table, n as u32),
                    leader_node: *l,
                    follower_nodes: vec![],
                    leader_state: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn orphans_are_regions_not_placed_on_their_node_and_not_being_opened() {
        let routes: HashMap<u64, TableRoute> =
            [(10, route(10, &[1, 2])), (11, route(11, &[2]))].into();
        let reported = vec![
            // Node 1: its own region of table 10, table 10's region 1 (placed on node 2),
            // a region of table 12 (no route, being opened) and of table 13 (no route).
            (
                1,
                vec![
                    region_id(10, 0),
                    region_id(10, 1),
                    region_id(12, 0),
                    region_id(13, 0),
                ],
            ),
            // Node 2: its regions, and region 5 of table 11, which the route does not have.
            (
                2,
                vec![region_id(10, 1), region_id(11, 0), region_id(11, 5)],
            ),
        ];
        let opening: HashSet<u64> = [12].into();
        let mut reads = 0;
        let orphans = find_orphans(&reported, &opening, usize::MAX, |t| {
            reads += 1;
            Ok(routes.get(&t).cloned())
        })
        .unwrap();
        let want: BTreeMap<u64, Vec<u64>> = [
            (1, vec![region_id(10, 1), region_id(13, 0)]),
            (2, vec![region_id(11, 5)]),
        ]
        .into();
        assert_eq!(orphans, want);
        // Each table's route is read once; the table being opened not at all.
        assert_eq!(reads, 3);
    }

    #[test]
    fn demoted_are_followed_regions_whose_route_names_their_node_the_active_leader() {
        let mut downgrading = route(11, &[2]);
        downgrading.regions[0].leader_state = cairn_meta::LeaderState::Downgrading;
        let routes: HashMap<u64, TableRoute> = [
            (10, route(10, &[1, 2])),
            (11, downgrading),
            (12, route(12, &[1])),
        ]
        .into();
        // Node 1 follows its own region of table 10 (demoted), region 1 of table 10 (led by
        // node 2: a real follower) and table 12's (being moved: skipped); node 2 follows the
        // region of table 11 it leads but is downgrading (a migration's doing).
        let followed = vec![
            (
                1,
                vec![region_id(10, 0), region_id(10, 1), region_id(12, 0)],
            ),
            (2, vec![region_id(11, 0)]),
        ];
        let opening: HashSet<u64> = [12].into();
        let demoted = find_demoted(&followed, &opening, usize::MAX, |t| {
            Ok(routes.get(&t).cloned())
        })
        .unwrap();
        let want: BTreeMap<u64, Vec<u64>> = [(1, vec![region_id(10, 0)])].into();
        assert_eq!(demoted, want);
    }

    #[test]
    fn a_pass_closes_a_bounded_number() {
        let reported = vec![(
            1,
            (0..(ORPHAN_REGIONS_PER_PASS_MAX as u32 + 10))
                .map(|n| region_id(7, n))
                .collect(),
        )];
        let orphans = find_orphans(
            &reported,
            &HashSet::new(),
            ORPHAN_REGIONS_PER_PASS_MAX,
            |_| Ok(None),
        )
        .unwrap();
        assert_eq!(orphans[&1].len(), ORPHAN_REGIONS_PER_PASS_MAX);
    }

    #[test]
    fn a_failed_route_read_fails_the_pass_and_closes_nothing() {
        let reported = vec![(1, vec![region_id(7, 0)])];
        let r = find_orphans(&reported, &HashSet::new(), usize::MAX, |_| {
            Err(Status::internal("disk on fire"))
        });
        assert!(r.is_err());
    }
}
