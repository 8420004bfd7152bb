//! What `cairn bench ddl` and `cairn bench route` share: simulated datanodes started and
//! waited for, metadata clients, the benchmark table and a pool of clients creating tables, and
//! the CPU and memory of watched server processes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_client::meta::MetaClient;
use cairn_client::proto::cairnpb::partition_rule::Rule;
use cairn_client::proto::cairnpb::{
    ColumnDef, CreateTableRequest, HashPartition, PartitionRule, SemanticType, TableName,
};
use cairn_client::ClientConfig;
use cairn_sim::{Fleet, LoadPattern, SimConfig, SIM_NODES_MAX};
use serde::Serialize;

use crate::bench::histogram::Histogram;
use crate::bench::proc::{cpu_time_ticks, resident_memory_kib, CLOCK_TICKS_PER_SEC};
use crate::bench::BenchError;

/// Most concurrent clients.
const CLIENTS_MAX: usize = 10_000;
/// Most gRPC connections.
const CONNECTIONS_MAX: usize = 1_024;
/// Connections used when `--connections` is not given, at most.
const CONNECTIONS_DEFAULT_MAX: usize = 16;
/// Longest wait for the simulated datanodes to be alive before creating tables.
const DATANODES_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one DDL call; a drop of a big database takes long.
const DDL_TIMEOUT_MS: u64 = 600_000;
/// How often progress is printed during long runs (table output only).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(10);

/// CPU and memory of one watched process.
#[derive(Debug, Serialize)]
pub struct ProcessUsage {
    pub pid: u32,
    pub cpu_cores: Option<f64>,
    pub rss_kib: Option<u64>,
}

/// CPU ticks of watched processes at the start of a measured phase.
pub struct ProcessSampler {
    started: Instant,
    ticks: Vec<(u32, Option<u64>)>,
}

impl ProcessSampler {
    pub fn start(pids: &[u32]) -> Self {
        ProcessSampler {
            started: Instant::now(),
            ticks: pids.iter().map(|&p| (p, cpu_time_ticks(p))).collect(),
        }
    }

    /// Cores used since `start` and the resident memory now.
    pub fn finish(&self) -> Vec<ProcessUsage> {
        let secs = self.started.elapsed().as_secs_f64();
        self.ticks
            .iter()
            .map(|&(pid, before)| ProcessUsage {
                pid,
                cpu_cores: before.zip(cpu_time_ticks(pid)).and_then(|(b, a)| {
                    (a >= b && secs > 0.0)
                        .then(|| (a - b) as f64 / CLOCK_TICKS_PER_SEC as f64 / secs)
                }),
                rss_kib: resident_memory_kib(pid),
            })
            .collect()
    }
}

