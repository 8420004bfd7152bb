//! etcd's auth store, replicated: users (salted password hashes, roles, and a generation that
//! moves when the password changes, so tokens issued before stop working), roles with their key
//! permissions, the enabled flag, the auth revision, and the key that signs tokens. Changes are
//! [`AuthOp`]s applied in log order; each is checked as etcd checks it and refused with etcd's
//! message. The proposing member hashes passwords, so no password is ever in the log.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Rounds of salted SHA-256 a password goes through before it is stored or compared.
pub const PASSWORD_HASH_ROUNDS: u32 = 10_000;
/// The role that may do everything, as in etcd.
pub const ROOT: &str = "root";

/// etcd's auth errors: the message clients match on, and its gRPC code.
pub mod err {
    use tonic::Code;
    pub type AuthError = (Code, &'static str);
    pub const ROOT_USER_NOT_EXIST: AuthError = (
        Code::FailedPrecondition,
        "etcdserver: root user does not exist",
    );
    pub const ROOT_ROLE_NOT_EXIST: AuthError = (
        Code::FailedPrecondition,
        "etcdserver: root user does not have root role",
    );
    pub const USER_ALREADY_EXIST: AuthError = (
        Code::FailedPrecondition,
        "etcdserver: user name already exists",
    );
    pub const USER_EMPTY: AuthError = (Code::InvalidArgument, "etcdserver: user name is empty");
    pub const USER_NOT_FOUND: AuthError =
        (Code::FailedPrecondition, "etcdserver: user name not found");
    pub const ROLE_ALREADY_EXIST: AuthError = (
        Code::FailedPrecondition,
        "etcdserver: role name already exists",
    );
    pub const ROLE_NOT_FOUND: AuthError =
        (Code::FailedPrecondition, "etcdserver: role name not found");
    pub const ROLE_EMPTY: AuthError = (Code::InvalidArgument, "etcdserver: role name is empty");
    pub const AUTH_FAILED: AuthError = (
        Code::InvalidArgument,
        "etcdserver: authentication failed, invalid user ID or password",
    );
    pub const PERMISSION_DENIED: AuthError =
        (Code::PermissionDenied, "etcdserver: permission denied");
    pub const ROLE_NOT_GRANTED: AuthError = (
        Code::FailedPrecondition,
        "etcdserver: role is not granted to the user",
    );
    pub const PERMISSION_NOT_GRANTED: AuthError = (
        Code::FailedPrecondition,
        "etcdserver: permission is not granted to the role",
    );
    pub const AUTH_NOT_ENABLED: AuthError = (
        Code::FailedPrecondition,
        "etcdserver: authentication is not enabled",
    );
    pub const INVALID_AUTH_TOKEN: AuthError =
        (Code::Unauthenticated, "etcdserver: invalid auth token");
    pub const INVALID_AUTH_MGMT: AuthError = (
        Code::FailedPrecondition,
        "etcdserver: invalid auth management",
    );
}
use err::AuthError;

/// A stored password: a random salt and the salted hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    pub salt: Vec<u8>,
    pub hash: Vec<u8>,
}

impl PasswordHash {
    /// Hashes `password` with `salt` ([`PASSWORD_HASH_ROUNDS`] rounds of SHA-256).
    pub fn new(password: &str, salt: Vec<u8>) -> Self {
        let mut h: [u8; 32] = Sha256::new()
            .chain_update(&salt)
            .chain_update(password.as_bytes())
            .finalize()
            .into();
        for _ in 1..PASSWORD_HASH_ROUNDS {
            h = Sha256::new()
                .chain_update(h)
                .chain_update(&salt)
                .finalize()
                .into();
        }
        PasswordHash {
            salt,
            hash: h.to_vec(),
        }
    }

