//! On-disk framing of WAL segments and records (all integers little-endian).
//!
//! Segment header, 32 bytes:
//! ```text
//!  0..8   magic "DEWALSEG"
//!  8..12  format version (1)
//! 12..16  reserved, zero
//! 16..24  index of the segment's first record
//! 24..28  reserved, zero
//! 28..32  CRC32C of bytes 0..28
//! ```
//! Record, 40-byte header then payload:
//! ```text
//!  0..4   magic 0x31445752
//!  4..8   CRC32C of bytes 8..40 and the payload
//!  8..12  payload length
//! 12      payload kind: 0 noop, 1 command, 2 membership change
//! 13..16  reserved, zero
//! 16..24  term
//! 24..32  index
//! 32..40  durable mark: how many bytes of this segment were known to be on
//!         stable storage (fdatasync returned) when this record was appended
//! 40..    payload
//! ```
//! The durable mark lets recovery tell a torn tail (damage past every point
//! that was ever synced: a power loss may leave any pattern of written and
//! unwritten pages there) from corruption of data that was acknowledged.

use bytes::Bytes;
use d_engine_core::{ConfChange, Entry, EntryPayload, Index, Term};

pub const SEGMENT_MAGIC: &[u8; 8] = b"DEWALSEG";
pub const FORMAT_VERSION: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 32;

pub const RECORD_MAGIC: u32 = 0x3144_5752;
pub const RECORD_HEADER_LEN: usize = 40;
/// Largest encoded payload of one entry.
pub const MAX_PAYLOAD: usize = 256 * 1024 * 1024;

const KIND_NOOP: u8 = 0;
const KIND_COMMAND: u8 = 1;
const KIND_CONFIG: u8 = 2;

const CONF_ADD_LEARNER: u8 = 1;
const CONF_PROMOTE: u8 = 2;
const CONF_REMOVE: u8 = 3;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Encodes a segment header for a segment whose first record has `first_index`.
pub fn encode_segment_header(first_index: Index) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_index.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was rejected.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a segment at all (short file or wrong magic).
    NotASegment(String),
    /// A segment, but damaged or from an unknown format version.
    Damaged(String),
}

/// Decodes a segment header, returning the first index.
pub fn decode_segment_header(b: &[u8]) -> Result<Index, HeaderError> {
    if b.len() < SEGMENT_HEADER_LEN {
        return Err(HeaderError::NotASegment(format!(
            "{} bytes long, shorter than the {SEGMENT_HEADER_LEN}-byte segment header",
            b.len()
        )));
    }
    if &b[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::NotASegment("wrong magic bytes".into()));
    }
    let crc = u32_at(b, 28);
    if crc32c::crc32c(&b[0..28]) != crc {
        return Err(HeaderError::Damaged(
            "segment header checksum mismatch".into(),
        ));
    }
    let version = u32_at(b, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Damaged(format!(
            "segment format version {version}; this build reads version {FORMAT_VERSION}"
        )));
    }
    Ok(u64_at(b, 16))
}

/// Size in bytes of an entry's payload once encoded.
pub fn payload_len(payload: &EntryPayload) -> usize {
    match payload {
        EntryPayload::Noop => 0,
        EntryPayload::Command(b) => b.len(),
        EntryPayload::Config(cc) => match cc {
            ConfChange::AddLearner { addr, .. } => 1 + 8 + 4 + addr.len(),
            ConfChange::Promote { .. } | ConfChange::Remove { .. } => 1 + 8,
        },
    }
}

