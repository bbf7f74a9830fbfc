//! Replicated authentication state: users, roles, their grants, and
//! tokens, changed only through the Raft log ([`AuthOp`] inside
//! [`crate::command::Op::Auth`]) and applied the same way on every replica.
//!
//! # Contract
//!
//! - The state lives beside the keys, never among them: no key, range,
//!   scan or watch can read it. Both state machines keep it in their
//!   replicated metadata, persist it (sled: one record of its own tree;
//!   memory: snapshots), and write it into snapshot files as one
//!   [`crate::sm::SnapshotRecord::Auth`] record.
//! - Passwords are replicated only as Argon2 PHC hashes, computed by the
//!   node that received the request; tokens only as the sha256 (hex) of
//!   the token. Applying never reads a clock: token deadlines are absolute
//!   unix milliseconds computed by the proposer.
//! - Applying an [`AuthOp`] either changes the state and sets
//!   [`AuthState::revision`] to the entry's index, or refuses with a reason
//!   (the same on every replica) and changes nothing.
//! - Static (configured) users are not part of this state; the node
//!   combines both (see `docs/auth.md`). Whether a name clashes with a
//!   configured user is checked by the node before proposing.

use std::collections::{BTreeMap, BTreeSet};

use crate::sm::wire::{Reader, WireError, Writer};

/// The built-in role that allows everything (also in `[auth]` config).
pub const ADMIN_ROLE: &str = "admin";
/// Users the replicated state may hold.
pub const MAX_AUTH_USERS: usize = 10_000;
/// Roles the replicated state may hold.
pub const MAX_AUTH_ROLES: usize = 1_000;
/// Grants one role may hold.
pub const MAX_ROLE_GRANTS: usize = 256;
/// Roles one user may hold.
pub const MAX_USER_ROLES: usize = 64;
/// Live tokens the replicated state may hold (expired ones are dropped by
/// the next token change).
pub const MAX_AUTH_TOKENS: usize = 10_000;
/// Revoked configured tokens remembered.
pub const MAX_REVOKED_TOKENS: usize = 10_000;
/// Longest user or role name, in bytes.
pub const MAX_AUTH_NAME_BYTES: usize = 255;
/// Longest grant prefix, in bytes (the key limit).
pub const MAX_GRANT_PREFIX_BYTES: usize = crate::command::MAX_KEY_BYTES;
/// Longest stored password hash, in bytes.
pub const MAX_HASH_BYTES: usize = 512;

/// What a grant allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GrantAccess {
    Read,
    Readwrite,
}

impl GrantAccess {
    fn code(self) -> u8 {
        match self {
            GrantAccess::Read => 1,
            GrantAccess::Readwrite => 2,
        }
    }
    fn from_code(c: u8, r: &Reader<'_>) -> Result<Self, WireError> {
        match c {
            1 => Ok(GrantAccess::Read),
            2 => Ok(GrantAccess::Readwrite),
            other => Err(r.err(format!("unknown grant access {other}"))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GrantAccess::Read => "read",
            GrantAccess::Readwrite => "readwrite",
        }
    }
}

/// `access` on every key starting with `prefix` (empty: every key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub prefix: Vec<u8>,
    pub access: GrantAccess,
}

/// A user created at runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthUser {
    /// Argon2 PHC string; `None`: the user logs in with tokens only.
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
}

/// A token issued at runtime (keyed by its sha256 hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthToken {
    pub user: String,
    /// Absolute unix ms after which the token is refused; `None`: never.
    pub expires_at_ms: Option<u64>,
}

impl AuthToken {
    /// Whether the token is expired at `now_ms` (deadline `<= now_ms`).
    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expires_at_ms, Some(d) if d <= now_ms)
    }
}

