//! Conversions between the wire messages and the API's plain types, used
//! by the gRPC client (wire → API) and the client service (API → wire).

use d_engine_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::status::{Alarm, NodeRole, NodeStatus};
use crate::types::{
    Compare, CompareOp, CompareTarget, Consistency, DeleteRangeOutcome, EventType, KeyValue,
    LeaderInfo, LeaseGrant, LeaseStatus, LeaseTtl, MemberInfo, MemberRole, RangeEnd, RangeOptions,
    RangePage, Txn, TxnOp, TxnOpResult, TxnOutcome, WatchEvent, WatchOptions,
};
use std::time::Duration;

pub fn consistency(c: Consistency) -> i32 {
    match c {
        Consistency::Linearizable => pb::Consistency::Linearizable as i32,
        Consistency::Lease => pb::Consistency::Lease as i32,
        Consistency::Eventual => pb::Consistency::Eventual as i32,
    }
}

/// The wire key-value as the API's: the received message's buffers are
/// shared, not copied.
pub fn key_value(kv: pb::KeyValue) -> KeyValue {
    KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        expires_at_ms: kv.expires_at_ms,
        lease: kv.lease,
    }
}

/// A member; an unspecified role (an older or buggy server) reads as `Voter`.
pub fn member(m: pb::Member) -> MemberInfo {
    let role = match pb::MemberRole::try_from(m.role) {
        Ok(pb::MemberRole::Learner) => MemberRole::Learner,
        _ => MemberRole::Voter,
    };
    MemberInfo {
        id: m.id,
        peer_addr: m.peer_addr,
        client_addr: m.client_addr,
        role,
    }
}

pub fn members(ms: Vec<pb::Member>) -> Vec<MemberInfo> {
    ms.into_iter().map(member).collect()
}

/// A member as the wire carries it (the inverse of [`member`]).
pub fn member_to_wire(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        peer_addr: m.peer_addr,
        client_addr: m.client_addr,
        role: match m.role {
            MemberRole::Voter => pb::MemberRole::Voter,
            MemberRole::Learner => pb::MemberRole::Learner,
        } as i32,
    }
}

pub fn members_to_wire(ms: Vec<MemberInfo>) -> Vec<pb::Member> {
    ms.into_iter().map(member_to_wire).collect()
}

pub fn leader(r: &pb::LeaderResponse) -> LeaderInfo {
    LeaderInfo {
        id: r.leader_id,
        client_addr: r.leader_addr.clone(),
        term: r.header.as_ref().map_or(0, |h| h.term),
    }
}

/// A `ClusterEvent` as (serving node id, leader, members).
pub fn cluster_event(e: pb::ClusterEvent) -> (u64, LeaderInfo, Vec<MemberInfo>) {
    let node_id = e.header.as_ref().map_or(0, |h| h.node_id);
    let leader = LeaderInfo {
        id: e.leader_id,
        client_addr: e.leader_addr,
        term: e.term,
    };
    (node_id, leader, members(e.members))
}

/// A watch event; an event without a type or key-value is a server bug,
/// reported as `Internal` rather than guessed at.
pub fn watch_event(e: pb::WatchEvent) -> Result<WatchEvent> {
    let kind = match pb::EventType::try_from(e.r#type) {
        Ok(pb::EventType::Put) => EventType::Put,
        Ok(pb::EventType::Delete) => EventType::Delete,
        _ => {
            return Err(Error::Internal(format!(
                "server sent a watch event with unknown type {}",
                e.r#type
            )))
        }
    };
    let kv = e
        .kv
        .ok_or_else(|| Error::Internal("server sent a watch event without a key-value".into()))?;
    Ok(WatchEvent {
        kind,
        kv: key_value(kv),
        prev_kv: e.prev_kv.map(key_value),
    })
}

