//! Node configuration: one TOML file, every key optional with a default.
//!
//! With nothing configured a node runs as a single-node cluster (node id 1)
//! storing its data in `./d-engine-data`, serving peers on 127.0.0.1:9081 and
//! clients on 127.0.0.1:9083. `docs/config.md` documents every key; this
//! module is the source of truth for defaults and allowed ranges, and
//! [`Config::validate`] names the key and the range in every error.
//!
//! ```toml
//! node_id = 1
//! cluster_id = "d-engine"
//! data_dir = "./d-engine-data"
//! peer_addr = "127.0.0.1:9081"
//! client_addr = "127.0.0.1:9083"
//!
//! [[members]]
//! id = 1
//! peer_addr = "127.0.0.1:9081"
//! client_addr = "127.0.0.1:9083"
//!
//! [raft]
//! tick_ms = 10
//! election_timeout_ms = 150
//!
//! [durability]
//! mode = "fsync"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Hard upper bound for keys, fixed by the storage format.
pub const MAX_KEY_BYTES: usize = d_engine_storage::command::MAX_KEY_BYTES;
/// Hard upper bound for values, fixed by the storage format.
pub const MAX_VALUE_BYTES: usize = d_engine_storage::command::MAX_VALUE_BYTES;
/// Default client API port.
pub const DEFAULT_CLIENT_PORT: u16 = 9083;
/// Default peer (Raft) port.
pub const DEFAULT_PEER_PORT: u16 = 9081;

/// A configuration problem: names the key, what is wrong and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `raft.election_timeout_ms` (empty for whole-file errors).
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid configuration: {}", self.message)
        } else {
            write!(
                f,
                "invalid configuration key `{}`: {}",
                self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// One member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Node id, >= 1, unique.
    pub id: u64,
    /// Address peers reach this node's Raft service on (`host:port`).
    pub peer_addr: String,
    /// Address clients reach this node's client API on (`host:port`); may be empty.
    #[serde(default)]
    pub client_addr: String,
}

/// Complete node configuration. See `docs/config.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This node's id (>= 1). Default 1.
    pub node_id: u64,
    /// Name of the cluster; stored in the data dir, which refuses to open
    /// under another cluster id. Default "d-engine".
    pub cluster_id: String,
    /// Where the WAL, hard state, state machine and snapshots live.
    /// Default "./d-engine-data".
    pub data_dir: PathBuf,
    /// Listen address of the peer (Raft) gRPC service. Default 127.0.0.1:9081.
    pub peer_addr: String,
    /// Listen address of the client gRPC API; empty disables it (embedded
    /// only). Default 127.0.0.1:9083.
    pub client_addr: String,
    /// Initial voters of a brand-new cluster. Empty: a single-node cluster of
    /// this node. Ignored once the data dir holds a membership. With
    /// `join = true`: where the existing cluster is (so this node can answer
    /// the leader before it has learned the membership).
    pub members: Vec<MemberConfig>,
    /// Start with no membership and wait to be added to an existing cluster
    /// (AddLearner on its leader, then Promote). Default false.
    pub join: bool,
    /// Outbound dialing only: node id (decimal string key) → address this
    /// node dials instead of that member's `peer_addr` (e.g. a proxy that
    /// injects faults in tests, or a NAT/tunnel address). Does not change
    /// what is replicated or advertised. Default empty.
    pub peer_dial_overrides: BTreeMap<String, String>,
    pub raft: RaftConfig,
    pub batching: BatchingConfig,
    pub durability: DurabilityConfig,
    pub limits: LimitsConfig,
    pub queues: QueueConfig,
    pub snapshot: SnapshotConfig,
    /// The storage quota (`docs/config.md`, "Budgets and quotas").
    pub storage: StorageConfig,
    pub state_machine: StateMachineConfig,
    pub watch: WatchConfig,
    pub ttl: TtlConfig,
    pub embedded: EmbeddedConfig,
    pub tls: TlsConfig,
    /// Authentication and authorization of the client API (`docs/auth.md`).
    pub auth: crate::auth::AuthConfig,
    /// Authentication of the peer (Raft) port (`docs/tls.md`, "Peer authentication").
    pub peer: PeerConfig,
}

/// How nodes prove to each other that they belong to the cluster
/// (`[peer]`; `docs/tls.md`). Either a shared cluster secret
/// (`secret_file`), or peer mutual TLS (`[tls] peer = true`), or both.
///
/// Without either, [`Config::validate`] refuses a node whose peer port
/// listens on a non-loopback address, and a multi-node configuration with a
/// member on a non-loopback address, unless `allow_unauthenticated = true`.
/// A cluster entirely on loopback addresses may run unauthenticated (every
/// local process is then trusted as a peer); the node warns at every start.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// File holding the cluster secret: at least 32 random bytes written as
    /// hex (`d-engine-server gen-secret --out FILE` writes one, mode 0600).
    /// Every node of the cluster uses the same file. Each peer stream is
    /// opened with an HMAC-SHA256 over the cluster id, sender id, target id,
    /// a timestamp and a nonce; a call without a valid one is refused
    /// (UNAUTHENTICATED). The file must not be readable by group or others.
    /// Default empty (no secret).
    pub secret_file: PathBuf,
    /// Run without peer authentication even though the peer port or a
    /// member listens on a non-loopback address: anyone who can reach the
    /// peer port can then act as a member. A warning is logged at every
    /// start. Default false.
    pub allow_unauthenticated: bool,
}

