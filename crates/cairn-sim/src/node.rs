//! One simulated node: its identity, the regions it holds, the stats it reports and, for a
//! datanode, its in-process data entry ([`SimNode::write`], [`SimNode::read`]) that refuses
//! regions it does not lead the way a real datanode would. The stats are a pure function
//! ([`stats_at`]) of what it holds and the moment; the node only supplies the moment from its
//! clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
// tokio's clock, so that load follows simulated time under a paused clock.
use tokio::time::Instant;

use cairn_client::meta::{InstructionHandler, RegionLeases, StatsSource};
use cairn_proto::cairnpb::instruction::Kind;
use cairn_proto::cairnpb::{
    Instruction, NodeIdentity, NodeRole, NodeStats, RegionRole, RegionStat,
};
use std::sync::Arc;

use crate::load::{
    region_load_per_sec, region_weight, units, LoadPattern, TableLoad, BYTES_PER_WCU, REGION_BYTES,
    ROW_BYTES,
};
use crate::regions::{RegionRefusal, RegionSet};

/// Port of the address a simulated node claims: this plus its id modulo 50,000. Nothing
/// listens there; the address only has to be well formed and distinct per node.
pub const SIM_PORT_BASE: u64 = 10_000;
/// Number of zones simulated nodes spread over (label `zone`).
pub const SIM_ZONES: u64 = 3;
/// A frontend's request rate at load factor 1, in capacity units per second.
pub const FRONTEND_CUS_PER_SEC: f64 = 500.0;

/// What kind of node is simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimRole {
    /// Holds regions and reports their stats.
    Datanode,
    /// Reports node stats only.
    Frontend,
}

/// The identity a simulated node reports.
pub fn sim_identity(id: u64, role: SimRole, start_time_ms: u64) -> NodeIdentity {
    let zone = format!("zone-{}", id % SIM_ZONES);
    NodeIdentity {
        id,
        role: match role {
            SimRole::Datanode => NodeRole::Datanode,
            SimRole::Frontend => NodeRole::Frontend,
        } as i32,
        address: format!("127.0.0.1:{}", SIM_PORT_BASE + id % 50_000),
        labels: HashMap::from([
            ("zone".to_string(), zone),
            ("host".to_string(), format!("sim-{id}")),
        ]),
        version: format!("cairn-sim {}", env!("CARGO_PKG_VERSION")),
        start_time_ms,
    }
}

/// The stats node `node` reports at `t_ms` (since the simulation started) for an interval of
/// `interval_ms`, holding `regions` (empty for a frontend), tables scaled by `table_load`.
#[allow(clippy::too_many_arguments)]
pub fn stats_at(
    role: SimRole,
    regions: &RegionSet,
    pattern: LoadPattern,
    seed: u64,
    node: u64,
    t_ms: u64,
    interval_ms: u64,
    table_load: &TableLoad,
) -> (NodeStats, Vec<RegionStat>) {
    let factor = pattern.factor(seed, node, t_ms);
    let region_stats: Vec<RegionStat> = regions
        .iter()
        .map(|(region_id, role)| {
            let w = region_weight(seed, region_id);
            let bytes = (REGION_BYTES as f64 * w) as u64;
            let (wcus, rcus) = region_load_per_sec(seed, region_id, table_load);
            RegionStat {
                region_id,
                role: role as i32,
                rcus: units(rcus * factor, interval_ms),
                wcus: units(wcus * factor, interval_ms),
                approximate_bytes: bytes,
                approximate_rows: bytes / ROW_BYTES + regions.rows(region_id),
            }
        })
        .collect();
    let (rcus, wcus) = match role {
        SimRole::Datanode => region_stats
            .iter()
            .fold((0, 0), |(r, w), s| (r + s.rcus, w + s.wcus)),
        SimRole::Frontend => {
            let cus = units(FRONTEND_CUS_PER_SEC * factor, interval_ms);
            (cus, cus / 2)
        }
    };
    let secs = (interval_ms as f64 / 1000.0).max(0.001);
    let stats = NodeStats {
        rcus,
        wcus,
        table_count: regions.table_count(),
        region_count: regions.len() as u64,
        cpu_usage: (0.05 + 0.25 * factor).min(2.0),
        load: 0.2 * factor,
        disk_read_bytes_per_sec: (rcus as f64 / secs) as u64 * BYTES_PER_WCU / 4,
        disk_write_bytes_per_sec: (wcus as f64 / secs) as u64 * BYTES_PER_WCU,
        attributes: HashMap::from([("simulated".to_string(), "true".to_string())]),
    };
    (stats, region_stats)
}

