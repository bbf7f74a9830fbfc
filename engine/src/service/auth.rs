//! The `dengine.v1.Auth` service: runtime users, roles, grants and tokens
//! (`docs/auth.md`). Every call needs the built-in admin role. Changes are
//! leader-only (NOT_LEADER with a hint otherwise) and go through the log
//! ([`NodeHandle::auth_change`]); reads answer from this node's applied
//! state.
//!
//! Passwords are hashed here, on the node that received them (Argon2id, on
//! a blocking thread); only the hash enters the log. Token values are
//! generated here and returned once; only their sha256 enters the log.

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::auth_server::Auth;
use d_engine_storage::auth::{validate_name, AuthOp, AuthState, Grant, GrantAccess, ADMIN_ROLE};
use tonic::{Request, Response, Status};

use super::convert;
use super::status::{invalid, status};
use crate::auth::credentials::{generate_token, hash_password, sha256_hex};
use crate::auth::Gate;
use crate::runtime::{AuthChangeOutcome, NodeHandle};

/// Longest token lifetime accepted (10 years).
pub const MAX_TOKEN_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// Longest password accepted, in bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;

pub struct AuthService {
    node: NodeHandle,
    gate: Gate,
}

impl AuthService {
    /// Uses `gate` (shared with the other services of one server).
    pub fn new(node: NodeHandle, gate: Gate) -> Self {
        AuthService { node, gate }
    }

    async fn admin<T>(&self, req: &Request<T>, rpc: &str) -> Result<(), Status> {
        self.gate
            .authenticate_request(req)
            .await?
            .require_admin(rpc)
    }

    fn config_user(&self, name: &str) -> bool {
        self.node.config().auth.users.iter().any(|u| u.name == name)
    }

    fn config_role(&self, name: &str) -> bool {
        self.node.config().auth.roles.iter().any(|r| r.name == name)
    }

    fn name(field: &str, what: &str, v: &str) -> Result<(), Status> {
        validate_name(what, v).map_err(|m| invalid(field, m))
    }

    fn runtime_user(&self, field: &str, name: &str) -> Result<(), Status> {
        Self::name(field, "user name", name)?;
        if self.config_user(name) {
            return Err(invalid(
                field,
                format!(
                    "\"{name}\" is a configured user ([auth.users]); configured users change only \
                     in the config file"
                ),
            ));
        }
        Ok(())
    }

    fn runtime_role(&self, field: &str, name: &str) -> Result<(), Status> {
        Self::name(field, "role name", name)?;
        if name == ADMIN_ROLE || self.config_role(name) {
            return Err(invalid(
                field,
                format!(
                    "\"{name}\" is a built-in or configured role; configured roles change only \
                     in the config file"
                ),
            ));
        }
        Ok(())
    }

