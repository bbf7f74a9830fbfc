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
//! threads, with at most [`MAX_VERIFY_QUEUE`] waiting: a full queue is
//! refused at once (OVERLOADED, retryable) instead of growing.
//!
//! # Hostile callers
//!
//! - An unknown user name (or a user without a password) is verified
//!   against a dummy hash with the same Argon2 cost as the configured
//!   users', so the time of a refusal does not tell which users exist.
//! - Every failed login is logged at WARN with the user name and the peer
//!   address (never the secret), and counted in two token buckets: one per
//!   user name and one per source IP, each `auth.failed_logins_per_minute`
//!   deep and refilled at that rate. While either is empty, logins that
//!   would need verification are refused with OVERLOADED
//!   (RESOURCE_EXHAUSTED) "too many failed logins ..., retry after N s"
//!   before any Argon2 work. Credentials already verified (cached) and
//!   valid tokens are not guesses and still pass.
//!
//! Over 500 lines only because its unit tests sit beside it (the code
//! itself is under ~520 lines).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use d_engine_api::status_codec::to_status_with_metadata;
use d_engine_api::Error;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::config::{Access, AuthConfig};
use super::credentials::{dummy_password_hash, sha256_hex, verify_password, Credentials};
use super::perm::{resolve, Permissions};
use super::replicated::{
    config_roles, invalid_reason, live_permissions, now_ms, AuthSource, Proof,
};
use d_engine_storage::auth::AuthState;

/// Concurrent Argon2 verifications (each costs ~19 MiB and tens of ms).
pub const VERIFY_SLOTS: usize = 2;
/// Password verifications waiting for a slot, at most; one more is refused
/// at once with OVERLOADED.
pub const MAX_VERIFY_QUEUE: usize = 64;
/// Cached successful verifications; the cache is emptied when full.
pub const CACHE_ENTRIES: usize = 4096;
/// Failed-login buckets tracked (users and sources each); when full, idle
/// (refilled) buckets are dropped, and if none is idle a new name or source
/// counts as limited (fail closed).
pub const MAX_TRACKED_FAILURES: usize = 16_384;

struct User {
    password_hash: Option<String>,
    perms: Arc<Permissions>,
}

/// The Argon2 check (a function so tests can count or slow it).
type Verifier = fn(&str, &str) -> bool;

/// The authentication state of a node: users, token digests, the cache.
pub struct AuthGuard {
    users: HashMap<String, User>,
    /// sha256 hex of a token → user name.
    tokens: HashMap<String, String>,
    verified: Mutex<HashSet<[u8; 32]>>,
    slots: Semaphore,
    /// Verifications waiting for or holding a slot.
    queued: AtomicUsize,
    /// Verified against when the user is unknown or has no password; made
    /// on first need with the cost of `dummy_model`.
    dummy_hash: std::sync::OnceLock<String>,
    dummy_model: Option<String>,
    verifier: Verifier,
    /// Argon2 verifications run (for tests and diagnostics).
    verifications: AtomicU64,
    failures: Mutex<FailureLimiter>,
    /// The replicated users, roles and tokens (none: config only).
    live: std::sync::OnceLock<AuthSource>,
    /// The configured roles (runtime users may hold them).
    config_roles: BTreeMap<String, Vec<(Vec<u8>, Access)>>,
}

