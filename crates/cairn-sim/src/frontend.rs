//! A simulated frontend that writes: it creates a few tables in one database (once the cluster
//! has datanodes to place them on), then writes batches of rows to their regions at a steady
//! rate. It finds each region's leader through a [`RouteCache`] and sends the write to that
//! datanode in this process ([`SimNode::write`]); when the datanode answers that it does not
//! lead the region, the cache refreshes the route and the write is retried
//! ([`RouteCache::with_route`]). Counters say how it went ([`WriteLoadStats`]).
//!
//! Which table and region a write goes to is a pure function of the seed and the write's
//! number ([`choose_write`]), so a run is reproducible as far as the cluster is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cairn_client::meta::{
    reconnect_delay_ms, CachedRoute, MetaClient, RouteAttemptError, RouteCache,
};
use cairn_proto::cairnpb::{
    partition_rule, ColumnDef, CreateDatabaseRequest, CreateTableRequest, HashPartition,
    PartitionRule, SemanticType, TableName,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::load::mix;
use crate::node::{SimNode, SimWriteError};
use crate::SimError;

/// Database the simulated tables live in, unless configured otherwise.
pub const WRITE_DATABASE_DEFAULT: &str = "sim";
/// Tables written to, unless configured otherwise.
pub const WRITE_TABLES_DEFAULT: u32 = 4;
/// Most tables one simulated frontend writes to.
pub const WRITE_TABLES_MAX: u32 = 1_000;
/// Regions (hash partitions) per table, unless configured otherwise.
pub const WRITE_PARTITIONS_DEFAULT: u32 = 4;
/// Most regions per simulated table.
pub const WRITE_PARTITIONS_MAX: u32 = 256;
/// Writes per second, unless configured otherwise.
pub const WRITES_PER_SEC_DEFAULT: u32 = 50;
/// Most writes per second one simulated frontend attempts.
pub const WRITES_PER_SEC_MAX: u32 = 100_000;
/// Rows per write, unless configured otherwise.
pub const ROWS_PER_WRITE_DEFAULT: u32 = 100;

/// Longest wait for every simulated datanode to be seen alive before tables are created.
pub const FLEET_ALIVE_WAIT_MAX_MS: u64 = 10_000;
const FLEET_ALIVE_POLL_MS: u64 = 200;

/// What a simulated frontend writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteLoadConfig {
    /// Database (schema) of the tables, in the default catalog; created if missing.
    pub database: String,
    /// Tables `sim_0`, `sim_1`, …; created if missing.
    pub tables: u32,
    /// Regions per table: rows are hashed on `host` into this many partitions.
    pub partitions: u32,
    /// Writes attempted per second (each to one region).
    pub writes_per_sec: u32,
    /// Rows per write.
    pub rows_per_write: u32,
    /// Seed of the table and region choice.
    pub seed: u64,
}

impl Default for WriteLoadConfig {
    fn default() -> Self {
        WriteLoadConfig {
            database: WRITE_DATABASE_DEFAULT.to_string(),
            tables: WRITE_TABLES_DEFAULT,
            partitions: WRITE_PARTITIONS_DEFAULT,
            writes_per_sec: WRITES_PER_SEC_DEFAULT,
            rows_per_write: ROWS_PER_WRITE_DEFAULT,
            seed: 0,
        }
    }
}

