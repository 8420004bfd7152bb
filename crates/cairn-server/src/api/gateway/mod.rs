//! etcd's HTTP/JSON gateway on the client port: `POST /v3/…` for every RPC of the etcd API
//! that etcd 3.5's gateway serves, at etcd's paths, plus `GET /version`, `/health`, `/livez`
//! and `/readyz`. The gRPC services answer, called in-process: the gateway only converts
//! (see [`json`]), so leader forwarding, size limits and errors are the gRPC API's.
//!
//! gRPC and the gateway share the port: gRPC's paths are `/package.Service/Method`, the
//! gateway's `/v3/…`, and the server takes HTTP/1.1 as well as HTTP/2.

pub mod json;
mod stream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tonic::Status;

use crate::api::auth;
use crate::api::services::{cluster, election, kv, lease, lock, maintenance, watch};
use crate::leader::node::Node;
use json::Method;

/// Bytes of JSON and base64 a gateway request may take beyond twice `request_bytes_max` (base64
/// is 4/3 of the bytes, field names and quoting the rest).
pub const GATEWAY_BODY_OVERHEAD_BYTES: usize = 64 * 1024;
/// How long `/health` and `/readyz` wait for a linearizable read before answering unhealthy.
pub const HEALTH_READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The etcd services the gateway calls, one of each per node.
pub struct Gateway {
    node: Arc<Node>,
    kv: kv::KvService,
    auth: crate::api::services::auth::AuthService,
    watch: watch::WatchService,
    lease: lease::LeaseService,
    cluster: cluster::ClusterService,
    maintenance: maintenance::MaintenanceService,
    election: election::ElectionService,
    lock: lock::LockService,
    /// Largest body a gateway request may have: twice `request_bytes_max` plus
    /// [`GATEWAY_BODY_OVERHEAD_BYTES`].
    body_max: usize,
}

type Shared = State<Arc<Gateway>>;

/// One unary RPC at its gateway path: the JSON body decoded into the request, the gRPC
/// service's method called, its answer encoded.
macro_rules! unary {
    ($router:expr, $path:literal, $rpc:literal, $svc:ident, $call:ident) => {
        $router.route(
            $path,
            post(
                |State(g): Shared, headers: HeaderMap, body: Body| async move {
                    let method = Method::named($rpc);
                    g.unary(&method, &headers, body, |r| async { g.$svc.$call(r).await })
                        .await
                },
            ),
        )
    };
}

