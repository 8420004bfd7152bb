//! `cairn.v1.Meta` on the client port. Thin: DDL goes to the leader (forwarded by a follower, one
//! hop) where it runs as a procedure; reads are served by the node asked.

use super::read;
use super::watch as meta_watch;
use crate::errors;
use crate::leader::procedure;
use crate::replica::node::Node;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::cairnpb::meta_server::Meta;
use cairn_proto::cairnpb::*;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

/// A DDL request as it travels to the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ddl {
    CreateDatabase,
    DropDatabase,
    CreateTable,
    DropTable,
    AlterTable,
    TruncateTable,
}

/// Runs a DDL request on this node, which leads; `body` is the prost-encoded request and the
/// answer a prost-encoded `DdlResponse`.
pub async fn serve_ddl(node: &Arc<Node>, ddl: Ddl, body: &[u8]) -> Result<Vec<u8>, Status> {
    fn decode<M: Message + Default>(b: &[u8]) -> Result<M, Status> {
        M::decode(b).map_err(|e| Status::invalid_argument(format!("undecodable request: {e}")))
    }
    let resp = match ddl {
        Ddl::CreateDatabase => procedure::database::create(node, decode(body)?).await,
        Ddl::DropDatabase => procedure::database::drop(node, decode(body)?).await,
        Ddl::CreateTable => procedure::create_table::run(node, decode(body)?).await,
        Ddl::DropTable => procedure::drop_table::run(node, decode(body)?).await,
        Ddl::AlterTable => procedure::alter_table::run(node, decode(body)?).await,
        Ddl::TruncateTable => procedure::truncate_table::run(node, decode(body)?).await,
    }?;
    Ok(resp.encode_to_vec())
}

/// [`serve_ddl`] as a boxed future: a procedure calls back into the leader path (read
/// barriers), and the compiler cannot prove a recursive future `Send` unless it is boxed.
pub fn serve_ddl_boxed(
    node: Arc<Node>,
    ddl: Ddl,
    body: Vec<u8>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, Status>> + Send>> {
    Box::pin(async move { serve_ddl(&node, ddl, &body).await })
}

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
}