/// The replicated authentication state (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthState {
    /// Log index of the last change (0: never changed).
    pub revision: u64,
    pub users: BTreeMap<String, AuthUser>,
    /// Role name → its grants (sorted, no duplicates).
    pub roles: BTreeMap<String, BTreeSet<Grant>>,
    /// sha256 hex of a token → the token.
    pub tokens: BTreeMap<String, AuthToken>,
    /// sha256 hex of configured tokens revoked at runtime.
    pub revoked: BTreeSet<String>,
}

/// One change of the auth state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOp {
    UserAdd {
        name: String,
        password_hash: Option<String>,
    },
    /// Removes the user and every token issued to it.
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: String,
    },
    UserGrantRole {
        name: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    /// Refused while a user holds the role.
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        grant: Grant,
    },
    /// Removes the grant with this prefix (any access).
    RoleRevokePermission {
        role: String,
        prefix: Vec<u8>,
    },
    /// Issues a token (digest = sha256 hex) to a runtime or configured
    /// user; the node checks a configured user exists before proposing.
    TokenAdd {
        digest: String,
        user: String,
        expires_at_ms: Option<u64>,
        /// `user` is a configured user (not in this state).
        configured_user: bool,
    },
    /// Removes a runtime token, or remembers a configured one as revoked.
    TokenRevoke {
        digest: String,
        configured: bool,
    },
}

const A_USER_ADD: u8 = 1;
const A_USER_DELETE: u8 = 2;
const A_USER_PASSWD: u8 = 3;
const A_USER_GRANT: u8 = 4;
const A_USER_REVOKE: u8 = 5;
const A_ROLE_ADD: u8 = 6;
const A_ROLE_DELETE: u8 = 7;
const A_ROLE_GRANT: u8 = 8;
const A_ROLE_REVOKE: u8 = 9;
const A_TOKEN_ADD: u8 = 10;
const A_TOKEN_REVOKE: u8 = 11;

/// Checks a user or role name: 1..=255 bytes, no ':' and no control
/// characters. `what` names the field in the error.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
        return Err(format!(
            "{what} \"{}\" is not valid: it must be non-empty, without ':' or control characters",
            name.escape_debug()
        ));
    }
    if name.len() > MAX_AUTH_NAME_BYTES {
        return Err(format!(
            "{what} is {} bytes; the limit is {MAX_AUTH_NAME_BYTES}",
            name.len()
        ));
    }
    Ok(())
}

fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl AuthOp {
    /// Checks the fields that do not depend on the state (names, sizes).
    pub fn validate(&self) -> Result<(), String> {
        let hash_ok = |h: &str| {
            if h.is_empty() || h.len() > MAX_HASH_BYTES || !h.starts_with("$argon2") {
                Err(format!(
                    "password_hash is not an Argon2 PHC string of at most {MAX_HASH_BYTES} bytes"
                ))
            } else {
                Ok(())
            }
        };
        match self {
            AuthOp::UserAdd {
                name,
                password_hash,
            } => {
                validate_name("user name", name)?;
                if let Some(h) = password_hash {
                    hash_ok(h)?;
                }
            }
            AuthOp::UserDelete { name } => validate_name("user name", name)?,
            AuthOp::UserChangePassword {
                name,
                password_hash,
            } => {
                validate_name("user name", name)?;
                hash_ok(password_hash)?;
            }
            AuthOp::UserGrantRole { name, role } | AuthOp::UserRevokeRole { name, role } => {
                validate_name("user name", name)?;
                validate_name("role name", role)?;
            }
            AuthOp::RoleAdd { name } | AuthOp::RoleDelete { name } => {
                validate_name("role name", name)?
            }
            AuthOp::RoleGrantPermission { role, grant } => {
                validate_name("role name", role)?;
                check_prefix(&grant.prefix)?;
            }
            AuthOp::RoleRevokePermission { role, prefix } => {
                validate_name("role name", role)?;
                check_prefix(prefix)?;
            }
            AuthOp::TokenAdd { digest, user, .. } => {
                validate_name("user name", user)?;
                if !is_digest(digest) {
                    return Err("token digest must be 64 lowercase hex digits".into());
                }
            }
            AuthOp::TokenRevoke { digest, .. } => {
                if !is_digest(digest) {
                    return Err("token digest must be 64 lowercase hex digits".into());
                }
            }
        }
        Ok(())
    }

    /// Appends the encoding (see `command.rs`: after the op byte).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            AuthOp::UserAdd {
                name,
                password_hash,
            } => {
                w.u8(A_USER_ADD)
                    .str(name)
                    .opt_bytes(password_hash.as_deref().map(str::as_bytes));
            }
            AuthOp::UserDelete { name } => {
                w.u8(A_USER_DELETE).str(name);
            }
            AuthOp::UserChangePassword {
                name,
                password_hash,
            } => {
                w.u8(A_USER_PASSWD).str(name).str(password_hash);
            }
            AuthOp::UserGrantRole { name, role } => {
                w.u8(A_USER_GRANT).str(name).str(role);
            }
            AuthOp::UserRevokeRole { name, role } => {
                w.u8(A_USER_REVOKE).str(name).str(role);
            }
            AuthOp::RoleAdd { name } => {
                w.u8(A_ROLE_ADD).str(name);
            }
            AuthOp::RoleDelete { name } => {
                w.u8(A_ROLE_DELETE).str(name);
            }
            AuthOp::RoleGrantPermission { role, grant } => {
                w.u8(A_ROLE_GRANT)
                    .str(role)
                    .bytes(&grant.prefix)
                    .u8(grant.access.code());
            }
            AuthOp::RoleRevokePermission { role, prefix } => {
                w.u8(A_ROLE_REVOKE).str(role).bytes(prefix);
            }
            AuthOp::TokenAdd {
                digest,
                user,
                expires_at_ms,
                configured_user,
            } => {
                w.u8(A_TOKEN_ADD)
                    .str(digest)
                    .str(user)
                    .opt_u64(*expires_at_ms)
                    .bool(*configured_user);
            }
            AuthOp::TokenRevoke { digest, configured } => {
                w.u8(A_TOKEN_REVOKE).str(digest).bool(*configured);
            }
        }
    }

    /// Decodes what [`AuthOp::encode`] wrote. Never panics.
    pub fn decode(r: &mut Reader<'_>) -> Result<AuthOp, WireError> {
        Ok(match r.u8("auth op")? {
            A_USER_ADD => AuthOp::UserAdd {
                name: r.string("user")?,
                password_hash: match r.opt_bytes("password_hash")? {
                    None => None,
                    Some(b) => Some(
                        String::from_utf8(b.to_vec())
                            .map_err(|_| r.err("password_hash is not UTF-8"))?,
                    ),
                },
            },
            A_USER_DELETE => AuthOp::UserDelete {
                name: r.string("user")?,
            },
            A_USER_PASSWD => AuthOp::UserChangePassword {
                name: r.string("user")?,
                password_hash: r.string("password_hash")?,
            },
            A_USER_GRANT => AuthOp::UserGrantRole {
                name: r.string("user")?,
                role: r.string("role")?,
            },
            A_USER_REVOKE => AuthOp::UserRevokeRole {
                name: r.string("user")?,
                role: r.string("role")?,
            },
            A_ROLE_ADD => AuthOp::RoleAdd {
                name: r.string("role")?,
            },
            A_ROLE_DELETE => AuthOp::RoleDelete {
                name: r.string("role")?,
            },
            A_ROLE_GRANT => {
                let role = r.string("role")?;
                let prefix = r.bytes("prefix")?.to_vec();
                let c = r.u8("access")?;
                let access = GrantAccess::from_code(c, r)?;
                AuthOp::RoleGrantPermission {
                    role,
                    grant: Grant { prefix, access },
                }
            }
            A_ROLE_REVOKE => AuthOp::RoleRevokePermission {
                role: r.string("role")?,
                prefix: r.bytes("prefix")?.to_vec(),
            },
            A_TOKEN_ADD => AuthOp::TokenAdd {
                digest: r.string("token digest")?,
                user: r.string("user")?,
                expires_at_ms: r.opt_u64("expires_at_ms")?,
                configured_user: r.bool("configured_user")?,
            },
            A_TOKEN_REVOKE => AuthOp::TokenRevoke {
                digest: r.string("token digest")?,
                configured: r.bool("configured")?,
            },
            other => return Err(r.err(format!("unknown auth op {other}"))),
        })
    }

    /// Rough encoded size (for budgets).
    pub fn payload_len(&self) -> usize {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.buf.len()
    }
}

