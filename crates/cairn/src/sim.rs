//! `cairn sim`: simulated datanodes and frontends heartbeating to a running cluster, with fault
//! commands read from stdin. The simulation itself lives in `cairn-sim`; this file parses
//! arguments and commands and prints status.
//!
//! ```text
//! cairn sim [--endpoints A,B] [--datanodes N] [--regions-per-node M] [--frontends F]
//!           [--interval-ms 3000] [--load constant|sine|spiky] [--seed S] [--first-node-id 1000]
//! stdin: kill ID | pause ID | resume ID | restart ID | status
//! cairn sim --scenario NAME [--datanodes N] [--tables T] [--table-regions 4] …
//! ```
//!
//! With `--scenario`, it plays one scheduling scenario to the end instead ([`scenario`]).

mod scenario;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn_client::meta::{HeartbeatObserver, MetaClient};
use cairn_sched::scenario::{ScenarioSpec, SCENARIO_FILE_BYTES_MAX};
use cairn_sim::{Fleet, LoadPattern, NodeStatus, SimConfig, SimRole};

/// How often the summary line is printed.
const SUMMARY_INTERVAL_MS: u64 = 10_000;
/// Commands read ahead of the one being executed.
const STDIN_LINES_QUEUED_MAX: usize = 16;

/// `--load` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadArg {
    /// The same load all the time.
    Constant,
    /// A 60 s wave between 0.5x and 1.5x.
    Sine,
    /// Calm with occasional 5x spikes.
    Spiky,
}

impl From<LoadArg> for LoadPattern {
    fn from(arg: LoadArg) -> Self {
        match arg {
            LoadArg::Constant => LoadPattern::Constant,
            LoadArg::Sine => LoadPattern::Sine,
            LoadArg::Spiky => LoadPattern::Spiky,
        }
    }
}

/// Arguments of `cairn sim`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Endpoints of the cluster (HOST:PORT or http://HOST:PORT), comma separated.
    #[arg(
        long,
        env = "CAIRN_ENDPOINTS",
        default_value = "127.0.0.1:4379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Simulated datanodes.
    #[arg(long, default_value_t = 3)]
    pub datanodes: u32,
    /// Invented regions per datanode (region r of node n is (1000+n)<<32 | r). They belong to
    /// no table, so the leader closes them as orphans every region_reconcile_interval_ms
    /// (run the cluster with --region-reconcile-interval-ms 0 to keep them, as
    /// scripts/bench-heartbeat.sh does).
    #[arg(long, default_value_t = 10)]
    pub regions_per_node: u32,
    /// Simulated frontends (ids follow the datanodes').
    #[arg(long, default_value_t = 0)]
    pub frontends: u32,
    /// Heartbeat interval until the leader names one, ms.
    #[arg(long, default_value_t = cairn_client::meta::HEARTBEAT_INTERVAL_DEFAULT_MS)]
    pub interval_ms: u64,
    /// Shape of the simulated load over time.
    #[arg(long, value_enum, default_value_t = LoadArg::Constant)]
    pub load: LoadArg,
    /// Seed of the load pattern.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Id of the first datanode.
    #[arg(long, default_value_t = 1000)]
    pub first_node_id: u64,
    /// Tables the simulated frontend creates in database "sim" and writes to through the route
    /// cache (0: no writes).
    #[arg(long, default_value_t = 0)]
    pub tables: u32,
    /// Play a built-in scheduling scenario and exit: add-nodes, remove-node, hot-table,
    /// zone-outage or half-on-one (`--tables` then counts its tables, 0: 4 per datanode).
    /// Prints each node's led regions and write load as a time series and a summary; exit
    /// status 1 when the cluster does not balance within --duration-secs.
    #[arg(long, conflicts_with = "scenario_file")]
    pub scenario: Option<String>,
    /// Play the scenario of this file instead (its format: docs/operations.md, "Scenarios").
    #[arg(long)]
    pub scenario_file: Option<std::path::PathBuf>,
    /// Regions per table in a scenario.
    #[arg(long, default_value_t = 4)]
    pub table_regions: u32,
    /// How long a scenario's cluster may take to balance.
    #[arg(long, default_value_t = 300)]
    pub duration_secs: u64,
    /// Interval of a scenario's time series, ms.
    #[arg(long, default_value_t = 1_000)]
    pub sample_ms: u64,
    /// A scenario ends once the cluster has been balanced, with nothing moving, this long.
    #[arg(long, default_value_t = 10)]
    pub settle_secs: u64,
}