/// Appends the framed record for `entry` to `out`. The caller has checked
/// that the payload is at most [`MAX_PAYLOAD`] bytes.
pub fn encode_record(entry: &Entry, durable_mark: u64, out: &mut Vec<u8>) {
    let start = out.len();
    let plen = payload_len(&entry.payload);
    debug_assert!(plen <= MAX_PAYLOAD);
    out.reserve(RECORD_HEADER_LEN + plen);
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0u8; 4]); // CRC, filled in below
    out.extend_from_slice(&(plen as u32).to_le_bytes());
    let kind = match &entry.payload {
        EntryPayload::Noop => KIND_NOOP,
        EntryPayload::Command(_) => KIND_COMMAND,
        EntryPayload::Config(_) => KIND_CONFIG,
    };
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&entry.term.to_le_bytes());
    out.extend_from_slice(&entry.index.to_le_bytes());
    out.extend_from_slice(&durable_mark.to_le_bytes());
    match &entry.payload {
        EntryPayload::Noop => {}
        EntryPayload::Command(b) => out.extend_from_slice(b),
        EntryPayload::Config(cc) => match cc {
            ConfChange::AddLearner { id, addr } => {
                out.push(CONF_ADD_LEARNER);
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&(addr.len() as u32).to_le_bytes());
                out.extend_from_slice(addr.as_bytes());
            }
            ConfChange::Promote { id } => {
                out.push(CONF_PROMOTE);
                out.extend_from_slice(&id.to_le_bytes());
            }
            ConfChange::Remove { id } => {
                out.push(CONF_REMOVE);
                out.extend_from_slice(&id.to_le_bytes());
            }
        },
    }
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record decoded from bytes.
#[derive(Debug)]
pub struct Decoded {
    pub entry: Entry,
    pub durable_mark: u64,
    /// Total framed length (header + payload).
    pub len: usize,
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes remain than the record needs (a torn write, or zeros).
    Truncated {
        needed: usize,
        available: usize,
    },
    BadMagic(u32),
    BadLength(u32),
    ChecksumMismatch,
    /// Checksum matched but the contents make no sense (a bug or a
    /// deliberately forged record).
    Malformed(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated { needed, available } => write!(
                f,
                "record needs {needed} bytes but only {available} remain in the file"
            ),
            RecordError::BadMagic(m) => write!(f, "bad record magic {m:#010x}"),
            RecordError::BadLength(l) => write!(f, "impossible record payload length {l}"),
            RecordError::ChecksumMismatch => write!(f, "record checksum mismatch"),
            RecordError::Malformed(m) => write!(f, "malformed record: {m}"),
        }
    }
}

/// Reads only the (term, index) of a record whose framing is already known
/// to be valid.
pub fn peek_term_index(b: &[u8]) -> (Term, Index) {
    (u64_at(b, 16), u64_at(b, 24))
}

/// The payload length a record header at the start of `b` claims (`b` holds
/// at least the 12 bytes up to it); unchecked, as the header may be damaged.
pub(crate) fn claimed_payload_len(b: &[u8]) -> u32 {
    u32_at(b, 8)
}

/// Decodes the record at the start of `b` (which may extend past it).
pub fn decode_record(b: &[u8]) -> Result<Decoded, RecordError> {
    if b.len() < RECORD_HEADER_LEN {
        return Err(RecordError::Truncated {
            needed: RECORD_HEADER_LEN,
            available: b.len(),
        });
    }
    let magic = u32_at(b, 0);
    if magic != RECORD_MAGIC {
        return Err(RecordError::BadMagic(magic));
    }
    let plen = claimed_payload_len(b);
    if plen as usize > MAX_PAYLOAD {
        return Err(RecordError::BadLength(plen));
    }
    let total = RECORD_HEADER_LEN + plen as usize;
    if b.len() < total {
        return Err(RecordError::Truncated {
            needed: total,
            available: b.len(),
        });
    }
    let crc = u32_at(b, 4);
    if crc32c::crc32c(&b[8..total]) != crc {
        return Err(RecordError::ChecksumMismatch);
    }
    let kind = b[12];
    if b[13..16] != [0, 0, 0] {
        return Err(RecordError::Malformed("reserved bytes are not zero".into()));
    }
    let term = u64_at(b, 16);
    let index = u64_at(b, 24);
    let durable_mark = u64_at(b, 32);
    let p = &b[RECORD_HEADER_LEN..total];
    let payload = match kind {
        KIND_NOOP if p.is_empty() => EntryPayload::Noop,
        KIND_COMMAND => EntryPayload::Command(Bytes::copy_from_slice(p)),
        KIND_CONFIG => EntryPayload::Config(decode_conf_change(p)?),
        _ => {
            return Err(RecordError::Malformed(format!(
                "unknown payload kind {kind} with {} payload bytes",
                p.len()
            )))
        }
    };
    Ok(Decoded {
        entry: Entry {
            term,
            index,
            payload,
        },
        durable_mark,
        len: total,
    })
}