/// Starts `datanodes` simulated datanodes (ids from `first_node_id`) holding nothing, and waits
/// until every one has had a heartbeat answered (its stream is open, so instructions reach it)
/// and the leader lists it as alive. Both matter: the leader may still list nodes of an earlier
/// run with the same ids as alive, and regions placed on a node whose stream is not open yet
/// wait for it to connect.
pub async fn start_datanodes(
    client: &MetaClient,
    datanodes: u32,
    first_node_id: u64,
) -> Result<Fleet, BenchError> {
    if datanodes > SIM_NODES_MAX {
        return Err(BenchError::Usage(format!(
            "--datanodes must be at most {SIM_NODES_MAX}"
        )));
    }
    let config = SimConfig {
        datanodes,
        regions_per_node: 0,
        frontends: 0,
        interval_ms: 3_000,
        load: LoadPattern::Constant,
        seed: 0,
        first_node_id,
    };
    let fleet = Fleet::start(client.clone(), &config, None)
        .map_err(|e| BenchError::Usage(e.to_string()))?;
    let ids = first_node_id..first_node_id + u64::from(datanodes);
    let deadline = Instant::now() + DATANODES_ALIVE_TIMEOUT;
    loop {
        let alive = match client.list_nodes(0).await {
            Ok(nodes) => nodes
                .nodes
                .iter()
                .filter_map(|n| n.identity.as_ref().map(|i| (i.id, n.state.as_str())))
                .filter(|(id, state)| ids.contains(id) && *state == "alive")
                .count(),
            Err(_) => 0,
        };
        let connected = fleet
            .status()
            .iter()
            .filter(|s| s.heartbeat.acknowledged > 0 && s.heartbeat.connected_to.is_some())
            .count();
        if alive == datanodes as usize && connected == datanodes as usize {
            return Ok(fleet);
        }
        if Instant::now() > deadline {
            fleet.stop().await;
            return Err(BenchError::Endpoint(format!(
                "after {} s, {connected} of {datanodes} simulated datanodes had a heartbeat answered and {alive} were listed alive",
                DATANODES_ALIVE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Regions the fleet's datanodes hold.
pub fn regions_held(fleet: &Fleet) -> u64 {
    fleet.status().iter().map(|s| s.regions as u64).sum()
}

/// `clients` clients (over `connections` connections) to `endpoints`, with a long timeout.
pub fn meta_clients(
    endpoints: &[String],
    connections: usize,
) -> Result<Vec<MetaClient>, BenchError> {
    let config = ClientConfig {
        request_timeout_ms: DDL_TIMEOUT_MS,
        ..ClientConfig::default()
    };
    (0..connections)
        .map(|_| {
            MetaClient::with_config(endpoints, config)
                .map_err(|e| BenchError::Endpoint(format!("--endpoints: {e}")))
        })
        .collect()
}

/// Checks `--clients` and `--connections`; returns the connections to use.
pub fn connections_for(clients: usize, connections: Option<usize>) -> Result<usize, BenchError> {
    if clients == 0 || clients > CLIENTS_MAX {
        return Err(BenchError::Usage(format!(
            "--clients must be in 1..={CLIENTS_MAX}"
        )));
    }
    let connections = connections.unwrap_or(clients.min(CONNECTIONS_DEFAULT_MAX));
    if connections == 0 || connections > CONNECTIONS_MAX {
        return Err(BenchError::Usage(format!(
            "--connections must be in 1..={CONNECTIONS_MAX}"
        )));
    }
    Ok(connections)
}

/// The table the benchmarks create: cpu-like, hashed on `host` into `regions` regions.
pub fn bench_table(database: &str, name: String, regions: u32) -> CreateTableRequest {
    let column = |name: &str, data_type: &str, semantic: SemanticType, nullable: bool| ColumnDef {
        name: name.to_string(),
        data_type: data_type.to_string(),
        nullable,
        semantic_type: semantic as i32,
        ..Default::default()
    };
    CreateTableRequest {
        name: Some(TableName {
            catalog: String::new(),
            schema: database.to_string(),
            name,
        }),
        columns: vec![
            column("host", "string", SemanticType::Tag, false),
            column("ts", "timestamp(3)", SemanticType::Timestamp, false),
            column("usage", "float64", SemanticType::Field, true),
        ],
        primary_key: vec!["host".to_string()],
        time_index: "ts".to_string(),
        options: None,
        partition: Some(PartitionRule {
            rule: Some(Rule::Hash(HashPartition {
                columns: vec!["host".to_string()],
                partitions: regions,
            })),
        }),
        if_not_exists: false,
    }
}

/// The name of table `i` of a benchmark database.
pub fn bench_table_name(i: u64) -> String {
    format!("t{i:07}")
}

/// What a batch of CREATE TABLE calls did.
pub struct CreateOutcome {
    pub created: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latencies: Histogram,
    pub elapsed: Duration,
}

/// Creates tables `indexes` (named by [`bench_table_name`]) in `database` with `clients`
/// concurrent clients, each taking the next index; prints progress every
/// [`PROGRESS_INTERVAL`] when `progress` is set.
pub async fn create_tables(
    metas: &[MetaClient],
    clients: usize,
    database: &str,
    indexes: Vec<u64>,
    regions: u32,
    progress: bool,
) -> CreateOutcome {
    let indexes = Arc::new(indexes);
    let next = Arc::new(AtomicU64::new(0));
    let created = Arc::new(AtomicU64::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let meta = metas[c % metas.len()].clone();
        let (indexes, next, created) = (indexes.clone(), next.clone(), created.clone());
        let first_error = first_error.clone();
        let database = database.to_string();
        tasks.spawn(async move {
            let mut latencies = Histogram::new();
            let mut errors = 0u64;
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(&i) = indexes.get(k) else { break };
                let request = bench_table(&database, bench_table_name(i), regions);
                let sent = Instant::now();
                match meta.create_table(request).await {
                    Ok(_) => {
                        latencies.record(sent.elapsed());
                        created.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        first.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (latencies, errors)
        });
    }
    let ticker = progress.then(|| {
        let created = created.clone();
        let total = indexes.len();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = created.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "  {done}/{total} tables after {secs:.0} s ({:.0}/s)",
                    done as f64 / secs
                );
            }
        })
    });
    let mut latencies = Histogram::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((h, e)) => {
                latencies.merge(&h);
                errors += e;
            }
            Err(e) => {
                errors += 1;
                let mut first = first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    CreateOutcome {
        created: created.load(Ordering::Relaxed),
        errors,
        first_error,
        latencies,
        elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_tables_are_hashed_and_named_in_order() {
        let t = bench_table("db", bench_table_name(42), 8);
        assert_eq!(t.name.as_ref().unwrap().name, "t0000042");
        assert!(bench_table_name(9) < bench_table_name(10));
        assert!(matches!(
            t.partition.and_then(|p| p.rule),
            Some(Rule::Hash(h)) if h.partitions == 8 && h.columns == ["host"]
        ));
    }

    #[test]
    fn connection_counts_are_bounded() {
        assert_eq!(connections_for(64, None).unwrap(), 16);
        assert_eq!(connections_for(1, None).unwrap(), 1);
        assert!(connections_for(0, None).is_err());
        assert!(connections_for(4, Some(0)).is_err());
    }
}
