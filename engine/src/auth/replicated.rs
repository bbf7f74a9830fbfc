//! How the gate combines the configured users with the replicated ones
//! (`d_engine_storage::auth`, changed at runtime through the Auth service).
//!
//! - Configured users (`[auth.users]`) always exist, with their configured
//!   password, tokens and roles; runtime changes cannot touch them (the
//!   Auth service refuses a runtime user or role with a configured name).
//! - A configured token revoked at runtime is refused from then on, on
//!   every node that applied the revocation.
//! - A runtime user's permissions are the union of its roles' grants
//!   (runtime roles; the Auth service refuses granting a configured role
//!   to a runtime user); `admin` is the built-in role.
//! - Runtime tokens expire at their deadline (unix ms, compared with this
//!   node's clock) and end with their user.
//! - Every credential is re-checked against the state when it is used
//!   ([`super::Gate::recheck`] for streams that outlive one request).

use std::collections::BTreeMap;
use std::sync::Arc;

use d_engine_storage::auth::{AuthState, GrantAccess, ADMIN_ROLE};

use super::config::{Access, AuthConfig};
use super::perm::Permissions;

/// Reads the node's current replicated auth state.
pub type AuthSource = Arc<dyn Fn() -> Arc<AuthState> + Send + Sync>;

/// What authenticated a caller (for re-checks of long-lived streams).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Proof {
    /// A configured user's password (configured users never change).
    Config,
    /// A configured token (sha256 hex): it may be revoked at runtime.
    ConfigToken(String),
    /// A runtime token (sha256 hex).
    Token(String),
    /// A runtime user's password, as the hash it matched.
    Password { user: String, phc: String },
}

/// The configured roles' grants, by role name.
pub(crate) fn config_roles(cfg: &AuthConfig) -> BTreeMap<String, Vec<(Vec<u8>, Access)>> {
    cfg.roles
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                r.grants
                    .iter()
                    .map(|g| (g.prefix.as_bytes().to_vec(), g.access))
                    .collect(),
            )
        })
        .collect()
}

pub(crate) fn access(a: GrantAccess) -> Access {
    match a {
        GrantAccess::Read => Access::Read,
        GrantAccess::Readwrite => Access::Readwrite,
    }
}

/// The permissions of runtime user `user` (empty if it does not exist).
pub(crate) fn live_permissions(
    state: &AuthState,
    config_roles: &BTreeMap<String, Vec<(Vec<u8>, Access)>>,
    user: &str,
) -> Permissions {
    let Some(u) = state.users.get(user) else {
        return Permissions::default();
    };
    let mut grants = Vec::new();
    let mut admin = false;
    for r in &u.roles {
        if r == ADMIN_ROLE {
            admin = true;
        } else if let Some(g) = state.roles.get(r) {
            grants.extend(g.iter().map(|g| (g.prefix.clone(), access(g.access))));
        } else if let Some(g) = config_roles.get(r) {
            grants.extend(g.iter().cloned());
        }
    }
    let mut p = Permissions::new(grants);
    p.admin = admin;
    p
}

/// Why a proof no longer holds under `state` at `now_ms` (`None`: it holds).
pub(crate) fn invalid_reason(proof: &Proof, state: &AuthState, now_ms: u64) -> Option<String> {
    match proof {
        Proof::Config => None,
        Proof::ConfigToken(d) => state
            .revoked
            .contains(d)
            .then(|| "the token was revoked".to_string()),
        Proof::Token(d) => match state.tokens.get(d) {
            None => Some("the token was revoked (or its user deleted)".into()),
            Some(t) if t.is_expired(now_ms) => Some("the token expired".into()),
            Some(_) => None,
        },
        Proof::Password { user, phc } => match state.users.get(user) {
            None => Some(format!("user \"{user}\" was deleted")),
            Some(u) if u.password_hash.as_deref() != Some(phc.as_str()) => {
                Some(format!("the password of user \"{user}\" changed"))
            }
            Some(_) => None,
        },
    }
}

/// Unix milliseconds now (token deadlines).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