fn check_prefix(p: &[u8]) -> Result<(), String> {
    if p.len() > MAX_GRANT_PREFIX_BYTES {
        return Err(format!(
            "grant prefix is {} bytes; the limit is {MAX_GRANT_PREFIX_BYTES}",
            p.len()
        ));
    }
    Ok(())
}

impl AuthState {
    /// Applies `op` at log index `index`: `Ok(())` after a change (the
    /// revision is then `index`), `Err(reason)` when refused (nothing
    /// changed). Deterministic: reads no clock, no configuration.
    pub fn apply(&mut self, op: &AuthOp, index: u64) -> Result<(), String> {
        op.validate()?;
        match op {
            AuthOp::UserAdd {
                name,
                password_hash,
            } => {
                if self.users.contains_key(name) {
                    return Err(format!("user \"{name}\" already exists"));
                }
                if self.users.len() >= MAX_AUTH_USERS {
                    return Err(format!(
                        "there are {MAX_AUTH_USERS} users already (the limit); delete one first"
                    ));
                }
                self.users.insert(
                    name.clone(),
                    AuthUser {
                        password_hash: password_hash.clone(),
                        roles: BTreeSet::new(),
                    },
                );
            }
            AuthOp::UserDelete { name } => {
                if self.users.remove(name).is_none() {
                    return Err(no_user(name));
                }
                self.tokens.retain(|_, t| &t.user != name);
            }
            AuthOp::UserChangePassword {
                name,
                password_hash,
            } => {
                let u = self.users.get_mut(name).ok_or_else(|| no_user(name))?;
                u.password_hash = Some(password_hash.clone());
            }
            AuthOp::UserGrantRole { name, role } => {
                if role != ADMIN_ROLE && !self.roles.contains_key(role) {
                    return Err(no_role(role));
                }
                let u = self.users.get_mut(name).ok_or_else(|| no_user(name))?;
                if u.roles.contains(role) {
                    return Err(format!("user \"{name}\" already holds role \"{role}\""));
                }
                if u.roles.len() >= MAX_USER_ROLES {
                    return Err(format!(
                        "user \"{name}\" holds {MAX_USER_ROLES} roles already (the limit)"
                    ));
                }
                u.roles.insert(role.clone());
            }
            AuthOp::UserRevokeRole { name, role } => {
                let u = self.users.get_mut(name).ok_or_else(|| no_user(name))?;
                if !u.roles.remove(role) {
                    return Err(format!("user \"{name}\" does not hold role \"{role}\""));
                }
            }
            AuthOp::RoleAdd { name } => {
                if name == ADMIN_ROLE {
                    return Err("role \"admin\" is built in and cannot be added".into());
                }
                if self.roles.contains_key(name) {
                    return Err(format!("role \"{name}\" already exists"));
                }
                if self.roles.len() >= MAX_AUTH_ROLES {
                    return Err(format!(
                        "there are {MAX_AUTH_ROLES} roles already (the limit); delete one first"
                    ));
                }
                self.roles.insert(name.clone(), BTreeSet::new());
            }
            AuthOp::RoleDelete { name } => {
                if !self.roles.contains_key(name) {
                    return Err(no_role(name));
                }
                if let Some((u, _)) = self.users.iter().find(|(_, u)| u.roles.contains(name)) {
                    return Err(format!(
                        "role \"{name}\" is held by user \"{u}\"; revoke it from every user first"
                    ));
                }
                self.roles.remove(name);
            }
            AuthOp::RoleGrantPermission { role, grant } => {
                let g = self.roles.get_mut(role).ok_or_else(|| no_role(role))?;
                // One grant per prefix: a new access replaces the old one.
                g.retain(|x| x.prefix != grant.prefix);
                if g.len() >= MAX_ROLE_GRANTS {
                    return Err(format!(
                        "role \"{role}\" holds {MAX_ROLE_GRANTS} grants already (the limit)"
                    ));
                }
                g.insert(grant.clone());
            }
            AuthOp::RoleRevokePermission { role, prefix } => {
                let g = self.roles.get_mut(role).ok_or_else(|| no_role(role))?;
                let before = g.len();
                g.retain(|x| &x.prefix != prefix);
                if g.len() == before {
                    return Err(format!(
                        "role \"{role}\" has no grant on prefix \"{}\"",
                        prefix.escape_ascii()
                    ));
                }
            }
            AuthOp::TokenAdd {
                digest,
                user,
                expires_at_ms,
                configured_user,
            } => {
                if !configured_user && !self.users.contains_key(user) {
                    return Err(no_user(user));
                }
                if self.tokens.contains_key(digest) || self.revoked.contains(digest) {
                    return Err("this token is already known".into());
                }
                // Tokens expired by the new token's own issue time cannot
                // be known here (no clock): count them against the limit.
                if self.tokens.len() >= MAX_AUTH_TOKENS {
                    return Err(format!(
                        "there are {MAX_AUTH_TOKENS} tokens already (the limit); revoke some first"
                    ));
                }
                self.tokens.insert(
                    digest.clone(),
                    AuthToken {
                        user: user.clone(),
                        expires_at_ms: *expires_at_ms,
                    },
                );
            }
            AuthOp::TokenRevoke { digest, configured } => {
                if self.tokens.remove(digest).is_none() {
                    if !configured {
                        return Err("no such token".into());
                    }
                    if self.revoked.contains(digest) {
                        return Err("this token is already revoked".into());
                    }
                    if self.revoked.len() >= MAX_REVOKED_TOKENS {
                        return Err(format!(
                            "{MAX_REVOKED_TOKENS} configured tokens are revoked already (the \
                             limit); remove revoked tokens from the config and restart"
                        ));
                    }
                    self.revoked.insert(digest.clone());
                }
            }
        }
        self.revision = index;
        Ok(())
    }

