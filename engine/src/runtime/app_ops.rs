//! The write path of application state machines (`crate::app`): proposing
//! an already-encoded command. Same contract as [`NodeHandle::propose`]
//! (leader only, quota, back-pressure, timeout = unknown outcome) without
//! the key-value validation: the application's codec decides what a
//! command is, and a command that does not decode is rejected
//! deterministically when it is applied.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::handle::NodeHandle;
use super::input::{Input, ProposalWaiter};
use super::types::{Error, ProposeOutcome, Result};

/// Largest encoded application command (the key-value limit on a value).
pub(crate) const MAX_APP_COMMAND_BYTES: usize = d_engine_storage::command::MAX_VALUE_BYTES;

impl NodeHandle {
    /// Proposes `payload` (an encoded application command) and waits until
    /// it is applied here.
    pub(crate) async fn propose_encoded(&self, payload: Bytes) -> Result<ProposeOutcome> {
        self.shared.check_running()?;
        if payload.len() > MAX_APP_COMMAND_BYTES + 32 {
            return Err(Error::InvalidArgument(format!(
                "application command is {} bytes encoded; the most is {MAX_APP_COMMAND_BYTES} \
                 (split it, or keep large data outside the replicated state)",
                payload.len()
            )));
        }
        if !self.shared.is_leader() {
            return Err(self.shared.leader_hint_error());
        }
        self.shared
            .quota
            .admit(payload.len() as u64, self.shared.id)?;
        let slot = self.shared.proposal_slot()?;
        let started = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        self.shared.send_client(Input::Propose {
            cmd: payload,
            waiter: ProposalWaiter::new(tx, slot),
        })?;
        let out = self.shared.wait(rx, "the write").await;
        let m = &self.shared.metrics;
        match &out {
            Ok(_) => m.proposals_ok.inc(),
            Err(_) => m.proposals_failed.inc(),
        }
        m.proposal_seconds.observe(started.elapsed().as_secs_f64());
        out
    }
}
