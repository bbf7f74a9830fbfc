//! Pieces shared by the tonic peer client and server: limits, the peer
//! directory, call metadata and connecting.
//!
//! Over 500 lines only because its unit tests sit beside it (the code
//! itself is under ~520 lines).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use d_engine_core::NodeId;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::peer_auth::{PeerCall, PeerSecret, AUTH_HEADER, TO_HEADER};
use crate::tls::error_chain;

/// Metadata key carrying the sender's cluster id on every peer call.
pub const CLUSTER_ID_HEADER: &str = "x-dengine-cluster-id";
/// Metadata key carrying the sender's node id (decimal) on every peer call.
pub const FROM_HEADER: &str = "x-dengine-from";
pub use super::peer_auth::FROM_ADDR_HEADER;

/// Limits and timings of the peer transport. Every limit says what happens
/// when it is reached.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// This node's id (sent as `x-dengine-from`).
    pub local_id: NodeId,
    /// Cluster id (sent as `x-dengine-cluster-id`); calls from another
    /// cluster are refused with FAILED_PRECONDITION.
    pub cluster_id: String,
    /// This node's peer address as others reach it (sent as
    /// `x-dengine-from-addr`; empty = not sent).
    pub advertise_addr: String,
    /// Messages queued per peer. When full, `send` drops the message and
    /// reports the peer unreachable (Raft retries on its own).
    pub peer_queue_capacity: usize,
    /// Timeout of one TCP+HTTP/2 connect attempt.
    pub connect_timeout: Duration,
    /// Reconnect backoff: doubles from `backoff_min` up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// HTTP/2 keepalive ping interval; a peer that does not answer within
    /// `keepalive_timeout` (crashed, paused, partitioned) breaks the stream.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Largest encoded or decoded peer message; larger ones fail the stream
    /// with RESOURCE_EXHAUSTED. Must exceed the core's `max_bytes_per_msg`
    /// plus the largest value.
    pub max_message_bytes: usize,
    /// HTTP/2 streams one peer connection may hold open at once.
    pub max_concurrent_streams: u32,
    /// Bytes of snapshot data per chunk.
    pub snapshot_chunk_bytes: usize,
    /// Snapshot chunks in flight before the sender waits for acks.
    pub snapshot_window: usize,
    /// Attempts (connect + resume) before `send_snapshot` gives up.
    pub snapshot_attempts: u32,
    /// How long the sender waits for one snapshot ack before retrying.
    pub snapshot_ack_timeout: Duration,
    /// Inbound snapshot transfers staged at once; more are refused with a
    /// retryable error.
    pub max_inbound_snapshots: usize,
    /// Largest inbound snapshot accepted (`snapshot.max_inbound_bytes`);
    /// a larger announced size is refused before anything is staged.
    pub snapshot_max_inbound_bytes: u64,
    /// An inbound snapshot transfer idle this long (no chunk arrives, or
    /// the sender reads no ack) is dropped and its staging file deleted
    /// (`snapshot.inbound_idle_timeout_ms`).
    pub snapshot_idle_timeout: Duration,
    /// Peer mutual TLS (`[tls] peer`); `None`: plaintext.
    pub tls: Option<crate::tls::PeerTls>,
    /// Peer id → address dialed instead of the member's peer address
    /// (`peer_dial_overrides`); outbound connections only.
    pub dial_overrides: BTreeMap<NodeId, String>,
    /// The cluster secret (`[peer] secret_file`): outbound calls carry a
    /// handshake MAC, inbound calls without a valid one are refused with
    /// UNAUTHENTICATED (`super::peer_auth`). `None`: no secret.
    pub secret: Option<Arc<PeerSecret>>,
    /// The node starts waiting to join an existing cluster (`join = true`):
    /// until the runtime reports a membership
    /// ([`super::Transport::set_joining`]), senders that are not in the peer
    /// list are accepted (the leader adding this node is not in its
    /// configuration). Otherwise only listed peers may call.
    pub joining: bool,
    /// Return links learned from authenticated callers' `x-dengine-from-addr`
    /// (only while joining). More learned links than this: the new one is
    /// not learned.
    pub max_learned_links: usize,
    /// A learned return link not refreshed by a new call from its peer for
    /// this long is dropped.
    pub learned_link_ttl: Duration,
    /// Which advertised addresses a joining node may learn from callers
    /// that did not authenticate (no cluster secret, no peer mTLS).
    pub unauthenticated_return_links: UnauthenticatedReturnLinks,
}

