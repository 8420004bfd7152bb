//! The simulated frontend against an in-process single-node Cairn: it creates its tables once
//! the simulated datanodes are alive, the leader places their regions on those datanodes (by
//! heartbeat instructions), and every write the frontend sends through its route cache lands
//! on the datanode that leads the region — rows written add up, nothing fails, and the routes
//! were fetched once per table and then served from the cache.

use std::time::{Duration, Instant};

use cairn_client::meta::{MetaClient, RouteCache, RouteCacheOptions};
use cairn_proto::cairnpb::RegionRole;
use cairn_server::ServerConfig;
use cairn_sim::{Fleet, LoadPattern, SimConfig, WriteLoadConfig};
use tokio::sync::oneshot;

const WAIT_MAX: Duration = Duration::from_secs(60);
const NODE_HEARTBEAT_INTERVAL_MS: u64 = 100;
const DATANODES: u32 = 3;
const FIRST_NODE_ID: u64 = 1000;
const TABLES: u32 = 2;
const PARTITIONS: u32 = 3;
const ROWS_PER_WRITE: u32 = 10;
const WRITES_WANTED: u64 = 100;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A single-node Cairn in `dir`; it runs until the returned sender is dropped.
fn start_cairn(dir: &std::path::Path) -> (String, oneshot::Sender<()>) {
    let listen_peer = format!("127.0.0.1:{}", free_port());
    let config = ServerConfig {
        node_id: 1,
        data_dir: dir.join("1"),
        listen_client: format!("127.0.0.1:{}", free_port()),
        listen_peer: listen_peer.clone(),
        listen_http: format!("127.0.0.1:{}", free_port()),
        initial_cluster: vec![(1, listen_peer)],
        heartbeat_interval_ms: 50,
        election_timeout_ms: 300,
        node_heartbeat_interval_ms: NODE_HEARTBEAT_INTERVAL_MS,
        ..Default::default()
    };
    let endpoint = config.listen_client.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(cairn_server::run(config, async move {
        let _ = stopped.await;
    }));
    (endpoint, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_writes_land_on_the_leaders_the_routes_name() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, _stop) = start_cairn(dir.path());
    let client = MetaClient::new([endpoint.as_str()]).unwrap();
    // The point here is routes without moves: a scheduler moving a region mid-write would make
    // writes in its lease gap fail (as they should), which is not what this test counts.
    for name in ["label-spread", "hot-region", "balance-region"] {
        client
            .set_scheduler(name, Some(false), Default::default())
            .await
            .expect("scheduler off");
    }
    let config = SimConfig {
        datanodes: DATANODES,
        regions_per_node: 0,
        frontends: 0,
        interval_ms: NODE_HEARTBEAT_INTERVAL_MS,
        load: LoadPattern::Constant,
        seed: 1,
        first_node_id: FIRST_NODE_ID,
    };
    let mut fleet = Fleet::start(client.clone(), &config, None).unwrap();
    let load = WriteLoadConfig {
        tables: TABLES,
        partitions: PARTITIONS,
        writes_per_sec: 500,
        rows_per_write: ROWS_PER_WRITE,
        ..Default::default()
    };
    fleet.start_writes(load.clone()).unwrap();

    let deadline = Instant::now() + WAIT_MAX;
    let stats = loop {
        let stats = fleet.write_stats().unwrap();
        if stats.tables_ready == TABLES && stats.writes_ok >= WRITES_WANTED {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "the write load never got going: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats.failures, 0, "{stats:?}");
    let cache = fleet.write_load().unwrap().route_cache().stats();
    assert!(cache.hits >= WRITES_WANTED - u64::from(TABLES), "{cache:?}");
    assert!(cache.fetches <= u64::from(TABLES) * 2, "{cache:?}");

    // Every region of the tables is led by one of the fleet's datanodes, which holds it as
    // leader; the rows on the leaders add up to the writes the frontend counted.
    let final_stats = fleet.stop_writes().await.unwrap();
    assert_eq!(final_stats.failures, 0, "{final_stats:?}");
    let probe = RouteCache::with_options(
        client,
        RouteCacheOptions {
            watch: false,
            ..Default::default()
        },
    );
    let mut rows = 0;
    for index in 0..TABLES {
        let table_id = probe.table_id(&load.table_name(index)).await.unwrap();
        let route = probe.route(table_id).await.unwrap();
        assert_eq!(route.region_ids().count(), PARTITIONS as usize);
        for region_id in route.region_ids() {
            let (leader, address) = route.leader_of(region_id).unwrap();
            let node = fleet
                .node(leader)
                .unwrap_or_else(|| panic!("region {region_id} led by {leader}, not simulated"));
            assert_eq!(address, sim_identity_address(leader));
            assert!(node
                .held_regions()
                .contains(&(region_id, RegionRole::Leader)));
            rows += node.read(region_id).unwrap();
        }
    }
    assert_eq!(rows, final_stats.writes_ok * u64::from(ROWS_PER_WRITE));
    fleet.stop().await;
}

fn sim_identity_address(node: u64) -> String {
    cairn_sim::node::sim_identity(node, cairn_sim::SimRole::Datanode, 0).address
}