    /// Whether `password` is the one hashed (compared in constant time).
    pub fn matches(&self, password: &str) -> bool {
        let other = PasswordHash::new(password, self.salt.clone());
        other.hash.len() == self.hash.len()
            && other
                .hash
                .iter()
                .zip(&self.hash)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// One user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthUser {
    /// `None` for a user created with `no_password` (only certificates could name it in etcd;
    /// here it can never authenticate).
    pub password: Option<PasswordHash>,
    pub roles: BTreeSet<String>,
    /// Moves when the password changes: tokens carry it, so older ones stop working.
    pub generation: u64,
}

/// A key or range a role may read (`perm_type` 0), write (1) or both (2), as etcd's
/// `authpb.Permission`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPermission {
    pub perm_type: i32,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

/// The replicated auth store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// Moves with every change, as etcd's auth revision.
    pub revision: u64,
    pub users: BTreeMap<String, AuthUser>,
    pub roles: BTreeMap<String, Vec<KeyPermission>>,
    /// Signs tokens (HMAC-SHA256); chosen by the first AuthEnable's proposer, never shown.
    pub token_key: Vec<u8>,
}

/// One change to the auth store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthOp {
    /// `token_key` is used only when none is set yet.
    Enable {
        token_key: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        password: Option<PasswordHash>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password: Option<PasswordHash>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        perm: KeyPermission,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl AuthOp {
    pub fn name(&self) -> &'static str {
        match self {
            AuthOp::Enable { .. } => "auth_enable",
            AuthOp::Disable => "auth_disable",
            AuthOp::UserAdd { .. } => "user_add",
            AuthOp::UserDelete { .. } => "user_delete",
            AuthOp::UserChangePassword { .. } => "user_change_password",
            AuthOp::UserGrantRole { .. } => "user_grant_role",
            AuthOp::UserRevokeRole { .. } => "user_revoke_role",
            AuthOp::RoleAdd { .. } => "role_add",
            AuthOp::RoleDelete { .. } => "role_delete",
            AuthOp::RoleGrantPermission { .. } => "role_grant_permission",
            AuthOp::RoleRevokePermission { .. } => "role_revoke_permission",
        }
    }
}

