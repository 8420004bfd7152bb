//! `cairn sim --scenario NAME` (or `--scenario-file PATH`): plays a scheduling scenario against
//! a running cluster with simulated datanodes, prints each node's led regions and write load as
//! a time series, then a summary with the figures `cairn bench schedule` gives for the scheduler
//! model: time to balance, region and load imbalance (max/mean), moves against the fewest
//! possible, regions moved twice.
//!
//! A scenario is a file of steps ([`cairn_sched::scenario::ScenarioSpec`]; the built-in ones
//! are `crates/cairn-sched/scenarios/*.toml`), the same the model plays. The steps run with
//! maintenance mode on, so nothing moves while nodes start and tables are created; then
//! maintenance mode goes off and the schedulers (and, where nodes died, failover) answer.
//! `D` is `--datanodes`: `{ start = "all" }` starts D, `join` adds datanodes beyond them. The
//! tables are `--tables` × `--table-regions` in database `scenario_NAME` (dropped at the end).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use cairn_client::meta::MetaClient;
use cairn_proto::cairnpb::{CreateDatabaseRequest, DropDatabaseRequest};
use cairn_sched::scenario::{
    imbalance, tables_after, ScenarioSpec, ScenarioStep, StartNodes, Victims,
};
use cairn_sim::load::region_load_per_sec;
use cairn_sim::node::SIM_ZONES;
use cairn_sim::{Fleet, SimConfig, WriteLoadConfig};

use super::SimArgs;

/// The built-in scenarios, by name (the same as `cairn bench schedule`'s model plays).
pub const SCENARIOS: &[&str] = cairn_sched::scenario::SCENARIOS;
/// Most tables a scenario may create (one route request reads them all).
pub const SCENARIO_TABLES_MAX: u32 = cairn_client::meta::ROUTE_TABLES_PER_REQUEST_MAX as u32;
/// Most regions per table in a scenario.
pub const SCENARIO_TABLE_REGIONS_MAX: u32 = 64;
/// Longest a scenario may be given to balance.
pub const SCENARIO_DURATION_MAX_SECS: u64 = 3_600;
/// Shortest time series interval.
pub const SCENARIO_SAMPLE_MIN_MS: u64 = 100;
/// How long setup steps (nodes registering, failover) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// The targets a scenario must reach (the issue's): region max/mean, load max/mean.
const REGION_IMBALANCE_TARGET: f64 = 1.05;
const LOAD_IMBALANCE_TARGET: f64 = 1.2;

/// One sample of the cluster: who leads each region.
type Leaders = HashMap<u64, u64>;

/// Runs the scenario of `--scenario` or `--scenario-file` to the end; Err when it is unknown
/// or invalid, a setup step fails, or the cluster does not balance within `--duration-secs`.
pub async fn run(args: &SimArgs) -> Result<(), String> {
    let spec = match (&args.scenario, &args.scenario_file) {
        (_, Some(path)) => {
            super::read_scenario_file(path).map_err(|e| format!("--scenario-file: {e}"))?
        }
        (Some(name), None) => ScenarioSpec::built_in(name).ok_or_else(|| {
            format!(
                "--scenario: unknown scenario {name:?}; one of {}",
                SCENARIOS.join(", ")
            )
        })?,
        (None, None) => return Err("--scenario or --scenario-file: one is needed".into()),
    };
    let plan = Plan::from_args(args, spec)?;
    let client = MetaClient::new(&args.endpoints).map_err(|e| format!("--endpoints: {e}"))?;
    let was = client
        .get_maintenance()
        .await
        .map_err(|e| format!("reading maintenance mode: {e}"))?;
    if was.on {
        return Err(format!(
            "maintenance mode is on ({:?}): a scenario switches it off to let the schedulers \
             work, so switch it off first (cairn ctl maintenance off)",
            was.reason
        ));
    }
    let mut fleet = None;
    let result = tokio::select! {
        result = play(&client, &plan, &mut fleet) => result,
        _ = tokio::signal::ctrl_c() => Err(format!("{}: interrupted", plan.name)),
    };
    // Clean up whatever happened: the tables go, maintenance mode goes off again.
    let drop = DropDatabaseRequest {
        catalog: String::new(),
        name: plan.writes.database.clone(),
        if_exists: true,
    };
    if let Err(e) = client.drop_database(drop).await {
        eprintln!("sim: dropping database {}: {e}", plan.writes.database);
    }
    if let Some(fleet) = fleet {
        fleet.stop().await;
    }
    if let Err(e) = client.set_maintenance(was.on, &was.reason).await {
        eprintln!("sim: restoring maintenance mode: {e}");
    }
    result
}