/// Return links a joining node may learn from unauthenticated callers.
///
/// Without a cluster secret or peer mTLS a joining node cannot check who
/// calls it, yet it must answer the leader that adds it, which is not in
/// its configuration. The config only runs unauthenticated when every
/// address is loopback or the operator opted out
/// (`peer.allow_unauthenticated`), so the node learns loopback addresses in
/// the first case and any address in the second. `Refused` (the default
/// for hand-built options) learns nothing unauthenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnauthenticatedReturnLinks {
    #[default]
    Refused,
    /// Only an advertised loopback address (`127.0.0.0/8`, `::1`, `localhost`).
    LoopbackOnly,
    /// Any advertised address (`peer.allow_unauthenticated = true`).
    Any,
}

impl UnauthenticatedReturnLinks {
    /// True when an unauthenticated caller's advertised `addr` may be learned.
    pub fn permits(self, addr: &str) -> bool {
        match self {
            UnauthenticatedReturnLinks::Refused => false,
            UnauthenticatedReturnLinks::LoopbackOnly => crate::config::is_loopback_addr(addr),
            UnauthenticatedReturnLinks::Any => true,
        }
    }
}

impl TransportOptions {
    pub fn new(local_id: NodeId, cluster_id: impl Into<String>) -> Self {
        TransportOptions {
            local_id,
            cluster_id: cluster_id.into(),
            advertise_addr: String::new(),
            peer_queue_capacity: 4096,
            connect_timeout: Duration::from_secs(1),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(3),
            max_message_bytes: 16 << 20,
            max_concurrent_streams: 64,
            snapshot_chunk_bytes: 1 << 20,
            snapshot_window: 4,
            snapshot_attempts: 8,
            snapshot_ack_timeout: Duration::from_secs(30),
            max_inbound_snapshots: 2,
            snapshot_max_inbound_bytes: 64 << 30,
            snapshot_idle_timeout: Duration::from_secs(30),
            tls: None,
            dial_overrides: BTreeMap::new(),
            secret: None,
            joining: false,
            max_learned_links: 8,
            learned_link_ttl: Duration::from_secs(300),
            unauthenticated_return_links: UnauthenticatedReturnLinks::Refused,
        }
    }

    /// True when callers authenticate: a cluster secret or peer mutual TLS.
    pub fn authenticated(&self) -> bool {
        self.secret.is_some() || self.tls.is_some()
    }

    /// Options for the node described by `config`: its id and cluster id,
    /// message limits that fit the largest AppendEntries, request and
    /// snapshot chunk, and the configured snapshot chunk size.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let mut o = TransportOptions::new(config.node_id, config.cluster_id.clone());
        o.advertise_addr = config.peer_addr.clone();
        let largest_append =
            config.raft.max_bytes_per_msg + config.limits.max_request_bytes + (1 << 20);
        o.max_message_bytes = largest_append
            .max(config.snapshot.chunk_bytes + (1 << 20))
            .max(16 << 20);
        o.snapshot_chunk_bytes = config.snapshot.chunk_bytes;
        o.snapshot_max_inbound_bytes = config.snapshot.max_inbound_bytes;
        o.snapshot_idle_timeout = Duration::from_millis(config.snapshot.inbound_idle_timeout_ms);
        // Validated with the rest of the config; an invalid map dials nothing special.
        o.dial_overrides = config.dial_overrides().unwrap_or_default();
        o.joining = config.join;
        o.unauthenticated_return_links = if config.peer_authenticated() {
            UnauthenticatedReturnLinks::Refused
        } else if config.peer.allow_unauthenticated {
            UnauthenticatedReturnLinks::Any
        } else {
            // Config validation admits this only when every address is loopback.
            UnauthenticatedReturnLinks::LoopbackOnly
        };
        o
    }

    /// The address to dial for `peer` whose member address is `addr`.
    pub fn dial_addr(&self, peer: NodeId, addr: &str) -> String {
        self.dial_overrides
            .get(&peer)
            .cloned()
            .unwrap_or_else(|| addr.to_string())
    }

    /// Snapshot chunk size actually used: never so big that one chunk plus
    /// its header would exceed `max_message_bytes`.
    pub(crate) fn effective_chunk_bytes(&self) -> usize {
        self.snapshot_chunk_bytes
            .min(self.max_message_bytes.saturating_sub(64 << 10))
            .max(1)
    }
}

