//! Forwarding: a call the local node refuses with `NotLeader` or `NoLeader`
//! is sent to the leader's client gRPC API (`dengine.v1.Kv`), on the
//! generated stubs of `d-engine-proto`.
//!
//! Contract:
//! - Off when `embedded.forward_to_leader` is false, when the client API
//!   uses TLS and `tls.ca_file` is empty (nothing to verify the leader
//!   with), or when no other member has a client address
//!   (`members[].client_addr`): the caller then gets the local error as it
//!   was (`NotLeader` names the leader's id and client address).
//! - Connects lazily, one channel per address, kept for the engine's life;
//!   plaintext, or TLS trusting `tls.ca_file` and presenting the node's
//!   certificate ([`crate::tls::NodeTls::forward`]).
//! - Each attempt goes to the leader named by the last `NotLeader` reply
//!   (the local node's own refusal first), else the last node that
//!   answered, else the leader the local node knows, else the other members
//!   in turn. A `NotLeader` hint is followed at once (two in a row at most);
//!   `NoLeader`, `Unavailable`, `ShuttingDown`, `Overloaded`,
//!   `ChangeInProgress` and an attempt that times out are retried after a
//!   jittered exponential backoff (50 ms doubling to 1 s). At most
//!   [`MAX_ATTEMPTS`] attempts of at most [`ATTEMPT_TIMEOUT`] each, all
//!   within `queues.request_timeout_ms`; then the last error is returned.
//!   Any other error is returned at once.
//! - Every forwarded write carries a `WriteId` (client id, seq) that stays
//!   the same across its retries, so the leader applies it once even when
//!   an attempt timed out after it was applied (`d_engine_api::WriteSessions`).
//! - With `auth.forward_token` set, every call carries it as
//!   `authorization: Bearer <token>`: the leader checks forwarded calls as
//!   that token's user.
//! - Application commands (`crate::app`, [`app`]) are forwarded to the
//!   leader's `dengine.v1.App` under the application's own write id.
//! - Errors are decoded with the shared status codec
//!   ([`crate::status_codec`]), so a forwarded call fails with the same
//!   [`Error`] the leader's node returned.

mod app;
mod call;
mod link;

use std::time::Duration;

use bytes::Bytes;
use d_engine_proto::v1 as pb;
use tokio::time::Instant;

use crate::runtime::NodeHandle;
use d_engine_api::{
    convert, CasOutcome, Consistency, DeleteRangeOutcome, Error, KeyValue, LeaseGrant, LeaseStatus,
    LeaseTtl, RangeEnd, RangeOptions, RangePage, Result, Txn, TxnOutcome,
};

use call::Call;
use d_engine_api::convert::{consistency as wire_consistency, key_value};
pub(super) use link::Forwarder;
use link::Stubs;

/// True for the local errors a forwarded call may fix.
pub(super) fn should_forward(e: &Error) -> bool {
    matches!(e, Error::NotLeader { .. } | Error::NoLeader(_))
}

