//! The stored routes, decoded once and shared by every leader service that reads them whole or
//! often: the scheduling pass, failover, and the region-lease grant on every heartbeat.
//!
//! Each route is decoded once per revision ([`RouteViews`]). Which routes changed since the
//! views last looked comes from the applied events ([`follow_routes`], [`RouteChanges`]): a
//! refresh reads those again, not every route key. The views are a persistent map shared as an
//! `Arc`: a reader takes the current one and holds no lock while it reads, and a change copies
//! only the map nodes it touches before it is swapped in, so a heartbeat never waits on a pass
//! reading a million regions, nor on a decode. Before this, a pass decoded every
//! route (1.46 s at 600,000 regions), and each heartbeat decoded the JSON route of every table
//! the node leads a region of (tens of thousands of tables): at 77,000 tables the leader spent
//! its cores on it and lost its leadership over and over (BENCHMARKS.md).

use crate::leader::node::Node;
use crate::leader::LeaderTerm;
use crate::replica::meta::store::{self, layout, SCAN_PAGE_KEYS};
use cairn_meta::{codec, table_id_of, TableRoute};
use cairn_sched::Followers;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tonic::Status;

/// One region of a stored route, as the leader's services need it: 24 bytes. Whether its
/// leader takes writes is its route's to say ([`CachedRoute`]): nearly every one does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRegion {
    pub region_id: u64,
    pub leader: u64,
    /// Shared with every pass's view of the region (8 bytes, no allocation when none).
    followers: Followers,
}

impl RouteRegion {
    pub fn new(region_id: u64, leader: u64, followers: Vec<u64>) -> Self {
        RouteRegion {
            region_id,
            leader,
            followers: followers.into(),
        }
    }

    pub fn followers(&self) -> &Followers {
        &self.followers
    }
}

/// One route as decoded: its regions by id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CachedRoute {
    mod_revision: i64,
    regions: Arc<[RouteRegion]>,
    /// The regions whose leader takes no writes (being moved: `downgrading`), sorted; no
    /// allocation, and 8 bytes, when every leader is active.
    #[allow(clippy::box_collection)] // a thin pointer: 8 bytes in every route, not 16 or 24
    inactive: Option<Box<Vec<u64>>>,
}

impl CachedRoute {
    /// The route stored at `mod_revision` as `value`; a route that does not decode counts as
    /// no regions (as every other reader of routes treats it).
    fn decode(key: &[u8], mod_revision: i64, value: &[u8]) -> Self {
        let mut inactive: Vec<u64> = Vec::new();
        let mut regions: Vec<RouteRegion> = codec::decode::<TableRoute>(key, value)
            .map(|route| {
                route
                    .regions
                    .into_iter()
                    .map(|r| {
                        if !r.leader_state.is_active() {
                            inactive.push(r.region_id);
                        }
                        RouteRegion::new(r.region_id, r.leader_node, r.follower_nodes)
                    })
                    .collect()
            })
            .unwrap_or_default();
        regions.sort_by_key(|r| r.region_id);
        regions.dedup_by_key(|r| r.region_id);
        inactive.sort_unstable();
        CachedRoute {
            mod_revision,
            regions: regions.into(),
            inactive: (!inactive.is_empty()).then(|| Box::new(inactive)),
        }
    }

    /// `region`'s leader takes writes (it is not being moved).
    fn leader_active(&self, region_id: u64) -> bool {
        self.inactive
            .as_ref()
            .is_none_or(|i| i.binary_search(&region_id).is_err())
    }

    /// `node_id` leads `region_id` and takes its writes.
    fn leads(&self, region_id: u64, node_id: u64) -> bool {
        self.region(region_id)
            .is_some_and(|r| r.leader == node_id && self.leader_active(region_id))
    }

    /// Appends to `led` the regions of `ids` this route has `node_id` lead.
    fn keep_led(&self, node_id: u64, ids: Vec<u64>, led: &mut Vec<u64>) {
        led.extend(ids.into_iter().filter(|id| self.leads(*id, node_id)));
    }