/// Token buckets of failed logins per user name and per source IP.
struct FailureLimiter {
    /// Bucket depth and refills per minute.
    per_minute: u32,
    users: HashMap<String, Bucket>,
    sources: HashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl FailureLimiter {
    fn new(per_minute: u32) -> Self {
        FailureLimiter {
            per_minute: per_minute.max(1),
            users: HashMap::new(),
            sources: HashMap::new(),
        }
    }

    /// `Some(seconds to wait)` when `user` or `source` has no failed logins
    /// left.
    fn limited(&mut self, user: Option<&str>, source: Option<IpAddr>, now: Instant) -> Option<u64> {
        let pm = self.per_minute;
        let mut wait = 0;
        if let Some(u) = user {
            wait = wait.max(bucket_wait(&mut self.users, u, pm, now));
        }
        if let Some(ip) = source {
            wait = wait.max(bucket_wait(&mut self.sources, &ip, pm, now));
        }
        (wait > 0).then_some(wait)
    }

    /// Counts one failure against `user` and `source`.
    fn fail(&mut self, user: Option<&str>, source: Option<IpAddr>, now: Instant) {
        let pm = self.per_minute;
        if let Some(u) = user {
            bucket_take(&mut self.users, u, pm, now);
        }
        if let Some(ip) = source {
            bucket_take(&mut self.sources, &ip, pm, now);
        }
    }
}

impl Bucket {
    /// Refilled to `now` at `per_minute` per minute, at most `per_minute`.
    fn refilled(self, per_minute: u32, now: Instant) -> Bucket {
        let rate = per_minute as f64 / 60.0;
        Bucket {
            tokens: (self.tokens + now.duration_since(self.at).as_secs_f64() * rate)
                .min(per_minute as f64),
            at: now,
        }
    }
}

/// Seconds until the bucket of `key` holds a token (0: it does). An
/// untracked key in a full map counts as limited (fail closed).
fn bucket_wait<K, Q>(map: &mut HashMap<K, Bucket>, key: &Q, per_minute: u32, now: Instant) -> u64
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    let rate = per_minute as f64 / 60.0;
    if let Some(b) = map.get_mut(key) {
        *b = b.refilled(per_minute, now);
        return if b.tokens >= 1.0 {
            0
        } else {
            ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64
        };
    }
    if map.len() >= MAX_TRACKED_FAILURES {
        prune(map, per_minute, now);
        if map.len() >= MAX_TRACKED_FAILURES {
            return (1.0 / rate).ceil() as u64;
        }
    }
    0
}

/// Takes one token from the bucket of `key` (a new bucket starts full).
fn bucket_take<K, Q>(map: &mut HashMap<K, Bucket>, key: &Q, per_minute: u32, now: Instant)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
{
    if let Some(b) = map.get_mut(key) {
        let mut nb = b.refilled(per_minute, now);
        nb.tokens = (nb.tokens - 1.0).max(0.0);
        *b = nb;
        return;
    }
    if map.len() >= MAX_TRACKED_FAILURES {
        prune(map, per_minute, now);
    }
    if map.len() < MAX_TRACKED_FAILURES {
        map.insert(
            key.to_owned(),
            Bucket {
                tokens: per_minute as f64 - 1.0,
                at: now,
            },
        );
    }
}

/// Drops the buckets that have refilled completely.
fn prune<K>(map: &mut HashMap<K, Bucket>, per_minute: u32, now: Instant) {
    map.retain(|_, b| b.refilled(per_minute, now).tokens < per_minute as f64);
}

/// Shared by the services of one server; cheap to clone.
#[derive(Clone, Default)]
pub struct Gate(Option<Arc<AuthGuard>>);

