//! `[auth]`: authentication and authorization of the client API, and its validation.
//!
//! ```toml
//! [auth]
//! enabled = true
//!
//! [[auth.roles]]
//! name = "app-reader"
//! grants = [{ prefix = "app/", access = "read" }]
//!
//! [[auth.users]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # d-engine-server hash-password
//! tokens = ["<sha256 hex of a token>"]                    # d-engine-server gen-token
//! roles = ["app-reader"]
//! ```
//!
//! The role `admin` is built in (every key, read-write, and the Admin
//! service) and cannot be redefined. Every error names the offending key,
//! e.g. `auth.users[2].roles`.
//!
//! These types live under `config` (and `crate::auth` re-exports them as
//! `crate::auth::config`) so that the configuration imports nothing above
//! it. [`sha256_hex`] lives here too, because validation checks
//! `forward_token` against the users' token digests; `crate::auth`
//! uses it from here.
//!
//! Over 500 lines with its tests: the section's types, their validation
//! and the tests of that validation are kept in one file.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Config, ConfigError, MAX_KEY_BYTES};

/// Name of the built-in role that may do everything, the Admin service included.
pub const ADMIN_ROLE: &str = "admin";

/// What a grant allows on the keys under its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// get, get_multi, scan_prefix, watch.
    Read,
    /// Everything `read` allows plus put, delete and compare_and_swap.
    Readwrite,
}

impl Access {
    /// True if holding `self` is enough for an operation needing `need`.
    pub fn satisfies(self, need: Access) -> bool {
        self >= need
    }

    /// The config spelling (`"read"`, `"readwrite"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Readwrite => "readwrite",
        }
    }
}

/// Argon2 memory cost accepted in a password hash, in KiB (8 MiB ..= 1 GiB).
pub const ARGON2_M_COST_KIB: (u32, u32) = (8 * 1024, 1024 * 1024);
/// Argon2 passes accepted in a password hash.
pub const ARGON2_T_COST: (u32, u32) = (1, 16);
/// Argon2 lanes accepted in a password hash.
pub const ARGON2_P_COST: (u32, u32) = (1, 16);
/// Longest user name, in bytes (it travels in every write with a write id).
pub const MAX_USER_NAME_BYTES: usize = d_engine_storage::command::MAX_USER_BYTES;

/// Authentication and authorization of the client API. Off by default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Require credentials on every client RPC (Kv, Cluster, Admin).
    /// Health and reflection stay open. Default false.
    pub enabled: bool,
    /// A token (plaintext) this node's embedded client sends when it
    /// forwards a write or read to the leader. Its sha256 must be one of
    /// some user's `tokens`; that user's roles then apply to forwarded
    /// requests. Unset: forwarded requests carry no credentials (and are
    /// refused by a leader with auth enabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_token: Option<String>,
    /// Allow auth on a client API without TLS listening on a non-loopback
    /// address (passwords and tokens then cross the network in clear).
    /// Default false: such a node refuses to start. Auth on plaintext is
    /// always logged as a warning at start.
    pub allow_plaintext: bool,
    /// Failed logins allowed per user name and per source IP per minute
    /// (token buckets this deep, refilled at this rate); beyond it logins
    /// are refused with OVERLOADED "too many failed logins ..., retry
    /// after N s". Default 10; 1..=10,000.
    pub failed_logins_per_minute: u32,
    pub roles: Vec<RoleConfig>,
    pub users: Vec<UserConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            forward_token: None,
            allow_plaintext: false,
            failed_logins_per_minute: 10,
            roles: Vec::new(),
            users: Vec::new(),
        }
    }
}

/// A named set of grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub name: String,
    #[serde(default)]
    pub grants: Vec<GrantConfig>,
}

/// `access` on every key starting with `prefix` (`""` = every key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConfig {
    pub prefix: String,
    pub access: Access,
}

/// A user: a name, a password (as an Argon2 PHC hash) and/or tokens (as
/// sha256 hex digests), and the roles granting its permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub tokens: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// sha256 of `data` as 64 lowercase hex digits (how tokens are configured).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn err(key: String, msg: impl Into<String>) -> ConfigError {
    ConfigError::new(key, msg)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What secrets are replaced with in [`AuthConfig::redacted`].
pub const REDACTED: &str = "<redacted>";

impl AuthConfig {
    /// A copy without secrets, for display: `forward_token`, every
    /// `password_hash` and every token digest become [`REDACTED`] (a
    /// digest or hash lets an attacker guess offline).
    pub fn redacted(&self) -> AuthConfig {
        let mut c = self.clone();
        if c.forward_token.is_some() {
            c.forward_token = Some(REDACTED.into());
        }
        for u in &mut c.users {
            if u.password_hash.is_some() {
                u.password_hash = Some(REDACTED.into());
            }
            for t in &mut u.tokens {
                *t = REDACTED.into();
            }
        }
        c
    }