    fn region(&self, region_id: u64) -> Option<&RouteRegion> {
        let at = self
            .regions
            .binary_search_by_key(&region_id, |r| r.region_id)
            .ok()?;
        Some(&self.regions[at])
    }
}

/// The table a route key names; None for a key under the prefix that names none.
fn table_of(prefix: &[u8], key: &[u8]) -> Option<u64> {
    let id = std::str::from_utf8(key.strip_prefix(prefix)?).ok()?;
    id.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| id.parse().ok())?
}

/// Route keys written or deleted since the views last read them, noted from the applied events
/// by [`follow_routes`].
#[derive(Debug)]
pub struct RouteChanges {
    tables: BTreeSet<u64>,
    /// What changed is unknown (no feed yet, the feed fell behind or the state was replaced
    /// wholesale): the next refresh scans every route key.
    rescan: bool,
    /// A feed is noting changes now (the revision it has noted them through is
    /// [`Scheduling::feed_through`]'s).
    ///
    /// [`Scheduling::feed_through`]: super::Scheduling::feed_through
    following: bool,
}

/// Routes [`RouteChanges`] notes between refreshes; past it, the next refresh scans them all
/// (a burst of DDL between two passes).
pub const ROUTE_CHANGES_MAX: usize = 16_384;

impl Default for RouteChanges {
    fn default() -> Self {
        RouteChanges {
            tables: BTreeSet::new(),
            rescan: true,
            following: false,
        }
    }
}

impl RouteChanges {
    fn note(&mut self, table: u64) {
        if self.rescan {
            return;
        }
        if self.tables.len() >= ROUTE_CHANGES_MAX {
            self.lose_track();
        } else {
            self.tables.insert(table);
        }
    }

    fn lose_track(&mut self) {
        self.tables.clear();
        self.rescan = true;
    }

    /// What changed since the last take; without a feed, everything may have.
    pub fn take(&mut self) -> RouteChanges {
        let following = self.following;
        let fresh = RouteChanges {
            tables: BTreeSet::new(),
            rescan: !following,
            following,
        };
        let mut taken = std::mem::replace(self, fresh);
        taken.rescan |= !following;
        taken
    }
}

/// Notes the routes each applied batch writes or deletes, for the term: subscribed before the
/// first refresh reads anything, and drained as batches come (a receiver left behind would hold
/// the broadcast's batches in memory).
pub async fn follow_routes(node: Arc<Node>, term: LeaderTerm) {
    let prefix = layout().routes_prefix().into_bytes();
    let (mut feed, subscribed_at) = {
        let state = node.sm.read();
        (node.sm.subscribe(), state.kv.revision())
    };
    {
        let mut changes = node.scheduling.route_changes();
        *changes = RouteChanges::default();
        changes.following = true;
    }
    // The first refresh rescans: it reads at least this revision.
    node.scheduling.feed_noted(subscribed_at);
    loop {
        let first = tokio::select! {
            batch = feed.recv() => batch,
            () = term.ended() => break,
        };
        let mut next = match first {
            Ok(b) => Some(b),
            Err(RecvError::Lagged(_)) => None,
            Err(RecvError::Closed) => break,
        };
        let mut lagged = next.is_none();
        let mut through = None;
        {
            // Every applied write is a batch: the ones already queued are taken under the same
            // lock and noted once (not a lock and a wake-up each, 2% of the leader's CPU at 256
            // clients writing).
            let mut changes = node.scheduling.route_changes();
            while let Some(b) = next.take() {
                if b.resync {
                    changes.lose_track();
                } else {
                    let keys = b.events.iter().filter_map(|e| e.kv.as_ref());
                    for table in keys.filter_map(|kv| table_of(&prefix, &kv.key)) {
                        changes.note(table);
                    }
                }
                through = Some(b.revision);
                match feed.try_recv() {
                    Ok(queued) => next = Some(queued),
                    Err(TryRecvError::Lagged(_)) => lagged = true,
                    Err(_) => {}
                }
            }
        }
        // A batch's revision counts as noted only once its tables are.
        let through = match through {
            Some(revision) if !lagged => revision,
            _ => {
                // What the lost batches changed is unknown: the rescan reads at least the
                // revision applied now.
                let now = node.sm.read().kv.revision();
                node.scheduling.route_changes().lose_track();
                now
            }
        };
        node.scheduling.feed_noted(through);
    }
    *node.scheduling.route_changes() = RouteChanges::default();
}

