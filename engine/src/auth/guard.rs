//! The gate every client RPC passes: who is calling, and may they do this.
//!
//! [`Gate::authenticate`] turns a request's metadata into a [`Caller`]
//! (UNAUTHENTICATED for missing or wrong credentials); the caller's
//! `require*` methods refuse with PERMISSION_DENIED naming the user, the
//! key or prefix and the access needed. With auth disabled every caller is
//! allowed everything.
//!
//! Argon2 is deliberately slow, so successful password verifications are
//! cached (keyed by a sha256 of the presented credentials, never the
//! secret itself) and at most [`VERIFY_SLOTS`] run at once, on blocking
//! threads.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use d_engine_client::status_codec::to_status_with_metadata;
use d_engine_client::Error;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::config::{Access, AuthConfig};
use super::credentials::{sha256_hex, verify_password, Credentials};
use super::perm::{resolve, Permissions};

/// Concurrent Argon2 verifications (each costs ~19 MiB and tens of ms).
pub const VERIFY_SLOTS: usize = 2;
/// Cached successful verifications; the cache is emptied when full.
pub const CACHE_ENTRIES: usize = 4096;

struct User {
    password_hash: Option<String>,
    perms: Arc<Permissions>,
}

/// The authentication state of a node: users, token digests, the cache.
pub struct AuthGuard {
    users: HashMap<String, User>,
    /// sha256 hex of a token → user name.
    tokens: HashMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    slots: Semaphore,
}

/// Shared by the services of one server; cheap to clone.
#[derive(Clone, Default)]
pub struct Gate(Option<Arc<AuthGuard>>);

/// The authenticated identity of one request (`None` inside: auth is off).
#[derive(Clone, Debug)]
pub struct Caller(Option<(String, Arc<Permissions>)>);

fn unauthenticated(msg: impl Into<String>) -> Status {
    to_status_with_metadata(&Error::Unauthenticated(msg.into()), [])
}

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

impl Gate {
    /// A gate that lets everything through.
    pub fn open() -> Gate {
        Gate(None)
    }

    /// The gate for a (validated) config: open unless `enabled`.
    pub fn from_config(cfg: &AuthConfig) -> Gate {
        if !cfg.enabled {
            return Gate(None);
        }
        let perms: BTreeMap<String, Permissions> = resolve(cfg);
        let mut users = HashMap::new();
        let mut tokens = HashMap::new();
        for u in &cfg.users {
            for t in &u.tokens {
                tokens.insert(t.clone(), u.name.clone());
            }
            users.insert(
                u.name.clone(),
                User {
                    password_hash: u.password_hash.clone(),
                    perms: Arc::new(perms.get(&u.name).cloned().unwrap_or_default()),
                },
            );
        }
        Gate(Some(Arc::new(AuthGuard {
            users,
            tokens,
            verified: Mutex::new(HashSet::new()),
            slots: Semaphore::new(VERIFY_SLOTS),
        })))
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Who sent a request with this metadata. UNAUTHENTICATED if auth is on
    /// and the credentials are missing, malformed or wrong.
    pub async fn authenticate(&self, md: &MetadataMap) -> Result<Caller, Status> {
        let Some(g) = &self.0 else {
            return Ok(Caller(None));
        };
        let creds = Credentials::from_metadata(md)
            .map_err(unauthenticated)?
            .ok_or_else(|| {
                unauthenticated(
                    "authentication required: send `authorization: Basic base64(user:password)` \
                     or `authorization: Bearer <token>` metadata",
                )
            })?;
        let user = g.verify(&creds).await?;
        let perms = g.users[&user].perms.clone();
        Ok(Caller(Some((user, perms))))
    }
}

impl AuthGuard {
    /// The user these credentials prove, or UNAUTHENTICATED.
    async fn verify(&self, creds: &Credentials) -> Result<String, Status> {
        match creds {
            Credentials::Bearer(t) => self
                .tokens
                .get(&sha256_hex(t.as_bytes()))
                .cloned()
                .ok_or_else(|| unauthenticated("invalid token")),
            Credentials::Basic { user, password } => {
                let wrong =
                    || unauthenticated(format!("unknown user or wrong password for \"{user}\""));
                let phc = self
                    .users
                    .get(user)
                    .and_then(|u| u.password_hash.clone())
                    .ok_or_else(wrong)?;
                let key = creds.fingerprint();
                if self.verified.lock().expect("cache lock").contains(&key) {
                    return Ok(user.clone());
                }
                let _slot = self
                    .slots
                    .acquire()
                    .await
                    .map_err(|_| unauthenticated("the server is shutting down"))?;
                let pw = password.clone();
                let ok = tokio::task::spawn_blocking(move || verify_password(&pw, &phc))
                    .await
                    .unwrap_or(false);
                if !ok {
                    return Err(wrong());
                }
                let mut cache = self.verified.lock().expect("cache lock");
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(key);
                Ok(user.clone())
            }
        }
    }
}

impl Caller {
    /// The user name (`None` when auth is off).
    pub fn user(&self) -> Option<&str> {
        self.0.as_ref().map(|(u, _)| u.as_str())
    }

