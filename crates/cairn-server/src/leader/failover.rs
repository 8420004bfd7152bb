//! Failover: when the failure detector judges a datanode failed, every region it leads is
//! migrated to a live datanode, a region migration each (see
//! [`crate::leader::procedure::migrate_region`]), at most `failover_migrations_max` at once.
//! A live follower of the region is preferred (nothing to open); otherwise the selector places
//! it, spreading the dead node's regions over the others. The migration waits out the dead
//! node's lease before the new leader takes writes, so a node that was only cut off never writes
//! beside its successor; when it comes back, the orphan reconciler closes what it no longer owns.
//!
//! Nothing moves while maintenance mode is on, or before the term serves DDL (its procedures
//! resumed; the failure detector itself waits a grace period after a term starts).

use crate::leader::heartbeat::registry::NodeState;
use crate::leader::meta::placement;
use crate::leader::node::Node;
use crate::leader::procedure::maintenance;
use crate::leader::procedure::migrate_region::{
    self, REASON_DRAIN, REASON_EVICT_LEADERS, REASON_FAILOVER,
};
use crate::leader::LeaderTerm;
use crate::replica::meta::store::{self, layout};
use cairn_meta::{codec, Drain, DrainMode, TableRoute};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Regions one selector call places (the rest of a large failover in further calls).
const FAILOVER_PLACEMENTS_PER_CALL_MAX: usize = 1_024;
/// How often the supervisor looks at the failure detector's judgements.
const FAILOVER_TICK_MS: u64 = 200;
/// While failed nodes still led regions at the last look (a migration rolled back or could not
/// start), the routes are scanned again this often.
const FAILOVER_RESCAN_MS: u64 = 1_000;
/// How often drained nodes' routes are scanned for regions still to move.
const DRAIN_RESCAN_MS: u64 = 1_000;
/// A failover migration's deadline.
pub const FAILOVER_MIGRATION_TIMEOUT_MS: u64 = 30_000;

/// A region to move off a failed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphaned {
    pub region_id: u64,
    pub from: u64,
    pub followers: Vec<u64>,
}

/// What the last failover scan saw.
struct Scan {
    failed: BTreeSet<u64>,
    at: Instant,
    found: bool,
}

/// The migrations the supervisor runs, bounded by `failover_migrations_max`.
struct Mover {
    node: Arc<Node>,
    term: LeaderTerm,
    slots: Arc<Semaphore>,
    /// Regions being moved now, so a rescan does not move them twice.
    moving: Arc<Mutex<HashSet<u64>>>,
}

impl Mover {
    fn moving(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.moving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Migrates each region of `regions` off its leader for `reason`, to a node outside
    /// `exclude` (a live follower only, when `followers_only`). Waits for slots; false when the
    /// term ended meanwhile.
    async fn start(
        &self,
        regions: Vec<Orphaned>,
        reason: &'static str,
        exclude: &BTreeSet<u64>,
        followers_only: bool,
    ) -> bool {
        let regions: Vec<Orphaned> = {
            let moving = self.moving();
            regions
                .into_iter()
                .filter(|r| !moving.contains(&r.region_id))
                .collect()
        };
        for (region, to) in choose(&self.node, regions, exclude, followers_only) {
            let Some(to) = to else {
                tracing::debug!(region = region.region_id, reason, "no datanode to move to");
                continue;
            };
            // At most failover_migrations_max at once: wait for a slot (or the term's end).
            let permit = loop {
                match self.slots.clone().try_acquire_owned() {
                    Ok(p) => break p,
                    Err(_) if self.term.sleep(Duration::from_millis(50)).await => return false,
                    Err(_) => {}
                }
            };
            self.moving().insert(region.region_id);
            let (node, moving) = (self.node.clone(), self.moving.clone());
            tokio::spawn(async move {
                let id = region.region_id;
                let timeout = FAILOVER_MIGRATION_TIMEOUT_MS;
                let outcome = migrate_region::start(&node, id, to, reason, timeout).await;
                match outcome {
                    Ok(_) => tracing::info!(region = id, from = region.from, to, reason, "moved"),
                    Err(e) => tracing::info!(
                        region = id,
                        from = region.from,
                        to,
                        reason,
                        "migration did not complete: {}",
                        e.message()
                    ),
                }
                moving.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                drop(permit);
            });
        }
        true
    }
}

/// The failover and drain supervisor for one leader term.
pub async fn run_term(node: Arc<Node>, term: LeaderTerm) {
    let mover = Mover {
        slots: Arc::new(Semaphore::new(node.config.failover_migrations_max)),
        moving: Arc::default(),
        node: node.clone(),
        term: term.clone(),
    };
    let mut last: Option<Scan> = None;
    let mut last_drain_scan: Option<Instant> = None;
    let mut paused_logged = false;
    let tick = Duration::from_millis(FAILOVER_TICK_MS);
    while !term.sleep(tick).await {
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
        let failed: BTreeSet<u64> = node.heartbeats.failed_nodes().into_iter().collect();
        let drained: BTreeSet<u64> = drains.iter().map(|d| d.node_id).collect();
        let exclude: BTreeSet<u64> = failed.union(&drained).copied().collect();
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
            let due = last
                .as_ref()
                .is_none_or(|s| s.failed != failed || (s.found && s.at.elapsed() >= rescan));
            if due {
                let orphaned = match regions_led_by(&node, &failed) {
                    Ok(o) => o,
                    Err(e) => {
                        tracing::warn!("failover: reading routes failed: {e}");
                        continue;
                    }
                };
                last = Some(Scan {
                    failed: failed.clone(),
                    at: Instant::now(),
                    found: !orphaned.is_empty(),
                });
                if !orphaned.is_empty() {
                    tracing::info!(
                        failed = ?failed,
                        regions = orphaned.len(),
                        "failover: moving the regions of failed datanodes"
                    );
                    if !mover
                        .start(orphaned, REASON_FAILOVER, &exclude, false)
                        .await
                    {
                        return;
                    }
                }
            }
        }
        // Drains (operator requests: they run in maintenance mode too), of live nodes only.
        let drain_due =
            last_drain_scan.is_none_or(|at| at.elapsed() >= Duration::from_millis(DRAIN_RESCAN_MS));
        if drains.is_empty() || !drain_due {
            continue;
        }
        last_drain_scan = Some(Instant::now());
        for mode in [DrainMode::Drain, DrainMode::EvictLeaders] {
            let nodes: BTreeSet<u64> = drains
                .iter()
                .filter(|d| d.mode == mode && !failed.contains(&d.node_id))
                .map(|d| d.node_id)
                .collect();
            if nodes.is_empty() {
                continue;
            }
            let led = match regions_led_by(&node, &nodes) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!("drain: reading routes failed: {e}");
                    continue;
                }
            };
            let followers_only = mode == DrainMode::EvictLeaders;
            let reason = match mode {
                DrainMode::Drain => REASON_DRAIN,
                DrainMode::EvictLeaders => REASON_EVICT_LEADERS,
            };
            if !led.is_empty() && !mover.start(led, reason, &exclude, followers_only).await {
                return;
            }
        }
    }
}

