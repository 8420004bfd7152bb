//! DDL on the leader: a request forwarded as [`Ddl`] and a prost-encoded body, decoded and run as
//! its procedure.

use crate::leader::node::Node;
use crate::leader::procedure;
use crate::replica::peer_request::Ddl;
use prost::Message;
use std::sync::Arc;
use tonic::Status;

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
        Ddl::MigrateRegion => procedure::migrate_region::run(node, decode(body)?).await,
        Ddl::SetMaintenance => procedure::maintenance::set_maintenance(node, decode(body)?).await,
        Ddl::DrainNode => procedure::maintenance::drain_node(node, decode(body)?).await,
        Ddl::SetScheduler => procedure::maintenance::set_scheduler(node, decode(body)?).await,
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
