//! Failover: when the failure detector judges a datanode failed, every region it leads is
//! migrated to a live datanode, in batched migrations (see
//! [`crate::leader::procedure::migrate_region`]): a table's regions in one batch, tables packed
//! up to `MIGRATION_BATCH_REGIONS_MAX` regions a batch, at most `failover_migrations_max`
//! batches at once.
//! Where each region goes is [`cairn_sched::failover_plan`]'s choice over the stored routes, as a
//! drain places leaders: a live follower of the region (nothing to open), else the live node
//! leading the fewest regions per unit of capacity, keeping a table's leaders spread over the
//! zones first, so the balancing schedulers find nothing to redo. The migration waits out the dead
//! node's lease before the new leader takes writes, so a node that was only cut off never writes
//! beside its successor; when it comes back, the orphan reconciler closes what it no longer owns.
//!
//! Nothing moves while maintenance mode is on, or before the term serves DDL (its procedures
//! resumed; the failure detector itself waits a grace period after a term starts).
//!
//! Drains are the `drain` and `evict-leaders` schedulers' ([`crate::leader::scheduling`]); this
//! supervisor only marks drained nodes draining in the registry (placement skips them) and never
//! fails over onto one.

use crate::leader::meta::placement;
use crate::leader::node::Node;
use crate::leader::procedure::maintenance;
use crate::leader::procedure::migrate_region::{
    self, Copies, MIGRATION_BATCH_REGIONS_MAX, REASON_FAILOVER,
};
use crate::leader::scheduling::cpu_work;
use crate::leader::LeaderTerm;
use cairn_meta::route::table_id_of;
use cairn_meta::Drain;
use cairn_sched::{ClusterSnapshot, IdSet, NodeView, RegionView};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// How often the supervisor looks at the failure detector's judgements (and drains); a
/// judgement wakes it at once too.
const FAILOVER_TICK_MS: u64 = 200;
/// While nodes are judged failed, the routes are looked at again this often if anything a plan
/// depends on changed ([`PlanInputs`]): a migration rolled back or could not start, a node
/// came that can take regions, or a region moved onto a failed node.
const FAILOVER_RESCAN_MS: u64 = 1_000;
/// A failover migration's deadline.
pub const FAILOVER_MIGRATION_TIMEOUT_MS: u64 = 30_000;

/// What the last failover scan saw.
struct Scan {
    failed: BTreeSet<u64>,
    /// The version of the failed set it saw ([`FailedNodes`]): while it is unchanged, so is the
    /// set, and a look need not compare every node of it.
    version: u64,
    at: Instant,
    inputs: PlanInputs,
}

/// What a failover plan depends on besides the failed set: while none of it changes, looking
/// again would plan the same (nothing, or what is moving already), and a look at a million
/// regions is not free.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PlanInputs {
    /// The routes' generation ([`crate::leader::scheduling::routes::RouteViews::generation`]).
    routes: u64,
    /// The nodes that may take regions.
    candidates: Vec<u64>,
    /// Failover migrations ended so far in the term.
    ended: u64,
}

/// A look at the routes: what the plan depends on, and, unless it is what the last look saw
/// with the same failed set, the regions the failed nodes lead.
struct Look {
    inputs: PlanInputs,
    /// `None`: unchanged since the last look, or nothing to move.
    snap: Option<ClusterSnapshot>,
    orphaned: usize,
}

/// The failure detector's failed set, copied only when it changed: every gone node stays in it
/// until the term ends, and the supervisor looks five times a second.
#[derive(Default)]
struct FailedNodes {
    version: Option<u64>,
    nodes: BTreeSet<u64>,
}

impl FailedNodes {
    /// The failed set now, and its version.
    fn refresh(&mut self, node: &Node) -> (&BTreeSet<u64>, u64) {
        if let Some((version, nodes)) = node.heartbeats.failed_nodes_since(self.version) {
            self.version = Some(version);
            self.nodes = nodes;
        }
        (&self.nodes, self.version.unwrap_or_default())
    }
}

