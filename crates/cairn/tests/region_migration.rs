//! Region migration and failover against a 3-node Cairn cluster (child processes) with simulated
//! datanodes (cairn-sim's fleet: leases, roles, a frontend writing through a route cache): a
//! region moves and the frontend's writes follow; bad requests get typed errors and change
//! nothing; a migration that misses its deadline rolls back; the Cairn leader killed at each step
//! leaves a migration the new leader finishes; a killed datanode's regions fail over (not while
//! maintenance mode is on) and the frontend recovers; a paused datanode resumed after failover
//! writes nothing; random datanode kills, pauses and restarts never leave two datanodes able to
//! write one region.

mod common;
#[path = "common/settle.rs"]
mod settle;

use cairn_client::meta::MetaClient;
use cairn_proto::cairnpb::{DescribeTableRequest, LeaderState, RegionRole, TableName};
use cairn_sim::{Fleet, SimConfig, WriteLoadConfig};
use common::TestCluster;
use settle::{eventually, no_running_procedure};
use std::time::Duration;
use tonic::Code;

const FIRST_DATANODE: u64 = 1001;
const DATANODES: u32 = 3;
const PARTITIONS: u32 = 4;

struct Setup {
    cluster: TestCluster,
    client: MetaClient,
    fleet: Fleet,
    _marker: tempfile::TempDir,
    marker_path: std::path::PathBuf,
}

fn table(index: u32) -> TableName {
    TableName {
        catalog: String::new(),
        schema: "mig".into(),
        name: format!("sim_{index}"),
    }
}

impl Setup {
    /// A 3-node cluster (heartbeats every 200 ms, the leader crashing once at `crash_at` if
    /// given), three simulated datanodes and a frontend writing to two tables of four regions.
    async fn start(crash_at: Option<&str>, margin_ms: u64) -> Setup {
        Self::start_with(crash_at, margin_ms, &[]).await
    }

    /// [`Setup::start`] with `extra` arguments for every Cairn node.
    async fn start_with(crash_at: Option<&str>, margin_ms: u64, extra: &[&str]) -> Setup {
        let marker = tempfile::tempdir().unwrap();
        let marker_path = marker.path().join("crashed");
        let mut args: Vec<String> = [
            "--node-heartbeat-interval-ms",
            "200",
            "--region-lease-margin-ms",
            &margin_ms.to_string(),
            "--region-instruction-timeout-ms",
            "2000",
            "--region-reconcile-interval-ms",
            "1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        if let Some(at) = crash_at {
            args.extend([
                "--test-crash-at".to_string(),
                at.to_string(),
                "--test-crash-marker".to_string(),
                marker_path.display().to_string(),
            ]);
        }
        let cluster = TestCluster::start_with_args(3, args).await;
        let endpoints: Vec<String> = (0..3).map(|i| cluster.client_addr(i)).collect();
        let client = MetaClient::new(endpoints).unwrap();
        let config = SimConfig {
            datanodes: DATANODES,
            regions_per_node: 0,
            frontends: 0,
            interval_ms: 200,
            load: cairn_sim::LoadPattern::Constant,
            seed: 7,
            first_node_id: FIRST_DATANODE,
        };
        let mut fleet = Fleet::start(client.clone(), &config, None).expect("fleet");
        eventually("datanodes alive", || {
            let client = &client;
            async move {
                let nodes = client.list_nodes(0).await.ok()?;
                let alive = nodes.nodes.iter().filter(|n| n.state == "alive").count();
                (alive == DATANODES as usize).then_some(())
            }
        })
        .await;
        fleet
            .start_writes(WriteLoadConfig {
                database: "mig".into(),
                tables: 2,
                partitions: PARTITIONS,
                writes_per_sec: 200,
                rows_per_write: 1,
                seed: 3,
            })
            .expect("write load");
        eventually("tables created", || {
            let ready = fleet.write_stats().is_some_and(|s| s.tables_ready == 2);
            async move { ready.then_some(()) }
        })
        .await;
        Setup {
            cluster,
            client,
            fleet,
            _marker: marker,
            marker_path,
        }
    }

    /// Region ids of table `sim_0` with their leaders.
    async fn regions(&self) -> Vec<(u64, u64)> {
        let d = self
            .client
            .describe_table(DescribeTableRequest {
                name: Some(table(0)),
                serializable: false,
            })
            .await
            .expect("describe");
        d.route
            .expect("route")
            .regions
            .iter()
            .map(|r| (r.region_id, r.leader_node))
            .collect()
    }

    fn role_on(&self, node: u64, region: u64) -> Option<RegionRole> {
        self.fleet
            .node(node)
            .expect("node")
            .held_regions()
            .into_iter()
            .find(|(r, _)| *r == region)
            .map(|(_, role)| role)
    }

