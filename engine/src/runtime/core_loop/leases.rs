//! The consensus loop's side of the lease clock
//! ([`super::super::lease_clock`]): it starts the clock when this node
//! becomes a ready leader (every lease in the applied state gets its full
//! TTL), stops it when leadership is lost, and every lease check interval
//! (at most 100 ms, at most `ttl.expire_interval_ms`) proposes
//! `LeaseRevoke { id }` for each lease whose deadline passed: once per
//! lease; a revoke that fails (the proposal was refused or its entry
//! replaced) makes the lease due again at the next check.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use d_engine_storage::command::{Command, Op};
use tokio::sync::oneshot;
use tokio::sync::oneshot::error::TryRecvError;

use super::super::input::{ProposalWaiter, Slot};
use super::CoreLoop;

/// Longest time between two lease checks.
const MAX_LEASE_CHECK: Duration = Duration::from_millis(100);

impl CoreLoop {
    /// How often the leader looks for expired leases.
    pub(crate) fn lease_check_interval(&self) -> Duration {
        self.shared
            .config
            .ttl
            .expire_interval()
            .min(MAX_LEASE_CHECK)
    }

    /// Starts or stops the lease clock to follow this node's leadership:
    /// it runs exactly while this node leads `term` and has committed an
    /// entry of it (`ready`).
    pub(crate) fn sync_lease_clock(&mut self, is_leader: bool, ready: bool, term: u64) {
        let clock = &self.shared.leases;
        let running = clock.running_term();
        if running.is_some() && (!is_leader || running != Some(term)) {
            clock.deactivate();
            self.lease_revokes.clear();
            tracing::info!(term, "lease clock stopped: no longer leader");
        }
        if ready && clock.running_term().is_none() {
            let sm = match self.shared.kv() {
                Ok(sm) => sm,
                Err(_) => return,
            };
            match clock.activate(term, Instant::now(), || sm.leases()) {
                Ok(n) => tracing::info!(
                    term,
                    leases = n,
                    "lease clock started: every lease gets its full TTL from now"
                ),
                // The apply path reports a failing state machine; try again
                // at the next iteration.
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the leases to start the lease clock")
                }
            }
        }
    }

    /// Proposes the revoke of every lease whose deadline passed (see the
    /// module docs); retries the ones whose revoke failed.
    pub(crate) fn maybe_expire_leases(&mut self) {
        let now = Instant::now();
        if now < self.next_lease_check {
            return;
        }
        self.next_lease_check = now + self.lease_check_interval();
        let clock = &self.shared.leases;
        self.lease_revokes
            .retain_mut(|(id, rx)| match rx.try_recv() {
                Err(TryRecvError::Empty) => true,
                // Applied: the apply thread removed it (revoked or not found).
                Ok(Ok(_)) => false,
                Ok(Err(_)) | Err(TryRecvError::Closed) => {
                    clock.retry(*id, now);
                    false
                }
            });
        if clock.running_term().is_none()
            || !self.shared.published.leader_ready.load(Ordering::Acquire)
        {
            return;
        }
        for id in clock.take_due(now) {
            tracing::debug!(lease = id, "lease expired; proposing its revoke");
            let cmd = Command::new(Op::LeaseRevoke { id }).encode();
            let (tx, rx) = oneshot::channel();
            self.batch_bytes += cmd.len();
            self.batch.push(cmd);
            self.batch_waiters
                .push(Some(ProposalWaiter::new(tx, Slot::untracked())));
            self.lease_revokes.push((id, rx));
        }
    }
}
