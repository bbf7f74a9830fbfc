//! `GrpcAuth`: runtime users, roles, grants and tokens (the server's
//! `dengine.v1.Auth` service; every call needs the `admin` role).
//!
//! Changes go to the leader and are retried only after errors that mean
//! they were not executed (like [`crate::GrpcAdmin`]'s); reads are served
//! by the leader too, so they see every change acknowledged before them.

use d_engine_proto::v1 as pb;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::router::{request, Retry, Route};

/// User and role management; from [`Client::auth`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcAuth {
    pub(crate) client: Client,
}

/// What an applied auth change reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthChange {
    /// The auth revision (log index) of the change.
    pub revision: u64,
    /// Every voter held the change before the reply: from then on every
    /// voter refuses a revoked credential. False: a voter was down or slow
    /// and applies it when it catches up.
    pub every_voter_acknowledged: bool,
}

/// A user as the server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthUser {
    pub name: String,
    pub roles: Vec<String>,
    /// `"config"` (from the server's `[auth]` section) or `"runtime"`.
    pub source: String,
    pub has_password: bool,
    /// Runtime tokens issued to the user.
    pub tokens: u32,
}

/// Read or read-write access to every key starting with `prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthPermission {
    pub prefix: Vec<u8>,
    /// `"read"` or `"readwrite"`.
    pub access: String,
}

/// A role as the server lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthRole {
    pub name: String,
    pub permissions: Vec<AuthPermission>,
    pub source: String,
}

/// A token created by [`GrpcAuth::token_create`] (shown once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthToken {
    pub token: String,
    /// Unix ms after which it is refused; 0 = never.
    pub expires_at_ms: u64,
}

fn user(u: pb::AuthUser) -> AuthUser {
    AuthUser {
        name: u.name,
        roles: u.roles,
        source: u.source,
        has_password: u.has_password,
        tokens: u.tokens,
    }
}

fn role(r: pb::AuthRole) -> AuthRole {
    AuthRole {
        name: r.name,
        permissions: r
            .permissions
            .into_iter()
            .map(|p| AuthPermission {
                prefix: p.prefix,
                access: p.access,
            })
            .collect(),
        source: r.source,
    }
}

macro_rules! change {
    ($self:ident, $op:literal, $method:ident, $msg:expr) => {{
        let inner = &$self.client.inner;
        let msg = $msg;
        let r = inner
            .execute($op, Route::Leader, Retry::Unsafe, |ch, t| {
                let mut rpc = inner.auth_rpc(ch);
                let req = request(msg.clone(), t);
                async move { Ok(rpc.$method(req).await?.into_inner()) }
            })
            .await?;
        Ok(AuthChange {
            revision: r.revision,
            every_voter_acknowledged: r.every_voter_acknowledged,
        })
    }};
}

macro_rules! read {
    ($self:ident, $op:literal, $method:ident, $msg:expr) => {
        read!($self, $op, $method, $msg, Retry::Safe)
    };
    ($self:ident, $op:literal, $method:ident, $msg:expr, $retry:expr) => {{
        let inner = &$self.client.inner;
        let msg = $msg;
        inner
            .execute($op, Route::Leader, $retry, |ch, t| {
                let mut rpc = inner.auth_rpc(ch);
                let req = request(msg.clone(), t);
                async move { Ok(rpc.$method(req).await?.into_inner()) }
            })
            .await
    }};
}

impl GrpcAuth {
    /// Adds a user; an empty `password` makes a token-only user. The
    /// password is hashed by the node that receives it.
    pub async fn user_add(&self, name: &str, password: &str) -> Result<AuthChange> {
        change!(
            self,
            "user_add",
            user_add,
            pb::AuthUserAddRequest {
                name: name.into(),
                password: password.into(),
            }
        )
    }

    /// Deletes a runtime user and its tokens.
    pub async fn user_delete(&self, name: &str) -> Result<AuthChange> {
        change!(
            self,
            "user_delete",
            user_delete,
            pb::AuthUserDeleteRequest { name: name.into() }
        )
    }

    pub async fn user_change_password(&self, name: &str, password: &str) -> Result<AuthChange> {
        change!(
            self,
            "user_change_password",
            user_change_password,
            pb::AuthUserChangePasswordRequest {
                name: name.into(),
                password: password.into(),
            }
        )
    }