    /// Waits until `region` is led by `to` by every account: the route, the datanodes' roles,
    /// the new leader's lease (a direct write succeeds), and no migration runs.
    async fn moved(&self, region: u64, from: u64, to: u64) {
        eventually("the route naming the new leader", || async {
            let v = self.client.get_region(region).await.ok()?;
            let r = v.route?;
            (r.leader_node == to
                && v.migration.is_none()
                && r.leader_state == LeaderState::Active as i32)
                .then_some(())
        })
        .await;
        eventually("the new leader writing", || {
            let ok = self.fleet.node(to).unwrap().write(region, 1).is_ok();
            async move { ok.then_some(()) }
        })
        .await;
        assert_eq!(self.role_on(to, region), Some(RegionRole::Leader));
        eventually("the old leader closing it", || {
            let gone = self.role_on(from, region).is_none();
            async move { gone.then_some(()) }
        })
        .await;
    }

    /// Every region of both tables with its leader.
    async fn all_leaders(&self) -> Vec<(u64, u64)> {
        replicas(self)
            .await
            .into_iter()
            .map(|(region, leader, _)| (region, leader))
            .collect()
    }

    /// The regions of both tables that `node` leads.
    async fn led_by(&self, node: u64) -> Vec<u64> {
        self.all_leaders()
            .await
            .into_iter()
            .filter(|(_, l)| *l == node)
            .map(|(r, _)| r)
            .collect()
    }

    /// A datanode that leads at least one region of table `sim_0`.
    async fn busy_datanode(&self) -> u64 {
        self.regions().await[0].1
    }

    async fn judged_failed(&self, id: u64) {
        eventually("the datanode judged failed", || async {
            let n = self.client.list_nodes(id).await.ok()?;
            n.nodes.first().is_some_and(|n| n.failed).then_some(())
        })
        .await;
    }

    /// Waits until no region is led by `dead` and every region's leader writes it.
    async fn failed_over(&self, dead: u64) {
        eventually(
            "every region of the dead node moved and writable",
            || async {
                let leaders = self.all_leaders().await;
                let ok = leaders.iter().all(|(region, leader)| {
                    *leader != dead && self.fleet.node(*leader).unwrap().write(*region, 1).is_ok()
                });
                ok.then_some(())
            },
        )
        .await;
    }

    fn other_than(&self, leader: u64) -> u64 {
        (FIRST_DATANODE..FIRST_DATANODE + u64::from(DATANODES))
            .find(|n| *n != leader)
            .unwrap()
    }

    /// Switches every scheduler off, for tests whose point is that only failover moves regions
    /// (a balancing move would be a region moved for another reason).
    async fn schedulers_off(&self) {
        for name in ["label-spread", "hot-region", "balance-region"] {
            self.client
                .set_scheduler(name, Some(false), Default::default())
                .await
                .expect("scheduler off");
        }
        // A pass under way when they were switched off finishes what it started.
        eventually("no scheduler operator left", || async {
            let ops = self.client.list_operators(false).await.ok()?.operators;
            ops.is_empty().then_some(())
        })
        .await;
    }

