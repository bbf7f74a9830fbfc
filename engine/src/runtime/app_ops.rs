//! The write path of application state machines (`crate::app`): proposing
//! an application command. Same contract as [`NodeHandle::propose`]
//! (leader only, quota, back-pressure, timeout = unknown outcome) without
//! the key-value validation: the application's codec decides what a
//! command is, and a command that does not decode is rejected
//! deterministically when it is applied.
//!
//! Both ways in use [`NodeHandle::propose_app`]: `AppEngine::propose` on
//! the leader's own node, and the client API's `dengine.v1.App/Propose`
//! (what a follower's `AppEngine` forwards to), so a command is checked
//! against the same limit and deduplicated by the same write-id table
//! whichever node it entered at.
//!
//! Log payload of an application command (distinct from a key-value
//! command, whose first byte is its version, 1):
//!
//! ```text
//! u8 APP_MAGIC (0xA5) | u8 flags (bit 0: write id follows)
//! [u64 client_id, u64 seq] | command bytes (the application's codec)
//! ```

use bytes::Bytes;
use tokio::sync::oneshot;

use super::handle::NodeHandle;
use super::input::{Input, ProposalWaiter};
use super::types::{Error, ProposeOutcome, Result};
use d_engine_storage::sm::ApplyResult;

/// First byte of an application command's log payload.
pub(crate) const APP_MAGIC: u8 = 0xA5;
/// Flag bit: a write id follows the flags byte.
pub(crate) const FLAG_WRITE_ID: u8 = 1;

/// The log payload of `command` under `write_id` (see the module docs).
pub(crate) fn app_payload(command: &[u8], write_id: Option<(u64, u64)>) -> Bytes {
    let mut b = Vec::with_capacity(18 + command.len());
    b.push(APP_MAGIC);
    match write_id {
        Some((client, seq)) => {
            b.push(FLAG_WRITE_ID);
            b.extend_from_slice(&client.to_le_bytes());
            b.extend_from_slice(&seq.to_le_bytes());
        }
        None => b.push(0),
    }
    b.extend_from_slice(command);
    Bytes::from(b)
}

/// What an applied application command answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppOutcome {
    /// The log index the command applied at (a retry answered from the
    /// write-id table: the first attempt's).
    pub revision: u64,
    /// The application's output, as its codec encoded it.
    pub output: Bytes,
}

impl NodeHandle {
    /// Proposes the encoded application `command` (under `write_id`, for
    /// exactly-once retries) and waits until it is applied here.
    ///
    /// Refused before anything is copied: a command over
    /// `limits.max_value_bytes` (`InvalidArgument` naming "command" and the
    /// limit), a node running the key-value machine (`InvalidArgument`), a
    /// follower (`NotLeader` with the leader's id and client address, or
    /// `NoLeader`). A command the application's codec rejects, and a retry
    /// older than the write-id window, fail with `InvalidArgument` once
    /// applied (deterministically on every replica). `Timeout`: the
    /// outcome is unknown; retry with the same write id.
    pub async fn propose_app(
        &self,
        command: &[u8],
        write_id: Option<(u64, u64)>,
    ) -> Result<AppOutcome> {
        self.shared.check_running()?;
        let limits = &self.shared.config.limits;
        if command.len() > limits.max_value_bytes {
            return Err(Error::InvalidArgument(format!(
                "command is {} bytes; the limit is {} bytes (limits.max_value_bytes); split \
                 it, or keep large data outside the replicated state",
                command.len(),
                limits.max_value_bytes
            )));
        }
        if self.shared.sm()?.into_kv().is_some() {
            return Err(Error::InvalidArgument(format!(
                "node {} runs the key-value state machine, not an application one: \
                 application commands are not available on it",
                self.shared.id
            )));
        }
        if !self.shared.is_leader() {
            return Err(self.shared.leader_hint_error());
        }
        let out = self.propose_encoded(app_payload(command, write_id)).await?;
        match out.result {
            ApplyResult::Output(output) => Ok(AppOutcome {
                revision: out.revision,
                output,
            }),
            ApplyResult::Rejected { reason } => Err(Error::InvalidArgument(reason)),
            ApplyResult::DuplicateExpired { client_id, seq } => {
                Err(Error::InvalidArgument(format!(
                    "write (client_id {client_id}, seq {seq}) is a retry older than the \
                     deduplication window; it was not applied again and its output is no \
                     longer known"
                )))
            }
            other => Err(Error::Internal(format!(
                "unexpected apply result {other:?} for the application command at index {}",
                out.index
            ))),
        }
    }

    /// Proposes `payload` (an encoded application command) and waits until
    /// it is applied here.
    async fn propose_encoded(&self, payload: Bytes) -> Result<ProposeOutcome> {
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