impl SimArgs {
    /// The simulation these arguments describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            datanodes: self.datanodes,
            regions_per_node: self.regions_per_node,
            frontends: self.frontends,
            interval_ms: self.interval_ms,
            load: self.load.into(),
            seed: self.seed,
            first_node_id: self.first_node_id,
        }
    }
}

/// A command typed on stdin.
#[derive(Debug, PartialEq, Eq)]
enum SimCommand {
    Kill(u64),
    Pause(u64),
    Resume(u64),
    Restart(u64),
    Status,
}

fn parse_command(line: &str) -> Result<Option<SimCommand>, String> {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else {
        return Ok(None);
    };
    let id = |words: &mut std::str::SplitWhitespace<'_>| -> Result<u64, String> {
        let raw = words
            .next()
            .ok_or_else(|| format!("{verb}: missing node id"))?;
        crate::ctl::output::parse_id(raw)
    };
    let command = match verb {
        "kill" => SimCommand::Kill(id(&mut words)?),
        "pause" => SimCommand::Pause(id(&mut words)?),
        "resume" => SimCommand::Resume(id(&mut words)?),
        "restart" => SimCommand::Restart(id(&mut words)?),
        "status" => SimCommand::Status,
        other => {
            return Err(format!(
                "unknown command {other:?}; use kill ID, pause ID, resume ID, restart ID or status"
            ))
        }
    };
    if words.next().is_some() {
        return Err(format!("{verb}: too many arguments"));
    }
    Ok(Some(command))
}

fn status_line(s: &NodeStatus) -> String {
    let role = match s.role {
        SimRole::Datanode => "datanode",
        SimRole::Frontend => "frontend",
    };
    let hb = &s.heartbeat;
    format!(
        "node {} {role} {} regions={} seq={} acked={} reconnects={} interval_ms={} to={} {}",
        s.id,
        s.state,
        s.regions,
        hb.sequence,
        hb.acknowledged,
        hb.reconnects,
        hb.interval_ms,
        hb.connected_to.as_deref().unwrap_or("-"),
        hb.last_error
            .as_deref()
            .map_or_else(String::new, |e| format!("last_error={e:?}")),
    )
}

/// Counts heartbeats acknowledged across the fleet, restarts included.
#[derive(Default)]
struct AckCounter(AtomicU64);

