//! [`RouteCache`]: a frontend's cache of table routes and table names.
//!
//! Routes are fetched lazily through `GetRoutes`, one call per table however many tasks miss
//! at once (single flight). Two things keep them fresh. A background task follows the metadata
//! watch and drops what a change made stale (a table altered or dropped, a route changed; all
//! of it when the watch had to reset). And [`RouteCache::with_route`] lets a caller report that
//! a datanode refused a request because it does not lead the region: the cache drops that
//! table's route, fetches it again and the caller retries, a bounded number of times.
//!
//! The cache holds at most a fixed number of tables ([`ROUTE_CACHE_TABLES_MAX`] by default);
//! when full it evicts the table fetched longest ago (first in, first out; a hit does not count
//! as a use, so hits take no write lock and the oldest route, the likeliest to be stale, goes).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use cairn_proto::cairnpb::{DescribeTableRequest, MetadataEventKind, TableName};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::task::JoinHandle;

use super::backoff::reconnect_delay_ms;
use super::cached_route::CachedRoute;
use super::fifo_map::FifoMap;
use super::metadata_watch::MetadataWatchItem;
use super::route_retry::{
    route_retry_delay_ms, RouteAttemptError, RouteRetryError, ROUTE_RETRIES_MAX,
};
use super::{MetaClient, MetadataError};

/// Most tables whose routes one cache holds (and most table names it remembers).
pub const ROUTE_CACHE_TABLES_MAX: usize = 100_000;
/// Settings of a [`RouteCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCacheOptions {
    /// Most tables cached (at least 1, at most [`ROUTE_CACHE_TABLES_MAX`]).
    pub capacity: usize,
    /// Whether a background task follows the metadata watch to drop stale entries. Without
    /// it, only [`RouteCache::with_route`] refusals and explicit invalidation refresh routes.
    pub watch: bool,
}

impl Default for RouteCacheOptions {
    fn default() -> Self {
        RouteCacheOptions {
            capacity: ROUTE_CACHE_TABLES_MAX,
            watch: true,
        }
    }
}

/// What a [`RouteCache`] has done since it was made; for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteCacheStats {
    /// Route lookups answered from the cache.
    pub hits: u64,
    /// Route lookups that had to wait for a fetch (their own or one in flight).
    pub misses: u64,
    /// `GetRoutes` calls made.
    pub fetches: u64,
    /// Routes dropped because a datanode refused them ([`RouteCache::with_route`]).
    pub refreshes: u64,
    /// Routes dropped by invalidation (explicit or by the metadata watch).
    pub invalidations: u64,
    /// Routes evicted to stay within the capacity.
    pub evictions: u64,
    /// Times the metadata watch reset and everything was dropped.
    pub resets: u64,
    /// Table names answered from the cache.
    pub name_hits: u64,
    /// Table names looked up with `DescribeTable`.
    pub name_misses: u64,
    /// Tables cached now.
    pub cached_tables: u64,
}

type RouteFetch = Shared<BoxFuture<'static, Result<Arc<CachedRoute>, MetadataError>>>;

/// A route cache over a [`MetaClient`]. Cheap to clone; clones share the cache. The background
/// watch task stops when the last clone is dropped.
#[derive(Clone)]
pub struct RouteCache {
    inner: Arc<Inner>,
    _watch: Option<Arc<WatchTask>>,
}

struct Inner {
    client: MetaClient,
    state: Mutex<State>,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
    refreshes: AtomicU64,
    invalidations: AtomicU64,
    evictions: AtomicU64,
    resets: AtomicU64,
    name_hits: AtomicU64,
    name_misses: AtomicU64,
}

/// A name as a cache key: an empty catalog is the default one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct NameKey(String, String, String);

impl NameKey {
    fn of(name: &TableName) -> Self {
        let catalog = if name.catalog.is_empty() {
            "default"
        } else {
            &name.catalog
        };
        NameKey(catalog.to_string(), name.schema.clone(), name.name.clone())
    }
}

struct Inflight {
    generation: u64,
    fetch: RouteFetch,
}

