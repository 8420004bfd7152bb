//! Typed calls of the `cairn.v1.Meta` service on [`MetaClient`]: DDL, table and database
//! listings, routes and procedures.
//!
//! Retries follow one rule. Reads are idempotent and move on to the next endpoint after
//! `Unavailable` or a timeout. A DDL whose outcome is unknown (the node went away after
//! receiving it) is not repeated, because a second `CreateTable` would fail with
//! `AlreadyExists` although the first one worked, and a second `AlterTable` could apply twice;
//! the caller sees the error and decides. A DDL that says `if_not_exists` / `if_exists` is
//! idempotent and is retried like a read. A request that could not be sent at all is always
//! retried (see [`crate::retry::is_retryable`]).

use std::collections::BTreeMap;

use cairn_proto::cairnpb::meta_client::MetaClient as MetaRpc;
use cairn_proto::cairnpb::{
    AlterTableRequest, CreateDatabaseRequest, CreateTableRequest, DdlResponse,
    DescribeTableRequest, DescribeTableResponse, DrainMode, DrainNodeRequest, DropDatabaseRequest,
    DropTableRequest, GetMaintenanceRequest, GetProcedureRequest, GetRegionRequest,
    GetRoutesRequest, GetRoutesResponse, ListDatabasesRequest, ListDatabasesResponse,
    ListEventsRequest, ListEventsResponse, ListProceduresRequest, ListProceduresResponse,
    ListTablesRequest, ListTablesResponse, MaintenanceState, MigrateRegionRequest, ProcedureView,
    RegionView, SetMaintenanceRequest, TableInfo, TableName, TruncateTableRequest,
};
use tonic::transport::Channel;

use super::{MetaClient, MetadataError};
use crate::{ClientError, RESPONSE_BYTES_MAX};

/// Most table ids one `GetRoutes` request carries (the server's `route_tables_per_request_max`);
/// [`MetaClient::get_routes`] splits longer lists into several requests.
pub const ROUTE_TABLES_PER_REQUEST_MAX: usize = 1_000;
/// Most pages [`MetaClient::list_all_tables`] follows before it gives up: a server that keeps
/// answering with a next page token must not make the client loop forever.
pub const LIST_ALL_TABLES_PAGES_MAX: u32 = 10_000;

/// The server's migration deadline when a request names none (`region_migration_timeout_ms`).
pub const MIGRATE_REGION_DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// How much longer than a migration's deadline [`MetaClient::migrate_region`] waits for its
/// answer: the rollback after a missed deadline takes a lease or so.
pub const MIGRATE_REGION_CALL_SLACK_MS: u64 = 30_000;

/// A `Meta` service client on `channel` that accepts large answers (a listing of many tables).
pub(super) fn meta_rpc(channel: Channel) -> MetaRpc<Channel> {
    MetaRpc::new(channel).max_decoding_message_size(RESPONSE_BYTES_MAX)
}

/// A table name in the form the server takes: `catalog` may be empty ("default").
pub fn table_name(
    catalog: impl Into<String>,
    schema: impl Into<String>,
    name: impl Into<String>,
) -> TableName {
    TableName {
        catalog: catalog.into(),
        schema: schema.into(),
        name: name.into(),
    }
}

/// `catalog.schema.name`, with an empty catalog shown as `default`: for messages and logs.
pub fn display_table_name(name: &TableName) -> String {
    let catalog = if name.catalog.is_empty() {
        "default"
    } else {
        &name.catalog
    };
    format!("{catalog}.{}.{}", name.schema, name.name)
}

