//! Runtime auth management: proposing [`AuthOp`]s and reading the
//! replicated auth state (`docs/auth.md`).
//!
//! Contract of [`NodeHandle::auth_change`]: the op is validated
//! (`InvalidArgument` naming the field), refused at once off the leader
//! (`NotLeader`), proposed like any write, and answered once the leader
//! applied it: `InvalidArgument` with the state machine's reason when the
//! change was refused (the same on every replica), else the change's auth
//! revision. It then waits (at most `queues.request_timeout_ms`) until
//! every other voter's log holds the entry and one more heartbeat round has
//! carried the commit index to them, so that a follower refuses a revoked
//! credential from the moment the call returns; `acknowledged` reports
//! whether that wait completed (false: a voter is down or slow and applies
//! the change when it catches up).

use std::sync::Arc;
use std::time::{Duration, Instant};

use d_engine_api::MemberRole;
use d_engine_storage::auth::{AuthOp, AuthState};

use super::handle::NodeHandle;
use super::types::{ApplyResult, Command, Error, Op, Result};

/// What an applied auth change reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthChangeOutcome {
    /// The auth revision (log index) of the change.
    pub revision: u64,
    /// Every voter held the entry and got a heartbeat after it.
    pub acknowledged: bool,
}

impl NodeHandle {
    /// The replicated auth state as of this node's last applied batch
    /// (empty before the state machine is open).
    pub fn auth_state(&self) -> Arc<AuthState> {
        self.shared
            .sm()
            .map(|sm| sm.auth_state())
            .unwrap_or_default()
    }

    /// Proposes one auth change (see the module docs).
    pub async fn auth_change(&self, op: AuthOp) -> Result<AuthChangeOutcome> {
        op.validate().map_err(Error::InvalidArgument)?;
        let out = self.propose(Command::new(Op::Auth(Box::new(op)))).await?;
        let revision = match out.result {
            ApplyResult::AuthChanged { revision } => revision,
            ApplyResult::AuthRefused { reason } | ApplyResult::Rejected { reason } => {
                return Err(Error::InvalidArgument(reason))
            }
            other => {
                return Err(Error::Internal(format!(
                    "an auth change applied as {other:?}"
                )))
            }
        };
        let acknowledged = self.wait_voters_hold(out.index).await;
        Ok(AuthChangeOutcome {
            revision,
            acknowledged,
        })
    }

    /// Waits until every other voter's match index is `>= index`, then one
    /// heartbeat round (two intervals) for the commit index to reach them.
    async fn wait_voters_hold(&self, index: u64) -> bool {
        let cfg = &self.shared.config;
        let heartbeat = Duration::from_millis(cfg.raft.heartbeat_interval_ms.max(1));
        let deadline = Instant::now() + Duration::from_millis(cfg.queues.request_timeout_ms);
        loop {
            let voters: Vec<u64> = self
                .members()
                .into_iter()
                .filter(|m| m.role == MemberRole::Voter && m.id != self.shared.id)
                .map(|m| m.id)
                .collect();
            if voters.is_empty() {
                return true;
            }
            let matches = self.shared.metrics.follower_matches();
            let held = voters.iter().all(|v| {
                matches
                    .iter()
                    .any(|(id, matched)| id == v && *matched >= index)
            });
            if held {
                tokio::time::sleep(heartbeat * 2).await;
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(heartbeat.min(Duration::from_millis(20))).await;
        }
    }
}