/// The wire request of a watch on `key` with `o` (a prefix travels as
/// `prefix`, which every server version understands; other ends as
/// `range_end`).
pub fn watch_request(key: &[u8], o: &WatchOptions) -> pb::WatchRequest {
    let mut filters = Vec::new();
    if o.no_put {
        filters.push(pb::WatchFilter::NoPut as i32);
    }
    if o.no_delete {
        filters.push(pb::WatchFilter::NoDelete as i32);
    }
    let (prefix, range_end) = match &o.end {
        RangeEnd::Prefix => (true, Vec::new()),
        end => (false, end.to_wire(key)),
    };
    pb::WatchRequest {
        key: key.to_vec(),
        prefix,
        start_revision: o.start_revision,
        range_end,
        prev_kv: o.prev_kv,
        progress_notify: o.progress_notify,
        filters,
    }
}

/// A wire watch request as its first key and [`WatchOptions`] (the end is
/// not checked against the key here: see the server's validation). An
/// unknown filter is `InvalidArgument` naming `filters`; `prefix` together
/// with `range_end` is `InvalidArgument` naming `range_end`.
pub fn watch_request_from_wire(r: pb::WatchRequest) -> Result<(Vec<u8>, WatchOptions)> {
    let end = match (r.prefix, r.range_end.is_empty()) {
        (true, false) => {
            return Err(Error::InvalidArgument(
                "range_end: a watch has either `prefix` or `range_end`, not both".into(),
            ))
        }
        (true, true) => RangeEnd::Prefix,
        (false, _) => range_end_from_wire(r.range_end),
    };
    let mut o = WatchOptions {
        end,
        start_revision: r.start_revision,
        prev_kv: r.prev_kv,
        progress_notify: r.progress_notify,
        no_put: false,
        no_delete: false,
    };
    for f in r.filters {
        match pb::WatchFilter::try_from(f) {
            Ok(pb::WatchFilter::NoPut) => o.no_put = true,
            Ok(pb::WatchFilter::NoDelete) => o.no_delete = true,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "filters: unknown watch filter {f} (NO_PUT = 1, NO_DELETE = 2)"
                )))
            }
        }
    }
    Ok((r.key, o))
}

/// The wire request for one page of `[key, options.end)`.
pub fn range_request(key: &[u8], o: &RangeOptions) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.to_vec(),
        range_end: o.end.to_wire(key),
        limit: o.limit,
        keys_only: o.keys_only,
        count_only: o.count_only,
        consistency: consistency(o.consistency),
    }
}

/// A page from the wire (`revision` from the response header).
pub fn range_page(r: pb::RangeResponse) -> RangePage {
    RangePage {
        revision: r.header.map_or(0, |h| h.revision),
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
        next_key: (r.more && !r.next_key.is_empty()).then(|| r.next_key.to_vec()),
    }
}

pub fn delete_range_request(key: &[u8], end: &RangeEnd, prev_kv: bool) -> pb::DeleteRangeRequest {
    pb::DeleteRangeRequest {
        key: key.to_vec(),
        range_end: end.to_wire(key),
        prev_kv,
        write_id: None,
    }
}

pub fn delete_range_outcome(r: pb::DeleteRangeResponse) -> DeleteRangeOutcome {
    DeleteRangeOutcome {
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
        prev_kvs_truncated: r.prev_kvs_truncated,
        revision: r.revision,
    }
}

fn compare_to_wire(c: &Compare) -> pb::Compare {
    use pb::compare::{Op, Target};
    pb::Compare {
        op: match c.op {
            CompareOp::Equal => Op::Equal,
            CompareOp::NotEqual => Op::NotEqual,
            CompareOp::Less => Op::Less,
            CompareOp::Greater => Op::Greater,
        } as i32,
        key: c.key.clone(),
        target: Some(match &c.target {
            CompareTarget::Value(v) => Target::Value(v.clone()),
            CompareTarget::Version(x) => Target::Version(*x),
            CompareTarget::CreateRevision(x) => Target::CreateRevision(*x),
            CompareTarget::ModRevision(x) => Target::ModRevision(*x),
            CompareTarget::Lease(x) => Target::Lease(*x),
        }),
    }
}

