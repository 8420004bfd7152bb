//! Cairn's metadata model: the typed records a DDL writes (databases, tables, partition rules,
//! routes, procedures), the key layout they are stored under, their encoding and the rules that
//! decide whether a request is acceptable.
//!
//! Pure code: no I/O, no clock (time comes in as `now_ms` arguments), no async runtime. The server
//! executes what this crate decides; wire types are converted at the server's edge.

pub mod alter;
pub mod codec;
pub mod column;
pub mod database;
pub mod error;
pub mod event;
pub mod keys;
pub mod limits;
pub mod literal;
pub mod maintenance;
pub mod names;
pub mod partition;
pub mod procedure;
pub mod route;
pub mod table;
pub mod types;

#[cfg(test)]
mod test_support;

pub use alter::AlterKind;
pub use database::{validate_database, DatabaseInfo};
pub use error::MetaError;
pub use event::Event;
pub use keys::{prefix_end, KeyLayout, MetaKey};
pub use literal::Literal;
pub use maintenance::{
    Drain, DrainMode, Maintenance, SchedulerSetting, MAINTENANCE_REASON_BYTES_MAX,
    SCHEDULER_PARAMS_MAX, SCHEDULER_PARAM_BYTES_MAX,
};
pub use names::{validate_name, DEFAULT_CATALOG, NAME_LEN_MAX};
pub use partition::{PartitionRule, RangeBound};
pub use procedure::{ProcedureData, ProcedureRecord, ProcedureState};
pub use route::{region_id, region_number_of, table_id_of, LeaderState, RegionRoute, TableRoute};
pub use table::{ColumnDef, CreateTable, SemanticType, TableInfo, TableName, TableOptions};
pub use types::DataType;