    /// Checks every entry (also when disabled, so mistakes surface early).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut roles = BTreeSet::new();
        for (i, r) in self.roles.iter().enumerate() {
            let key = format!("auth.roles[{i}]");
            if r.name.is_empty() {
                return Err(err(format!("{key}.name"), "must not be empty"));
            }
            if r.name == ADMIN_ROLE {
                return Err(err(
                    format!("{key}.name"),
                    "role \"admin\" is built in (everything, including the Admin service) and \
                     cannot be redefined; pick another name",
                ));
            }
            if !roles.insert(r.name.as_str()) {
                return Err(err(
                    format!("{key}.name"),
                    format!("role \"{}\" is defined twice", r.name),
                ));
            }
            for (j, g) in r.grants.iter().enumerate() {
                if g.prefix.len() > MAX_KEY_BYTES {
                    return Err(err(
                        format!("{key}.grants[{j}].prefix"),
                        format!("is {} bytes; the limit is {MAX_KEY_BYTES}", g.prefix.len()),
                    ));
                }
            }
        }

        let mut names = BTreeSet::new();
        let mut token_owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = format!("auth.users[{i}]");
            if u.name.is_empty() || u.name.contains(':') || u.name.chars().any(char::is_control) {
                return Err(err(
                    format!("{key}.name"),
                    format!(
                        "\"{}\" is not a valid user name: it must be non-empty, without ':' or \
                         control characters",
                        u.name.escape_debug()
                    ),
                ));
            }
            if u.name.len() > MAX_USER_NAME_BYTES {
                return Err(err(
                    format!("{key}.name"),
                    format!(
                        "is {} bytes; the limit is {MAX_USER_NAME_BYTES}",
                        u.name.len()
                    ),
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(err(
                    format!("{key}.name"),
                    format!("user \"{}\" is defined twice", u.name),
                ));
            }
            if u.password_hash.is_none() && u.tokens.is_empty() {
                return Err(err(
                    key.clone(),
                    format!(
                        "user \"{}\" has neither password_hash nor tokens, so cannot log in",
                        u.name
                    ),
                ));
            }
            if let Some(h) = &u.password_hash {
                let parsed = argon2::PasswordHash::new(h)
                    .ok()
                    .filter(|p| p.algorithm.as_str().starts_with("argon2"));
                let Some(parsed) = parsed else {
                    return Err(err(
                        format!("{key}.password_hash"),
                        "is not an Argon2 PHC string ($argon2id$v=19$...); create one with \
                         `d-engine-server hash-password`",
                    ));
                };
                check_argon2_cost(&format!("{key}.password_hash"), &parsed)?;
            }
            for (j, t) in u.tokens.iter().enumerate() {
                if !is_sha256_hex(t) {
                    return Err(err(
                        format!("{key}.tokens[{j}]"),
                        "must be the sha256 of a token as 64 lowercase hex digits (see \
                         `d-engine-server gen-token`)",
                    ));
                }
                if let Some(other) = token_owner.insert(t, &u.name) {
                    return Err(err(
                        format!("{key}.tokens[{j}]"),
                        format!("this token already belongs to user \"{other}\""),
                    ));
                }
            }
            for (j, r) in u.roles.iter().enumerate() {
                if r != ADMIN_ROLE && !roles.contains(r.as_str()) {
                    return Err(err(
                        format!("{key}.roles"),
                        format!("unknown role \"{r}\" (roles[{j}]); define it in [[auth.roles]] or use \"admin\""),
                    ));
                }
            }
        }

        if !(1..=10_000).contains(&self.failed_logins_per_minute) {
            return Err(err(
                "auth.failed_logins_per_minute".into(),
                format!(
                    "is {}; it must be in 1..=10000",
                    self.failed_logins_per_minute
                ),
            ));
        }
        if self.enabled && self.users.is_empty() {
            return Err(err(
                "auth.users".into(),
                "auth is enabled but no users are defined, so no client could connect",
            ));
        }
        if let Some(t) = &self.forward_token {
            if t.is_empty() {
                return Err(err("auth.forward_token".into(), "must not be empty"));
            }
            let digest = sha256_hex(t.as_bytes());
            if !token_owner.contains_key(digest.as_str()) {
                return Err(err(
                    "auth.forward_token".into(),
                    format!(
                        "matches no user's tokens; add its sha256 \"{digest}\" to the tokens of \
                         the user forwarded requests should act as"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The Argon2 cost of a configured hash is bounded: every login against it
/// pays that cost (an absurd memory cost would let any client exhaust the
/// node's memory; a tiny one makes the hash easy to crack).
fn check_argon2_cost(key: &str, h: &argon2::PasswordHash<'_>) -> Result<(), ConfigError> {
    let p = argon2::Params::try_from(h).map_err(|e| {
        err(
            key.to_string(),
            format!("has unreadable Argon2 parameters ({e}); create it with `d-engine-server hash-password`"),
        )
    })?;
    for (name, v, (lo, hi), unit) in [
        ("m", p.m_cost(), ARGON2_M_COST_KIB, " KiB"),
        ("t", p.t_cost(), ARGON2_T_COST, ""),
        ("p", p.p_cost(), ARGON2_P_COST, ""),
    ] {
        if !(lo..=hi).contains(&v) {
            return Err(err(
                key.to_string(),
                format!(
                    "has Argon2 parameter {name}={v}{unit}; it must be in {lo}..={hi}{unit} \
                     (every login pays this cost); re-hash the password with \
                     `d-engine-server hash-password` (m=19456, t=2, p=1)"
                ),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// `[auth]` over a plaintext client API that listens beyond loopback
    /// would send passwords and tokens in clear: refused unless
    /// `auth.allow_plaintext = true` (issue 16, finding 7).
    pub(super) fn validate_auth_transport(&self) -> Result<(), ConfigError> {
        if !self.auth.enabled
            || self.tls.client_api
            || self.auth.allow_plaintext
            || self.client_addr.is_empty()
            || super::is_loopback_addr(&self.client_addr)
        {
            return Ok(());
        }
        Err(ConfigError::new(
            "auth.allow_plaintext",
            format!(
                "auth is enabled but the client API at {} is plaintext and not on loopback, so \
                 passwords and tokens would cross the network in clear; set tls.client_api = true \
                 (see docs/tls.md), bind client_addr to 127.0.0.1, or set \
                 auth.allow_plaintext = true to accept the risk",
                self.client_addr
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$dUzWt5xJzfFVNhPkJX4gcqiq1dh9Mzs3ZVGNaOgXvS8";

    fn parse(text: &str) -> Result<AuthConfig, ConfigError> {
        let c: AuthConfig = toml::from_str(text).map_err(|e| err(String::new(), e.to_string()))?;
        c.validate().map(|_| c)
    }

    fn good() -> String {
        format!(
            r#"
            enabled = true
            [[roles]]
            name = "r"
            grants = [{{ prefix = "app/", access = "read" }}, {{ prefix = "", access = "readwrite" }}]
            [[users]]
            name = "alice"
            password_hash = "{HASH}"
            roles = ["r", "admin"]
            [[users]]
            name = "bot"
            tokens = ["{}"]
            "#,
            "a".repeat(64)
        )
    }

    #[test]
    fn a_full_section_parses() {
        let c = parse(&good()).unwrap();
        assert_eq!(c.users.len(), 2);
        assert_eq!(c.roles[0].grants[0].access, Access::Read);
        assert!(Access::Readwrite.satisfies(Access::Read));
        assert!(!Access::Read.satisfies(Access::Readwrite));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                good().replace("\"r\", \"admin\"", "\"r\", \"x\""),
                "auth.users[0].roles",
                "unknown role \"x\"",
            ),
            (
                good().replace(HASH, "plain"),
                "auth.users[0].password_hash",
                "PHC",
            ),
            (
                good().replace(&"a".repeat(64), "abc"),
                "auth.users[1].tokens[0]",
                "sha256",
            ),
            (
                good().replace("name = \"bot\"", "name = \"alice\""),
                "auth.users[1].name",
                "twice",
            ),
            (
                good().replace("name = \"bot\"", "name = \"a:b\""),
                "auth.users[1].name",
                "':'",
            ),
            (
                good().replace("name = \"r\"", "name = \"admin\""),
                "auth.roles[0].name",
                "built in",
            ),
            (
                good().replace(&format!("tokens = [\"{}\"]", "a".repeat(64)), ""),
                "auth.users[1]",
                "neither",
            ),
            ("enabled = true".to_string(), "auth.users", "no users"),
            (
                format!("forward_token = \"t\"\n{}", good()),
                "auth.forward_token",
                "matches no user",
            ),
        ];
        for (text, key, needle) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn redacted_hides_every_secret() {
        let digest = sha256_hex(b"secret");
        let text = good().replace(&"a".repeat(64), &digest);
        let c = parse(&format!("forward_token = \"secret\"\n{text}")).unwrap();
        let shown = toml::to_string(&c.redacted()).unwrap();
        for secret in ["secret\"", digest.as_str(), HASH] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains(REDACTED));
        assert_eq!(c.redacted().users.len(), c.users.len());
    }

    #[test]
    fn new_limits_are_checked() {
        let e = parse(&format!("failed_logins_per_minute = 0\n{}", good())).unwrap_err();
        assert_eq!(e.key, "auth.failed_logins_per_minute", "{e}");
        let long = "u".repeat(MAX_USER_NAME_BYTES + 1);
        let e =
            parse(&good().replace("name = \"bot\"", &format!("name = \"{long}\""))).unwrap_err();
        assert_eq!(e.key, "auth.users[1].name", "{e}");
        assert!(e.to_string().contains("255"), "{e}");
    }

    #[test]
    fn forward_token_must_belong_to_a_user() {
        let digest = sha256_hex(b"secret");
        let text = good().replace(&"a".repeat(64), &digest);
        parse(&format!("forward_token = \"secret\"\n{text}")).unwrap();
    }
}
