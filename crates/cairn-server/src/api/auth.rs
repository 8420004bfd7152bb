//! Who may call what, once auth is enabled (etcd's Auth, on every service of the client port).
//!
//! - **Tokens.** `Authenticate` checks a user's password and hands out a token signed with the
//!   cluster's token key (HMAC-SHA256): `cairn.HEXUSER.GENERATION.EXPIRY.HEXMAC`. Every member
//!   can check one without asking the others. A token stops working when it expires
//!   ([`AUTH_TOKEN_TTL_SECS`]), when its user is deleted, and when the password changes (the
//!   user's generation moves). Clients send it as gRPC metadata `token` (etcd's clients) or
//!   `authorization` (the JSON gateway's `Authorization` header).
//! - **What each call needs** ([`access`]): the etcd KV, Watch, Lease, Election and Lock calls
//!   need a valid token, and KV and Watch also need the user's key permissions on the keys they
//!   touch. Membership changes, auth management, compaction, alarms raised by hand, hashes,
//!   snapshots and defragmentation need the `root` role. On Cairn's own services, reads (Get,
//!   List, Describe, Watch, Plan) need the `reader` role. Changes (DDL, maintenance mode,
//!   scheduling, migrations) need `operator`. Heartbeats and registration need `node`, and a
//!   user with the `node` role can heartbeat only as the node of its name (`node-ID`). `root`
//!   may do everything, and `operator` includes `reader` and `node`.
//! - With auth disabled (the default) every call is open, as on etcd.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn_store::auth::{err, AuthState, ROOT};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::leader::node::Node;

/// How long a token is good for after `Authenticate` (etcd's simple tokens: 300 s).
pub const AUTH_TOKEN_TTL_SECS: u64 = 300;
/// Cairn's roles on its own services (besides etcd's `root`).
pub const ROLE_OPERATOR: &str = "operator";
pub const ROLE_READER: &str = "reader";
pub const ROLE_NODE: &str = "node";

/// The caller of a request, once its token checked out (absent while auth is disabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInfo {
    pub user: String,
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (Authenticate, AuthStatus).
    Open,
    /// A valid token; key permissions are checked by the handler.
    Token,
    /// The `root` role.
    Root,
    Operator,
    Reader,
    Node,
}

/// What `service`/`method` needs (gRPC names, as `GrpcMethod` gives them).
pub fn access(service: &str, method: &str) -> Access {
    match (service, method) {
        ("etcdserverpb.Auth", "Authenticate" | "AuthStatus") => Access::Open,
        ("etcdserverpb.Auth", _) => Access::Root,
        ("etcdserverpb.KV", "Compact") => Access::Root,
        ("etcdserverpb.Cluster", "MemberList") => Access::Token,
        ("etcdserverpb.Cluster", _) => Access::Root,
        ("etcdserverpb.Maintenance", "Status" | "Alarm") => Access::Token,
        ("etcdserverpb.Maintenance", _) => Access::Root,
        ("cairn.v1.Admin", "LeaderInfo") => Access::Reader,
        ("cairn.v1.Admin", _) => Access::Root,
        ("cairn.v1.Heartbeat", _) => Access::Node,
        ("cairn.v1.NodeRegistry", _) => Access::Reader,
        ("cairn.v1.Meta", m)
            if ["Get", "List", "Describe", "Watch", "Plan"]
                .iter()
                .any(|p| m.starts_with(p)) =>
        {
            Access::Reader
        }
        ("cairn.v1.Meta", _) => Access::Operator,
        _ => Access::Token,
    }
}