impl MetaClient {
    /// Creates a database. Retried after an unknown outcome only when `if_not_exists` is set.
    /// Fails with `AlreadyExists` when it exists and `if_not_exists` is not set.
    pub async fn create_database(
        &self,
        request: CreateDatabaseRequest,
    ) -> Result<DdlResponse, ClientError> {
        let idempotent = request.if_not_exists;
        self.etcd
            .call(idempotent, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).create_database(request).await?.into_inner()) }
            })
            .await
    }

    /// Drops a database and every table in it (`dropped_tables` in the answer counts them).
    /// Retried after an unknown outcome only when `if_exists` is set.
    pub async fn drop_database(
        &self,
        request: DropDatabaseRequest,
    ) -> Result<DdlResponse, ClientError> {
        let idempotent = request.if_exists;
        self.etcd
            .call(idempotent, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).drop_database(request).await?.into_inner()) }
            })
            .await
    }

    /// One page of the databases of a catalog (a read, retried).
    pub async fn list_databases(
        &self,
        request: ListDatabasesRequest,
    ) -> Result<ListDatabasesResponse, ClientError> {
        self.etcd
            .call(true, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).list_databases(request).await?.into_inner()) }
            })
            .await
    }

    /// Creates a table: the server allocates its id and regions and places them on datanodes.
    /// Retried after an unknown outcome only when `if_not_exists` is set.
    pub async fn create_table(
        &self,
        request: CreateTableRequest,
    ) -> Result<DdlResponse, ClientError> {
        let idempotent = request.if_not_exists;
        self.etcd
            .call(idempotent, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).create_table(request).await?.into_inner()) }
            })
            .await
    }

    /// Drops a table (its regions are closed on their datanodes). Retried after an unknown
    /// outcome only when `if_exists` is set.
    pub async fn drop_table(&self, request: DropTableRequest) -> Result<DdlResponse, ClientError> {
        let idempotent = request.if_exists;
        self.etcd
            .call(idempotent, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).drop_table(request).await?.into_inner()) }
            })
            .await
    }

    /// Changes a table's columns, options or name. Never retried after an unknown outcome: a
    /// repeat could apply twice, or (with `expected_version`) report `FailedPrecondition` for a
    /// change that was made.
    pub async fn alter_table(
        &self,
        request: AlterTableRequest,
    ) -> Result<DdlResponse, ClientError> {
        self.etcd
            .call(false, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).alter_table(request).await?.into_inner()) }
            })
            .await
    }

    /// Drops every row of a table, keeping its regions. Never retried after an unknown outcome
    /// (each truncate bumps the table version).
    pub async fn truncate_table(
        &self,
        request: TruncateTableRequest,
    ) -> Result<DdlResponse, ClientError> {
        self.etcd
            .call(false, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).truncate_table(request).await?.into_inner()) }
            })
            .await
    }

    /// Moves a region's leadership to datanode `to_node` and waits until it is writable there
    /// (or the migration rolled back). `timeout_ms` 0 takes the server's default; the call
    /// waits that long plus [`MIGRATE_REGION_CALL_SLACK_MS`]. Never retried after an unknown
    /// outcome: the migration may be running; `get_region` shows it.
    pub async fn migrate_region(
        &self,
        region_id: u64,
        to_node: u64,
        timeout_ms: u64,
    ) -> Result<DdlResponse, ClientError> {
        let request = MigrateRegionRequest {
            region_id,
            to_node,
            timeout_ms,
        };
        let wait = match timeout_ms {
            0 => MIGRATE_REGION_DEFAULT_TIMEOUT_MS,
            t => t,
        } + MIGRATE_REGION_CALL_SLACK_MS;
        self.etcd
            .call_within(false, wait, |ch| async move {
                Ok(meta_rpc(ch).migrate_region(request).await?.into_inner())
            })
            .await
    }

    /// Where a region is: its route, its lease as the Cairn leader sees it, and any migration
    /// in flight (a read, retried). A missing region is a `NotFound` status.
    pub async fn get_region(&self, region_id: u64) -> Result<RegionView, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch)
                    .get_region(GetRegionRequest { region_id })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Switches maintenance mode (while on, the leader moves no region on its own). Setting
    /// the same state again is harmless, so this is retried like a read.
    pub async fn set_maintenance(
        &self,
        on: bool,
        reason: &str,
    ) -> Result<DdlResponse, ClientError> {
        let request = SetMaintenanceRequest {
            on,
            reason: reason.to_string(),
        };
        self.etcd
            .call(true, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).set_maintenance(request).await?.into_inner()) }
            })
            .await
    }

    /// Starts draining datanode `node_id` (or evicting its leaders, or cancels either); the
    /// moves happen in the background, their progress is in the node's view. Setting the same
    /// mode again is harmless, so this is retried like a read.
    pub async fn drain_node(
        &self,
        node_id: u64,
        mode: DrainMode,
    ) -> Result<DdlResponse, ClientError> {
        let request = DrainNodeRequest {
            node_id,
            mode: mode as i32,
        };
        self.etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch).drain_node(request).await?.into_inner())
            })
            .await
    }

    /// The event log, newest first: events at or after `since_ms` (0: all kept), of `kind`
    /// (empty: all), at most `limit` (0: the server's default). A read, retried.
    pub async fn list_events(
        &self,
        since_ms: u64,
        kind: &str,
        limit: u32,
    ) -> Result<ListEventsResponse, ClientError> {
        let request = ListEventsRequest {
            since_ms,
            kind: kind.to_string(),
            limit,
        };
        self.etcd
            .call(true, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).list_events(request).await?.into_inner()) }
            })
            .await
    }

    /// Whether the cluster is in maintenance mode (a linearizable read, retried).
    pub async fn get_maintenance(&self) -> Result<MaintenanceState, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch)
                    .get_maintenance(GetMaintenanceRequest {
                        serializable: false,
                    })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// A table's definition and route (a read, retried). A missing table is a `NotFound`
    /// status.
    pub async fn describe_table(
        &self,
        request: DescribeTableRequest,
    ) -> Result<DescribeTableResponse, ClientError> {
        self.etcd
            .call(true, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).describe_table(request).await?.into_inner()) }
            })
            .await
    }

    /// One page of the tables of a database (a read, retried). Pass the answer's
    /// `next_page_token` back for the next page; see also [`MetaClient::list_all_tables`].
    pub async fn list_tables(
        &self,
        request: ListTablesRequest,
    ) -> Result<ListTablesResponse, ClientError> {
        self.etcd
            .call(true, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).list_tables(request).await?.into_inner()) }
            })
            .await
    }

    /// Every table of database `schema` in `catalog` (empty: "default"), following page tokens
    /// with the server's default page size. Each page is a separate linearizable read, so a
    /// table created or dropped during the listing may or may not appear. Fails with
    /// [`MetadataError::PagesExceeded`] after [`LIST_ALL_TABLES_PAGES_MAX`] pages.
    pub async fn list_all_tables(
        &self,
        catalog: &str,
        schema: &str,
    ) -> Result<Vec<TableInfo>, MetadataError> {
        let mut tables = Vec::new();
        let mut page_token = String::new();
        for _ in 0..LIST_ALL_TABLES_PAGES_MAX {
            let page = self
                .list_tables(ListTablesRequest {
                    catalog: catalog.to_string(),
                    schema: schema.to_string(),
                    page_size: 0,
                    page_token,
                    serializable: false,
                })
                .await?;
            tables.extend(page.tables);
            if page.next_page_token.is_empty() {
                return Ok(tables);
            }
            page_token = page.next_page_token;
        }
        Err(MetadataError::PagesExceeded {
            pages_max: LIST_ALL_TABLES_PAGES_MAX,
        })
    }

    /// The routes of `table_ids` (linearizable reads, retried), with the addresses of every
    /// node they name. More than [`ROUTE_TABLES_PER_REQUEST_MAX`] ids are asked for in several
    /// requests, one after another, and the answers merged: routes and missing ids in request
    /// order, nodes once each, and the *lowest* revision of the answers (every route is at
    /// least that new, so a watch from `revision + 1` misses no change of any of them).
    pub async fn get_routes(&self, table_ids: &[u64]) -> Result<GetRoutesResponse, ClientError> {
        if table_ids.len() <= ROUTE_TABLES_PER_REQUEST_MAX {
            return self.get_routes_once(table_ids.to_vec()).await;
        }
        let mut merged = GetRoutesResponse::default();
        let mut nodes = BTreeMap::new();
        for chunk in table_ids.chunks(ROUTE_TABLES_PER_REQUEST_MAX) {
            let answer = self.get_routes_once(chunk.to_vec()).await?;
            merged.routes.extend(answer.routes);
            merged.missing_table_ids.extend(answer.missing_table_ids);
            for node in answer.nodes {
                nodes.entry(node.node_id).or_insert(node);
            }
            merged.revision = if merged.revision == 0 {
                answer.revision
            } else {
                merged.revision.min(answer.revision)
            };
        }
        merged.nodes = nodes.into_values().collect();
        Ok(merged)
    }

    async fn get_routes_once(&self, table_ids: Vec<u64>) -> Result<GetRoutesResponse, ClientError> {
        debug_assert!(table_ids.len() <= ROUTE_TABLES_PER_REQUEST_MAX);
        let request = GetRoutesRequest {
            table_ids,
            serializable: false,
        };
        self.etcd
            .call(true, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).get_routes(request).await?.into_inner()) }
            })
            .await
    }

    /// Procedures (DDL runs), optionally only those in one state (a read, retried).
    pub async fn list_procedures(
        &self,
        request: ListProceduresRequest,
    ) -> Result<ListProceduresResponse, ClientError> {
        self.etcd
            .call(true, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).list_procedures(request).await?.into_inner()) }
            })
            .await
    }

    /// One procedure by id, e.g. the `procedure_id` of a [`DdlResponse`] (a read, retried). An
    /// unknown id is a `NotFound` status.
    pub async fn get_procedure(&self, id: u64) -> Result<ProcedureView, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch)
                    .get_procedure(GetProcedureRequest { id })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// The metadata store's current revision, from a linearizable read (the cheapest one:
    /// one database of the default catalog). A metadata watch from `revision + 1` sees every
    /// change after this moment.
    pub async fn metadata_revision(&self) -> Result<i64, ClientError> {
        let page = self
            .list_databases(ListDatabasesRequest {
                catalog: String::new(),
                page_size: 1,
                page_token: String::new(),
                serializable: false,
            })
            .await?;
        Ok(page.revision)
    }
}