/// A wire compare as an API compare; a missing target or an unknown
/// operator is `InvalidArgument`.
pub fn compare_from_wire(c: pb::Compare) -> Result<Compare> {
    use pb::compare::{Op, Target};
    let op = match Op::try_from(c.op) {
        Ok(Op::Equal) => CompareOp::Equal,
        Ok(Op::NotEqual) => CompareOp::NotEqual,
        Ok(Op::Less) => CompareOp::Less,
        Ok(Op::Greater) => CompareOp::Greater,
        Err(_) => {
            return Err(Error::InvalidArgument(format!(
                "compare.op {} is not one of EQUAL, NOT_EQUAL, LESS, GREATER",
                c.op
            )))
        }
    };
    let target = match c.target {
        Some(Target::Value(v)) => CompareTarget::Value(v.to_vec()),
        Some(Target::Version(x)) => CompareTarget::Version(x),
        Some(Target::CreateRevision(x)) => CompareTarget::CreateRevision(x),
        Some(Target::ModRevision(x)) => CompareTarget::ModRevision(x),
        Some(Target::Lease(x)) => CompareTarget::Lease(x),
        None => {
            return Err(Error::InvalidArgument(
                "compare has no target; set one of value, version, create_revision, mod_revision, lease".into(),
            ))
        }
    };
    Ok(Compare {
        key: c.key.to_vec(),
        op,
        target,
    })
}

fn txn_op_to_wire(op: &TxnOp) -> pb::TxnOp {
    use pb::txn_op::Op;
    pb::TxnOp {
        op: Some(match op {
            TxnOp::Range { key, options } => Op::Range(range_request(key, options)),
            TxnOp::Put { key, value, lease } => Op::Put(pb::PutRequest {
                key: key.clone(),
                value: value.clone(),
                ttl_ms: 0,
                write_id: None,
                lease: *lease,
            }),
            TxnOp::DeleteRange { key, end, prev_kv } => {
                Op::DeleteRange(delete_range_request(key, end, *prev_kv))
            }
        }),
    }
}

/// The wire request of a transaction (without a write id).
pub fn txn_request(t: &Txn) -> pb::TxnRequest {
    pb::TxnRequest {
        compare: t.compares.iter().map(compare_to_wire).collect(),
        success: t.success.iter().map(txn_op_to_wire).collect(),
        failure: t.failure.iter().map(txn_op_to_wire).collect(),
        write_id: None,
    }
}

