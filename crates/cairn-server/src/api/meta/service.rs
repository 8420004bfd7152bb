//! `cairn.v1.Meta` on the client port. Thin: DDL goes to the leader (forwarded by a follower, one
//! hop) where it runs as a procedure; reads are served by the node asked.

use super::read;
use super::scheduling;
use super::watch as meta_watch;
use crate::errors;
use crate::leader::node::Node;
pub use crate::replica::peer_request::Ddl;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::cairnpb::meta_server::Meta;
use cairn_proto::cairnpb::*;
use prost::Message;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

/// The Meta service of one node.
pub struct MetaService {
    node: Arc<Node>,
    watches: Arc<Semaphore>,
}

impl MetaService {
    pub fn new(node: Arc<Node>) -> Self {
        Self {
            node,
            watches: Arc::new(Semaphore::new(meta_watch::METADATA_WATCH_STREAMS_MAX)),
        }
    }

    async fn ddl<M: Message>(
        &self,
        method: &'static str,
        ddl: Ddl,
        req: Request<M>,
    ) -> Result<Response<DdlResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track(method, async {
                let body = req.into_inner().encode_to_vec();
                crate::api::services::kv::check_size(node, body.len())?;
                match node.leader_call(LeaderRequest::Meta { ddl, body }).await? {
                    LeaderResponse::Meta(bytes) => DdlResponse::decode(bytes.as_slice())
                        .map(Response::new)
                        .map_err(errors::internal),
                    other => Err(errors::internal(format!("unexpected answer {other:?}"))),
                }
            })
            .await
    }
}

#[tonic::async_trait]
impl Meta for MetaService {
    async fn create_database(
        &self,
        r: Request<CreateDatabaseRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("CreateDatabase", Ddl::CreateDatabase, r).await
    }

    async fn drop_database(
        &self,
        r: Request<DropDatabaseRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("DropDatabase", Ddl::DropDatabase, r).await
    }

