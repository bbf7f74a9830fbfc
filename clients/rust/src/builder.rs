//! `ClientBuilder`: endpoints and options, validated once at `build()`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Endpoint;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::tls::TlsOptions;
use d_engine_api::RetryPolicy;

/// Customizes every connection's `tonic` endpoint before it is used; the
/// place for TLS (`|ep| ep.tls_config(cfg)`, with one of tonic's `tls-*`
/// features enabled in your crate), custom headers' origin, buffer sizes.
pub type EndpointHook =
    Arc<dyn Fn(Endpoint) -> std::result::Result<Endpoint, tonic::transport::Error> + Send + Sync>;

/// Every tunable of a [`Client`], with the defaults documented per field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// TCP connect timeout per connection attempt. Default 2 s.
    pub connect_timeout: Duration,
    /// Overall deadline of one logical operation, retries included.
    /// Default 10 s.
    pub request_timeout: Duration,
    /// Deadline of one attempt (one RPC to one node); on expiry the client
    /// moves on to another node (reads and deduplicated writes) or reports
    /// `Timeout` (admin changes). Default 3 s.
    pub attempt_timeout: Duration,
    /// Retries after retryable errors. Default: 10 attempts, 50 ms..1 s.
    pub retry: RetryPolicy,
    /// Client-side size checks. Default: key 1..=4096 bytes, value <= 1 MiB.
    pub limits: Limits,
    /// Independent write sessions (random client ids), each allowing
    /// [`d_engine_api::WRITE_WINDOW`] writes in flight. Default 4 (128 writes).
    pub write_sessions: usize,
    /// Events buffered per watch before the client stops reading from the
    /// server (which then may cancel the watch as too slow). Default 1024.
    pub watch_buffer: usize,
    /// Re-establish a watch that breaks (node down, leader change) from the
    /// revision after the last delivered event. Default true.
    pub watch_resume: bool,
    /// HTTP/2 keep-alive ping interval (`None`: off) and ack timeout; finds
    /// a dead or paused server under an idle connection or watch.
    /// Default 10 s / 5 s.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// Largest gRPC message sent or received. Default 64 MiB (large scans).
    pub max_message_bytes: usize,
    /// Skip the reachability probe in `build()`. Default false.
    pub lazy: bool,
    /// Connect only to the configured endpoints. Default false: a leader
    /// hint (`NotLeader`, leader discovery) naming another address is
    /// followed, so one endpoint is enough to reach a cluster. Set it when
    /// the nodes' advertised addresses are not reachable from the client
    /// (NAT, port forwarding, a proxy per node): a hint outside the list is
    /// then ignored, and the leader is the listed endpoint whose node says
    /// it is the leader — list every node. Addresses are compared after
    /// normalization (`scheme://host:port`), as written: a host name and
    /// its IP are different addresses.
    pub restrict_to_endpoints: bool,
    /// Sent on every RPC when set (servers with `[auth]` enabled require
    /// them). Default none.
    pub credentials: Option<crate::auth::Credentials>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(3),
            retry: RetryPolicy::default(),
            limits: Limits::default(),
            write_sessions: 4,
            watch_buffer: 1024,
            watch_resume: true,
            keepalive_interval: Some(Duration::from_secs(10)),
            keepalive_timeout: Duration::from_secs(5),
            max_message_bytes: 64 << 20,
            lazy: false,
            restrict_to_endpoints: false,
            credentials: None,
        }
    }
}

/// Largest `write_sessions` accepted (each costs the server one dedup slot).
pub const MAX_WRITE_SESSIONS: usize = 64;

impl ClientConfig {
    /// Rejects unusable values with a message naming the option.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("attempt_timeout", self.attempt_timeout),
            ("keepalive_timeout", self.keepalive_timeout),
        ];
        for (name, d) in positive {
            if d.is_zero() {
                return Err(Error::InvalidArgument(format!("{name} must be > 0")));
            }
        }
        if self.keepalive_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidArgument(
                "keepalive_interval must be > 0 (or None to disable)".into(),
            ));
        }
        self.retry.validate()?;
        self.limits.validate()?;
        if let Some(c) = &self.credentials {
            c.validate()?;
        }
        if !(1..=MAX_WRITE_SESSIONS).contains(&self.write_sessions) {
            return Err(Error::InvalidArgument(format!(
                "write_sessions is {}; it must be 1..={MAX_WRITE_SESSIONS}",
                self.write_sessions
            )));
        }
        if self.watch_buffer == 0 {
            return Err(Error::InvalidArgument("watch_buffer must be >= 1".into()));
        }
        let min_msg = self.limits.max_value_bytes + self.limits.max_key_bytes + 4096;
        if self.max_message_bytes < min_msg {
            return Err(Error::InvalidArgument(format!(
                "max_message_bytes is {}; it must be at least {min_msg} to carry one \
                 maximal key and value",
                self.max_message_bytes
            )));
        }
        Ok(())
    }
}

