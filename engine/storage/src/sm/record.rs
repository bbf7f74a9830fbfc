//! Binary encodings of state-machine data: stored values, membership, apply
//! results and dedup sessions. Used both inside sled and in snapshot files.

use super::dedup::{ClientSession, Remembered};
use super::wire::{Reader, WireError, Writer};
use super::{ApplyResult, KeyMeta, KeyValue, LeaseRecord, RangeResult, TxnOpResult};
use bytes::Bytes;
use d_engine_core::{Member, MemberRole, Membership};
use std::collections::BTreeMap;

/// Version of the stored value records written by this node. Version 1
/// (no lease) is still read, as lease 0: data directories and snapshot
/// files written before leases load unchanged.
pub const RECORD_VERSION: u8 = 2;
const RECORD_VERSION_1: u8 = 1;

/// Encodes everything but the key (the key is stored beside it):
///
/// ```text
/// u8 version (2) | u64 create_revision | u64 mod_revision | u64 version
/// | opt<u64> expires_at_ms | u64 lease | bytes value
/// ```
///
/// Version 1 is the same without `lease`.
pub fn encode_value(kv: &KeyValue, w: &mut Writer) {
    w.u8(RECORD_VERSION)
        .u64(kv.create_revision)
        .u64(kv.mod_revision)
        .u64(kv.version)
        .opt_u64(kv.expires_at_ms)
        .u64(kv.lease)
        .bytes(&kv.value);
}

pub fn value_bytes(kv: &KeyValue) -> Vec<u8> {
    let mut w = Writer::with_capacity(48 + kv.value.len());
    encode_value(kv, &mut w);
    w.into_vec()
}

/// Reads the record version and the metadata that start every stored value
/// record. A key is never both attached to a lease and given a deadline
/// (commands refuse it), so a record claiming both is damaged.
fn decode_meta(r: &mut Reader<'_>) -> Result<KeyMeta, WireError> {
    let v = r.u8("record version")?;
    if v != RECORD_VERSION && v != RECORD_VERSION_1 {
        return Err(r.err(format!("unknown record version {v}")));
    }
    let create_revision = r.u64("create_revision")?;
    let mod_revision = r.u64("mod_revision")?;
    let version = r.u64("version")?;
    let expires_at_ms = r.opt_u64("expires_at_ms")?;
    let lease = if v == RECORD_VERSION_1 {
        0
    } else {
        r.u64("lease")?
    };
    if lease != 0 && expires_at_ms.is_some() {
        return Err(r.err(format!(
            "record names both lease {lease} and a TTL deadline"
        )));
    }
    Ok(KeyMeta {
        create_revision,
        mod_revision,
        version,
        expires_at_ms,
        lease,
    })
}

pub fn decode_value(key: Bytes, r: &mut Reader<'_>) -> Result<KeyValue, WireError> {
    let m = decode_meta(r)?;
    Ok(KeyValue {
        key,
        create_revision: m.create_revision,
        mod_revision: m.mod_revision,
        version: m.version,
        lease: m.lease,
        expires_at_ms: m.expires_at_ms,
        value: r.bytes_owned("value")?,
    })
}

/// The metadata of a stored value record and the length of its value,
/// without copying the value.
pub fn meta_and_value_len(buf: &[u8]) -> Result<(KeyMeta, usize), WireError> {
    let mut r = Reader::new(buf);
    let m = decode_meta(&mut r)?;
    let value = r.bytes("value")?;
    Ok((m, value.len()))
}

/// Decodes the metadata at the start of a stored value record, without
/// copying the value.
pub fn meta_from_bytes(buf: &[u8]) -> Result<KeyMeta, WireError> {
    decode_meta(&mut Reader::new(buf))
}

pub fn value_from_bytes(key: Bytes, buf: &[u8]) -> Result<KeyValue, WireError> {
    let mut r = Reader::new(buf);
    let kv = decode_value(key, &mut r)?;
    r.finish("record")?;
    Ok(kv)
}