impl WriteLoadConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |msg: String| Err(SimError::InvalidConfig(msg));
        if self.database.is_empty() {
            return bad("the write load needs a database name".into());
        }
        if !(1..=WRITE_TABLES_MAX).contains(&self.tables) {
            return bad(format!("tables must be in 1..={WRITE_TABLES_MAX}"));
        }
        if !(1..=WRITE_PARTITIONS_MAX).contains(&self.partitions) {
            return bad(format!("partitions must be in 1..={WRITE_PARTITIONS_MAX}"));
        }
        if !(1..=WRITES_PER_SEC_MAX).contains(&self.writes_per_sec) {
            return bad(format!(
                "writes per second must be in 1..={WRITES_PER_SEC_MAX}"
            ));
        }
        if self.rows_per_write == 0 {
            return bad("rows per write must be at least 1".into());
        }
        Ok(())
    }

    /// The name of table `index`.
    pub fn table_name(&self, index: u32) -> TableName {
        TableName {
            catalog: String::new(),
            schema: self.database.clone(),
            name: format!("sim_{index}"),
        }
    }

    /// The request that creates table `index` (if it does not exist): a metrics table with a
    /// `host` tag, a `ts` time index and a `value` field, hashed on `host`.
    pub fn create_table_request(&self, index: u32) -> CreateTableRequest {
        let column = |name: &str, data_type: &str, semantic: SemanticType| ColumnDef {
            name: name.to_string(),
            data_type: data_type.to_string(),
            nullable: semantic == SemanticType::Field,
            default_value: None,
            semantic_type: semantic as i32,
            comment: String::new(),
        };
        CreateTableRequest {
            name: Some(self.table_name(index)),
            columns: vec![
                column("host", "string", SemanticType::Tag),
                column("ts", "timestamp(3)", SemanticType::Timestamp),
                column("value", "float64", SemanticType::Field),
            ],
            primary_key: vec!["host".to_string()],
            time_index: "ts".to_string(),
            options: None,
            partition: Some(PartitionRule {
                rule: Some(partition_rule::Rule::Hash(HashPartition {
                    columns: vec!["host".to_string()],
                    partitions: self.partitions,
                })),
            }),
            if_not_exists: true,
        }
    }
}

/// The table (index into the tables) and the region pick (to be taken modulo the table's
/// region count) of write number `write_index`: tables in turn, regions spread by the seed.
pub fn choose_write(seed: u64, write_index: u64, tables: usize) -> (usize, u64) {
    assert!(tables > 0, "a write load has at least one table");
    // usize → u64 is lossless on every platform Rust supports, and the result is < tables.
    let table = (write_index % tables as u64) as usize;
    (table, mix(seed ^ mix(write_index)))
}

/// What a simulated frontend has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteLoadStats {
    /// Tables created (or found) and resolved to ids.
    pub tables_ready: u32,
    /// Writes a datanode accepted.
    pub writes_ok: u64,
    /// Writes a datanode refused because it did not lead the region (each one refreshed the
    /// route before the retry).
    pub invalid_route_retries: u64,
    /// Writes given up on (no route, node down, refused after every refresh).
    pub failures: u64,
    /// Failed attempts to create the database or the tables (retried with backoff).
    pub setup_retries: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    tables_ready: AtomicU32,
    writes_ok: AtomicU64,
    invalid_route_retries: AtomicU64,
    failures: AtomicU64,
    setup_retries: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    fn failed(&self, counter: &AtomicU64, error: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
}

