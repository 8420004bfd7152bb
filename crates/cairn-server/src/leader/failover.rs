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
use crate::leader::procedure::migrate_region::{self, REASON_FAILOVER};
use crate::leader::LeaderTerm;
use crate::replica::meta::store::{self, layout};
use cairn_meta::{codec, TableRoute};
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
const FAILOVER_RESCAN_MS: u64 = 5_000;
/// A failover migration's deadline.
pub const FAILOVER_MIGRATION_TIMEOUT_MS: u64 = 30_000;

/// A region to move off a failed node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphaned {
    pub region_id: u64,
    pub from: u64,
    pub followers: Vec<u64>,
}

/// What the last scan saw.
struct Scan {
    failed: BTreeSet<u64>,
    at: Instant,
    found: bool,
}

/// The failover supervisor for one leader term.
pub async fn run_term(node: Arc<Node>, term: LeaderTerm) {
    let slots = Arc::new(Semaphore::new(node.config.failover_migrations_max));
    let moving: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let mut last: Option<Scan> = None;
    let mut paused_logged = false;
    let tick = Duration::from_millis(FAILOVER_TICK_MS);
    while !term.sleep(tick).await {
        if !node.procedures.serving(term.term()) {
            continue;
        }
        let failed: BTreeSet<u64> = node.heartbeats.failed_nodes().into_iter().collect();
        if failed.is_empty() {
            last = None;
            continue;
        }
        match maintenance::current(&node) {
            Ok(m) if m.on => {
                if !paused_logged {
                    tracing::info!(failed = ?failed, "maintenance mode on: no failover");
                    paused_logged = true;
                }
                continue;
            }
            Ok(_) => paused_logged = false,
            Err(e) => {
                tracing::debug!("failover: maintenance state unreadable: {e}");
                continue;
            }
        }
        let rescan = Duration::from_millis(FAILOVER_RESCAN_MS);
        let due = last
            .as_ref()
            .is_none_or(|s| s.failed != failed || (s.found && s.at.elapsed() >= rescan));
        if !due {
            continue;
        }
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
        if orphaned.is_empty() {
            continue;
        }
        tracing::info!(
            failed = ?failed,
            regions = orphaned.len(),
            "failover: moving the regions of failed datanodes"
        );
        let orphaned: Vec<Orphaned> = {
            let moving = moving.lock().unwrap_or_else(|p| p.into_inner());
            orphaned
                .into_iter()
                .filter(|r| !moving.contains(&r.region_id))
                .collect()
        };
        for (region, to) in choose(&node, orphaned, &failed) {
            // At most failover_migrations_max at once: wait for a slot (or the term's end).
            let permit = loop {
                match slots.clone().try_acquire_owned() {
                    Ok(p) => break Some(p),
                    Err(_) if term.sleep(Duration::from_millis(50)).await => break None,
                    Err(_) => {}
                }
            };
            let Some(permit) = permit else {
                return;
            };
            let Some(to) = to else {
                tracing::warn!(
                    region = region.region_id,
                    "failover: no live datanode to move the region to"
                );
                continue;
            };
            moving
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(region.region_id);
            let (node, moving) = (node.clone(), moving.clone());
            tokio::spawn(async move {
                let id = region.region_id;
                let outcome = migrate_region::start(
                    &node,
                    id,
                    to,
                    REASON_FAILOVER,
                    FAILOVER_MIGRATION_TIMEOUT_MS,
                )
                .await;
                match outcome {
                    Ok(_) => tracing::info!(region = id, from = region.from, to, "failed over"),
                    Err(e) => tracing::info!(
                        region = id,
                        from = region.from,
                        to,
                        "failover migration did not complete: {}",
                        e.message()
                    ),
                }
                moving.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                drop(permit);
            });
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
    failed: &BTreeSet<u64>,
) -> Vec<(Orphaned, Option<u64>)> {
    let exclude: HashSet<u64> = failed.iter().copied().collect();
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