/// What a scenario run is made of, from the arguments.
struct Plan {
    name: String,
    spec: ScenarioSpec,
    datanodes: u64,
    first: u64,
    config: SimConfig,
    writes: WriteLoadConfig,
    duration: Duration,
    sample: Duration,
    settle: Duration,
}

impl Plan {
    fn from_args(args: &SimArgs, spec: ScenarioSpec) -> Result<Self, String> {
        let name = spec.name.clone();
        let tables = if args.tables == 0 {
            4 * args.datanodes
        } else {
            args.tables
        };
        if tables == 0 || tables > SCENARIO_TABLES_MAX {
            return Err(format!(
                "--tables: a scenario takes 1..={SCENARIO_TABLES_MAX} tables (scenario_tables_max)"
            ));
        }
        if args.table_regions == 0 || args.table_regions > SCENARIO_TABLE_REGIONS_MAX {
            return Err(format!(
                "--table-regions: 1..={SCENARIO_TABLE_REGIONS_MAX} (scenario_table_regions_max)"
            ));
        }
        let least = if spec.kills_a_zone() { SIM_ZONES } else { 1 };
        if u64::from(args.datanodes) < least {
            return Err(format!(
                "--datanodes: {name} needs at least {least} datanodes"
            ));
        }
        if args.duration_secs == 0 || args.duration_secs > SCENARIO_DURATION_MAX_SECS {
            return Err(format!(
                "--duration-secs: 1..={SCENARIO_DURATION_MAX_SECS} (scenario_duration_max_secs)"
            ));
        }
        if args.sample_ms < SCENARIO_SAMPLE_MIN_MS {
            return Err(format!(
                "--sample-ms: at least {SCENARIO_SAMPLE_MIN_MS} (scenario_sample_min_ms)"
            ));
        }
        let mut config = args.config();
        config.regions_per_node = 0;
        config.frontends = 0;
        config
            .validate()
            .map_err(|e| format!("--datanodes, --first-node-id: {e}"))?;
        let last = u64::from(args.datanodes) + spec.joining();
        if last > u64::from(cairn_sim::SIM_NODES_MAX)
            || args.first_node_id.checked_add(last).is_none()
        {
            return Err(format!(
                "--datanodes, --first-node-id: {name} adds {} datanodes: at most {} datanodes, \
                 and ids must not overflow",
                spec.joining(),
                u64::from(cairn_sim::SIM_NODES_MAX) - spec.joining()
            ));
        }
        Ok(Plan {
            writes: WriteLoadConfig {
                database: format!("scenario_{}", database_word(&name)),
                tables,
                partitions: args.table_regions,
                ..WriteLoadConfig::default()
            },
            name,
            spec,
            datanodes: u64::from(args.datanodes),
            first: args.first_node_id,
            config,
            duration: Duration::from_secs(args.duration_secs),
            sample: Duration::from_millis(args.sample_ms),
            settle: Duration::from_secs(args.settle_secs),
        })
    }
}