/// The peers this node knows (id → peer address), shared by the outbound
/// transport and the inbound server (which refuses unknown senders).
///
/// `joining`: the node has no membership yet (started with `join = true`
/// and not yet added); only then are senders outside the list accepted.
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory {
    inner: Arc<RwLock<BTreeMap<NodeId, String>>>,
    joining: Arc<AtomicBool>,
}

impl PeerDirectory {
    pub fn new(peers: BTreeMap<NodeId, String>) -> Self {
        PeerDirectory {
            inner: Arc::new(RwLock::new(peers)),
            joining: Arc::default(),
        }
    }

    /// Whether the node is waiting to join (accepts senders it does not know).
    pub fn set_joining(&self, joining: bool) {
        self.joining.store(joining, Ordering::Release);
    }

    pub fn is_joining(&self) -> bool {
        self.joining.load(Ordering::Acquire)
    }

    pub fn replace(&self, peers: BTreeMap<NodeId, String>) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = peers;
    }

    pub fn addr(&self, id: NodeId) -> Option<String> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub fn snapshot(&self) -> BTreeMap<NodeId, String> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Adds the cluster id, sender id, target id, advertised address and (with a
/// cluster secret) the handshake MAC to an outgoing `call` to node `to`.
pub(crate) fn add_peer_metadata(
    md: &mut MetadataMap,
    opts: &TransportOptions,
    to: NodeId,
    call: PeerCall,
) {
    if let Ok(v) = opts.cluster_id.parse() {
        md.insert(CLUSTER_ID_HEADER, v);
    }
    if let Ok(v) = opts.local_id.to_string().parse() {
        md.insert(FROM_HEADER, v);
    }
    let mut from_addr = "";
    if !opts.advertise_addr.is_empty() {
        if let Ok(v) = opts.advertise_addr.parse() {
            md.insert(FROM_ADDR_HEADER, v);
            from_addr = &opts.advertise_addr;
        }
    }
    if let Ok(v) = to.to_string().parse() {
        md.insert(TO_HEADER, v);
    }
    if let Some(secret) = &opts.secret {
        let mac = secret.sign(&opts.cluster_id, opts.local_id, to, call, from_addr);
        if let Ok(v) = mac.parse() {
            md.insert(AUTH_HEADER, v);
        }
    }
}

/// The sender's advertised peer address, if it sent a plausible one.
pub(crate) fn sender_addr(md: &MetadataMap) -> Option<String> {
    let a = md.get(FROM_ADDR_HEADER)?.to_str().ok()?;
    (!a.is_empty() && a.len() <= 255 && a.contains(':')).then(|| a.to_string())
}

/// Checks an incoming peer call's metadata: same cluster
/// (FAILED_PRECONDITION), a valid handshake MAC when a cluster secret is
/// configured (UNAUTHENTICATED, see [`super::peer_auth`]), and a sender that
/// is a current member (PERMISSION_DENIED) — unless the node is waiting to
/// join ([`PeerDirectory::is_joining`]), when any authenticated sender of
/// its cluster is accepted. Returns the sender id. Messages say what to fix.
pub(crate) fn check_peer_metadata(
    md: &MetadataMap,
    opts: &TransportOptions,
    known: &PeerDirectory,
    call: PeerCall,
) -> Result<NodeId, Status> {
    let cluster = md
        .get(CLUSTER_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "missing {CLUSTER_ID_HEADER} metadata: this port carries d-engine peer (Raft) \
                 traffic only; clients must use the node's client address"
            ))
        })?;
    if cluster != opts.cluster_id {
        return Err(Status::failed_precondition(format!(
            "peer belongs to cluster '{cluster}' but node {} belongs to cluster '{}'; \
             check cluster_id in both nodes' configuration",
            opts.local_id, opts.cluster_id
        )));
    }
    let from = md
        .get(FROM_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::failed_precondition(format!("missing {FROM_HEADER} metadata")))?;
    let from: NodeId = from.parse().map_err(|_| {
        Status::failed_precondition(format!(
            "{FROM_HEADER} metadata '{from}' is not a node id (a positive integer)"
        ))
    })?;
    if let Some(secret) = &opts.secret {
        secret.verify(md, &opts.cluster_id, from, opts.local_id, call)?;
    }
    // Only a node waiting to join (no membership yet) accepts a sender it
    // does not know: the leader that adds it is not in its configuration.
    // A node with a membership of its own — including a single-node
    // cluster, whose peer list is empty — accepts its members only.
    if from == 0 || from == opts.local_id || (!known.is_joining() && !known.contains(from)) {
        let known_ids: Vec<NodeId> = known.snapshot().keys().copied().collect();
        return Err(Status::permission_denied(format!(
            "node {from} is not a member known to node {} (known peers: {known_ids:?}); \
             add it to the cluster first (AddLearner) or fix the peers list",
            opts.local_id
        )));
    }
    Ok(from)
}