/// The stored routes, decoded once: each table's regions as of the route's mod revision, in
/// table order. About 30 bytes a region on the leader, the price of not decoding a million
/// regions' JSON every pass and every heartbeat. Kept across terms (a new term's first refresh
/// reads only the routes written since this node last led).
#[derive(Debug, Clone, Default)]
pub struct RouteViews {
    by_table: imbl::OrdMap<u64, CachedRoute>,
    /// Counts the changes to the views (a route added, rewritten or removed).
    generation: u64,
}

impl RouteViews {
    /// Every region of every route, in table order.
    pub fn regions(&self) -> impl Iterator<Item = &RouteRegion> {
        self.by_table.values().flat_map(|c| c.regions.iter())
    }

    /// Region `region_id`, found in its table's route (`region_id >> 32`).
    pub fn region(&self, region_id: u64) -> Option<&RouteRegion> {
        self.by_table
            .get(&table_id_of(region_id))?
            .region(region_id)
    }

    /// Changes whenever the views change (a route added, rewritten or removed).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The views' revision of `table`'s route.
    fn revision(&self, table: u64) -> Option<i64> {
        self.by_table.get(&table).map(|c| c.mod_revision)
    }

    /// What a refresh must read again, as (table, the revision the views hold, if any): the
    /// routes `changes` names, or (when it says what changed is unknown) every route whose
    /// stored revision differs from the views', and every table the views hold that has no
    /// route any more: a keys-only scan (revisions, no values).
    fn stale(&self, node: &Node, changes: RouteChanges) -> Result<Vec<(u64, Option<i64>)>, Status> {
        if !changes.rescan {
            let read = changes
                .tables
                .into_iter()
                .map(|t| (t, self.revision(t)))
                .collect();
            return Ok(read);
        }
        let prefix = layout().routes_prefix();
        let mut after: Option<String> = None;
        let mut read = Vec::new();
        let mut present = BTreeSet::new();
        loop {
            let (kvs, _) = store::scan(node, &prefix, after.as_deref(), SCAN_PAGE_KEYS, true)?;
            let Some(last) = kvs.last() else {
                break;
            };
            after = Some(String::from_utf8_lossy(&last.key).into_owned());
            for kv in kvs {
                let Some(table) = table_of(prefix.as_bytes(), &kv.key) else {
                    continue;
                };
                present.insert(table);
                let held = self.revision(table);
                if held != Some(kv.mod_revision) {
                    read.push((table, held));
                }
            }
        }
        for (table, c) in self.by_table.iter() {
            if !present.contains(table) {
                read.push((*table, Some(c.mod_revision)));
            }
        }
        Ok(read)
    }

    /// Puts `fresh` in (each a table, the revision the views held when it was read, and what
    /// the store holds now), unless the views moved on meanwhile. A region a route names that
    /// is not its table's (`region_id >> 32`) is left out, so that the views list every
    /// region once, in ascending id: a pass pairs them with the loads by position.
    fn apply(&mut self, fresh: Vec<(u64, Option<i64>, Option<CachedRoute>)>) {
        let mut changed = false;
        for (table, held, route) in fresh {
            let now = self.revision(table);
            match route {
                Some(mut r) if now.is_none_or(|n| n < r.mod_revision) => {
                    if r.regions.iter().any(|x| table_id_of(x.region_id) != table) {
                        tracing::warn!(table, "route names regions of other tables; left out");
                        r.regions = r
                            .regions
                            .iter()
                            .filter(|x| table_id_of(x.region_id) == table)
                            .cloned()
                            .collect();
                    }
                    self.by_table.insert(table, r);
                    changed = true;
                }
                None if now.is_some() && now == held => {
                    self.by_table.remove(&table);
                    changed = true;
                }
                _ => {}
            }
        }
        if changed {
            self.generation += 1;
        }
    }

