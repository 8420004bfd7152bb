//! The gRPC services on the client port, one file each, and their tonic wrappers with our
//! message-size bounds.

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod election;
pub mod heartbeat;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod node_registry;
pub mod queue;
pub mod stream;
pub mod watch;

use crate::api::services::heartbeat::HeartbeatService;
use crate::leader::node::Node;
use cairn_proto::cairnpb::admin_server::AdminServer;
use cairn_proto::cairnpb::heartbeat_server::HeartbeatServer;
use cairn_proto::cairnpb::meta_server::MetaServer;
use cairn_proto::cairnpb::node_registry_server::NodeRegistryServer;
use cairn_proto::etcdserverpb::auth_server::AuthServer;
use cairn_proto::etcdserverpb::cluster_server::ClusterServer;
use cairn_proto::etcdserverpb::kv_server::KvServer;
use cairn_proto::etcdserverpb::lease_server::LeaseServer;
use cairn_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use cairn_proto::etcdserverpb::watch_server::WatchServer;
use cairn_proto::v3electionpb::election_server::ElectionServer;
use cairn_proto::v3lockpb::lock_server::LockServer;
use std::sync::Arc;

macro_rules! bounded {
    ($server:ident, $svc:expr, $max:expr) => {
        $server::new($svc)
            .max_decoding_message_size($max)
            .max_encoding_message_size(usize::MAX / 2)
    };
}

pub fn kv_server(node: Arc<Node>, max: usize) -> KvServer<kv::KvService> {
    bounded!(KvServer, kv::KvService::new(node), max)
}

pub fn watch_server(node: Arc<Node>, max: usize) -> WatchServer<watch::WatchService> {
    bounded!(WatchServer, watch::WatchService::new(node), max)
}

pub fn lease_server(node: Arc<Node>, max: usize) -> LeaseServer<lease::LeaseService> {
    bounded!(LeaseServer, lease::LeaseService::new(node), max)
}

pub fn cluster_server(node: Arc<Node>, max: usize) -> ClusterServer<cluster::ClusterService> {
    bounded!(ClusterServer, cluster::ClusterService::new(node), max)
}

pub fn maintenance_server(
    node: Arc<Node>,
    max: usize,
) -> MaintenanceServer<maintenance::MaintenanceService> {
    bounded!(
        MaintenanceServer,
        maintenance::MaintenanceService::new(node),
        max
    )
}

pub fn admin_server(node: Arc<Node>, max: usize) -> AdminServer<admin::AdminService> {
    bounded!(AdminServer, admin::AdminService::new(node), max)
}

pub fn election_server(node: Arc<Node>, max: usize) -> ElectionServer<election::ElectionService> {
    bounded!(ElectionServer, election::ElectionService::new(node), max)
}

pub fn lock_server(node: Arc<Node>, max: usize) -> LockServer<lock::LockService> {
    bounded!(LockServer, lock::LockService::new(node), max)
}

pub fn heartbeat_server(node: Arc<Node>, max: usize) -> HeartbeatServer<HeartbeatService> {
    bounded!(HeartbeatServer, HeartbeatService::new(node), max)
}

pub fn node_registry_server(
    node: Arc<Node>,
    max: usize,
) -> NodeRegistryServer<node_registry::NodeRegistryService> {
    bounded!(
        NodeRegistryServer,
        node_registry::NodeRegistryService::new(node),
        max
    )
}

pub fn meta_server(
    node: Arc<Node>,
    max: usize,
) -> MetaServer<crate::api::meta::service::MetaService> {
    bounded!(
        MetaServer,
        crate::api::meta::service::MetaService::new(node),
        max
    )
}

pub fn auth_server(node: Arc<Node>, max: usize) -> AuthServer<auth::AuthService> {
    bounded!(AuthServer, auth::AuthService::new(node.clone()), max)
}