/// The failover migrations the supervisor runs, bounded by `failover_migrations_max` (batches).
struct Mover {
    node: Arc<Node>,
    term: LeaderTerm,
    slots: Arc<Semaphore>,
    /// Regions being moved now, so a rescan does not move them twice.
    moving: Arc<Mutex<HashSet<u64>>>,
    /// Failover migrations ended (done or not) in the term.
    ended: Arc<AtomicU64>,
}

impl Mover {
    fn moving(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.moving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Migrates each region the failed nodes lead in `snap` to where the failover plan puts it,
    /// but those being moved already. Waits for slots; false when the term ended meanwhile.
    async fn start(&self, mut snap: ClusterSnapshot, failed: &BTreeSet<u64>) -> bool {
        snap.busy = self.moving().iter().copied().collect();
        let failed: Vec<u64> = failed.iter().copied().collect();
        // The plan walks every region (tens of ms at a million): off the async workers, and
        // the snapshot is freed there, before the migrations start.
        let planned = cpu_work(move || {
            Ok(cairn_sched::failover_plan(&snap, &failed)
                .into_iter()
                .map(|op| (op.region_id, op.to))
                .collect::<Vec<(u64, u64)>>())
        })
        .await;
        match planned {
            // The term may have ended while the plan was made: then nothing starts.
            Ok(chosen) if self.term.is_current() => self.run_batches(chosen).await,
            Ok(_) => false,
            Err(e) => {
                // Only a panic in the planner gets here; the same inputs are not planned
                // again (a rescan plans when the routes, the candidates or the moves change).
                tracing::warn!("failover: planning failed: {e}");
                true
            }
        }
    }

    /// Runs `chosen` (region, candidate) in batches; false when the term ended meanwhile.
    async fn run_batches(&self, chosen: Vec<(u64, u64)>) -> bool {
        for batch in batches(chosen, MIGRATION_BATCH_REGIONS_MAX) {
            // At most failover_migrations_max at once: wait for a slot (or the term's end).
            let permit = loop {
                match self.slots.clone().try_acquire_owned() {
                    Ok(p) => break p,
                    Err(_) if self.term.sleep(Duration::from_millis(50)).await => return false,
                    Err(_) => {}
                }
            };
            self.moving().extend(batch.iter().map(|(r, _)| *r));
            let (node, moving, ended) =
                (self.node.clone(), self.moving.clone(), self.ended.clone());
            tokio::spawn(async move {
                let ids: Vec<u64> = batch.iter().map(|(r, _)| *r).collect();
                let (timeout, reason) = (FAILOVER_MIGRATION_TIMEOUT_MS, REASON_FAILOVER);
                let n = batch.len();
                match migrate_region::start_batch(&node, batch, Copies::Leaders, reason, timeout)
                    .await
                {
                    Ok(r) => {
                        tracing::info!(regions = n, reason, procedure = r.procedure_id, "moved")
                    }
                    Err(e) => tracing::info!(
                        regions = n,
                        reason,
                        "migration did not complete: {}",
                        e.message()
                    ),
                }
                let mut moving = moving.lock().unwrap_or_else(|p| p.into_inner());
                for id in ids {
                    moving.remove(&id);
                }
                ended.fetch_add(1, Ordering::Relaxed);
                drop(permit);
            });
        }
        true
    }
}

/// The failover supervisor for one leader term.
pub async fn run_term(node: Arc<Node>, term: LeaderTerm) {
    let mover = Mover {
        slots: Arc::new(Semaphore::new(node.config.failover_migrations_max)),
        moving: Arc::default(),
        ended: Arc::default(),
        node: node.clone(),
        term: term.clone(),
    };
    let mut last: Option<Scan> = None;
    let mut failed_nodes = FailedNodes::default();
    let mut paused_logged = false;
    let tick = Duration::from_millis(FAILOVER_TICK_MS);
    loop {
        // Every tick, and at once when a node is judged failed.
        let ended = tokio::select! {
            ended = term.sleep(tick) => ended,
            () = node.heartbeats.judged_failed.notified() => !term.is_current(),
        };
        if ended {
            return;
        }
        if !node.procedures.serving(term.term()) {
            continue;
        }
        let (maintenance, drains) = match (maintenance::current(&node), maintenance::drains(&node))
        {
            (Ok(m), Ok(d)) => (m, d),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!("failover: operator state unreadable: {e}");
                continue;
            }
        };
        sync_draining(&node, &drains);
        let (failed, failed_version) = failed_nodes.refresh(&node);
        let drained: BTreeSet<u64> = drains.iter().map(|d| d.node_id).collect();
        // Built when a scan needs it: it holds every failed node.
        let exclude = || -> BTreeSet<u64> { failed.union(&drained).copied().collect() };
        // Failover, unless in maintenance mode.
        if failed.is_empty() {
            last = None;
        } else if maintenance.on {
            if !paused_logged {
                tracing::info!(failed = ?failed, "maintenance mode on: no failover");
                paused_logged = true;
            }
        } else {
            paused_logged = false;
            let rescan = Duration::from_millis(FAILOVER_RESCAN_MS);
            let changed = |s: &Scan| s.version != failed_version && s.failed != *failed;
            let due = last
                .as_ref()
                .is_none_or(|s| changed(s) || s.at.elapsed() >= rescan);
            if due {
                // The last look's inputs, unless the failed set changed since.
                let seen = last
                    .as_ref()
                    .filter(|s| !changed(s))
                    .map(|s| s.inputs.clone());
                let (n, exclude, f) = (node.clone(), exclude(), failed.clone());
                let ended = mover.ended.load(Ordering::Relaxed);
                let read = cpu_work(move || look(&n, &exclude, &f, ended, seen)).await;
                let look = match read {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!("failover: reading routes failed: {e}");
                        continue;
                    }
                };
                last = Some(Scan {
                    failed: failed.clone(),
                    version: failed_version,
                    at: Instant::now(),
                    inputs: look.inputs,
                });
                if let Some(snap) = look.snap {
                    tracing::info!(
                        failed = ?failed,
                        regions = look.orphaned,
                        "failover: moving the regions of failed datanodes"
                    );
                    if !mover.start(snap, failed).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Marks the drained nodes as draining in the registry (placement skips them), and no others:
/// looks at the drain records and the nodes flagged draining, not at every node listed.
fn sync_draining(node: &Node, drains: &[Drain]) {
    let drained: BTreeSet<u64> = drains.iter().map(|d| d.node_id).collect();
    let mut registry = node.heartbeats.registry();
    let undrained: Vec<u64> = registry
        .draining_ids()
        .filter(|id| !drained.contains(id))
        .collect();
    for id in undrained {
        registry.set_draining(id, false);
    }
    for id in drained {
        if registry.get(id).is_some_and(|e| !e.draining) {
            registry.set_draining(id, true);
        }
    }
}

/// The cluster as the failover plan sees it, when nodes of `failed` lead regions and the plan's
/// inputs differ from `seen`: every region of the stored routes (no loads: they move with the
/// regions), the nodes placement may use (alive, connected datanodes outside `exclude`)
/// schedulable, every other holder not.
fn look(
    node: &Node,
    exclude: &BTreeSet<u64>,
    failed: &BTreeSet<u64>,
    ended: u64,
    seen: Option<PlanInputs>,
) -> Result<Look, tonic::Status> {
    let exclude: HashSet<u64> = exclude.iter().copied().collect();
    let candidates = placement::candidates(node, &exclude);
    // The routes the scheduler decoded (only those written since are read again).
    let routes = node.scheduling.routes_now(node)?;
    let mut ids: Vec<u64> = candidates.iter().map(|c| c.node_id).collect();
    ids.sort_unstable();
    let inputs = PlanInputs {
        routes: routes.generation(),
        candidates: ids,
        ended,
    };
    let failed_ids: IdSet<u64> = failed.iter().copied().collect();
    let orphaned = if seen.as_ref() == Some(&inputs) {
        0
    } else {
        routes
            .regions()
            .filter(|r| failed_ids.contains(&r.leader))
            .count()
    };
    if orphaned == 0 {
        return Ok(Look {
            inputs,
            snap: None,
            orphaned,
        });
    }
    let regions: Vec<RegionView> = routes
        .regions()
        .map(|r| RegionView {
            followers: r.followers().clone(),
            ..RegionView::new(r.region_id, r.leader)
        })
        .collect();
    drop(routes);
    let mut nodes: BTreeMap<u64, NodeView> = candidates
        .into_iter()
        .map(|c| {
            let view = NodeView {
                labels: c.labels.into_iter().collect(),
                ..NodeView::new(c.node_id)
            };
            (c.node_id, view)
        })
        .collect();
    for r in &regions {
        for n in std::iter::once(r.leader).chain(r.followers.iter().copied()) {
            nodes.entry(n).or_insert_with(|| NodeView {
                schedulable: false,
                going: failed_ids.contains(&n),
                ..NodeView::new(n)
            });
        }
    }
    let snap = ClusterSnapshot {
        now_ms: node.clock.unix_ms(),
        nodes: nodes.into_values().collect(),
        regions: regions.into(),
        spread_label: node.config.placement_spread_label.clone(),
        ..ClusterSnapshot::default()
    };
    Ok(Look {
        inputs,
        snap: Some(snap),
        orphaned,
    })
}

/// Splits (region, candidate) pairs into batches of at most `max`, a table's regions together
/// (a table with more than `max` is split), so concurrent batches rarely write the same route.
pub(crate) fn batches(mut moves: Vec<(u64, u64)>, max: usize) -> Vec<Vec<(u64, u64)>> {
    moves.sort_unstable();
    let mut out: Vec<Vec<(u64, u64)>> = Vec::new();
    let mut rest = moves.as_slice();
    while let Some((first, _)) = rest.first() {
        let table = table_id_of(*first);
        let n = rest.partition_point(|(r, _)| table_id_of(*r) == table);
        let (group, after) = rest.split_at(n);
        rest = after;
        for chunk in group.chunks(max) {
            match out.last_mut() {
                Some(last) if last.len() + chunk.len() <= max => last.extend_from_slice(chunk),
                _ => out.push(chunk.to_vec()),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_a_tables_regions_together_and_stay_bounded() {
        let region = |table: u64, n: u64| (table << 32) | n;
        // Table 1: 3 regions, table 2: 5, table 3: 2 (unsorted input).
        let mut moves: Vec<(u64, u64)> = (0..5).map(|n| (region(2, n), 9)).collect();
        moves.extend((0..3).map(|n| (region(1, n), 8)));
        moves.extend((0..2).map(|n| (region(3, n), 7)));
        let out = batches(moves.clone(), 4);
        let tables = |b: &Vec<(u64, u64)>| -> Vec<u64> {
            let mut t: Vec<u64> = b.iter().map(|(r, _)| table_id_of(*r)).collect();
            t.dedup();
            t
        };
        // Table 2 alone is bigger than a batch: split; the others are not.
        assert_eq!(
            out.iter().map(tables).collect::<Vec<_>>(),
            [vec![1], vec![2], vec![2, 3]]
        );
        assert!(out.iter().all(|b| b.len() <= 4));
        let mut all: Vec<(u64, u64)> = out.concat();
        all.sort_unstable();
        moves.sort_unstable();
        assert_eq!(all, moves, "every move once");
        assert!(batches(Vec::new(), 4).is_empty());
        assert_eq!(batches(moves.clone(), 100).len(), 1);
    }
}