/// Why a simulated datanode refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimWriteError {
    /// The node does not lead the region (holds it as a follower, or not at all): the route
    /// the writer used is stale.
    #[error("node {node_id} does not lead region {region_id}")]
    InvalidRoute {
        /// The region written.
        region_id: u64,
        /// The node that refused.
        node_id: u64,
    },
    /// The node is killed.
    #[error("node {node_id} is down")]
    NodeDown {
        /// The node.
        node_id: u64,
    },
    /// The node leads the region but its lease ran out (it lost the Cairn leader, or the
    /// leader stopped renewing it because the region is moving): it writes nothing until renewed.
    #[error("node {node_id} holds no valid lease for region {region_id}")]
    NoLease {
        /// The region written.
        region_id: u64,
        /// The node that refused.
        node_id: u64,
    },
}

/// Why a simulated datanode refused a read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimReadError {
    /// The node holds the region neither as leader nor as follower: the route is stale.
    #[error("node {node_id} does not hold region {region_id}")]
    InvalidRoute {
        /// The region read.
        region_id: u64,
        /// The node that refused.
        node_id: u64,
    },
    /// The node is killed.
    #[error("node {node_id} is down")]
    NodeDown {
        /// The node.
        node_id: u64,
    },
}

/// A simulated node: the [`StatsSource`] and [`InstructionHandler`] its heartbeat loop uses,
/// and the data entry a simulated frontend writes to.
#[derive(Debug)]
pub struct SimNode {
    id: u64,
    role: SimRole,
    pattern: LoadPattern,
    seed: u64,
    /// The simulation's start: time zero of the load pattern.
    epoch: Instant,
    regions: Mutex<RegionSet>,
    /// The region leases its heartbeat loop records; a write needs one.
    leases: Arc<RegionLeases>,
    /// False while the fleet has the node killed: it then refuses data requests too.
    running: AtomicBool,
    /// Per-table load factors, shared with the rest of the fleet.
    table_load: Arc<TableLoad>,
}

impl SimNode {
    /// A node holding `regions`, whose load follows `pattern` from `epoch`.
    pub fn new(
        id: u64,
        role: SimRole,
        regions: RegionSet,
        pattern: LoadPattern,
        seed: u64,
        epoch: Instant,
    ) -> Self {
        SimNode {
            id,
            role,
            pattern,
            seed,
            epoch,
            regions: Mutex::new(regions),
            leases: Arc::new(RegionLeases::new()),
            running: AtomicBool::new(true),
            table_load: Arc::new(TableLoad::default()),
        }
    }

    /// The same node, its tables' load scaled by the shared `table_load`.
    pub fn with_table_load(mut self, table_load: Arc<TableLoad>) -> Self {
        self.table_load = table_load;
        self
    }

    /// Writes `rows` rows to `region_id`. Refused with [`SimWriteError::InvalidRoute`] unless
    /// this node leads the region, with [`SimWriteError::NoLease`] unless it holds a valid
    /// lease for it, and with [`SimWriteError::NodeDown`] while it is killed.
    pub fn write(&self, region_id: u64, rows: u64) -> Result<(), SimWriteError> {
        if !self.is_running() {
            return Err(SimWriteError::NodeDown { node_id: self.id });
        }
        let mut regions = self.regions();
        if regions.role(region_id) == Some(RegionRole::Leader)
            && !self.leases.is_valid_now(region_id)
        {
            return Err(SimWriteError::NoLease {
                region_id,
                node_id: self.id,
            });
        }
        regions
            .write(region_id, rows)
            .map_err(|_: RegionRefusal| SimWriteError::InvalidRoute {
                region_id,
                node_id: self.id,
            })
    }

    /// Reads `region_id`, which this node must hold as leader or follower; answers the rows
    /// written through it. Refused with [`SimReadError::InvalidRoute`] when not held.
    pub fn read(&self, region_id: u64) -> Result<u64, SimReadError> {
        if !self.is_running() {
            return Err(SimReadError::NodeDown { node_id: self.id });
        }
        self.regions()
            .read(region_id)
            .map_err(|_: RegionRefusal| SimReadError::InvalidRoute {
                region_id,
                node_id: self.id,
            })
    }

    /// The region leases its heartbeat loop must record
    /// ([`cairn_client::meta::HeartbeatOptions::region_leases`]).
    pub fn leases(&self) -> &Arc<RegionLeases> {
        &self.leases
    }

