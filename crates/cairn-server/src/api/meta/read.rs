//! The read side of metadata: describe, list, routes and procedures, served by whichever node is
//! asked, from its applied state (after a read barrier unless the request is serializable).

use crate::leader::heartbeat::record::{node_key, NodeRecord};
use crate::leader::node::Node;
use crate::replica::meta::convert;
use crate::replica::meta::store::{self, layout, meta_status};
use cairn_meta::{codec, DatabaseInfo, ProcedureRecord, TableInfo, TableRoute};
use cairn_proto::cairnpb::{
    DescribeTableRequest, DescribeTableResponse, GetRoutesRequest, GetRoutesResponse,
    ListDatabasesRequest, ListDatabasesResponse, ListProceduresRequest, ListProceduresResponse,
    ListTablesRequest, ListTablesResponse, NodeAddress, ProcedureView, RegionView,
};
use std::collections::BTreeSet;
use tonic::{Code, Status};

/// Tables one GetRoutes call may name.
pub const ROUTE_TABLES_PER_REQUEST_MAX: usize = 1_000;
/// Page size when the request names none.
pub const LIST_PAGE_SIZE_DEFAULT: u32 = 100;
/// Largest page a list call returns.
pub const LIST_PAGE_SIZE_MAX: u32 = 1_000;
/// Procedures ListProcedures returns when the request names no limit.
pub const PROCEDURE_LIST_DEFAULT: u32 = 100;
/// Most procedures one ListProcedures returns.
pub const PROCEDURE_LIST_MAX: u32 = 1_000;

async fn barrier(node: &Node, serializable: bool) -> Result<(), Status> {
    if !serializable {
        node.read_barrier().await?;
    }
    Ok(())
}

fn page_size(field: &str, requested: u32) -> Result<usize, Status> {
    match requested {
        0 => Ok(LIST_PAGE_SIZE_DEFAULT as usize),
        n if n > LIST_PAGE_SIZE_MAX => Err(Status::invalid_argument(format!(
            "{field}: {n} is above the limit (list_page_size_max) of {LIST_PAGE_SIZE_MAX}"
        ))),
        n => Ok(n as usize),
    }
}

pub async fn describe_table(
    node: &Node,
    req: &DescribeTableRequest,
) -> Result<DescribeTableResponse, Status> {
    let name =
        convert::table_name_from_proto("name", req.name.as_ref()).map_err(|e| meta_status(&e))?;
    barrier(node, req.serializable).await?;
    let revision = node.revision();
    let id = store::get::<u64>(node, &layout().table_name(&name))?
        .ok_or_else(|| Status::new(Code::NotFound, format!("table {name} not found")))?;
    let table = store::get::<TableInfo>(node, &layout().table(id.value))?
        .ok_or_else(|| Status::new(Code::NotFound, format!("table {name} not found")))?;
    let route = store::get::<TableRoute>(node, &layout().route(id.value))?;
    Ok(DescribeTableResponse {
        table: Some(convert::table_info_to_proto(&table.value)),
        route: route.map(|r| convert::route_to_proto(&r.value)),
        revision,
    })
}

pub async fn list_tables(
    node: &Node,
    req: &ListTablesRequest,
) -> Result<ListTablesResponse, Status> {
    let catalog = crate::leader::procedure::database::catalog_or_default(&req.catalog);
    cairn_meta::names::validate_name("schema", &req.schema).map_err(|e| meta_status(&e))?;
    let limit = page_size("page_size", req.page_size)?;
    barrier(node, req.serializable).await?;
    let prefix = layout().table_names_prefix(&catalog, &req.schema);
    let after = (!req.page_token.is_empty()).then(|| format!("{prefix}{}", req.page_token));
    let (kvs, revision) = store::scan(node, &prefix, after.as_deref(), limit + 1, false)?;
    let more = kvs.len() > limit;
    let mut tables = Vec::with_capacity(limit.min(kvs.len()));
    let mut last = String::new();
    for kv in kvs.into_iter().take(limit) {
        let id = codec::decode_table_id(&kv.key, &kv.value).map_err(|e| meta_status(&e))?;
        if let Some(t) = store::get::<TableInfo>(node, &layout().table(id))? {
            last = t.value.name.name.clone();
            tables.push(convert::table_info_to_proto(&t.value));
        }
    }
    Ok(ListTablesResponse {
        tables,
        next_page_token: if more { last } else { String::new() },
        revision,
    })
}