impl AuthState {
    /// Applies one change, or refuses it with etcd's error; nothing changes on a refusal.
    pub fn apply(&mut self, op: AuthOp) -> Result<(), AuthError> {
        match op {
            AuthOp::Enable { token_key } => {
                let root = self.users.get(ROOT).ok_or(err::ROOT_USER_NOT_EXIST)?;
                if !root.roles.contains(ROOT) {
                    return Err(err::ROOT_ROLE_NOT_EXIST);
                }
                if self.token_key.is_empty() {
                    self.token_key = token_key;
                }
                self.enabled = true;
            }
            AuthOp::Disable => self.enabled = false,
            AuthOp::UserAdd { name, password } => {
                if name.is_empty() {
                    return Err(err::USER_EMPTY);
                }
                if self.users.contains_key(&name) {
                    return Err(err::USER_ALREADY_EXIST);
                }
                self.users.insert(
                    name,
                    AuthUser {
                        password,
                        ..Default::default()
                    },
                );
            }
            AuthOp::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(err::INVALID_AUTH_MGMT);
                }
                self.users.remove(&name).ok_or(err::USER_NOT_FOUND)?;
            }
            AuthOp::UserChangePassword { name, password } => {
                let user = self.users.get_mut(&name).ok_or(err::USER_NOT_FOUND)?;
                user.password = password;
                user.generation += 1;
            }
            AuthOp::UserGrantRole { user, role } => {
                if !self.roles.contains_key(&role) {
                    return Err(err::ROLE_NOT_FOUND);
                }
                let u = self.users.get_mut(&user).ok_or(err::USER_NOT_FOUND)?;
                u.roles.insert(role);
            }
            AuthOp::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(err::INVALID_AUTH_MGMT);
                }
                let u = self.users.get_mut(&user).ok_or(err::USER_NOT_FOUND)?;
                if !u.roles.remove(&role) {
                    return Err(err::ROLE_NOT_GRANTED);
                }
            }
            AuthOp::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(err::ROLE_EMPTY);
                }
                if self.roles.contains_key(&name) {
                    return Err(err::ROLE_ALREADY_EXIST);
                }
                self.roles.insert(name, Vec::new());
            }
            AuthOp::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(err::INVALID_AUTH_MGMT);
                }
                self.roles.remove(&name).ok_or(err::ROLE_NOT_FOUND)?;
                for u in self.users.values_mut() {
                    u.roles.remove(&name);
                }
            }
            AuthOp::RoleGrantPermission { role, perm } => {
                let perms = self.roles.get_mut(&role).ok_or(err::ROLE_NOT_FOUND)?;
                match perms
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(p) => p.perm_type = perm.perm_type,
                    None => {
                        perms.push(perm);
                        perms.sort_by(|a, b| (&a.key, &a.range_end).cmp(&(&b.key, &b.range_end)));
                    }
                }
            }
            AuthOp::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let perms = self.roles.get_mut(&role).ok_or(err::ROLE_NOT_FOUND)?;
                let before = perms.len();
                perms.retain(|p| !(p.key == key && p.range_end == range_end));
                if perms.len() == before {
                    return Err(err::PERMISSION_NOT_GRANTED);
                }
            }
        }
        self.revision += 1;
        Ok(())
    }

    /// Whether `user` holds the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }

    /// Whether `user` may read (`write` false) or write the keys `[key, range_end)` (etcd's
    /// range encoding: an empty end names one key, `"\0"` every key from `key` on): root may do
    /// anything; otherwise the user's roles' permissions of that kind, merged, must cover the
    /// whole range.
    pub fn permits(&self, user: &str, key: &[u8], range_end: &[u8], write: bool) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        if u.roles.contains(ROOT) {
            return true;
        }
        let wanted = if write { 1 } else { 0 };
        // Every granted interval of the right kind, as [start, end) with None for "no end".
        let mut spans: Vec<(&[u8], Option<Vec<u8>>)> = u
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flatten()
            .filter(|p| p.perm_type == wanted || p.perm_type == 2)
            .map(|p| (p.key.as_slice(), span_end(&p.key, &p.range_end)))
            .collect();
        spans.sort_by(|a, b| a.0.cmp(b.0));
        let need_end = span_end(key, range_end);
        // Walk the merged spans from `key`.
        let mut covered_to: Vec<u8> = key.to_vec();
        for (start, end) in spans {
            if start > covered_to.as_slice() {
                break;
            }
            match end {
                None => return true,
                Some(end) => {
                    if end > covered_to {
                        covered_to = end;
                    }
                }
            }
            if let Some(need) = &need_end {
                if covered_to >= *need {
                    return true;
                }
            }
        }
        false
    }
}

