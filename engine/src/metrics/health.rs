//! What "healthy" and "ready" mean for a node, decided in one pure
//! function ([`decide`]) from a snapshot of the node's state
//! ([`HealthInput`]), and the task that keeps the gRPC health service in
//! step with it ([`drive_grpc_health`]).
//!
//! - **live** (`/health` 200): the node's threads run — it has not failed
//!   (storage error, lost thread) and is not stopping. A process that is
//!   not live should be restarted.
//! - **ready** (`/ready` 200): live, and it can serve linearizable
//!   requests: it leads and has committed an entry of its term, or it
//!   follows a leader it heard from within `metrics.leader_silence_ms`
//!   (default twice the election timeout; a follower answers with the
//!   leader's address, which is how clients find it). A node cut off from
//!   its majority stops being ready within that time (a leader steps down
//!   after an election timeout without a quorum, `check_quorum`).
//! - **serving** (gRPC health `SERVING`): ready and no NOSPACE alarm
//!   (storage quota exhausted: writes are refused until space is freed).
//!   `/ready` stays 200 under NOSPACE (reads and deletes still work) and
//!   says so in its body.

use std::time::Duration;

use serde::Serialize;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// What the listeners need from a node: its metrics text and its health.
/// Implemented by `NodeHandle`.
pub trait Observe: Clone + Send + Sync + 'static {
    /// Every metric in the Prometheus text format.
    fn metrics_text(&self) -> String;
    /// The liveness/readiness decision now.
    fn health(&self) -> Health;
}

/// Lifecycle of the node as the health decision sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Running,
    Stopping,
    /// Failed with this cause.
    Failed(String),
}

/// Everything the decision needs, read from the node at one moment.
#[derive(Clone, Debug)]
pub struct HealthInput {
    pub node_id: u64,
    pub lifecycle: Lifecycle,
    /// `NodeRole::as_str`: follower, pre_candidate, candidate, leader, learner.
    pub role: &'static str,
    pub term: u64,
    /// 0 = no leader known.
    pub leader_id: u64,
    /// This node leads and has committed an entry of its term.
    pub leader_ready: bool,
    /// Time since the consensus loop last stepped a message from the leader
    /// (`None`: never).
    pub leader_silence: Option<Duration>,
    /// The longest silence still counted as "heard from recently".
    pub max_leader_silence: Duration,
    pub no_space: bool,
    pub applied_index: u64,
}

/// The decision, with the reasons when not ready, as the JSON body of
/// `/health` and `/ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    pub node_id: u64,
    /// `/health`: the node runs.
    pub live: bool,
    /// `/ready`: it can serve linearizable requests.
    pub ready: bool,
    /// gRPC health: ready and not out of quota.
    pub serving: bool,
    pub role: &'static str,
    pub term: u64,
    pub leader_id: u64,
    /// Milliseconds since the leader was last heard from (0 on the leader;
    /// absent when never).
    pub leader_silence_ms: Option<u64>,
    pub applied_index: u64,
    pub no_space_alarm: bool,
    /// Why not ready (or not serving); empty when serving.
    pub reasons: Vec<String>,
}

/// Decides liveness, readiness and gRPC serving status. Pure: every input
/// is in `i`.
pub fn decide(i: &HealthInput) -> Health {
    let mut reasons = Vec::new();
    let live = match &i.lifecycle {
        Lifecycle::Running => true,
        Lifecycle::Stopping => {
            reasons.push("the node is shutting down".to_string());
            false
        }
        Lifecycle::Failed(cause) => {
            reasons.push(format!(
                "the node failed and no longer serves: {cause}; restart it"
            ));
            false
        }
    };
    let leading = i.role == "leader" && i.leader_id == i.node_id;
    let leader_ok = if leading {
        if !i.leader_ready {
            reasons.push(
                "this node was just elected leader and has not yet committed an entry of \
                 its term"
                    .to_string(),
            );
        }
        i.leader_ready
    } else if i.leader_id == 0 {
        reasons.push(format!(
            "no leader is known (role {}, term {}): an election is under way or a majority \
             of the members is unreachable",
            i.role, i.term
        ));
        false
    } else {
        match i.leader_silence {
            Some(s) if s <= i.max_leader_silence => true,
            Some(s) => {
                reasons.push(format!(
                    "nothing heard from leader {} for {} ms (the limit is \
                     metrics.leader_silence_ms = {} ms)",
                    i.leader_id,
                    s.as_millis(),
                    i.max_leader_silence.as_millis()
                ));
                false
            }
            None => {
                reasons.push(format!(
                    "leader {} is known but no message from it has arrived yet",
                    i.leader_id
                ));
                false
            }
        }
    };
    let ready = live && leader_ok;
    if i.no_space {
        reasons.push(
            "NOSPACE alarm: the storage quota is used up and writes are refused; delete \
             data or raise storage.quota_bytes"
                .to_string(),
        );
    }
    Health {
        node_id: i.node_id,
        live,
        ready,
        serving: ready && !i.no_space,
        role: i.role,
        term: i.term,
        leader_id: i.leader_id,
        leader_silence_ms: if leading {
            Some(0)
        } else {
            i.leader_silence.map(|d| d.as_millis() as u64)
        },
        applied_index: i.applied_index,
        no_space_alarm: i.no_space,
        reasons,
    }
}

