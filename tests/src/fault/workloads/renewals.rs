//! [`RecordingKv`]: a [`KvClient`] over the gRPC client that records every
//! lease grant and renewal (invoke and return times, outcome), so a
//! checker knows when a lease was *certainly* alive.
//!
//! The guarantee checked (proto `Lease` docs, `docs/guarantees.md`): a
//! lease never expires before its TTL has passed since its last
//! acknowledged keepalive. The leader restarts the TTL when it handles a
//! renewal, which is after the client sent it; so a renewal (or the grant)
//! invoked at `t` and acknowledged proves the lease alive until `t + TTL`
//! (one machine, one monotonic clock rate). [`Renewals::covered_until`]
//! takes that, minus a safety margin.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_client::{
    CasOutcome, Consistency, DeleteRangeOutcome, GrpcKv, KeyValue, KvClient, LeaseGrant,
    LeaseStatus, LeaseTtl, RangeEnd, RangeOptions, RangePage, Result, Txn, TxnOutcome, WatchStream,
};

use crate::fault::history::Clock;

/// One acknowledged grant or renewal: (invoke, return) times.
pub type Ack = (u64, u64);

/// Acknowledged grants/renewals per lease id, and failed renewals.
#[derive(Default, Debug)]
pub struct Renewals {
    acks: Mutex<BTreeMap<u64, Vec<Ack>>>,
    failures: Mutex<BTreeMap<u64, u64>>,
}

impl Renewals {
    fn ack(&self, id: u64, invoke: u64, ret: u64) {
        self.acks
            .lock()
            .unwrap()
            .entry(id)
            .or_default()
            .push((invoke, ret));
    }

    /// Every acknowledged grant/renewal of `id`, in invoke order.
    pub fn acks(&self, id: u64) -> Vec<Ack> {
        let mut v = self
            .acks
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .unwrap_or_default();
        v.sort();
        v
    }

    pub fn failures(&self, id: u64) -> u64 {
        self.failures.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    /// The end of the stretch of time from `from` on during which lease
    /// `id` (of TTL `ttl_ns`) was certainly alive: every instant `t` in
    /// `[from, end)` has an acknowledged grant/renewal invoked at or before
    /// `t` and at most `ttl_ns - margin_ns` before it. Returns `from` when
    /// not even `from` is covered.
    pub fn covered_until(&self, id: u64, ttl_ns: u64, margin_ns: u64, from: u64) -> u64 {
        let span = ttl_ns.saturating_sub(margin_ns);
        let mut end = from;
        for (invoke, _) in self.acks(id) {
            if invoke > end {
                break;
            }
            end = end.max(invoke + span);
        }
        end
    }
}

/// A [`KvClient`] delegating to [`GrpcKv`], recording lease grants and
/// renewals into [`Renewals`] on the run's [`Clock`].
#[derive(Clone)]
pub struct RecordingKv {
    pub kv: GrpcKv,
    pub clock: Clock,
    pub renewals: Arc<Renewals>,
}

impl RecordingKv {
    pub fn new(kv: GrpcKv, clock: Clock) -> Self {
        RecordingKv {
            kv,
            clock,
            renewals: Arc::default(),
        }
    }
}

impl KvClient for RecordingKv {
    fn put(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
    ) -> impl Future<Output = Result<u64>> + Send {
        KvClient::put(&self.kv, key, value)
    }

    fn put_with_ttl(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        ttl: Duration,
    ) -> impl Future<Output = Result<u64>> + Send {
        KvClient::put_with_ttl(&self.kv, key, value, ttl)
    }

    fn get_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Option<KeyValue>>> + Send {
        KvClient::get_with(&self.kv, key, consistency)
    }

    fn get_multi(
        &self,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> impl Future<Output = Result<Vec<Option<KeyValue>>>> + Send {
        KvClient::get_multi(&self.kv, keys, consistency)
    }

    fn delete(&self, key: impl AsRef<[u8]> + Send) -> impl Future<Output = Result<bool>> + Send {
        KvClient::delete(&self.kv, key)
    }

    fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]> + Send,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<CasOutcome>> + Send {
        KvClient::compare_and_swap(&self.kv, key, expected, new_value)
    }

    fn range(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: RangeOptions,
    ) -> impl Future<Output = Result<RangePage>> + Send {
        KvClient::range(&self.kv, key, options)
    }

    fn delete_range(
        &self,
        key: impl AsRef<[u8]> + Send,
        end: RangeEnd,
        prev_kv: bool,
    ) -> impl Future<Output = Result<DeleteRangeOutcome>> + Send {
        KvClient::delete_range(&self.kv, key, end, prev_kv)
    }

    fn txn(&self, txn: Txn) -> impl Future<Output = Result<TxnOutcome>> + Send {
        KvClient::txn(&self.kv, txn)
    }

    fn put_with_lease(
        &self,
        key: impl AsRef<[u8]> + Send,
        value: impl AsRef<[u8]> + Send,
        lease: u64,
    ) -> impl Future<Output = Result<u64>> + Send {
        KvClient::put_with_lease(&self.kv, key, value, lease)
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrant> {
        let invoke = self.clock.now();
        let r = KvClient::lease_grant(&self.kv, ttl).await;
        if let Ok(g) = &r {
            self.renewals.ack(g.id, invoke, self.clock.now());
        }
        r
    }

    fn lease_revoke(&self, id: u64) -> impl Future<Output = Result<u64>> + Send {
        KvClient::lease_revoke(&self.kv, id)
    }

    async fn lease_renew(&self, id: u64) -> Result<Duration> {
        let invoke = self.clock.now();
        let r = KvClient::lease_renew(&self.kv, id).await;
        match &r {
            Ok(_) => self.renewals.ack(id, invoke, self.clock.now()),
            Err(_) => {
                *self
                    .renewals
                    .failures
                    .lock()
                    .unwrap()
                    .entry(id)
                    .or_default() += 1
            }
        }
        r
    }

    fn lease_time_to_live(
        &self,
        id: u64,
        keys: bool,
    ) -> impl Future<Output = Result<LeaseTtl>> + Send {
        KvClient::lease_time_to_live(&self.kv, id, keys)
    }

    fn lease_list(&self) -> impl Future<Output = Result<Vec<LeaseStatus>>> + Send {
        KvClient::lease_list(&self.kv)
    }

    fn watch(
        &self,
        key: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        KvClient::watch(&self.kv, key, start_revision)
    }

    fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]> + Send,
        start_revision: u64,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        KvClient::watch_prefix(&self.kv, prefix, start_revision)
    }

    fn watch_with(
        &self,
        key: impl AsRef<[u8]> + Send,
        options: d_engine_client::WatchOptions,
    ) -> impl Future<Output = Result<WatchStream>> + Send {
        KvClient::watch_with(&self.kv, key, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_follows_acknowledged_renewals_and_stops_at_a_gap() {
        let r = Renewals::default();
        // TTL 100, margin 10: each ack covers [invoke, invoke + 90).
        r.ack(1, 0, 5);
        r.ack(1, 30, 40);
        r.ack(1, 60, 200); // a slow answer still counts from its invoke
        r.ack(1, 300, 310); // after a gap: 150..300 is not covered
        assert_eq!(r.covered_until(1, 100, 10, 0), 150);
        assert_eq!(r.covered_until(1, 100, 10, 149), 150);
        assert_eq!(r.covered_until(1, 100, 10, 200), 200);
        assert_eq!(r.covered_until(1, 100, 10, 300), 390);
        assert_eq!(r.covered_until(2, 100, 10, 0), 0);
    }
}