/// The exclusive end of etcd's range `[key, range_end)`: `None` for "every key from `key` on".
fn span_end(key: &[u8], range_end: &[u8]) -> Option<Vec<u8>> {
    match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            Some(next)
        }
        [0] => None,
        end => Some(end.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: i32, key: &[u8], end: &[u8]) -> KeyPermission {
        KeyPermission {
            perm_type: t,
            key: key.to_vec(),
            range_end: end.to_vec(),
        }
    }

    fn with_user() -> AuthState {
        let mut a = AuthState::default();
        a.apply(AuthOp::RoleAdd { name: "app".into() }).unwrap();
        a.apply(AuthOp::UserAdd {
            name: "u".into(),
            password: Some(PasswordHash::new("pw", vec![1; 16])),
        })
        .unwrap();
        a.apply(AuthOp::UserGrantRole {
            user: "u".into(),
            role: "app".into(),
        })
        .unwrap();
        a
    }

    #[test]
    fn enabling_needs_root_with_the_root_role_and_root_cannot_be_removed_then() {
        let mut a = with_user();
        assert_eq!(
            a.apply(AuthOp::Enable { token_key: vec![7] }),
            Err(err::ROOT_USER_NOT_EXIST)
        );
        a.apply(AuthOp::UserAdd {
            name: ROOT.into(),
            password: Some(PasswordHash::new("r", vec![2; 16])),
        })
        .unwrap();
        assert_eq!(
            a.apply(AuthOp::Enable { token_key: vec![7] }),
            Err(err::ROOT_ROLE_NOT_EXIST)
        );
        assert_eq!(
            a.apply(AuthOp::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into()
            }),
            Err(err::ROLE_NOT_FOUND)
        );
        a.apply(AuthOp::RoleAdd { name: ROOT.into() }).unwrap();
        a.apply(AuthOp::UserGrantRole {
            user: ROOT.into(),
            role: ROOT.into(),
        })
        .unwrap();
        a.apply(AuthOp::Enable { token_key: vec![7] }).unwrap();
        assert!(a.enabled && a.is_root(ROOT) && !a.is_root("u"));
        assert_eq!(
            a.apply(AuthOp::UserDelete { name: ROOT.into() }),
            Err(err::INVALID_AUTH_MGMT)
        );
        let rev = a.revision;
        assert_eq!(
            a.apply(AuthOp::UserAdd {
                name: "u".into(),
                password: None
            }),
            Err(err::USER_ALREADY_EXIST)
        );
        assert_eq!(a.revision, rev, "a refusal changes nothing");
    }

    #[test]
    fn permissions_cover_keys_prefixes_and_merged_ranges() {
        let mut a = with_user();
        let grant = |a: &mut AuthState, p| {
            a.apply(AuthOp::RoleGrantPermission {
                role: "app".into(),
                perm: p,
            })
            .unwrap()
        };
        grant(&mut a, perm(0, b"a/", b"a0"));
        grant(&mut a, perm(1, b"w", b""));
        assert!(a.permits("u", b"a/x", b"", false));
        assert!(a.permits("u", b"a/", b"a0", false));
        assert!(!a.permits("u", b"a/", b"a1", false), "beyond the grant");
        assert!(!a.permits("u", b"a/x", b"", true), "read only");
        assert!(a.permits("u", b"w", b"", true));
        assert!(!a.permits("u", b"w", b"", false), "write only");
        assert!(!a.permits("u", b"wx", b"", true));
        // Two adjacent grants cover the range between them together.
        grant(&mut a, perm(2, b"b", b"c"));
        grant(&mut a, perm(2, b"c", b"d"));
        assert!(a.permits("u", b"b", b"d", true));
        assert!(!a.permits("u", b"b", b"\0", true));
        grant(&mut a, perm(0, b"z", b"\0"));
        assert!(a.permits("u", b"zz", b"\0", false));
        assert!(!a.permits("nobody", b"a/x", b"", false));
        // Revoking takes it away; revoking again is etcd's error.
        let revoke = AuthOp::RoleRevokePermission {
            role: "app".into(),
            key: b"w".to_vec(),
            range_end: vec![],
        };
        a.apply(revoke.clone()).unwrap();
        assert!(!a.permits("u", b"w", b"", true));
        assert_eq!(a.apply(revoke), Err(err::PERMISSION_NOT_GRANTED));
        // Deleting the role takes it from its users.
        a.apply(AuthOp::RoleDelete { name: "app".into() }).unwrap();
        assert!(!a.permits("u", b"a/x", b"", false));
        assert!(a.users["u"].roles.is_empty());
    }

    #[test]
    fn passwords_are_salted_hashes() {
        let h = PasswordHash::new("secret", vec![3; 16]);
        assert!(h.matches("secret"));
        assert!(!h.matches("Secret"));
        assert_ne!(h.hash, PasswordHash::new("secret", vec![4; 16]).hash);
        assert!(!h.hash.windows(6).any(|w| w == b"secret"));
    }
}
