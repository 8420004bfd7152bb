//! `cairn ctl`: talk to a running cluster through the etcd v3 API and Cairn's Admin API.
//! One file per resource (`kv`, `member`, `leader`, `endpoint`, `node`, `database`, `table`,
//! `route`, `procedure`); shared printing in `output`.
//!
//! # Synopsis
//!
//! ```text
//! cairn ctl [--endpoints A,B,C] [--output table|json] [--request-timeout-ms MS] RESOURCE VERB ...
//!   kv put KEY VALUE [--lease ID] [--prev-kv]
//!   kv get KEY [--prefix | --from-key] [--limit N] [--rev R] [--keys-only] [--count-only]
//!              [--serializable] [--sort-by key|create|modify|version|value] [--order ascend|descend]
//!   kv del KEY [--prefix | --from-key] [--prev-kv]
//!   kv watch KEY [--prefix] [--rev R] [--prev-kv] [--max-events N]
//!   member list
//!   member add --peer-url [http://]HOST:PORT [--learner]   (the cluster assigns the id)
//!   member remove ID
//!   member promote ID
//!   leader show
//!   leader transfer --to ID
//!   endpoint status
//!   node list
//!   node show ID
//!   database create NAME [--catalog C] [--if-not-exists] [--option K=V]...
//!   database drop NAME [--catalog C] [--if-exists]
//!   database list [--catalog C] [--page-size N]
//!   table create [CATALOG.]SCHEMA.NAME --column NAME:TYPE[:tag|field|timestamp][:null][:default=SQL]...
//!                [--primary-key A,B] [--time-index COL] [--partition-hash COLS:N |
//!                --partition-range COL:START..END,... | --partition-list COL:V1|V2,V3,...]
//!                [--ttl DURATION] [--option K=V]... [--if-not-exists]
//!   table create [NAME] --from-file FILE.json [--if-not-exists]
//!   table describe NAME [--serializable]
//!   table list [CATALOG.]SCHEMA [--page-size N] [--page-token T | --all] [--serializable]
//!   table alter NAME (--add-column SPEC... | --drop-column C,... | --rename-column OLD:NEW |
//!               --rename-to NEW | [--ttl DURATION|forever] [--set K=V]... [--unset K]...)
//!               [--expected-version V]
//!   table truncate NAME
//!   table drop NAME [--if-exists]
//!   route get [NAME...] [--id ID...] [--serializable]
//!   procedure list [--state running|done|failed] [--limit N]
//!   procedure show ID
//!   region show REGION_ID
//!   region migrate REGION_ID --to NODE_ID [--timeout D]
//!   maintenance on [--reason R] | off | status
//!   node drain ID [--cancel] | node evict-leaders ID [--cancel]
//!   event list [--since D] [--kind K] [--limit N]
//!   scheduler list | enable NAME | disable NAME | config NAME --set K=V... | plan
//!   operator list [--finished] | show ID | cancel ID
//!   stats node ID | stats region ID
//! ```
//!
//! `--endpoints` defaults to `127.0.0.1:4379` and may come from `CAIRN_ENDPOINTS`. Ids (member,
//! node, lease) are decimal, or hex with a `0x` prefix. A failure prints `error: <what failed>:
//! <why>` on stderr and exits non-zero.
//!
//! # JSON output (`--output json`)
//!
//! Every command prints exactly one pretty-printed JSON document on stdout, except `kv watch`,
//! which prints one compact JSON object per line per event (JSON Lines). Keys are snake_case.
//! Fields are never removed or renamed; new fields may be added.
//!
//! **Bytes.** Keys and values are written as UTF-8 strings when they are valid UTF-8, under
//! `key` / `value`. Otherwise the field is named `key_hex` / `value_hex` and holds lowercase hex
//! without prefix. Exactly one of the pair is present.
//!
//! Shared shapes:
//! - `Header`: `{"cluster_id": u64, "member_id": u64, "revision": i64, "raft_term": u64}`
//! - `KeyValue`: `{"key" | "key_hex": str, "value" | "value_hex": str, "create_revision": i64,
//!   "mod_revision": i64, "version": i64, "lease": i64}` (lease 0 = none)
//! - `Member`: `{"id": u64, "name": str, "peer_urls": [str], "client_urls": [str],
//!   "is_learner": bool}`
//!
//! Per command:
//! - `kv put`: `{"header": Header, "prev_kv": KeyValue | null}`
//! - `kv get`: `{"header": Header, "kvs": [KeyValue], "count": i64, "more": bool}`
//!   (`kvs` is empty with `--count-only`; values are `""` with `--keys-only`)
//! - `kv del`: `{"header": Header, "deleted": i64, "prev_kvs": [KeyValue]}`
//! - `kv watch`, one line per event: `{"type": "put" | "delete", "revision": i64,
//!   "kv": KeyValue, "prev_kv": KeyValue | null}` (`revision` is the event's mod revision)
//! - `member list`: `{"header": Header, "members": [Member]}`
//! - `member add`: `{"header": Header, "member": Member | null, "members": [Member]}`
//! - `member remove`, `member promote`: `{"header": Header, "members": [Member]}`
//! - `leader show`: `{"endpoint": str, "node_id": u64, "leader_id": u64 | null,
//!   "leader_client_addr": str | null, "term": u64}` (`node_id` is the node that answered;
//!   null means no leader is known)
//! - `leader transfer`: `{"requested": u64, "leader_id": u64}`
//! - `endpoint status`: an array with one object per endpoint, in `--endpoints` order:
//!   `{"endpoint": str, "id": u64 | null, "version": str | null, "db_size": i64 | null,
//!   "db_size_in_use": i64 | null, "leader": u64 | null, "is_leader": bool | null,
//!   "is_learner": bool | null, "raft_term": u64 | null, "raft_index": u64 | null,
//!   "raft_applied_index": u64 | null, "errors": [str]}`; the numbers are null when the
//!   endpoint did not answer, and `errors` then holds why. The command exits non-zero if any
//!   endpoint failed, after printing all of them.
//! - `node list`: `{"leader_id": u64, "nodes": [Node]}`, nodes in id order (`leader_id` is
//!   the leader that answered)
//! - `node show ID`: `{"leader_id": u64, "node": Node}`; exits non-zero when the leader does
//!   not know the node
//!
//! where `Node` is `{"id": u64, "role": "datanode" | "frontend" | "flownode" | "unspecified",
//! "address": str, "labels": {str: str}, "version": str, "start_time_ms": u64,
//! "state": "alive" | "suspect" | "down" | "draining" | "unknown",
//! "last_heartbeat_age_ms": u64 | null, "report_interval_ms": u64, "region_count": u64,
//! "unverified_region_count": u64, "stats": NodeStats | null}` (`last_heartbeat_age_ms` is
//! null when no heartbeat arrived under the current leader; `region_count` counts the region
//! stats of the latest heartbeat) and `NodeStats` is `{"rcus": u64, "wcus": u64,
//! "table_count": u64, "region_count": u64, "cpu_usage": f64, "load": f64,
//! "disk_read_bytes_per_sec": u64, "disk_write_bytes_per_sec": u64,
//! "attributes": {str: str}}` (capacity units are over the node's `report_interval_ms`).
//!
//! The metadata resources (database, table, route, procedure) are documented in docs/ctl.md;
//! their shapes are built in `table::json`, `route` and `procedure`.

