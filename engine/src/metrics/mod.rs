//! Observability of a node: Prometheus metrics, the health decision behind
//! `/health`, `/ready` and gRPC health, and the HTTP listener serving them.
//!
//! - [`NodeMetrics`]: one Prometheus registry per node (several nodes can
//!   share a process, as in tests and embedded apps). The runtime records
//!   into it through small hooks: counter increments and histogram
//!   observations on pre-resolved handles (atomics, no allocation, no
//!   lock). Values the node already publishes (role, term, indexes, queue
//!   depths, quota) are read when a scrape renders ([`NodeMetrics::render`]
//!   of a [`Sample`]), not mirrored on the hot path.
//! - [`health`]: the pure liveness/readiness decision and the task that
//!   keeps gRPC health in step with it.
//! - [`http`]: the `[metrics] listen_addr` listener (`/metrics`,
//!   `/health`, `/ready`).
//! - [`grpc`]: a tower layer counting client RPCs by method and status.
//!
//! Layering: this module sits just above `config` and imports nothing else
//! of the engine. The runtime fills a [`Sample`] and a
//! [`health::HealthInput`] from its state and implements [`Observe`] for
//! `NodeHandle` (`runtime/observe.rs`); the listener and the gRPC health
//! task work on any [`Observe`].
//!
//! Every metric, its labels and suggested alerts: `docs/metrics.md`.

pub mod grpc;
pub mod health;
pub mod http;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use health::Health;
pub use health::Observe;

/// Values read from the node when a scrape renders.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// One of `follower`, `pre_candidate`, `candidate`, `leader`, `learner`.
    pub role: &'static str,
    pub term: u64,
    pub leader_id: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_log_index: u64,
    pub snapshot_index: u64,
    /// (queue name, depth): input, proposals, reads, peer.
    pub queues: [(&'static str, usize); 4],
    pub watchers: usize,
    pub leases: Option<usize>,
    pub data_bytes: u64,
    pub quota_bytes: u64,
    pub log_bytes: u64,
    pub no_space: bool,
}

/// Latency buckets in seconds: 100 µs .. 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Slow operations (snapshots) in seconds: 10 ms .. 10 min.
const SLOW_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Entries per batch: 1 .. 16 Ki.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];

/// Role names, as the `role` label of `dengine_role` (`NodeRole::as_str`).
const ROLES: [&str; 5] = [
    "follower",
    "pre_candidate",
    "candidate",
    "leader",
    "learner",
];