/// How often gRPC health re-evaluates the decision.
const GRPC_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// Keeps `services` (and the empty name) of `reporter` at SERVING while
/// `node`'s [`Observe::health`] says serving and NOT_SERVING otherwise;
/// re-evaluated every 100 ms, written only when it changes. Runs until the
/// caller aborts it (on server shutdown).
pub async fn drive_grpc_health<O: Observe>(
    node: O,
    reporter: HealthReporter,
    services: &'static [&'static str],
) {
    let mut last: Option<bool> = None;
    loop {
        let h = node.health();
        if last != Some(h.serving) {
            if last.is_some() {
                tracing::info!(
                    serving = h.serving,
                    reasons = ?h.reasons,
                    "gRPC health changed"
                );
            }
            last = Some(h.serving);
            let s = if h.serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", s).await;
            for name in services {
                reporter.set_service_status(*name, s).await;
            }
        }
        tokio::time::sleep(GRPC_HEALTH_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn follower() -> HealthInput {
        HealthInput {
            node_id: 2,
            lifecycle: Lifecycle::Running,
            role: "follower",
            term: 3,
            leader_id: 1,
            leader_ready: false,
            leader_silence: Some(Duration::from_millis(20)),
            max_leader_silence: Duration::from_millis(300),
            no_space: false,
            applied_index: 10,
        }
    }

    #[test]
    fn a_follower_that_hears_its_leader_is_ready() {
        let h = decide(&follower());
        assert!(h.live && h.ready && h.serving, "{h:?}");
        assert!(h.reasons.is_empty());
        assert_eq!(h.role, "follower");
        assert_eq!(h.leader_silence_ms, Some(20));
    }

    #[test]
    fn a_silent_leader_makes_a_follower_unready_but_live() {
        let mut i = follower();
        i.leader_silence = Some(Duration::from_millis(301));
        let h = decide(&i);
        assert!(h.live && !h.ready && !h.serving, "{h:?}");
        assert!(h.reasons[0].contains("leader 1"), "{:?}", h.reasons);
        assert!(h.reasons[0].contains("metrics.leader_silence_ms"));
        i.leader_silence = None;
        assert!(!decide(&i).ready);
    }

    #[test]
    fn no_known_leader_is_not_ready() {
        let mut i = follower();
        i.leader_id = 0;
        i.role = "pre_candidate";
        let h = decide(&i);
        assert!(!h.ready && h.live);
        assert!(
            h.reasons[0].contains("no leader is known"),
            "{:?}",
            h.reasons
        );
        assert!(h.reasons[0].contains("pre_candidate"));
    }

    #[test]
    fn a_leader_is_ready_once_it_committed_in_its_term() {
        let mut i = follower();
        i.role = "leader";
        i.leader_id = 2;
        i.leader_silence = None;
        let h = decide(&i);
        assert!(!h.ready, "{h:?}");
        assert!(h.reasons[0].contains("not yet committed"));
        i.leader_ready = true;
        let h = decide(&i);
        assert!(h.ready && h.serving);
        assert_eq!(h.leader_silence_ms, Some(0));
    }

    #[test]
    fn a_failed_node_is_neither_live_nor_ready() {
        let mut i = follower();
        i.lifecycle = Lifecycle::Failed("disk full".into());
        let h = decide(&i);
        assert!(!h.live && !h.ready && !h.serving);
        assert!(h.reasons[0].contains("disk full"));
        i.lifecycle = Lifecycle::Stopping;
        let h = decide(&i);
        assert!(!h.live && !h.ready);
        assert!(h.reasons[0].contains("shutting down"));
    }

    #[test]
    fn out_of_quota_is_ready_but_not_serving() {
        let mut i = follower();
        i.no_space = true;
        let h = decide(&i);
        assert!(h.live && h.ready && !h.serving, "{h:?}");
        assert!(h.reasons[0].contains("NOSPACE"));
    }

    #[test]
    fn the_body_is_json_with_reasons() {
        let mut i = follower();
        i.leader_id = 0;
        let v = serde_json::to_value(decide(&i)).unwrap();
        assert_eq!(v["ready"], false);
        assert_eq!(v["node_id"], 2);
        assert!(v["reasons"][0].as_str().unwrap().contains("no leader"));
    }
}