pub fn encode_kv(kv: &KeyValue, w: &mut Writer) {
    w.bytes(&kv.key);
    encode_value(kv, w);
}

pub fn decode_kv(r: &mut Reader<'_>) -> Result<KeyValue, WireError> {
    let key = r.bytes_owned("key")?;
    decode_value(key, r)
}

pub fn encode_membership(m: &Membership, w: &mut Writer) {
    w.u32(m.members.len() as u32);
    for (id, mem) in &m.members {
        w.u64(*id)
            .u8(match mem.role {
                MemberRole::Voter => 1,
                MemberRole::Learner => 2,
            })
            .str(&mem.addr);
    }
}

pub fn decode_membership(r: &mut Reader<'_>) -> Result<Membership, WireError> {
    let n = r.u32("member count")?;
    let mut members = BTreeMap::new();
    for _ in 0..n {
        let id = r.u64("member id")?;
        let role = match r.u8("member role")? {
            1 => MemberRole::Voter,
            2 => MemberRole::Learner,
            x => return Err(r.err(format!("unknown member role {x}"))),
        };
        let addr = r.string("member addr")?;
        members.insert(id, Member { role, addr });
    }
    Ok(Membership { members })
}

pub fn membership_bytes(m: &Membership) -> Vec<u8> {
    let mut w = Writer::new();
    encode_membership(m, &mut w);
    w.into_vec()
}

pub fn membership_from_bytes(buf: &[u8]) -> Result<Membership, WireError> {
    let mut r = Reader::new(buf);
    let m = decode_membership(&mut r)?;
    r.finish("membership")?;
    Ok(m)
}

fn encode_opt_kv(kv: Option<&KeyValue>, w: &mut Writer) {
    match kv {
        None => {
            w.u8(0);
        }
        Some(kv) => {
            w.u8(1);
            encode_kv(kv, w);
        }
    }
}

fn decode_opt_kv(r: &mut Reader<'_>) -> Result<Option<KeyValue>, WireError> {
    if r.bool("kv present")? {
        Ok(Some(decode_kv(r)?))
    } else {
        Ok(None)
    }
}

/// Smallest encoding of a key-value (for checking list counts against the
/// bytes that follow).
const MIN_KV_BYTES: usize = 34;

fn encode_kvs(kvs: &[KeyValue], w: &mut Writer) {
    w.u32(kvs.len() as u32);
    for kv in kvs {
        encode_kv(kv, w);
    }
}

/// Reads a list count and checks it against the remaining bytes, so a
/// damaged count cannot make the decoder reserve memory it never fills.
fn decode_count(r: &mut Reader<'_>, field: &str, min_item: usize) -> Result<usize, WireError> {
    let n = r.u32(field)? as usize;
    if n.saturating_mul(min_item) > r.remaining() {
        return Err(r.err(format!(
            "{field} is {n} but only {} bytes follow",
            r.remaining()
        )));
    }
    Ok(n)
}

fn decode_kvs(r: &mut Reader<'_>) -> Result<Vec<KeyValue>, WireError> {
    let n = decode_count(r, "kv count", MIN_KV_BYTES)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(decode_kv(r)?);
    }
    Ok(v)
}

const TXN_RESULT_RANGE: u8 = 1;
const TXN_RESULT_PUT: u8 = 2;
const TXN_RESULT_DELETE_RANGE: u8 = 3;

fn encode_txn_op_result(res: &TxnOpResult, w: &mut Writer) {
    match res {
        TxnOpResult::Range(r) => {
            w.u8(TXN_RESULT_RANGE);
            encode_kvs(&r.kvs, w);
            w.bool(r.more).u64(r.count);
        }
        TxnOpResult::Put { prev_revision } => {
            w.u8(TXN_RESULT_PUT).opt_u64(*prev_revision);
        }
        TxnOpResult::DeleteRange {
            deleted,
            prev_kvs,
            truncated,
        } => {
            w.u8(TXN_RESULT_DELETE_RANGE).u64(*deleted);
            encode_kvs(prev_kvs, w);
            w.bool(*truncated);
        }
    }
}

