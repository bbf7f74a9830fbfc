//! Command line flags and environment variables, and how they override the
//! configuration file.
//!
//! Precedence (highest first): command-line flag, environment variable,
//! configuration file, built-in default. Without `--config` the server
//! starts as a single-node cluster (node 1, data in `./d-engine-data`,
//! client API on 127.0.0.1:9083, peer service on 127.0.0.1:9081).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use d_engine::config::{Config, ConfigError, MemberConfig};

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// d-engine standalone server: a replicated key-value store on Raft with a
/// gRPC API (default port 9083).
#[derive(Parser, Debug, Clone, Default)]
#[command(name = "d-engine-server", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (every key is documented in docs/config.md).
    /// Without it: a single-node cluster with default settings.
    #[arg(short, long, env = "DENGINE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// This node's id (>= 1). Overrides `node_id`.
    #[arg(long, env = "DENGINE_NODE_ID", value_name = "ID")]
    pub node_id: Option<u64>,

    /// Cluster name; nodes of another cluster are refused. Overrides `cluster_id`.
    #[arg(long, env = "DENGINE_CLUSTER_ID", value_name = "NAME")]
    pub cluster_id: Option<String>,

    /// Data directory (WAL, state machine, snapshots). Overrides `data_dir`.
    #[arg(long, env = "DENGINE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Client API listen address (host:port; empty disables it). Overrides `client_addr`.
    #[arg(long, env = "DENGINE_LISTEN_CLIENT", value_name = "ADDR")]
    pub listen_client: Option<String>,

    /// Metrics and health HTTP listen address (ip:port) serving /metrics,
    /// /health and /ready; empty disables it. Overrides `metrics.listen_addr`
    /// (default: off; see docs/metrics.md).
    #[arg(long, env = "DENGINE_LISTEN_METRICS", value_name = "ADDR")]
    pub listen_metrics: Option<String>,

    /// Peer (Raft) listen address (host:port). Overrides `peer_addr`.
    #[arg(long, env = "DENGINE_LISTEN_PEER", value_name = "ADDR")]
    pub listen_peer: Option<String>,

    /// Initial cluster members, comma separated: `ID=PEER_ADDR[/CLIENT_ADDR]`,
    /// e.g. `1=127.0.0.1:9081/127.0.0.1:9083,2=127.0.0.1:9082/127.0.0.1:9084`.
    /// Overrides `members`.
    #[arg(long, env = "DENGINE_PEERS", value_name = "LIST")]
    pub peers: Option<String>,

    /// Dial these addresses instead of the listed peers' own peer
    /// addresses (outbound only), comma separated `ID=HOST:PORT`, e.g.
    /// `2=127.0.0.1:7002,3=127.0.0.1:7003` (a fault-injecting proxy in
    /// tests). Overrides `peer_dial_overrides`.
    #[arg(long, env = "DENGINE_PEER_DIAL_OVERRIDES", value_name = "LIST")]
    pub peer_dial_overrides: Option<String>,

    /// File holding the cluster secret that authenticates peers (the same
    /// file on every node; `d-engine-server gen-secret --out FILE` writes
    /// one). Overrides `peer.secret_file`.
    #[arg(long, env = "DENGINE_PEER_SECRET_FILE", value_name = "FILE")]
    pub peer_secret_file: Option<PathBuf>,

    /// Start as a learner waiting to be added to an existing cluster
    /// (AddLearner on the leader). Overrides `join`.
    #[arg(long, env = "DENGINE_JOIN")]
    pub join: bool,

    /// Base election timeout in milliseconds. Overrides `raft.election_timeout_ms`.
    #[arg(long, env = "DENGINE_ELECTION_TIMEOUT_MS", value_name = "MS")]
    pub election_timeout_ms: Option<u64>,

    /// Leader heartbeat interval in milliseconds. Overrides `raft.heartbeat_interval_ms`.
    #[arg(long, env = "DENGINE_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    pub heartbeat_interval_ms: Option<u64>,

    /// Take a snapshot after this many applied entries (0 = never).
    /// Overrides `snapshot.threshold_entries`.
    #[arg(long, env = "DENGINE_SNAPSHOT_THRESHOLD", value_name = "N")]
    pub snapshot_threshold: Option<u64>,

    /// Where applied keys live: `sled` (on disk) or `memory` (RAM, rebuilt
    /// from the latest snapshot and the log on start). Overrides
    /// `state_machine.backend`.
    #[arg(
        long,
        env = "DENGINE_STATE_MACHINE",
        value_enum,
        value_name = "BACKEND"
    )]
    pub state_machine: Option<SmBackendArg>,

    /// Log format.
    #[arg(long, env = "DENGINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `d_engine=debug,info`.
    #[arg(
        long,
        env = "DENGINE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,

    /// DISASTER RECOVERY ONLY: before starting, make this node the only
    /// voter of its cluster from its own data (the other members are
    /// removed from its configuration, durably), so it serves again after
    /// the majority was lost for good. Never set it on a healthy cluster,
    /// never start the removed members with their old data, and remove the
    /// flag after this start (`docs/operations.md`). No environment
    /// variable sets it.
    #[arg(long)]
    pub force_new_cluster: bool,

    /// Print the effective configuration as TOML and exit. Secrets
    /// (`auth.forward_token`, password hashes, token digests) are shown as
    /// "<redacted>".
    #[arg(long)]
    pub print_config: bool,

    /// A tool to run instead of the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--state-machine` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmBackendArg {
    Sled,
    Memory,
}