    /// Whether the node is up (not killed by the fleet).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Marks the node up or down; the fleet (or a simulation running its own heartbeat loops)
    /// calls it on kill and restart.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
    }

    /// The regions held now, with their roles, in id order.
    pub fn held_regions(&self) -> Vec<(u64, RegionRole)> {
        self.regions().iter().collect()
    }

    /// The node id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Datanode or frontend.
    pub fn role(&self) -> SimRole {
        self.role
    }

    /// Regions held now.
    pub fn region_count(&self) -> usize {
        self.regions().len()
    }

    fn regions(&self) -> std::sync::MutexGuard<'_, RegionSet> {
        // A RegionSet is changed by single calls that cannot leave it half-updated.
        self.regions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl StatsSource for SimNode {
    fn collect(&self, report_interval_ms: u64) -> (NodeStats, Vec<RegionStat>) {
        let t_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let regions = self.regions();
        stats_at(
            self.role,
            &regions,
            self.pattern,
            self.seed,
            self.id,
            t_ms,
            report_interval_ms,
            &self.table_load,
        )
    }
}

impl InstructionHandler for SimNode {
    async fn handle(&self, instruction: Instruction) -> Result<(), String> {
        if self.role == SimRole::Frontend {
            // A frontend holds no regions; it only drops caches.
            return match instruction.kind {
                Some(cairn_proto::cairnpb::instruction::Kind::InvalidateCaches(_)) => Ok(()),
                _ => Err("a frontend holds no regions".to_string()),
            };
        }
        let outcome = self.regions().apply(&instruction);
        // A region closed or downgraded is no longer written here, whatever its lease says.
        match &instruction.kind {
            Some(Kind::CloseRegion(c)) => self.leases.revoke(c.region_id),
            Some(Kind::DowngradeRegionLeader(d)) => self.leases.revoke(d.region_id),
            Some(Kind::DowngradeRegionLeaders(d)) => {
                d.region_ids.iter().for_each(|r| self.leases.revoke(*r))
            }
            Some(Kind::CloseRegions(c)) => c.region_ids.iter().for_each(|r| self.leases.revoke(*r)),
            _ => {}
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datanode_stats_sum_region_stats() {
        let regions = RegionSet::invented(1001, 10);
        let (stats, region_stats) = stats_at(
            SimRole::Datanode,
            &regions,
            LoadPattern::Constant,
            1,
            1001,
            0,
            3_000,
            &TableLoad::default(),
        );
        assert_eq!(region_stats.len(), 10);
        assert_eq!(stats.region_count, 10);
        assert_eq!(stats.table_count, 1);
        assert_eq!(stats.rcus, region_stats.iter().map(|r| r.rcus).sum::<u64>());
        assert!(
            stats.rcus >= 10 * 30 && stats.rcus <= 10 * 90,
            "{}",
            stats.rcus
        );
        assert!(region_stats
            .iter()
            .all(|r| r.role == RegionRole::Leader as i32 && r.approximate_rows > 0));
    }

    #[test]
    fn frontend_reports_no_regions_and_same_inputs_give_same_stats() {
        let none = RegionSet::default();
        let at = |t| {
            stats_at(
                SimRole::Frontend,
                &none,
                LoadPattern::Sine,
                4,
                2000,
                t,
                3_000,
                &TableLoad::default(),
            )
        };
        let (stats, regions) = at(12_345);
        assert!(regions.is_empty());
        assert!(stats.rcus > 0);
        assert_eq!(at(12_345), at(12_345));
    }

    #[test]
    fn writes_need_the_leader_a_lease_and_a_running_node() {
        let region = crate::regions::sim_region_id(1001, 0);
        let node = SimNode::new(
            1001,
            SimRole::Datanode,
            RegionSet::invented(1001, 1),
            LoadPattern::Constant,
            0,
            Instant::now(),
        );
        assert_eq!(
            node.write(region, 7),
            Err(SimWriteError::NoLease {
                region_id: region,
                node_id: 1001
            }),
            "no lease granted yet"
        );
        let now = Instant::now();
        node.leases().renew(
            &[region],
            now,
            now + std::time::Duration::from_secs(60),
            now,
        );
        node.write(region, 7).unwrap();
        assert_eq!(node.read(region), Ok(7));
        assert_eq!(
            node.write(region + 1, 1),
            Err(SimWriteError::InvalidRoute {
                region_id: region + 1,
                node_id: 1001
            })
        );
        assert!(matches!(
            node.read(region + 1),
            Err(SimReadError::InvalidRoute { .. })
        ));
        node.set_running(false);
        assert_eq!(
            node.write(region, 1),
            Err(SimWriteError::NodeDown { node_id: 1001 })
        );
        node.set_running(true);
        node.write(region, 1).unwrap();
        let (_, stats) = node.collect(3_000);
        assert!(stats[0].approximate_rows >= 8);
    }

    #[test]
    fn identity_is_well_formed() {
        let id = sim_identity(1003, SimRole::Datanode, 5);
        assert_eq!(id.role, NodeRole::Datanode as i32);
        assert_eq!(id.address, "127.0.0.1:11003");
        assert_eq!(id.labels["zone"], "zone-1");
    }
}