    async fn stop(self) {
        self.fleet.stop().await;
        drop(self.cluster);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migrated_region_is_written_on_its_new_leader_and_the_frontend_follows() {
    let s = Setup::start(None, 200).await;
    let (region, from) = s.regions().await[0];
    let to = s.other_than(from);
    let before = s.fleet.write_stats().unwrap();
    let done = s
        .client
        .migrate_region(region, to, 20_000)
        .await
        .expect("migrate");
    assert!(done.procedure_id > 0);
    s.moved(region, from, to).await;
    let view = s.client.get_region(region).await.unwrap();
    assert_eq!(
        view.route_version, 3,
        "downgrading, then moved: two route versions"
    );
    // The old leader refuses writes from now on; the frontend's cache follows the move.
    assert!(s.fleet.node(from).unwrap().write(region, 1).is_err());
    let written = before.writes_ok;
    eventually("the frontend writing on", || {
        let now = s.fleet.write_stats().unwrap().writes_ok;
        async move { (now > written + 400).then_some(()) }
    })
    .await;
    let leased = eventually("the lease renewed by heartbeats", || async {
        let v = s.client.get_region(region).await.ok()?;
        (v.lease_holder == Some(to)).then_some(v)
    })
    .await;
    assert!(leased.lease_remaining_ms.is_some());
    // And back again, now that it has moved once.
    s.client
        .migrate_region(region, from, 20_000)
        .await
        .expect("migrate back");
    s.moved(region, to, from).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_migrations_get_typed_errors_and_change_nothing() {
    let mut s = Setup::start(None, 3_000).await;
    let (region, leader) = s.regions().await[0];
    let to = s.other_than(leader);
    fn code<T>(r: Result<T, cairn_client::ClientError>) -> Option<Code> {
        r.err().and_then(|e| e.code())
    }
    let c = &s.client;
    assert_eq!(
        code(c.migrate_region(0, to, 0).await),
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        code(c.migrate_region(region, 0, 0).await),
        Some(Code::InvalidArgument)
    );
    assert_eq!(
        code(c.migrate_region(region, leader, 0).await),
        Some(Code::FailedPrecondition),
        "to the node that leads it"
    );
    assert_eq!(
        code(c.migrate_region(region, 99_999, 0).await),
        Some(Code::NotFound)
    );
    let missing = (9_999u64 << 32) | 1;
    assert_eq!(
        code(c.migrate_region(missing, to, 0).await),
        Some(Code::NotFound)
    );
    assert_eq!(code(c.get_region(missing).await), Some(Code::NotFound));
    assert_eq!(
        code(c.migrate_region(region, to, 100_000_000).await),
        Some(Code::InvalidArgument),
        "a timeout beyond ddl_timeout_ms"
    );
    // To a dead node.
    let dead = (FIRST_DATANODE..FIRST_DATANODE + u64::from(DATANODES))
        .find(|n| *n != leader && *n != to)
        .unwrap();
    s.fleet.kill(dead).await.unwrap();
    eventually("the killed datanode judged down", || async {
        let n = c.list_nodes(dead).await.ok()?;
        n.nodes
            .first()
            .is_some_and(|n| n.state == "down" || n.failed)
            .then_some(())
    })
    .await;
    assert_eq!(
        code(c.migrate_region(region, dead, 0).await),
        Some(Code::FailedPrecondition)
    );
    let unchanged = c.get_region(region).await.unwrap();
    assert_eq!(unchanged.route.unwrap().leader_node, leader);
    assert_eq!(unchanged.route_version, 1, "nothing was written");
    // A second migration of a region already moving: its leader is killed, so the first waits
    // out the lease (3 s margin) while the second is refused.
    s.fleet.kill(leader).await.unwrap();
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.migrate_region(region, to, 30_000).await })
    };
    eventually("the migration in flight", || async {
        let v = c.get_region(region).await.ok()?;
        let m = v.migration?;
        (m.to_node == to && m.from_node == leader && m.reason == "manual").then_some(())
    })
    .await;
    let second = c.migrate_region(region, to, 0).await;
    assert_eq!(
        code(second),
        Some(Code::FailedPrecondition),
        "already moving"
    );
    first.await.unwrap().expect("the first migration");
    let v = c.get_region(region).await.unwrap();
    assert_eq!(v.route.unwrap().leader_node, to);
    eventually("the new leader writing", || {
        let ok = s.fleet.node(to).unwrap().write(region, 1).is_ok();
        async move { ok.then_some(()) }
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_past_its_deadline_rolls_back() {
    // The old leader is dead, so its lease must be waited out (a 5 s margin): a 1 s deadline
    // passes first.
    let mut s = Setup::start(None, 5_000).await;
    let (region, leader) = s.regions().await[0];
    let to = s.other_than(leader);
    s.fleet.kill(leader).await.unwrap();
    let err = s
        .client
        .migrate_region(region, to, 1_000)
        .await
        .expect_err("rolled back");
    assert_eq!(err.code(), Some(Code::Aborted), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    let v = s.client.get_region(region).await.unwrap();
    let route = v.route.unwrap();
    assert_eq!(route.leader_node, leader);
    assert_eq!(
        route.leader_state,
        LeaderState::Active as i32,
        "active again"
    );
    assert!(v.migration.is_none());
    assert_eq!(s.role_on(to, region), None, "the candidate was closed");
    let procs = s
        .client
        .list_procedures(cairn_proto::cairnpb::ListProceduresRequest {
            state: "failed".into(),
            limit: 0,
        })
        .await
        .unwrap();
    let failed = procs
        .procedures
        .iter()
        .find(|p| p.kind == "migrate_region")
        .expect("a failed migration record");
    assert_eq!(failed.step, "rollback");
    assert!(failed.last_error.contains("deadline"), "{failed:?}");
    let rolled_back = eventually("the migration event", || async {
        let e = s.client.list_events(0, "migration", 0).await.ok()?.events;
        // This migration's, not one a scheduler started meanwhile.
        e.into_iter()
            .find(|e| e.figures.get("reason").map(String::as_str) == Some("manual"))
    })
    .await;
    assert_eq!(rolled_back.figures["outcome"], "rolled back");
    assert_eq!(rolled_back.subject, format!("region {region}"));
    // The old leader comes back and takes writes again once its lease is renewed.
    s.fleet.restart(leader).await.unwrap();
    eventually("the old leader writing again", || {
        let ok = s.fleet.node(leader).unwrap().write(region, 1).is_ok();
        async move { ok.then_some(()) }
    })
    .await;
    s.stop().await;
}

/// The hooks a migration fires, in order: the leader dies at each.
const STEPS: &[&str] = &[
    "open_candidate",
    "downgrade_leader",
    "upgrade_candidate",
    "close_old",
    "done",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_migration_resumes_after_the_cairn_leader_dies_at_each_step() {
    let only = std::env::var("CAIRN_CRASH_CASES").unwrap_or_default();
    for step in STEPS
        .iter()
        .filter(|s| only.is_empty() || only.split(',').any(|o| o == **s))
    {
        eprintln!("--- crashing the leader at migrate_region:{step}");
        let mut s = Setup::start(Some(&format!("migrate_region:{step}")), 200).await;
        let (region, from) = s.regions().await[1];
        let to = s.other_than(from);
        let answer = s.client.migrate_region(region, to, 30_000).await;
        assert!(
            answer.is_err(),
            "{step}: the leader should have crashed first"
        );
        assert!(
            s.marker_path.exists(),
            "{step}: the crash hook did not fire"
        );
        let cluster = &mut s.cluster;
        eventually("the crashed node to exit", || {
            let exited = cluster.check_alive().is_err();
            async move { exited.then_some(()) }
        })
        .await;
        let leader = s
            .cluster
            .wait_for_leader(None, Duration::from_secs(20))
            .await
            .expect("a new leader");
        let meta = cairn_proto::cairnpb::meta_client::MetaClient::new(s.cluster.channel(leader));
        no_running_procedure(&meta).await;
        s.moved(region, from, to).await;
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_datanode_fails_over_but_not_in_maintenance_mode() {
    let mut s = Setup::start(None, 200).await;
    s.schedulers_off().await;
    let dead = s.busy_datanode().await;
    let led = s.led_by(dead).await;
    s.client.set_maintenance(true, "test").await.expect("on");
    let m = s.client.get_maintenance().await.unwrap();
    assert!(m.on && m.reason == "test" && m.since_ms > 0, "{m:?}");
    s.fleet.kill(dead).await.unwrap();
    s.judged_failed(dead).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = s.led_by(dead).await;
    assert_eq!(still, led, "maintenance mode must stop failover");
    // Off: the dead node's regions move, spread over the two live datanodes.
    s.client.set_maintenance(false, "").await.expect("off");
    s.failed_over(dead).await;
    let new_leaders: std::collections::BTreeSet<u64> = s
        .all_leaders()
        .await
        .into_iter()
        .filter(|(r, _)| led.contains(r))
        .map(|(_, l)| l)
        .collect();
    if led.len() >= 2 {
        assert_eq!(
            new_leaders.len(),
            2,
            "spread over the live nodes: {new_leaders:?}"
        );
    }
    // The frontend writes on through its route cache.
    let written = s.fleet.write_stats().unwrap().writes_ok;
    eventually("the frontend writing on", || {
        let now = s.fleet.write_stats().unwrap().writes_ok;
        async move { (now > written + 400).then_some(()) }
    })
    .await;
    // The event log says what was decided, and why.
    let events = eventually("the failover events", || async {
        let e = s.client.list_events(0, "", 0).await.ok()?.events;
        // Batched: each event names its regions.
        let mut moved: Vec<u64> = e
            .iter()
            .filter(|e| {
                e.kind == "failover" && e.figures.get("outcome").map(String::as_str) == Some("done")
            })
            .flat_map(|e| {
                e.figures["region_ids"]
                    .split(',')
                    .map(|r| r.parse::<u64>().unwrap())
            })
            .collect();
        moved.sort_unstable();
        let mut want: Vec<u64> = led.to_vec();
        want.sort_unstable();
        (moved == want).then_some(e)
    })
    .await;
    let judged = events
        .iter()
        .find(|e| e.kind == "node_failed")
        .expect("a node_failed event");
    assert_eq!(judged.subject, format!("node {dead}"));
    assert!(judged.figures.contains_key("phi") && judged.figures.contains_key("threshold"));
    let switches: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "maintenance")
        .map(|e| e.figures["on"].as_str())
        .collect();
    assert_eq!(switches, ["false", "true"], "newest first");
    let only = s.client.list_events(0, "failover", 1).await.unwrap().events;
    assert_eq!(only.len(), 1);
    assert_eq!(
        s.client
            .list_events(0, "bogus", 0)
            .await
            .err()
            .and_then(|e| e.code()),
        Some(Code::InvalidArgument)
    );
    // The dead node comes back and is told to close what it no longer owns.
    s.fleet.restart(dead).await.unwrap();
    eventually("the returned node closing its old regions", || {
        let empty = s.fleet.node(dead).unwrap().held_regions().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_datanode_resumed_after_failover_writes_nothing() {
    let mut s = Setup::start(None, 200).await;
    let hung = s.busy_datanode().await;
    let led = s.led_by(hung).await;
    s.fleet.pause(hung).unwrap();
    s.judged_failed(hung).await;
    s.failed_over(hung).await;
    s.fleet.resume(hung).unwrap();
    // From the moment it resumes it holds no valid lease for any region it led.
    let node = s.fleet.node(hung).unwrap();
    for region in &led {
        assert!(
            node.write(*region, 1).is_err(),
            "region {region} written by the node it was moved off"
        );
    }
    eventually("the resumed node closing its old regions", || {
        let empty = node.held_regions().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cairn_leader_killed_under_load_fails_over_no_datanode() {
    let mut s = Setup::start(None, 200).await;
    s.schedulers_off().await;
    let before = s.all_leaders().await;
    for round in 0..2 {
        let leader = s
            .cluster
            .wait_for_leader(None, Duration::from_secs(20))
            .await
            .expect("a leader");
        s.cluster.kill(leader);
        // DDL meanwhile: a table created through the new leader.
        let created = eventually("a table created on the new leader", || async {
            let name = TableName {
                catalog: String::new(),
                schema: "mig".into(),
                name: format!("during_{round}"),
            };
            let mut req = WriteLoadConfig::default().create_table_request(0);
            req.name = Some(name);
            s.client.create_table(req).await.ok()
        })
        .await;
        assert!(created.procedure_id > 0);
        // Longer than the failure detector needs to judge a silent node at this interval.
        tokio::time::sleep(Duration::from_secs(4)).await;
        s.cluster.restart(leader);
    }
    let nodes = s.client.list_nodes(0).await.unwrap();
    let failed: Vec<u64> = nodes
        .nodes
        .iter()
        .filter(|n| n.failed)
        .map(|n| n.identity.as_ref().unwrap().id)
        .collect();
    assert!(failed.is_empty(), "judged failed: {failed:?}");
    assert_eq!(s.all_leaders().await, before, "a region moved");
    let procs = s
        .client
        .list_procedures(cairn_proto::cairnpb::ListProceduresRequest::default())
        .await
        .unwrap();
    assert!(
        procs.procedures.iter().all(|p| p.kind != "migrate_region"),
        "{:?}",
        procs.procedures
    );
    s.stop().await;
}

async fn node_view(s: &Setup, id: u64) -> cairn_proto::cairnpb::NodeView {
    s.client.list_nodes(id).await.unwrap().nodes.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_datanode_is_emptied_and_gets_no_new_region() {
    let s = Setup::start(None, 200).await;
    let drained = s.busy_datanode().await;
    assert!(node_view(&s, drained).await.led_regions > 0);
    s.client
        .drain_node(drained, cairn_proto::cairnpb::DrainMode::Drain)
        .await
        .expect("drain");
    eventually("the drained node leading nothing", || async {
        let v = s.client.list_nodes(drained).await.ok()?.nodes.pop()?;
        (v.drain == "drain" && v.led_regions == 0 && v.state == "draining").then_some(())
    })
    .await;
    s.failed_over(drained).await;
    eventually("the drained node closing its regions", || {
        let empty = s.fleet.node(drained).unwrap().held_regions().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    // A new table places nothing on it.
    let mut req = WriteLoadConfig::default().create_table_request(0);
    req.name = Some(TableName {
        catalog: String::new(),
        schema: "mig".into(),
        name: "after_drain".into(),
    });
    let created = s.client.create_table(req).await.expect("create");
    let id = created.table.unwrap().id;
    let routes = s.client.get_routes(&[id]).await.unwrap();
    assert!(routes.routes[0]
        .regions
        .iter()
        .all(|r| r.leader_node != drained));
    // Cancelled, it takes regions again.
    s.client
        .drain_node(drained, cairn_proto::cairnpb::DrainMode::Cancel)
        .await
        .expect("cancel");
    eventually("the node alive again", || async {
        let v = s.client.list_nodes(drained).await.ok()?.nodes.pop()?;
        (v.drain.is_empty() && v.state == "alive").then_some(())
    })
    .await;
    let code = s
        .client
        .drain_node(99_999, cairn_proto::cairnpb::DrainMode::Drain)
        .await
        .err()
        .and_then(|e| e.code());
    assert_eq!(code, Some(Code::NotFound));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_is_a_scheduler_that_runs_in_maintenance_mode_unless_disabled() {
    let s = Setup::start(None, 200).await;
    s.schedulers_off().await;
    let drained = s.busy_datanode().await;
    let led = node_view(&s, drained).await.led_regions;
    assert!(led > 0);
    s.client.set_maintenance(true, "drain test").await.unwrap();
    s.client
        .set_scheduler("drain", Some(false), Default::default())
        .await
        .expect("drain off");
    let list = s.client.list_schedulers().await.unwrap().schedulers;
    assert!(
        list.iter().any(|i| i.name == "drain" && !i.enabled),
        "{list:?}"
    );
    s.client
        .drain_node(drained, cairn_proto::cairnpb::DrainMode::Drain)
        .await
        .expect("drain");
    // Switched off, the drain scheduler plans nothing: the node keeps its regions (several
    // scheduler intervals and drain wakes go by).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(node_view(&s, drained).await.led_regions, led);
    assert!(s
        .client
        .list_operators(false)
        .await
        .unwrap()
        .operators
        .is_empty());
    // Switched on, it empties the node though maintenance mode is on: an operator's request.
    s.client
        .set_scheduler("drain", Some(true), Default::default())
        .await
        .expect("drain on");
    eventually("the drained node leading nothing", || async {
        let v = s.client.list_nodes(drained).await.ok()?.nodes.pop()?;
        (v.led_regions == 0).then_some(())
    })
    .await;
    // Its operators are the drain scheduler's, recorded a batch to an event, not one per region.
    let finished = s.client.list_operators(true).await.unwrap().operators;
    let drains: Vec<_> = finished
        .iter()
        .filter(|o| o.scheduler == "drain" && o.from_node == drained)
        .collect();
    assert!(drains.len() as u64 >= led, "{} of {led}", drains.len());
    assert!(drains.iter().all(|o| o.priority == "high"));
    let events = s.client.list_events(0, "operator", 0).await.unwrap().events;
    let ours: Vec<_> = events
        .iter()
        .filter(|e| e.message.starts_with("drain:"))
        .collect();
    assert!(!ours.is_empty() && (ours.len() as u64) < led, "{ours:?}");
    s.client.set_maintenance(false, "").await.unwrap();
    s.stop().await;
}

/// Every region of both tables: (region, leader, followers).
async fn replicas(s: &Setup) -> Vec<(u64, u64, Vec<u64>)> {
    let mut out = Vec::new();
    for t in 0..2 {
        let d = s
            .client
            .describe_table(DescribeTableRequest {
                name: Some(table(t)),
                serializable: false,
            })
            .await
            .expect("describe");
        out.extend(
            d.route
                .expect("route")
                .regions
                .iter()
                .map(|r| (r.region_id, r.leader_node, r.follower_nodes.clone())),
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_datanode_gives_up_its_follower_copies_too() {
    let s = Setup::start_with(None, 200, &["--region-followers", "1"]).await;
    let drained = s.busy_datanode().await;
    let before = node_view(&s, drained).await;
    assert!(
        before.led_regions > 0 && before.followed_regions > 0,
        "{before:?}"
    );
    let followed: Vec<u64> = replicas(&s)
        .await
        .into_iter()
        .filter(|(_, _, f)| f.contains(&drained))
        .map(|(r, _, _)| r)
        .collect();
    s.client
        .drain_node(drained, cairn_proto::cairnpb::DrainMode::Drain)
        .await
        .expect("drain");
    eventually("the drained node leading and following nothing", || async {
        let v = s.client.list_nodes(drained).await.ok()?.nodes.pop()?;
        (v.led_regions == 0 && v.followed_regions == 0).then_some(())
    })
    .await;
    s.failed_over(drained).await;
    eventually("the drained node closing every copy", || {
        let empty = s.fleet.node(drained).unwrap().held_regions().is_empty();
        async move { empty.then_some(()) }
    })
    .await;
    // The copies it followed moved to the third node: those regions keep their follower, which
    // holds the region as a follower.
    for (region, leader, followers) in replicas(&s).await {
        assert!(leader != drained && !followers.contains(&drained));
        if followed.contains(&region) {
            assert_eq!(followers.len(), 1, "region {region} kept its follower");
            let holder = followers[0];
            eventually("the new follower holding the region", || {
                let role = s.role_on(holder, region);
                async move { (role == Some(RegionRole::Follower)).then_some(()) }
            })
            .await;
        }
    }
    let events = s.client.list_events(0, "drain", 0).await.unwrap().events;
    assert!(
        events
            .iter()
            .any(|e| e.figures.get("outcome").map(String::as_str) == Some("done")),
        "{events:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evicting_leaders_hands_leadership_to_followers() {
    let s = Setup::start_with(None, 200, &["--region-followers", "1"]).await;
    let evicted = s.busy_datanode().await;
    let before = node_view(&s, evicted).await;
    assert!(before.led_regions > 0);
    s.client
        .drain_node(evicted, cairn_proto::cairnpb::DrainMode::EvictLeaders)
        .await
        .expect("evict");
    eventually("the node leading nothing, following more", || async {
        let v = s.client.list_nodes(evicted).await.ok()?.nodes.pop()?;
        (v.drain == "evict_leaders" && v.led_regions == 0).then_some(v)
    })
    .await;
    let after = node_view(&s, evicted).await;
    assert_eq!(
        after.followed_regions,
        before.followed_regions + before.led_regions,
        "every region it led, it now follows"
    );
    s.failed_over(evicted).await;
    eventually("its copies downgraded to followers", || {
        let roles = s.fleet.node(evicted).unwrap().held_regions();
        let all_followers =
            !roles.is_empty() && roles.iter().all(|(_, role)| *role == RegionRole::Follower);
        async move { all_followers.then_some(()) }
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_datanodes_copies_are_made_up_on_the_live_nodes() {
    let mut s = Setup::start_with(None, 200, &["--region-followers", "1"]).await;
    // Failover and replica-repair alone.
    s.schedulers_off().await;
    let dead = s.busy_datanode().await;
    let before = replicas(&s).await;
    assert!(before.iter().all(|(_, _, f)| f.len() == 1), "{before:?}");
    assert!(
        before.iter().any(|(_, _, f)| f.contains(&dead)),
        "{before:?}"
    );
    s.fleet.kill(dead).await.unwrap();
    s.judged_failed(dead).await;
    s.failed_over(dead).await;
    // Every region is back at two copies on the two live nodes: the ones it led lost their
    // promoted follower and got a new one, the ones it followed moved their follower copy.
    let after = eventually("every region led and followed by live nodes", || async {
        let all = replicas(&s).await;
        let ok = all.iter().all(|(_, leader, followers)| {
            *leader != dead
                && followers.len() == 1
                && !followers.contains(&dead)
                && !followers.contains(leader)
        });
        ok.then_some(all)
    })
    .await;
    for (region, _, followers) in &after {
        let holder = followers[0];
        eventually("the new follower holding the region", || {
            let role = s.role_on(holder, *region);
            async move { (role == Some(RegionRole::Follower)).then_some(()) }
        })
        .await;
    }
    // Each repair is an operator of replica-repair and a migration with its reason.
    let ops = s.client.list_operators(true).await.unwrap().operators;
    let repairs: Vec<_> = ops
        .iter()
        .filter(|o| o.scheduler == "replica-repair")
        .collect();
    assert!(
        repairs.iter().any(|o| o.kind == "add-follower")
            && repairs
                .iter()
                .any(|o| o.kind == "follower" && o.from_node == dead),
        "{ops:?}"
    );
    let events = s
        .client
        .list_events(0, "migration", 0)
        .await
        .unwrap()
        .events;
    assert!(
        events.iter().any(|e| {
            e.figures.get("reason").map(String::as_str) == Some("replica-repair")
                && e.figures.get("outcome").map(String::as_str) == Some("done")
        }),
        "{events:?}"
    );
    // Nothing more to do: the plan is empty.
    let plan = s.client.plan_schedule().await.unwrap().operators;
    assert!(plan.is_empty(), "{plan:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_beyond_a_lowered_count_are_dropped_only_once_asked() {
    let mut s = Setup::start_with(None, 200, &["--region-followers", "2"]).await;
    s.schedulers_off().await;
    let counts = |all: &[(u64, u64, Vec<u64>)]| all.iter().map(|(_, _, f)| f.len()).max();
    assert_eq!(counts(&replicas(&s).await), Some(2));
    // Every Cairn node restarted with one follower per region.
    for i in 0..3 {
        s.cluster.kill(i);
    }
    s.cluster.set_arg("--region-followers", "1");
    for i in 0..3 {
        s.cluster.restart(i);
    }
    s.cluster.wait_ready(Duration::from_secs(30)).await.unwrap();
    eventually("datanodes back", || async {
        let nodes = s.client.list_nodes(0).await.ok()?;
        let alive = nodes.nodes.iter().filter(|n| n.state == "alive").count();
        (alive == DATANODES as usize).then_some(())
    })
    .await;
    // A few passes: the extra copies stay until an operator says the lower count is meant.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(counts(&replicas(&s).await), Some(2));
    let drop_extra = [("drop_extra".to_string(), "true".to_string())].into();
    s.client
        .set_scheduler("replica-repair", None, drop_extra)
        .await
        .expect("drop_extra on");
    let after = eventually("one follower copy per region", || async {
        let all = replicas(&s).await;
        all.iter().all(|(_, _, f)| f.len() == 1).then_some(all)
    })
    .await;
    // The dropped copies are closed: each datanode holds what the routes give it, no more.
    for (region, leader, followers) in &after {
        for n in FIRST_DATANODE..FIRST_DATANODE + u64::from(DATANODES) {
            let want = if n == *leader {
                Some(RegionRole::Leader)
            } else if followers.contains(&n) {
                Some(RegionRole::Follower)
            } else {
                None
            };
            eventually("the datanode holding what its route says", || {
                let role = s.role_on(n, *region);
                async move { (role == want).then_some(()) }
            })
            .await;
        }
    }
    let ops = s.client.list_operators(true).await.unwrap().operators;
    assert!(
        ops.iter()
            .any(|o| o.kind == "remove-follower" && o.to_node == 0 && o.status == "done"),
        "{ops:?}"
    );
    s.stop().await;
}

/// Rounds of random datanode faults in [`random_datanode_kills_and_pauses_never_leave_two_writers`].
const CHAOS_ROUNDS: u32 = 14;

/// A small seeded generator (xorshift), so a failing run's faults can be read from its seed.
struct Chaos(u64);

impl Chaos {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Every region some datanode leads with a valid lease at this instant, with the nodes that do:
/// more than one for a region is the violation.
fn writers(nodes: &[std::sync::Arc<cairn_sim::SimNode>]) -> Vec<(u64, Vec<u64>)> {
    let now = tokio::time::Instant::now();
    let mut by_region: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for n in nodes {
        for (region, role) in n.held_regions() {
            if role == RegionRole::Leader && n.leases().is_valid(region, now) {
                by_region.entry(region).or_default().push(n.id());
            }
        }
    }
    by_region.into_iter().filter(|(_, w)| w.len() > 1).collect()
}

/// Datanodes of a 3-node Cairn cluster (child processes) killed, hung, restarted and resumed at
/// random while a frontend writes: no two of them ever hold a valid write lease for one region
/// (checked every 2 ms; a killed node's leases count until they run out, since the leader cannot
/// tell a dead node from one cut off), and once all are back every region is led by a node that
/// takes its writes. `CAIRN_CHAOS_SEED` replays a seed's faults (their timing still varies).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_datanode_kills_and_pauses_never_leave_two_writers() {
    let seed = std::env::var("CAIRN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("chaos seed {seed} (CAIRN_CHAOS_SEED={seed} replays its faults)");
    let mut rng = Chaos(seed);
    let mut s = Setup::start(None, 200).await;
    let ids: Vec<u64> = (0..u64::from(DATANODES))
        .map(|i| FIRST_DATANODE + i)
        .collect();
    let nodes: Vec<_> = ids.iter().map(|id| s.fleet.node(*id).unwrap()).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checker = {
        let (nodes, stop) = (nodes.clone(), stop.clone());
        tokio::spawn(async move {
            let mut checks = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(v) = writers(&nodes).into_iter().next() {
                    return Err(format!("region {} writable on nodes {:?}", v.0, v.1));
                }
                checks += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok(checks)
        })
    };
    // Each node: running, paused or killed.
    let mut state = vec!["running"; ids.len()];
    let mut log = Vec::new();
    for _ in 0..CHAOS_ROUNDS {
        let i = rng.below(ids.len() as u64) as usize;
        let id = ids[i];
        let action = match state[i] {
            "killed" => "restart",
            "paused" => "resume",
            _ if rng.below(2) == 0 => "kill",
            _ => "pause",
        };
        match action {
            "kill" => s.fleet.kill(id).await.unwrap(),
            "pause" => s.fleet.pause(id).unwrap(),
            "restart" => s.fleet.restart(id).await.unwrap(),
            _ => s.fleet.resume(id).unwrap(),
        }
        state[i] = match action {
            "kill" => "killed",
            "pause" => "paused",
            _ => "running",
        };
        // Sometimes long enough for the node to be judged failed and its regions to move.
        let wait = 300 + rng.below(3_500);
        log.push(format!("{action} {id}, then {wait} ms"));
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    for (i, id) in ids.iter().enumerate() {
        match state[i] {
            "killed" => s.fleet.restart(*id).await.unwrap(),
            "paused" => s.fleet.resume(*id).unwrap(),
            _ => {}
        }
    }
    eprintln!("faults: {}", log.join("; "));
    // Everything settles: each region led, by the route, by a node that takes its writes.
    eventually("every region writable on its leader", || async {
        let leaders = s.all_leaders().await;
        leaders
            .iter()
            .all(|(region, leader)| {
                s.fleet
                    .node(*leader)
                    .is_some_and(|n| n.write(*region, 1).is_ok())
            })
            .then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let checks = checker
        .await
        .unwrap()
        .unwrap_or_else(|v| panic!("two writers (seed {seed}; faults: {}): {v}", log.join("; ")));
    assert!(checks > 1_000, "the checker ran only {checks} times");
    let written = s.fleet.write_stats().unwrap().writes_ok;
    eventually("the frontend writing on", || {
        let now = s.fleet.write_stats().unwrap().writes_ok;
        async move { (now > written + 200).then_some(()) }
    })
    .await;
    s.stop().await;
}

/// A region whose route names a node the active leader while the node holds it only as a
/// follower (what a rollback leaves when its upgrade of the old leader never arrived) could be
/// written by nobody: the leader's reconcile pass tells the node to lead it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_left_holding_its_region_as_a_follower_is_told_to_lead_again() {
    use cairn_client::meta::InstructionHandler;
    use cairn_proto::cairnpb::{instruction::Kind, DowngradeRegionLeader, Instruction};
    let s = Setup::start(None, 200).await;
    let (region, leader) = s.regions().await[0];
    let node = s.fleet.node(leader).unwrap();
    node.handle(Instruction {
        id: u64::MAX,
        timeout_ms: 1_000,
        kind: Some(Kind::DowngradeRegionLeader(DowngradeRegionLeader {
            region_id: region,
        })),
    })
    .await
    .unwrap();
    assert!(node.write(region, 1).is_err(), "a follower takes no write");
    eventually("the leader writing again", || {
        let ok = node.write(region, 1).is_ok();
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(s.role_on(leader, region), Some(RegionRole::Leader));
    let v = s.client.get_region(region).await.unwrap();
    assert_eq!(v.route.unwrap().leader_node, leader, "nothing moved");
    s.stop().await;
}