/// Timing of elections and heartbeats and replication windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftConfig {
    /// Length of one logical tick. Default 10; 1..=1000.
    pub tick_ms: u64,
    /// Base election timeout; each election waits a random time in
    /// `[t, 2t)`. Default 150; at least 3 ticks and > heartbeat_interval_ms.
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval. Default 30; at least one tick.
    pub heartbeat_interval_ms: u64,
    /// Lease = election timeout minus this margin (covers clock-rate drift
    /// between nodes and tick quantization). Default 30; at least one tick,
    /// at most election_timeout_ms - tick_ms.
    pub lease_drift_margin_ms: u64,
    /// Pre-vote before elections (prevents a rejoining node from disrupting
    /// a healthy leader). Default true.
    pub pre_vote: bool,
    /// A leader that cannot hear a quorum within an election timeout steps
    /// down. Default true. Required for lease reads to be safe.
    pub check_quorum: bool,
    /// AppendEntries in flight per follower. Default 64; 1..=4096.
    pub max_inflight_msgs: usize,
    /// Entries per AppendEntries. Default 4096; 1..=1,000,000.
    pub max_entries_per_msg: usize,
    /// Payload bytes per AppendEntries. Default 4 MiB; 4 KiB..=64 MiB.
    pub max_bytes_per_msg: usize,
}

/// Group commit of proposals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most commands coalesced into one proposal batch. Default 4096; 1..=100,000.
    pub max_batch_entries: usize,
    /// Most command bytes coalesced into one proposal batch. Default 4 MiB;
    /// at least max_value_bytes + 64 KiB, at most 256 MiB.
    pub max_batch_bytes: usize,
}

/// When a write counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// fdatasync before an entry counts toward a commit (default; nothing
    /// acknowledged is lost whatever fails).
    Fsync,
    /// Count entries once written to the OS; fdatasync every `interval_ms`.
    /// A power loss on a majority within the window can lose acknowledged
    /// writes. See `docs/config.md`.
    Periodic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DurabilityConfig {
    /// "fsync" (default) or "periodic".
    pub mode: DurabilityMode,
    /// Sync interval in `periodic` mode. Default 10; 1..=60000.
    pub interval_ms: u64,
    /// WAL segment size in bytes. Default 64 MiB; 4 KiB..=1 GiB.
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest key. Default and maximum 4096; 1..=4096.
    pub max_key_bytes: usize,
    /// Largest value. Default and maximum 1 MiB (1048576); 0..=1048576.
    pub max_value_bytes: usize,
    /// Largest gRPC request/response message. Default 4 MiB; at least
    /// max_key_bytes + max_value_bytes + 4 KiB, at most 256 MiB.
    pub max_request_bytes: usize,
    /// Most pairs one scan returns (a request's limit 0 means this). Default 10000; 1..=1,000,000.
    pub max_scan_limit: u32,
    /// Most keys in one get_multi. Default 1000; 1..=100,000.
    pub max_get_multi_keys: usize,
    /// Concurrent HTTP/2 streams (calls and watches) per client connection;
    /// further calls on that connection wait for a free slot. Default 1024;
    /// 1..=65,536.
    pub max_concurrent_streams: u32,
    /// Open client-API connections per node; a connection beyond it is
    /// closed at once (logged). Default 4096; 1..=1,000,000.
    pub max_client_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests waiting for the consensus loop (proposals, reads, admin).
    /// Full → `Overloaded`. Default 8192; 16..=1,048,576.
    pub input_capacity: usize,
    /// Proposals accepted but not yet applied. Beyond this, new writes get
    /// `Overloaded`. Default 65536; 16..=4,194,304.
    pub max_pending_proposals: usize,
    /// Linearizable reads waiting for their read index. Default 65536; 16..=4,194,304.
    pub max_pending_reads: usize,
    /// Messages from peers waiting for the consensus loop. Full → the
    /// message is dropped (Raft retransmits). Default 16384; 16..=1,048,576.
    pub peer_inbox_capacity: usize,
    /// How long a client write or read waits before `Timeout`. Default 10000; 10..=600000.
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Take a snapshot (and compact the WAL) after this many applied
    /// entries; 0 disables automatic snapshots. Default 100000.
    pub threshold_entries: u64,
    /// Also take a snapshot once the committed log entries since the last
    /// one hold more than this many payload bytes, whichever of the two
    /// thresholds comes first: bounds the in-memory log (and the log a
    /// restart replays) in bytes, not just entries. 0 disables the byte
    /// trigger. Default 256 MiB; 0 or 64 KiB..=64 GiB.
    pub threshold_bytes: u64,
    /// Snapshot transfer chunk size. Default 1 MiB; 4 KiB..=64 MiB.
    pub chunk_bytes: usize,
    /// Largest snapshot this node accepts from a peer, in bytes: a transfer
    /// announcing more is refused before anything is staged (and so is a
    /// transfer that would leave less than 1/20 of the data dir's
    /// filesystem, at least 64 MiB, free). Default 64 GiB; 1 MiB..=16 TiB.
    pub max_inbound_bytes: u64,
    /// An inbound snapshot transfer that sends nothing for this long is
    /// dropped: its slot is released and its staging file deleted (the
    /// sender starts over). Default 30000 (30 s); 100..=3600000.
    pub inbound_idle_timeout_ms: u64,
}