/// The authenticated identity of one request (`None` inside: auth is off),
/// and what proved it.
#[derive(Clone, Debug)]
pub struct Caller(Option<(String, Arc<Permissions>)>, Option<Proof>);

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
        Self::with_verifier(cfg, verify_password)
    }

    fn with_verifier(cfg: &AuthConfig, verifier: Verifier) -> Gate {
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
        // Same cost as the (first) configured password hash.
        let model = cfg.users.iter().find_map(|u| u.password_hash.clone());
        Gate(Some(Arc::new(AuthGuard {
            users,
            tokens,
            verified: Mutex::new(HashSet::new()),
            slots: Semaphore::new(VERIFY_SLOTS),
            queued: AtomicUsize::new(0),
            dummy_hash: std::sync::OnceLock::new(),
            dummy_model: model,
            verifier,
            verifications: AtomicU64::new(0),
            failures: Mutex::new(FailureLimiter::new(cfg.failed_logins_per_minute)),
            live: std::sync::OnceLock::new(),
            config_roles: config_roles(cfg),
        })))
    }

    /// Also accepts the replicated users and tokens `source` reads (see
    /// [`super::replicated`]); set once, before serving. No effect on an
    /// open gate.
    pub fn with_replicated(self, source: AuthSource) -> Gate {
        if let Some(g) = &self.0 {
            let _ = g.live.set(source);
        }
        self
    }

    /// The replicated auth state's revision (0: none, or auth off): it
    /// changes whenever a user, role or token changes.
    pub fn revision(&self) -> u64 {
        self.0.as_ref().map_or(0, |g| g.live().revision)
    }

    /// Whether `caller`'s credentials still hold, and its permissions now:
    /// UNAUTHENTICATED when its token was revoked or expired, or its user
    /// deleted or its password changed (streams that outlive a request,
    /// like watches, call this when [`Gate::revision`] moves).
    pub fn recheck(&self, caller: &Caller) -> Result<Caller, Status> {
        let (Some(g), Some((user, perms)), Some(proof)) = (&self.0, &caller.0, &caller.1) else {
            return Ok(caller.clone());
        };
        let state = g.live();
        if let Some(why) = invalid_reason(proof, &state, now_ms()) {
            return Err(unauthenticated(format!(
                "{why}; authenticate again (user \"{user}\")"
            )));
        }
        let perms = match proof {
            Proof::Config | Proof::ConfigToken(_) => perms.clone(),
            Proof::Token(_) | Proof::Password { .. } => g.perms_of(user, &state),
        };
        Ok(Caller(Some((user.clone(), perms)), Some(proof.clone())))
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Who sent `req`: [`Gate::authenticate_from`] with the request's
    /// metadata and peer address.
    pub fn authenticate_request<'a, T>(
        &'a self,
        req: &'a Request<T>,
    ) -> impl std::future::Future<Output = Result<Caller, Status>> + Send + 'a {
        // Only the metadata is held across the await (T need not be Sync).
        let (md, peer) = (req.metadata(), req.remote_addr());
        self.authenticate_from(md, peer)
    }

    /// Who sent a request with this metadata (no peer address known).
    pub async fn authenticate(&self, md: &MetadataMap) -> Result<Caller, Status> {
        self.authenticate_from(md, None).await
    }

    /// Who sent a request with this metadata from `peer`. UNAUTHENTICATED if
    /// auth is on and the credentials are missing, malformed or wrong;
    /// OVERLOADED (RESOURCE_EXHAUSTED) when the user or the source has too
    /// many recent failed logins, or the Argon2 queue is full.
    pub async fn authenticate_from(
        &self,
        md: &MetadataMap,
        peer: Option<SocketAddr>,
    ) -> Result<Caller, Status> {
        let Some(g) = &self.0 else {
            return Ok(Caller(None, None));
        };
        let creds = Credentials::from_metadata(md)
            .map_err(unauthenticated)?
            .ok_or_else(|| {
                unauthenticated(
                    "authentication required: send `authorization: Basic base64(user:password)` \
                     or `authorization: Bearer <token>` metadata",
                )
            })?;
        let (user, proof) = g.verify(&creds, peer).await?;
        let perms = g.perms_of(&user, &g.live());
        Ok(Caller(Some((user, perms)), Some(proof)))
    }

    /// Argon2 verifications this gate has run (0 when auth is off).
    pub fn verifications(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |g| g.verifications.load(Ordering::Relaxed))
    }
}

fn overloaded(msg: String, retry_after_s: u64) -> Status {
    to_status_with_metadata(
        &Error::Overloaded(msg),
        [("retry_after_s".to_string(), retry_after_s.to_string())],
    )
}