    /// The state as bytes (what sled stores and a snapshot record holds).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(1).u64(self.revision);
        w.u32(self.users.len() as u32);
        for (name, u) in &self.users {
            w.str(name)
                .opt_bytes(u.password_hash.as_deref().map(str::as_bytes));
            w.u32(u.roles.len() as u32);
            for r in &u.roles {
                w.str(r);
            }
        }
        w.u32(self.roles.len() as u32);
        for (name, grants) in &self.roles {
            w.str(name).u32(grants.len() as u32);
            for g in grants {
                w.bytes(&g.prefix).u8(g.access.code());
            }
        }
        w.u32(self.tokens.len() as u32);
        for (d, t) in &self.tokens {
            w.str(d).str(&t.user).opt_u64(t.expires_at_ms);
        }
        w.u32(self.revoked.len() as u32);
        for d in &self.revoked {
            w.str(d);
        }
        w.into_vec()
    }

    /// Decodes [`AuthState::encode`]'s bytes. Never panics.
    pub fn decode(buf: &[u8]) -> Result<AuthState, WireError> {
        let mut r = Reader::new(buf);
        let v = r.u8("auth state version")?;
        if v != 1 {
            return Err(r.err(format!("unknown auth state version {v}")));
        }
        let mut s = AuthState {
            revision: r.u64("auth revision")?,
            ..AuthState::default()
        };
        let count = |r: &mut Reader<'_>, what: &str| -> Result<usize, WireError> {
            let n = r.u32(what)? as usize;
            if n > r.remaining() {
                return Err(r.err(format!("{what} {n} exceeds the record")));
            }
            Ok(n)
        };
        for _ in 0..count(&mut r, "users")? {
            let name = r.string("user")?;
            let password_hash = match r.opt_bytes("password_hash")? {
                None => None,
                Some(b) => Some(
                    String::from_utf8(b.to_vec())
                        .map_err(|_| r.err("password_hash is not UTF-8"))?,
                ),
            };
            let mut roles = BTreeSet::new();
            for _ in 0..count(&mut r, "user roles")? {
                roles.insert(r.string("role")?);
            }
            s.users.insert(
                name,
                AuthUser {
                    password_hash,
                    roles,
                },
            );
        }
        for _ in 0..count(&mut r, "roles")? {
            let name = r.string("role")?;
            let mut grants = BTreeSet::new();
            for _ in 0..count(&mut r, "grants")? {
                let prefix = r.bytes("prefix")?.to_vec();
                let c = r.u8("access")?;
                grants.insert(Grant {
                    prefix,
                    access: GrantAccess::from_code(c, &r)?,
                });
            }
            s.roles.insert(name, grants);
        }
        for _ in 0..count(&mut r, "tokens")? {
            let d = r.string("token digest")?;
            let user = r.string("token user")?;
            let expires_at_ms = r.opt_u64("token expires_at_ms")?;
            s.tokens.insert(
                d,
                AuthToken {
                    user,
                    expires_at_ms,
                },
            );
        }
        for _ in 0..count(&mut r, "revoked tokens")? {
            s.revoked.insert(r.string("revoked token")?);
        }
        r.finish("auth state")?;
        Ok(s)
    }
}