/// The storage quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Most logical bytes of stored data (every key: key + value + 32 bytes
    /// of metadata, the same count on every backend and replica) a leader
    /// admits writes up to. A write that would take the data past it fails
    /// with `NoSpace` and raises the `NOSPACE` alarm in the node status;
    /// reads, deletes and snapshots keep working. A soft limit checked on
    /// the leader when a write is proposed: a committed write is always
    /// applied, on every replica. 0 disables the quota. Default 2 GiB (as
    /// etcd's default backend quota); 0 or 1 KiB..=8 EiB.
    pub quota_bytes: u64,
}

/// Default [`StorageConfig::quota_bytes`]: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            quota_bytes: DEFAULT_QUOTA_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateMachineConfig {
    /// Where applied keys live. Default `memory`.
    pub backend: StateMachineBackend,
    /// sled's page cache, in MiB (the `sled` backend only). The largest
    /// single share of a node's memory; smaller saves memory at the cost of
    /// reads and writes that miss it. Default 256; 8..=65536.
    pub cache_mb: u64,
}

/// The state machine's storage. Either way the log is the source of truth
/// and every write is fsynced to it before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateMachineBackend {
    /// Every key in RAM, in copy-on-write maps; a restart loads the latest
    /// snapshot and replays the log after it (default). The cheapest per
    /// write and the smallest per key; the data set must fit in memory, and
    /// a restart takes longer the further the log runs past the latest
    /// snapshot (`snapshot.threshold_entries`).
    Memory,
    /// A sled database on disk with a page cache (`cache_mb`), flushed in
    /// the background; a restart replays the log after sled's applied index.
    /// For data sets larger than memory.
    Sled,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Events buffered per watcher; a watcher that falls this far behind is
    /// cancelled with a reason. Default 1024; 1..=1,048,576.
    pub buffer: usize,
    /// Recent events kept in memory for `start_revision`. Default 10000; 0..=10,000,000.
    pub history: usize,
    /// Most concurrent watchers per node. Default 10000; 1..=1,000,000.
    pub max_watchers: usize,
    /// Most concurrent client-API watches of one authenticated user (all
    /// its connections together), so one user cannot take every watch
    /// slot. Not applied when auth is off. Default 1000; 1..=1,000,000.
    pub max_watchers_per_user: usize,
    /// Most concurrent client-API watches on one connection. Default 256;
    /// 1..=1,000,000.
    pub max_watchers_per_connection: usize,
    /// Bytes of events (keys and values) queued for one watcher: delivered
    /// by the node, not yet taken by the watcher's consumer (a gRPC stream's
    /// events count until the transport takes the message). A watcher whose
    /// next event would pass it is cancelled like one that falls `buffer`
    /// events behind (`Overloaded`, naming this key). A single event larger
    /// than the limit is still delivered to a watcher with nothing queued.
    /// A replay from `start_revision` is charged but never refused for its
    /// size (it shares the history's bytes). Default
    /// 4 MiB; 64 KiB..=1 GiB.
    pub max_buffer_bytes: usize,
    /// Bytes of events (keys and values) kept in memory for
    /// `start_revision`; the oldest events leave when either this or
    /// `history` is exceeded, and a watch from a revision that left fails
    /// with `Compacted`. Default 64 MiB; 0..=16 GiB.
    pub history_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlConfig {
    /// How often the leader proposes an Expire command. Default 1000; 10..=3,600,000.
    pub expire_interval_ms: u64,
}

/// Behaviour of the embedded client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedConfig {
    /// When the local node is not the leader, forward writes and
    /// linearizable/lease reads to the leader's client API over gRPC
    /// (otherwise return NotLeader). Default true.
    pub forward_to_leader: bool,
}

/// Whether the client port asks for client certificates (`[tls] client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is requested (default).
    #[default]
    None,
    /// A client certificate is verified against `ca_file` if presented.
    Optional,
    /// Every client must present a certificate signed by `ca_file`.
    Require,
}

/// TLS for the client API and mutual TLS between peers. See `docs/tls.md`.
///
/// Both switches default to off (plaintext). The files are PEM; they are
/// read once at startup, and an unreadable or malformed file stops the node
/// with an error naming the key and the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain (PEM). Required when `client_api` or
    /// `peer` is on. Default empty.
    pub cert_file: PathBuf,
    /// The private key of `cert_file` (PEM, PKCS#8, PKCS#1 or SEC1). Default empty.
    pub key_file: PathBuf,
    /// CA bundle (PEM) that signs the cluster's node certificates (peer
    /// mTLS) and the client certificates (`client_auth`). Required when
    /// `peer` is on or `client_auth` is not "none". Default empty.
    pub ca_file: PathBuf,
    /// Serve the client API over TLS. Default false.
    pub client_api: bool,
    /// Mutual TLS on the peer (Raft) port: both sides present node
    /// certificates signed by `ca_file`. Default false.
    pub peer: bool,
    /// Client certificates on the client port: "none" (default),
    /// "optional" or "require". Needs `client_api = true`.
    pub client_auth: ClientAuth,
    /// With `peer = true`: a peer calling as node N must present a
    /// certificate valid for the DNS name `node-N` (what `d-engine-server
    /// certs` writes), so one node's key cannot impersonate another.
    /// Default true.
    pub check_peer_names: bool,
    /// With `peer = true`: a separate CA bundle (PEM) that signs node
    /// certificates, trusted on the peer port instead of `ca_file` (like
    /// etcd's `--peer-trusted-ca-file`), so that a certificate issued for
    /// the client API can never act as a node. Default empty: `ca_file`.
    pub peer_ca_file: PathBuf,
    /// With `peer = true`: the certificate this node presents to peers
    /// (signed by `peer_ca_file`). Default empty: `cert_file`.
    pub peer_cert_file: PathBuf,
    /// The private key of `peer_cert_file`. Default empty: `key_file`.
    pub peer_key_file: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            client_api: false,
            peer: false,
            client_auth: ClientAuth::None,
            check_peer_names: true,
            peer_ca_file: PathBuf::new(),
            peer_cert_file: PathBuf::new(),
            peer_key_file: PathBuf::new(),
        }
    }
}