/// Admits an incoming peer call or refuses it: [`check_peer_metadata`] then
/// [`check_peer_cert`]. A refusal is counted in `refused` and logged with
/// the caller's address (the first few and then every 1000th, so a flood
/// of forged calls cannot flood the log).
pub(crate) fn admit_peer_call<T>(
    req: &tonic::Request<T>,
    opts: &TransportOptions,
    known: &PeerDirectory,
    call: PeerCall,
    refused: &AtomicU64,
) -> Result<NodeId, Status> {
    let res = check_peer_metadata(req.metadata(), opts, known, call)
        .and_then(|from| check_peer_cert(req, from, opts).map(|()| from));
    if let Err(status) = &res {
        let n = refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= 16 || n.is_multiple_of(1000) {
            let remote = req
                .remote_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|| "unknown".into());
            let claimed = req
                .metadata()
                .get(FROM_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .chars()
                .take(32)
                .collect::<String>();
            tracing::warn!(
                node = opts.local_id,
                remote = %remote,
                claimed_from = %claimed,
                call = ?call,
                code = ?status.code(),
                reason = %status.message(),
                refused_total = n,
                "refused a peer call"
            );
        }
    }
    res
}

/// `host:port` or a full URI → an HTTP/2 endpoint to node `peer` with our
/// timeouts, over mutual TLS when `opts.tls` is set (a `host:port` then
/// becomes `https://host:port`).
pub(crate) fn endpoint(
    addr: &str,
    peer: NodeId,
    opts: &TransportOptions,
) -> Result<Endpoint, String> {
    let scheme = if opts.tls.is_some() { "https" } else { "http" };
    let uri = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("{scheme}://{addr}")
    };
    let ep = Endpoint::from_shared(uri)
        .map_err(|e| format!("invalid peer address '{addr}': {e}"))?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(opts.keepalive_interval)
        .keep_alive_timeout(opts.keepalive_timeout)
        .keep_alive_while_idle(true);
    match &opts.tls {
        Some(tls) => ep.tls_config(tls.client_for(peer)).map_err(|e| {
            format!(
                "TLS settings for peer {peer} at '{addr}': {}",
                error_chain(&e)
            )
        }),
        None => Ok(ep),
    }
}

/// Checks the TLS identity of a peer call claiming to come from node
/// `from` (when peer TLS with name checks is on): its certificate must be
/// valid for `node-<from>`. Failures are PERMISSION_DENIED.
pub(crate) fn check_peer_cert<T>(
    req: &tonic::Request<T>,
    from: NodeId,
    opts: &TransportOptions,
) -> Result<(), Status> {
    let Some(tls) = &opts.tls else { return Ok(()) };
    if !tls.check_names {
        return Ok(());
    }
    let certs = req.peer_certs();
    let leaf = certs.as_ref().and_then(|c| c.first());
    match leaf {
        Some(der) if crate::tls::cert_names_node(der, from) => Ok(()),
        Some(_) => Err(Status::permission_denied(format!(
            "the caller's certificate is not valid for {}: it cannot act as node {from} \
             (node certificates need the DNS name node-<id>; see tls.check_peer_names)",
            crate::tls::node_name(from)
        ))),
        None => Err(Status::permission_denied(
            "peer calls need a client certificate (tls.peer = true on this node)",
        )),
    }
}