    /// Of `regions` (by table), those whose route in these views names `node_id` their active
    /// leader: for views known current ([`refresh_through`]).
    pub fn led_in_views(&self, node_id: u64, regions: BTreeMap<u64, Vec<u64>>) -> Vec<u64> {
        let mut led = Vec::new();
        for (table, ids) in regions {
            if let Some(route) = self.by_table.get(&table) {
                route.keep_led(node_id, ids, &mut led);
            }
        }
        led
    }

    /// Of `regions` (by table), those whose stored route names `node_id` their active leader,
    /// read at the applied state now: each route's revision is looked up, and its decoded view
    /// used when it is that revision's (decoded otherwise, and kept for the next caller).
    pub fn led_by(
        node: &Node,
        node_id: u64,
        regions: BTreeMap<u64, Vec<u64>>,
    ) -> Result<Vec<u64>, Status> {
        let mut led = Vec::new();
        let mut decoded = Vec::new();
        {
            let views = node.scheduling.routes();
            for (table, ids) in regions {
                let key = layout().route(table);
                let Some(rev) = node.sm.read().kv.mod_revision(key.as_bytes()) else {
                    continue;
                };
                let fresh;
                let route = match views.by_table.get(&table) {
                    Some(c) if c.mod_revision == rev => c,
                    _ => {
                        let Some(kv) = store::get_raw(node, &key)? else {
                            continue;
                        };
                        fresh = CachedRoute::decode(&kv.key, kv.mod_revision, &kv.value);
                        decoded.push((table, views.revision(table), Some(fresh.clone())));
                        &fresh
                    }
                };
                route.keep_led(node_id, ids, &mut led);
            }
        }
        if !decoded.is_empty() {
            node.scheduling.change_routes(|views| views.apply(decoded));
        }
        Ok(led)
    }
}

/// Brings the views up to the applied state (see the module docs).
pub fn refresh(node: &Node) -> Result<(), Status> {
    let _one_at_a_time = node.scheduling.refreshing();
    refresh_locked(node)
}

/// Brings the views up to the applied state and says whether they now hold every route as of
/// store revision `revision` or later, with no route key read: true when the feed follows the
/// applied batches and has noted those up to `revision` (each batch is sent under the state's
/// write lock, before a reader can see its revision), so the changes taken name every route
/// written since the views last read. False when no feed follows (the views are left as
/// they were, for the caller to read the store instead).
pub fn refresh_through(node: &Node, revision: i64) -> Result<bool, Status> {
    let _one_at_a_time = node.scheduling.refreshing();
    if !node.scheduling.route_changes().following || !node.scheduling.fed_through(revision) {
        return Ok(false);
    }
    refresh_locked(node)?;
    Ok(true)
}

/// One refresh; the caller holds [`Scheduling::refreshing`], so a refresh that finds nothing
/// left to take never returns while another is still putting in what it took.
///
/// [`Scheduling::refreshing`]: super::Scheduling
fn refresh_locked(node: &Node) -> Result<(), Status> {
    let changes = node.scheduling.route_changes().take();
    let stale = node.scheduling.routes().stale(node, changes)?;
    let mut fresh = Vec::with_capacity(stale.len());
    for (table, held) in stale {
        let route = store::get_raw(node, &layout().route(table))?
            .map(|kv| CachedRoute::decode(&kv.key, kv.mod_revision, &kv.value));
        fresh.push((table, held, route));
    }
    if !fresh.is_empty() {
        node.scheduling.change_routes(|views| views.apply(fresh));
    }
    Ok(())
}