/// The metrics of one node. Created with the node; cheap to record into
/// from any thread.
pub struct NodeMetrics {
    registry: Registry,
    // -- recorded by hooks --
    pub(crate) leader_changes: IntCounter,
    pub(crate) proposals_ok: IntCounter,
    pub(crate) proposals_failed: IntCounter,
    pub(crate) proposal_seconds: Histogram,
    pub(crate) wal_sync_seconds: Histogram,
    pub(crate) wal_batch_entries: Histogram,
    pub(crate) apply_seconds: Histogram,
    pub(crate) apply_batch_entries: Histogram,
    pub(crate) snapshots_created: IntCounter,
    pub(crate) snapshots_installed: IntCounter,
    pub(crate) snapshots_failed: IntCounter,
    pub(crate) snapshot_seconds: Histogram,
    pub(crate) snapshot_bytes: IntGauge,
    pub(crate) read_index_seconds: Histogram,
    overloaded: IntCounterVec,
    pub(crate) grpc_requests: IntCounterVec,
    pub(crate) grpc_seconds: prometheus::HistogramVec,
    // -- set when a scrape renders --
    role: IntGaugeVec,
    is_leader: IntGauge,
    term: IntGauge,
    leader_id: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    last_log_index: IntGauge,
    snapshot_index: IntGauge,
    follower_lag: IntGaugeVec,
    queue_depth: IntGaugeVec,
    watchers: IntGauge,
    leases: IntGauge,
    data_bytes: IntGauge,
    quota_bytes: IntGauge,
    log_bytes: IntGauge,
    no_space: IntGauge,
    ready: IntGauge,
    live: IntGauge,
    leader_silence: prometheus::Gauge,
    // -- published by the consensus loop for the health decision --
    /// Nanoseconds since the node's epoch when the loop last stepped a
    /// message from the leader it knows (0 = never).
    leader_contact_ns: AtomicU64,
    /// The leader's view of its followers' match indexes, refreshed at
    /// most once per tick (empty unless leader).
    follower_match: Mutex<Vec<(u64, u64)>>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics::new()
    }
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl NodeMetrics {
    /// Registers every metric of a node (names in `docs/metrics.md`).
    pub(crate) fn new() -> Self {
        let r = Registry::new();
        let proposals = counter_vec(
            &r,
            "dengine_proposals_total",
            "Writes (and membership changes) proposed on this node as leader, by result",
            &["result"],
        );
        let snapshots = counter_vec(
            &r,
            "dengine_snapshots_total",
            "Snapshots created locally, installed from the leader, or failed",
            &["kind"],
        );
        let grpc_seconds = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "dengine_grpc_request_duration_seconds",
                "Client gRPC calls: time until the response headers, by method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .expect("valid metric");
        r.register(Box::new(grpc_seconds.clone()))
            .expect("unique metric");
        let leader_silence = prometheus::Gauge::with_opts(Opts::new(
            "dengine_leader_last_contact_seconds",
            "Seconds since this follower last heard from its leader (0 on the leader; -1 \
             when no leader is known)",
        ))
        .expect("valid metric");
        r.register(Box::new(leader_silence.clone()))
            .expect("unique metric");
        NodeMetrics {
            leader_changes: counter(
                &r,
                "dengine_leader_changes_total",
                "Times this node saw a new leader (or a new term of one)",
            ),
            proposals_ok: proposals.with_label_values(&["ok"]),
            proposals_failed: proposals.with_label_values(&["error"]),
            proposal_seconds: histogram(
                &r,
                "dengine_proposal_duration_seconds",
                "Writes on the leader: from admission to the applied answer",
                LATENCY_BUCKETS,
            ),
            wal_sync_seconds: histogram(
                &r,
                "dengine_wal_sync_duration_seconds",
                "One WAL group commit: append of the batch and its fsync",
                LATENCY_BUCKETS,
            ),
            wal_batch_entries: histogram(
                &r,
                "dengine_wal_sync_batch_entries",
                "Log entries made durable by one WAL group commit",
                BATCH_BUCKETS,
            ),
            apply_seconds: histogram(
                &r,
                "dengine_apply_duration_seconds",
                "Applying one batch of committed entries to the state machine",
                LATENCY_BUCKETS,
            ),
            apply_batch_entries: histogram(
                &r,
                "dengine_apply_batch_entries",
                "Committed entries applied in one batch",
                BATCH_BUCKETS,
            ),
            snapshots_created: snapshots.with_label_values(&["created"]),
            snapshots_installed: snapshots.with_label_values(&["installed"]),
            snapshots_failed: snapshots.with_label_values(&["failed"]),
            snapshot_seconds: histogram(
                &r,
                "dengine_snapshot_duration_seconds",
                "Writing one local snapshot file",
                SLOW_BUCKETS,
            ),
            snapshot_bytes: gauge(
                &r,
                "dengine_snapshot_size_bytes",
                "Size of the latest snapshot file written or installed",
            ),
            read_index_seconds: histogram(
                &r,
                "dengine_read_index_duration_seconds",
                "Linearizable reads through a ReadIndex round: until the read may be served",
                LATENCY_BUCKETS,
            ),
            overloaded: counter_vec(
                &r,
                "dengine_overloaded_total",
                "Requests refused with OVERLOADED, by the limit that was reached",
                &["limit"],
            ),
            grpc_requests: counter_vec(
                &r,
                "dengine_grpc_requests_total",
                "Client gRPC calls by method and status code",
                &["method", "code"],
            ),
            grpc_seconds,
            role: gauge_vec(
                &r,
                "dengine_role",
                "1 for this node's current role, 0 for the others",
                &["role"],
            ),
            is_leader: gauge(&r, "dengine_is_leader", "1 while this node leads"),
            term: gauge(&r, "dengine_term", "Current Raft term"),
            leader_id: gauge(
                &r,
                "dengine_leader_id",
                "Id of the leader this node knows (0 = none)",
            ),
            commit_index: gauge(&r, "dengine_commit_index", "Raft commit index"),
            applied_index: gauge(
                &r,
                "dengine_applied_index",
                "Last log index applied to the state machine (the revision)",
            ),
            last_log_index: gauge(&r, "dengine_last_log_index", "Last index in the log"),
            snapshot_index: gauge(
                &r,
                "dengine_snapshot_index",
                "Last index covered by the latest snapshot",
            ),
            follower_lag: gauge_vec(
                &r,
                "dengine_follower_lag_entries",
                "On the leader: last log index minus the follower's match index",
                &["follower"],
            ),
            queue_depth: gauge_vec(
                &r,
                "dengine_queue_depth",
                "Requests waiting, by queue (input, proposals, reads, peer)",
                &["queue"],
            ),
            watchers: gauge(&r, "dengine_watchers", "Open watchers on this node"),
            leases: gauge(
                &r,
                "dengine_leases",
                "Leases in the applied state (live or expiring)",
            ),
            data_bytes: gauge(
                &r,
                "dengine_storage_data_bytes",
                "Logical size of the stored data (what storage.quota_bytes counts)",
            ),
            quota_bytes: gauge(
                &r,
                "dengine_storage_quota_bytes",
                "storage.quota_bytes (0 = no quota)",
            ),
            log_bytes: gauge(
                &r,
                "dengine_storage_log_bytes",
                "Payload bytes of the committed log since the latest snapshot",
            ),
            no_space: gauge(
                &r,
                "dengine_no_space_alarm",
                "1 while the NOSPACE alarm is raised (writes refused)",
            ),
            ready: gauge(
                &r,
                "dengine_ready",
                "1 while /ready answers 200 (a live leader is known, the node runs)",
            ),
            live: gauge(
                &r,
                "dengine_live",
                "1 while /health answers 200 (the node runs, not failed)",
            ),
            leader_silence,
            leader_contact_ns: AtomicU64::new(0),
            follower_match: Mutex::new(Vec::new()),
            registry: r,
        }
    }

    /// Counts a refusal with OVERLOADED at `limit` (the config key).
    /// Refusals are not the hot path; the label lookup is a hash and a
    /// read lock.
    pub(crate) fn overloaded(&self, limit: &str) {
        self.overloaded.with_label_values(&[limit]).inc();
    }

    /// The consensus loop stepped a message from the current leader (or
    /// this node leads) at `at`.
    pub(crate) fn leader_contact(&self, epoch: Instant, at: Instant) {
        let ns = at.saturating_duration_since(epoch).as_nanos() as u64;
        self.leader_contact_ns.store(ns.max(1), Ordering::Relaxed);
    }

    /// How long ago the loop last heard from the leader (`None`: never).
    pub(crate) fn leader_silence(&self, epoch: Instant) -> Option<Duration> {
        match self.leader_contact_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(epoch.elapsed().saturating_sub(Duration::from_nanos(ns))),
        }
    }

    /// The followers' match indexes as last published (empty when not
    /// leading; refreshed once per tick).
    pub(crate) fn follower_matches(&self) -> Vec<(u64, u64)> {
        self.follower_match
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// The leader's followers and their match indexes (empty when not
    /// leading); called by the loop at most once per tick.
    pub(crate) fn set_follower_match(&self, matches: impl Iterator<Item = (u64, u64)>) {
        if let Ok(mut v) = self.follower_match.try_lock() {
            v.clear();
            v.extend(matches);
        }
    }
}