/// The gateway's routes, to merge into the client port's router.
pub fn router(node: Arc<Node>) -> Router {
    use cairn_proto::etcdserverpb::auth_server::Auth;
    use cairn_proto::etcdserverpb::cluster_server::Cluster;
    use cairn_proto::etcdserverpb::kv_server::Kv;
    use cairn_proto::etcdserverpb::lease_server::Lease;
    use cairn_proto::etcdserverpb::maintenance_server::Maintenance;
    use cairn_proto::v3electionpb::election_server::Election;
    use cairn_proto::v3lockpb::lock_server::Lock;

    let gw = Arc::new(Gateway {
        body_max: 2 * node.config.request_bytes_max + GATEWAY_BODY_OVERHEAD_BYTES,
        kv: kv::KvService::new(node.clone()),
        auth: crate::api::services::auth::AuthService::new(node.clone()),
        watch: watch::WatchService::new(node.clone()),
        lease: lease::LeaseService::new(node.clone()),
        cluster: cluster::ClusterService::new(node.clone()),
        maintenance: maintenance::MaintenanceService::new(node.clone()),
        election: election::ElectionService::new(node.clone()),
        lock: lock::LockService::new(node.clone()),
        node,
    });
    let r = Router::new();
    let r = unary!(r, "/v3/kv/range", "etcdserverpb.KV.Range", kv, range);
    let r = unary!(r, "/v3/kv/put", "etcdserverpb.KV.Put", kv, put);
    let r = unary!(
        r,
        "/v3/kv/deleterange",
        "etcdserverpb.KV.DeleteRange",
        kv,
        delete_range
    );
    let r = unary!(r, "/v3/kv/txn", "etcdserverpb.KV.Txn", kv, txn);
    let r = unary!(
        r,
        "/v3/kv/compaction",
        "etcdserverpb.KV.Compact",
        kv,
        compact
    );
    let r = unary!(
        r,
        "/v3/lease/grant",
        "etcdserverpb.Lease.LeaseGrant",
        lease,
        lease_grant
    );
    let r = unary!(
        r,
        "/v3/lease/revoke",
        "etcdserverpb.Lease.LeaseRevoke",
        lease,
        lease_revoke
    );
    let r = unary!(
        r,
        "/v3/kv/lease/revoke",
        "etcdserverpb.Lease.LeaseRevoke",
        lease,
        lease_revoke
    );
    let r = unary!(
        r,
        "/v3/lease/timetolive",
        "etcdserverpb.Lease.LeaseTimeToLive",
        lease,
        lease_time_to_live
    );
    let r = unary!(
        r,
        "/v3/kv/lease/timetolive",
        "etcdserverpb.Lease.LeaseTimeToLive",
        lease,
        lease_time_to_live
    );
    let r = unary!(
        r,
        "/v3/lease/leases",
        "etcdserverpb.Lease.LeaseLeases",
        lease,
        lease_leases
    );
    let r = unary!(
        r,
        "/v3/kv/lease/leases",
        "etcdserverpb.Lease.LeaseLeases",
        lease,
        lease_leases
    );
    let r = unary!(
        r,
        "/v3/cluster/member/add",
        "etcdserverpb.Cluster.MemberAdd",
        cluster,
        member_add
    );
    let r = unary!(
        r,
        "/v3/cluster/member/remove",
        "etcdserverpb.Cluster.MemberRemove",
        cluster,
        member_remove
    );
    let r = unary!(
        r,
        "/v3/cluster/member/update",
        "etcdserverpb.Cluster.MemberUpdate",
        cluster,
        member_update
    );
    let r = unary!(
        r,
        "/v3/cluster/member/list",
        "etcdserverpb.Cluster.MemberList",
        cluster,
        member_list
    );
    let r = unary!(
        r,
        "/v3/cluster/member/promote",
        "etcdserverpb.Cluster.MemberPromote",
        cluster,
        member_promote
    );
    let r = unary!(
        r,
        "/v3/maintenance/alarm",
        "etcdserverpb.Maintenance.Alarm",
        maintenance,
        alarm
    );
    let r = unary!(
        r,
        "/v3/maintenance/status",
        "etcdserverpb.Maintenance.Status",
        maintenance,
        status
    );
    let r = unary!(
        r,
        "/v3/maintenance/defragment",
        "etcdserverpb.Maintenance.Defragment",
        maintenance,
        defragment
    );
    // etcd maps Hash and HashKV to the same path, and Hash answers it.
    let r = unary!(
        r,
        "/v3/maintenance/hash",
        "etcdserverpb.Maintenance.Hash",
        maintenance,
        hash
    );
    let r = unary!(
        r,
        "/v3/maintenance/transfer-leadership",
        "etcdserverpb.Maintenance.MoveLeader",
        maintenance,
        move_leader
    );
    let r = unary!(
        r,
        "/v3/election/campaign",
        "v3electionpb.Election.Campaign",
        election,
        campaign
    );
    let r = unary!(
        r,
        "/v3/election/proclaim",
        "v3electionpb.Election.Proclaim",
        election,
        proclaim
    );
    let r = unary!(
        r,
        "/v3/election/leader",
        "v3electionpb.Election.Leader",
        election,
        leader
    );
    let r = unary!(
        r,
        "/v3/election/resign",
        "v3electionpb.Election.Resign",
        election,
        resign
    );
    let r = unary!(
        r,
        "/v3/auth/enable",
        "etcdserverpb.Auth.AuthEnable",
        auth,
        auth_enable
    );
    let r = unary!(
        r,
        "/v3/auth/disable",
        "etcdserverpb.Auth.AuthDisable",
        auth,
        auth_disable
    );
    let r = unary!(
        r,
        "/v3/auth/status",
        "etcdserverpb.Auth.AuthStatus",
        auth,
        auth_status
    );
    let r = unary!(
        r,
        "/v3/auth/authenticate",
        "etcdserverpb.Auth.Authenticate",
        auth,
        authenticate
    );
    let r = unary!(
        r,
        "/v3/auth/user/add",
        "etcdserverpb.Auth.UserAdd",
        auth,
        user_add
    );
    let r = unary!(
        r,
        "/v3/auth/user/get",
        "etcdserverpb.Auth.UserGet",
        auth,
        user_get
    );
    let r = unary!(
        r,
        "/v3/auth/user/list",
        "etcdserverpb.Auth.UserList",
        auth,
        user_list
    );
    let r = unary!(
        r,
        "/v3/auth/user/delete",
        "etcdserverpb.Auth.UserDelete",
        auth,
        user_delete
    );
    let r = unary!(
        r,
        "/v3/auth/user/changepw",
        "etcdserverpb.Auth.UserChangePassword",
        auth,
        user_change_password
    );
    let r = unary!(
        r,
        "/v3/auth/user/grant",
        "etcdserverpb.Auth.UserGrantRole",
        auth,
        user_grant_role
    );
    let r = unary!(
        r,
        "/v3/auth/user/revoke",
        "etcdserverpb.Auth.UserRevokeRole",
        auth,
        user_revoke_role
    );
    let r = unary!(
        r,
        "/v3/auth/role/add",
        "etcdserverpb.Auth.RoleAdd",
        auth,
        role_add
    );
    let r = unary!(
        r,
        "/v3/auth/role/get",
        "etcdserverpb.Auth.RoleGet",
        auth,
        role_get
    );
    let r = unary!(
        r,
        "/v3/auth/role/list",
        "etcdserverpb.Auth.RoleList",
        auth,
        role_list
    );
    let r = unary!(
        r,
        "/v3/auth/role/delete",
        "etcdserverpb.Auth.RoleDelete",
        auth,
        role_delete
    );
    let r = unary!(
        r,
        "/v3/auth/role/grant",
        "etcdserverpb.Auth.RoleGrantPermission",
        auth,
        role_grant_permission
    );
    let r = unary!(
        r,
        "/v3/auth/role/revoke",
        "etcdserverpb.Auth.RoleRevokePermission",
        auth,
        role_revoke_permission
    );
    let r = unary!(r, "/v3/lock/lock", "v3lockpb.Lock.Lock", lock, lock);
    let r = unary!(r, "/v3/lock/unlock", "v3lockpb.Lock.Unlock", lock, unlock);
    r.route("/v3/watch", post(stream::watch))
        .route("/v3/lease/keepalive", post(stream::keep_alive))
        .route("/v3/election/observe", post(stream::observe))
        .route("/v3/maintenance/snapshot", post(stream::snapshot))
        .route("/v3/{*rest}", post(not_found))
        .route("/version", get(version))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .layer(axum::middleware::map_response(cors))
        .with_state(gw)
}

