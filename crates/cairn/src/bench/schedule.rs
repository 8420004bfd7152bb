//! `cairn bench schedule`: the schedulers' quality and speed, on the scenario model of
//! `cairn_sched::scenario` (each pass's moves complete before the next; limits as configured).
//! For every scenario: model time to balance, final region and load imbalance, moves against
//! the minimum, regions moved twice; then the time of one full planning pass over a snapshot of
//! `--pass-regions` regions (1,000,000 by default), the figure the leader pays every interval.
//! Pure computation: no cluster is needed.

use std::time::Instant;

use cairn_sched::scenario::{self, ModelLimits, ScenarioReport, ScenarioSpec, SCENARIOS};
use cairn_sched::Schedulers;
use serde::Serialize;

use super::BenchError;
use crate::ctl::output::{new_table, OutputFormat};

/// Most regions a scenario or a timed pass may hold (memory: about 200 bytes each).
pub const SCHEDULE_BENCH_REGIONS_MAX: u64 = 10_000_000;
/// Most nodes a scenario may hold.
pub const SCHEDULE_BENCH_NODES_MAX: u64 = 10_000;
/// Passes one scenario may take before the model gives up.
const SCENARIO_PASSES_MAX: usize = 100_000;

#[derive(Debug, clap::Args)]
pub struct ScheduleBenchArgs {
    /// Datanodes in each scenario.
    #[arg(long, default_value_t = 10)]
    nodes: u64,
    /// Regions in each scenario.
    #[arg(long, default_value_t = 100_000)]
    regions: u64,
    /// Only this built-in scenario (default: all of add-nodes, remove-node, hot-table,
    /// zone-outage, half-on-one).
    #[arg(long, conflicts_with = "scenario_file")]
    scenario: Option<String>,
    /// Only the scenario of this file (its format: docs/operations.md, "Scenarios").
    #[arg(long)]
    scenario_file: Option<std::path::PathBuf>,
    /// Regions of the snapshot whose planning pass is timed (0: skip).
    #[arg(long, default_value_t = 1_000_000)]
    pass_regions: u64,
    /// Follower copies of each region in the timed pass (on the nodes after its leader's, and
    /// wanted: replica-repair walks every region and finds each complete).
    #[arg(long, default_value_t = 0)]
    pass_followers: usize,
    /// The leader's limits, as `cairn serve` takes them.
    #[arg(long, default_value_t = 2_000)]
    scheduler_interval_ms: u64,
    #[arg(long, default_value_t = 64)]
    scheduler_operators_max: usize,
    #[arg(long, default_value_t = 16)]
    scheduler_node_operators_max: usize,
    #[arg(long, default_value_t = 600)]
    scheduler_moves_per_minute_max: usize,
    #[arg(long, default_value_t = 60_000)]
    scheduler_region_cooldown_ms: u64,
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    output: OutputFormat,
}

#[derive(Debug, Serialize)]
struct ScenarioRow {
    scenario: String,
    time_to_balance_s: f64,
    passes: usize,
    moves: usize,
    min_moves: usize,
    moves_per_min: f64,
    region_imbalance: f64,
    load_imbalance: f64,
    moved_twice: usize,
    by_scheduler: std::collections::BTreeMap<&'static str, usize>,
}

#[derive(Debug, Serialize)]
struct ScheduleBenchReport {
    nodes: u64,
    regions: u64,
    scenarios: Vec<ScenarioRow>,
    pass_regions: u64,
    /// Follower copies of each region in that pass.
    pass_followers: usize,
    /// Planning one pass over `pass_regions` regions (the add-nodes scenario), ms.
    pass_ms: Option<f64>,
    pass_operators: usize,
}

fn row(r: ScenarioReport) -> ScenarioRow {
    ScenarioRow {
        scenario: r.name,
        time_to_balance_s: r.time_to_balance_ms as f64 / 1e3,
        passes: r.passes,
        moves: r.moves,
        min_moves: r.min_moves,
        moves_per_min: if r.min_moves > 0 {
            r.moves as f64 / r.min_moves as f64
        } else {
            0.0
        },
        region_imbalance: r.region_imbalance,
        load_imbalance: r.load_imbalance,
        moved_twice: r.moved_twice,
        by_scheduler: r.by_scheduler,
    }
}