mod database;
mod endpoint;
mod event;
mod kv;
mod leader;
mod maintenance;
mod member;
mod node;
mod operator;
pub mod output;
mod procedure;
mod region;
mod route;
mod scheduler;
mod snapshot;
mod stats;
mod table;

use cairn_client::meta::MetaClient;
use cairn_client::{ClientConfig, ClientError, EtcdClient};
use clap::Subcommand;

use output::OutputFormat;

/// Arguments of `cairn ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Endpoints of the cluster (HOST:PORT or http://HOST:PORT), comma separated.
    #[arg(
        long,
        global = true,
        env = "CAIRN_ENDPOINTS",
        default_value = "127.0.0.1:4379",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// How long each attempt of a call may take before the next endpoint is tried, ms.
    #[arg(long, global = true, default_value_t = cairn_client::REQUEST_TIMEOUT_MS)]
    pub request_timeout_ms: u64,
    #[command(subcommand)]
    pub resource: Resource,
}

/// The resources `cairn ctl` manages.
#[derive(Debug, Subcommand)]
pub enum Resource {
    /// Keys and values (etcd KV and Watch).
    Kv {
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Cluster membership (etcd Cluster).
    Member {
        #[command(subcommand)]
        command: member::MemberCommand,
    },
    /// Raft leadership (Cairn Admin).
    Leader {
        #[command(subcommand)]
        command: leader::LeaderCommand,
    },
    /// Per-endpoint health and progress (etcd Maintenance).
    Endpoint {
        #[command(subcommand)]
        command: endpoint::EndpointCommand,
    },
    /// Datanodes, frontends and flownodes that heartbeat to the leader (Cairn NodeRegistry).
    Node {
        #[command(subcommand)]
        command: node::NodeCommand,
    },
    /// Databases (schemas) of a catalog (Cairn Meta).
    Database {
        #[command(subcommand)]
        command: database::DatabaseCommand,
    },
    /// Tables: create, describe, list, alter, truncate, drop (Cairn Meta).
    Table {
        #[command(subcommand)]
        command: table::TableCommand,
    },
    /// Where tables' regions live: leaders, followers, addresses (Cairn Meta).
    Route {
        #[command(subcommand)]
        command: route::RouteCommand,
    },
    /// DDL procedures the leader runs and keeps (Cairn Meta).
    Procedure {
        #[command(subcommand)]
        command: procedure::ProcedureCommand,
    },
    /// The leader's decisions: failure judgements, failovers, migrations, drains (Cairn Meta).
    Event {
        #[command(subcommand)]
        command: event::EventCommand,
    },
    /// Maintenance mode: no failover while on (Cairn Meta).
    Maintenance {
        #[command(subcommand)]
        command: maintenance::MaintenanceCommand,
    },
    /// One region: where it is, its lease, moving its leadership (Cairn Meta).
    Region {
        #[command(subcommand)]
        command: region::RegionCommand,
    },
    /// The schedulers that keep regions and load spread: on, off, parameters, dry run (Cairn Meta).
    Scheduler {
        #[command(subcommand)]
        command: scheduler::SchedulerCommand,
    },
    /// The moves the schedulers queued and run; cancelling a queued one (Cairn Meta).
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
    },
    /// The stats history the leader keeps: a node's reports, a region's load (Cairn Meta).
    Stats {
        #[command(subcommand)]
        command: stats::StatsCommand,
    },
    /// Backups of a member's state (etcd Maintenance.Snapshot).
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
}

