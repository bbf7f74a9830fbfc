//! The command line (clap derive). Every global flag can be set through a
//! `DENGINE_*` environment variable and is accepted before or after the
//! subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Printed after `dengine --help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  error (server internal or storage error, I/O)
  2  usage: bad flag or argument, malformed txn input, request refused as invalid
  3  not found: missing key (single-key get), lease, member id, lock or leadership
  4  txn compares failed (the failure branch ran)
  5  unavailable: no endpoint reachable, no leader, overloaded, shutting down
  6  timeout (a write's outcome is unknown)
  7  authentication or permission refused
  8  storage quota reached
  9  lock or leadership lost while held
`lock NAME -- CMD` exits with CMD's code.";

#[derive(Debug, Parser)]
#[command(
    name = "dengine",
    version,
    about = "Command-line client for d-engine clusters",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten, next_help_heading = "Global options")]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON (one object; `watch` and streaming commands: one per line).
    Json,
    /// Bare values, one per line, for scripts.
    Simple,
}

#[derive(Clone, Debug, Args)]
pub struct Global {
    /// Client addresses of cluster members (host:port, http:// or https://),
    /// comma-separated; one is enough.
    #[arg(
        long,
        global = true,
        env = "DENGINE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:9083",
        value_name = "ADDRS"
    )]
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) to verify the servers with; turns TLS on.
    #[arg(long, global = true, env = "DENGINE_CACERT", value_name = "FILE")]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(
        long = "cert",
        global = true,
        env = "DENGINE_CERT",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --cert.
    #[arg(long = "key", global = true, env = "DENGINE_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Server name to verify in the servers' certificates (default: the
    /// endpoint's host).
    #[arg(long, global = true, env = "DENGINE_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
    /// User name (with --password) for servers with authentication.
    #[arg(long, global = true, env = "DENGINE_USER")]
    pub user: Option<String>,
    /// Password of --user.
    #[arg(long, global = true, env = "DENGINE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Bearer token (instead of --user/--password).
    #[arg(long, global = true, env = "DENGINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Overall deadline of each request, retries included (500ms, 10s, 1m).
    #[arg(long, global = true, env = "DENGINE_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Output format.
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "DENGINE_OUTPUT",
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: Format,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a key, a prefix or a range.
    Get(GetArgs),
    /// Write a key.
    Put(PutArgs),
    /// Delete a key, a prefix or a range.
    Del(DelArgs),
    /// Run a transaction read from stdin or a file (text or JSON; see docs/cli.md).
    Txn(TxnArgs),
    /// Print changes to a key, prefix or range until Ctrl-C or --count.
    Watch(WatchArgs),
    /// Grant, renew, inspect and revoke leases.
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// Hold a distributed lock while CMD runs, or until Ctrl-C.
    Lock(LockArgs),
    /// Campaign in an election and hold leadership until Ctrl-C, or --listen to it.
    Elect(ElectArgs),
    /// List and change the cluster's members.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Move the leadership.
    #[command(subcommand)]
    Leader(LeaderCmd),
    /// Status and health of every member.
    #[command(subcommand)]
    Endpoint(EndpointCmd),
    /// Quick checks of the cluster.
    #[command(subcommand)]
    Check(CheckCmd),
    /// Snapshots of the state machine.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Manage users at runtime (needs the admin role; docs/auth.md).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage roles and their grants at runtime (needs the admin role).
    #[command(subcommand)]
    Role(RoleCmd),
    /// Create and revoke tokens at runtime (needs the admin role).
    #[command(subcommand)]
    Token(TokenCmd),
}

