//! The metadata side of `MetaClient` and the `RouteCache` against a fake cairn.v1 Meta server
//! in this process (a test double holding a few tables and their routes in memory). Proves:
//! routes are fetched lazily and concurrent misses share one `GetRoutes`; a pushed watch event
//! invalidates; a refused route is refreshed and retried, a bounded number of times; a
//! compacted watch resets (and the cache drops everything); a broken watch resumes after the
//! last event; long id lists are split; DDL is retried only when idempotent; pages are
//! followed; names are cached until their table is dropped; the capacity is kept.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::meta::{
    table_name, MetaClient, MetadataError, MetadataWatchItem, RouteAttemptError, RouteCache,
    RouteCacheOptions, RouteRetryError, ROUTE_RETRIES_MAX, ROUTE_TABLES_PER_REQUEST_MAX,
};
use cairn_client::proto::cairnpb::meta_server::{Meta, MetaServer};
use cairn_client::proto::cairnpb::{
    AlterTableRequest, CreateDatabaseRequest, CreateTableRequest, DdlResponse,
    DescribeTableRequest, DescribeTableResponse, DropDatabaseRequest, DropTableRequest,
    GetProcedureRequest, GetRoutesRequest, GetRoutesResponse, LeaderState, ListDatabasesRequest,
    ListDatabasesResponse, ListProceduresRequest, ListProceduresResponse, ListTablesRequest,
    ListTablesResponse, MetadataEvent, MetadataEventKind, NodeAddress, ProcedureView, RegionRoute,
    TableInfo, TableName, TableRoute, TruncateTableRequest, WatchMetadataRequest,
    WatchMetadataResponse,
};
use cairn_client::ClientConfig;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

const WAIT_MAX: Duration = Duration::from_secs(10);
const REGIONS_PER_TABLE: u64 = 2;
/// Tables answered per `ListTables` page.
const PAGE_SIZE: usize = 2;

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchMetadataResponse, Status>> + Send>>;

#[derive(Default)]
struct World {
    revision: i64,
    tables: BTreeMap<u64, (TableInfo, TableRoute)>,
    /// Every event ever pushed, for watches that start in the past.
    history: Vec<MetadataEvent>,
    /// A watch starting below this gets "compacted".
    compacted_below: i64,
    watchers: Vec<mpsc::Sender<Result<WatchMetadataResponse, Status>>>,
}

/// An in-memory Meta service: tables with two regions each, led by nodes 10 and 11 and
/// followed by 20 and 21; every node at `10.0.0.N:4000`.
#[derive(Default)]
struct FakeMeta {
    world: Mutex<World>,
    get_routes_calls: AtomicU64,
    get_routes_sizes: Mutex<Vec<usize>>,
    get_routes_delay_ms: AtomicU64,
    describe_calls: AtomicU64,
    create_table_calls: AtomicU64,
    list_tables_calls: AtomicU64,
    watch_starts: Mutex<Vec<i64>>,
}

fn region_route(table_id: u64, r: u64, leader: u64) -> RegionRoute {
    RegionRoute {
        region_id: (table_id << 32) | r,
        leader_node: leader,
        follower_nodes: vec![20 + r],
        leader_state: LeaderState::Active as i32,
    }
}

impl FakeMeta {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    fn add_table(&self, table_id: u64, schema: &str, name: &str) {
        let mut world = self.world();
        world.revision += 1;
        let info = TableInfo {
            id: table_id,
            name: Some(table_name("", schema, name)),
            version: 1,
            region_numbers: (0..REGIONS_PER_TABLE as u32).collect(),
            ..Default::default()
        };
        let route = TableRoute {
            table_id,
            version: 1,
            regions: (0..REGIONS_PER_TABLE)
                .map(|r| region_route(table_id, r, 10 + r))
                .collect(),
        };
        world.tables.insert(table_id, (info, route));
    }