fn decode_txn_op_result(r: &mut Reader<'_>) -> Result<TxnOpResult, WireError> {
    Ok(match r.u8("txn result kind")? {
        TXN_RESULT_RANGE => TxnOpResult::Range(RangeResult {
            kvs: decode_kvs(r)?,
            more: r.bool("more")?,
            count: r.u64("count")?,
        }),
        TXN_RESULT_PUT => TxnOpResult::Put {
            prev_revision: r.opt_u64("prev_revision")?,
        },
        TXN_RESULT_DELETE_RANGE => TxnOpResult::DeleteRange {
            deleted: r.u64("deleted")?,
            prev_kvs: decode_kvs(r)?,
            truncated: r.bool("truncated")?,
        },
        x => return Err(r.err(format!("unknown txn result kind {x}"))),
    })
}

/// Encodes an apply result (remembered by the dedup table, so stored in
/// sled and in snapshot files: tags are never reused).
///
/// ```text
/// 1 Noop | 2 MembershipChanged | 3 Put: opt<u64> prev_revision
/// 4 Delete: bool existed | 5 CompareAndSwap: bool succeeded, opt<kv> current
/// 6 Expire: u64 | 7 Rejected: str | 8 DuplicateExpired: u64 client, u64 seq
/// 9 DeleteRange: u64 deleted, kvs prev_kvs, bool truncated
/// 10 Txn: bool succeeded, u32 n, n × (u8 kind: 1 range: kvs, bool more,
///    u64 count | 2 put: opt<u64> prev_revision | 3 delete_range: as tag 9)
/// 11 LeaseGranted: u64 id, u64 ttl_ms | 12 LeaseRevoked: u64 id, u64 deleted
/// 13 LeaseNotFound: u64 id | 14 LeaseExists: u64 id
/// 15 AuthChanged: u64 revision | 16 AuthRefused: str reason
/// 64 Output: bytes (an application machine's output)
/// kvs = u32 n, n × (bytes key, value record)
/// ```
pub fn encode_result(res: &ApplyResult, w: &mut Writer) {
    match res {
        ApplyResult::Noop => {
            w.u8(1);
        }
        ApplyResult::MembershipChanged => {
            w.u8(2);
        }
        ApplyResult::Put { prev_revision } => {
            w.u8(3).opt_u64(*prev_revision);
        }
        ApplyResult::Delete { existed } => {
            w.u8(4).bool(*existed);
        }
        ApplyResult::CompareAndSwap { succeeded, current } => {
            w.u8(5).bool(*succeeded);
            encode_opt_kv(current.as_ref(), w);
        }
        ApplyResult::Expire { expired } => {
            w.u8(6).u64(*expired);
        }
        ApplyResult::Rejected { reason } => {
            w.u8(7).str(reason);
        }
        ApplyResult::DuplicateExpired { client_id, seq } => {
            w.u8(8).u64(*client_id).u64(*seq);
        }
        ApplyResult::DeleteRange {
            deleted,
            prev_kvs,
            truncated,
        } => {
            w.u8(9).u64(*deleted);
            encode_kvs(prev_kvs, w);
            w.bool(*truncated);
        }
        ApplyResult::Txn { succeeded, results } => {
            w.u8(10).bool(*succeeded).u32(results.len() as u32);
            for res in results {
                encode_txn_op_result(res, w);
            }
        }
        ApplyResult::LeaseGranted { id, ttl_ms } => {
            w.u8(11).u64(*id).u64(*ttl_ms);
        }
        ApplyResult::LeaseRevoked { id, deleted } => {
            w.u8(12).u64(*id).u64(*deleted);
        }
        ApplyResult::LeaseNotFound { id } => {
            w.u8(13).u64(*id);
        }
        ApplyResult::LeaseExists { id } => {
            w.u8(14).u64(*id);
        }
        ApplyResult::AuthChanged { revision } => {
            w.u8(15).u64(*revision);
        }
        ApplyResult::AuthRefused { reason } => {
            w.u8(16).str(reason);
        }
        // Far from the key-value tags, which grow from 15.
        ApplyResult::Output(b) => {
            w.u8(64).bytes(b);
        }
    }
}