/// A transaction outcome from the wire; an op result without a body is
/// `Internal` (a server bug, not something to guess around).
pub fn txn_outcome(r: pb::TxnResponse) -> Result<TxnOutcome> {
    use pb::txn_op_result::Result as R;
    let results = r
        .results
        .into_iter()
        .map(|x| match x.result {
            Some(R::Range(p)) => Ok(TxnOpResult::Range(range_page(p))),
            Some(R::Put(p)) => Ok(TxnOpResult::Put {
                revision: p.revision,
            }),
            Some(R::DeleteRange(d)) => Ok(TxnOpResult::DeleteRange(delete_range_outcome(d))),
            None => Err(Error::Internal("txn op result without a body".into())),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TxnOutcome {
        succeeded: r.succeeded,
        results,
        revision: r.revision,
        replayed: r.replayed,
    })
}

pub fn lease_grant(r: pb::LeaseGrantResponse) -> LeaseGrant {
    LeaseGrant {
        id: r.id,
        ttl: Duration::from_millis(r.ttl_ms),
        revision: r.revision,
    }
}

pub fn lease_ttl(r: pb::LeaseTimeToLiveResponse) -> LeaseTtl {
    LeaseTtl {
        id: r.id,
        granted_ttl: Duration::from_millis(r.granted_ttl_ms),
        remaining: Duration::from_millis(r.remaining_ms),
        keys: r.keys.into_iter().map(|k| k.to_vec()).collect(),
        key_count: r.key_count,
    }
}

pub fn lease_list(r: pb::LeaseListResponse) -> Vec<LeaseStatus> {
    r.leases
        .into_iter()
        .map(|l| LeaseStatus {
            id: l.id,
            granted_ttl: Duration::from_millis(l.granted_ttl_ms),
        })
        .collect()
}

/// A duration as whole milliseconds for the wire, at least 1 for a
/// non-zero duration.
pub fn duration_ms(d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 && !d.is_zero() {
        1
    } else {
        ms
    }
}

/// A wire `range_end` (relative to the range's first key) as a [`RangeEnd`].
pub fn range_end_from_wire(end: Vec<u8>) -> RangeEnd {
    match end.as_slice() {
        [] => RangeEnd::Single,
        [0] => RangeEnd::FromKey,
        _ => RangeEnd::Before(end),
    }
}

/// A wire range request as a first key and [`RangeOptions`]; an unknown
/// consistency is `InvalidArgument`.
pub fn range_request_from_wire(r: pb::RangeRequest) -> Result<(Vec<u8>, RangeOptions)> {
    Ok((
        r.key,
        RangeOptions {
            end: range_end_from_wire(r.range_end),
            limit: r.limit,
            keys_only: r.keys_only,
            count_only: r.count_only,
            consistency: consistency_from_wire(r.consistency)?,
        },
    ))
}

/// A wire consistency (0 = the default, linearizable).
pub fn consistency_from_wire(c: i32) -> Result<Consistency> {
    match pb::Consistency::try_from(c) {
        Ok(pb::Consistency::Unspecified) | Ok(pb::Consistency::Linearizable) => {
            Ok(Consistency::Linearizable)
        }
        Ok(pb::Consistency::Lease) => Ok(Consistency::Lease),
        Ok(pb::Consistency::Eventual) => Ok(Consistency::Eventual),
        Err(_) => Err(Error::InvalidArgument(format!(
            "consistency {c} is not one of LINEARIZABLE (1), LEASE (2), EVENTUAL (3)"
        ))),
    }
}

/// An API key-value as the wire carries it (the inverse of [`key_value`]).
pub fn kv_to_wire(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        expires_at_ms: kv.expires_at_ms,
        lease: kv.lease,
    }
}

/// A page as the wire carries it (the inverse of [`range_page`]); the
/// header's revision becomes the page's (the point in time it was read
/// at, which a watch continues from).
pub fn range_page_to_wire(p: RangePage, header: Option<pb::ResponseHeader>) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header.map(|h| pb::ResponseHeader {
            revision: p.revision,
            ..h
        }),
        kvs: p.kvs.into_iter().map(kv_to_wire).collect(),
        more: p.more,
        count: p.count,
        next_key: p.next_key.unwrap_or_default(),
    }
}

pub fn delete_range_to_wire(
    d: DeleteRangeOutcome,
    header: Option<pb::ResponseHeader>,
) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header,
        deleted: d.deleted,
        prev_kvs: d.prev_kvs.into_iter().map(kv_to_wire).collect(),
        revision: d.revision,
        prev_kvs_truncated: d.prev_kvs_truncated,
    }
}

/// A wire transaction as an API [`Txn`] (without checks beyond the shape:
/// the node validates sizes and limits); the write id is returned apart.
pub fn txn_from_wire(r: pb::TxnRequest) -> Result<(Txn, Option<pb::WriteId>)> {
    use pb::txn_op::Op;
    let op = |o: pb::TxnOp| -> Result<TxnOp> {
        Ok(match o.op {
            Some(Op::Range(r)) => {
                let (key, options) = range_request_from_wire(r)?;
                TxnOp::Range { key, options }
            }
            Some(Op::Put(p)) => {
                if p.ttl_ms != 0 {
                    return Err(Error::InvalidArgument(
                        "a put inside a transaction takes no ttl_ms; attach the key to a lease instead"
                            .into(),
                    ));
                }
                TxnOp::Put {
                    key: p.key,
                    value: p.value,
                    lease: p.lease,
                }
            }
            Some(Op::DeleteRange(d)) => TxnOp::DeleteRange {
                key: d.key,
                end: range_end_from_wire(d.range_end),
                prev_kv: d.prev_kv,
            },
            None => {
                return Err(Error::InvalidArgument(
                    "txn op has no body; set one of range, put, delete_range".into(),
                ))
            }
        })
    };
    let txn = Txn {
        compares: r
            .compare
            .into_iter()
            .map(compare_from_wire)
            .collect::<Result<_>>()?,
        success: r.success.into_iter().map(op).collect::<Result<_>>()?,
        failure: r.failure.into_iter().map(op).collect::<Result<_>>()?,
    };
    Ok((txn, r.write_id))
}