struct State {
    routes: FifoMap<u64, Arc<CachedRoute>>,
    names: FifoMap<NameKey, u64>,
    /// Fetches under way. Invalidating a table removes its entry, and a fetch installs its
    /// answer only if its own entry is still there: an answer read before a change must not
    /// replace the invalidation.
    inflight: HashMap<u64, Inflight>,
    next_generation: u64,
    /// Advanced whenever names are dropped; a name lookup started earlier does not install.
    names_epoch: u64,
    /// First revision the metadata watch reports (0 while none is established). A route read
    /// at a revision below `watch_from - 1` could miss a change, so it is not installed.
    watch_from: i64,
}

impl State {
    fn covered(&self, revision: i64) -> bool {
        // Revision 0 means the server did not say; trust it rather than never caching.
        self.watch_from == 0 || revision == 0 || revision + 1 >= self.watch_from
    }

    fn drop_names_of(&mut self, table_id: u64) {
        self.names.retain(|_, id| *id != table_id);
        self.names_epoch += 1;
    }
}

/// Stops the watch task when the last [`RouteCache`] clone goes.
struct WatchTask(JoinHandle<()>);

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl RouteCache {
    /// A cache with the default options: [`ROUTE_CACHE_TABLES_MAX`] tables, following the
    /// metadata watch. Must be called inside a Tokio runtime.
    pub fn new(client: MetaClient) -> Self {
        Self::with_options(client, RouteCacheOptions::default())
    }

    /// A cache with explicit options. Must be called inside a Tokio runtime when
    /// `options.watch` is set.
    pub fn with_options(client: MetaClient, options: RouteCacheOptions) -> Self {
        let capacity = options.capacity.clamp(1, ROUTE_CACHE_TABLES_MAX);
        let inner = Arc::new(Inner {
            client: client.clone(),
            state: Mutex::new(State {
                routes: FifoMap::new(capacity),
                names: FifoMap::new(capacity),
                inflight: HashMap::new(),
                next_generation: 0,
                names_epoch: 0,
                watch_from: 0,
            }),
            counters: Counters::default(),
        });
        let watch = options.watch.then(|| {
            let task = tokio::spawn(keep_fresh(Arc::downgrade(&inner), client));
            Arc::new(WatchTask(task))
        });
        RouteCache {
            inner,
            _watch: watch,
        }
    }

    /// The route of `table_id`: from the cache, or fetched with `GetRoutes` (linearizable) and
    /// cached. Concurrent misses on one table share one fetch. Fails with
    /// [`MetadataError::TableNotFound`] when the table does not exist.
    pub async fn route(&self, table_id: u64) -> Result<Arc<CachedRoute>, MetadataError> {
        let fetch = {
            let mut state = self.inner.lock();
            if let Some(route) = state.routes.get(&table_id) {
                bump(&self.inner.counters.hits);
                return Ok(Arc::clone(route));
            }
            bump(&self.inner.counters.misses);
            match state.inflight.get(&table_id) {
                Some(inflight) => inflight.fetch.clone(),
                None => {
                    let generation = state.next_generation;
                    state.next_generation += 1;
                    let fetch = fetch_route(
                        Arc::downgrade(&self.inner),
                        self.inner.client.clone(),
                        table_id,
                        generation,
                    )
                    .boxed()
                    .shared();
                    state.inflight.insert(
                        table_id,
                        Inflight {
                            generation,
                            fetch: fetch.clone(),
                        },
                    );
                    fetch
                }
            }
        };
        fetch.await
    }

    /// The id of the table called `name`: from the cache, or looked up with `DescribeTable`
    /// (linearizable) and cached until the table is dropped or renamed. Fails with
    /// [`MetadataError::TableNameNotFound`] when no such table exists. Concurrent misses each
    /// make their own call.
    pub async fn table_id(&self, name: &TableName) -> Result<u64, MetadataError> {
        let key = NameKey::of(name);
        let epoch = {
            let state = self.inner.lock();
            if let Some(id) = state.names.get(&key) {
                bump(&self.inner.counters.name_hits);
                return Ok(*id);
            }
            state.names_epoch
        };
        bump(&self.inner.counters.name_misses);
        let not_found = || MetadataError::TableNameNotFound { name: name.clone() };
        let answer = self
            .inner
            .client
            .describe_table(DescribeTableRequest {
                name: Some(name.clone()),
                serializable: false,
            })
            .await;
        let table = match answer {
            Ok(answer) => answer.table.ok_or_else(not_found)?,
            Err(e) if e.code() == Some(tonic::Code::NotFound) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let mut state = self.inner.lock();
        if state.names_epoch == epoch {
            state.names.insert(key, table.id);
        }
        Ok(table.id)
    }

    /// Runs `attempt` with the route of `table_id` until it succeeds, fails for a reason other
    /// than a stale route, or the route was refreshed [`ROUTE_RETRIES_MAX`] times. After each
    /// [`RouteAttemptError::InvalidRoute`] the refused route is dropped (unless another task
    /// already replaced it), fetched again after [`route_retry_delay_ms`], and `attempt` runs
    /// again with the new one.
    pub async fn with_route<T, E, F, Fut>(
        &self,
        table_id: u64,
        mut attempt: F,
    ) -> Result<T, RouteRetryError<E>>
    where
        F: FnMut(Arc<CachedRoute>) -> Fut,
        Fut: Future<Output = Result<T, RouteAttemptError<E>>>,
    {
        let mut retries = 0u32;
        loop {
            let route = self
                .route(table_id)
                .await
                .map_err(RouteRetryError::Lookup)?;
            match attempt(Arc::clone(&route)).await {
                Ok(value) => return Ok(value),
                Err(RouteAttemptError::Other(e)) => return Err(RouteRetryError::Attempt(e)),
                Err(RouteAttemptError::InvalidRoute { region_id, node_id }) => {
                    if retries >= ROUTE_RETRIES_MAX {
                        return Err(RouteRetryError::InvalidRouteRetriesExhausted {
                            table_id,
                            retries,
                            region_id,
                            node_id,
                        });
                    }
                    retries += 1;
                    bump(&self.inner.counters.refreshes);
                    self.drop_if_current(&route);
                    let delay_ms = route_retry_delay_ms(retries);
                    if delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    }
                }
            }
        }
    }

    /// Drops the route of `table_id` (and any fetch of it under way, whose answer may predate
    /// the change); the next lookup fetches it again.
    pub fn invalidate(&self, table_id: u64) {
        let mut state = self.inner.lock();
        self.inner.invalidate_locked(&mut state, table_id);
    }

    /// Drops every route and table name.
    pub fn invalidate_all(&self) {
        let mut state = self.inner.lock();
        self.inner.clear_locked(&mut state);
    }

    /// Counters since the cache was made.
    pub fn stats(&self) -> RouteCacheStats {
        let c = &self.inner.counters;
        let read = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RouteCacheStats {
            hits: read(&c.hits),
            misses: read(&c.misses),
            fetches: read(&c.fetches),
            refreshes: read(&c.refreshes),
            invalidations: read(&c.invalidations),
            evictions: read(&c.evictions),
            resets: read(&c.resets),
            name_hits: read(&c.name_hits),
            name_misses: read(&c.name_misses),
            cached_tables: self.inner.lock().routes.len() as u64,
        }
    }

    /// The client the cache fetches with.
    pub fn client(&self) -> &MetaClient {
        &self.inner.client
    }

    /// Drops `route` if it is still the cached one: when many tasks are refused on one stale
    /// route, only the first refusal causes a fetch.
    fn drop_if_current(&self, route: &Arc<CachedRoute>) {
        let mut state = self.inner.lock();
        let table_id = route.table_id();
        if state
            .routes
            .get(&table_id)
            .is_some_and(|cached| Arc::ptr_eq(cached, route))
        {
            state.routes.remove(&table_id);
        }
    }
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteCache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change of the state is a few map operations that cannot stop half-way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn invalidate_locked(&self, state: &mut State, table_id: u64) {
        state.inflight.remove(&table_id);
        if state.routes.remove(&table_id).is_some() {
            bump(&self.counters.invalidations);
        }
    }

    fn clear_locked(&self, state: &mut State) {
        state.inflight.clear();
        let dropped = state.routes.clear() as u64;
        self.counters
            .invalidations
            .fetch_add(dropped, Ordering::Relaxed);
        state.names.clear();
        state.names_epoch += 1;
    }

    /// Records the outcome of fetch `generation` of `table_id`.
    fn finish_fetch(
        &self,
        table_id: u64,
        generation: u64,
        outcome: &Result<Arc<CachedRoute>, MetadataError>,
    ) {
        let mut state = self.lock();
        let registered = state
            .inflight
            .get(&table_id)
            .is_some_and(|f| f.generation == generation);
        if registered {
            state.inflight.remove(&table_id);
        }
        match outcome {
            Ok(route) if registered && state.covered(route.revision()) => {
                let evicted = state.routes.insert(table_id, Arc::clone(route));
                self.counters
                    .evictions
                    .fetch_add(u64::from(evicted.is_some()), Ordering::Relaxed);
            }
            Err(MetadataError::TableNotFound { .. }) => state.drop_names_of(table_id),
            _ => {}
        }
    }

    /// The metadata watch starts at `revision + 1`: routes read earlier may have missed a
    /// change, so they go.
    fn watch_started(&self, revision: i64) {
        let mut state = self.lock();
        state.watch_from = revision + 1;
        let dropped = state
            .routes
            .retain(|_, route| route.revision() == 0 || route.revision() >= revision);
        self.counters
            .invalidations
            .fetch_add(dropped as u64, Ordering::Relaxed);
    }

    fn apply(&self, item: &MetadataWatchItem) {
        let mut state = self.lock();
        let event = match item {
            MetadataWatchItem::Reset { revision } => {
                bump(&self.counters.resets);
                self.clear_locked(&mut state);
                state.watch_from = state.watch_from.max(revision + 1);
                return;
            }
            MetadataWatchItem::Event(event) => event,
        };
        match event.kind() {
            MetadataEventKind::TableAltered | MetadataEventKind::TableDropped => {
                self.invalidate_locked(&mut state, event.table_id);
                state.drop_names_of(event.table_id);
            }
            MetadataEventKind::RouteChanged => {
                let newer = state
                    .routes
                    .get(&event.table_id)
                    .is_some_and(|r| event.version != 0 && r.version() >= event.version);
                if !newer {
                    self.invalidate_locked(&mut state, event.table_id);
                }
            }
            MetadataEventKind::TableCreated => {
                if let Some(name) = &event.name {
                    state.names.remove(&NameKey::of(name));
                }
                state.names_epoch += 1;
            }
            // Its tables are gone; which of the cached routes belonged to it is not known.
            MetadataEventKind::DatabaseDropped => self.clear_locked(&mut state),
            MetadataEventKind::DatabaseCreated | MetadataEventKind::Unspecified => {}
        }
    }
}