/// Applies `op` to the state machine's copy of the auth state (copied on
/// write: readers holding the old `Arc` keep a consistent view); sets
/// `changed` when it changed.
pub(crate) fn apply_to_meta(
    state: &mut std::sync::Arc<AuthState>,
    op: &AuthOp,
    index: u64,
    changed: &mut bool,
) -> crate::sm::ApplyResult {
    let mut next = AuthState::clone(state);
    match next.apply(op, index) {
        Ok(()) => {
            *state = std::sync::Arc::new(next);
            *changed = true;
            crate::sm::ApplyResult::AuthChanged { revision: index }
        }
        Err(reason) => crate::sm::ApplyResult::AuthRefused { reason },
    }
}

/// Decodes a snapshot or database record of the auth state.
pub(crate) fn decode_record(buf: &[u8]) -> Result<std::sync::Arc<AuthState>, crate::sm::SmError> {
    AuthState::decode(buf)
        .map(std::sync::Arc::new)
        .map_err(|e| crate::sm::SmError::Corrupt(format!("auth state: {e}")))
}

fn no_user(name: &str) -> String {
    format!("no runtime user \"{name}\" (configured users cannot be changed at runtime)")
}

fn no_role(name: &str) -> String {
    format!("no role \"{name}\"; add it first")
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";

    fn d(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    fn ops() -> Vec<AuthOp> {
        vec![
            AuthOp::RoleAdd { name: "r".into() },
            AuthOp::RoleGrantPermission {
                role: "r".into(),
                grant: Grant {
                    prefix: b"app/".to_vec(),
                    access: GrantAccess::Readwrite,
                },
            },
            AuthOp::UserAdd {
                name: "alice".into(),
                password_hash: Some(H.into()),
            },
            AuthOp::UserGrantRole {
                name: "alice".into(),
                role: "r".into(),
            },
            AuthOp::TokenAdd {
                digest: d('a'),
                user: "alice".into(),
                expires_at_ms: Some(5),
                configured_user: false,
            },
            AuthOp::TokenRevoke {
                digest: d('b'),
                configured: true,
            },
            AuthOp::UserChangePassword {
                name: "alice".into(),
                password_hash: H.into(),
            },
            AuthOp::RoleRevokePermission {
                role: "r".into(),
                prefix: b"app/".to_vec(),
            },
            AuthOp::UserRevokeRole {
                name: "alice".into(),
                role: "r".into(),
            },
            AuthOp::RoleDelete { name: "r".into() },
            AuthOp::UserDelete {
                name: "alice".into(),
            },
        ]
    }

    #[test]
    fn every_op_round_trips_and_applies() {
        let mut s = AuthState::default();
        for (i, op) in ops().into_iter().enumerate() {
            let mut w = Writer::new();
            op.encode(&mut w);
            let buf = w.into_vec();
            let mut r = Reader::new(&buf);
            assert_eq!(AuthOp::decode(&mut r).unwrap(), op);
            r.finish("op").unwrap();
            s.apply(&op, i as u64 + 1)
                .unwrap_or_else(|e| panic!("{op:?}: {e}"));
            assert_eq!(s.revision, i as u64 + 1);
            // The state round-trips at every step.
            assert_eq!(AuthState::decode(&s.encode()).unwrap(), s);
            if i == 4 {
                assert_eq!(s.tokens[&d('a')].user, "alice");
                assert!(s.tokens[&d('a')].is_expired(5));
                assert!(!s.tokens[&d('a')].is_expired(4));
            }
        }
        // Deleting the user removed its token; the configured revocation stays.
        assert!(s.users.is_empty() && s.roles.is_empty() && s.tokens.is_empty());
        assert!(s.revoked.contains(&d('b')));
    }

    #[test]
    fn refusals_change_nothing_and_name_the_problem() {
        let mut s = AuthState::default();
        s.apply(&ops()[0], 1).unwrap();
        s.apply(&ops()[2], 2).unwrap();
        s.apply(&ops()[3], 3).unwrap();
        let before = s.clone();
        for (op, needle) in [
            (ops()[2].clone(), "already exists"),
            (
                AuthOp::RoleDelete { name: "r".into() },
                "held by user \"alice\"",
            ),
            (
                AuthOp::RoleAdd {
                    name: "admin".into(),
                },
                "built in",
            ),
            (
                AuthOp::UserGrantRole {
                    name: "alice".into(),
                    role: "nope".into(),
                },
                "no role \"nope\"",
            ),
            (
                AuthOp::UserDelete { name: "bob".into() },
                "no runtime user \"bob\"",
            ),
            (
                AuthOp::TokenRevoke {
                    digest: d('c'),
                    configured: false,
                },
                "no such token",
            ),
            (
                AuthOp::UserAdd {
                    name: "a:b".into(),
                    password_hash: None,
                },
                "':'",
            ),
            (
                AuthOp::UserAdd {
                    name: "x".into(),
                    password_hash: Some("plain".into()),
                },
                "Argon2",
            ),
        ] {
            let e = s.apply(&op, 9).unwrap_err();
            assert!(e.contains(needle), "{op:?}: {e}");
            assert_eq!(s, before, "{op:?} changed the state");
        }
        // The admin role may be granted without being defined.
        s.apply(
            &AuthOp::UserGrantRole {
                name: "alice".into(),
                role: ADMIN_ROLE.into(),
            },
            10,
        )
        .unwrap();
    }

    #[test]
    fn corrupt_state_bytes_are_an_error_not_a_panic() {
        let mut s = AuthState::default();
        for (i, op) in ops().into_iter().take(6).enumerate() {
            s.apply(&op, i as u64 + 1).unwrap();
        }
        let buf = s.encode();
        for cut in 0..buf.len() {
            assert!(AuthState::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = buf.clone();
        bad[0] = 9;
        assert!(AuthState::decode(&bad).is_err());
    }
}