    /// Moves the leader of region 0 of `table_id` to `leader`, without telling any watcher.
    fn move_leader(&self, table_id: u64, leader: u64) -> u64 {
        let mut world = self.world();
        world.revision += 1;
        let (_, route) = world.tables.get_mut(&table_id).unwrap();
        route.version += 1;
        route.regions[0].leader_node = leader;
        route.version
    }

    /// Records `event` at a new revision and sends it to every open watch.
    fn push(&self, kind: MetadataEventKind, table_id: u64, version: u64) -> i64 {
        let mut world = self.world();
        world.revision += 1;
        let event = MetadataEvent {
            kind: kind as i32,
            revision: world.revision,
            table_id,
            name: world
                .tables
                .get(&table_id)
                .and_then(|(info, _)| info.name.clone()),
            version,
        };
        world.history.push(event.clone());
        let response = WatchMetadataResponse {
            events: vec![event],
            revision: world.revision,
            compact_revision: 0,
        };
        world
            .watchers
            .retain(|w| w.try_send(Ok(response.clone())).is_ok());
        world.revision
    }

    /// Ends every open watch stream.
    fn break_watches(&self) {
        self.world().watchers.clear();
    }

    fn open_watches(&self) -> usize {
        self.world().watchers.len()
    }
}

#[tonic::async_trait]
impl Meta for FakeMeta {
    async fn create_database(
        &self,
        _: Request<CreateDatabaseRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn drop_database(
        &self,
        _: Request<DropDatabaseRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_databases(
        &self,
        _: Request<ListDatabasesRequest>,
    ) -> Result<Response<ListDatabasesResponse>, Status> {
        Ok(Response::new(ListDatabasesResponse {
            databases: vec![],
            next_page_token: String::new(),
            revision: self.world().revision,
        }))
    }
    /// Always answers Unavailable, as a node that went away mid-request would.
    async fn create_table(
        &self,
        _: Request<CreateTableRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.create_table_calls.fetch_add(1, Ordering::SeqCst);
        Err(Status::unavailable("leader changed"))
    }
    async fn drop_table(
        &self,
        _: Request<DropTableRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn alter_table(
        &self,
        _: Request<AlterTableRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn truncate_table(
        &self,
        _: Request<TruncateTableRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn describe_table(
        &self,
        request: Request<DescribeTableRequest>,
    ) -> Result<Response<DescribeTableResponse>, Status> {
        self.describe_calls.fetch_add(1, Ordering::SeqCst);
        let name = request.into_inner().name.unwrap_or_default();
        let world = self.world();
        let found = world.tables.values().find(|(info, _)| {
            info.name.as_ref().map(|n| (&n.schema, &n.name)) == Some((&name.schema, &name.name))
        });
        match found {
            Some((info, route)) => Ok(Response::new(DescribeTableResponse {
                table: Some(info.clone()),
                route: Some(route.clone()),
                revision: world.revision,
            })),
            None => Err(Status::not_found("no such table")),
        }
    }
    /// Pages of [`PAGE_SIZE`] tables; the token is the index of the next table.
    async fn list_tables(
        &self,
        request: Request<ListTablesRequest>,
    ) -> Result<Response<ListTablesResponse>, Status> {
        self.list_tables_calls.fetch_add(1, Ordering::SeqCst);
        let request = request.into_inner();
        let from: usize = if request.page_token.is_empty() {
            0
        } else {
            request
                .page_token
                .parse()
                .map_err(|_| Status::invalid_argument("token"))?
        };
        let world = self.world();
        let all: Vec<TableInfo> = world
            .tables
            .values()
            .map(|(info, _)| info.clone())
            .filter(|info| info.name.as_ref().unwrap().schema == request.schema)
            .collect();
        let page: Vec<TableInfo> = all.iter().skip(from).take(PAGE_SIZE).cloned().collect();
        let next = from + page.len();
        Ok(Response::new(ListTablesResponse {
            tables: page,
            next_page_token: if next < all.len() {
                next.to_string()
            } else {
                String::new()
            },
            revision: world.revision,
        }))
    }
    async fn get_routes(
        &self,
        request: Request<GetRoutesRequest>,
    ) -> Result<Response<GetRoutesResponse>, Status> {
        self.get_routes_calls.fetch_add(1, Ordering::SeqCst);
        let ids = request.into_inner().table_ids;
        self.get_routes_sizes.lock().unwrap().push(ids.len());
        let delay_ms = self.get_routes_delay_ms.load(Ordering::SeqCst);
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        let world = self.world();
        let mut response = GetRoutesResponse {
            revision: world.revision,
            ..Default::default()
        };
        let mut nodes = BTreeMap::new();
        for id in ids {
            match world.tables.get(&id) {
                Some((_, route)) => {
                    for region in &route.regions {
                        for node in std::iter::once(region.leader_node)
                            .chain(region.follower_nodes.iter().copied())
                        {
                            nodes.insert(node, format!("10.0.0.{node}:4000"));
                        }
                    }
                    response.routes.push(route.clone());
                }
                None => response.missing_table_ids.push(id),
            }
        }
        response.nodes = nodes
            .into_iter()
            .map(|(node_id, address)| NodeAddress { node_id, address })
            .collect();
        Ok(Response::new(response))
    }

    type WatchMetadataStream = WatchStream;

    async fn watch_metadata(
        &self,
        request: Request<WatchMetadataRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let start = request.into_inner().start_revision;
        self.watch_starts.lock().unwrap().push(start);
        let (tx, rx) = mpsc::channel(64);
        let mut world = self.world();
        if start < world.compacted_below {
            let _ = tx.try_send(Ok(WatchMetadataResponse {
                events: vec![],
                revision: world.revision,
                compact_revision: world.compacted_below,
            }));
            // The stream ends after the compaction notice.
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let past: Vec<MetadataEvent> = world
            .history
            .iter()
            .filter(|e| e.revision >= start)
            .cloned()
            .collect();
        if !past.is_empty() {
            let _ = tx.try_send(Ok(WatchMetadataResponse {
                events: past,
                revision: world.revision,
                compact_revision: 0,
            }));
        }
        world.watchers.push(tx);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_procedures(
        &self,
        _: Request<ListProceduresRequest>,
    ) -> Result<Response<ListProceduresResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_procedure(
        &self,
        _: Request<GetProcedureRequest>,
    ) -> Result<Response<ProcedureView>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn migrate_region(
        &self,
        _: Request<cairn_client::proto::cairnpb::MigrateRegionRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_maintenance(
        &self,
        _: Request<cairn_client::proto::cairnpb::SetMaintenanceRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_maintenance(
        &self,
        _: Request<cairn_client::proto::cairnpb::GetMaintenanceRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::MaintenanceState>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn drain_node(
        &self,
        _: Request<cairn_client::proto::cairnpb::DrainNodeRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_schedulers(
        &self,
        _: Request<cairn_client::proto::cairnpb::ListSchedulersRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::ListSchedulersResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn set_scheduler(
        &self,
        _: Request<cairn_client::proto::cairnpb::SetSchedulerRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn plan_schedule(
        &self,
        _: Request<cairn_client::proto::cairnpb::PlanScheduleRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::ListOperatorsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_operators(
        &self,
        _: Request<cairn_client::proto::cairnpb::ListOperatorsRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::ListOperatorsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_operator(
        &self,
        _: Request<cairn_client::proto::cairnpb::GetOperatorRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::OperatorView>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn cancel_operator(
        &self,
        _: Request<cairn_client::proto::cairnpb::CancelOperatorRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::OperatorView>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_node_stats(
        &self,
        _: Request<cairn_client::proto::cairnpb::GetNodeStatsRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::NodeStatsHistory>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_region_stats(
        &self,
        _: Request<cairn_client::proto::cairnpb::GetRegionStatsRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::RegionStatsHistory>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_events(
        &self,
        _: Request<cairn_client::proto::cairnpb::ListEventsRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::ListEventsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_region(
        &self,
        _: Request<cairn_client::proto::cairnpb::GetRegionRequest>,
    ) -> Result<Response<cairn_client::proto::cairnpb::RegionView>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `fake` on 127.0.0.1:0 and returns a client for it (few, fast retries).
async fn serve(fake: Arc<FakeMeta>) -> MetaClient {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(MetaServer::from_arc(fake))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let config = ClientConfig {
        attempts_max: 3,
        backoff_initial_ms: 1,
        backoff_max_ms: 5,
        ..Default::default()
    };
    MetaClient::with_config([addr.to_string()], config).unwrap()
}

async fn fake_with_tables(count: u64) -> (Arc<FakeMeta>, MetaClient) {
    let fake = Arc::new(FakeMeta::default());
    for id in 1..=count {
        fake.add_table(id, "public", &format!("t{id}"));
    }
    let client = serve(Arc::clone(&fake)).await;
    (fake, client)
}

const NO_WATCH: RouteCacheOptions = RouteCacheOptions {
    capacity: 1_000,
    watch: false,
};

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn concurrent_misses_share_one_get_routes_call() {
    let (fake, client) = fake_with_tables(3).await;
    fake.get_routes_delay_ms.store(200, Ordering::SeqCst);
    let cache = RouteCache::with_options(client, NO_WATCH);
    let lookups: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.route(2).await })
        })
        .collect();
    for lookup in lookups {
        let route = lookup.await.unwrap().unwrap();
        assert_eq!(route.table_id(), 2);
        assert_eq!(route.leader_of(2 << 32), Some((10, "10.0.0.10:4000")));
    }
    assert_eq!(fake.get_routes_calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.fetches, stats.hits), (100, 1, 0));
    cache.route(2).await.unwrap();
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(fake.get_routes_calls.load(Ordering::SeqCst), 1);
    assert!(matches!(
        cache.route(99).await,
        Err(MetadataError::TableNotFound { table_id: 99 })
    ));
}

#[tokio::test]
async fn pushed_route_change_invalidates_the_cached_route() {
    let (fake, client) = fake_with_tables(2).await;
    let cache = RouteCache::new(client);
    wait_until("the cache's watch", || fake.open_watches() == 1).await;
    let before = cache.route(1).await.unwrap();
    assert_eq!(before.version(), 1);
    let version = fake.move_leader(1, 12);
    // A change to another table leaves table 1 cached.
    fake.push(MetadataEventKind::TableAltered, 2, 2);
    fake.push(MetadataEventKind::RouteChanged, 1, version);
    wait_until("the invalidation", || cache.stats().invalidations == 1).await;
    let after = cache.route(1).await.unwrap();
    assert_eq!(after.version(), 2);
    assert_eq!(after.leader_of(1 << 32).map(|(node, _)| node), Some(12));
    assert_eq!(fake.get_routes_calls.load(Ordering::SeqCst), 2);
    // An event for a version the cache already has changes nothing.
    fake.push(MetadataEventKind::RouteChanged, 1, version);
    tokio::time::sleep(Duration::from_millis(100)).await;
    cache.route(1).await.unwrap();
    assert_eq!(fake.get_routes_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn refused_route_is_refreshed_and_retried_a_bounded_number_of_times() {
    let (fake, client) = fake_with_tables(1).await;
    let cache = RouteCache::with_options(client, NO_WATCH);
    cache.route(1).await.unwrap();
    fake.move_leader(1, 13);
    // A datanode that is not node 13 says it does not lead region 0.
    let attempts = AtomicU64::new(0);
    let written = cache
        .with_route(1, |route| {
            attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                let region_id = 1 << 32;
                match route.leader_of(region_id) {
                    Some((13, _)) => Ok::<_, RouteAttemptError<String>>("written"),
                    Some((node_id, _)) => {
                        Err(RouteAttemptError::InvalidRoute { region_id, node_id })
                    }
                    None => Err(RouteAttemptError::Other("no leader".to_string())),
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(written, "written");
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!((cache.stats().refreshes, cache.stats().fetches), (1, 2));

    // A node that refuses every route: the cache gives up after ROUTE_RETRIES_MAX refreshes.
    let err = cache
        .with_route(1, |_| async {
            Err::<(), _>(RouteAttemptError::<String>::InvalidRoute {
                region_id: 1 << 32,
                node_id: 13,
            })
        })
        .await
        .unwrap_err();
    match err {
        RouteRetryError::InvalidRouteRetriesExhausted {
            table_id, retries, ..
        } => assert_eq!((table_id, retries), (1, ROUTE_RETRIES_MAX)),
        other => panic!("{other:?}"),
    }
    assert_eq!(cache.stats().fetches, 2 + u64::from(ROUTE_RETRIES_MAX));

    // Other failures come back at once.
    let err = cache
        .with_route(1, |_| async {
            Err::<(), _>(RouteAttemptError::Other("disk full"))
        })
        .await
        .unwrap_err();
    assert!(matches!(err, RouteRetryError::Attempt("disk full")));
}

#[tokio::test]
async fn compacted_watch_yields_reset_and_resumes_after_it() {
    let (fake, client) = fake_with_tables(1).await;
    {
        let mut world = fake.world();
        world.revision = 60;
        world.compacted_below = 50;
    }
    let mut watch = client.watch_metadata(5);
    let first = tokio::time::timeout(WAIT_MAX, watch.next()).await.unwrap();
    assert_eq!(first, Some(MetadataWatchItem::Reset { revision: 60 }));
    wait_until("the resumed watch", || fake.open_watches() == 1).await;
    let revision = fake.push(MetadataEventKind::TableAltered, 1, 2);
    let next = tokio::time::timeout(WAIT_MAX, watch.next()).await.unwrap();
    match next {
        Some(MetadataWatchItem::Event(e)) => assert_eq!(e.revision, revision),
        other => panic!("{other:?}"),
    }
    assert_eq!(*fake.watch_starts.lock().unwrap(), vec![5, 61]);
}

#[tokio::test]
async fn route_cache_drops_everything_when_its_watch_resets() {
    let (fake, client) = fake_with_tables(2).await;
    let cache = RouteCache::new(client);
    wait_until("the cache's watch", || fake.open_watches() == 1).await;
    cache.route(1).await.unwrap();
    cache.route(2).await.unwrap();
    cache
        .table_id(&table_name("", "public", "t1"))
        .await
        .unwrap();
    {
        let mut world = fake.world();
        world.revision += 20;
        world.compacted_below = world.revision;
    }
    fake.break_watches();
    wait_until("the reset", || cache.stats().resets == 1).await;
    assert_eq!(cache.stats().cached_tables, 0);
    cache
        .table_id(&table_name("", "public", "t1"))
        .await
        .unwrap();
    assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 2);
    wait_until("the watch after the reset", || fake.open_watches() == 1).await;
}

#[tokio::test]
async fn broken_watch_resumes_after_the_last_event() {
    let (fake, client) = fake_with_tables(1).await;
    let anchor = fake.world().revision;
    let mut watch = client.watch_metadata(0);
    wait_until("the watch", || fake.open_watches() == 1).await;
    let r1 = fake.push(MetadataEventKind::TableAltered, 1, 2);
    let r2 = fake.push(MetadataEventKind::RouteChanged, 1, 2);
    let mut seen = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(WAIT_MAX, watch.next()).await.unwrap() {
            Some(MetadataWatchItem::Event(e)) => seen.push(e.revision),
            other => panic!("{other:?}"),
        }
    }
    fake.break_watches();
    // Pushed while no stream is open: only the history has it.
    let r3 = fake.push(MetadataEventKind::TableDropped, 1, 2);
    match tokio::time::timeout(WAIT_MAX, watch.next()).await.unwrap() {
        Some(MetadataWatchItem::Event(e)) => seen.push(e.revision),
        other => panic!("{other:?}"),
    }
    assert_eq!(seen, vec![r1, r2, r3]);
    let starts = fake.watch_starts.lock().unwrap().clone();
    assert_eq!(starts, vec![anchor + 1, r2 + 1]);
}

#[tokio::test]
async fn get_routes_splits_long_id_lists() {
    let count = 2 * ROUTE_TABLES_PER_REQUEST_MAX as u64 + 400;
    let (fake, client) = fake_with_tables(count).await;
    let mut ids: Vec<u64> = (1..=count).collect();
    ids.extend([count + 1, count + 2]);
    let response = client.get_routes(&ids).await.unwrap();
    assert_eq!(
        *fake.get_routes_sizes.lock().unwrap(),
        vec![1_000, 1_000, 402]
    );
    assert_eq!(response.routes.len() as u64, count);
    assert!(response
        .routes
        .iter()
        .zip(1..)
        .all(|(route, id)| route.table_id == id));
    assert_eq!(response.missing_table_ids, vec![count + 1, count + 2]);
    // Nodes 10, 11, 20, 21, once each.
    assert_eq!(response.nodes.len(), 4);
    assert_eq!(response.revision, fake.world().revision);
}

#[tokio::test]
async fn ddl_is_retried_after_an_unknown_outcome_only_when_idempotent() {
    let (fake, client) = fake_with_tables(0).await;
    let create = |if_not_exists| CreateTableRequest {
        name: Some(table_name("", "public", "cpu")),
        if_not_exists,
        ..Default::default()
    };
    let err = client.create_table(create(false)).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unavailable));
    assert_eq!(fake.create_table_calls.load(Ordering::SeqCst), 1);
    let err = client.create_table(create(true)).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::Unavailable));
    assert_eq!(fake.create_table_calls.load(Ordering::SeqCst), 1 + 3);
}

#[tokio::test]
async fn list_all_tables_follows_page_tokens() {
    let (fake, client) = fake_with_tables(5).await;
    fake.add_table(100, "other", "x");
    let tables = client.list_all_tables("", "public").await.unwrap();
    let ids: Vec<u64> = tables.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(fake.list_tables_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn table_names_are_cached_until_the_table_is_dropped() {
    let (fake, client) = fake_with_tables(2).await;
    let cache = RouteCache::new(client);
    wait_until("the cache's watch", || fake.open_watches() == 1).await;
    let name: TableName = table_name("default", "public", "t2");
    assert_eq!(cache.table_id(&name).await.unwrap(), 2);
    assert_eq!(
        cache
            .table_id(&table_name("", "public", "t2"))
            .await
            .unwrap(),
        2
    );
    assert_eq!(fake.describe_calls.load(Ordering::SeqCst), 1);
    assert_eq!((cache.stats().name_hits, cache.stats().name_misses), (1, 1));

    fake.push(MetadataEventKind::TableDropped, 2, 1);
    fake.world().tables.remove(&2);
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match cache.table_id(&name).await {
            Err(MetadataError::TableNameNotFound { name: missing }) => {
                assert_eq!(missing, name);
                break;
            }
            Ok(2) => assert!(Instant::now() < deadline, "the drop was never applied"),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_full_cache_evicts_the_table_fetched_longest_ago() {
    let (fake, client) = fake_with_tables(3).await;
    let cache = RouteCache::with_options(
        client,
        RouteCacheOptions {
            capacity: 2,
            watch: false,
        },
    );
    for id in [1, 2, 1, 3] {
        cache.route(id).await.unwrap();
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.fetches, stats.evictions, stats.cached_tables),
        (3, 1, 2)
    );
    // Table 1 was fetched first and went; 2 and 3 are still there.
    cache.route(2).await.unwrap();
    cache.route(3).await.unwrap();
    assert_eq!(fake.get_routes_calls.load(Ordering::SeqCst), 3);
    cache.route(1).await.unwrap();
    assert_eq!(fake.get_routes_calls.load(Ordering::SeqCst), 4);
    cache.invalidate(3);
    cache.route(3).await.unwrap();
    assert_eq!(fake.get_routes_calls.load(Ordering::SeqCst), 5);
    cache.invalidate_all();
    assert_eq!(cache.stats().cached_tables, 0);
}