pub async fn list_databases(
    node: &Node,
    req: &ListDatabasesRequest,
) -> Result<ListDatabasesResponse, Status> {
    let catalog = crate::leader::procedure::database::catalog_or_default(&req.catalog);
    cairn_meta::names::validate_name("catalog", &catalog).map_err(|e| meta_status(&e))?;
    let limit = page_size("page_size", req.page_size)?;
    barrier(node, req.serializable).await?;
    let prefix = layout().databases_prefix(&catalog);
    let after = (!req.page_token.is_empty()).then(|| format!("{prefix}{}", req.page_token));
    let (kvs, revision) = store::scan(node, &prefix, after.as_deref(), limit + 1, false)?;
    let more = kvs.len() > limit;
    let mut databases = Vec::new();
    let mut last = String::new();
    for kv in kvs.into_iter().take(limit) {
        let info: DatabaseInfo = codec::decode(&kv.key, &kv.value).map_err(|e| meta_status(&e))?;
        last = info.name.clone();
        databases.push(convert::database_to_proto(&info));
    }
    Ok(ListDatabasesResponse {
        databases,
        next_page_token: if more { last } else { String::new() },
        revision,
    })
}

pub async fn get_routes(node: &Node, req: &GetRoutesRequest) -> Result<GetRoutesResponse, Status> {
    if req.table_ids.len() > ROUTE_TABLES_PER_REQUEST_MAX {
        return Err(Status::invalid_argument(format!(
            "table_ids: {} tables, the limit (route_tables_per_request_max) is {ROUTE_TABLES_PER_REQUEST_MAX}",
            req.table_ids.len()
        )));
    }
    barrier(node, req.serializable).await?;
    let mut routes = Vec::with_capacity(req.table_ids.len());
    let mut missing = Vec::new();
    let mut nodes = BTreeSet::new();
    let revision = {
        let state = node.sm.read();
        for id in &req.table_ids {
            let key = layout().route(*id);
            let r = cairn_proto::etcdserverpb::RangeRequest {
                key: key.as_bytes().to_vec(),
                serializable: true,
                ..Default::default()
            };
            let kv = state.kv.range(&r).map_err(|e| e.to_status())?.kvs.pop();
            match kv {
                Some(kv) => {
                    let route: TableRoute =
                        codec::decode(&kv.key, &kv.value).map_err(|e| meta_status(&e))?;
                    nodes.extend(route.nodes());
                    routes.push(convert::route_to_proto(&route));
                }
                None => missing.push(*id),
            }
        }
        state.kv.revision()
    };
    let mut addresses = Vec::with_capacity(nodes.len());
    for id in nodes {
        let address = match store::get_raw(node, &node_key(id))? {
            Some(kv) => NodeRecord::from_json(&kv.value)
                .map(|r| r.address)
                .unwrap_or_default(),
            None => String::new(),
        };
        addresses.push(NodeAddress {
            node_id: id,
            address,
        });
    }
    Ok(GetRoutesResponse {
        routes,
        missing_table_ids: missing,
        nodes: addresses,
        revision,
    })
}

pub async fn list_procedures(
    node: &Node,
    req: &ListProceduresRequest,
) -> Result<ListProceduresResponse, Status> {
    let limit = match req.limit {
        0 => PROCEDURE_LIST_DEFAULT,
        n if n > PROCEDURE_LIST_MAX => {
            return Err(Status::invalid_argument(format!(
                "limit: {n} is above the limit (procedure_list_max) of {PROCEDURE_LIST_MAX}"
            )))
        }
        n => n,
    } as usize;
    if !matches!(req.state.as_str(), "" | "running" | "done" | "failed") {
        return Err(Status::invalid_argument(format!(
            "state: {:?} is not one of running, done, failed",
            req.state
        )));
    }
    node.read_barrier().await?;
    // Newest first: walk the (id-ordered) records backwards in pages.
    let prefix = layout().procedures_prefix();
    let mut all: Vec<ProcedureView> = Vec::new();
    store::scan_all(node, &prefix, |kv| {
        let r: ProcedureRecord = codec::decode(&kv.key, &kv.value).map_err(|e| meta_status(&e))?;
        if req.state.is_empty() || r.state.as_str() == req.state {
            all.push(convert::procedure_to_proto(&r));
        }
        Ok(())
    })?;
    all.reverse();
    all.truncate(limit);
    Ok(ListProceduresResponse { procedures: all })
}