pub fn decode_result(r: &mut Reader<'_>) -> Result<ApplyResult, WireError> {
    Ok(match r.u8("result tag")? {
        1 => ApplyResult::Noop,
        2 => ApplyResult::MembershipChanged,
        64 => ApplyResult::Output(r.bytes_owned("output")?),
        3 => ApplyResult::Put {
            prev_revision: r.opt_u64("prev_revision")?,
        },
        4 => ApplyResult::Delete {
            existed: r.bool("existed")?,
        },
        5 => ApplyResult::CompareAndSwap {
            succeeded: r.bool("succeeded")?,
            current: decode_opt_kv(r)?,
        },
        6 => ApplyResult::Expire {
            expired: r.u64("expired")?,
        },
        7 => ApplyResult::Rejected {
            reason: r.string("reason")?,
        },
        8 => ApplyResult::DuplicateExpired {
            client_id: r.u64("client_id")?,
            seq: r.u64("seq")?,
        },
        9 => ApplyResult::DeleteRange {
            deleted: r.u64("deleted")?,
            prev_kvs: decode_kvs(r)?,
            truncated: r.bool("truncated")?,
        },
        10 => {
            let succeeded = r.bool("succeeded")?;
            let n = decode_count(r, "txn result count", 2)?;
            let mut results = Vec::with_capacity(n);
            for _ in 0..n {
                results.push(decode_txn_op_result(r)?);
            }
            ApplyResult::Txn { succeeded, results }
        }
        11 => ApplyResult::LeaseGranted {
            id: r.u64("lease id")?,
            ttl_ms: r.u64("ttl_ms")?,
        },
        12 => ApplyResult::LeaseRevoked {
            id: r.u64("lease id")?,
            deleted: r.u64("deleted")?,
        },
        13 => ApplyResult::LeaseNotFound {
            id: r.u64("lease id")?,
        },
        14 => ApplyResult::LeaseExists {
            id: r.u64("lease id")?,
        },
        15 => ApplyResult::AuthChanged {
            revision: r.u64("auth revision")?,
        },
        16 => ApplyResult::AuthRefused {
            reason: r.string("reason")?,
        },
        x => return Err(r.err(format!("unknown result tag {x}"))),
    })
}

/// A lease in a snapshot file: `u64 id | u64 ttl_ms`.
pub fn encode_lease(l: &LeaseRecord, w: &mut Writer) {
    w.u64(l.id).u64(l.ttl_ms);
}

pub fn decode_lease(r: &mut Reader<'_>) -> Result<LeaseRecord, WireError> {
    Ok(LeaseRecord {
        id: r.u64("lease id")?,
        ttl_ms: r.u64("lease ttl_ms")?,
    })
}

const LEASE_RECORD_VERSION: u8 = 1;

/// The value of a lease stored in sled (the id is in the sled key):
/// `u8 version (1) | u64 ttl_ms`.
pub fn lease_value_bytes(l: &LeaseRecord) -> Vec<u8> {
    let mut w = Writer::with_capacity(9);
    w.u8(LEASE_RECORD_VERSION).u64(l.ttl_ms);
    w.into_vec()
}

pub fn lease_from_value_bytes(id: u64, buf: &[u8]) -> Result<LeaseRecord, WireError> {
    let mut r = Reader::new(buf);
    let v = r.u8("lease record version")?;
    if v != LEASE_RECORD_VERSION {
        return Err(r.err(format!("unknown lease record version {v}")));
    }
    let ttl_ms = r.u64("lease ttl_ms")?;
    r.finish("lease record")?;
    Ok(LeaseRecord { id, ttl_ms })
}

/// How a client session was encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionFormat {
    /// Results without the index of the entry that applied them (sled
    /// layout 1, snapshot tag 2). Read-only.
    V1,
    /// Each result carries the index of the entry that applied it (sled
    /// layout 2, snapshot tag 3). Read-only.
    V2,
    /// Each result also carries the fingerprint of its operation (sled
    /// layout 3, snapshot tag 4).
    V3,
}