    pub async fn user_grant_role(&self, name: &str, role: &str) -> Result<AuthChange> {
        change!(
            self,
            "user_grant_role",
            user_grant_role,
            pb::AuthUserRoleRequest {
                name: name.into(),
                role: role.into(),
            }
        )
    }

    pub async fn user_revoke_role(&self, name: &str, role: &str) -> Result<AuthChange> {
        change!(
            self,
            "user_revoke_role",
            user_revoke_role,
            pb::AuthUserRoleRequest {
                name: name.into(),
                role: role.into(),
            }
        )
    }

    /// A configured or runtime user (`InvalidArgument` if none).
    pub async fn user_get(&self, name: &str) -> Result<AuthUser> {
        let r = read!(
            self,
            "user_get",
            user_get,
            pb::AuthUserGetRequest { name: name.into() }
        )?;
        r.user
            .map(user)
            .ok_or_else(|| Error::Internal("the server answered without a user".into()))
    }

    /// Every user, configured and runtime, by name.
    pub async fn user_list(&self) -> Result<Vec<AuthUser>> {
        let r = read!(self, "user_list", user_list, pb::AuthUserListRequest {})?;
        Ok(r.users.into_iter().map(user).collect())
    }

    pub async fn role_add(&self, name: &str) -> Result<AuthChange> {
        change!(
            self,
            "role_add",
            role_add,
            pb::AuthRoleAddRequest { name: name.into() }
        )
    }

    /// Deletes a runtime role no user holds.
    pub async fn role_delete(&self, name: &str) -> Result<AuthChange> {
        change!(
            self,
            "role_delete",
            role_delete,
            pb::AuthRoleDeleteRequest { name: name.into() }
        )
    }

    /// Grants `access` (`"read"` or `"readwrite"`) on every key under
    /// `prefix` (replacing an earlier grant of the same prefix).
    pub async fn role_grant_permission(
        &self,
        role: &str,
        prefix: &[u8],
        access: &str,
    ) -> Result<AuthChange> {
        change!(
            self,
            "role_grant_permission",
            role_grant_permission,
            pb::AuthRoleGrantPermissionRequest {
                role: role.into(),
                permission: Some(pb::AuthPermission {
                    prefix: prefix.to_vec(),
                    access: access.into(),
                }),
            }
        )
    }

    pub async fn role_revoke_permission(&self, role: &str, prefix: &[u8]) -> Result<AuthChange> {
        change!(
            self,
            "role_revoke_permission",
            role_revoke_permission,
            pb::AuthRoleRevokePermissionRequest {
                role: role.into(),
                prefix: prefix.to_vec(),
            }
        )
    }

    pub async fn role_get(&self, name: &str) -> Result<AuthRole> {
        let r = read!(
            self,
            "role_get",
            role_get,
            pb::AuthRoleGetRequest { name: name.into() }
        )?;
        r.role
            .map(role)
            .ok_or_else(|| Error::Internal("the server answered without a role".into()))
    }

    pub async fn role_list(&self) -> Result<Vec<AuthRole>> {
        let r = read!(self, "role_list", role_list, pb::AuthRoleListRequest {})?;
        Ok(r.roles.into_iter().map(role).collect())
    }

    /// A new token for `user`, valid `ttl_seconds` (0 = no expiry).
    pub async fn token_create(&self, user: &str, ttl_seconds: u64) -> Result<AuthToken> {
        let r = read!(
            self,
            "token_create",
            token_create,
            pb::AuthTokenCreateRequest {
                user: user.into(),
                ttl_seconds,
            },
            Retry::Unsafe
        )?;
        Ok(AuthToken {
            token: r.token,
            expires_at_ms: r.expires_at_ms,
        })
    }

    /// Revokes a token (runtime or configured), given the token itself.
    pub async fn token_revoke(&self, token: &str) -> Result<AuthChange> {
        change!(
            self,
            "token_revoke",
            token_revoke,
            pb::AuthTokenRevokeRequest {
                token: token.into(),
                token_sha256: String::new(),
            }
        )
    }
}
