//! The forwarder's links to the other members' client APIs: one lazily
//! connecting channel per URL, the forward token, and the leader the
//! forwarder last reached (see the `forward` module contract).

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::Duration;

use d_engine_proto::v1 as pb;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::config::Config;
use crate::tls::NodeTls;
use d_engine_api::{AuthHeader, Error, Result, WriteSessions};

/// Client ids (write sessions) of one engine's forwarded writes: up to
/// `WRITE_SESSIONS * WRITE_WINDOW` forwarded writes in flight.
const WRITE_SESSIONS: usize = 4;
/// Attempts per forwarded call, the first included.
pub(super) const MAX_ATTEMPTS: u32 = 10;
/// Longest wait for one attempt's answer.
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// HTTP/2 pings find a dead leader under an idle connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest message sent or received (large scans).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The generated `Kv` stub with the forward token attached.
pub(super) type Kv = pb::kv_client::KvClient<InterceptedService<Channel, AuthHeader>>;
/// The generated `Lease` stub with the forward token attached.
pub(super) type Lease = pb::lease_client::LeaseClient<InterceptedService<Channel, AuthHeader>>;

/// The generated `App` stub (application commands) with the token attached.
pub(super) type App = pb::app_client::AppClient<InterceptedService<Channel, AuthHeader>>;

/// The stubs of one forwarded attempt, on one channel.
pub(super) struct Stubs {
    pub(super) kv: Kv,
    pub(super) lease: Lease,
    pub(super) app: App,
}

/// Sends the calls the local node refuses to the leader.
pub(crate) struct Forwarder {
    pub(super) enabled: bool,
    /// Set when the client API uses TLS.
    pub(super) tls: Option<ClientTlsConfig>,
    /// Adds `authorization: Bearer <auth.forward_token>` when configured.
    pub(super) bearer: AuthHeader,
    /// Channel per URL, created on first use.
    pub(super) channels: Mutex<HashMap<String, Channel>>,
    /// URL of the last node that answered (or was named leader).
    pub(super) leader: Mutex<Option<String>>,
    /// Which other member to try next when no leader is known.
    pub(super) cursor: AtomicUsize,
    pub(super) ids: WriteSessions,
}

impl Forwarder {
    /// Fails only if the OS random number generator fails (write ids).
    pub(crate) fn new(config: &Config, tls: &NodeTls) -> Result<Forwarder> {
        let mut enabled = config.embedded.forward_to_leader;
        let client_tls = if config.tls.client_api {
            if tls.forward.is_none() && enabled {
                tracing::warn!(
                    "embedded.forward_to_leader is on but tls.ca_file is empty: writes on a \
                     follower return NotLeader (set tls.ca_file to forward over TLS)"
                );
                enabled = false;
            }
            tls.forward.clone()
        } else {
            None
        };
        let mut bearer = AuthHeader::default();
        if let Some(token) = &config.auth.forward_token {
            match bearer_value(token) {
                Some(v) => bearer = AuthHeader::new(Some(v)),
                None => {
                    tracing::warn!(
                        "auth.forward_token is not printable ASCII without spaces: writes on \
                         a follower return NotLeader"
                    );
                    enabled = false;
                }
            }
        }
        Ok(Forwarder {
            enabled,
            tls: client_tls,
            bearer,
            channels: Mutex::default(),
            leader: Mutex::default(),
            cursor: AtomicUsize::new(0),
            ids: WriteSessions::new(WRITE_SESSIONS, "the leader is not keeping up; retry later")?,
        })
    }

    /// `addr` (`host:port` or a URL) as a URL of this forwarder's scheme.
    pub(super) fn url(&self, addr: &str) -> String {
        if addr.contains("://") {
            addr.to_string()
        } else if self.tls.is_some() {
            format!("https://{addr}")
        } else {
            format!("http://{addr}")
        }
    }

    /// The (lazily connecting, cached) channel to `url`.
    pub(super) fn channel(&self, url: &str) -> Result<Channel> {
        if let Some(c) = self.channels.lock().expect("poisoned").get(url) {
            return Ok(c.clone());
        }
        let mut ep = Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::InvalidArgument(format!("client address {url:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            ep = ep
                .tls_config(tls.clone())
                .map_err(|e| Error::InvalidArgument(format!("TLS settings for {url}: {e}")))?;
        }
        let ch = ep.connect_lazy();
        let mut map = self.channels.lock().expect("poisoned");
        Ok(map.entry(url.to_string()).or_insert(ch).clone())
    }

    pub(super) fn stubs(&self, ch: Channel) -> Stubs {
        Stubs {
            kv: pb::kv_client::KvClient::with_interceptor(ch.clone(), self.bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            lease: pb::lease_client::LeaseClient::with_interceptor(ch.clone(), self.bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            app: pb::app_client::AppClient::with_interceptor(ch, self.bearer.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    pub(super) fn cached_leader(&self) -> Option<String> {
        self.leader.lock().expect("poisoned").clone()
    }

    pub(super) fn set_leader(&self, url: &str) {
        *self.leader.lock().expect("poisoned") = Some(url.to_string());
    }

    pub(super) fn forget_leader(&self, url: &str) {
        let mut l = self.leader.lock().expect("poisoned");
        if l.as_deref() == Some(url) {
            *l = None;
        }
    }
}

fn bearer_value(token: &str) -> Option<MetadataValue<Ascii>> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    format!("Bearer {token}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_needs_printable_ascii() {
        assert_eq!(bearer_value("abc").unwrap(), "Bearer abc");
        assert!(bearer_value("").is_none());
        assert!(bearer_value("a b").is_none());
        assert!(bearer_value("é").is_none());
    }

    #[test]
    fn addresses_become_urls_of_the_forwarding_scheme() {
        let mut config = Config::single_node(std::path::Path::new("/nonexistent"));
        config.embedded.forward_to_leader = true;
        let plain = Forwarder::new(&config, &NodeTls::default()).unwrap();
        assert!(plain.enabled);
        assert_eq!(plain.url("10.0.0.1:9083"), "http://10.0.0.1:9083");
        assert_eq!(plain.url("https://a:1"), "https://a:1");
        // A TLS client API without a CA to trust: forwarding is off.
        config.tls.client_api = true;
        assert!(
            !Forwarder::new(&config, &NodeTls::default())
                .unwrap()
                .enabled
        );
    }

    #[test]
    fn write_windows_fit_the_leaders_dedup_window() {
        use d_engine_storage::sm::dedup::DEDUP_WINDOW_PER_CLIENT;
        assert_eq!(
            d_engine_api::write_ids::SERVER_DEDUP_WINDOW,
            DEDUP_WINDOW_PER_CLIENT as u64,
            "clients size their write windows from the leader's dedup window"
        );
        assert!(d_engine_api::WRITE_WINDOW < DEDUP_WINDOW_PER_CLIENT as u64);
    }
}