fn status((code, message): err::AuthError) -> Status {
    Status::new(code, message)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A token for `user` as the auth store stands, good for [`AUTH_TOKEN_TTL_SECS`].
pub fn issue_token(auth: &AuthState, user: &str) -> String {
    let generation = auth.users.get(user).map_or(0, |u| u.generation);
    let body = format!(
        "cairn.{}.{generation}.{}",
        hex(user.as_bytes()),
        now_secs() + AUTH_TOKEN_TTL_SECS
    );
    let mac = hmac(&auth.token_key, body.as_bytes());
    format!("{body}.{}", hex(&mac[..16]))
}

/// The user a token names, if it is signed by this cluster, unexpired, and its user still
/// exists with the same password.
pub fn verify_token(auth: &AuthState, token: &str) -> Option<String> {
    let (body, mac) = token.rsplit_once('.')?;
    let expected = hmac(&auth.token_key, body.as_bytes());
    let mac = unhex(mac)?;
    if auth.token_key.is_empty()
        || mac.len() != 16
        || mac
            .iter()
            .zip(&expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return None;
    }
    let mut parts = body.split('.');
    let (Some("cairn"), Some(user), Some(generation), Some(expiry), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let user = String::from_utf8(unhex(user)?).ok()?;
    let generation: u64 = generation.parse().ok()?;
    let expiry: u64 = expiry.parse().ok()?;
    let current = auth.users.get(&user)?;
    (expiry > now_secs() && current.generation == generation).then_some(user)
}

/// Checks a call against the auth store: `Ok(None)` while auth is disabled (or for an open
/// call), `Ok(Some(caller))` when the caller may make it, etcd's error otherwise.
pub fn admit(
    node: &Node,
    metadata: &MetadataMap,
    access: Access,
) -> Result<Option<AuthInfo>, Status> {
    let state = node.sm.read();
    let auth = &state.cluster.auth;
    if !auth.enabled || access == Access::Open {
        return Ok(None);
    }
    let token = metadata
        .get("token")
        .or_else(|| metadata.get("authorization"))
        .and_then(|v| v.to_str().ok())
        .map(|t| t.trim_start_matches("Bearer ").trim());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(status(err::USER_EMPTY));
    };
    let user = verify_token(auth, token).ok_or_else(|| status(err::INVALID_AUTH_TOKEN))?;
    let has = |role: &str| {
        auth.users
            .get(&user)
            .is_some_and(|u| u.roles.contains(role) || u.roles.contains(ROOT))
    };
    let allowed = match access {
        Access::Open | Access::Token => true,
        Access::Root => has(ROOT),
        Access::Operator => has(ROLE_OPERATOR),
        Access::Reader => has(ROLE_READER) || has(ROLE_OPERATOR),
        Access::Node => has(ROLE_NODE) || has(ROLE_OPERATOR),
    };
    if !allowed {
        return Err(status(err::PERMISSION_DENIED));
    }
    Ok(Some(AuthInfo { user }))
}

/// Whether the caller may read (`write` false) or write the keys `[key, range_end)`.
pub fn check_keys(
    node: &Node,
    caller: Option<&AuthInfo>,
    key: &[u8],
    range_end: &[u8],
    write: bool,
) -> Result<(), Status> {
    let Some(caller) = caller else {
        return Ok(());
    };
    let state = node.sm.read();
    if state
        .cluster
        .auth
        .permits(&caller.user, key, range_end, write)
    {
        Ok(())
    } else {
        Err(status(err::PERMISSION_DENIED))
    }
}

/// Whether the caller may heartbeat or register as node `node_id`: `root` and `operator` as any
/// node, a user with only the `node` role as the node its name says (`node-ID`).
pub fn check_node_identity(
    node: &Node,
    caller: Option<&AuthInfo>,
    node_id: u64,
) -> Result<(), Status> {
    let Some(caller) = caller else {
        return Ok(());
    };
    let state = node.sm.read();
    let auth = &state.cluster.auth;
    let privileged = auth
        .users
        .get(&caller.user)
        .is_some_and(|u| u.roles.contains(ROOT) || u.roles.contains(ROLE_OPERATOR));
    if privileged || caller.user == format!("node-{node_id}") {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "etcdserver: permission denied (user {:?} may heartbeat only as its own node, \
             not as node {node_id})",
            caller.user
        )))
    }
}

/// The caller a request was admitted as (put there by [`GrpcAdmissionLayer`] or the gateway).
pub fn caller<T>(request: &tonic::Request<T>) -> Option<AuthInfo> {
    request.extensions().get::<AuthInfo>().cloned()
}

/// Admits a gRPC call of the client port by its path (`/package.Service/Method`) and leaves the
/// caller in the request's extensions (tonic hands them to the handler) for the handlers' key
/// and node checks; a refusal is the gRPC error to answer with, with etcd's code and message.
fn admit_grpc(node: &Node, request: &mut axum::extract::Request) -> Result<(), Status> {
    // With auth off (the default) nothing is parsed or copied on the request path.
    if !node.sm.read().cluster.auth.enabled {
        return Ok(());
    }
    let mut parts = request.uri().path().trim_start_matches('/').splitn(2, '/');
    let need = match (parts.next(), parts.next()) {
        (Some(service), Some(method)) => access(service, method),
        _ => Access::Token,
    };
    let metadata = MetadataMap::from_headers(request.headers().clone());
    if let Some(info) = admit(node, &metadata, need)? {
        request.extensions_mut().insert(info);
    }
    Ok(())
}