impl Gateway {
    /// Reads a request body of at most `body_max` bytes.
    async fn read_body(&self, body: Body) -> Result<Vec<u8>, Status> {
        use futures::StreamExt;
        let mut chunks = body.into_data_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| Status::cancelled(format!("reading the body: {e}")))?;
            if buf.len() + chunk.len() > self.body_max {
                return Err(self.too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    fn too_large(&self) -> Status {
        Status::invalid_argument(format!(
            "etcdserver: request is too large (a gateway body over {} bytes)",
            self.body_max
        ))
    }

    /// One unary call: decode, size check, call, encode.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        method: &Method,
        headers: &HeaderMap,
        body: Body,
        call: F,
    ) -> Response
    where
        Req: prost::Message + Default,
        Resp: prost::Message,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let result = async {
            let bytes = self.read_body(body).await?;
            let req: Req = method.decode(&bytes)?;
            kv::check_size(&self.node, req.encoded_len())?;
            let resp = call(self.request(method, headers, req)?).await?;
            method.encode(resp.get_ref())
        }
        .await;
        match result {
            Ok(body) => json::json_response(StatusCode::OK, body),
            Err(status) => json::error_response(&status),
        }
    }
}

impl Gateway {
    /// A gRPC request carrying the HTTP request's credentials as etcd's gateway passes them
    /// (the `Authorization` header, and a `token` header, become metadata of the same name),
    /// admitted as the gRPC call would be ([`crate::api::auth`]): the in-process call skips
    /// the interceptor, so the gateway runs the same check.
    fn request<T>(
        &self,
        method: &Method,
        headers: &HeaderMap,
        msg: T,
    ) -> Result<tonic::Request<T>, Status> {
        let mut req = tonic::Request::new(msg);
        for name in ["authorization", "token"] {
            if let Some(v) = headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                req.metadata_mut().insert(name, v);
            }
        }
        let need = auth::access(&method.service, &method.method);
        if let Some(caller) = auth::admit(&self.node, req.metadata(), need)? {
            req.extensions_mut().insert(caller);
        }
        Ok(req)
    }
}

/// etcd's gateway headers on every answer.
async fn cors(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("accept, content-type, authorization"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST, GET, OPTIONS, PUT, DELETE"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    resp
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found\n").into_response()
}

async fn version() -> Response {
    let v = maintenance::ETCD_API_VERSION;
    json::json_response(
        StatusCode::OK,
        format!("{{\"etcdserver\":\"{v}\",\"etcdcluster\":\"{v}\"}}").into_bytes(),
    )
}

/// Why the node cannot serve a linearizable read now, or `None`.
async fn unready(node: &Node) -> Option<String> {
    if let Some(reason) = crate::api::http::unhealthy_reason(node) {
        return Some(reason);
    }
    // As etcd's /health: a raised alarm makes a member unhealthy.
    if let Some(a) = maintenance::alarms(node).first() {
        return Some(format!("ALARM {}", maintenance::alarm_name(a.alarm)));
    }
    match tokio::time::timeout(HEALTH_READ_TIMEOUT, node.read_barrier()).await {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(format!("linearizable read failed: {}", e.message())),
        Err(_) => Some(format!(
            "linearizable read took over {} ms",
            HEALTH_READ_TIMEOUT.as_millis()
        )),
    }
}

/// etcd's `/health`: `{"health":"true","reason":""}`, or 503 with the reason.
async fn health(State(g): Shared) -> Response {
    let (code, healthy, reason) = match unready(&g.node).await {
        None => (StatusCode::OK, "true", String::new()),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, "false", r),
    };
    let body = format!(
        "{{\"health\":\"{healthy}\",\"reason\":{}}}",
        serde_json::Value::String(reason)
    );
    (code, body).into_response()
}

/// `/livez`: the process serves requests.
async fn livez() -> Response {
    (StatusCode::OK, "ok").into_response()
}

/// `/readyz`: the node has a leader, is caught up and can serve a linearizable read.
async fn readyz(State(g): Shared) -> Response {
    match unready(&g.node).await {
        None => (StatusCode::OK, "ok").into_response(),
        Some(r) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {r}")).into_response(),
    }
}