/// A transaction outcome as the wire carries it (the inverse of
/// [`txn_outcome`]).
pub fn txn_outcome_to_wire(t: TxnOutcome, header: Option<pb::ResponseHeader>) -> pb::TxnResponse {
    use pb::txn_op_result::Result as R;
    let revision = t.revision;
    pb::TxnResponse {
        header,
        succeeded: t.succeeded,
        results: t
            .results
            .into_iter()
            .map(|r| pb::TxnOpResult {
                result: Some(match r {
                    TxnOpResult::Range(p) => R::Range(range_page_to_wire(p, header)),
                    TxnOpResult::Put { revision } => R::Put(pb::PutResponse { header, revision }),
                    TxnOpResult::DeleteRange(d) => R::DeleteRange(delete_range_to_wire(d, header)),
                }),
            })
            .collect(),
        revision,
        replayed: t.replayed,
    }
}

/// A node's status on the wire (`Admin.NodeStatus`); `sole_voter` is not
/// sent.
pub fn node_status_to_wire(
    s: NodeStatus,
    header: Option<pb::ResponseHeader>,
) -> pb::NodeStatusResponse {
    pb::NodeStatusResponse {
        header,
        id: s.id,
        role: s.role.as_str().to_string(),
        leader_id: s.leader_id,
        commit_index: s.commit_index,
        applied_index: s.applied_index,
        last_log_index: s.last_log_index,
        snapshot_index: s.snapshot_index,
        members: members_to_wire(s.members),
        alarms: s.alarms.iter().map(|a| a.as_str().to_string()).collect(),
        data_bytes: s.data_bytes,
        quota_bytes: s.quota_bytes,
        log_bytes: s.log_bytes,
    }
}