/// A scenario's name as a database name: letters, digits and underscores.
fn database_word(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

async fn maintenance(client: &MetaClient, on: bool, reason: &str) -> Result<(), String> {
    client
        .set_maintenance(on, reason)
        .await
        .map(drop)
        .map_err(|e| {
            format!(
                "switching maintenance mode {}: {e}",
                if on { "on" } else { "off" }
            )
        })
}

/// Plays the scenario's steps, then measures; the fleet is left in `slot` for the caller to
/// stop.
async fn play(client: &MetaClient, plan: &Plan, slot: &mut Option<Fleet>) -> Result<(), String> {
    const SETTING_UP: &str = "cairn sim --scenario: setting up";
    maintenance(client, true, SETTING_UP).await?;
    let drop = DropDatabaseRequest {
        catalog: String::new(),
        name: plan.writes.database.clone(),
        if_exists: true,
    };
    client
        .drop_database(drop)
        .await
        .map_err(|e| format!("dropping an earlier run's tables: {e}"))?;
    client
        .create_database(CreateDatabaseRequest {
            catalog: String::new(),
            name: plan.writes.database.clone(),
            if_not_exists: true,
            options: HashMap::new(),
        })
        .await
        .map_err(|e| format!("creating database {}: {e}", plan.writes.database))?;
    let run: Vec<u64> = (plan.first..plan.first + plan.datanodes).collect();
    let (mut started, mut joined, mut created) = (0usize, 0, 0.0);
    let mut killed: Vec<u64> = Vec::new();
    let mut tables = Vec::new();
    let mut failover = None;
    for (i, step) in plan.spec.steps.iter().enumerate() {
        match *step {
            ScenarioStep::Start(which) => {
                let upto = match which {
                    StartNodes::All => run.len(),
                    StartNodes::First(n) => (n as usize).min(run.len()),
                };
                if started >= upto {
                    continue;
                }
                let ids = &run[started..upto];
                match slot {
                    None => {
                        let mut config = plan.config.clone();
                        config.datanodes = ids.len() as u32;
                        let fleet = Fleet::start(client.clone(), &config, None)
                            .map_err(|e| e.to_string())?;
                        *slot = Some(fleet);
                    }
                    Some(fleet) => {
                        for id in ids {
                            fleet.add_datanode(*id).map_err(|e| e.to_string())?;
                        }
                    }
                }
                alive(client, ids).await?;
                started = upto;
            }
            ScenarioStep::CreateTables(share) => {
                created += share;
                let upto = tables_after(created, u64::from(plan.writes.tables)) as u32;
                create_tables(client, plan, tables.len() as u32..upto, &mut tables).await?;
            }
            ScenarioStep::Join(n) => {
                let fleet = slot.as_mut().ok_or("join: no datanode started")?;
                let ids: Vec<u64> = (0..n)
                    .map(|k| run[0] + plan.datanodes + joined + k)
                    .collect();
                for id in &ids {
                    fleet.add_datanode(*id).map_err(|e| e.to_string())?;
                }
                alive(client, &ids).await?;
                joined += n;
            }
            ScenarioStep::Kill(victims) => {
                let fleet = slot.as_mut().ok_or("kill: no datanode started")?;
                let zone = plan.first % SIM_ZONES;
                let ids: Vec<u64> = run[..started]
                    .iter()
                    .copied()
                    .filter(|id| match victims {
                        Victims::First => *id == plan.first,
                        Victims::ZoneOfFirst => id % SIM_ZONES == zone,
                    })
                    .filter(|id| !killed.contains(id))
                    .collect();
                for id in &ids {
                    fleet.kill(*id).await.map_err(|e| e.to_string())?;
                }
                println!("sim: {}: killed {ids:?}", plan.name);
                killed.extend(ids);
            }
            ScenarioStep::Failover => {
                println!("sim: {}: waiting for failover", plan.name);
                maintenance(client, false, "").await?;
                failover = Some(failed_over(client, plan, &tables, &killed).await?);
                maintenance(client, true, SETTING_UP).await?;
            }
            ScenarioStep::RestartKilled => {
                let fleet = slot.as_mut().ok_or("restart-killed: no datanode started")?;
                for id in &killed {
                    fleet.restart(*id).await.map_err(|e| e.to_string())?;
                }
                alive(client, &killed).await?;
                killed.clear();
            }
            ScenarioStep::Balance => {
                let fleet = slot.as_ref().ok_or("balance: no datanode started")?;
                maintenance(client, false, "").await?;
                let start = leaders(client, &tables).await?;
                let settled = watch(client, plan, fleet, &tables, start, false).await?;
                if !settled.done {
                    return Err(format!(
                        "{}: steps[{i}]: the cluster did not balance within {} s",
                        plan.name,
                        plan.duration.as_secs()
                    ));
                }
                maintenance(client, true, SETTING_UP).await?;
                println!("sim: {}: balanced", plan.name);
            }
            ScenarioStep::Heat { every, factor } => {
                let fleet = slot.as_ref().ok_or("heat: no datanode started")?;
                for table in tables.iter().step_by(every as usize) {
                    fleet.table_load().set(*table, factor)?;
                }
                println!(
                    "sim: {}: every {every}th table of {} carries {factor}x its load",
                    plan.name,
                    tables.len()
                );
            }
        }
    }
    if let Some((moved, took)) = failover {
        println!(
            "sim: failover moved {moved} regions in {:.1} s",
            took.as_secs_f64()
        );
    }
    let fleet = slot.as_ref().ok_or("the scenario started no datanode")?;
    maintenance(client, false, "").await?;
    measure(client, plan, fleet, &tables).await
}

/// Waits until no region of `tables` is led by a node of `killed`; how many moved and how long
/// it took.
async fn failed_over(
    client: &MetaClient,
    plan: &Plan,
    tables: &[u64],
    killed: &[u64],
) -> Result<(usize, Duration), String> {
    let started = Instant::now();
    let before = leaders(client, tables).await?;
    loop {
        let now = leaders(client, tables).await?;
        if !now.values().any(|l| killed.contains(l)) {
            let moved = before.iter().filter(|(r, l)| now.get(r) != Some(l)).count();
            return Ok((moved, started.elapsed()));
        }
        if started.elapsed() > SETUP_TIMEOUT {
            return Err(format!(
                "failover did not move {killed:?}'s regions within {} s",
                SETUP_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(plan.sample).await;
    }
}

/// Waits until every node of `ids` is alive in the leader's registry.
async fn alive(client: &MetaClient, ids: &[u64]) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Ok(list) = client.list_nodes(0).await {
            let up = list
                .nodes
                .iter()
                .filter(|n| n.state == "alive")
                .filter_map(|n| n.identity.as_ref().map(|i| i.id))
                .filter(|id| ids.contains(id))
                .count();
            if up == ids.len() {
                return Ok(());
            }
        }
        if started.elapsed() > SETUP_TIMEOUT {
            return Err(format!(
                "datanodes {ids:?} not alive within {} s",
                SETUP_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn create_tables(
    client: &MetaClient,
    plan: &Plan,
    indexes: std::ops::Range<u32>,
    tables: &mut Vec<u64>,
) -> Result<(), String> {
    for i in indexes {
        let created = client
            .create_table(plan.writes.create_table_request(i))
            .await
            .map_err(|e| format!("creating table {i}: {e}"))?;
        let id = created
            .table
            .map(|t| t.id)
            .ok_or("create table answered no table")?;
        tables.push(id);
    }
    Ok(())
}

/// Who leads each region of `tables` now.
async fn leaders(client: &MetaClient, tables: &[u64]) -> Result<Leaders, String> {
    let routes = client
        .get_routes(tables)
        .await
        .map_err(|e| format!("reading routes: {e}"))?;
    Ok(routes
        .routes
        .iter()
        .flat_map(|t| t.regions.iter().map(|r| (r.region_id, r.leader_node)))
        .collect())
}

/// Per live node: regions led and write load (wcus per second).
fn tally(leaders: &Leaders, live: &[u64], fleet: &Fleet) -> BTreeMap<u64, (usize, f64)> {
    let mut out: BTreeMap<u64, (usize, f64)> = live.iter().map(|id| (*id, (0, 0.0))).collect();
    for (region, leader) in leaders {
        if let Some(n) = out.get_mut(leader) {
            n.0 += 1;
            n.1 += region_load_per_sec(fleet.seed(), *region, fleet.table_load()).0;
        }
    }
    out
}

/// Balanced: no region led by a node that is down, every node within one region of its share
/// (or the region target met, for large counts) and load within its target.
fn balanced(counts: &BTreeMap<u64, (usize, f64)>, regions: usize) -> bool {
    let led: usize = counts.values().map(|c| c.0).sum();
    let share = regions as f64 / counts.len().max(1) as f64;
    let even = counts
        .values()
        .all(|c| (c.0 as f64 - share).abs() < 1.0 + 1e-9)
        || imbalance(counts.values().map(|c| c.0 as f64)) <= REGION_IMBALANCE_TARGET;
    led == regions && even && imbalance(counts.values().map(|c| c.1)) <= LOAD_IMBALANCE_TARGET
}

/// The live datanodes of the fleet.
fn running(fleet: &Fleet) -> Vec<u64> {
    fleet
        .status()
        .iter()
        .filter(|s| s.state == "running")
        .map(|s| s.id)
        .collect()
}

/// What one watch measured.
struct Watched {
    done: bool,
    moves: usize,
    last_move: Duration,
    moved_twice: usize,
    counts: BTreeMap<u64, (usize, f64)>,
}

/// Samples every `--sample-ms` until the cluster is balanced and still for `--settle-secs`, or
/// `--duration-secs` pass; prints the time series when `print`.
async fn watch(
    client: &MetaClient,
    plan: &Plan,
    fleet: &Fleet,
    tables: &[u64],
    start: Leaders,
    print: bool,
) -> Result<Watched, String> {
    let live = running(fleet);
    let regions = start.len();
    let row = |at: Duration, changed: usize, counts: &BTreeMap<u64, (usize, f64)>| {
        if !print {
            return;
        }
        let cells: Vec<String> = counts
            .values()
            .map(|(c, w)| format!("{:>10}", format!("{c}/{w:.0}")))
            .collect();
        println!("{:>7.1} {changed:>6} {}", at.as_secs_f64(), cells.join(""));
    };
    if print {
        let header: Vec<String> = live
            .iter()
            .map(|id| format!("{:>10}", format!("n{id}")))
            .collect();
        println!(
            "{:>7} {:>6} {}   (each node: regions led/wcus per s)",
            "t_s",
            "moves",
            header.join("")
        );
    }
    row(Duration::ZERO, 0, &tally(&start, &live, fleet));
    let began = Instant::now();
    let (mut previous, mut moved) = (start, HashMap::<u64, u32>::new());
    let (mut moves, mut last_move) = (0usize, Duration::ZERO);
    loop {
        tokio::time::sleep(plan.sample).await;
        let now = leaders(client, tables).await?;
        let at = began.elapsed();
        let mut changed = 0;
        for (r, l) in &now {
            if previous.get(r).is_some_and(|p| p != l) {
                *moved.entry(*r).or_default() += 1;
                changed += 1;
            }
        }
        if changed > 0 {
            moves += changed;
            last_move = at;
        }
        let counts = tally(&now, &live, fleet);
        row(at, changed, &counts);
        previous = now;
        let done = balanced(&counts, regions) && at - last_move >= plan.settle;
        if done || at >= plan.duration {
            return Ok(Watched {
                done,
                moves,
                last_move,
                moved_twice: moved.values().filter(|n| **n > 1).count(),
                counts,
            });
        }
    }
}

/// Measures from now: the fewest moves, the time series, the summary.
async fn measure(
    client: &MetaClient,
    plan: &Plan,
    fleet: &Fleet,
    tables: &[u64],
) -> Result<(), String> {
    let live = running(fleet);
    let start = leaders(client, tables).await?;
    let mut by: HashMap<u64, usize> = HashMap::new();
    for l in start.values() {
        *by.entry(*l).or_default() += 1;
    }
    let mut nodes: Vec<(usize, bool)> = live
        .iter()
        .map(|id| (by.remove(id).unwrap_or(0), true))
        .collect();
    nodes.extend(by.into_values().map(|c| (c, false)));
    let min_moves = cairn_sched::scenario::surplus_moves(&nodes);
    println!(
        "sim: {}: {} regions in {} tables over {} datanodes; at least {min_moves} moves needed; \
         maintenance mode off",
        plan.name,
        start.len(),
        tables.len(),
        live.len()
    );
    let w = watch(client, plan, fleet, tables, start, true).await?;
    let outcome = if w.done {
        format!("balanced in {:.1} s", w.last_move.as_secs_f64())
    } else {
        format!("NOT balanced within {} s", plan.duration.as_secs())
    };
    println!(
        "scenario {}: {outcome}; moves {} (minimum {min_moves}); regions max/mean {:.3}; \
         wcus max/mean {:.3}; moved twice {}",
        plan.name,
        w.moves,
        imbalance(w.counts.values().map(|c| c.0 as f64)),
        imbalance(w.counts.values().map(|c| c.1)),
        w.moved_twice,
    );
    if w.done {
        Ok(())
    } else {
        Err(format!("{}: {outcome}", plan.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_is_within_one_region_of_the_share_and_the_load_target() {
        let c = |v: &[(usize, f64)]| -> BTreeMap<u64, (usize, f64)> {
            v.iter().enumerate().map(|(i, x)| (i as u64, *x)).collect()
        };
        assert!(balanced(
            &c(&[(8, 80.0), (9, 85.0), (7, 75.0), (8, 80.0)]),
            32
        ));
        assert!(
            !balanced(&c(&[(10, 80.0), (6, 80.0), (8, 80.0), (8, 80.0)]), 32),
            "2 off the share"
        );
        assert!(
            !balanced(&c(&[(8, 80.0), (8, 80.0), (8, 80.0), (8, 200.0)]), 32),
            "one node hot"
        );
        assert!(
            !balanced(&c(&[(8, 80.0), (8, 80.0), (8, 80.0)]), 32),
            "8 led by a dead node"
        );
        assert_eq!(imbalance(std::iter::empty()), 1.0);
    }
}
