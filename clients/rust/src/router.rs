//! Where a request goes and what happens when it fails: the connection
//! cache, leader discovery, NotLeader redirects and the retry loop.
//!
//! Contract of [`Inner::execute`]:
//! - one logical operation is bounded by `request_timeout` (overall) and
//!   `retry.max_attempts`; each attempt by `attempt_timeout`;
//! - `NotLeader` with a hint retries at once on the hinted node (at most
//!   two redirects in a row without backoff, so two nodes pointing at each
//!   other cannot spin); without a hint, `NoLeader`, `Unavailable`,
//!   `ShuttingDown`, `Overloaded` and `ChangeInProgress` retry after a
//!   jittered exponential backoff; an unreachable node is rotated away from
//!   and forgotten as leader;
//! - an attempt that times out (or a server `Timeout`) is retried only for
//!   [`Retry::Safe`] operations (reads, and writes carrying a `WriteId`,
//!   which the server applies at most once);
//! - any other error is returned at once; when attempts or time run out,
//!   the last error is returned;
//! - with `restrict_to_endpoints`, a leader address (hint or discovery
//!   answer) outside the configured endpoints is never connected to: the
//!   leader is the endpoint whose own node id is the leader id it reports.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use d_engine_proto::v1 as pb;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::auth::{self, RpcChannel};
use crate::builder::{ClientConfig, EndpointHook};
use crate::endpoint::normalize_endpoint;
use crate::error::{Error, ErrorCode, Result};
use d_engine_api::AuthHeader;
use d_engine_api::WriteSessions;

/// Which node an attempt goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// The leader (discovered if unknown); follows NotLeader hints.
    Leader,
    /// Any node: the current "sticky" endpoint, rotated on failure.
    Any,
    /// The cached leader if known, otherwise any node (no discovery).
    PreferLeader,
    /// Exactly this (normalized) address; NotLeader is returned, not followed.
    Node(String),
}

/// Whether an attempt whose outcome is unknown (timed out) may be repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and writes deduplicated by `WriteId`.
    Safe,
    /// Admin changes: retried only after errors that mean "not executed".
    Unsafe,
}

enum Action {
    Fail,
    /// Retry on this address now (a leader hint).
    Redirect(String),
    /// Retry after backoff.
    Backoff,
}

/// Shared state of a `Client` and its clones.
pub(crate) struct Inner {
    pub(crate) cfg: ClientConfig,
    /// Normalized configured endpoints, in the order given.
    pub(crate) endpoints: Vec<String>,
    /// Scheme for leader hints that carry none.
    scheme: String,
    hook: Option<EndpointHook>,
    channels: Mutex<HashMap<String, Channel>>,
    leader: RwLock<Option<String>>,
    /// Index into `endpoints` of the node `Route::Any` uses.
    cursor: AtomicUsize,
    /// One leader discovery at a time.
    discovery: tokio::sync::Mutex<()>,
    pub(crate) sessions: WriteSessions,
    /// Adds the configured credentials to every RPC.
    auth: AuthHeader,
    /// `true` once [`Inner::close`] ran (never goes back to `false`).
    closed: tokio::sync::watch::Sender<bool>,
}

/// A request carrying its deadline to the server as `grpc-timeout`.
pub(crate) fn request<M>(msg: M, timeout: Duration) -> tonic::Request<M> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

impl Inner {
    pub(crate) fn new(
        cfg: ClientConfig,
        endpoints: Vec<String>,
        scheme: String,
        hook: Option<EndpointHook>,
    ) -> Result<Inner> {
        let sessions = WriteSessions::new(
            cfg.write_sessions,
            "raise write_sessions or use more clients",
        )?;
        let auth = auth::interceptor(cfg.credentials.as_ref())?;
        Ok(Inner {
            cfg,
            endpoints,
            scheme,
            hook,
            channels: Mutex::new(HashMap::new()),
            leader: RwLock::new(None),
            cursor: AtomicUsize::new(0),
            discovery: tokio::sync::Mutex::new(()),
            sessions,
            auth,
            closed: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Closes the client (idempotent): later calls fail at once with
    /// [`Error::CLIENT_CLOSED`], calls in flight and open streams end with
    /// it (they wait on [`Inner::wait_closed`]), and the cached channels
    /// are dropped so their connections close once nothing uses them.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
        self.channels.lock().expect("channels lock").clear();
        self.set_leader(None);
    }

    pub(crate) fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// `Err(ClientClosed)` once the client is closed.
    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.is_closed() {
            Err(Error::CLIENT_CLOSED)
        } else {
            Ok(())
        }
    }

    /// Resolves when the client is closed (at once if it already is).
    pub(crate) async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail here.
        let _ = rx.wait_for(|closed| *closed).await;
    }

