//! Cairn's placement selectors and schedulers. Selectors: given the alive, non-draining
//! datanodes and the regions of a new (or growing) table, decide which node leads each region and
//! which hold its followers. Schedulers: given a snapshot of the cluster, decide which regions
//! should move to keep it balanced, as [`Operator`]s the leader executes.
//!
//! Everything here is pure: no I/O, no clock, no global randomness. The leader's scheduler hands in
//! a snapshot and executes the returned [`Placement`]; the same inputs and selector state always
//! give the same answer, so decisions can be replayed in tests and simulations.
//!
//! - [`RoundRobin`] rotates leaders over nodes and remembers where it stopped.
//! - [`LoadBased`] prefers nodes with fewer regions and less traffic.
//! - [`LabelAware`] spreads over the values of a label (zone, rack) first, then by load.
//!
//! [`SelectorKind`] builds one from its configuration name.
//!
//! [`Schedulers`] holds every scheduler (evict-leaders, drain, replica-repair, label-spread,
//! hot-region, balance-region), which are
//! on, and their parameters; [`Schedulers::plan`] runs one pass over a [`ClusterSnapshot`].

mod balance_region;
mod cluster;
mod drain;
mod evict_leaders;
mod followers;
mod hot_region;
mod kind;
mod label_aware;
mod label_spread;
mod load;
mod load_based;
mod operator;
mod placement;
mod regions;
mod replica_repair;
mod round_robin;
pub mod scenario;
mod schedule;
mod scheduler;

#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod test_support;

pub use balance_region::{
    BALANCE_TOLERANCE_DEFAULT, REGIONS_EXAMINED_MAX, REGION_CANDIDATES_SCANNED_MAX,
    SIZE_GAP_REGIONS_MIN, SIZE_TOLERANCE_DEFAULT,
};
pub use cluster::{
    ClusterSnapshot, DrainKind, IdHasher, IdMap, IdSet, LeftNodes, NodeIndex, NodeView,
    ReportedLoad, CAPACITY_LABEL, COUNT_MOVE_LOAD_BANDS, LEFT_NODES_MAX, NODE_CAPACITY_MAX,
    NODE_INDEX_DENSE_IDS_MAX, NODE_LOAD_REPORTS_MAX,
};
pub use drain::{failover_plan, FAILOVER as FAILOVER_SCHEDULER};
pub use followers::Followers;
pub use hot_region::{
    HOT_MIN_LOAD_DEFAULT, HOT_OPERATORS_PER_PASS_MAX, HOT_SUSTAINED_SHARE_DEFAULT,
    HOT_TOLERANCE_DEFAULT,
};
pub use kind::{SelectorKind, UnknownSelector};
pub use label_aware::LabelAware;
pub use load::LoadWeights;
pub use load_based::LoadBased;
pub use operator::{
    Move, MoveKind, Operator, Phase, Priority, Step, DRAIN_SCHEDULER, EVICT_LEADERS_SCHEDULER,
    REPLICA_REPAIR_SCHEDULER,
};
pub use placement::{
    Candidate, Placement, PlacementRequest, RegionPlacement, SelectError, Selector,
};
pub use regions::{RegionLoad, RegionRef, RegionSource, RegionView, Regions};
pub use round_robin::RoundRobin;
pub use scheduler::{names as scheduler_names, ConfigError, SchedulerInfo, Schedulers};