fn decode_conf_change(p: &[u8]) -> Result<ConfChange, RecordError> {
    let bad = |what: &str| RecordError::Malformed(format!("membership change: {what}"));
    if p.len() < 9 {
        return Err(bad("too short"));
    }
    let id = u64_at(p, 1);
    match p[0] {
        CONF_ADD_LEARNER => {
            if p.len() < 13 {
                return Err(bad("too short"));
            }
            let n = u32_at(p, 9) as usize;
            if p.len() != 13 + n {
                return Err(bad("address length does not match"));
            }
            let addr = std::str::from_utf8(&p[13..])
                .map_err(|_| bad("address is not UTF-8"))?
                .to_string();
            Ok(ConfChange::AddLearner { id, addr })
        }
        CONF_PROMOTE if p.len() == 9 => Ok(ConfChange::Promote { id }),
        CONF_REMOVE if p.len() == 9 => Ok(ConfChange::Remove { id }),
        t => Err(bad(&format!("unknown change type {t} or wrong length"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry {
                term: 1,
                index: 1,
                payload: EntryPayload::Noop,
            },
            Entry {
                term: 2,
                index: 2,
                payload: EntryPayload::Command(Bytes::from_static(b"hello")),
            },
            Entry {
                term: 2,
                index: 3,
                payload: EntryPayload::Command(Bytes::new()),
            },
            Entry {
                term: 3,
                index: 4,
                payload: EntryPayload::Config(ConfChange::AddLearner {
                    id: 7,
                    addr: "10.0.0.7:9000".into(),
                }),
            },
            Entry {
                term: 3,
                index: 5,
                payload: EntryPayload::Config(ConfChange::Promote { id: 7 }),
            },
            Entry {
                term: u64::MAX,
                index: u64::MAX,
                payload: EntryPayload::Config(ConfChange::Remove { id: 1 }),
            },
        ]
    }

    #[test]
    fn records_round_trip() {
        for e in entries() {
            let mut buf = vec![0xAA; 3]; // records need not start at 0
            encode_record(&e, 12345, &mut buf);
            assert_eq!(buf.len() - 3, RECORD_HEADER_LEN + payload_len(&e.payload));
            let d = decode_record(&buf[3..]).unwrap();
            assert_eq!(d.entry, e);
            assert_eq!(d.durable_mark, 12345);
            assert_eq!(d.len, buf.len() - 3);
            assert_eq!(peek_term_index(&buf[3..]), (e.term, e.index));
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        for e in entries() {
            let mut buf = Vec::new();
            encode_record(&e, 99, &mut buf);
            for bit in 0..buf.len() * 8 {
                let mut b = buf.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    decode_record(&b).is_err(),
                    "flip of bit {bit} in {e:?} undetected"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let mut buf = Vec::new();
        encode_record(&entries()[3], 0, &mut buf);
        for n in 0..buf.len() {
            assert!(matches!(
                decode_record(&buf[..n]),
                Err(RecordError::Truncated { .. })
            ));
        }
        assert!(decode_record(&[0u8; 100]).is_err());
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = encode_segment_header(42);
        assert_eq!(decode_segment_header(&h), Ok(42));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(matches!(
            decode_segment_header(&bad),
            Err(HeaderError::Damaged(_))
        ));
        assert!(matches!(
            decode_segment_header(b"hello world, not a segment at all"),
            Err(HeaderError::NotASegment(_))
        ));
        assert!(matches!(
            decode_segment_header(&h[..10]),
            Err(HeaderError::NotASegment(_))
        ));
    }
}