    /// The (lazily connecting, cached) channel to a normalized address;
    /// `Err(ClientClosed)` once the client is closed.
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel> {
        self.ensure_open()?;
        if let Some(c) = self.channels.lock().expect("channels lock").get(addr) {
            return Ok(c.clone());
        }
        let mut ep = Endpoint::from_shared(addr.to_string())
            .map_err(|e| Error::InvalidArgument(format!("endpoint {addr:?}: {e}")))?
            .connect_timeout(self.cfg.connect_timeout)
            .tcp_nodelay(true);
        if let Some(iv) = self.cfg.keepalive_interval {
            ep = ep
                .http2_keep_alive_interval(iv)
                .keep_alive_timeout(self.cfg.keepalive_timeout)
                .keep_alive_while_idle(true);
        }
        if let Some(hook) = &self.hook {
            ep = hook(ep).map_err(|e| {
                Error::InvalidArgument(format!("endpoint hook failed for {addr}: {e}"))
            })?;
        }
        let ch = ep.connect_lazy();
        let mut map = self.channels.lock().expect("channels lock");
        Ok(map.entry(addr.to_string()).or_insert(ch).clone())
    }

    pub(crate) fn kv_rpc(&self, ch: Channel) -> pb::kv_client::KvClient<RpcChannel> {
        pb::kv_client::KvClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    pub(crate) fn lease_rpc(&self, ch: Channel) -> pb::lease_client::LeaseClient<RpcChannel> {
        pb::lease_client::LeaseClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    pub(crate) fn lock_rpc(&self, ch: Channel) -> pb::lock_client::LockClient<RpcChannel> {
        pb::lock_client::LockClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    pub(crate) fn election_rpc(
        &self,
        ch: Channel,
    ) -> pb::election_client::ElectionClient<RpcChannel> {
        pb::election_client::ElectionClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    pub(crate) fn cluster_rpc(&self, ch: Channel) -> pb::cluster_client::ClusterClient<RpcChannel> {
        pb::cluster_client::ClusterClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    pub(crate) fn auth_rpc(&self, ch: Channel) -> pb::auth_client::AuthClient<RpcChannel> {
        pb::auth_client::AuthClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    pub(crate) fn admin_rpc(&self, ch: Channel) -> pb::admin_client::AdminClient<RpcChannel> {
        pb::admin_client::AdminClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    pub(crate) fn maintenance_rpc(
        &self,
        ch: Channel,
    ) -> pb::maintenance_client::MaintenanceClient<RpcChannel> {
        pb::maintenance_client::MaintenanceClient::with_interceptor(ch, self.auth.clone())
            .max_decoding_message_size(self.cfg.max_message_bytes)
            .max_encoding_message_size(self.cfg.max_message_bytes)
    }

    /// Normalizes an address (a leader hint or a user-given node address)
    /// with this client's default scheme.
    pub(crate) fn normalize(&self, raw: &str) -> Result<String> {
        normalize_endpoint(raw, &self.scheme)
    }

    /// The address to use for a leader at client address `raw` (as a node
    /// reported it): `raw` normalized, unless `restrict_to_endpoints` is set
    /// and it is not a configured endpoint; then the endpoint `answered_by`
    /// if that node is the leader itself (`node_id == leader_id`), else
    /// `None` (the leader is not reachable through the endpoint list).
    pub(crate) fn accept_leader(
        &self,
        raw: &str,
        leader_id: u64,
        answered_by: Option<(&str, u64)>,
    ) -> Option<String> {
        let addr = self.normalize(raw).ok();
        if !self.cfg.restrict_to_endpoints {
            return addr;
        }
        if let Some(a) = addr.filter(|a| self.endpoints.contains(a)) {
            return Some(a);
        }
        match answered_by {
            Some((ep, node_id)) if leader_id != 0 && node_id == leader_id => Some(ep.to_string()),
            _ => None,
        }
    }

    pub(crate) fn cached_leader(&self) -> Option<String> {
        self.leader.read().expect("leader lock").clone()
    }

    pub(crate) fn set_leader(&self, addr: Option<String>) {
        *self.leader.write().expect("leader lock") = addr;
    }

    fn forget_leader_if(&self, addr: &str) {
        let mut l = self.leader.write().expect("leader lock");
        if l.as_deref() == Some(addr) {
            *l = None;
        }
    }

    fn any_endpoint(&self) -> String {
        let i = self.cursor.load(Ordering::Relaxed) % self.endpoints.len();
        self.endpoints[i].clone()
    }

    /// Moves `Route::Any` off `addr` if it is the current endpoint.
    fn rotate_from(&self, addr: &str) {
        let i = self.cursor.load(Ordering::Relaxed);
        if self.endpoints[i % self.endpoints.len()] == addr {
            let _ = self.cursor.compare_exchange(
                i,
                i.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// Asks one node who leads.
    pub(crate) async fn query_leader(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<pb::LeaderResponse> {
        let mut rpc = self.cluster_rpc(self.channel(addr)?);
        match tokio::time::timeout(timeout, rpc.leader(request(pb::LeaderRequest {}, timeout)))
            .await
        {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(st)) => Err(Error::from(st)),
            Err(_) => Err(Error::Timeout(format!(
                "{addr} did not answer Cluster.Leader within {timeout:?}"
            ))),
        }
    }

    /// Asks every configured endpoint (in parallel) who leads; the first
    /// answer naming a leader wins and is cached. `NoLeader` if nodes
    /// answered but none knows a leader, `Unavailable` if none answered.
    ///
    /// Only one discovery runs at a time; with `use_cache`, a caller that
    /// waited for another's discovery takes its result without asking
    /// again (and gets no response message).
    pub(crate) async fn discover(
        &self,
        deadline: Instant,
        use_cache: bool,
    ) -> Result<(String, Option<pb::LeaderResponse>)> {
        let _one_at_a_time = self.discovery.lock().await;
        self.ensure_open()?;
        if use_cache {
            if let Some(l) = self.cached_leader() {
                return Ok((l, None));
            }
        }
        let budget = deadline
            .saturating_duration_since(Instant::now())
            .min(self.cfg.attempt_timeout);
        if budget.is_zero() {
            return Err(Error::Timeout(
                "request timeout reached before leader discovery".into(),
            ));
        }
        let mut set = JoinSet::new();
        let mut failures: Vec<String> = Vec::new();
        for addr in &self.endpoints {
            let ch = match self.channel(addr) {
                Ok(c) => c,
                Err(e) => {
                    failures.push(format!("{addr}: {e}"));
                    continue;
                }
            };
            let mut rpc = self.cluster_rpc(ch);
            let addr = addr.clone();
            set.spawn(async move {
                let r =
                    tokio::time::timeout(budget, rpc.leader(request(pb::LeaderRequest {}, budget)))
                        .await;
                (addr, r)
            });
        }
        let mut answered = 0usize;
        while let Some(joined) = set.join_next().await {
            let Ok((addr, r)) = joined else { continue };
            match r {
                Ok(Ok(resp)) => {
                    answered += 1;
                    let resp = resp.into_inner();
                    if resp.leader_id != 0 && !resp.leader_addr.is_empty() {
                        let node_id = resp.header.as_ref().map_or(0, |h| h.node_id);
                        match self.accept_leader(
                            &resp.leader_addr,
                            resp.leader_id,
                            Some((&addr, node_id)),
                        ) {
                            Some(leader) => {
                                set.abort_all();
                                self.set_leader(Some(leader.clone()));
                                return Ok((leader, Some(resp)));
                            }
                            None if self.cfg.restrict_to_endpoints => failures.push(format!(
                                "{addr}: leader {} at {:?} is not one of the endpoints \
                                 (restrict_to_endpoints)",
                                resp.leader_id, resp.leader_addr
                            )),
                            None => failures
                                .push(format!("{addr}: bad leader address {:?}", resp.leader_addr)),
                        }
                    } else {
                        failures.push(format!("{addr}: no leader known"));
                    }
                }
                Ok(Err(st)) => {
                    let e = Error::from(st);
                    // A refusal of our credentials is final: every node
                    // shares the auth config, so asking on cannot help.
                    if matches!(
                        e.code(),
                        ErrorCode::Unauthenticated | ErrorCode::PermissionDenied
                    ) {
                        set.abort_all();
                        return Err(e);
                    }
                    failures.push(format!("{addr}: {e}"));
                }
                Err(_) => failures.push(format!("{addr}: no answer within {budget:?}")),
            }
        }
        let detail = failures.join("; ");
        if answered > 0 {
            Err(Error::NoLeader(format!(
                "no endpoint knows a leader ({detail})"
            )))
        } else {
            Err(Error::Unavailable(format!(
                "no endpoint answered ({detail})"
            )))
        }
    }

    async fn pick(&self, route: &Route, deadline: Instant) -> Result<String> {
        match route {
            Route::Node(a) => Ok(a.clone()),
            Route::Any => Ok(self.any_endpoint()),
            Route::PreferLeader => Ok(self.cached_leader().unwrap_or_else(|| self.any_endpoint())),
            Route::Leader => match self.cached_leader() {
                Some(l) => Ok(l),
                None => self.discover(deadline, true).await.map(|(l, _)| l),
            },
        }
    }

    /// Decides what to do after `err` from `addr`, updating the leader
    /// cache and the sticky endpoint.
    fn on_error(&self, route: &Route, class: Retry, addr: &str, err: &Error) -> Action {
        let pinned = matches!(route, Route::Node(_));
        match err {
            Error::NotLeader { leader_addr, .. } => {
                if pinned {
                    return Action::Fail;
                }
                // A hint outside the endpoints (restrict_to_endpoints) is
                // dropped: discovery then finds the leader among them.
                let hint = leader_addr
                    .as_deref()
                    .and_then(|a| self.accept_leader(a, 0, None));
                match hint {
                    Some(h) if h != addr => {
                        self.set_leader(Some(h.clone()));
                        Action::Redirect(h)
                    }
                    _ => {
                        self.forget_leader_if(addr);
                        Action::Backoff
                    }
                }
            }
            Error::NoLeader(_) => {
                self.forget_leader_if(addr);
                Action::Backoff
            }
            Error::Unavailable(_) | Error::ShuttingDown(_) => {
                self.forget_leader_if(addr);
                self.rotate_from(addr);
                Action::Backoff
            }
            Error::Timeout(_) if class == Retry::Safe => {
                self.forget_leader_if(addr);
                self.rotate_from(addr);
                Action::Backoff
            }
            Error::Overloaded(_) | Error::ChangeInProgress(_) => Action::Backoff,
            _ => Action::Fail,
        }
    }

    /// Runs `call` against the node `route` names, retrying per the module
    /// contract until `request_timeout` from now.
    pub(crate) async fn execute<T, F, Fut>(
        &self,
        op: &str,
        route: Route,
        class: Retry,
        call: F,
    ) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + self.cfg.request_timeout;
        self.execute_until(deadline, op, route, class, call).await
    }

    /// [`Inner::execute`] with an explicit overall deadline. Fails at once
    /// with `ClientClosed` on a closed client, and ends with it when the
    /// client is closed while the operation runs (never retried).
    pub(crate) async fn execute_until<T, F, Fut>(
        &self,
        deadline: Instant,
        op: &str,
        route: Route,
        class: Retry,
        call: F,
    ) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.ensure_open()?;
        tokio::select! {
            biased;
            _ = self.wait_closed() => Err(Error::CLIENT_CLOSED),
            r = self.retry_loop(deadline, op, route, class, call) => r,
        }
    }

    async fn retry_loop<T, F, Fut>(
        &self,
        deadline: Instant,
        op: &str,
        route: Route,
        class: Retry,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = &self.cfg.retry;
        let mut redirect_to: Option<String> = None;
        let mut redirects_in_a_row = 0u32;
        let mut retries = 0u32;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let picked = match redirect_to.take() {
                Some(a) => Ok(a),
                None => self.pick(&route, deadline).await,
            };
            let (addr, err) = match picked {
                Err(e) => (None, e),
                Ok(addr) => {
                    let budget = deadline
                        .saturating_duration_since(Instant::now())
                        .min(self.cfg.attempt_timeout);
                    let res = match self.channel(&addr) {
                        Err(e) => Err(e),
                        Ok(_) if budget.is_zero() => Err(Error::Timeout(format!(
                            "{op}: request timeout {:?} reached",
                            self.cfg.request_timeout
                        ))),
                        Ok(ch) => match tokio::time::timeout(budget, call(ch, budget)).await {
                            Ok(r) => r,
                            Err(_) => Err(Error::Timeout(format!(
                                "{op}: {addr} did not answer within {budget:?}"
                            ))),
                        },
                    };
                    match res {
                        Ok(v) => return Ok(v),
                        Err(e) => (Some(addr), e),
                    }
                }
            };
            let action = match &addr {
                Some(a) => self.on_error(&route, class, a, &err),
                // Discovery failed: NoLeader / Unavailable / Timeout.
                None if matches!(err.code(), ErrorCode::NoLeader | ErrorCode::Unavailable) => {
                    Action::Backoff
                }
                None => Action::Fail,
            };
            tracing::debug!(op, attempt, addr = ?addr, error = %err, "d-engine client attempt failed");
            if matches!(action, Action::Fail) || attempt >= policy.max_attempts {
                return Err(err);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(err);
            }
            match action {
                Action::Redirect(to) if redirects_in_a_row < 2 => {
                    redirects_in_a_row += 1;
                    redirect_to = Some(to);
                }
                _ => {
                    redirects_in_a_row = 0;
                    retries += 1;
                    let wait = policy.delay(retries);
                    if now + wait >= deadline {
                        // The wait would reach the deadline: report the
                        // real cause now rather than a bare timeout later.
                        return Err(err);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inner(restrict: bool) -> Inner {
        let cfg = ClientConfig {
            restrict_to_endpoints: restrict,
            ..ClientConfig::default()
        };
        let eps = vec![
            "http://10.0.0.1:9083".to_string(),
            "http://10.0.0.2:9083".to_string(),
        ];
        Inner::new(cfg, eps, "http".into(), None).expect("inner")
    }

    /// The router retries (for reads and deduplicated writes) exactly the
    /// errors `is_retryable()` says yes to: the two never disagree.
    #[test]
    fn on_error_retries_exactly_the_retryable_errors() {
        let i = inner(false);
        let all = [
            Error::NotLeader {
                leader_id: Some(2),
                leader_addr: Some("10.0.0.2:9083".into()),
            },
            Error::NoLeader("x".into()),
            Error::InvalidArgument("x".into()),
            Error::Overloaded("x".into()),
            Error::Timeout("x".into()),
            Error::ShuttingDown("x".into()),
            Error::Storage("x".into()),
            Error::ChangeInProgress("x".into()),
            Error::Compacted("x".into()),
            Error::Unauthenticated("x".into()),
            Error::PermissionDenied("x".into()),
            Error::UnknownNode("x".into()),
            Error::NoSpace("x".into()),
            Error::LeaseNotFound("x".into()),
            Error::NotHeld("x".into()),
            Error::Unavailable("x".into()),
            Error::Internal("x".into()),
            Error::CLIENT_CLOSED,
        ];
        for e in &all {
            let action = i.on_error(&Route::Leader, Retry::Safe, "http://10.0.0.1:9083", e);
            let retried = !matches!(action, Action::Fail);
            assert_eq!(retried, e.is_retryable(), "{e:?}");
        }
        // Admin changes (unknown outcome is not safe to repeat) report a
        // timeout instead of retrying it.
        let action = i.on_error(
            &Route::Leader,
            Retry::Unsafe,
            "http://10.0.0.1:9083",
            &Error::Timeout("x".into()),
        );
        assert!(matches!(action, Action::Fail));
    }

    #[test]
    fn restricted_routers_accept_only_listed_leader_addresses() {
        let open = inner(false);
        assert_eq!(
            open.accept_leader("10.9.9.9:9083", 3, None).as_deref(),
            Some("http://10.9.9.9:9083")
        );
        let r = inner(true);
        assert_eq!(r.accept_leader("10.9.9.9:9083", 3, None), None);
        assert_eq!(
            r.accept_leader("10.0.0.2", 3, None).as_deref(),
            Some("http://10.0.0.2:9083"),
            "a listed address (default port) is accepted"
        );
        // The leader itself answered through a listed endpoint.
        assert_eq!(
            r.accept_leader("10.9.9.9:9083", 3, Some(("http://10.0.0.1:9083", 3)))
                .as_deref(),
            Some("http://10.0.0.1:9083")
        );
        // A follower answered: its endpoint is not the leader.
        assert_eq!(
            r.accept_leader("10.9.9.9:9083", 3, Some(("http://10.0.0.1:9083", 1))),
            None
        );
    }
}