/// A running simulated frontend. Dropping it stops the writes.
pub struct SimFrontend {
    counters: Arc<Counters>,
    cache: RouteCache,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SimFrontend {
    /// Starts writing `config`'s load through `client`'s cluster to `datanodes` (the simulated
    /// datanodes of this process, by node id). Must be called inside a Tokio runtime.
    pub fn start(
        client: MetaClient,
        datanodes: HashMap<u64, Arc<SimNode>>,
        config: WriteLoadConfig,
    ) -> Result<Self, SimError> {
        config.validate()?;
        let counters = Arc::new(Counters::default());
        let cache = RouteCache::new(client);
        let (stop, stopped) = watch::channel(false);
        let writer = Writer {
            cache: cache.clone(),
            datanodes,
            config,
            counters: Arc::clone(&counters),
            stopped,
        };
        let task = Some(tokio::spawn(writer.run()));
        Ok(SimFrontend {
            counters,
            cache,
            stop,
            task,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> WriteLoadStats {
        let c = &self.counters;
        WriteLoadStats {
            tables_ready: c.tables_ready.load(Ordering::Relaxed),
            writes_ok: c.writes_ok.load(Ordering::Relaxed),
            invalid_route_retries: c.invalid_route_retries.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            setup_retries: c.setup_retries.load(Ordering::Relaxed),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// The route cache the writes go through (its hit, miss and refresh counters).
    pub fn route_cache(&self) -> &RouteCache {
        &self.cache
    }

    /// Stops writing and waits for the write in progress to end.
    pub async fn stop(self) {
        self.stats_after_stop().await;
    }

    /// Stops writing, waits for the write in progress to end, and returns the final counters.
    pub async fn stats_after_stop(mut self) -> WriteLoadStats {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            // A panic in the task has been reported already.
            let _ = task.await;
        }
        self.stats()
    }
}

impl Drop for SimFrontend {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

struct Writer {
    cache: RouteCache,
    datanodes: HashMap<u64, Arc<SimNode>>,
    config: WriteLoadConfig,
    counters: Arc<Counters>,
    stopped: watch::Receiver<bool>,
}

impl Writer {
    async fn run(mut self) {
        let Some(table_ids) = self.set_up().await else {
            return;
        };
        let period = Duration::from_secs(1) / self.config.writes_per_sec;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut stopped = self.stopped.clone();
        for write_index in 0u64.. {
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                _ = ticker.tick() => {}
            }
            let (table, pick) = choose_write(self.config.seed, write_index, table_ids.len());
            tokio::select! {
                _ = stopped.wait_for(|stop| *stop) => return,
                () = self.write(table_ids[table], pick) => {}
            }
        }
    }

    /// One write of `rows_per_write` rows to region `pick` (modulo the count) of `table_id`.
    async fn write(&self, table_id: u64, pick: u64) {
        let rows = u64::from(self.config.rows_per_write);
        let result = self
            .cache
            .with_route(table_id, |route| {
                let outcome = self.write_once(&route, pick, rows);
                async move { outcome }
            })
            .await;
        match result {
            Ok(()) => {
                self.counters.writes_ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self
                .counters
                .failed(&self.counters.failures, format!("table {table_id}: {e}")),
        }
    }

    fn write_once(
        &self,
        route: &CachedRoute,
        pick: u64,
        rows: u64,
    ) -> Result<(), RouteAttemptError<String>> {
        let regions: Vec<u64> = route.region_ids().collect();
        if regions.is_empty() {
            return Err(RouteAttemptError::Other("the route has no regions".into()));
        }
        // The count fits in u64, and the index is below it.
        let region_id = regions[(pick % regions.len() as u64) as usize];
        let leader = route
            .leader_of(region_id)
            .map(|(node, _)| node)
            .or_else(|| {
                // An address missing from the answer does not matter in-process.
                route
                    .region(region_id)
                    .map(|r| r.leader_node)
                    .filter(|node| *node != 0)
            });
        let Some(leader) = leader else {
            // No leader named: the region is being moved; a fresher route will have one.
            return Err(RouteAttemptError::InvalidRoute {
                region_id,
                node_id: 0,
            });
        };
        let Some(node) = self.datanodes.get(&leader) else {
            return Err(RouteAttemptError::Other(format!(
                "region {region_id} is led by node {leader}, which is not simulated here"
            )));
        };
        match node.write(region_id, rows) {
            Ok(()) => Ok(()),
            Err(SimWriteError::InvalidRoute { region_id, node_id }) => {
                self.counters
                    .invalid_route_retries
                    .fetch_add(1, Ordering::Relaxed);
                Err(RouteAttemptError::InvalidRoute { region_id, node_id })
            }
            Err(e @ (SimWriteError::NodeDown { .. } | SimWriteError::NoLease { .. })) => {
                Err(RouteAttemptError::Other(e.to_string()))
            }
        }
    }

    /// Waits (at most FLEET_ALIVE_WAIT_MAX_MS) until the leader sees every simulated datanode
    /// alive, so new tables spread over the whole fleet rather than landing on whichever node
    /// reported first.
    async fn wait_for_fleet(&self, client: &MetaClient) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(FLEET_ALIVE_WAIT_MAX_MS);
        while tokio::time::Instant::now() < deadline {
            if let Ok(view) = client.list_nodes(0).await {
                let alive = view
                    .nodes
                    .iter()
                    .filter(|n| n.state == "alive")
                    .filter_map(|n| n.identity.as_ref())
                    .filter(|i| self.datanodes.contains_key(&i.id))
                    .count();
                if alive >= self.datanodes.len() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(FLEET_ALIVE_POLL_MS)).await;
        }
    }

    /// Creates the database and the tables (if missing) and resolves the tables' ids,
    /// retrying each step with backoff until it works: right after start the cluster may have
    /// no leader yet, or no alive datanode to place regions on. `None` when stopped first.
    async fn set_up(&mut self) -> Option<Vec<u64>> {
        let client = self.cache.client().clone();
        let database = CreateDatabaseRequest {
            catalog: String::new(),
            name: self.config.database.clone(),
            if_not_exists: true,
            options: HashMap::new(),
        };
        let mut failures = 0u32;
        while let Err(e) = client.create_database(database.clone()).await {
            self.retry_later(&mut failures, format!("create database: {e}"))
                .await?;
        }
        self.wait_for_fleet(&client).await;
        let mut table_ids = Vec::new();
        for index in 0..self.config.tables {
            let request = self.config.create_table_request(index);
            failures = 0;
            while let Err(e) = client.create_table(request.clone()).await {
                self.retry_later(&mut failures, format!("create table sim_{index}: {e}"))
                    .await?;
            }
            let name = self.config.table_name(index);
            failures = 0;
            let table_id = loop {
                match self.cache.table_id(&name).await {
                    Ok(id) => break id,
                    Err(e) => {
                        self.retry_later(&mut failures, format!("resolve sim_{index}: {e}"))
                            .await?
                    }
                }
            };
            table_ids.push(table_id);
            self.counters.tables_ready.fetch_add(1, Ordering::Relaxed);
        }
        Some(table_ids)
    }

    /// Records a failed setup step and waits before the next try; `None` when stopped.
    async fn retry_later(&mut self, failures: &mut u32, error: String) -> Option<()> {
        tracing::debug!(error, "simulated frontend: setup step failed; retrying");
        self.counters.failed(&self.counters.setup_retries, error);
        *failures = failures.saturating_add(1);
        let delay = Duration::from_millis(reconnect_delay_ms(*failures, self.config.seed));
        tokio::select! {
            _ = self.stopped.wait_for(|stop| *stop) => None,
            _ = tokio::time::sleep(delay) => Some(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_take_tables_in_turn_and_spread_over_regions() {
        let picks: Vec<(usize, u64)> = (0..400).map(|i| choose_write(7, i, 4)).collect();
        assert!(picks
            .iter()
            .enumerate()
            .all(|(i, (table, _))| *table == i % 4));
        let mut per_region = [0u32; 4];
        for (_, pick) in &picks {
            per_region[(*pick % 4) as usize] += 1;
        }
        assert!(per_region.iter().all(|n| *n > 60), "{per_region:?}");
        assert_eq!(choose_write(7, 5, 4), choose_write(7, 5, 4));
    }

    #[test]
    fn config_bounds_and_table_requests() {
        let config = WriteLoadConfig::default();
        config.validate().unwrap();
        for bad in [
            WriteLoadConfig {
                tables: 0,
                ..config.clone()
            },
            WriteLoadConfig {
                partitions: WRITE_PARTITIONS_MAX + 1,
                ..config.clone()
            },
            WriteLoadConfig {
                writes_per_sec: 0,
                ..config.clone()
            },
            WriteLoadConfig {
                database: String::new(),
                ..config.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let request = config.create_table_request(2);
        assert!(request.if_not_exists);
        let name = request.name.unwrap();
        assert_eq!((name.schema.as_str(), name.name.as_str()), ("sim", "sim_2"));
        match request.partition.and_then(|p| p.rule) {
            Some(partition_rule::Rule::Hash(hash)) => {
                assert_eq!(hash.partitions, WRITE_PARTITIONS_DEFAULT)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(request.time_index, "ts");
    }
}