/// Why a `cairn ctl` command failed.
#[derive(Debug)]
pub enum CtlError {
    /// The `--endpoints` list is unusable.
    Endpoints(ClientError),
    /// A call to the cluster failed; `what` names the operation.
    Call {
        /// The operation, as the user would say it (`kv put "a"`).
        what: String,
        /// Why it failed.
        source: ClientError,
    },
    /// The arguments make no sense together.
    Usage(String),
    /// The cluster answered, but not what the command needed.
    Unexpected(String),
    /// Some endpoints of a per-endpoint command failed (their errors were printed).
    PartialFailure {
        /// What was asked of each endpoint.
        what: String,
        /// Endpoints that failed.
        failed: usize,
        /// Endpoints asked.
        total: usize,
    },
    /// Output could not be encoded.
    Json(serde_json::Error),
}

impl CtlError {
    /// Wraps a client error with the operation that failed.
    pub fn call(what: impl Into<String>) -> impl FnOnce(ClientError) -> CtlError {
        let what = what.into();
        move |source| CtlError::Call { what, source }
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Endpoints(e) => write!(f, "--endpoints: {e}"),
            CtlError::Call { what, source } => write!(f, "{what} failed: {source}"),
            CtlError::Usage(msg) => write!(f, "{msg}"),
            CtlError::Unexpected(msg) => write!(f, "{msg}"),
            CtlError::PartialFailure {
                what,
                failed,
                total,
            } => write!(f, "{what} failed on {failed} of {total} endpoints"),
            CtlError::Json(e) => write!(f, "cannot encode the JSON output: {e}"),
        }
    }
}

impl std::error::Error for CtlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CtlError::Endpoints(e) | CtlError::Call { source: e, .. } => Some(e),
            CtlError::Json(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs one `cairn ctl` command.
pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    let config = ClientConfig {
        request_timeout_ms: args.request_timeout_ms,
        ..ClientConfig::default()
    };
    let client = EtcdClient::with_config(&args.endpoints, config).map_err(CtlError::Endpoints)?;
    let out = args.output;
    let meta = || MetaClient::with_config(client.endpoints(), *client.config());
    match args.resource {
        Resource::Kv { command } => kv::run(&client, out, command).await,
        Resource::Member { command } => member::run(&client, out, command).await,
        Resource::Leader { command } => leader::run(&client, out, command).await,
        Resource::Endpoint { command } => endpoint::run(&client, out, command).await,
        Resource::Snapshot { command } => snapshot::run(&client, out, command).await,
        Resource::Node { command } => node::run(&client, out, command).await,
        Resource::Database { command } => {
            database::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Table { command } => {
            table::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Route { command } => {
            route::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Procedure { command } => {
            procedure::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Event { command } => {
            event::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Maintenance { command } => {
            maintenance::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Region { command } => {
            region::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Scheduler { command } => {
            scheduler::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Operator { command } => {
            operator::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
        Resource::Stats { command } => {
            stats::run(&meta().map_err(CtlError::Endpoints)?, out, command).await
        }
    }
}