    async fn hash(field: &str, password: String) -> Result<String, Status> {
        if password.is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(invalid(
                field,
                format!(
                    "is {} bytes; the limit is {MAX_PASSWORD_BYTES}",
                    password.len()
                ),
            ));
        }
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| Status::internal(format!("hashing failed: {e}")))?
            .map_err(|e| Status::internal(format!("hashing failed: {e}")))
    }

    async fn change(&self, op: AuthOp) -> Result<Response<pb::AuthChangeResponse>, Status> {
        let AuthChangeOutcome {
            revision,
            acknowledged,
        } = self.node.auth_change(op).await.map_err(|e| status(&e))?;
        Ok(Response::new(pb::AuthChangeResponse {
            header: convert::header(self.node.header()),
            revision,
            every_voter_acknowledged: acknowledged,
        }))
    }

    fn users(&self, state: &AuthState) -> Vec<pb::AuthUser> {
        let mut out: Vec<pb::AuthUser> = self
            .node
            .config()
            .auth
            .users
            .iter()
            .map(|u| pb::AuthUser {
                name: u.name.clone(),
                roles: u.roles.clone(),
                source: "config".into(),
                has_password: u.password_hash.is_some(),
                tokens: state.tokens.values().filter(|t| t.user == u.name).count() as u32,
            })
            .collect();
        out.extend(state.users.iter().map(|(name, u)| pb::AuthUser {
            name: name.clone(),
            roles: u.roles.iter().cloned().collect(),
            source: "runtime".into(),
            has_password: u.password_hash.is_some(),
            tokens: state.tokens.values().filter(|t| &t.user == name).count() as u32,
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn roles(&self, state: &AuthState) -> Vec<pb::AuthRole> {
        let mut out: Vec<pb::AuthRole> = self
            .node
            .config()
            .auth
            .roles
            .iter()
            .map(|r| pb::AuthRole {
                name: r.name.clone(),
                permissions: r
                    .grants
                    .iter()
                    .map(|g| pb::AuthPermission {
                        prefix: g.prefix.as_bytes().to_vec(),
                        access: g.access.as_str().into(),
                    })
                    .collect(),
                source: "config".into(),
            })
            .collect();
        out.extend(state.roles.iter().map(|(name, grants)| {
            pb::AuthRole {
                name: name.clone(),
                permissions: grants
                    .iter()
                    .map(|g| pb::AuthPermission {
                        prefix: g.prefix.clone(),
                        access: g.access.as_str().into(),
                    })
                    .collect(),
                source: "runtime".into(),
            }
        }));
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

fn parse_access(field: &str, v: &str) -> Result<GrantAccess, Status> {
    match v {
        "read" => Ok(GrantAccess::Read),
        "readwrite" => Ok(GrantAccess::Readwrite),
        other => Err(invalid(
            field,
            format!(
                "\"{}\" is not an access; use \"read\" or \"readwrite\"",
                other.escape_debug()
            ),
        )),
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.UserAdd").await?;
        let r = req.into_inner();
        self.runtime_user("name", &r.name)?;
        let password_hash = if r.password.is_empty() {
            None
        } else {
            Some(Self::hash("password", r.password).await?)
        };
        self.change(AuthOp::UserAdd {
            name: r.name,
            password_hash,
        })
        .await
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.UserDelete").await?;
        let r = req.into_inner();
        self.runtime_user("name", &r.name)?;
        self.change(AuthOp::UserDelete { name: r.name }).await
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.UserChangePassword").await?;
        let r = req.into_inner();
        self.runtime_user("name", &r.name)?;
        let password_hash = Self::hash("password", r.password).await?;
        self.change(AuthOp::UserChangePassword {
            name: r.name,
            password_hash,
        })
        .await
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserRoleRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.UserGrantRole").await?;
        let r = req.into_inner();
        self.runtime_user("name", &r.name)?;
        Self::name("role", "role name", &r.role)?;
        if self.config_role(&r.role) {
            return Err(invalid(
                "role",
                format!(
                    "\"{}\" is a configured role; a runtime user holds runtime roles (`dengine \
                     role add`) or \"admin\"",
                    r.role
                ),
            ));
        }
        self.change(AuthOp::UserGrantRole {
            name: r.name,
            role: r.role,
        })
        .await
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRoleRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.UserRevokeRole").await?;
        let r = req.into_inner();
        self.runtime_user("name", &r.name)?;
        Self::name("role", "role name", &r.role)?;
        self.change(AuthOp::UserRevokeRole {
            name: r.name,
            role: r.role,
        })
        .await
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        self.admin(&req, "Auth.UserGet").await?;
        let r = req.into_inner();
        let user = self
            .users(&self.node.auth_state())
            .into_iter()
            .find(|u| u.name == r.name)
            .ok_or_else(|| invalid("name", format!("no user \"{}\"", r.name)))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: convert::header(self.node.header()),
            user: Some(user),
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        self.admin(&req, "Auth.UserList").await?;
        let state = self.node.auth_state();
        Ok(Response::new(pb::AuthUserListResponse {
            header: convert::header(self.node.header()),
            users: self.users(&state),
            revision: state.revision,
        }))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.RoleAdd").await?;
        let r = req.into_inner();
        self.runtime_role("name", &r.name)?;
        self.change(AuthOp::RoleAdd { name: r.name }).await
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.RoleDelete").await?;
        let r = req.into_inner();
        self.runtime_role("name", &r.name)?;
        self.change(AuthOp::RoleDelete { name: r.name }).await
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.RoleGrantPermission").await?;
        let r = req.into_inner();
        self.runtime_role("role", &r.role)?;
        let p = r
            .permission
            .ok_or_else(|| invalid("permission", "is missing: give a prefix and an access"))?;
        let access = parse_access("permission.access", &p.access)?;
        self.change(AuthOp::RoleGrantPermission {
            role: r.role,
            grant: Grant {
                prefix: p.prefix,
                access,
            },
        })
        .await
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.RoleRevokePermission").await?;
        let r = req.into_inner();
        self.runtime_role("role", &r.role)?;
        self.change(AuthOp::RoleRevokePermission {
            role: r.role,
            prefix: r.prefix,
        })
        .await
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        self.admin(&req, "Auth.RoleGet").await?;
        let r = req.into_inner();
        let role = self
            .roles(&self.node.auth_state())
            .into_iter()
            .find(|x| x.name == r.name)
            .ok_or_else(|| invalid("name", format!("no role \"{}\"", r.name)))?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: convert::header(self.node.header()),
            role: Some(role),
        }))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        self.admin(&req, "Auth.RoleList").await?;
        let state = self.node.auth_state();
        Ok(Response::new(pb::AuthRoleListResponse {
            header: convert::header(self.node.header()),
            roles: self.roles(&state),
            revision: state.revision,
        }))
    }

    async fn token_create(
        &self,
        req: Request<pb::AuthTokenCreateRequest>,
    ) -> Result<Response<pb::AuthTokenCreateResponse>, Status> {
        self.admin(&req, "Auth.TokenCreate").await?;
        let r = req.into_inner();
        Self::name("user", "user name", &r.user)?;
        let configured_user = self.config_user(&r.user);
        if !configured_user && !self.node.auth_state().users.contains_key(&r.user) {
            return Err(invalid("user", format!("no user \"{}\"", r.user)));
        }
        if r.ttl_seconds > MAX_TOKEN_TTL_SECONDS {
            return Err(invalid(
                "ttl_seconds",
                format!(
                    "is {}; the limit is {MAX_TOKEN_TTL_SECONDS} (10 years); use 0 for a token \
                     that never expires",
                    r.ttl_seconds
                ),
            ));
        }
        let expires_at_ms = (r.ttl_seconds > 0)
            .then(|| crate::auth::replicated::now_ms().saturating_add(r.ttl_seconds * 1000));
        let (token, digest) = generate_token().map_err(Status::internal)?;
        let out = self
            .node
            .auth_change(AuthOp::TokenAdd {
                digest,
                user: r.user,
                expires_at_ms,
                configured_user,
            })
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(pb::AuthTokenCreateResponse {
            header: convert::header(self.node.header()),
            token,
            expires_at_ms: expires_at_ms.unwrap_or(0),
            every_voter_acknowledged: out.acknowledged,
        }))
    }

    async fn token_revoke(
        &self,
        req: Request<pb::AuthTokenRevokeRequest>,
    ) -> Result<Response<pb::AuthChangeResponse>, Status> {
        self.admin(&req, "Auth.TokenRevoke").await?;
        let r = req.into_inner();
        let digest =
            match (r.token.is_empty(), r.token_sha256.is_empty()) {
                (false, true) => sha256_hex(r.token.as_bytes()),
                (true, false) => r.token_sha256.to_ascii_lowercase(),
                _ => return Err(invalid(
                    "token",
                    "give exactly one of `token` (the token) and `token_sha256` (its sha256 as \
                     64 hex digits)",
                )),
            };
        let configured = self
            .node
            .config()
            .auth
            .users
            .iter()
            .any(|u| u.tokens.contains(&digest));
        if !configured && !self.node.auth_state().tokens.contains_key(&digest) {
            return Err(invalid(
                "token",
                "no such token (neither configured nor created at runtime)",
            ));
        }
        self.change(AuthOp::TokenRevoke { digest, configured })
            .await
    }
}