/// Builds a [`Client`]:
///
/// ```no_run
/// # async fn f() -> Result<(), d_engine_client::Error> {
/// use d_engine_client::ClientBuilder;
/// let client = ClientBuilder::new(vec!["http://127.0.0.1:9083".to_string()])
///     .request_timeout(std::time::Duration::from_secs(5))
///     .build()
///     .await?;
/// client.kv().put(b"key".to_vec(), b"value".to_vec()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    config: ClientConfig,
    hook: Option<EndpointHook>,
    tls: Option<TlsOptions>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("config", &self.config)
            .field("endpoint_hook", &self.hook.is_some())
            .field("tls", &self.tls)
            .finish()
    }
}

impl ClientBuilder {
    /// Endpoints of any cluster members, as `http://host:port`,
    /// `https://host:port` or `host:port` (port defaults to 9083). One is
    /// enough: the leader is discovered and followed.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            config: ClientConfig::default(),
            hook: None,
            tls: None,
        }
    }

    /// Replaces every option at once.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.connect_timeout = d;
        self
    }

    /// Overall deadline of one operation, retries included.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = d;
        self
    }

    /// Deadline of one attempt against one node.
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.config.attempt_timeout = d;
        self
    }

    pub fn retry_policy(mut self, p: RetryPolicy) -> Self {
        self.config.retry = p;
        self
    }

    /// Attempts per operation including the first (1 = no retry).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.retry.max_attempts = n;
        self
    }

    /// Exponential backoff from `base` doubling up to `max` (with jitter).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.retry.base_backoff = base;
        self.config.retry.max_backoff = max;
        self
    }

    pub fn limits(mut self, l: Limits) -> Self {
        self.config.limits = l;
        self
    }

    pub fn write_sessions(mut self, n: usize) -> Self {
        self.config.write_sessions = n;
        self
    }

    pub fn watch_buffer(mut self, n: usize) -> Self {
        self.config.watch_buffer = n;
        self
    }

    pub fn watch_resume(mut self, on: bool) -> Self {
        self.config.watch_resume = on;
        self
    }

    /// HTTP/2 keep-alive (`None` disables pings).
    pub fn keepalive(mut self, interval: Option<Duration>, timeout: Duration) -> Self {
        self.config.keepalive_interval = interval;
        self.config.keepalive_timeout = timeout;
        self
    }

    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.config.max_message_bytes = n;
        self
    }

    /// Do not probe the endpoints in `build()`; the first request connects.
    pub fn lazy(mut self, on: bool) -> Self {
        self.config.lazy = on;
        self
    }

    /// Connect only to the configured endpoints, never to a leader
    /// address outside them (see [`ClientConfig::restrict_to_endpoints`]).
    pub fn restrict_to_endpoints(mut self, on: bool) -> Self {
        self.config.restrict_to_endpoints = on;
        self
    }

    /// Authenticates every RPC with a user name and password (HTTP Basic
    /// in the `authorization` metadata). Use with TLS outside trusted networks.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.config.credentials = Some(crate::auth::Credentials::Password {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// Authenticates every RPC with a token (`authorization: Bearer <token>`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.credentials = Some(crate::auth::Credentials::Token(token.into()));
        self
    }

    /// Customizes each connection's endpoint (TLS, window sizes...).
    pub fn configure_endpoint<F>(mut self, hook: F) -> Self
    where
        F: Fn(Endpoint) -> std::result::Result<Endpoint, tonic::transport::Error>
            + Send
            + Sync
            + 'static,
    {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Connects over TLS (see [`TlsOptions`]): endpoints without a scheme
    /// use `https://`, `http://` endpoints are refused, and the files are
    /// read and checked in `build()`. Without a CA the system roots are
    /// trusted (see [`crate::tls`]). Not needed for `https://` endpoints
    /// alone: those always mean TLS, with the system roots.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Validates the options and endpoints, then (unless `lazy`) checks
    /// that at least one endpoint answers within `connect_timeout`,
    /// remembering the leader if one is known. Fails with `InvalidArgument`
    /// for a bad endpoint or option, `Unavailable` if no endpoint answers.
    pub async fn build(self) -> Result<Client> {
        self.config.validate()?;
        let (endpoints, hook) = match &self.tls {
            Some(tls) => with_tls(self.endpoints, tls, self.hook)?,
            // `https://` always means TLS, never plaintext: without TLS
            // options, with the system roots.
            None if self.endpoints.iter().any(|e| is_https(e)) => {
                with_tls(self.endpoints, &TlsOptions::new(), self.hook)?
            }
            None => (self.endpoints, self.hook),
        };
        Client::connect(endpoints, self.config, hook).await
    }
}