/// Releases a place in the verification queue.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl AuthGuard {
    fn live(&self) -> Arc<AuthState> {
        self.live.get().map(|f| f()).unwrap_or_default()
    }

    /// A configured user's permissions, else a runtime user's.
    fn perms_of(&self, user: &str, state: &AuthState) -> Arc<Permissions> {
        match self.users.get(user) {
            Some(u) => u.perms.clone(),
            None => Arc::new(live_permissions(state, &self.config_roles, user)),
        }
    }

    fn dummy_hash(&self) -> &str {
        self.dummy_hash
            .get_or_init(|| dummy_password_hash(self.dummy_model.as_deref()))
    }

    /// The user these credentials prove and how, or UNAUTHENTICATED /
    /// OVERLOADED. Configured users and tokens first, then the replicated
    /// ones (see [`super::replicated`]).
    async fn verify(
        &self,
        creds: &Credentials,
        peer: Option<SocketAddr>,
    ) -> Result<(String, Proof), Status> {
        let source = peer.map(|p| p.ip());
        let shown_peer = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
        let live = self.live();
        match creds {
            Credentials::Bearer(t) => {
                let digest = sha256_hex(t.as_bytes());
                if live.revoked.contains(&digest) {
                    self.refuse(None, source, &shown_peer, "revoked token")?;
                    return Err(unauthenticated(
                        "the token was revoked; ask an administrator for a new one",
                    ));
                }
                if let Some(u) = self.tokens.get(&digest) {
                    return Ok((u.clone(), Proof::ConfigToken(digest)));
                }
                if let Some(tok) = live.tokens.get(&digest) {
                    if tok.is_expired(now_ms()) {
                        return Err(unauthenticated(format!(
                            "the token expired at unix ms {}; create a new one (`dengine token \
                             create`)",
                            tok.expires_at_ms.unwrap_or_default()
                        )));
                    }
                    if self.users.contains_key(&tok.user) || live.users.contains_key(&tok.user) {
                        return Ok((tok.user.clone(), Proof::Token(digest)));
                    }
                }
                self.refuse(None, source, &shown_peer, "invalid token")?;
                Err(unauthenticated("invalid token"))
            }
            Credentials::Basic { user, password } => {
                // The hash the password must match: a configured user's,
                // else a runtime user's (configured names win).
                let (stored, configured) = match self.users.get(user) {
                    Some(u) => (u.password_hash.clone(), true),
                    None => (
                        live.users.get(user).and_then(|u| u.password_hash.clone()),
                        false,
                    ),
                };
                // The cache key covers the stored hash too, so a changed
                // password or a deleted user is never answered from it.
                let key = {
                    use sha2::Digest;
                    let mut h = sha2::Sha256::new();
                    h.update(creds.fingerprint());
                    h.update(stored.as_deref().unwrap_or("").as_bytes());
                    let k: [u8; 32] = h.finalize().into();
                    k
                };
                let proof = |phc: &Option<String>| {
                    if configured {
                        Proof::Config
                    } else {
                        Proof::Password {
                            user: user.clone(),
                            phc: phc.clone().unwrap_or_default(),
                        }
                    }
                };
                if stored.is_some() && self.verified.lock().expect("cache lock").contains(&key) {
                    return Ok((user.clone(), proof(&stored)));
                }
                let now = Instant::now();
                let limited = self.failures.lock().expect("limiter lock").limited(
                    Some(user.as_str()),
                    source,
                    now,
                );
                if let Some(wait) = limited {
                    return Err(overloaded(
                        format!(
                            "too many failed logins for user \"{}\" or from {shown_peer}; retry \
                             after {wait} s",
                            user.escape_debug()
                        ),
                        wait,
                    ));
                }
                // Unknown users and users without a password cost the same
                // verification as a real one (no enumeration by timing).
                let (phc, known) = match stored.clone() {
                    Some(h) => (h, true),
                    None => (self.dummy_hash().to_string(), false),
                };
                if self.queued.fetch_add(1, Ordering::AcqRel) >= VERIFY_SLOTS + MAX_VERIFY_QUEUE {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return Err(overloaded(
                        format!(
                            "the login queue is full ({MAX_VERIFY_QUEUE} password verifications \
                             waiting); retry after 1 s"
                        ),
                        1,
                    ));
                }
                let _queued = Queued(&self.queued);
                let _slot = self
                    .slots
                    .acquire()
                    .await
                    .map_err(|_| unauthenticated("the server is shutting down"))?;
                self.verifications.fetch_add(1, Ordering::Relaxed);
                let pw = password.clone();
                let verifier = self.verifier;
                let ok = tokio::task::spawn_blocking(move || verifier(&pw, &phc))
                    .await
                    .unwrap_or(false)
                    && known;
                if !ok {
                    let why = format!("unknown user or wrong password for \"{user}\"");
                    self.refuse(Some(user.as_str()), source, &shown_peer, &why)?;
                    return Err(unauthenticated(why));
                }
                let mut cache = self.verified.lock().expect("cache lock");
                if cache.len() >= CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert(key);
                Ok((user.clone(), proof(&stored)))
            }
        }
    }

    /// Logs and counts one failed login; OVERLOADED when this failure used
    /// up the last allowance of the user or the source (the caller returns
    /// UNAUTHENTICATED otherwise).
    fn refuse(
        &self,
        user: Option<&str>,
        source: Option<IpAddr>,
        peer: &str,
        why: &str,
    ) -> Result<(), Status> {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("limiter lock");
        if let Some(wait) = f.limited(user, source, now) {
            return Err(overloaded(
                format!(
                    "too many failed logins{} from {peer}; retry after {wait} s",
                    user.map(|u| format!(" for user \"{}\"", u.escape_debug()))
                        .unwrap_or_default()
                ),
                wait,
            ));
        }
        f.fail(user, source, now);
        drop(f);
        tracing::warn!(
            user = user.unwrap_or("<token>"),
            peer,
            reason = why,
            "failed login"
        );
        Ok(())
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

    /// `need` on every key of `[key, range_end)` (Range, DeleteRange and
    /// the ops of a Txn): one grant must cover the whole range.
    pub fn require_range(&self, key: &[u8], range_end: &[u8], need: Access) -> Result<(), Status> {
        if range_end.is_empty() {
            return self.require_key(key, need);
        }
        match &self.0 {
            None => Ok(()),
            Some((_, p)) if p.allows_range(key, range_end, need) => Ok(()),
            // A prefix range is named as the prefix (what the caller asked
            // for through scan_prefix or a prefix option).
            Some(_) if range_end == d_engine_api::prefix_end(key).as_slice() => {
                Err(self.denied("prefix", key, need))
            }
            Some(_) => {
                let mut target = key.to_vec();
                target.extend_from_slice(b"..");
                target.extend_from_slice(range_end);
                Err(self.denied("range", &target, need))
            }
        }
    }

    /// The lease calls (`rpc` names the call): they name no key, so they
    /// need readwrite access to something (a grant of any prefix).
    pub fn require_lease(&self, rpc: &str) -> Result<(), Status> {
        match &self.0 {
            None => Ok(()),
            Some((_, p)) if p.allows_any(Access::Readwrite) => Ok(()),
            Some((user, _)) => Err(to_status_with_metadata(
                &Error::PermissionDenied(format!(
                    "user \"{user}\" holds no readwrite grant, needed for {rpc}"
                )),
                [
                    ("user".to_string(), user.clone()),
                    ("access".to_string(), Access::Readwrite.as_str().to_string()),
                ],
            )),
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
            ..AuthConfig::default()
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
        let err = d_engine_api::status_codec::from_status(&e);
        assert_eq!(err.code(), d_engine_api::ErrorCode::PermissionDenied);
    }

    #[tokio::test]
    async fn ranges_and_lease_calls_are_checked() {
        let (g, token) = gate();
        let alice = g.authenticate(&md(&basic("alice", "pw"))).await.unwrap();
        alice
            .require_range(b"app/a", b"app/z", Access::Read)
            .unwrap();
        alice.require_range(b"app/1", b"", Access::Read).unwrap();
        let e = alice
            .require_range(b"app/", b"\0", Access::Read)
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.message().contains("range"), "{}", e.message());
        let e = alice
            .require_range(b"app/a", b"app/z", Access::Readwrite)
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        // Alice only reads: no lease calls.
        let e = alice.require_lease("Lease.LeaseGrant").unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.message().contains("Lease.LeaseGrant"), "{}", e.message());
        let root = g
            .authenticate(&md(&format!("Bearer {token}")))
            .await
            .unwrap();
        root.require_lease("Lease.LeaseGrant").unwrap();
        root.require_range(b"\0", b"\0", Access::Readwrite).unwrap();
        Gate::open()
            .authenticate(&MetadataMap::new())
            .await
            .unwrap()
            .require_lease("x")
            .unwrap();
    }

    fn fast_gate(verifier: Verifier) -> Gate {
        let cfg = AuthConfig {
            enabled: true,
            users: vec![
                UserConfig {
                    name: "alice".into(),
                    password_hash: Some(hash_password("pw").unwrap()),
                    tokens: vec![],
                    roles: vec![],
                },
                UserConfig {
                    name: "bot".into(),
                    password_hash: None,
                    tokens: vec![sha256_hex(b"t")],
                    roles: vec![],
                },
            ],
            ..AuthConfig::default()
        };
        cfg.validate().unwrap();
        Gate::with_verifier(&cfg, verifier)
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    /// Before: an unknown user (or one without a password) was refused
    /// without any Argon2 work, so timing told which users exist.
    #[tokio::test]
    async fn unknown_users_cost_one_verification_like_real_ones() {
        let g = fast_gate(|pw, phc| pw == "pw" && phc.starts_with("$argon2"));
        let e = g
            .authenticate(&md(&basic("alice", "nope")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(g.verifications(), 1);
        for unknown in ["mallory", "bot"] {
            let e = g
                .authenticate(&md(&basic(unknown, "pw")))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{unknown}");
        }
        assert_eq!(
            g.verifications(),
            3,
            "unknown user and user without password each ran one verification"
        );
        // The dummy hash has the configured users' cost.
        let guard = g.0.as_ref().unwrap();
        let dummy = argon2::PasswordHash::new(guard.dummy_hash()).unwrap();
        let real_hash = guard.users["alice"].password_hash.clone().unwrap();
        let real = argon2::PasswordHash::new(&real_hash).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
        // And it verifies nothing a caller could send.
        assert!(!verify_password("pw", guard.dummy_hash()));
    }

    /// Before: failures were neither counted nor limited.
    #[tokio::test]
    async fn failed_logins_are_limited_per_user_and_per_source() {
        let g = fast_gate(|pw, _| pw == "pw");
        let a = peer("10.0.0.1:5000");
        for i in 0..10 {
            let e = g
                .authenticate_from(&md(&basic("alice", &format!("guess{i}"))), a)
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "failure {i}");
        }
        let e = g
            .authenticate_from(&md(&basic("alice", "guess")), a)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e
            .message()
            .contains("too many failed logins for user \"alice\""));
        assert!(e.message().contains("retry after"), "{}", e.message());
        let before = g.verifications();
        // The user is limited from any source, and no Argon2 runs for it ...
        let e = g
            .authenticate_from(&md(&basic("alice", "guess")), peer("10.0.0.2:1"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert_eq!(g.verifications(), before);
        // ... the source is limited for any user ...
        let e = g
            .authenticate_from(&md(&basic("carol", "x")), a)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted);
        // ... but valid tokens still pass from it.
        let bot = g.authenticate_from(&md("Bearer t"), a).await.unwrap();
        assert_eq!(bot.user(), Some("bot"));
        // Another user from another source is not affected.
        let e = g
            .authenticate_from(&md(&basic("carol", "x")), peer("10.0.0.3:1"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }

    static RELEASE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    fn blocked_verifier(_: &str, _: &str) -> bool {
        let t = std::time::Instant::now();
        while !RELEASE.load(Ordering::Acquire) && t.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }

    /// Before: password logins queued without bound behind the two slots.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_login_queue_refuses_at_once() {
        let g = fast_gate(blocked_verifier);
        let mut waiting = Vec::new();
        for i in 0..(VERIFY_SLOTS + MAX_VERIFY_QUEUE) {
            let g = g.clone();
            waiting.push(tokio::spawn(async move {
                let m = md(&basic(&format!("u{i}"), "x"));
                g.authenticate(&m).await
            }));
        }
        let guard = g.0.clone().unwrap();
        let t = std::time::Instant::now();
        while guard.queued.load(Ordering::Acquire) < VERIFY_SLOTS + MAX_VERIFY_QUEUE {
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "never queued"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let e = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            g.authenticate(&md(&basic("late", "x"))),
        )
        .await
        .expect("refused at once, not queued")
        .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("login queue is full"),
            "{}",
            e.message()
        );
        RELEASE.store(true, Ordering::Release);
        for w in waiting {
            assert_eq!(w.await.unwrap().unwrap_err().code(), Code::Unauthenticated);
        }
        assert_eq!(guard.queued.load(Ordering::Acquire), 0);
    }

    /// Runtime users and tokens from the replicated state: accepted,
    /// re-checked, refused once revoked, expired or deleted; a configured
    /// token revoked at runtime is refused.
    #[tokio::test]
    async fn replicated_users_and_tokens_are_checked_against_the_live_state() {
        use d_engine_storage::auth::{AuthOp, AuthState, Grant, GrantAccess};
        let (g, root_token) = gate();
        let state = Arc::new(Mutex::new(Arc::new(AuthState::default())));
        let src = state.clone();
        let g = g.with_replicated(Arc::new(move || src.lock().unwrap().clone()));
        let apply = |op: AuthOp| {
            let mut s = state.lock().unwrap();
            let mut next = AuthState::clone(&s);
            let rev = next.revision + 1;
            next.apply(&op, rev).unwrap();
            *s = Arc::new(next);
        };
        apply(AuthOp::RoleAdd { name: "rt".into() });
        apply(AuthOp::RoleGrantPermission {
            role: "rt".into(),
            grant: Grant {
                prefix: b"rt/".to_vec(),
                access: GrantAccess::Read,
            },
        });
        apply(AuthOp::UserAdd {
            name: "carol".into(),
            password_hash: Some(hash_password("cpw").unwrap()),
        });
        apply(AuthOp::UserGrantRole {
            name: "carol".into(),
            role: "rt".into(),
        });
        let carol = g.authenticate(&md(&basic("carol", "cpw"))).await.unwrap();
        carol.require_key(b"rt/1", Access::Read).unwrap();
        assert_eq!(
            carol
                .require_key(b"app/1", Access::Read)
                .unwrap_err()
                .code(),
            Code::PermissionDenied
        );
        let tok = "t-live";
        apply(AuthOp::TokenAdd {
            digest: sha256_hex(tok.as_bytes()),
            user: "carol".into(),
            expires_at_ms: None,
            configured_user: false,
        });
        let by_token = g.authenticate(&md(&format!("Bearer {tok}"))).await.unwrap();
        assert_eq!(by_token.user(), Some("carol"));
        g.recheck(&by_token).unwrap();
        // A lost grant shows in a re-check's permissions.
        apply(AuthOp::UserRevokeRole {
            name: "carol".into(),
            role: "rt".into(),
        });
        let now = g.recheck(&by_token).unwrap();
        assert!(now.require_key(b"rt/1", Access::Read).is_err());
        // Revoked: refused at once, and the re-check of an open stream fails.
        apply(AuthOp::TokenRevoke {
            digest: sha256_hex(tok.as_bytes()),
            configured: false,
        });
        let e = g
            .authenticate(&md(&format!("Bearer {tok}")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(
            g.recheck(&by_token).unwrap_err().code(),
            Code::Unauthenticated
        );
        // Expired tokens are refused with the reason.
        apply(AuthOp::TokenAdd {
            digest: sha256_hex(b"t-old"),
            user: "carol".into(),
            expires_at_ms: Some(1),
            configured_user: false,
        });
        let e = g.authenticate(&md("Bearer t-old")).await.unwrap_err();
        assert!(e.message().contains("expired"), "{}", e.message());
        // A changed password: the old one is not answered from the cache.
        apply(AuthOp::UserChangePassword {
            name: "carol".into(),
            password_hash: hash_password("new").unwrap(),
        });
        assert_eq!(g.recheck(&carol).unwrap_err().code(), Code::Unauthenticated);
        let e = g
            .authenticate(&md(&basic("carol", "cpw")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        g.authenticate(&md(&basic("carol", "new"))).await.unwrap();
        // A configured token revoked at runtime.
        let root = g
            .authenticate(&md(&format!("Bearer {root_token}")))
            .await
            .unwrap();
        apply(AuthOp::TokenRevoke {
            digest: sha256_hex(root_token.as_bytes()),
            configured: true,
        });
        assert_eq!(g.recheck(&root).unwrap_err().code(), Code::Unauthenticated);
        let e = g
            .authenticate(&md(&format!("Bearer {root_token}")))
            .await
            .unwrap_err();
        assert!(e.message().contains("revoked"), "{}", e.message());
        assert!(g.revision() > 0);
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