impl NodeMetrics {
    /// The metrics in the Prometheus text format (version 0.0.4): sets the
    /// gauges from `s` and `h`, then encodes every metric.
    pub fn render(&self, s: &Sample, h: &Health) -> String {
        let m = self;
        for r in ROLES {
            m.role.with_label_values(&[r]).set((r == s.role) as i64);
        }
        let leading = s.role == "leader";
        m.is_leader.set(leading as i64);
        m.term.set(s.term as i64);
        m.leader_id.set(s.leader_id as i64);
        m.commit_index.set(s.commit_index as i64);
        m.applied_index.set(s.applied_index as i64);
        m.last_log_index.set(s.last_log_index as i64);
        m.snapshot_index.set(s.snapshot_index as i64);
        m.follower_lag.reset();
        if leading {
            for (id, matched) in m.follower_match.lock().expect("poisoned").iter() {
                m.follower_lag
                    .with_label_values(&[&id.to_string()])
                    .set(s.last_log_index.saturating_sub(*matched) as i64);
            }
        }
        for (q, n) in s.queues {
            m.queue_depth.with_label_values(&[q]).set(n as i64);
        }
        m.watchers.set(s.watchers as i64);
        if let Some(n) = s.leases {
            m.leases.set(n as i64);
        }
        m.data_bytes.set(s.data_bytes as i64);
        m.quota_bytes.set(s.quota_bytes as i64);
        m.log_bytes.set(s.log_bytes as i64);
        m.no_space.set(s.no_space as i64);
        m.ready.set(h.ready as i64);
        m.live.set(h.live as i64);
        m.leader_silence.set(match (leading, h.leader_silence_ms) {
            (true, _) => 0.0,
            (false, Some(ms)) if s.leader_id != 0 => ms as f64 / 1000.0,
            _ => -1.0,
        });
        prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap_or_else(|e| format!("# encoding the metrics failed: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_registers_once_and_encodes() {
        let m = NodeMetrics::new();
        m.proposals_ok.inc();
        m.overloaded("queues.input_capacity");
        m.wal_sync_seconds.observe(0.001);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&m.registry.gather())
            .unwrap();
        assert!(
            text.contains("dengine_proposals_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("dengine_overloaded_total{limit=\"queues.input_capacity\"} 1"));
        assert!(text.contains("dengine_wal_sync_duration_seconds_count 1"));
    }

    /// Every `dengine_*` name in docs/metrics.md and the Grafana dashboard
    /// is a registered metric (or its histogram series), and every
    /// registered metric is documented.
    #[test]
    fn the_docs_and_the_dashboard_use_only_real_metric_names() {
        let m = NodeMetrics::new();
        // Labelled families appear once a child exists.
        m.overloaded("x");
        m.grpc_requests.with_label_values(&["m", "OK"]).inc();
        m.grpc_seconds.with_label_values(&["m"]).observe(0.1);
        m.follower_lag.with_label_values(&["2"]).set(0);
        m.queue_depth.with_label_values(&["input"]).set(0);
        m.role.with_label_values(&["leader"]).set(1);
        let families: std::collections::BTreeSet<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let names = |text: &str| -> std::collections::BTreeSet<String> {
            let mut out = std::collections::BTreeSet::new();
            let mut rest = text;
            while let Some(i) = rest.find("dengine_") {
                let tail = &rest[i..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                out.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
            out
        };
        let base = |n: &str| -> String {
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(b) = n.strip_suffix(suffix) {
                    if families.contains(b) {
                        return b.to_string();
                    }
                }
            }
            n.to_string()
        };
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = std::fs::read_to_string(root.join("docs/metrics.md")).unwrap();
        let dash = std::fs::read_to_string(root.join("docs/grafana/d-engine.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&dash).expect("dashboard is JSON");
        for (what, text) in [("docs/metrics.md", &doc), ("dashboard", &dash)] {
            for n in names(text) {
                // `dengine_` also starts the node crate's and repo's names.
                if n == "dengine_" || n.starts_with("dengine_node") {
                    continue;
                }
                assert!(
                    families.contains(&base(&n)),
                    "{what} names unknown metric {n}"
                );
            }
        }
        let documented = names(&doc);
        for f in &families {
            assert!(documented.contains(f), "{f} is not in docs/metrics.md");
        }
    }

    #[test]
    fn leader_silence_is_none_until_contact() {
        let m = NodeMetrics::new();
        let epoch = Instant::now();
        assert_eq!(m.leader_silence(epoch), None);
        m.leader_contact(epoch, Instant::now());
        assert!(m.leader_silence(epoch).unwrap() < Duration::from_secs(5));
    }
}