/// A new password: `--new-password`, or one line read from stdin
/// (`--password` is the caller's own, a global flag).
#[derive(Debug, Args)]
pub struct PasswordArg {
    /// The new password (visible in the process list; prefer stdin).
    #[arg(long, value_name = "PW")]
    pub new_password: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Add a user (password from --new-password or one line of stdin).
    Add {
        name: String,
        #[command(flatten)]
        password: PasswordArg,
        /// A token-only user without a password.
        #[arg(long, conflicts_with = "new_password")]
        no_password: bool,
    },
    /// Delete a runtime user and its tokens.
    Delete { name: String },
    /// Change a runtime user's password (from --new-password or stdin).
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordArg,
    },
    /// Give a user a role.
    GrantRole { name: String, role: String },
    /// Take a role from a user.
    RevokeRole { name: String, role: String },
    /// List configured and runtime users.
    List,
    /// Show one user.
    Get { name: String },
}

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Add a role.
    Add { name: String },
    /// Delete a role no user holds.
    Delete { name: String },
    /// Grant ACCESS (read or readwrite) on every key starting with PREFIX.
    Grant {
        role: String,
        prefix: String,
        #[arg(value_parser = ["read", "readwrite"])]
        access: String,
    },
    /// Revoke the grant on PREFIX.
    Revoke { role: String, prefix: String },
    /// List configured and runtime roles.
    List,
    /// Show one role.
    Get { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a token for USER and print it (shown once).
    Create {
        #[arg(value_name = "USER")]
        owner: String,
        /// Lifetime (e.g. 1h, 30d as 720h); none = never expires.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Revoke TOKEN (runtime or configured) on every node.
    Revoke {
        #[arg(value_name = "TOKEN")]
        revoked: String,
    },
}

/// Which keys besides KEY: at most one of these.
#[derive(Clone, Debug, Default, Args)]
#[group(multiple = false)]
pub struct RangeSel {
    /// Every key starting with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Keys from KEY up to END (exclusive).
    #[arg(long, value_name = "END")]
    pub range_end: Option<String>,
    /// Every key from KEY on.
    #[arg(long)]
    pub from_key: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConsistencyArg {
    /// Through the leader, after confirming leadership (ReadIndex).
    Linearizable,
    /// On the leader under its lease, without a round trip.
    Lease,
    /// On whichever node answers; may be stale.
    Eventual,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key, or the first key of the range.
    pub key: String,
    #[command(flatten)]
    pub range: RangeSel,
    /// Return at most N keys (0 = all, read page by page).
    #[arg(long, default_value_t = 0)]
    pub limit: u64,
    /// Print keys without values.
    #[arg(long)]
    pub keys_only: bool,
    /// Print only how many keys match.
    #[arg(long, conflicts_with = "keys_only")]
    pub count_only: bool,
    #[arg(long, value_enum, default_value = "linearizable")]
    pub consistency: ConsistencyArg,
}

#[derive(Debug, Args)]
pub struct PutArgs {
    pub key: String,
    pub value: String,
    /// Attach the key to lease ID (it is deleted when the lease ends).
    #[arg(long, value_name = "ID", value_parser = parse_id, conflicts_with = "ttl")]
    pub lease: Option<u64>,
    /// The key expires after this long (10s, 5m).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct DelArgs {
    /// The key, or the first key of the range.
    pub key: String,
    #[command(flatten)]
    pub range: RangeSel,
    /// Print the deleted pairs.
    #[arg(long)]
    pub prev_kv: bool,
}

#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Read the transaction from FILE (text, or JSON if it starts with `{`)
    /// instead of stdin.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key, or the first key of the range.
    pub key: String,
    #[command(flatten)]
    pub range: RangeSel,
    /// Start from revision N (replaying history still held); 0 = now.
    #[arg(long, default_value_t = 0)]
    pub rev: u64,
    /// Exit after N events.
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    /// Grant a lease of TTL (seconds, or 500ms, 10s, 2m); prints its id.
    Grant {
        #[arg(value_parser = parse_duration)]
        ttl: Duration,
    },
    /// Revoke a lease, deleting its keys.
    Revoke {
        #[arg(value_parser = parse_id)]
        id: u64,
    },
    /// Keep a lease alive until Ctrl-C (or renew it once with --once).
    Keepalive {
        #[arg(value_parser = parse_id)]
        id: u64,
        #[arg(long)]
        once: bool,
    },
    /// A lease's granted and remaining TTL.
    Timetolive {
        #[arg(value_parser = parse_id)]
        id: u64,
        /// Also list the attached keys.
        #[arg(long)]
        keys: bool,
    },
    /// Every live lease.
    List,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock's name (its keys live under NAME/).
    pub name: String,
    /// TTL of the lease holding the lock (kept alive while held).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Command to run while holding the lock (after `--`); it gets
    /// DENGINE_LOCK_KEY, DENGINE_LOCK_FENCING_TOKEN and DENGINE_LOCK_LEASE.
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// The election's name (candidates' keys live under NAME/).
    pub name: String,
    /// The value to publish as leader.
    #[arg(required_unless_present = "listen")]
    pub value: Option<String>,
    /// Print the leader's value each time it changes, without campaigning.
    #[arg(long, conflicts_with = "value")]
    pub listen: bool,
    /// With --listen: exit after N leaders.
    #[arg(long, requires = "listen")]
    pub count: Option<u64>,
    /// TTL of the lease holding the leadership (kept alive while held).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ttl: Duration,
}

#[derive(Debug, Subcommand)]
pub enum MemberCmd {
    /// The members, their roles and addresses.
    List,
    /// Add node ID as a learner (start it first with `d-engine-server --join`).
    AddLearner {
        #[arg(value_parser = parse_id)]
        id: u64,
        /// Address peers reach the node at (host:port).
        peer_addr: String,
        /// Address clients reach the node at (host:port).
        client_addr: Option<String>,
    },
    /// Promote learner ID to voter (refused until it has caught up).
    Promote {
        #[arg(value_parser = parse_id)]
        id: u64,
        /// Promote even if the learner has not caught up with the leader's log.
        #[arg(long)]
        force: bool,
    },
    /// Remove node ID (voter or learner).
    Remove {
        #[arg(value_parser = parse_id)]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum LeaderCmd {
    /// Hand the leadership to voter ID.
    Transfer {
        #[arg(value_parser = parse_id)]
        id: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointCmd {
    /// Id, role, term, indexes, lag and data size of every member.
    Status,
    /// Whether every member answers, knows a leader and has no alarm.
    Health,
}

#[derive(Debug, Subcommand)]
pub enum CheckCmd {
    /// A short write load test: prints throughput and latency percentiles.
    Perf(PerfArgs),
}

#[derive(Debug, Args)]
pub struct PerfArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to write.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bytes per value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct keys written (under --prefix).
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// Keys are written under this prefix and deleted afterwards.
    #[arg(long, default_value = "/dengine-check-perf/")]
    pub prefix: String,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot the leader's state machine now (compacts its log).
    Trigger,
    /// Stream a consistent backup into FILE (verified by its sha256; restore
    /// it with `d-engine-server restore`, docs/operations.md).
    Save {
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        overwrite: bool,
        /// Save from this member (its client address) instead of the
        /// leader; covers what that member has applied.
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
    },
}

/// `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 500ms, 10s, 2m, 1h"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    };
    if d.is_zero() {
        return Err("the duration must be > 0".into());
    }
    Ok(d)
}

/// A lease or node id: decimal, or hexadecimal with `0x`.
pub fn parse_id(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not an id; use a decimal number (or hex with 0x)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ids() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").unwrap_err().contains("unit"));
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_id("0x1f").unwrap(), 31);
        assert_eq!(parse_id("42").unwrap(), 42);
        assert!(parse_id("-1").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
