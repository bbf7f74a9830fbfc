//! The storage quota (`storage.quota_bytes`) and its NOSPACE alarm.
//!
//! What is counted: the state machine's logical data size,
//! [`d_engine_storage::sm::StateMachine::data_bytes`] (every stored key:
//! key + value + 32 bytes of metadata), the same number on every backend
//! and every replica at the same applied index. The apply thread publishes
//! it after every applied batch ([`Quota::observe`]).
//!
//! Where it is enforced: only at admission, on the leader, before a write is
//! proposed ([`Quota::admit`]). A write that is already in the log is always
//! applied, on every replica, even if that takes the data past the quota:
//! the apply path never decides differently on different replicas. So the
//! quota is a soft limit (like etcd's backend quota): the writes admitted
//! concurrently at the limit, and the writes a new leader inherits, may take
//! the data past it by their own size.
//!
//! The alarm: `NOSPACE` is raised when a write is refused for lack of
//! space, and while the applied data exceeds the quota (a follower sees that
//! too). A refusal's alarm clears as soon as space is freed (a delete or a
//! TTL expiry takes the data below where it stood at the refusal) or a write
//! that stores data is admitted again. Only writes that do not fit are
//! refused, alarm or not. Deletes, reads, snapshots and membership changes
//! are never refused.

use std::sync::atomic::{AtomicU64, Ordering};

use d_engine_api::Error;

/// The quota state a node shares between its apply thread (which measures)
/// and its request paths (which admit).
pub(crate) struct Quota {
    /// `storage.quota_bytes`; 0 = no quota.
    limit: u64,
    /// The state machine's `data_bytes` after the latest applied batch.
    used: AtomicU64,
    /// 1 + the data size when a write was last refused for lack of space;
    /// 0 when no refusal is outstanding.
    refused_at: AtomicU64,
}

impl Quota {
    pub(crate) fn new(limit: u64) -> Self {
        Quota {
            limit,
            used: AtomicU64::new(0),
            refused_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Whether the NOSPACE alarm is raised: a refusal is outstanding, or
    /// the applied data exceeds the quota.
    pub(crate) fn alarm(&self) -> bool {
        self.limit != 0
            && (self.refused_at.load(Ordering::Acquire) != 0 || self.used() > self.limit)
    }

    fn clear_refusal(&self, why: &str) {
        if self.refused_at.swap(0, Ordering::AcqRel) != 0 {
            tracing::info!(
                used_bytes = self.used(),
                quota_bytes = self.limit,
                "NOSPACE alarm cleared ({why})"
            );
        }
    }

    /// The apply thread's measurement after a batch (or a snapshot install).
    pub(crate) fn observe(&self, used: u64) {
        let before = self.used.swap(used, Ordering::AcqRel);
        if self.limit == 0 {
            return;
        }
        let refused_at = self.refused_at.load(Ordering::Acquire);
        if refused_at != 0 && used < refused_at - 1 {
            self.clear_refusal("deletes freed space");
        }
        if used > self.limit && before <= self.limit {
            tracing::warn!(
                used_bytes = used,
                quota_bytes = self.limit,
                "NOSPACE alarm: the applied data exceeds storage.quota_bytes (writes admitted \
                 at the limit or inherited from another leader); writes that store data are \
                 refused until deletes free space"
            );
        }
    }

    /// Admits a write that stores `adds` logical bytes (0 for a write that
    /// stores nothing: always admitted). Counts `adds` in full even when
    /// the write replaces an existing value (admission reads nothing).
    /// `node` names the node in the error.
    pub(crate) fn admit(&self, adds: u64, node: u64) -> Result<(), Error> {
        if self.limit == 0 || adds == 0 {
            return Ok(());
        }
        let used = self.used();
        if used.saturating_add(adds) <= self.limit {
            self.clear_refusal("a write fits again");
            return Ok(());
        }
        if self
            .refused_at
            .swap(used.saturating_add(1), Ordering::AcqRel)
            == 0
        {
            tracing::warn!(
                used_bytes = used,
                quota_bytes = self.limit,
                write_bytes = adds,
                "NOSPACE alarm raised: a write does not fit in storage.quota_bytes; delete \
                 keys or raise storage.quota_bytes"
            );
        }
        Err(Error::NoSpace(format!(
            "node {node} stores {used} bytes of data and its quota is storage.quota_bytes = {} \
             bytes; this write would add {adds} bytes (key + value + 32). Nothing was \
             written. Reads and deletes still work: delete keys (or let TTLs expire) to free \
             space, or raise storage.quota_bytes",
            self.limit
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_quota_and_a_delete_clears_the_alarm() {
        let q = Quota::new(1000);
        q.observe(900);
        assert!(q.admit(100, 1).is_ok(), "exactly at the quota is allowed");
        let e = q.admit(101, 1).unwrap_err();
        assert!(matches!(e, Error::NoSpace(_)), "{e:?}");
        let msg = e.to_string();
        for want in ["storage.quota_bytes = 1000", "900 bytes", "delete keys"] {
            assert!(msg.contains(want), "{msg} lacks {want:?}");
        }
        assert!(q.alarm(), "a refusal raises the alarm");
        assert!(q.admit(0, 1).is_ok(), "writes that store nothing pass");
        assert!(q.alarm(), "a delete admitted is not yet space freed");
        q.observe(900);
        assert!(q.alarm(), "nothing freed yet");
        q.observe(899);
        assert!(!q.alarm(), "a delete freed space");
        assert!(q.admit(101, 1).is_ok());
    }

    #[test]
    fn an_admitted_write_clears_a_refusal() {
        let q = Quota::new(1000);
        assert!(q.admit(2000, 1).is_err(), "larger than the whole quota");
        assert!(q.alarm());
        assert!(q.admit(10, 1).is_ok(), "a write that fits is admitted");
        assert!(!q.alarm());
    }

    #[test]
    fn applied_data_past_the_quota_raises_the_alarm_and_no_quota_admits_all() {
        let q = Quota::new(1000);
        q.observe(1001);
        assert!(q.alarm());
        q.observe(1000);
        assert!(!q.alarm());
        let none = Quota::new(0);
        none.observe(u64::MAX);
        assert!(!none.alarm());
        assert!(none.admit(u64::MAX, 1).is_ok());
    }
}