    async fn list_databases(
        &self,
        r: Request<ListDatabasesRequest>,
    ) -> Result<Response<ListDatabasesResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("ListDatabases", async {
                read::list_databases(node, &r.into_inner())
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn create_table(
        &self,
        r: Request<CreateTableRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("CreateTable", Ddl::CreateTable, r).await
    }

    async fn drop_table(
        &self,
        r: Request<DropTableRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("DropTable", Ddl::DropTable, r).await
    }

    async fn alter_table(
        &self,
        r: Request<AlterTableRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("AlterTable", Ddl::AlterTable, r).await
    }

    async fn truncate_table(
        &self,
        r: Request<TruncateTableRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("TruncateTable", Ddl::TruncateTable, r).await
    }

    async fn describe_table(
        &self,
        r: Request<DescribeTableRequest>,
    ) -> Result<Response<DescribeTableResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("DescribeTable", async {
                read::describe_table(node, &r.into_inner())
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn list_tables(
        &self,
        r: Request<ListTablesRequest>,
    ) -> Result<Response<ListTablesResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("ListTables", async {
                read::list_tables(node, &r.into_inner())
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn get_routes(
        &self,
        r: Request<GetRoutesRequest>,
    ) -> Result<Response<GetRoutesResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("GetRoutes", async {
                read::get_routes(node, &r.into_inner())
                    .await
                    .map(Response::new)
            })
            .await
    }

    type WatchMetadataStream =
        tokio_stream::wrappers::ReceiverStream<Result<WatchMetadataResponse, Status>>;

    async fn watch_metadata(
        &self,
        r: Request<WatchMetadataRequest>,
    ) -> Result<Response<Self::WatchMetadataStream>, Status> {
        let req = r.into_inner();
        if req.start_revision < 0 {
            return Err(Status::invalid_argument(
                "start_revision: must not be negative",
            ));
        }
        let permit = self
            .watches
            .clone()
            .try_acquire_owned()
            .map_err(|_| errors::too_many_requests("metadata_watch_streams_max reached"))?;
        let rx = meta_watch::start(self.node.clone(), req.start_revision, permit);
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn list_procedures(
        &self,
        r: Request<ListProceduresRequest>,
    ) -> Result<Response<ListProceduresResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("ListProcedures", async {
                read::list_procedures(node, &r.into_inner())
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn migrate_region(
        &self,
        r: Request<MigrateRegionRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("MigrateRegion", Ddl::MigrateRegion, r).await
    }

    async fn get_region(
        &self,
        r: Request<GetRegionRequest>,
    ) -> Result<Response<RegionView>, Status> {
        let node = &self.node;
        node.metrics
            .track("GetRegion", async {
                read::get_region(node, r.into_inner().region_id)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn set_maintenance(
        &self,
        r: Request<SetMaintenanceRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("SetMaintenance", Ddl::SetMaintenance, r).await
    }

    async fn drain_node(
        &self,
        r: Request<DrainNodeRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("DrainNode", Ddl::DrainNode, r).await
    }

    async fn list_events(
        &self,
        r: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("ListEvents", async {
                read::list_events(node, &r.into_inner())
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn get_maintenance(
        &self,
        r: Request<GetMaintenanceRequest>,
    ) -> Result<Response<MaintenanceState>, Status> {
        let node = &self.node;
        node.metrics
            .track("GetMaintenance", async {
                read::get_maintenance(node, r.into_inner().serializable)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn get_procedure(
        &self,
        r: Request<GetProcedureRequest>,
    ) -> Result<Response<ProcedureView>, Status> {
        let node = &self.node;
        node.metrics
            .track("GetProcedure", async {
                read::get_procedure(node, r.into_inner().id)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn list_schedulers(
        &self,
        r: Request<ListSchedulersRequest>,
    ) -> Result<Response<ListSchedulersResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("ListSchedulers", async {
                scheduling::list_schedulers(node, r.into_inner().serializable)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn set_scheduler(
        &self,
        r: Request<SetSchedulerRequest>,
    ) -> Result<Response<DdlResponse>, Status> {
        self.ddl("SetScheduler", Ddl::SetScheduler, r).await
    }

    async fn plan_schedule(
        &self,
        _r: Request<PlanScheduleRequest>,
    ) -> Result<Response<ListOperatorsResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("PlanSchedule", async {
                scheduling::plan(node).await.map(Response::new)
            })
            .await
    }

    async fn list_operators(
        &self,
        r: Request<ListOperatorsRequest>,
    ) -> Result<Response<ListOperatorsResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("ListOperators", async {
                scheduling::list_operators(node, r.into_inner().finished)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn get_operator(
        &self,
        r: Request<GetOperatorRequest>,
    ) -> Result<Response<OperatorView>, Status> {
        let node = &self.node;
        node.metrics
            .track("GetOperator", async {
                scheduling::get_operator(node, r.into_inner().id)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn cancel_operator(
        &self,
        r: Request<CancelOperatorRequest>,
    ) -> Result<Response<OperatorView>, Status> {
        let node = &self.node;
        node.metrics
            .track("CancelOperator", async {
                scheduling::cancel_operator(node, r.into_inner().id)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn get_node_stats(
        &self,
        r: Request<GetNodeStatsRequest>,
    ) -> Result<Response<NodeStatsHistory>, Status> {
        let node = &self.node;
        node.metrics
            .track("GetNodeStats", async {
                scheduling::node_stats(node, r.into_inner().node_id)
                    .await
                    .map(Response::new)
            })
            .await
    }

    async fn get_region_stats(
        &self,
        r: Request<GetRegionStatsRequest>,
    ) -> Result<Response<RegionStatsHistory>, Status> {
        let node = &self.node;
        node.metrics
            .track("GetRegionStats", async {
                scheduling::region_stats(node, r.into_inner().region_id)
                    .await
                    .map(Response::new)
            })
            .await
    }
}