pub async fn run(args: ScheduleBenchArgs) -> Result<(), BenchError> {
    if args.nodes < 3 || args.nodes > SCHEDULE_BENCH_NODES_MAX {
        return Err(BenchError::Usage(format!(
            "--nodes: between 3 and {SCHEDULE_BENCH_NODES_MAX} (schedule_bench_nodes_max)"
        )));
    }
    if args.regions == 0
        || args.regions > SCHEDULE_BENCH_REGIONS_MAX
        || args.pass_regions > SCHEDULE_BENCH_REGIONS_MAX
    {
        return Err(BenchError::Usage(format!(
            "--regions and --pass-regions: at most {SCHEDULE_BENCH_REGIONS_MAX} \
             (schedule_bench_regions_max), --regions at least 1"
        )));
    }
    if args.scheduler_interval_ms == 0 || args.scheduler_moves_per_minute_max == 0 {
        return Err(BenchError::Usage(
            "--scheduler-interval-ms and --scheduler-moves-per-minute-max: at least 1".into(),
        ));
    }
    let specs: Vec<ScenarioSpec> = match (&args.scenario, &args.scenario_file) {
        (_, Some(path)) => vec![crate::sim::read_scenario_file(path)
            .map_err(|e| BenchError::Usage(format!("--scenario-file: {e}")))?],
        (Some(s), None) => vec![ScenarioSpec::built_in(s).ok_or_else(|| {
            BenchError::Usage(format!(
                "--scenario: {s:?} is not one of {}",
                SCENARIOS.join(", ")
            ))
        })?],
        (None, None) => SCENARIOS
            .iter()
            .map(|s| ScenarioSpec::built_in(s).expect("a listed scenario"))
            .collect(),
    };
    let limits = ModelLimits {
        interval_ms: args.scheduler_interval_ms,
        operators_max: args.scheduler_operators_max,
        node_operators_max: args.scheduler_node_operators_max,
        moves_per_minute_max: args.scheduler_moves_per_minute_max,
        region_cooldown_ms: args.scheduler_region_cooldown_ms,
    };
    let schedulers = Schedulers::default();
    let mut scenarios = Vec::new();
    for spec in &specs {
        let s = scenario::build(spec, args.nodes, args.regions, 7, &schedulers, limits)
            .map_err(|e| BenchError::Usage(format!("--nodes, --regions: {e}")))?;
        scenarios.push(row(scenario::play(
            &s,
            &schedulers,
            limits,
            SCENARIO_PASSES_MAX,
        )));
    }
    let (pass_ms, pass_operators) = if args.pass_regions > 0 {
        let spec = ScenarioSpec::built_in("add-nodes").expect("a listed scenario");
        let s = scenario::build(&spec, args.nodes, args.pass_regions, 7, &schedulers, limits)
            .map_err(|e| BenchError::Usage(format!("--nodes, --pass-regions: {e}")))?;
        let mut snap = s.snapshot;
        let ids: Vec<u64> = snap.nodes.iter().map(|n| n.node_id).collect();
        let followers = args.pass_followers.min(ids.len().saturating_sub(1));
        for r in snap.regions.list_mut() {
            let at = ids.iter().position(|id| *id == r.leader).unwrap_or(0);
            r.followers = (1..=followers).map(|k| ids[(at + k) % ids.len()]).collect();
        }
        snap.followers_per_region = followers;
        snap.moves_left = args.scheduler_operators_max;
        snap.node_moves_left_default = args.scheduler_node_operators_max;
        let started = Instant::now();
        let ops = schedulers.plan(&snap);
        (Some(started.elapsed().as_secs_f64() * 1e3), ops.len())
    } else {
        (None, 0)
    };
    let report = ScheduleBenchReport {
        nodes: args.nodes,
        regions: args.regions,
        scenarios,
        pass_regions: args.pass_regions,
        pass_followers: args.pass_followers,
        pass_ms,
        pass_operators,
    };
    match args.output {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(&report).map_err(BenchError::Json)?;
            println!("{text}");
        }
        OutputFormat::Table => {
            let mut t = new_table([
                "SCENARIO",
                "TO BALANCE (s)",
                "MOVES",
                "MIN",
                "MOVES/MIN",
                "REGION MAX/MEAN",
                "WCUS MAX/MEAN",
                "MOVED TWICE",
                "BY SCHEDULER",
            ]);
            for r in &report.scenarios {
                let by: Vec<String> = r
                    .by_scheduler
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                t.add_row(vec![
                    r.scenario.to_string(),
                    format!("{:.0}", r.time_to_balance_s),
                    r.moves.to_string(),
                    r.min_moves.to_string(),
                    format!("{:.2}", r.moves_per_min),
                    format!("{:.3}", r.region_imbalance),
                    format!("{:.3}", r.load_imbalance),
                    r.moved_twice.to_string(),
                    by.join(", "),
                ]);
            }
            println!(
                "{} nodes, {} regions per scenario",
                report.nodes, report.regions
            );
            println!("{t}");
            if let Some(ms) = report.pass_ms {
                println!(
                    "one planning pass over {} regions with {} followers each: {ms:.1} ms \
                     ({} operators planned)",
                    report.pass_regions, report.pass_followers, report.pass_operators
                );
            }
        }
    }
    Ok(())
}
