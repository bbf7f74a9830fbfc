//! Pieces shared by the tonic peer client and server: limits, the peer
//! directory, call metadata and connecting.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use d_engine_core::NodeId;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

/// Metadata key carrying the sender's cluster id on every peer call.
pub const CLUSTER_ID_HEADER: &str = "x-dengine-cluster-id";
/// Metadata key carrying the sender's node id (decimal) on every peer call.
pub const FROM_HEADER: &str = "x-dengine-from";
/// Optional metadata key: the sender's own peer address. A node that does
/// not know the sender yet (a learner waiting to join) uses it to answer.
pub const FROM_ADDR_HEADER: &str = "x-dengine-from-addr";

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
        }
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
#[derive(Clone, Debug, Default)]
pub struct PeerDirectory {
    inner: Arc<RwLock<BTreeMap<NodeId, String>>>,
}

impl PeerDirectory {
    pub fn new(peers: BTreeMap<NodeId, String>) -> Self {
        PeerDirectory {
            inner: Arc::new(RwLock::new(peers)),
        }
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

/// Adds the cluster id and sender id to an outgoing peer call.
pub(crate) fn add_peer_metadata(md: &mut MetadataMap, opts: &TransportOptions) {
    if let Ok(v) = opts.cluster_id.parse() {
        md.insert(CLUSTER_ID_HEADER, v);
    }
    if let Ok(v) = opts.local_id.to_string().parse() {
        md.insert(FROM_HEADER, v);
    }
    if !opts.advertise_addr.is_empty() {
        if let Ok(v) = opts.advertise_addr.parse() {
            md.insert(FROM_ADDR_HEADER, v);
        }
    }
}

/// The sender's advertised peer address, if it sent a plausible one.
pub(crate) fn sender_addr(md: &MetadataMap) -> Option<String> {
    let a = md.get(FROM_ADDR_HEADER)?.to_str().ok()?;
    (!a.is_empty() && a.len() <= 255 && a.contains(':')).then(|| a.to_string())
}

/// Checks an incoming peer call's metadata: same cluster, a known sender.
/// Returns the sender id. Failures are FAILED_PRECONDITION with a message
/// saying what to fix.
pub(crate) fn check_peer_metadata(
    md: &MetadataMap,
    opts: &TransportOptions,
    known: &PeerDirectory,
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
    // A node that knows no peer yet (a learner waiting to be added to an
    // existing cluster) accepts any sender of its cluster: the leader that
    // adds it is not in its configuration.
    let waiting_to_join = known.is_empty();
    if from == 0 || from == opts.local_id || (!waiting_to_join && !known.contains(from)) {
        let known_ids: Vec<NodeId> = known.snapshot().keys().copied().collect();
        return Err(Status::failed_precondition(format!(
            "node {from} is not a member known to node {} (known peers: {known_ids:?}); \
             add it to the cluster first (AddLearner) or fix the peers list",
            opts.local_id
        )));
    }
    Ok(from)
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

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
        assert_eq!(
            check_peer_metadata(&md(Some("prod"), Some("2")), &o, &known).unwrap(),
            2
        );
        let e = check_peer_metadata(&md(None, Some("2")), &o, &known).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("client address"), "{}", e.message());
        let e = check_peer_metadata(&md(Some("test"), Some("2")), &o, &known).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(e.message().contains("cluster 'test'"), "{}", e.message());
        let e = check_peer_metadata(&md(Some("prod"), Some("9")), &o, &known).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("node 9 is not a member"),
            "{}",
            e.message()
        );
        let e = check_peer_metadata(&md(Some("prod"), Some("x")), &o, &known).unwrap_err();
        assert!(e.message().contains("not a node id"), "{}", e.message());
        let e = check_peer_metadata(&md(Some("prod"), Some("1")), &o, &known).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        // A node waiting to join knows nobody yet: any sender of its cluster.
        let none = PeerDirectory::default();
        assert_eq!(
            check_peer_metadata(&md(Some("prod"), Some("9")), &o, &none).unwrap(),
            9
        );
        let e = check_peer_metadata(&md(Some("test"), Some("9")), &o, &none).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn chunk_size_respects_message_limit() {
        let mut o = opts();
        o.max_message_bytes = 256 << 10;
        o.snapshot_chunk_bytes = 1 << 20;
        assert_eq!(o.effective_chunk_bytes(), 192 << 10);
    }
}