/// Connects to peer `peer` at `addr` (one attempt).
pub(crate) async fn connect(
    addr: &str,
    peer: NodeId,
    opts: &TransportOptions,
) -> Result<Channel, String> {
    let ep = endpoint(addr, peer, opts)?;
    ep.connect()
        .await
        .map_err(|e| format!("cannot connect to peer at {addr}: {}", error_chain(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> TransportOptions {
        TransportOptions::new(1, "prod")
    }

    fn md(cluster: Option<&str>, from: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(c) = cluster {
            m.insert(CLUSTER_ID_HEADER, c.parse().unwrap());
        }
        if let Some(f) = from {
            m.insert(FROM_HEADER, f.parse().unwrap());
        }
        m
    }

    #[test]
    fn metadata_checks_name_the_problem() {
        let known = PeerDirectory::new([(2, "127.0.0.1:1".to_string())].into());
        let o = opts();
        let check = |md: &MetadataMap, known: &PeerDirectory| {
            check_peer_metadata(md, &o, known, PeerCall::Stream)
        };
        assert_eq!(check(&md(Some("prod"), Some("2")), &known).unwrap(), 2);
        let e = check(&md(None, Some("2")), &known).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("client address"), "{}", e.message());
        let e = check(&md(Some("test"), Some("2")), &known).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("cluster 'test'"), "{}", e.message());
        let e = check(&md(Some("prod"), Some("9")), &known).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("node 9 is not a member"),
            "{}",
            e.message()
        );
        let e = check(&md(Some("prod"), Some("x")), &known).unwrap_err();
        assert!(e.message().contains("not a node id"), "{}", e.message());
        let e = check(&md(Some("prod"), Some("1")), &known).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // A single-node cluster knows no peer, and is not waiting to join:
        // nobody may call it.
        let none = PeerDirectory::default();
        let e = check(&md(Some("prod"), Some("9")), &none).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // A node waiting to join: any sender of its cluster, until it learns
        // a membership.
        none.set_joining(true);
        assert_eq!(check(&md(Some("prod"), Some("9")), &none).unwrap(), 9);
        let e = check(&md(Some("test"), Some("9")), &none).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        none.set_joining(false);
        assert!(check(&md(Some("prod"), Some("9")), &none).is_err());
    }

    #[test]
    fn with_a_secret_calls_need_a_valid_handshake() {
        let mut o = opts();
        o.secret = Some(Arc::new(PeerSecret::from_bytes(&[3; 32]).unwrap()));
        let known = PeerDirectory::new([(2, "127.0.0.1:1".to_string())].into());
        // Unsigned: refused even from a member.
        let e = check_peer_metadata(&md(Some("prod"), Some("2")), &o, &known, PeerCall::Stream)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("peer.secret_file"), "{}", e.message());
        // Signed by node 2 with the same secret, for node 1.
        let mut sender = TransportOptions::new(2, "prod");
        sender.secret = o.secret.clone();
        let mut m = MetadataMap::new();
        add_peer_metadata(&mut m, &sender, 1, PeerCall::Stream);
        assert_eq!(
            check_peer_metadata(&m, &o, &known, PeerCall::Stream).unwrap(),
            2
        );
        // A handshake for a stream cannot open a snapshot transfer.
        let mut m = MetadataMap::new();
        add_peer_metadata(&mut m, &sender, 1, PeerCall::Stream);
        let e = check_peer_metadata(&m, &o, &known, PeerCall::Snapshot).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        // Another secret.
        sender.secret = Some(Arc::new(PeerSecret::from_bytes(&[4; 32]).unwrap()));
        let mut m = MetadataMap::new();
        add_peer_metadata(&mut m, &sender, 1, PeerCall::Stream);
        let e = check_peer_metadata(&m, &o, &known, PeerCall::Stream).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn chunk_size_respects_message_limit() {
        let mut o = opts();
        o.max_message_bytes = 256 << 10;
        o.snapshot_chunk_bytes = 1 << 20;
        assert_eq!(o.effective_chunk_bytes(), 192 << 10);
    }
}