impl TlsConfig {
    /// True when any listener or outbound link uses TLS.
    pub fn enabled(&self) -> bool {
        self.client_api || self.peer
    }
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            forward_to_leader: true,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            cluster_id: "d-engine".into(),
            data_dir: PathBuf::from("./d-engine-data"),
            peer_addr: format!("127.0.0.1:{DEFAULT_PEER_PORT}"),
            client_addr: format!("127.0.0.1:{DEFAULT_CLIENT_PORT}"),
            members: Vec::new(),
            join: false,
            peer_dial_overrides: BTreeMap::new(),
            raft: RaftConfig::default(),
            batching: BatchingConfig::default(),
            durability: DurabilityConfig::default(),
            limits: LimitsConfig::default(),
            queues: QueueConfig::default(),
            snapshot: SnapshotConfig::default(),
            storage: StorageConfig::default(),
            state_machine: StateMachineConfig::default(),
            watch: WatchConfig::default(),
            ttl: TtlConfig::default(),
            embedded: EmbeddedConfig::default(),
            tls: TlsConfig::default(),
            auth: crate::auth::AuthConfig::default(),
            peer: PeerConfig::default(),
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            tick_ms: 10,
            election_timeout_ms: 150,
            heartbeat_interval_ms: 30,
            lease_drift_margin_ms: 30,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 64,
            max_entries_per_msg: 4096,
            max_bytes_per_msg: 4 << 20,
        }
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_entries: 4096,
            max_batch_bytes: 4 << 20,
        }
    }
}

impl Default for DurabilityConfig {
    fn default() -> Self {
        DurabilityConfig {
            mode: DurabilityMode::Fsync,
            interval_ms: 10,
            segment_bytes: 64 << 20,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: MAX_VALUE_BYTES,
            max_request_bytes: 4 << 20,
            max_scan_limit: 10_000,
            max_get_multi_keys: 1000,
            max_concurrent_streams: 1024,
            max_client_connections: 4096,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            input_capacity: 8192,
            max_pending_proposals: 65536,
            max_pending_reads: 65536,
            peer_inbox_capacity: 16384,
            request_timeout_ms: 10_000,
        }
    }
}

/// Default [`SnapshotConfig::threshold_bytes`]: 256 MiB. Large enough that
/// a node at its default 2 GiB quota rewrites its snapshot at most once per
/// 256 MiB of writes (8× write amplification at worst), small enough that
/// the in-memory log stays a bounded, modest share of a node's memory and a
/// restart replays seconds of log, not minutes.
pub const DEFAULT_SNAPSHOT_THRESHOLD_BYTES: u64 = 256 << 20;

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            threshold_entries: 100_000,
            threshold_bytes: DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
            chunk_bytes: 1 << 20,
            max_inbound_bytes: 64 << 30,
            inbound_idle_timeout_ms: 30_000,
        }
    }
}

impl Default for StateMachineConfig {
    fn default() -> Self {
        StateMachineConfig {
            backend: StateMachineBackend::Memory,
            cache_mb: 256,
        }
    }
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            buffer: 1024,
            history: 10_000,
            max_watchers: 10_000,
            max_watchers_per_user: 1000,
            max_watchers_per_connection: 256,
            max_buffer_bytes: 4 << 20,
            history_bytes: 64 << 20,
        }
    }
}

impl Default for TtlConfig {
    fn default() -> Self {
        TtlConfig {
            expire_interval_ms: 1000,
        }
    }
}

fn range<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), ConfigError> {
    if v < lo || v > hi {
        return Err(ConfigError::new(
            key,
            format!("value {v} is out of range; allowed {lo}..={hi}"),
        ));
    }
    Ok(())
}

fn check_addr(key: &str, addr: &str) -> Result<(), ConfigError> {
    // host:port where host may be a name; the port must parse.
    let ok = match addr.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok(),
        None => false,
    };
    if !ok {
        return Err(ConfigError::new(
            key,
            format!("`{addr}` is not a host:port address (e.g. 127.0.0.1:9083)"),
        ));
    }
    Ok(())
}

/// The 1-based number and trimmed text of the line holding byte `offset`.
fn line_at(text: &str, offset: usize) -> Option<(usize, &str)> {
    if offset > text.len() {
        return None;
    }
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[offset..]
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(text.len());
    let number = text[..start].matches('\n').count() + 1;
    Some((number, text[start..end].trim()))
}

