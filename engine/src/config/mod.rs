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
//!
//! Contracts:
//! - This module sits at the bottom of the engine: nothing under
//!   `config/` imports another module of this crate (only the storage and
//!   core crates, which are below it). Everything above imports from here.
//! - A setting is translated into the form storage or the core uses in
//!   exactly one place, a method beside its section
//!   ([`Config::core_config`], [`DurabilityConfig::wal_options`],
//!   [`DurabilityConfig::sync_interval`], [`TtlConfig::expire_interval`]).
//! - [`Config::from_toml_str`] and [`Config::from_file`] return only
//!   configurations that pass [`Config::validate`]; checks run section by
//!   section in a fixed order, so the first problem reported is stable.
//!
//! One file per concern, each with its keys, defaults, checks and tests
//! (their types are re-exported here): `cluster` (identity, members,
//! addresses), `raft`, `limits` (limits, batching, queues), `storage`
//! (durability, quota, snapshots, state machine), `watch`, `ttl`,
//! `embedded`, `tls`, `peer` (peer authentication), `metrics` and [`auth`] (client
//! authentication and authorization; public, as `crate::auth::config`
//! names it).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod auth;
mod cluster;
mod embedded;
mod limits;
mod metrics;
mod peer;
mod raft;
mod storage;
mod tls;
mod ttl;
mod watch;

pub use auth::AuthConfig;
pub use cluster::{is_loopback_addr, MemberConfig, DEFAULT_CLIENT_PORT, DEFAULT_PEER_PORT};
pub use embedded::EmbeddedConfig;
pub use limits::{BatchingConfig, LimitsConfig, QueueConfig, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use metrics::MetricsConfig;
pub use peer::PeerConfig;
pub use raft::RaftConfig;
pub use storage::{
    DurabilityConfig, DurabilityMode, SnapshotConfig, StateMachineBackend, StateMachineConfig,
    StorageConfig, DEFAULT_QUOTA_BYTES, DEFAULT_SNAPSHOT_THRESHOLD_BYTES,
};
pub use tls::{ClientAuth, TlsConfig};
pub use ttl::TtlConfig;
pub use watch::WatchConfig;

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

/// Complete node configuration. See `docs/config.md`.
///
/// The field order is the order `--print-config` shows the keys in.
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
    pub auth: AuthConfig,
    /// Authentication of the peer (Raft) port (`docs/tls.md`, "Peer authentication").
    pub peer: PeerConfig,
    /// The metrics and health HTTP listener (`docs/metrics.md`); off by default.
    pub metrics: MetricsConfig,
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
            raft: Default::default(),
            batching: Default::default(),
            durability: Default::default(),
            limits: Default::default(),
            queues: Default::default(),
            snapshot: Default::default(),
            storage: Default::default(),
            state_machine: Default::default(),
            watch: Default::default(),
            ttl: Default::default(),
            embedded: Default::default(),
            tls: Default::default(),
            auth: Default::default(),
            peer: Default::default(),
            metrics: Default::default(),
        }
    }
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

    /// Checks every key; the error names the key and the allowed range.
    /// Sections are checked in this order; the first error is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_cluster()?;
        self.validate_raft()?;
        self.validate_limits()?;
        self.validate_durability()?;
        self.validate_queues()?;
        self.validate_storage()?;
        self.validate_watch()?;
        self.validate_ttl()?;
        self.auth.validate()?;
        self.validate_auth_transport()?;
        self.validate_tls()?;
        self.validate_peer_auth()?;
        self.validate_metrics()?;
        Ok(())
    }
}

/// `Err` naming `key` unless `lo <= v <= hi`.
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
    fn unknown_keys_are_refused() {
        let e = Config::from_toml_str("bogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
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

    /// The layer rule of this module: no file under `src/config/` imports
    /// another module of this crate (`crate::…`, or `super::super::…`).
    #[test]
    fn config_imports_nothing_above_it() {
        // Spelled in two pieces so that this test does not find itself.
        let needles = [concat!("crate", "::"), concat!("super::", "super")];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                assert!(
                    !needles.iter().any(|n| code.contains(n)),
                    "{}:{}: config must not import from above it: {line}",
                    path.display(),
                    n + 1
                );
            }
        }
        assert!(files > 1, "no files found in {}", dir.display());
    }

    #[test]
    fn sections_are_checked_in_a_fixed_order() {
        // Two bad keys: the one in the earlier section is reported.
        let e = Config::from_toml_str(
            "[durability]\nmode = \"periodic\"\ninterval_ms = 0\n[queues]\ninput_capacity = 1",
        )
        .unwrap_err();
        assert_eq!(e.key, "durability.interval_ms");
        let e = Config::from_toml_str(
            "[batching]\nmax_batch_entries = 0\n[durability]\nmode = \"periodic\"\ninterval_ms = 0",
        )
        .unwrap_err();
        assert_eq!(e.key, "batching.max_batch_entries");
        let e = Config::from_toml_str(
            "[snapshot]\nthreshold_bytes = 5\nchunk_bytes = 1\n[storage]\nquota_bytes = 5",
        )
        .unwrap_err();
        assert_eq!(e.key, "snapshot.threshold_bytes");
        let e = Config::from_toml_str("[snapshot]\nchunk_bytes = 1\n[storage]\nquota_bytes = 5")
            .unwrap_err();
        assert_eq!(e.key, "storage.quota_bytes");
    }
}