pub async fn get_procedure(node: &Node, id: u64) -> Result<ProcedureView, Status> {
    node.read_barrier().await?;
    let r = store::get::<ProcedureRecord>(node, &layout().procedure(id))?
        .ok_or_else(|| Status::new(Code::NotFound, format!("procedure {id} not found")))?;
    Ok(convert::procedure_to_proto(&r.value))
}

/// Where a region is (`GetRegion`), from the leader: only it knows the region's lease.
pub async fn get_region(node: &Node, region_id: u64) -> Result<RegionView, Status> {
    if region_id == 0 {
        return Err(Status::invalid_argument("region_id: must be set"));
    }
    match node
        .leader_call(crate::replica::peer_request::LeaderRequest::GetRegion { region_id })
        .await?
    {
        crate::replica::peer_request::LeaderResponse::Region(bytes) => {
            prost::Message::decode(bytes.as_slice()).map_err(crate::errors::internal)
        }
        other => Err(crate::errors::internal(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// Whether the cluster is in maintenance mode (`GetMaintenance`), from this node's state.
pub async fn get_maintenance(
    node: &Node,
    serializable: bool,
) -> Result<cairn_proto::cairnpb::MaintenanceState, Status> {
    if !serializable {
        node.read_barrier().await?;
    }
    let m = crate::leader::procedure::maintenance::current(node)?;
    Ok(cairn_proto::cairnpb::MaintenanceState {
        on: m.on,
        reason: m.reason,
        since_ms: m.since_ms,
        revision: node.revision(),
    })
}

/// Events ListEvents returns when the request names no limit.
pub const EVENT_LIST_DEFAULT: u32 = 100;
/// Most events one ListEvents returns.
pub const EVENT_LIST_MAX: u32 = 1_000;

/// The event log, newest first (`ListEvents`), from this node's state after a read barrier.
pub async fn list_events(
    node: &Node,
    req: &cairn_proto::cairnpb::ListEventsRequest,
) -> Result<cairn_proto::cairnpb::ListEventsResponse, Status> {
    let limit = match req.limit {
        0 => EVENT_LIST_DEFAULT,
        n if n > EVENT_LIST_MAX => {
            return Err(Status::invalid_argument(format!(
                "limit: {n} is above the limit (event_list_max) of {EVENT_LIST_MAX}"
            )))
        }
        n => n,
    } as usize;
    if !req.kind.is_empty() && !cairn_meta::event::EVENT_KINDS.contains(&req.kind.as_str()) {
        return Err(Status::invalid_argument(format!(
            "kind: {:?} is not one of {}",
            req.kind,
            cairn_meta::event::EVENT_KINDS.join(", ")
        )));
    }
    node.read_barrier().await?;
    let mut all = Vec::new();
    store::scan_all(node, &layout().events_prefix(), |kv| {
        let e: cairn_meta::Event =
            codec::decode(&kv.key, &kv.value).map_err(|e| meta_status(&e))?;
        if e.at_ms >= req.since_ms && (req.kind.is_empty() || e.kind == req.kind) {
            all.push(cairn_proto::cairnpb::EventView {
                id: e.id,
                at_ms: e.at_ms,
                kind: e.kind,
                subject: e.subject,
                message: e.message,
                figures: e.figures.into_iter().collect(),
            });
        }
        Ok(())
    })?;
    all.reverse();
    all.truncate(limit);
    Ok(cairn_proto::cairnpb::ListEventsResponse { events: all })
}