impl Config {
    /// A single-node configuration storing its data in `data_dir`.
    pub fn single_node(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            ..Config::default()
        }
    }

    /// Parses TOML text and validates it. Unknown keys are errors.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // toml reports unknown keys as "unknown field `x`, expected ...";
            // for wrong types it names only the type, so quote the offending
            // line (which holds the key) with its number.
            let msg = e.message().trim().to_string();
            match e.span().and_then(|span| line_at(text, span.start)) {
                Some((number, line)) => {
                    ConfigError::new("", format!("line {number}: `{line}`: {msg}"))
                }
                None => ConfigError::new("", msg),
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file. A relative `data_dir` stays relative
    /// to the process's working directory.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "",
                format!("cannot read config file {}: {e}", path.display()),
            )
        })?;
        Self::from_toml_str(&text).map_err(|mut e| {
            e.message = format!("{} (in {})", e.message, path.display());
            e
        })
    }

    /// Serialises back to TOML (every key, with its current value).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }

    /// [`Config::to_toml_string`] with every secret replaced by
    /// `"<redacted>"` (`auth.forward_token`, password hashes, token
    /// digests): what `d-engine-server --print-config` shows.
    pub fn to_redacted_toml_string(&self) -> String {
        let mut c = self.clone();
        c.auth = c.auth.redacted();
        c.to_toml_string()
    }

    /// The initial members, defaulting to this node alone.
    pub fn initial_members(&self) -> Vec<MemberConfig> {
        if self.join {
            // A joining node starts with no membership; it learns it from
            // the leader once added (`members` then only says where the
            // existing cluster is).
            return Vec::new();
        }
        if self.members.is_empty() {
            return vec![MemberConfig {
                id: self.node_id,
                peer_addr: self.peer_addr.clone(),
                client_addr: self.client_addr.clone(),
            }];
        }
        self.members.clone()
    }

    /// `peer_dial_overrides` by node id. Errors name the key: an id that is
    /// not a number, 0, this node's own id, not one of `members` (when
    /// members are listed), or an address that is not `host:port`.
    pub fn dial_overrides(&self) -> Result<BTreeMap<u64, String>, ConfigError> {
        let mut out = BTreeMap::new();
        for (k, addr) in &self.peer_dial_overrides {
            let key = format!("peer_dial_overrides.{k}");
            let id: u64 = k
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(&key, format!("`{k}` is not a node id")))?;
            if id == 0 || id == self.node_id {
                return Err(ConfigError::new(
                    &key,
                    format!(
                        "node id {id} is 0 or this node's own id; only peers can be overridden"
                    ),
                ));
            }
            if !self.members.is_empty() && !self.members.iter().any(|m| m.id == id) {
                return Err(ConfigError::new(
                    &key,
                    format!("node id {id} is not one of the members"),
                ));
            }
            check_addr(&key, addr)?;
            out.insert(id, addr.clone());
        }
        Ok(out)
    }

    /// One tick.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.raft.tick_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.queues.request_timeout_ms)
    }

    fn ticks(&self, ms: u64) -> u64 {
        ms.div_ceil(self.raft.tick_ms).max(1)
    }

    /// The consensus core's configuration derived from this one.
    pub fn core_config(&self) -> d_engine_core::Config {
        let mut c = d_engine_core::Config::new(self.node_id);
        c.election_ticks = self.ticks(self.raft.election_timeout_ms);
        c.heartbeat_ticks = self.ticks(self.raft.heartbeat_interval_ms);
        c.lease_drift_margin_ticks = self.raft.lease_drift_margin_ms.div_ceil(self.raft.tick_ms);
        c.pre_vote = self.raft.pre_vote;
        c.check_quorum = self.raft.check_quorum;
        c.max_inflight_msgs = self.raft.max_inflight_msgs;
        c.max_entries_per_msg = self.raft.max_entries_per_msg;
        c.max_bytes_per_msg = self.raft.max_bytes_per_msg;
        c.snapshot_threshold = self.snapshot.threshold_entries;
        c
    }

    /// Checks every key; the error names the key and the allowed range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::new(
                "node_id",
                "must be >= 1 (0 is reserved); allowed 1..=18446744073709551615",
            ));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > 128 {
            return Err(ConfigError::new("cluster_id", "must be 1..=128 bytes long"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        check_addr("peer_addr", &self.peer_addr)?;
        if !self.client_addr.is_empty() {
            check_addr("client_addr", &self.client_addr)?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.id == 0 {
                return Err(ConfigError::new(
                    format!("members[{i}].id"),
                    "must be >= 1 (0 is reserved)",
                ));
            }
            if !seen.insert(m.id) {
                return Err(ConfigError::new(
                    format!("members[{i}].id"),
                    format!("node id {} is listed twice", m.id),
                ));
            }
            check_addr(&format!("members[{i}].peer_addr"), &m.peer_addr)?;
            if !m.client_addr.is_empty() {
                check_addr(&format!("members[{i}].client_addr"), &m.client_addr)?;
            }
        }
        if !self.members.is_empty() && !self.join && !seen.contains(&self.node_id) {
            return Err(ConfigError::new(
                "members",
                format!(
                    "node_id {} is not one of the members {:?}; add it, or set join = true to \
                     join an existing cluster as a learner",
                    self.node_id,
                    seen.iter().collect::<Vec<_>>()
                ),
            ));
        }
        self.dial_overrides()?;
        let r = &self.raft;
        range("raft.tick_ms", r.tick_ms, 1, 1000)?;
        range(
            "raft.heartbeat_interval_ms",
            r.heartbeat_interval_ms,
            r.tick_ms,
            600_000,
        )?;
        range(
            "raft.election_timeout_ms",
            r.election_timeout_ms,
            (3 * r.tick_ms).max(r.heartbeat_interval_ms + 1),
            600_000,
        )?;
        if self.ticks(r.election_timeout_ms) <= self.ticks(r.heartbeat_interval_ms) {
            return Err(ConfigError::new(
                "raft.election_timeout_ms",
                format!(
                    "must span more ticks than raft.heartbeat_interval_ms ({} ms) at tick_ms = {}",
                    r.heartbeat_interval_ms, r.tick_ms
                ),
            ));
        }
        range(
            "raft.lease_drift_margin_ms",
            r.lease_drift_margin_ms,
            r.tick_ms,
            r.election_timeout_ms.saturating_sub(r.tick_ms),
        )?;
        range("raft.max_inflight_msgs", r.max_inflight_msgs, 1, 4096)?;
        range(
            "raft.max_entries_per_msg",
            r.max_entries_per_msg,
            1,
            1_000_000,
        )?;
        range(
            "raft.max_bytes_per_msg",
            r.max_bytes_per_msg,
            4096,
            64 << 20,
        )?;

        let l = &self.limits;
        range("limits.max_key_bytes", l.max_key_bytes, 1, MAX_KEY_BYTES)?;
        range(
            "limits.max_value_bytes",
            l.max_value_bytes,
            0,
            MAX_VALUE_BYTES,
        )?;
        range(
            "limits.max_request_bytes",
            l.max_request_bytes,
            l.max_key_bytes + l.max_value_bytes + 4096,
            256 << 20,
        )?;
        range("limits.max_scan_limit", l.max_scan_limit, 1, 1_000_000)?;
        range(
            "limits.max_get_multi_keys",
            l.max_get_multi_keys,
            1,
            100_000,
        )?;
        range(
            "limits.max_concurrent_streams",
            l.max_concurrent_streams,
            1,
            65_536,
        )?;
        range(
            "limits.max_client_connections",
            l.max_client_connections,
            1,
            1_000_000,
        )?;

        let b = &self.batching;
        range(
            "batching.max_batch_entries",
            b.max_batch_entries,
            1,
            100_000,
        )?;
        range(
            "batching.max_batch_bytes",
            b.max_batch_bytes,
            l.max_value_bytes + l.max_key_bytes + (64 << 10),
            256 << 20,
        )?;

        let d = &self.durability;
        if d.mode == DurabilityMode::Periodic {
            range("durability.interval_ms", d.interval_ms, 1, 60_000)?;
        }
        range("durability.segment_bytes", d.segment_bytes, 4096, 1 << 30)?;

        let q = &self.queues;
        range("queues.input_capacity", q.input_capacity, 16, 1 << 20)?;
        range(
            "queues.max_pending_proposals",
            q.max_pending_proposals,
            16,
            1 << 22,
        )?;
        range("queues.max_pending_reads", q.max_pending_reads, 16, 1 << 22)?;
        range(
            "queues.peer_inbox_capacity",
            q.peer_inbox_capacity,
            16,
            1 << 20,
        )?;
        range(
            "queues.request_timeout_ms",
            q.request_timeout_ms,
            10,
            600_000,
        )?;

        if self.snapshot.threshold_bytes != 0 {
            range(
                "snapshot.threshold_bytes",
                self.snapshot.threshold_bytes,
                64 << 10,
                64 << 30,
            )?;
        }
        if self.storage.quota_bytes != 0 && self.storage.quota_bytes < 1024 {
            return Err(ConfigError::new(
                "storage.quota_bytes",
                format!(
                    "value {} is out of range; allowed 0 (no quota) or 1024..={}",
                    self.storage.quota_bytes,
                    u64::MAX
                ),
            ));
        }
        range(
            "snapshot.chunk_bytes",
            self.snapshot.chunk_bytes,
            4096,
            64 << 20,
        )?;
        range(
            "snapshot.max_inbound_bytes",
            self.snapshot.max_inbound_bytes,
            1 << 20,
            16 << 40,
        )?;
        range(
            "snapshot.inbound_idle_timeout_ms",
            self.snapshot.inbound_idle_timeout_ms,
            100,
            3_600_000,
        )?;
        range(
            "state_machine.cache_mb",
            self.state_machine.cache_mb,
            8,
            65_536,
        )?;
        range("watch.buffer", self.watch.buffer, 1, 1 << 20)?;
        range("watch.history", self.watch.history, 0, 10_000_000)?;
        range("watch.max_watchers", self.watch.max_watchers, 1, 1_000_000)?;
        range(
            "watch.max_watchers_per_user",
            self.watch.max_watchers_per_user,
            1,
            1_000_000,
        )?;
        range(
            "watch.max_watchers_per_connection",
            self.watch.max_watchers_per_connection,
            1,
            1_000_000,
        )?;
        range(
            "watch.max_buffer_bytes",
            self.watch.max_buffer_bytes,
            64 << 10,
            1 << 30,
        )?;
        range("watch.history_bytes", self.watch.history_bytes, 0, 16 << 30)?;
        range(
            "ttl.expire_interval_ms",
            self.ttl.expire_interval_ms,
            10,
            3_600_000,
        )?;
        self.auth.validate()?;
        self.validate_auth_transport()?;
        self.validate_tls()?;
        self.validate_peer_auth()?;
        Ok(())
    }

    /// True when peers authenticate (`peer.secret_file` or `tls.peer`).
    pub fn peer_authenticated(&self) -> bool {
        !self.peer.secret_file.as_os_str().is_empty() || self.tls.peer
    }

    /// True when this configuration describes more than one node (several
    /// members, or a node joining an existing cluster).
    pub fn multi_node(&self) -> bool {
        self.join || self.members.iter().any(|m| m.id != self.node_id)
    }

    /// `[peer]`: a peer port reachable from other machines, or a cluster
    /// with members on other machines, needs peer authentication unless the
    /// operator opts out (`peer.allow_unauthenticated`). Loopback-only
    /// configurations (the single-node default, local test clusters) may
    /// run without it; the node then warns at start.
    fn validate_peer_auth(&self) -> Result<(), ConfigError> {
        if self.peer_authenticated() || self.peer.allow_unauthenticated {
            return Ok(());
        }
        const FIX: &str = "set peer.secret_file (create one with `d-engine-server gen-secret \
                           --out FILE`, the same file on every node) or tls.peer = true, or set \
                           peer.allow_unauthenticated = true to accept unauthenticated peers \
                           (anyone who reaches the peer port can then act as a member)";
        if !is_loopback_addr(&self.peer_addr) {
            return Err(ConfigError::new(
                "peer.secret_file",
                format!(
                    "peer_addr {} is not a loopback address and peers are not \
                     authenticated: {FIX}",
                    self.peer_addr
                ),
            ));
        }
        if self.multi_node() {
            if let Some(m) = self
                .members
                .iter()
                .find(|m| !is_loopback_addr(&m.peer_addr))
            {
                return Err(ConfigError::new(
                    "peer.secret_file",
                    format!(
                        "this multi-node configuration has member {} at {}, which is not a \
                         loopback address, and peers are not authenticated: {FIX}",
                        m.id, m.peer_addr
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[auth]` over a plaintext client API that listens beyond loopback
    /// would send passwords and tokens in clear: refused unless
    /// `auth.allow_plaintext = true` (issue 16, finding 7).
    fn validate_auth_transport(&self) -> Result<(), ConfigError> {
        if !self.auth.enabled
            || self.tls.client_api
            || self.auth.allow_plaintext
            || self.client_addr.is_empty()
            || crate::auth::config::is_loopback_addr(&self.client_addr)
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

    /// `[tls]`: the files each switch needs are named. Their contents are
    /// checked when the node starts (`crate::tls`).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let t = &self.tls;
        let empty = |p: &PathBuf| p.as_os_str().is_empty();
        if t.enabled() {
            let why = if t.peer { "tls.peer" } else { "tls.client_api" };
            if empty(&t.cert_file) {
                return Err(ConfigError::new(
                    "tls.cert_file",
                    format!(
                        "must name this node's PEM certificate when {why} = true \
                         (`d-engine-server certs` writes development ones)"
                    ),
                ));
            }
            if empty(&t.key_file) {
                return Err(ConfigError::new(
                    "tls.key_file",
                    format!("must name the PEM private key of tls.cert_file when {why} = true"),
                ));
            }
        }
        if t.peer && empty(&t.ca_file) && empty(&t.peer_ca_file) {
            return Err(ConfigError::new(
                "tls.ca_file",
                "must name the CA (PEM) that signs the node certificates when tls.peer = true \
                 (or set tls.peer_ca_file)",
            ));
        }
        if !t.peer {
            for (key, p) in [
                ("tls.peer_ca_file", &t.peer_ca_file),
                ("tls.peer_cert_file", &t.peer_cert_file),
                ("tls.peer_key_file", &t.peer_key_file),
            ] {
                if !empty(p) {
                    return Err(ConfigError::new(
                        key,
                        "is only used with tls.peer = true; set tls.peer = true or remove it",
                    ));
                }
            }
        }
        if empty(&t.peer_cert_file) != empty(&t.peer_key_file) {
            return Err(ConfigError::new(
                "tls.peer_key_file",
                "tls.peer_cert_file and tls.peer_key_file are set together (the peer \
                 certificate and its key), or neither",
            ));
        }
        if t.client_auth != ClientAuth::None {
            if !t.client_api {
                return Err(ConfigError::new(
                    "tls.client_auth",
                    "needs tls.client_api = true (client certificates are a TLS feature)",
                ));
            }
            if empty(&t.ca_file) {
                return Err(ConfigError::new(
                    "tls.ca_file",
                    "must name the CA (PEM) that signs client certificates when \
                     tls.client_auth is \"optional\" or \"require\"",
                ));
            }
        }
        Ok(())
    }

    /// Resolves `peer_addr` to a socket address to bind.
    pub fn peer_socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        resolve("peer_addr", &self.peer_addr)
    }

    /// Resolves `client_addr`; `None` when the client API is disabled.
    pub fn client_socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.client_addr.is_empty() {
            return Ok(None);
        }
        resolve("client_addr", &self.client_addr).map(Some)
    }
}

/// True when `addr` (`host:port`) names a loopback address: `localhost`,
/// 127.0.0.0/8 or ::1. Unspecified addresses (0.0.0.0, ::) and other host
/// names are not loopback.
pub fn is_loopback_addr(addr: &str) -> bool {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

fn resolve(key: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .map_err(|e| ConfigError::new(key, format!("cannot resolve `{addr}`: {e}")))?
        .next()
        .ok_or_else(|| ConfigError::new(key, format!("`{addr}` resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_single_node() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.client_addr, "127.0.0.1:9083");
        let m = c.initial_members();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].id, 1);
        c.core_config().validate().unwrap();
    }

    #[test]
    fn wrong_type_quotes_the_line_with_the_key() {
        let err = Config::from_toml_str("data_dir = \"d\"\nnode_id = \"one\"\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("line 2") && text.contains("node_id"),
            "{text}"
        );
    }

    #[test]
    fn empty_toml_is_default() {
        assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    }

    #[test]
    fn roundtrip_toml() {
        let c = Config::default();
        let back = Config::from_toml_str(&c.to_toml_string()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
            node_id = 2
            cluster_id = "prod"
            data_dir = "/tmp/x"
            peer_addr = "127.0.0.1:7002"
            client_addr = "127.0.0.1:8002"
            [[members]]
            id = 1
            peer_addr = "127.0.0.1:7001"
            client_addr = "127.0.0.1:8001"
            [[members]]
            id = 2
            peer_addr = "127.0.0.1:7002"
            [raft]
            tick_ms = 5
            election_timeout_ms = 500
            [durability]
            mode = "periodic"
            interval_ms = 20
        "#;
        let c = Config::from_toml_str(text).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.durability.mode, DurabilityMode::Periodic);
        assert_eq!(c.core_config().election_ticks, 100);
        assert_eq!(c.core_config().heartbeat_ticks, 6);
    }

    #[test]
    fn errors_name_key_and_range() {
        let e = Config::from_toml_str("[raft]\ntick_ms = 0").unwrap_err();
        assert_eq!(e.key, "raft.tick_ms");
        assert!(e.to_string().contains("1..=1000"), "{e}");

        let e = Config::from_toml_str("[limits]\nmax_key_bytes = 5000").unwrap_err();
        assert_eq!(e.key, "limits.max_key_bytes");
        assert!(e.to_string().contains("1..=4096"), "{e}");

        let e = Config::from_toml_str("[state_machine]\ncache_mb = 4").unwrap_err();
        assert_eq!(e.key, "state_machine.cache_mb");
        assert!(e.to_string().contains("8..=65536"), "{e}");
        let c = Config::from_toml_str("[state_machine]\ncache_mb = 64").unwrap();
        assert_eq!(c.state_machine.cache_mb, 64);
        assert_eq!(c.state_machine.backend, StateMachineBackend::Memory);
        let c = Config::from_toml_str("[state_machine]\nbackend = \"sled\"").unwrap();
        assert_eq!(c.state_machine.backend, StateMachineBackend::Sled);
        let e = Config::from_toml_str("[state_machine]\nbackend = \"rocks\"").unwrap_err();
        assert!(e.to_string().contains("backend"), "{e}");

        let e = Config::from_toml_str("node_id = 0").unwrap_err();
        assert_eq!(e.key, "node_id");

        let e = Config::from_toml_str("bogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");

        let e = Config::from_toml_str("[durability]\nmode = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");

        let e =
            Config::from_toml_str("node_id = 3\n[[members]]\nid = 1\npeer_addr = \"127.0.0.1:1\"")
                .unwrap_err();
        assert_eq!(e.key, "members");

        let e = Config::from_toml_str("[tls]\nclient_api = true").unwrap_err();
        assert_eq!(e.key, "tls.cert_file");
        let e = Config::from_toml_str("[tls]\ncert_file = \"c\"\nkey_file = \"k\"\npeer = true")
            .unwrap_err();
        assert_eq!(e.key, "tls.ca_file");
        let e = Config::from_toml_str("[tls]\nclient_auth = \"require\"").unwrap_err();
        assert_eq!(e.key, "tls.client_auth");
        let e = Config::from_toml_str("[tls]\nclient_auth = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
        let e = Config::from_toml_str(
            "[peer_dial_overrides]\n\"9\" = \"127.0.0.1:1\"\n[[members]]\nid = 1\npeer_addr = \"127.0.0.1:2\"",
        )
        .unwrap_err();
        assert_eq!(e.key, "peer_dial_overrides.9");
        let e = Config::from_toml_str("[peer_dial_overrides]\n\"2\" = \"nowhere\"").unwrap_err();
        assert_eq!(e.key, "peer_dial_overrides.2");
        let c = Config::from_toml_str("[peer_dial_overrides]\n2 = \"127.0.0.1:7\"").unwrap();
        assert_eq!(c.dial_overrides().unwrap()[&2], "127.0.0.1:7");

        let e = Config::from_toml_str("peer_addr = \"nope\"").unwrap_err();
        assert_eq!(e.key, "peer_addr");

        let e =
            Config::from_toml_str("[raft]\nelection_timeout_ms = 20\nheartbeat_interval_ms = 30")
                .unwrap_err();
        assert_eq!(e.key, "raft.election_timeout_ms");
    }

    #[test]
    fn quota_and_snapshot_byte_threshold_parse_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.storage.quota_bytes, 2 << 30);
        assert_eq!(c.snapshot.threshold_bytes, 256 << 20);
        let c = Config::from_toml_str(
            "[storage]\nquota_bytes = 4096\n[snapshot]\nthreshold_bytes = 1048576",
        )
        .unwrap();
        assert_eq!(c.storage.quota_bytes, 4096);
        assert_eq!(c.snapshot.threshold_bytes, 1 << 20);
        let c =
            Config::from_toml_str("[storage]\nquota_bytes = 0\n[snapshot]\nthreshold_bytes = 0")
                .unwrap();
        assert_eq!((c.storage.quota_bytes, c.snapshot.threshold_bytes), (0, 0));
        let e = Config::from_toml_str("[storage]\nquota_bytes = 10").unwrap_err();
        assert_eq!(e.key, "storage.quota_bytes");
        let e = Config::from_toml_str("[snapshot]\nthreshold_bytes = 10").unwrap_err();
        assert_eq!(e.key, "snapshot.threshold_bytes");
    }
}
