//! Leases: grant, revoke (writes), renew, time to live and list (served
//! by the leader from its lease clock, `lease_clock.rs`).
//!
//! Contracts:
//! - `lease_grant` and `lease_revoke` are writes (see `writes.rs`: leader
//!   only, `NotLeader`/`NoLeader` elsewhere, acknowledged once committed
//!   and applied). A grant's TTL is 1 ms ..= 1 year (`InvalidArgument`);
//!   its lease starts when it applies on the leader. Id 0 lets the node
//!   pick one: derived from the write id when there is one (so a retry
//!   proposes the same grant and is deduplicated), random otherwise; ids
//!   are below 2^63. A node-picked id that names a live lease is replaced
//!   by a fresh random one (without the write id); a caller-chosen id that
//!   names a live lease is `InvalidArgument`. Revoking deletes every key
//!   attached to the lease in the same log entry (watchers see the
//!   deletes); an unknown lease is `LeaseNotFound`;
//! - `lease_renew`, `lease_time_to_live` and `lease_list` are leader-only
//!   (`NotLeader` with the leader's address on a follower). They first
//!   confirm leadership with a lease read barrier (a ReadIndex round when
//!   the leader lease does not hold), so a deposed leader does not extend
//!   a lease its successor will expire. A renew restarts the TTL from the
//!   moment it is handled (after the barrier): the lease then expires no
//!   sooner than TTL from then; nothing is written to the log. A lease that
//!   does not exist, or whose deadline passed (its revoke is under way), is
//!   `LeaseNotFound`;
//! - right after an election the clock starts once the new leader commits
//!   an entry of its term; these calls wait for it (up to 1 s), then
//!   answer `NoLeader` (retryable).

use std::time::{Duration, Instant};

use d_engine_api::{LeaseGrant, LeaseStatus, LeaseTtl};
use d_engine_storage::command::MAX_LEASE_TTL_MS;
use sha2::{Digest, Sha256};

use super::handle::NodeHandle;
use super::lease_clock::LeaseView;
use super::txn::lease_not_found;
use super::types::{ApplyResult, Consistency, Error, Op, Result, WriteId};

/// How long a leader-only lease call waits for the lease clock of a new
/// leader to start.
const CLOCK_START_WAIT: Duration = Duration::from_secs(1);
/// Node-picked ids tried before giving up (each collision is a 1 in 2^63
/// event per live lease).
const GRANT_ATTEMPTS: usize = 4;

/// A non-zero id below 2^63 from 8 bytes.
fn id_from(b: [u8; 8]) -> u64 {
    (u64::from_le_bytes(b) & (i64::MAX as u64)).max(1)
}

/// The id the node picks for a grant with write id `w`: the same for
/// every retry of that write.
pub(super) fn id_for_write(w: &WriteId) -> u64 {
    let mut h = Sha256::new();
    h.update(b"d-engine lease id\0");
    h.update(w.user.as_bytes());
    h.update([0]);
    h.update(w.client_id.to_le_bytes());
    h.update(w.seq.to_le_bytes());
    let d = h.finalize();
    id_from(d[..8].try_into().expect("8 bytes"))
}

fn random_id() -> Result<u64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b)
        .map_err(|e| Error::Internal(format!("no OS randomness for a lease id: {e}")))?;
    Ok(id_from(b))
}

impl NodeHandle {
    /// Grants a lease of `ttl` (see the module docs); `id` 0 = the node
    /// picks.
    pub async fn lease_grant(
        &self,
        ttl: Duration,
        id: u64,
        write_id: Option<WriteId>,
    ) -> Result<LeaseGrant> {
        let ttl_ms = d_engine_api::convert::duration_ms(ttl);
        if ttl_ms == 0 || ttl_ms > MAX_LEASE_TTL_MS {
            return Err(Error::InvalidArgument(format!(
                "ttl_ms is {ttl_ms}; a lease's TTL must be 1..={MAX_LEASE_TTL_MS} ms (one year)"
            )));
        }
        let chosen_by_node = id == 0;
        let mut write_id = write_id.filter(|w| w.client_id != 0);
        for attempt in 0..GRANT_ATTEMPTS {
            let id = match (chosen_by_node, &write_id) {
                (false, _) => id,
                (true, Some(w)) => id_for_write(w),
                (true, None) => random_id()?,
            };
            let out = self
                .propose(Self::command(
                    Op::LeaseGrant { id, ttl_ms },
                    write_id.clone(),
                ))
                .await?;
            match out.result {
                ApplyResult::LeaseGranted { id, ttl_ms } => {
                    return Ok(LeaseGrant {
                        id,
                        ttl: Duration::from_millis(ttl_ms),
                        revision: out.revision,
                    })
                }
                ApplyResult::LeaseExists { id } if !chosen_by_node => {
                    return Err(Error::InvalidArgument(format!(
                        "lease id {id} is already in use; choose another id, or 0 to let the \
                         server pick one"
                    )))
                }
                ApplyResult::LeaseExists { id } => {
                    tracing::info!(
                        lease = id,
                        attempt,
                        "picked lease id is in use; picking another"
                    );
                    // This write id now answers LeaseExists: go on without it.
                    write_id = None;
                }
                other => return Err(self.unexpected(other)),
            }
        }
        Err(Error::Internal(format!(
            "{GRANT_ATTEMPTS} picked lease ids were all in use"
        )))
    }