    fn denied(&self, what: &str, target: &[u8], need: Access) -> Status {
        let user = self.user().unwrap_or_default();
        let shown = show(target);
        let hint = if what == "prefix" {
            " (a scan or watch needs one read grant covering the whole prefix)"
        } else {
            ""
        };
        to_status_with_metadata(
            &Error::PermissionDenied(format!(
                "user \"{user}\" lacks {} access to {what} \"{shown}\"{hint}",
                need.as_str()
            )),
            [
                ("user".to_string(), user.to_string()),
                (what.to_string(), shown),
                ("access".to_string(), need.as_str().to_string()),
            ],
        )
    }

    fn allows(&self, target: &[u8], need: Access) -> bool {
        match &self.0 {
            None => true,
            Some((_, p)) => p.allows(target, need),
        }
    }

    /// `need` on one key.
    pub fn require_key(&self, key: &[u8], need: Access) -> Result<(), Status> {
        if self.allows(key, need) {
            Ok(())
        } else {
            Err(self.denied("key", key, need))
        }
    }

    /// `need` on every key under `prefix` (scans and prefix watches).
    pub fn require_prefix(&self, prefix: &[u8], need: Access) -> Result<(), Status> {
        if self.allows(prefix, need) {
            Ok(())
        } else {
            Err(self.denied("prefix", prefix, need))
        }
    }

    /// The built-in admin role (`rpc` names the call in the error).
    pub fn require_admin(&self, rpc: &str) -> Result<(), Status> {
        match &self.0 {
            None => Ok(()),
            Some((_, p)) if p.admin => Ok(()),
            Some((user, _)) => Err(to_status_with_metadata(
                &Error::PermissionDenied(format!(
                    "user \"{user}\" lacks the admin role needed for {rpc}"
                )),
                [
                    ("user".to_string(), user.clone()),
                    ("role".to_string(), "admin".to_string()),
                ],
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::{GrantConfig, RoleConfig, UserConfig};
    use crate::auth::credentials::hash_password;
    use tonic::Code;

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", v.parse().unwrap());
        m
    }

    fn gate() -> (Gate, String) {
        let token = "tok-123";
        let cfg = AuthConfig {
            enabled: true,
            forward_token: None,
            roles: vec![RoleConfig {
                name: "reader".into(),
                grants: vec![GrantConfig {
                    prefix: "app/".into(),
                    access: Access::Read,
                }],
            }],
            users: vec![
                UserConfig {
                    name: "alice".into(),
                    password_hash: Some(hash_password("pw").unwrap()),
                    tokens: vec![],
                    roles: vec!["reader".into()],
                },
                UserConfig {
                    name: "root".into(),
                    password_hash: None,
                    tokens: vec![sha256_hex(token.as_bytes())],
                    roles: vec!["admin".into()],
                },
            ],
        };
        cfg.validate().unwrap();
        (Gate::from_config(&cfg), token.to_string())
    }

    fn basic(u: &str, p: &str) -> String {
        Credentials::Basic {
            user: u.into(),
            password: p.into(),
        }
        .header_value()
    }

    #[tokio::test]
    async fn passwords_tokens_and_refusals() {
        let (g, token) = gate();
        let alice = g.authenticate(&md(&basic("alice", "pw"))).await.unwrap();
        assert_eq!(alice.user(), Some("alice"));
        // Cached the second time (same result).
        let again = g.authenticate(&md(&basic("alice", "pw"))).await.unwrap();
        assert_eq!(again.user(), Some("alice"));

        for bad in [
            basic("alice", "nope"),
            basic("bob", "pw"),
            basic("root", ""),
            "Bearer wrong".to_string(),
            "Digest x".to_string(),
        ] {
            let e = g.authenticate(&md(&bad)).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{bad}");
        }
        let e = g.authenticate(&MetadataMap::new()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert!(e.message().contains("authentication required"));

        let root = g
            .authenticate(&md(&format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(root.user(), Some("root"));
        root.require_admin("Admin.Promote").unwrap();
        root.require_prefix(b"", Access::Readwrite).unwrap();
    }

    #[tokio::test]
    async fn permission_denied_names_user_target_and_access() {
        let (g, _) = gate();
        let alice = g.authenticate(&md(&basic("alice", "pw"))).await.unwrap();
        alice.require_key(b"app/1", Access::Read).unwrap();
        alice.require_prefix(b"app/x", Access::Read).unwrap();
        let e = alice.require_key(b"app/1", Access::Readwrite).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(
            e.message(),
            "user \"alice\" lacks readwrite access to key \"app/1\""
        );
        let e = alice.require_prefix(b"ap", Access::Read).unwrap_err();
        assert!(e.message().contains("prefix \"ap\""), "{}", e.message());
        let e = alice.require_admin("Admin.AddLearner").unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.message().contains("admin role"));
        // The client decodes it as PermissionDenied.
        let err = d_engine_client::status_codec::from_status(&e);
        assert_eq!(err.code(), d_engine_client::ErrorCode::PermissionDenied);
    }

    #[tokio::test]
    async fn an_open_gate_allows_everything() {
        let c = Gate::open()
            .authenticate(&MetadataMap::new())
            .await
            .unwrap();
        assert_eq!(c.user(), None);
        c.require_admin("x").unwrap();
        c.require_key(b"k", Access::Readwrite).unwrap();
        assert!(!Gate::from_config(&AuthConfig::default()).enabled());
    }
}
