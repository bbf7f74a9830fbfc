//! The `[auth]` configuration section and its validation.
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

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::credentials::sha256_hex;
use crate::config::{ConfigError, MAX_KEY_BYTES};

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

/// Authentication and authorization of the client API. Off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub roles: Vec<RoleConfig>,
    pub users: Vec<UserConfig>,
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

fn err(key: String, msg: impl Into<String>) -> ConfigError {
    ConfigError::new(key, msg)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl AuthConfig {
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
                let ok = argon2::PasswordHash::new(h)
                    .map(|p| p.algorithm.as_str().starts_with("argon2"))
                    .unwrap_or(false);
                if !ok {
                    return Err(err(
                        format!("{key}.password_hash"),
                        "is not an Argon2 PHC string ($argon2id$v=19$...); create one with \
                         `d-engine-server hash-password`",
                    ));
                }
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
    fn forward_token_must_belong_to_a_user() {
        let digest = sha256_hex(b"secret");
        let text = good().replace(&"a".repeat(64), &digest);
        parse(&format!("forward_token = \"secret\"\n{text}")).unwrap();
    }
}