/// Encodes a session in [`SessionFormat::V3`].
pub fn encode_session(s: &ClientSession, w: &mut Writer) {
    w.u64(s.last_index).u64(s.floor).u32(s.results.len() as u32);
    for (seq, r) in &s.results {
        w.u64(*seq).u64(r.index).u64(r.fingerprint);
        encode_result(&r.result, w);
    }
}

pub fn decode_session(
    r: &mut Reader<'_>,
    format: SessionFormat,
) -> Result<ClientSession, WireError> {
    let last_index = r.u64("session last_index")?;
    let floor = r.u64("session floor")?;
    let n = r.u32("session result count")?;
    let mut results = BTreeMap::new();
    for _ in 0..n {
        let seq = r.u64("seq")?;
        let index = match format {
            SessionFormat::V1 => 0,
            SessionFormat::V2 | SessionFormat::V3 => r.u64("result index")?,
        };
        let fingerprint = match format {
            SessionFormat::V1 | SessionFormat::V2 => 0,
            SessionFormat::V3 => r.u64("result fingerprint")?,
        };
        let result = decode_result(r)?;
        results.insert(
            seq,
            Remembered {
                index,
                fingerprint,
                result,
            },
        );
    }
    Ok(ClientSession {
        last_index,
        floor,
        results,
    })
}

pub fn session_bytes(s: &ClientSession) -> Vec<u8> {
    let mut w = Writer::new();
    encode_session(s, &mut w);
    w.into_vec()
}