/// Marks the drained nodes as draining in the registry (placement skips them), and no others.
fn sync_draining(node: &Node, drains: &[Drain]) {
    let mut registry = node.heartbeats.registry();
    let ids: Vec<u64> = registry.nodes().map(|e| e.identity.id).collect();
    for id in ids {
        let draining = drains.iter().any(|d| d.node_id == id);
        if registry.get(id).is_some_and(|e| e.draining != draining) {
            registry.set_draining(id, draining);
        }
    }
}

/// Every region whose stored route names a node of `failed` its leader.
pub fn regions_led_by(node: &Node, failed: &BTreeSet<u64>) -> Result<Vec<Orphaned>, tonic::Status> {
    let mut out = Vec::new();
    store::scan_all(node, &layout().routes_prefix(), |kv| {
        let Ok(route) = codec::decode::<TableRoute>(&kv.key, &kv.value) else {
            return Ok(());
        };
        out.extend(
            route
                .regions
                .iter()
                .filter(|r| failed.contains(&r.leader_node))
                .map(|r| Orphaned {
                    region_id: r.region_id,
                    from: r.leader_node,
                    followers: r.follower_nodes.clone(),
                }),
        );
        Ok(())
    })?;
    Ok(out)
}

/// Where each region goes: a live follower (the least loaded), else where the selector places
/// it; the regions without a follower are placed together so they spread. None: nowhere.
fn choose(
    node: &Node,
    regions: Vec<Orphaned>,
    exclude: &BTreeSet<u64>,
    followers_only: bool,
) -> Vec<(Orphaned, Option<u64>)> {
    let exclude: HashSet<u64> = exclude.iter().copied().collect();
    // The connection table before the registry: the hub takes their locks in that order.
    let connected: HashSet<u64> = regions
        .iter()
        .flat_map(|r| r.followers.iter().copied())
        .filter(|f| !exclude.contains(f) && node.heartbeats.is_connected(*f))
        .collect();
    let mut out = Vec::with_capacity(regions.len());
    let mut unplaced = Vec::new();
    {
        let registry = node.heartbeats.registry();
        for region in regions {
            let follower = region
                .followers
                .iter()
                .filter(|f| connected.contains(f))
                .filter_map(|f| registry.get(*f).map(|e| (*f, e)))
                .filter(|(_, e)| e.state() == NodeState::Alive)
                .min_by_key(|(f, e)| (e.regions.len(), *f))
                .map(|(f, _)| f);
            match follower {
                Some(f) => out.push((region, Some(f))),
                None if followers_only => out.push((region, None)),
                None => unplaced.push(region),
            }
        }
    }
    for chunk in unplaced.chunks(FAILOVER_PLACEMENTS_PER_CALL_MAX) {
        let leaders = match placement::place_leaders(node, chunk.len(), &exclude) {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!("failover placement: {}", e.message());
                Vec::new()
            }
        };
        for (i, region) in chunk.iter().enumerate() {
            out.push((region.clone(), leaders.get(i).copied()));
        }
    }
    out
}
