//! A fleet of simulated nodes in one process, each with its own heartbeat stream, the fault
//! commands that act on one of them (kill, pause, resume, restart), and optionally a write load
//! ([`Fleet::start_writes`]) that a simulated frontend sends to the fleet's datanodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::time::Instant;

use cairn_client::meta::{
    unix_time_ms, HeartbeatHandle, HeartbeatObserver, HeartbeatOptions, HeartbeatStatus, MetaClient,
};

use crate::frontend::{SimFrontend, WriteLoadConfig, WriteLoadStats};
use crate::load::{LoadPattern, TableLoad};
use crate::node::{sim_identity, SimNode, SimRole};
use crate::regions::{RegionSet, REGIONS_PER_NODE_MAX};
use crate::SimError;

/// Most simulated nodes (datanodes plus frontends) in one process.
pub const SIM_NODES_MAX: u32 = 10_000;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Simulated datanodes.
    pub datanodes: u32,
    /// Invented regions per datanode.
    pub regions_per_node: u32,
    /// Simulated frontends.
    pub frontends: u32,
    /// Heartbeat interval until the leader names one, ms.
    pub interval_ms: u64,
    /// Shape of the load over time.
    pub load: LoadPattern,
    /// Seed of every pseudo-random choice.
    pub seed: u64,
    /// Id of the first datanode; datanodes take consecutive ids, then frontends.
    pub first_node_id: u64,
}

impl SimConfig {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |msg: String| Err(SimError::InvalidConfig(msg));
        let nodes = u64::from(self.datanodes) + u64::from(self.frontends);
        if nodes == 0 || nodes > u64::from(SIM_NODES_MAX) {
            return bad(format!(
                "datanodes + frontends must be in 1..={SIM_NODES_MAX}"
            ));
        }
        if self.regions_per_node as usize > REGIONS_PER_NODE_MAX {
            return bad(format!(
                "regions per node must be at most {REGIONS_PER_NODE_MAX}"
            ));
        }
        if self.first_node_id == 0 || self.first_node_id.checked_add(nodes).is_none() {
            return bad(
                "the first node id must be at least 1 and leave room for every node".into(),
            );
        }
        Ok(())
    }
}

/// One line of [`Fleet::status`].
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Node id.
    pub id: u64,
    /// Datanode or frontend.
    pub role: SimRole,
    /// `running`, `paused` or `killed`.
    pub state: &'static str,
    /// Regions held.
    pub regions: usize,
    /// The heartbeat loop's state (default when killed).
    pub heartbeat: HeartbeatStatus,
}

struct Slot {
    node: Arc<SimNode>,
    heartbeat: Option<HeartbeatHandle>,
}

/// Simulated nodes heartbeating to one cluster.
pub struct Fleet {
    client: MetaClient,
    options: HeartbeatOptions,
    nodes: BTreeMap<u64, Slot>,
    writes: Option<SimFrontend>,
    /// What nodes added later are made of.
    load: LoadPattern,
    seed: u64,
    epoch: Instant,
    /// Per-table load factors every node applies.
    table_load: Arc<TableLoad>,
}

impl Fleet {
    /// Starts every node of `config` against `client`'s cluster. `observer`, if any, hears
    /// about every acknowledged heartbeat of every node.
    pub fn start(
        client: MetaClient,
        config: &SimConfig,
        observer: Option<Arc<dyn HeartbeatObserver>>,
    ) -> Result<Self, SimError> {
        config.validate()?;
        let epoch = Instant::now();
        let options = HeartbeatOptions {
            interval_ms: config.interval_ms,
            initial_delay_ms: 0,
            observer,
            transport: None,
            region_leases: None,
        };
        let mut fleet = Fleet {
            client,
            options,
            nodes: BTreeMap::new(),
            writes: None,
            load: config.load,
            seed: config.seed,
            epoch,
            table_load: Arc::new(TableLoad::default()),
        };
        let total = u64::from(config.datanodes) + u64::from(config.frontends);
        for i in 0..total {
            let id = config.first_node_id + i;
            let (role, regions) = if i < u64::from(config.datanodes) {
                (
                    SimRole::Datanode,
                    RegionSet::invented(id, config.regions_per_node),
                )
            } else {
                (SimRole::Frontend, RegionSet::default())
            };
            let node = Arc::new(
                SimNode::new(id, role, regions, config.load, config.seed, epoch)
                    .with_table_load(Arc::clone(&fleet.table_load)),
            );
            // Node i starts i/total of an interval late, so the fleet does not beat in lockstep.
            let delay_ms = config.interval_ms.saturating_mul(i) / total;
            let heartbeat = Some(fleet.start_heartbeat(&node, delay_ms));
            fleet.nodes.insert(id, Slot { node, heartbeat });
        }
        Ok(fleet)
    }

    fn start_heartbeat(&self, node: &Arc<SimNode>, initial_delay_ms: u64) -> HeartbeatHandle {
        let identity = sim_identity(node.id(), node.role(), unix_time_ms());
        let options = HeartbeatOptions {
            initial_delay_ms,
            region_leases: Some(Arc::clone(node.leases())),
            ..self.options.clone()
        };
        self.client
            .run_heartbeat_with(identity, Arc::clone(node), Arc::clone(node), options)
    }

    fn slot(&mut self, id: u64) -> Result<&mut Slot, SimError> {
        self.nodes.get_mut(&id).ok_or(SimError::UnknownNode(id))
    }