    /// Revokes lease `id` and deletes every key attached to it in one
    /// replicated step; returns how many keys were deleted.
    pub async fn lease_revoke(&self, id: u64, write_id: Option<WriteId>) -> Result<u64> {
        Ok(self.lease_revoke_shared(id, write_id).await?.0)
    }

    /// [`NodeHandle::lease_revoke`], also answering the revoke's revision.
    pub(crate) async fn lease_revoke_shared(
        &self,
        id: u64,
        write_id: Option<WriteId>,
    ) -> Result<(u64, u64)> {
        if id == 0 {
            return Err(Error::InvalidArgument(
                "id is 0; lease ids are >= 1 (0 means \"no lease\")".into(),
            ));
        }
        let out = self
            .propose(Self::command(Op::LeaseRevoke { id }, write_id))
            .await?;
        match out.result {
            ApplyResult::LeaseRevoked { deleted, .. } => Ok((deleted, out.revision)),
            ApplyResult::LeaseNotFound { id } => Err(lease_not_found(id)),
            other => Err(self.unexpected(other)),
        }
    }

    /// Confirms this node leads (lease read barrier) and that its lease
    /// clock runs (waiting up to [`CLOCK_START_WAIT`] after an election).
    async fn lease_leader(&self) -> Result<()> {
        self.shared.check_running()?;
        if !self.shared.is_leader() {
            return Err(self.shared.leader_hint_error());
        }
        self.read_barrier(Consistency::Lease).await?;
        let until = Instant::now() + CLOCK_START_WAIT;
        loop {
            if !self.shared.is_leader() {
                return Err(self.shared.leader_hint_error());
            }
            let term = self
                .shared
                .published
                .term
                .load(std::sync::atomic::Ordering::Acquire);
            if self.shared.leases.running_term() == Some(term) {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(Error::NoLeader(format!(
                    "node {} was just elected and has not yet committed an entry of its term \
                     (its lease clock is not running); retry shortly",
                    self.id()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn not_running(&self) -> Error {
        Error::NoLeader(format!(
            "node {} lost its leadership while handling the lease call; retry on the new \
             leader",
            self.id()
        ))
    }

    /// Restarts lease `id`'s TTL on the leader; returns the TTL (see the
    /// module docs).
    pub async fn lease_renew(&self, id: u64) -> Result<Duration> {
        self.lease_leader().await?;
        match self.shared.leases.renew(id, Instant::now()) {
            LeaseView::Live { ttl, .. } => Ok(ttl),
            LeaseView::Gone => Err(lease_not_found(id)),
            LeaseView::NotRunning => Err(self.not_running()),
        }
    }

    /// Lease `id`'s granted TTL, the time left on the leader's clock, the
    /// number of attached keys and, with `keys`, the keys themselves.
    pub async fn lease_time_to_live(&self, id: u64, keys: bool) -> Result<LeaseTtl> {
        self.lease_ttl_shared(id, keys, None).await
    }

    /// [`NodeHandle::lease_time_to_live`] listing keys until they pass
    /// `budget` bytes (key + 8 each), when given; `key_count` still counts
    /// them all.
    pub(crate) async fn lease_ttl_shared(
        &self,
        id: u64,
        keys: bool,
        budget: Option<usize>,
    ) -> Result<LeaseTtl> {
        self.lease_leader().await?;
        let (granted_ttl, remaining) = match self.shared.leases.view(id, Instant::now()) {
            LeaseView::Live { ttl, remaining } => (ttl, remaining),
            LeaseView::Gone => return Err(lease_not_found(id)),
            LeaseView::NotRunning => return Err(self.not_running()),
        };
        let sm = self.shared.kv()?;
        let mut list = Vec::new();
        let mut key_count = 0u64;
        let mut bytes = 0usize;
        sm.lease_keys_each(id, &mut |k| {
            key_count += 1;
            if keys {
                bytes += k.len() + 8;
                if budget.is_none_or(|b| bytes <= b) {
                    list.push(k.to_vec());
                }
            }
            true
        })
        .map_err(|e| Error::Storage(e.to_string()))?;
        Ok(LeaseTtl {
            id,
            granted_ttl,
            remaining,
            keys: list,
            key_count,
        })
    }

    /// Every live lease, in id order (leader only).
    pub async fn lease_list(&self) -> Result<Vec<LeaseStatus>> {
        self.lease_leader().await?;
        let leases = self
            .shared
            .kv()?
            .leases()
            .map_err(|e| Error::Storage(e.to_string()))?;
        let now = Instant::now();
        Ok(leases
            .into_iter()
            .filter(|l| matches!(self.shared.leases.view(l.id, now), LeaseView::Live { .. }))
            .map(|l| LeaseStatus {
                id: l.id,
                granted_ttl: Duration::from_millis(l.ttl_ms),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picked_ids_are_positive_below_2_63_and_stable_per_write_id() {
        let w = WriteId {
            client_id: 7,
            seq: 3,
            user: "alice".into(),
        };
        let a = id_for_write(&w);
        assert_eq!(a, id_for_write(&w.clone()));
        assert_ne!(
            a,
            id_for_write(&WriteId {
                seq: 4,
                ..w.clone()
            })
        );
        assert_ne!(
            a,
            id_for_write(&WriteId {
                user: "bob".into(),
                ..w
            })
        );
        for _ in 0..100 {
            let r = random_id().unwrap();
            assert!(r >= 1 && r <= i64::MAX as u64);
        }
        assert_eq!(id_from([0; 8]), 1);
        assert_eq!(id_from([0xff; 8]), i64::MAX as u64);
    }
}