/// A node's status from the wire. A role this build does not know (from a
/// newer server) is an `Internal` error naming it; an unknown alarm is
/// kept as [`Alarm::Other`].
pub fn node_status(r: pb::NodeStatusResponse) -> Result<NodeStatus> {
    let role = NodeRole::parse(&r.role).ok_or_else(|| {
        Error::Internal(format!(
            "node {} reported role {:?}, which this client does not know; upgrade the client",
            r.id, r.role
        ))
    })?;
    Ok(NodeStatus {
        id: r.id,
        role,
        term: r.header.map_or(0, |h| h.term),
        leader_id: r.leader_id,
        commit_index: r.commit_index,
        applied_index: r.applied_index,
        last_log_index: r.last_log_index,
        snapshot_index: r.snapshot_index,
        members: members(r.members),
        sole_voter: false,
        alarms: r.alarms.iter().map(|a| Alarm::parse(a)).collect(),
        data_bytes: r.data_bytes,
        quota_bytes: r.quota_bytes,
        log_bytes: r.log_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_members() {
        let kv = pb::KeyValue {
            key: b"k".to_vec().into(),
            value: b"v".to_vec().into(),
            create_revision: 1,
            mod_revision: 2,
            version: 2,
            expires_at_ms: 0,
            lease: 0,
        };
        let ev = watch_event(pb::WatchEvent {
            r#type: pb::EventType::Delete as i32,
            kv: Some(kv.clone()),
            prev_kv: None,
        })
        .unwrap();
        assert_eq!(ev.kind, EventType::Delete);
        assert_eq!(ev.kv.mod_revision, 2);
        assert!(watch_event(pb::WatchEvent {
            r#type: 0,
            kv: Some(kv),
            prev_kv: None,
        })
        .is_err());
        assert!(watch_event(pb::WatchEvent {
            r#type: 1,
            kv: None,
            prev_kv: None,
        })
        .is_err());
        let m = member(pb::Member {
            id: 2,
            peer_addr: "p".into(),
            client_addr: "c".into(),
            role: pb::MemberRole::Learner as i32,
        });
        assert_eq!(m.role, MemberRole::Learner);
        assert_eq!(member(member_to_wire(m.clone())), m);
        assert_eq!(consistency(Consistency::Eventual), 3);
    }

    #[test]
    fn compares_round_trip_and_bad_ones_are_refused() {
        let all = [
            Compare::value_equals(b"k".to_vec(), b"v".to_vec()),
            Compare::missing(b"k".to_vec()),
            Compare::mod_revision_is(b"k".to_vec(), 7),
            Compare::new(b"k".to_vec(), CompareOp::Less, CompareTarget::Version(3)),
            Compare::new(b"k".to_vec(), CompareOp::Greater, CompareTarget::Lease(9)),
            Compare::new(
                b"k".to_vec(),
                CompareOp::NotEqual,
                CompareTarget::CreateRevision(1),
            ),
        ];
        for c in all {
            assert_eq!(compare_from_wire(compare_to_wire(&c)).unwrap(), c);
        }
        let mut no_target = compare_to_wire(&Compare::missing(b"k".to_vec()));
        no_target.target = None;
        assert!(
            matches!(compare_from_wire(no_target), Err(Error::InvalidArgument(m)) if m.contains("no target"))
        );
        let mut bad_op = compare_to_wire(&Compare::missing(b"k".to_vec()));
        bad_op.op = 9;
        assert!(
            matches!(compare_from_wire(bad_op), Err(Error::InvalidArgument(m)) if m.contains("compare.op 9"))
        );
    }

    #[test]
    fn range_pages_carry_next_key_only_when_more() {
        let resp = |more: bool| pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                node_id: 1,
                term: 1,
                revision: 42,
            }),
            kvs: vec![],
            more,
            count: 3,
            next_key: b"b\0".to_vec(),
        };
        let p = range_page(resp(true));
        assert_eq!(
            (p.revision, p.count, p.next_key),
            (42, 3, Some(b"b\0".to_vec()))
        );
        assert_eq!(range_page(resp(false)).next_key, None);
        let req = range_request(b"ab", &RangeOptions::prefix().with_limit(5));
        assert_eq!((req.range_end, req.limit), (b"ac".to_vec(), 5));
    }

    #[test]
    fn txns_and_outcomes_round_trip_through_the_wire() {
        let txn = Txn::new()
            .when([Compare::missing(b"k".to_vec())])
            .and_then([
                TxnOp::put(b"k".to_vec(), b"v".to_vec()),
                TxnOp::Range {
                    key: b"p/".to_vec(),
                    options: RangeOptions::prefix().with_limit(9),
                },
            ])
            .or_else([TxnOp::DeleteRange {
                key: b"a".to_vec(),
                end: RangeEnd::FromKey,
                prev_kv: true,
            }]);
        let (back, wid) = txn_from_wire(txn_request(&txn)).unwrap();
        assert_eq!(wid, None);
        // A prefix end travels as its computed bound.
        let mut want = txn.clone();
        want.success[1] = TxnOp::Range {
            key: b"p/".to_vec(),
            options: RangeOptions {
                end: RangeEnd::Before(b"p0".to_vec()),
                limit: 9,
                ..Default::default()
            },
        };
        assert_eq!(back, want);
        let out = TxnOutcome {
            succeeded: true,
            results: vec![
                TxnOpResult::Put { revision: 5 },
                TxnOpResult::Range(RangePage {
                    kvs: vec![],
                    more: true,
                    count: 10,
                    next_key: Some(b"p/x\0".to_vec()),
                    revision: 5,
                }),
            ],
            revision: 5,
            replayed: false,
        };
        let header = Some(pb::ResponseHeader {
            node_id: 1,
            term: 2,
            revision: 5,
        });
        assert_eq!(
            txn_outcome(txn_outcome_to_wire(out.clone(), header)).unwrap(),
            out
        );
        let mut bad = txn_request(&txn);
        bad.success[0].op = None;
        assert!(
            matches!(txn_from_wire(bad), Err(Error::InvalidArgument(m)) if m.contains("no body"))
        );
    }
}