type Response = axum::response::Response;

/// The layer in front of every gRPC service of the client port: each call is admitted
/// ([`admit_grpc`]) before the service sees it. A plain service wrapper: an admitted call's
/// future is the service's own, not boxed again and again as a middleware function's would be
/// (on every call, auth on or off).
#[derive(Clone)]
pub struct GrpcAdmissionLayer(pub std::sync::Arc<Node>);

impl<S> tower_layer::Layer<S> for GrpcAdmissionLayer {
    type Service = GrpcAdmission<S>;

    fn layer(&self, inner: S) -> GrpcAdmission<S> {
        GrpcAdmission {
            node: self.0.clone(),
            inner,
        }
    }
}

/// See [`GrpcAdmissionLayer`].
#[derive(Clone)]
pub struct GrpcAdmission<S> {
    node: std::sync::Arc<Node>,
    inner: S,
}

impl<S> tonic::codegen::Service<axum::extract::Request> for GrpcAdmission<S>
where
    S: tonic::codegen::Service<
        axum::extract::Request,
        Response = Response,
        Error = std::convert::Infallible,
    >,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<Result<Response, std::convert::Infallible>>,
    >;

    /// The inner service's readiness (axum's routes are always ready): a refused call does
    /// not reach it, so a service that reserved capacity in `poll_ready` would keep it until the
    /// next call.
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: axum::extract::Request) -> Self::Future {
        match admit_grpc(&self.node, &mut request) {
            Ok(()) => futures::future::Either::Left(self.inner.call(request)),
            Err(status) => {
                let (parts, ()) = status.into_http::<()>().into_parts();
                let refusal = Response::from_parts(parts, axum::body::Body::empty());
                futures::future::Either::Right(std::future::ready(Ok(refusal)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_store::auth::{AuthOp, PasswordHash};

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_stop_working_when_the_user_goes_or_changes_password() {
        let mut a = AuthState::default();
        a.apply(AuthOp::UserAdd {
            name: "u.v".into(),
            password: Some(PasswordHash::new("pw", vec![1; 16])),
        })
        .unwrap();
        a.token_key = vec![9; 32];
        let t = issue_token(&a, "u.v");
        assert_eq!(verify_token(&a, &t).as_deref(), Some("u.v"));
        // Tampered, or signed by another cluster.
        let mut other = a.clone();
        other.token_key = vec![8; 32];
        assert_eq!(verify_token(&other, &t), None);
        assert_eq!(verify_token(&a, &t.replace("cairn.", "cairn.00")), None);
        assert_eq!(verify_token(&a, "garbage"), None);
        a.apply(AuthOp::UserChangePassword {
            name: "u.v".into(),
            password: Some(PasswordHash::new("new", vec![2; 16])),
        })
        .unwrap();
        assert_eq!(verify_token(&a, &t), None, "password changed");
        let t = issue_token(&a, "u.v");
        assert!(verify_token(&a, &t).is_some());
        a.apply(AuthOp::UserDelete { name: "u.v".into() }).unwrap();
        assert_eq!(verify_token(&a, &t), None, "user deleted");
    }

    #[test]
    fn calls_are_classed_by_method() {
        assert_eq!(access("etcdserverpb.Auth", "Authenticate"), Access::Open);
        assert_eq!(access("etcdserverpb.Auth", "UserAdd"), Access::Root);
        assert_eq!(access("etcdserverpb.KV", "Put"), Access::Token);
        assert_eq!(access("etcdserverpb.Cluster", "MemberAdd"), Access::Root);
        assert_eq!(access("etcdserverpb.Cluster", "MemberList"), Access::Token);
        assert_eq!(access("cairn.v1.Meta", "GetRoutes"), Access::Reader);
        assert_eq!(access("cairn.v1.Meta", "CreateTable"), Access::Operator);
        assert_eq!(access("cairn.v1.Heartbeat", "Heartbeat"), Access::Node);
    }
}