/// One `GetRoutes` call for `table_id`, shared by every task that missed meanwhile.
async fn fetch_route(
    inner: Weak<Inner>,
    client: MetaClient,
    table_id: u64,
    generation: u64,
) -> Result<Arc<CachedRoute>, MetadataError> {
    if let Some(inner) = inner.upgrade() {
        bump(&inner.counters.fetches);
    }
    let outcome = match client.get_routes(&[table_id]).await {
        Err(e) => Err(MetadataError::Client(e)),
        Ok(response) => CachedRoute::from_response(&response)
            .into_iter()
            .find(|route| route.table_id() == table_id)
            .map(Arc::new)
            .ok_or(MetadataError::TableNotFound { table_id }),
    };
    if let Some(inner) = inner.upgrade() {
        inner.finish_fetch(table_id, generation, &outcome);
    }
    outcome
}

/// The background task of a cache: pins the watch to the current revision, then applies every
/// item of the metadata watch until the cache is dropped.
async fn keep_fresh(inner: Weak<Inner>, client: MetaClient) {
    let jitter_seed = Weak::as_ptr(&inner) as usize as u64;
    let mut failures = 0u32;
    let revision = loop {
        match client.metadata_revision().await {
            Ok(revision) => break revision.max(0),
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(error = %e, "route cache: cannot read the metadata revision");
                let delay_ms = reconnect_delay_ms(failures, jitter_seed);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                if inner.strong_count() == 0 {
                    return;
                }
            }
        }
    };
    match inner.upgrade() {
        Some(inner) => inner.watch_started(revision),
        None => return,
    }
    let mut watch = client.watch_metadata(revision + 1);
    while let Some(item) = watch.next().await {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.apply(&item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_keys_treat_an_empty_catalog_as_default() {
        let a = super::super::ddl::table_name("", "public", "cpu");
        let b = super::super::ddl::table_name("default", "public", "cpu");
        assert_eq!(NameKey::of(&a), NameKey::of(&b));
    }
}