pub fn session_from_bytes(buf: &[u8], format: SessionFormat) -> Result<ClientSession, WireError> {
    let mut r = Reader::new(buf);
    let s = decode_session(&mut r, format)?;
    r.finish("client session")?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, lease: u64, expires_at_ms: Option<u64>) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"val"),
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            expires_at_ms,
            lease,
        }
    }

    fn roundtrip(r: &ApplyResult) -> ApplyResult {
        let mut w = Writer::new();
        encode_result(r, &mut w);
        let buf = w.into_vec();
        let mut rd = Reader::new(&buf);
        let back = decode_result(&mut rd).unwrap();
        rd.finish("result").unwrap();
        back
    }

    fn new_results() -> Vec<ApplyResult> {
        vec![
            ApplyResult::DeleteRange {
                deleted: 5,
                prev_kvs: vec![kv("a", 0, Some(1)), kv("b", 7, None)],
                truncated: true,
            },
            ApplyResult::Txn {
                succeeded: false,
                results: vec![
                    TxnOpResult::Range(RangeResult {
                        kvs: vec![kv("r", 2, None)],
                        more: true,
                        count: 10,
                    }),
                    TxnOpResult::Put {
                        prev_revision: Some(4),
                    },
                    TxnOpResult::Put {
                        prev_revision: None,
                    },
                    TxnOpResult::DeleteRange {
                        deleted: 1,
                        prev_kvs: vec![],
                        truncated: false,
                    },
                ],
            },
            ApplyResult::LeaseGranted { id: 1, ttl_ms: 2 },
            ApplyResult::LeaseRevoked { id: 3, deleted: 4 },
            ApplyResult::LeaseNotFound { id: u64::MAX },
            ApplyResult::LeaseExists { id: 6 },
        ]
    }

    #[test]
    fn every_result_round_trips() {
        for r in new_results() {
            assert_eq!(roundtrip(&r), r);
        }
    }

    /// The encodings are stored (sled sessions, snapshot files): pin them.
    #[test]
    fn result_encodings_are_stable() {
        let hex = |r: &ApplyResult| {
            let mut w = Writer::new();
            encode_result(r, &mut w);
            w.into_vec()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        assert_eq!(
            hex(&ApplyResult::LeaseGranted { id: 1, ttl_ms: 2 }),
            "0b01000000000000000200000000000000"
        );
        assert_eq!(
            hex(&ApplyResult::LeaseRevoked { id: 3, deleted: 4 }),
            "0c03000000000000000400000000000000"
        );
        assert_eq!(
            hex(&ApplyResult::LeaseNotFound { id: 5 }),
            "0d0500000000000000"
        );
        assert_eq!(
            hex(&ApplyResult::LeaseExists { id: 6 }),
            "0e0600000000000000"
        );
        assert_eq!(
            hex(&ApplyResult::DeleteRange {
                deleted: 2,
                prev_kvs: vec![],
                truncated: true
            }),
            "09020000000000000000000000".to_string() + "01"
        );
        assert_eq!(
            hex(&ApplyResult::Txn {
                succeeded: true,
                results: vec![
                    TxnOpResult::Range(RangeResult::default()),
                    TxnOpResult::Put {
                        prev_revision: Some(7)
                    },
                ]
            }),
            "0a0102000000".to_string()
                + "01"
                + "00000000"
                + "00"
                + "0000000000000000"
                + "02"
                + "01"
                + "0700000000000000"
        );
        // An old result keeps its bytes.
        assert_eq!(hex(&ApplyResult::Delete { existed: true }), "0401");
    }

    #[test]
    fn truncated_or_hostile_results_are_errors() {
        for r in new_results() {
            let mut w = Writer::new();
            encode_result(&r, &mut w);
            let buf = w.into_vec();
            for cut in 0..buf.len() {
                let mut rd = Reader::new(&buf[..cut]);
                assert!(decode_result(&mut rd).is_err(), "cut {cut} of {r:?}");
            }
        }
        // A txn claiming 2^32 - 1 results and a delete-range claiming as
        // many pairs: refused before allocating.
        let mut w = Writer::new();
        w.u8(10).bool(true).u32(u32::MAX);
        assert!(decode_result(&mut Reader::new(&w.into_vec())).is_err());
        let mut w = Writer::new();
        w.u8(9).u64(1).u32(u32::MAX);
        assert!(decode_result(&mut Reader::new(&w.into_vec())).is_err());
    }

    #[test]
    fn value_records_carry_the_lease_and_version_1_still_reads() {
        for k in [kv("k", 0, None), kv("k", 9, None), kv("k", 0, Some(5))] {
            let buf = value_bytes(&k);
            assert_eq!(buf[0], RECORD_VERSION);
            assert_eq!(value_from_bytes(k.key.clone(), &buf).unwrap(), k);
            assert_eq!(meta_and_value_len(&buf).unwrap(), (k.meta(), 3));
        }
        let mut v1 = Writer::new();
        v1.u8(1).u64(3).u64(9).u64(4).opt_u64(Some(1)).bytes(b"val");
        let back = value_from_bytes(Bytes::from_static(b"k"), &v1.into_vec()).unwrap();
        assert_eq!(back, kv("k", 0, Some(1)));
        // Both a lease and a deadline: damaged.
        let mut both = Writer::new();
        both.u8(2)
            .u64(3)
            .u64(9)
            .u64(4)
            .opt_u64(Some(1))
            .u64(7)
            .bytes(b"val");
        let e = value_from_bytes(Bytes::from_static(b"k"), &both.into_vec()).unwrap_err();
        assert!(e.to_string().contains("both lease 7"), "{e}");
        let mut v3 = Writer::new();
        v3.u8(3);
        assert!(meta_from_bytes(&v3.into_vec()).is_err());
    }

    #[test]
    fn lease_records_round_trip() {
        let l = LeaseRecord {
            id: 4,
            ttl_ms: 1000,
        };
        assert_eq!(
            lease_from_value_bytes(4, &lease_value_bytes(&l)).unwrap(),
            l
        );
        assert!(lease_from_value_bytes(4, &[1, 0]).is_err());
        assert!(lease_from_value_bytes(4, &[2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut w = Writer::new();
        encode_lease(&l, &mut w);
        let buf = w.into_vec();
        assert_eq!(decode_lease(&mut Reader::new(&buf)).unwrap(), l);
    }
}
