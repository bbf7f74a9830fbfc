//! Binary encodings of state-machine data: stored values, membership, apply
//! results and dedup sessions. Used both inside sled and in snapshot files.

use super::dedup::{ClientSession, Remembered};
use super::wire::{Reader, WireError, Writer};
use super::{ApplyResult, KeyMeta, KeyValue};
use bytes::Bytes;
use d_engine_core::{Member, MemberRole, Membership};
use std::collections::BTreeMap;

const RECORD_VERSION: u8 = 1;

/// Encodes everything but the key (the key is stored beside it).
pub fn encode_value(kv: &KeyValue, w: &mut Writer) {
    w.u8(RECORD_VERSION)
        .u64(kv.create_revision)
        .u64(kv.mod_revision)
        .u64(kv.version)
        .opt_u64(kv.expires_at_ms)
        .bytes(&kv.value);
}

pub fn value_bytes(kv: &KeyValue) -> Vec<u8> {
    let mut w = Writer::with_capacity(40 + kv.value.len());
    encode_value(kv, &mut w);
    w.into_vec()
}

/// Reads the record version and the metadata that start every stored value
/// record.
fn decode_meta(r: &mut Reader<'_>) -> Result<KeyMeta, WireError> {
    let v = r.u8("record version")?;
    if v != RECORD_VERSION {
        return Err(r.err(format!("unknown record version {v}")));
    }
    Ok(KeyMeta {
        create_revision: r.u64("create_revision")?,
        mod_revision: r.u64("mod_revision")?,
        version: r.u64("version")?,
        expires_at_ms: r.opt_u64("expires_at_ms")?,
        lease: 0, // STORAGE-HELPER: record format v2 carries the lease
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

pub fn encode_result(res: &ApplyResult, w: &mut Writer) {
    match res {
        // STORAGE-HELPER: encode the new results (remembered by dedup).
        ApplyResult::DeleteRange { .. }
        | ApplyResult::Txn { .. }
        | ApplyResult::LeaseGranted { .. }
        | ApplyResult::LeaseRevoked { .. }
        | ApplyResult::LeaseNotFound { .. }
        | ApplyResult::LeaseExists { .. } => unimplemented!("encode new results"),
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
    }
}

pub fn decode_result(r: &mut Reader<'_>) -> Result<ApplyResult, WireError> {
    Ok(match r.u8("result tag")? {
        1 => ApplyResult::Noop,
        2 => ApplyResult::MembershipChanged,
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
        x => return Err(r.err(format!("unknown result tag {x}"))),
    })
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
