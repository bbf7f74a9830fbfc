//! The node's side of `crate::metrics`: its registry, a [`Sample`] of the
//! values the loop publishes (read when a scrape renders, never mirrored
//! on the hot path) and the inputs of the health decision.

use std::sync::atomic::Ordering;

use crate::metrics::health::{self, Health, HealthInput, Lifecycle};
use crate::metrics::{NodeMetrics, Observe, Sample};

use super::handle::NodeHandle;
use super::types::Error;

impl NodeHandle {
    /// This node's metrics registry (recorded by the runtime; rendered by
    /// [`NodeHandle::metrics_text`]).
    pub fn metrics(&self) -> &NodeMetrics {
        &self.shared.metrics
    }

    /// Every metric of this node in the Prometheus text format (what
    /// `/metrics` serves), e.g. for an embedded application that exposes
    /// its own HTTP endpoint. See `docs/metrics.md`.
    pub fn metrics_text(&self) -> String {
        let st = self.status();
        let sh = &self.shared;
        let sample = Sample {
            role: st.role.as_str(),
            term: st.term,
            leader_id: st.leader_id,
            commit_index: st.commit_index,
            applied_index: st.applied_index,
            last_log_index: st.last_log_index,
            snapshot_index: st.snapshot_index,
            queues: [
                ("input", sh.queued.load(Ordering::Relaxed)),
                ("proposals", sh.pending_proposals.load(Ordering::Relaxed)),
                ("reads", sh.pending_reads.load(Ordering::Relaxed)),
                ("peer", sh.peer_queued.load(Ordering::Relaxed)),
            ],
            watchers: sh.hub.watcher_count(),
            leases: sh
                .kv()
                .ok()
                .and_then(|sm| sm.leases().ok())
                .map(|l| l.len()),
            data_bytes: st.data_bytes,
            quota_bytes: st.quota_bytes,
            log_bytes: st.log_bytes,
            no_space: !st.alarms.is_empty(),
        };
        sh.metrics.render(&sample, &self.health())
    }

    /// Liveness, readiness and gRPC serving status now, with the reasons
    /// (`crate::metrics::health`, `docs/metrics.md`).
    pub fn health(&self) -> Health {
        let sh = &self.shared;
        let lifecycle = match sh.check_running() {
            Ok(()) => Lifecycle::Running,
            Err(Error::ShuttingDown(_)) => Lifecycle::Stopping,
            Err(e) => Lifecycle::Failed(e.to_string()),
        };
        let p = &sh.published;
        health::decide(&HealthInput {
            node_id: sh.id,
            lifecycle,
            role: self.status_role().as_str(),
            term: p.term.load(Ordering::Acquire),
            leader_id: p.leader.load(Ordering::Acquire),
            leader_ready: p.leader_ready.load(Ordering::Acquire),
            leader_silence: sh.metrics.leader_silence(sh.epoch),
            max_leader_silence: sh.config.leader_silence(),
            no_space: sh.quota.alarm(),
            applied_index: sh.applied.load(Ordering::Acquire),
        })
    }
}

impl Observe for NodeHandle {
    fn metrics_text(&self) -> String {
        NodeHandle::metrics_text(self)
    }
    fn health(&self) -> Health {
        NodeHandle::health(self)
    }
}