fn is_https(endpoint: &str) -> bool {
    endpoint.trim().to_ascii_lowercase().starts_with("https://")
}

/// Endpoints forced to `https://` and a hook that applies the TLS settings
/// (before the user's hook, if any).
fn with_tls(
    endpoints: Vec<String>,
    tls: &TlsOptions,
    user: Option<EndpointHook>,
) -> Result<(Vec<String>, Option<EndpointHook>)> {
    let cfg = crate::tls::client_config(tls)?;
    let mut out = Vec::with_capacity(endpoints.len());
    for e in endpoints {
        let t = e.trim();
        if is_https(t) {
            out.push(t.to_string());
        } else if t.contains("://") {
            return Err(Error::InvalidArgument(format!(
                "endpoint {e:?} is not https:// but TLS is configured; use https://host:port \
                 or host:port"
            )));
        } else {
            out.push(format!("https://{t}"));
        }
    }
    let hook: EndpointHook = Arc::new(move |ep: Endpoint| {
        let ep = ep.tls_config(cfg.clone())?;
        match &user {
            Some(u) => u(ep),
            None => Ok(ep),
        }
    });
    Ok((out, Some(hook)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_named() {
        assert!(ClientConfig::default().validate().is_ok());
        let check = |c: ClientConfig, needle: &str| match c.validate() {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("{needle}: {other:?}"),
        };
        let d = ClientConfig::default;
        check(
            ClientConfig {
                request_timeout: Duration::ZERO,
                ..d()
            },
            "request_timeout",
        );
        check(
            ClientConfig {
                attempt_timeout: Duration::ZERO,
                ..d()
            },
            "attempt_timeout",
        );
        check(
            ClientConfig {
                connect_timeout: Duration::ZERO,
                ..d()
            },
            "connect_timeout",
        );
        check(
            ClientConfig {
                write_sessions: 0,
                ..d()
            },
            "write_sessions",
        );
        check(
            ClientConfig {
                write_sessions: 65,
                ..d()
            },
            "write_sessions",
        );
        check(
            ClientConfig {
                watch_buffer: 0,
                ..d()
            },
            "watch_buffer",
        );
        check(
            ClientConfig {
                max_message_bytes: 1000,
                ..d()
            },
            "max_message_bytes",
        );
        check(
            ClientConfig {
                keepalive_interval: Some(Duration::ZERO),
                ..d()
            },
            "keepalive_interval",
        );
        let mut c = d();
        c.retry.max_attempts = 0;
        check(c, "max_attempts");
    }

    #[test]
    fn builder_setters_land_in_the_config() {
        let b = ClientBuilder::new(["a:1"])
            .request_timeout(Duration::from_secs(1))
            .attempt_timeout(Duration::from_millis(300))
            .max_attempts(3)
            .backoff(Duration::from_millis(5), Duration::from_millis(20))
            .write_sessions(2)
            .lazy(true);
        assert_eq!(b.config.request_timeout, Duration::from_secs(1));
        assert_eq!(b.config.retry.max_attempts, 3);
        assert_eq!(b.config.retry.max_backoff, Duration::from_millis(20));
        assert_eq!(b.config.write_sessions, 2);
        assert!(b.config.lazy);
        assert!(format!("{b:?}").contains("a:1"));
    }
}