    /// Starts a simulated frontend that creates `config`'s tables (once the cluster can place
    /// them) and writes to them through a route cache, sending each write to the leading
    /// datanode of this fleet. At most one write load runs per fleet; it stops with the fleet.
    pub fn start_writes(&mut self, config: WriteLoadConfig) -> Result<(), SimError> {
        if self.writes.is_some() {
            return Err(SimError::InvalidConfig(
                "this fleet already runs a write load".into(),
            ));
        }
        let datanodes: HashMap<u64, Arc<SimNode>> = self
            .nodes
            .iter()
            .filter(|(_, slot)| slot.node.role() == SimRole::Datanode)
            .map(|(id, slot)| (*id, Arc::clone(&slot.node)))
            .collect();
        self.writes = Some(SimFrontend::start(self.client.clone(), datanodes, config)?);
        Ok(())
    }

    /// Stops the write load, if one runs, and returns its final counters.
    pub async fn stop_writes(&mut self) -> Option<WriteLoadStats> {
        let writes = self.writes.take()?;
        let stats = writes.stats_after_stop().await;
        Some(stats)
    }

    /// The write load's counters, if one was started.
    pub fn write_stats(&self) -> Option<WriteLoadStats> {
        self.writes.as_ref().map(SimFrontend::stats)
    }

    /// The write load's frontend, if one was started (for its route cache's counters).
    pub fn write_load(&self) -> Option<&SimFrontend> {
        self.writes.as_ref()
    }

    /// The per-table load factors every node of the fleet applies: a scenario makes one
    /// table hot with `fleet.table_load().set(table_id, 10.0)`.
    pub fn table_load(&self) -> &Arc<TableLoad> {
        &self.table_load
    }

    /// The seed of the fleet's loads.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Simulated node `id`, for writing to or reading from it directly.
    pub fn node(&self, id: u64) -> Option<Arc<SimNode>> {
        self.nodes.get(&id).map(|slot| Arc::clone(&slot.node))
    }

    /// Stops node `id`'s heartbeat stream, as if its process died; it refuses writes and reads
    /// until restarted.
    pub async fn kill(&mut self, id: u64) -> Result<(), SimError> {
        let slot = self.slot(id)?;
        match slot.heartbeat.take() {
            Some(heartbeat) => {
                slot.node.set_running(false);
                heartbeat.stop().await;
                Ok(())
            }
            None => Err(SimError::NotRunning(id)),
        }
    }

    /// Stops node `id` sending heartbeats while keeping its stream open, as if it hung.
    pub fn pause(&mut self, id: u64) -> Result<(), SimError> {
        let slot = self.slot(id)?;
        let heartbeat = slot.heartbeat.as_ref().ok_or(SimError::NotRunning(id))?;
        heartbeat.pause();
        Ok(())
    }

    /// Lets a paused node send again.
    pub fn resume(&mut self, id: u64) -> Result<(), SimError> {
        let slot = self.slot(id)?;
        let heartbeat = slot.heartbeat.as_ref().ok_or(SimError::NotRunning(id))?;
        heartbeat.resume();
        Ok(())
    }

    /// Restarts node `id`: a new stream with a new start time; it keeps the regions it held
    /// (they are on its disk).
    pub async fn restart(&mut self, id: u64) -> Result<(), SimError> {
        let slot = self.slot(id)?;
        if let Some(old) = slot.heartbeat.take() {
            old.stop().await;
        }
        let node = Arc::clone(&self.slot(id)?.node);
        node.set_running(true);
        let heartbeat = self.start_heartbeat(&node, 0);
        self.slot(id)?.heartbeat = Some(heartbeat);
        Ok(())
    }

    /// Adds a new, empty datanode `id` to the fleet (a node joining the cluster); it starts
    /// heartbeating at once.
    pub fn add_datanode(&mut self, id: u64) -> Result<(), SimError> {
        if id == 0 || self.nodes.contains_key(&id) {
            return Err(SimError::InvalidConfig(format!(
                "node id {id} is 0 or already in the fleet"
            )));
        }
        if self.nodes.len() >= SIM_NODES_MAX as usize {
            return Err(SimError::InvalidConfig(format!(
                "at most {SIM_NODES_MAX} nodes (sim_nodes_max)"
            )));
        }
        let node = Arc::new(
            SimNode::new(
                id,
                SimRole::Datanode,
                RegionSet::default(),
                self.load,
                self.seed,
                self.epoch,
            )
            .with_table_load(Arc::clone(&self.table_load)),
        );
        let heartbeat = Some(self.start_heartbeat(&node, 0));
        self.nodes.insert(id, Slot { node, heartbeat });
        Ok(())
    }

    /// One line per node, in id order.
    pub fn status(&self) -> Vec<NodeStatus> {
        self.nodes
            .iter()
            .map(|(id, slot)| {
                let heartbeat = slot
                    .heartbeat
                    .as_ref()
                    .map(HeartbeatHandle::status)
                    .unwrap_or_default();
                let state = match &slot.heartbeat {
                    None => "killed",
                    Some(_) if heartbeat.paused => "paused",
                    Some(_) => "running",
                };
                NodeStatus {
                    id: *id,
                    role: slot.node.role(),
                    state,
                    regions: slot.node.region_count(),
                    heartbeat,
                }
            })
            .collect()
    }

    /// Stops every node and waits for their streams to close (all at once: one slow stream
    /// does not hold up the others).
    pub async fn stop(mut self) {
        if let Some(writes) = self.writes.take() {
            writes.stop().await;
        }
        let mut stopping = tokio::task::JoinSet::new();
        for slot in self.nodes.values_mut() {
            if let Some(handle) = slot.heartbeat.take() {
                stopping.spawn(handle.stop());
            }
        }
        while stopping.join_next().await.is_some() {}
    }
}