#[cfg(test)]
impl RouteViews {
    /// The views with `table`'s route set to `json` as of `mod_revision`.
    pub(crate) fn with_route(mut self, table: u64, mod_revision: i64, json: &str) -> Self {
        let route = CachedRoute::decode(b"k", mod_revision, json.as_bytes());
        self.apply(vec![(table, None, Some(route))]);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_name_their_table_and_nothing_else() {
        let p = b"/cairn/route/";
        assert_eq!(table_of(p, b"/cairn/route/00000000000000000042"), Some(42));
        assert_eq!(table_of(p, b"/cairn/route/x1"), None);
        assert_eq!(table_of(p, b"/cairn/route/"), None);
        assert_eq!(table_of(p, b"/cairn/table/1"), None);
    }

    #[test]
    fn changes_past_the_bound_or_without_a_feed_ask_for_a_scan() {
        let mut c = RouteChanges::default();
        assert!(c.take().rescan, "no feed: a scan");
        c.following = true;
        c.rescan = false;
        c.note(7);
        let taken = c.take();
        assert!(!taken.rescan);
        assert_eq!(taken.tables.into_iter().collect::<Vec<_>>(), [7]);
        assert!(c.take().tables.is_empty(), "taken once");
        for t in 0..=ROUTE_CHANGES_MAX as u64 {
            c.note(t);
        }
        let taken = c.take();
        assert!(taken.rescan && taken.tables.is_empty(), "bounded");
        assert!(!c.take().rescan, "then tracked again");
    }

    #[test]
    fn a_route_view_is_replaced_only_by_a_newer_one_and_removed_only_if_unchanged() {
        let route = |rev: i64, leader: u64| {
            let json = format!(r#"{{"t":1,"v":1,"r":[{{"id":4294967297,"l":{leader}}}]}}"#);
            CachedRoute::decode(b"k", rev, json.as_bytes())
        };
        let mut v = RouteViews::default();
        v.apply(vec![(1, None, Some(route(5, 10)))]);
        assert_eq!(v.generation(), 1);
        v.apply(vec![(1, None, Some(route(4, 11)))]);
        assert_eq!(
            v.regions().next().unwrap().leader,
            10,
            "an older read loses"
        );
        assert_eq!(v.generation(), 1);
        v.apply(vec![(1, Some(4), None)]);
        assert_eq!(
            v.regions().count(),
            1,
            "removed only as of the revision read"
        );
        v.apply(vec![(1, Some(5), None)]);
        assert_eq!(v.regions().count(), 0);
        assert_eq!(v.generation(), 2);
        let r = route(6, 3);
        assert!(r.leader_active(r.regions[0].region_id));
        assert_eq!(r.region(4294967297).map(|r| r.leader), Some(3));
        assert!(CachedRoute::decode(b"k", 1, b"not json").regions.is_empty());
    }

    #[test]
    fn the_views_list_each_region_once_in_ascending_id() {
        let (a, b) = ((2u64 << 32) | 1, (2u64 << 32) | 3);
        let json = format!(
            r#"{{"t":2,"v":1,"r":[{{"id":{b},"l":1}},{{"id":{a},"l":2}},{{"id":{b},"l":3}},{{"id":5,"l":4}}]}}"#
        );
        let v = RouteViews::default().with_route(2, 1, &json).with_route(
            1,
            1,
            r#"{"t":1,"v":1,"r":[{"id":4294967296,"l":9}]}"#,
        );
        let ids: Vec<u64> = v.regions().map(|r| r.region_id).collect();
        assert_eq!(
            ids,
            [1 << 32, a, b],
            "a duplicate and another table's region left out"
        );
        assert_eq!(v.region(a).map(|r| r.leader), Some(2));
        assert!(v.region(5).is_none());
    }

    #[test]
    fn a_route_view_keeps_each_regions_followers() {
        let json = r#"{"t":1,"v":1,"r":[{"id":4294967297,"l":3,"f":[4,5]},{"id":4294967296,"l":4,"s":"downgrading"}]}"#;
        let r = CachedRoute::decode(b"k", 1, json.as_bytes());
        let first = r.region(4294967296).unwrap();
        assert_eq!((first.leader, &first.followers()[..]), (4, &[][..]));
        assert!(!r.leader_active(first.region_id));
        assert!(
            !r.leads(first.region_id, 4),
            "downgrading: its leader takes no writes"
        );
        let second = r.region(4294967297).unwrap();
        assert_eq!((second.leader, &second.followers()[..]), (3, &[4, 5][..]));
        assert!(r.leader_active(second.region_id));
        assert!(r.leads(second.region_id, 3) && !r.leads(second.region_id, 4));
        assert_eq!(
            std::mem::size_of::<RouteRegion>(),
            24,
            "32 with the flag in it"
        );
        assert_eq!(std::mem::size_of::<CachedRoute>(), 32);
    }
}