impl From<SmBackendArg> for d_engine::config::StateMachineBackend {
    fn from(v: SmBackendArg) -> Self {
        match v {
            SmBackendArg::Sled => Self::Sled,
            SmBackendArg::Memory => Self::Memory,
        }
    }
}

/// Tools run instead of the server.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Write a development CA and node/client certificates for TLS
    /// (`docs/tls.md`), e.g. `certs --out certs --nodes 1,2,3 --clients app`.
    Certs(crate::certs::CertsArgs),
    /// Read a password from stdin and print its Argon2id hash for
    /// `[[auth.users]] password_hash`.
    HashPassword,
    /// Print a new random token and its sha256 for `[[auth.users]] tokens`.
    GenToken,
    /// Write a new random cluster secret (mode 0600) for `[peer]
    /// secret_file`; copy the same file to every node.
    GenSecret(crate::secrets::GenSecretArgs),
    /// Build the data directory of a node of a NEW cluster from a backup
    /// (`dengine snapshot save FILE`); see `docs/operations.md`.
    Restore(crate::restore::RestoreArgs),
}

/// A configuration key and the flag / environment variable that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub key: &'static str,
    pub flag: &'static str,
    pub env: &'static str,
}

impl Cli {
    /// The configuration file (or the defaults) with every flag applied.
    /// Returns the config and which keys flags set, so a validation error
    /// can name the flag as well as the key.
    pub fn config(&self) -> Result<(Config, Vec<Override>), ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let mut set = Vec::new();
        let mut mark = |key, flag, env| set.push(Override { key, flag, env });
        if let Some(v) = self.node_id {
            config.node_id = v;
            mark("node_id", "--node-id", "DENGINE_NODE_ID");
        }
        if let Some(v) = &self.cluster_id {
            config.cluster_id = v.clone();
            mark("cluster_id", "--cluster-id", "DENGINE_CLUSTER_ID");
        }
        if let Some(v) = &self.data_dir {
            config.data_dir = v.clone();
            mark("data_dir", "--data-dir", "DENGINE_DATA_DIR");
        }
        if let Some(v) = &self.listen_client {
            config.client_addr = v.clone();
            mark("client_addr", "--listen-client", "DENGINE_LISTEN_CLIENT");
        }
        if let Some(v) = &self.listen_metrics {
            config.metrics.listen_addr = v.clone();
            mark(
                "metrics.listen_addr",
                "--listen-metrics",
                "DENGINE_LISTEN_METRICS",
            );
        }
        if let Some(v) = &self.listen_peer {
            config.peer_addr = v.clone();
            mark("peer_addr", "--listen-peer", "DENGINE_LISTEN_PEER");
        }
        if let Some(v) = &self.peers {
            config.members = parse_peers(v)?;
            mark("members", "--peers", "DENGINE_PEERS");
        }
        if let Some(v) = &self.peer_dial_overrides {
            config.peer_dial_overrides = parse_dial_overrides(v)?;
            mark(
                "peer_dial_overrides",
                "--peer-dial-overrides",
                "DENGINE_PEER_DIAL_OVERRIDES",
            );
        }
        if self.join {
            config.join = true;
            mark("join", "--join", "DENGINE_JOIN");
        }
        if let Some(v) = &self.peer_secret_file {
            config.peer.secret_file = v.clone();
            mark(
                "peer.secret_file",
                "--peer-secret-file",
                "DENGINE_PEER_SECRET_FILE",
            );
        }
        if let Some(v) = self.election_timeout_ms {
            config.raft.election_timeout_ms = v;
            mark(
                "raft.election_timeout_ms",
                "--election-timeout-ms",
                "DENGINE_ELECTION_TIMEOUT_MS",
            );
        }
        if let Some(v) = self.heartbeat_interval_ms {
            config.raft.heartbeat_interval_ms = v;
            mark(
                "raft.heartbeat_interval_ms",
                "--heartbeat-interval-ms",
                "DENGINE_HEARTBEAT_INTERVAL_MS",
            );
        }
        if let Some(v) = self.state_machine {
            config.state_machine.backend = v.into();
            mark(
                "state_machine.backend",
                "--state-machine",
                "DENGINE_STATE_MACHINE",
            );
        }
        if let Some(v) = self.snapshot_threshold {
            config.snapshot.threshold_entries = v;
            mark(
                "snapshot.threshold_entries",
                "--snapshot-threshold",
                "DENGINE_SNAPSHOT_THRESHOLD",
            );
        }
        // A single-node config listing no members but overriding addresses
        // is fine: the initial membership is derived from the addresses.
        if let Err(mut e) = config.validate() {
            if let Some(o) = set.iter().find(|o| {
                e.key == o.key
                    || e.key.starts_with(&format!("{}[", o.key))
                    || e.key.starts_with(&format!("{}.", o.key))
            }) {
                e.message = format!("{} (set by {} / {})", e.message, o.flag, o.env);
            }
            return Err(e);
        }
        Ok((config, set))
    }
}