impl Forwarder {
    pub(super) async fn put(
        &self,
        h: &NodeHandle,
        local: Error,
        key: Bytes,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        let mut call = self.begin(h, local)?;
        let ttl_ms = ttl_ms(ttl)?;
        let slot = self.ids.acquire(call.deadline).await?;
        let req = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ttl_ms,
            write_id: Some(slot.id()),
            lease: 0,
        };
        let resp = call
            .run("put", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.put(req).await }
            })
            .await?;
        Ok(resp.revision)
    }

    pub(super) async fn delete(&self, h: &NodeHandle, local: Error, key: Bytes) -> Result<bool> {
        let mut call = self.begin(h, local)?;
        let slot = self.ids.acquire(call.deadline).await?;
        let req = pb::DeleteRequest {
            key: key.into(),
            write_id: Some(slot.id()),
        };
        let resp = call
            .run("delete", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.delete(req).await }
            })
            .await?;
        Ok(resp.deleted)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn compare_and_swap(
        &self,
        h: &NodeHandle,
        local: Error,
        key: Bytes,
        expected: Option<Vec<u8>>,
        new_value: Option<Vec<u8>>,
        ttl: Option<Duration>,
    ) -> Result<CasOutcome> {
        let mut call = self.begin(h, local)?;
        let ttl_ms = ttl_ms(ttl)?;
        let slot = self.ids.acquire(call.deadline).await?;
        let req = pb::CompareAndSwapRequest {
            key: key.into(),
            expected_value: expected,
            new_value,
            ttl_ms,
            write_id: Some(slot.id()),
        };
        let resp = call
            .run("compare_and_swap", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.compare_and_swap(req).await }
            })
            .await?;
        Ok(CasOutcome {
            succeeded: resp.succeeded,
            current: resp.current.map(key_value),
            revision: resp.revision,
        })
    }

    pub(super) async fn get(
        &self,
        h: &NodeHandle,
        local: Error,
        key: Bytes,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>> {
        let mut call = self.begin(h, local)?;
        let req = pb::GetRequest {
            key: key.into(),
            consistency: wire_consistency(consistency),
        };
        let resp = call
            .run("get", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.get(req).await }
            })
            .await?;
        Ok(resp.kv.map(key_value))
    }

    pub(super) async fn get_multi(
        &self,
        h: &NodeHandle,
        local: Error,
        keys: Vec<Vec<u8>>,
        consistency: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        let mut call = self.begin(h, local)?;
        let n = keys.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let req = pb::GetMultiRequest {
            keys,
            consistency: wire_consistency(consistency),
        };
        let resp = call
            .run("get_multi", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.get_multi(req).await }
            })
            .await?;
        if resp.results.len() != n {
            return Err(Error::Internal(format!(
                "the leader returned {} results for {n} keys",
                resp.results.len()
            )));
        }
        Ok(resp
            .results
            .into_iter()
            .map(|r| r.kv.map(key_value))
            .collect())
    }

    pub(super) async fn range(
        &self,
        h: &NodeHandle,
        local: Error,
        key: Bytes,
        options: RangeOptions,
    ) -> Result<RangePage> {
        let mut call = self.begin(h, local)?;
        let req = convert::range_request(&key, &options);
        let resp = call
            .run("range", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.range(req).await }
            })
            .await?;
        Ok(convert::range_page(resp))
    }

    pub(super) async fn delete_range(
        &self,
        h: &NodeHandle,
        local: Error,
        key: Bytes,
        end: RangeEnd,
        prev_kv: bool,
    ) -> Result<DeleteRangeOutcome> {
        let mut call = self.begin(h, local)?;
        let slot = self.ids.acquire(call.deadline).await?;
        let mut req = convert::delete_range_request(&key, &end, prev_kv);
        req.write_id = Some(slot.id());
        let resp = call
            .run("delete_range", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.delete_range(req).await }
            })
            .await?;
        Ok(convert::delete_range_outcome(resp))
    }

    pub(super) async fn txn(&self, h: &NodeHandle, local: Error, txn: &Txn) -> Result<TxnOutcome> {
        let mut call = self.begin(h, local)?;
        let slot = self.ids.acquire(call.deadline).await?;
        let mut req = convert::txn_request(txn);
        req.write_id = Some(slot.id());
        let resp = call
            .run("txn", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.txn(req).await }
            })
            .await?;
        convert::txn_outcome(resp)
    }

    pub(super) async fn put_with_lease(
        &self,
        h: &NodeHandle,
        local: Error,
        key: Bytes,
        value: Bytes,
        lease: u64,
    ) -> Result<u64> {
        let mut call = self.begin(h, local)?;
        let slot = self.ids.acquire(call.deadline).await?;
        let req = pb::PutRequest {
            key: key.into(),
            value: value.into(),
            ttl_ms: 0,
            write_id: Some(slot.id()),
            lease,
        };
        let resp = call
            .run("put", |Stubs { mut kv, .. }, t| {
                let req = request(req.clone(), t);
                async move { kv.put(req).await }
            })
            .await?;
        Ok(resp.revision)
    }

    pub(super) async fn lease_grant(
        &self,
        h: &NodeHandle,
        local: Error,
        ttl: Duration,
        id: u64,
    ) -> Result<LeaseGrant> {
        let mut call = self.begin(h, local)?;
        let slot = self.ids.acquire(call.deadline).await?;
        let req = pb::LeaseGrantRequest {
            ttl_ms: convert::duration_ms(ttl),
            id,
            write_id: Some(slot.id()),
        };
        let resp = call
            .run("lease_grant", |Stubs { mut lease, .. }, t| {
                let req = request(req, t);
                async move { lease.lease_grant(req).await }
            })
            .await?;
        Ok(convert::lease_grant(resp))
    }

    pub(super) async fn lease_revoke(&self, h: &NodeHandle, local: Error, id: u64) -> Result<u64> {
        let mut call = self.begin(h, local)?;
        let slot = self.ids.acquire(call.deadline).await?;
        let req = pb::LeaseRevokeRequest {
            id,
            write_id: Some(slot.id()),
        };
        let resp = call
            .run("lease_revoke", |Stubs { mut lease, .. }, t| {
                let req = request(req, t);
                async move { lease.lease_revoke(req).await }
            })
            .await?;
        Ok(resp.deleted)
    }

    pub(super) async fn lease_renew(
        &self,
        h: &NodeHandle,
        local: Error,
        id: u64,
    ) -> Result<Duration> {
        let mut call = self.begin(h, local)?;
        let req = pb::LeaseKeepAliveRequest { id };
        let resp = call
            .run("lease_renew", |Stubs { mut lease, .. }, t| {
                let req = request(req, t);
                async move { lease.lease_renew(req).await }
            })
            .await?;
        Ok(Duration::from_millis(resp.ttl_ms))
    }

    pub(super) async fn lease_time_to_live(
        &self,
        h: &NodeHandle,
        local: Error,
        id: u64,
        keys: bool,
    ) -> Result<LeaseTtl> {
        let mut call = self.begin(h, local)?;
        let req = pb::LeaseTimeToLiveRequest { id, keys };
        let resp = call
            .run("lease_time_to_live", |Stubs { mut lease, .. }, t| {
                let req = request(req, t);
                async move { lease.lease_time_to_live(req).await }
            })
            .await?;
        Ok(convert::lease_ttl(resp))
    }

    pub(super) async fn lease_list(
        &self,
        h: &NodeHandle,
        local: Error,
    ) -> Result<Vec<LeaseStatus>> {
        let mut call = self.begin(h, local)?;
        let resp = call
            .run("lease_list", |Stubs { mut lease, .. }, t| {
                let req = request(pb::LeaseListRequest {}, t);
                async move { lease.lease_list(req).await }
            })
            .await?;
        Ok(convert::lease_list(resp))
    }

    /// A forwarded call of `h`'s node, or `Err(local)` when forwarding is
    /// off or no other member has a client address.
    fn begin<'a>(&'a self, h: &'a NodeHandle, local: Error) -> Result<Call<'a>> {
        if !self.enabled {
            return Err(local);
        }
        let others: Vec<String> = h
            .members()
            .into_iter()
            .filter(|m| m.id != h.id() && !m.client_addr.is_empty())
            .map(|m| self.url(&m.client_addr))
            .collect();
        if others.is_empty() {
            return Err(local);
        }
        let hint = match &local {
            Error::NotLeader {
                leader_addr: Some(a),
                ..
            } if !a.is_empty() => Some(self.url(a)),
            _ => None,
        };
        Ok(Call {
            fwd: self,
            handle: h,
            deadline: Instant::now() + h.config().request_timeout(),
            others,
            hint,
            last_failed: None,
        })
    }
}

/// A request carrying its deadline to the leader as `grpc-timeout`.
fn request<M>(msg: M, timeout: Duration) -> tonic::Request<M> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// A TTL in whole milliseconds, rounded up (0 = none); a zero TTL is
/// refused like the client API refuses it.
fn ttl_ms(ttl: Option<Duration>) -> Result<u64> {
    let Some(ttl) = ttl else { return Ok(0) };
    if ttl.is_zero() {
        return Err(Error::InvalidArgument(
            "ttl is 0; it must be at least 1ms (use put for no expiry)".into(),
        ));
    }
    u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .map_err(|_| Error::InvalidArgument(format!("ttl {ttl:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_and_refuses_zero() {
        assert_eq!(ttl_ms(None).unwrap(), 0);
        assert_eq!(ttl_ms(Some(Duration::from_micros(1))).unwrap(), 1);
        assert_eq!(ttl_ms(Some(Duration::from_micros(1500))).unwrap(), 2);
        assert!(matches!(
            ttl_ms(Some(Duration::ZERO)),
            Err(Error::InvalidArgument(m)) if m.contains("ttl")
        ));
    }
}
