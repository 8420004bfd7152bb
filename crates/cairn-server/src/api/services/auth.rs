//! etcd `Auth` service: users, roles, key permissions, enable/disable, and tokens. Changes go
//! through Raft as [`AuthOp`]s (the password hashed here first, so none is in the log); reads
//! and `Authenticate` answer from this member's state after a read barrier. Who may call what
//! is [`crate::api::auth`].

use crate::api::auth::issue_token;
use crate::leader::node::Node;
use crate::leader::scheduling::cpu_work;
use cairn_proto::authpb::Permission;
use cairn_proto::etcdserverpb::auth_server::Auth;
use cairn_proto::etcdserverpb::*;
use cairn_store::auth::{err, AuthOp, KeyPermission, PasswordHash};
use cairn_store::Command;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Bytes of random salt per password.
const PASSWORD_SALT_BYTES: usize = 16;

/// The etcd Auth service of one node.
pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    async fn change(&self, op: AuthOp) -> Result<Option<ResponseHeader>, Status> {
        let r = self.node.propose(Command::Auth(op)).await?;
        Ok(self.node.header(r.revision))
    }

    /// The auth store as of now (a read barrier first, so a change just made is seen).
    async fn read<T>(
        &self,
        f: impl FnOnce(&cairn_store::auth::AuthState) -> T,
    ) -> Result<T, Status> {
        self.node.read_barrier().await?;
        Ok(f(&self.node.sm.read().cluster.auth))
    }

    fn header(&self) -> Option<ResponseHeader> {
        self.node.header(self.node.revision())
    }
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n.div_ceil(8))
        .flat_map(|_| cairn_store::runtime::random_u64().to_le_bytes())
        .take(n)
        .collect()
}

/// The stored form of a password from a request: etcd's `hashedPassword` (bcrypt) is not
/// taken; a user with `no_password` has none.
fn password(plain: &str, hashed: &str, no_password: bool) -> Result<Option<PasswordHash>, Status> {
    if !hashed.is_empty() {
        return Err(Status::invalid_argument(
            "cairn: hashedPassword (a bcrypt hash) is not supported; send the password itself",
        ));
    }
    if no_password {
        return Ok(None);
    }
    Ok(Some(PasswordHash::new(
        plain,
        random_bytes(PASSWORD_SALT_BYTES),
    )))
}

fn rejected(e: err::AuthError) -> Status {
    Status::new(e.0, e.1)
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(
        &self,
        _r: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        let header = self
            .change(AuthOp::Enable {
                token_key: random_bytes(32),
            })
            .await?;
        Ok(Response::new(AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        _r: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        let header = self.change(AuthOp::Disable).await?;
        Ok(Response::new(AuthDisableResponse { header }))
    }

    async fn auth_status(
        &self,
        _r: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        // etcd's auth revision starts at 1 on a fresh cluster; Cairn's count of changes at 0.
        let (enabled, auth_revision) = self.read(|a| (a.enabled, a.revision + 1)).await?;
        Ok(Response::new(AuthStatusResponse {
            header: self.header(),
            enabled,
            auth_revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let req = request.into_inner();
        let stored = self
            .read(|a| {
                if !a.enabled {
                    return Err(rejected(err::AUTH_NOT_ENABLED));
                }
                Ok(a.users.get(&req.name).and_then(|u| u.password.clone()))
            })
            .await??;
        // The salted hash's rounds run outside the state's lock, on a blocking thread: under the
        // lock they held apply (every write) back for milliseconds per attempt.
        let ok = match stored.clone() {
            Some(hash) => {
                let password = req.password;
                cpu_work(move || Ok(hash.matches(&password))).await?
            }
            None => false,
        };
        // Issued only if the password checked is still the user's (not changed, nor the user
        // dropped and added again, in between).
        let token = {
            let state = self.node.sm.read();
            let a = &state.cluster.auth;
            let current = a.users.get(&req.name).and_then(|u| u.password.as_ref());
            if ok && a.enabled && current == stored.as_ref() {
                issue_token(a, &req.name)
            } else {
                return Err(rejected(err::AUTH_FAILED));
            }
        };
        Ok(Response::new(AuthenticateResponse {
            header: self.header(),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        let req = request.into_inner();
        let no_password = req.options.is_some_and(|o| o.no_password);
        let password = password(&req.password, &req.hashed_password, no_password)?;
        let header = self
            .change(AuthOp::UserAdd {
                name: req.name,
                password,
            })
            .await?;
        Ok(Response::new(AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        let name = request.into_inner().name;
        let roles = self
            .read(|a| {
                a.users
                    .get(&name)
                    .map(|u| u.roles.iter().cloned().collect())
            })
            .await?
            .ok_or_else(|| rejected(err::USER_NOT_FOUND))?;
        Ok(Response::new(AuthUserGetResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn user_list(
        &self,
        _r: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        let users = self.read(|a| a.users.keys().cloned().collect()).await?;
        Ok(Response::new(AuthUserListResponse {
            header: self.header(),
            users,
        }))
    }

    async fn user_delete(
        &self,
        request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let name = request.into_inner().name;
        let header = self.change(AuthOp::UserDelete { name }).await?;
        Ok(Response::new(AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        let req = request.into_inner();
        let password = password(&req.password, &req.hashed_password, false)?;
        let header = self
            .change(AuthOp::UserChangePassword {
                name: req.name,
                password,
            })
            .await?;
        Ok(Response::new(AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let req = request.into_inner();
        let header = self
            .change(AuthOp::UserGrantRole {
                user: req.user,
                role: req.role,
            })
            .await?;
        Ok(Response::new(AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let req = request.into_inner();
        let header = self
            .change(AuthOp::UserRevokeRole {
                user: req.name,
                role: req.role,
            })
            .await?;
        Ok(Response::new(AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        let name = request.into_inner().name;
        let header = self.change(AuthOp::RoleAdd { name }).await?;
        Ok(Response::new(AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        request: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        let role = request.into_inner().role;
        let perm = self
            .read(|a| {
                a.roles.get(&role).map(|perms| {
                    perms
                        .iter()
                        .map(|p| Permission {
                            perm_type: p.perm_type,
                            key: p.key.clone(),
                            range_end: p.range_end.clone(),
                        })
                        .collect()
                })
            })
            .await?
            .ok_or_else(|| rejected(err::ROLE_NOT_FOUND))?;
        Ok(Response::new(AuthRoleGetResponse {
            header: self.header(),
            perm,
        }))
    }

    async fn role_list(
        &self,
        _r: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        let roles = self.read(|a| a.roles.keys().cloned().collect()).await?;
        Ok(Response::new(AuthRoleListResponse {
            header: self.header(),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let name = request.into_inner().role;
        let header = self.change(AuthOp::RoleDelete { name }).await?;
        Ok(Response::new(AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let req = request.into_inner();
        let perm = req
            .perm
            .ok_or_else(|| Status::invalid_argument("etcdserver: permission not given"))?;
        if perm.key.is_empty() {
            return Err(Status::invalid_argument("etcdserver: key is not provided"));
        }
        let header = self
            .change(AuthOp::RoleGrantPermission {
                role: req.name,
                perm: KeyPermission {
                    perm_type: perm.perm_type,
                    key: perm.key,
                    range_end: perm.range_end,
                },
            })
            .await?;
        Ok(Response::new(AuthRoleGrantPermissionResponse { header }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let req = request.into_inner();
        let header = self
            .change(AuthOp::RoleRevokePermission {
                role: req.role,
                key: req.key,
                range_end: req.range_end,
            })
            .await?;
        Ok(Response::new(AuthRoleRevokePermissionResponse { header }))
    }
}