/// Parses `ID=PEER_ADDR[/CLIENT_ADDR],...`.
pub fn parse_peers(s: &str) -> Result<Vec<MemberConfig>, ConfigError> {
    let bad = |entry: &str, why: &str| {
        ConfigError::new(
            "members",
            format!(
                "--peers entry '{entry}' {why}; expected ID=PEER_ADDR[/CLIENT_ADDR], e.g. \
                 1=127.0.0.1:9081/127.0.0.1:9083 (set by --peers / DENGINE_PEERS)"
            ),
        )
    };
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addrs) = entry
            .split_once('=')
            .ok_or_else(|| bad(entry, "has no '='"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| bad(entry, "does not start with a numeric node id"))?;
        let (peer, client) = match addrs.split_once('/') {
            Some((p, c)) => (p.trim(), c.trim()),
            None => (addrs.trim(), ""),
        };
        if peer.is_empty() {
            return Err(bad(entry, "has no peer address"));
        }
        out.push(MemberConfig {
            id,
            peer_addr: peer.to_string(),
            client_addr: client.to_string(),
        });
    }
    if out.is_empty() {
        return Err(bad(s, "lists no member"));
    }
    Ok(out)
}

/// Parses `ID=HOST:PORT,...` (ids and addresses are validated with the
/// rest of the configuration; an empty string clears the map).
pub fn parse_dial_overrides(
    s: &str,
) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
    let mut out = std::collections::BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, addr) = entry.split_once('=').ok_or_else(|| {
            ConfigError::new(
                "peer_dial_overrides",
                format!(
                    "--peer-dial-overrides entry '{entry}' has no '='; expected ID=HOST:PORT, \
                     e.g. 2=127.0.0.1:7002 (set by --peer-dial-overrides / \
                     DENGINE_PEER_DIAL_OVERRIDES)"
                ),
            )
        })?;
        out.insert(id.trim().to_string(), addr.trim().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_with_and_without_client_addresses() {
        let m = parse_peers("1=127.0.0.1:9081/127.0.0.1:9083, 2=127.0.0.1:9082").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, 1);
        assert_eq!(m[0].client_addr, "127.0.0.1:9083");
        assert_eq!(m[1].peer_addr, "127.0.0.1:9082");
        assert_eq!(m[1].client_addr, "");
        for bad in ["x=1.2.3.4:5", "1", "1=", ""] {
            let e = parse_peers(bad).unwrap_err();
            assert_eq!(e.key, "members");
            assert!(e.message.contains("ID=PEER_ADDR"), "{e}");
        }
    }

    #[test]
    fn listen_metrics_sets_the_listener_and_a_bad_one_names_the_key() {
        let cli = Cli {
            listen_metrics: Some("127.0.0.1:9090".into()),
            ..Default::default()
        };
        let (c, _) = cli.config().unwrap();
        assert_eq!(c.metrics.listen_addr, "127.0.0.1:9090");
        let cli = Cli {
            listen_metrics: Some("nope".into()),
            ..Default::default()
        };
        let e = cli.config().unwrap_err();
        assert_eq!(e.key, "metrics.listen_addr", "{e}");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn dial_overrides_parse_and_bad_ones_name_the_key_and_flag() {
        let cli = Cli {
            node_id: Some(1),
            peers: Some("1=127.0.0.1:9081,2=127.0.0.1:9082".into()),
            listen_peer: Some("127.0.0.1:9081".into()),
            peer_dial_overrides: Some("2=127.0.0.1:7002".into()),
            ..Default::default()
        };
        let (c, _) = cli.config().unwrap();
        assert_eq!(c.dial_overrides().unwrap()[&2], "127.0.0.1:7002");
        for bad in ["3=127.0.0.1:7003", "2=nowhere", "x=127.0.0.1:1", "2"] {
            let cli = Cli {
                peer_dial_overrides: Some(bad.into()),
                ..cli.clone()
            };
            let e = cli.config().unwrap_err();
            assert!(e.key.starts_with("peer_dial_overrides"), "{bad}: {e}");
            assert!(e.to_string().contains("peer_dial_overrides"), "{e}");
        }
    }

    #[test]
    fn peers_off_loopback_need_authentication_and_the_error_names_the_keys() {
        // A cluster with a member on another machine, no secret, no peer TLS.
        let cli = Cli {
            node_id: Some(1),
            peers: Some("1=127.0.0.1:9081,2=192.0.2.7:9081".into()),
            ..Default::default()
        };
        let e = cli.config().unwrap_err();
        assert_eq!(e.key, "peer.secret_file", "{e}");
        for key in [
            "peer.secret_file",
            "tls.peer",
            "peer.allow_unauthenticated",
            "member 2",
        ] {
            assert!(e.message.contains(key), "{key}: {e}");
        }
        // A single node listening on every interface.
        let listen_all = Cli {
            listen_peer: Some("0.0.0.0:9081".into()),
            ..Default::default()
        };
        let e = listen_all.config().unwrap_err();
        assert_eq!(e.key, "peer.secret_file", "{e}");
        assert!(e.message.contains("0.0.0.0:9081"), "{e}");
        assert!(e.message.contains("peer.allow_unauthenticated"), "{e}");
        // A secret fixes both (its contents are checked at start).
        for c in [&cli, &listen_all] {
            let ok = Cli {
                peer_secret_file: Some("/etc/d-engine/secret".into()),
                ..c.clone()
            };
            let (c, set) = ok.config().unwrap();
            assert!(c.peer_authenticated());
            assert!(set.iter().any(|o| o.key == "peer.secret_file"));
        }
        // So does the explicit opt-out.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[peer]\nallow_unauthenticated = true\n").unwrap();
        let opt_out = Cli {
            config: Some(f),
            ..listen_all.clone()
        };
        opt_out.config().unwrap();
        // A loopback-only cluster runs without (and warns at start).
        let local = Cli {
            node_id: Some(1),
            peers: Some("1=127.0.0.1:9081,2=localhost:9082,3=[::1]:9083".into()),
            ..Default::default()
        };
        local.config().unwrap();
        let joiner = Cli {
            node_id: Some(4),
            join: true,
            peers: Some("1=10.1.1.1:9081".into()),
            ..Default::default()
        };
        assert_eq!(joiner.config().unwrap_err().key, "peer.secret_file");
    }

    #[test]
    fn no_config_means_a_single_node_on_the_default_ports() {
        let (c, set) = Cli::default().config().unwrap();
        assert!(set.is_empty());
        assert_eq!(c.node_id, 1);
        assert_eq!(c.client_addr, "127.0.0.1:9083");
        assert_eq!(c.data_dir, PathBuf::from("./d-engine-data"));
        assert_eq!(c.initial_members().len(), 1);
    }

    #[test]
    fn flags_override_and_bad_flag_values_name_the_flag() {
        let cli = Cli {
            node_id: Some(2),
            peers: Some("1=127.0.0.1:9081,2=127.0.0.1:9082".into()),
            listen_peer: Some("127.0.0.1:9082".into()),
            ..Default::default()
        };
        let (c, set) = cli.config().unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.members.len(), 2);
        assert_eq!(set.len(), 3);

        let cli = Cli {
            node_id: Some(0),
            ..Default::default()
        };
        let e = cli.config().unwrap_err();
        assert_eq!(e.key, "node_id");
        assert!(e.message.contains("--node-id"), "{e}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "d-engine-server",
            "--node-id",
            "3",
            "--log-format",
            "json",
            "--join",
        ])
        .unwrap();
        assert_eq!(cli.node_id, Some(3));
        assert_eq!(cli.log_format, LogFormat::Json);
        assert!(cli.join);

        let cli = Cli::try_parse_from(["d-engine-server", "--state-machine", "memory"]).unwrap();
        let (c, set) = cli.config().unwrap();
        assert_eq!(
            c.state_machine.backend,
            d_engine::config::StateMachineBackend::Memory
        );
        assert_eq!(set.len(), 1);
        let e = Cli::try_parse_from(["d-engine-server", "--state-machine", "rocks"]).unwrap_err();
        assert!(e.to_string().contains("--state-machine"), "{e}");

        let cli = Cli::try_parse_from([
            "d-engine-server",
            "certs",
            "--out",
            "d",
            "--nodes",
            "1,2,3",
            "--clients",
            "app,ops",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Certs(a)) => {
                assert_eq!(a.nodes, vec![1, 2, 3]);
                assert_eq!(a.hosts, vec!["127.0.0.1", "localhost"]);
                assert_eq!(a.clients, vec!["app", "ops"]);
            }
            other => panic!("{other:?}"),
        }
    }
}