impl HeartbeatObserver for AckCounter {
    fn on_acknowledged(&self, _round_trip: Duration, _region_stats: usize) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn summary(statuses: &[NodeStatus], acked: u64, acked_before: u64) -> String {
    let count = |state: &str| statuses.iter().filter(|s| s.state == state).count();
    let unacked = statuses
        .iter()
        .filter(|s| s.state == "running" && s.heartbeat.acknowledged == 0)
        .count();
    format!(
        "sim: {} running, {} paused, {} killed; {} heartbeats acknowledged (+{} in the last {} s); {} running nodes not yet acknowledged",
        count("running"),
        count("paused"),
        count("killed"),
        acked,
        acked.saturating_sub(acked_before),
        SUMMARY_INTERVAL_MS / 1000,
        unacked,
    )
}

/// Reads and checks a scenario file (at most `scenario_file_bytes_max`).
pub fn read_scenario_file(path: &std::path::Path) -> Result<ScenarioSpec, String> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .map_err(|e| format!("{shown}: {e}"))?
        .len();
    if size > SCENARIO_FILE_BYTES_MAX as u64 {
        return Err(format!(
            "{shown}: {size} bytes exceed scenario_file_bytes_max {SCENARIO_FILE_BYTES_MAX}"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    ScenarioSpec::parse(&text).map_err(|e| format!("{shown}: {e}"))
}

/// Runs the simulation until Ctrl-C.
pub async fn run(args: SimArgs) -> Result<(), String> {
    if args.scenario.is_some() || args.scenario_file.is_some() {
        return scenario::run(&args).await;
    }
    let client = MetaClient::new(&args.endpoints).map_err(|e| format!("--endpoints: {e}"))?;
    let config = args.config();
    let acks = Arc::new(AckCounter::default());
    let observer: Arc<dyn HeartbeatObserver> = Arc::clone(&acks) as _;
    let mut fleet = Fleet::start(client, &config, Some(observer)).map_err(|e| e.to_string())?;
    if args.tables > 0 {
        fleet
            .start_writes(cairn_sim::WriteLoadConfig {
                tables: args.tables,
                seed: args.seed,
                ..Default::default()
            })
            .map_err(|e| format!("--tables: {e}"))?;
    }
    eprintln!(
        "sim: {} datanodes x {} regions and {} frontends (ids from {}) heartbeating to {}; \
         commands on stdin: kill ID, pause ID, resume ID, restart ID, status; Ctrl-C stops",
        config.datanodes,
        config.regions_per_node,
        config.frontends,
        config.first_node_id,
        args.endpoints.join(",")
    );
    let mut lines = stdin_lines();
    let mut stdin_open = true;
    let mut ticker = tokio::time::interval(Duration::from_millis(SUMMARY_INTERVAL_MS));
    ticker.tick().await;
    let mut acked_before = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {
                let acked = acks.0.load(Ordering::Relaxed);
                println!("{}", summary(&fleet.status(), acked, acked_before));
                if let Some(w) = fleet.write_stats() {
                    println!(
                        "sim: writes: {} tables ready, {} ok, {} invalid-route retries, {} failed{}",
                        w.tables_ready,
                        w.writes_ok,
                        w.invalid_route_retries,
                        w.failures,
                        w.last_error.map(|e| format!(" (last: {e})")).unwrap_or_default()
                    );
                }
                acked_before = acked;
            }
            line = lines.recv(), if stdin_open => match line {
                Some(line) => execute(&mut fleet, &line).await,
                // No more commands (stdin closed or unreadable): keep simulating.
                None => stdin_open = false,
            },
        }
    }
    eprintln!("sim: stopping");
    fleet.stop().await;
    Ok(())
}

/// Lines typed on stdin, read on a thread of their own (a blocking read has no place on the
/// runtime); the channel closes at end of input.
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(STDIN_LINES_QUEUED_MAX);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn execute(fleet: &mut Fleet, line: &str) {
    let command = match parse_command(line) {
        Ok(Some(command)) => command,
        Ok(None) => return,
        Err(e) => {
            eprintln!("sim: {e}");
            return;
        }
    };
    let result = match command {
        SimCommand::Kill(id) => fleet.kill(id).await.map(|()| format!("killed {id}")),
        SimCommand::Pause(id) => fleet.pause(id).map(|()| format!("paused {id}")),
        SimCommand::Resume(id) => fleet.resume(id).map(|()| format!("resumed {id}")),
        SimCommand::Restart(id) => fleet.restart(id).await.map(|()| format!("restarted {id}")),
        SimCommand::Status => {
            for status in fleet.status() {
                println!("{}", status_line(&status));
            }
            return;
        }
    };
    match result {
        Ok(done) => println!("sim: {done}"),
        Err(e) => eprintln!("sim: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("kill 1001"), Ok(Some(SimCommand::Kill(1001))));
        assert_eq!(
            parse_command("  restart 0x10 "),
            Ok(Some(SimCommand::Restart(16)))
        );
        assert_eq!(parse_command("status"), Ok(Some(SimCommand::Status)));
        assert_eq!(parse_command(""), Ok(None));
        assert!(parse_command("pause").is_err());
        assert!(parse_command("pause 1 2").is_err());
        assert!(parse_command("explode 1").is_err());
    }
}
