//! Recovery: validating segment files and telling a torn tail from damage.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use d_engine_core::{Entry, Index, Term};

use super::error::{Result, WalError};
use super::record::{
    claimed_payload_len, decode_record, decode_segment_header, HeaderError, RecordError,
    RECORD_HEADER_LEN, RECORD_MAGIC, SEGMENT_HEADER_LEN,
};

/// A torn tail that recovery cut off the last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    /// New length of the file: the start of the first damaged record.
    pub offset: u64,
    pub dropped_bytes: u64,
    /// What was found at `offset`.
    pub reason: String,
}

/// What [`Wal::open`] found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every entry in the log, in order (`first_index..=last_index`).
    pub entries: Vec<Entry>,
    /// Set if an unsynced torn tail was cut off (log it).
    pub torn_tail: Option<TornTail>,
    /// Leftover temporary files (from a crash while starting a segment) that
    /// were removed.
    pub removed_temp_files: Vec<PathBuf>,
}

pub(crate) fn check_segment_header(path: &Path, name_first: Index) -> Result<()> {
    let f = File::open(path).map_err(|e| WalError::io("open segment", path, e))?;
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    let n = f
        .read_at(&mut h, 0)
        .map_err(|e| WalError::io("read segment", path, e))?;
    check_segment_header_bytes(path, &h[..n], name_first)
}

pub(crate) fn check_segment_header_bytes(
    path: &Path,
    bytes: &[u8],
    name_first: Index,
) -> Result<()> {
    let first = match decode_segment_header(bytes) {
        Ok(f) => f,
        Err(HeaderError::NotASegment(d)) => {
            return Err(WalError::Foreign {
                file: path.to_path_buf(),
                detail: d,
            })
        }
        Err(HeaderError::Damaged(d)) => return Err(corrupt(path, 0, d)),
    };
    if first == 0 {
        return Err(corrupt(path, 16, "first index 0 is invalid".into()));
    }
    if first != name_first {
        return Err(corrupt(
            path,
            16,
            format!("header says first index {first} but the file name says {name_first}"),
        ));
    }
    Ok(())
}

pub(crate) fn corrupt(path: &Path, offset: u64, detail: String) -> WalError {
    WalError::Corrupt {
        file: path.to_path_buf(),
        offset,
        detail,
    }
}

pub(crate) struct Scan {
    pub entries: Vec<Entry>,
    pub offsets: Vec<u32>,
    /// End of the last valid record.
    pub end: usize,
    pub torn: Option<TornTail>,
}

/// Unit of atomic writes assumed of the disk: after a power loss each sector
/// holds either what was written to it or what it held before (zeros, for
/// the preallocated end of a segment). A killed process leaves a partial
/// write cut at a page boundary, a multiple of this.
const SECTOR: usize = 512;

/// Whether the invalid record at `pos` looks like what a crash leaves behind.
///
/// - Cut short by the end of the file: crash-shaped only if no sector of
///   what remains is zero. A partial write leaves the record's written prefix
///   and then the end of the file; zeros before the end mean the file was
///   preallocated past the record, so the length field itself is damaged.
/// - Checksum wrong, or no record header where one should start: crash-shaped
///   only if a sector the record (or its header) overlaps is still all zero
///   from `pos` on, i.e. was never written back.
/// - A record that decodes but is wrong for its place: never; a crash cannot
///   produce a checksum-valid record with the wrong contents.
fn looks_like_a_crash(bytes: &[u8], pos: usize, err: &RecordError) -> bool {
    let zero_sector_in = |span_end: usize| {
        let span_end = span_end.min(bytes.len());
        let mut sector = pos / SECTOR * SECTOR;
        while sector < span_end {
            let from = sector.max(pos);
            let to = (sector + SECTOR).min(bytes.len());
            if bytes[from..to].iter().all(|&b| b == 0) {
                return true;
            }
            sector += SECTOR;
        }
        false
    };
    match err {
        RecordError::Truncated { .. } => !zero_sector_in(bytes.len()),
        RecordError::ChecksumMismatch => {
            let plen = claimed_payload_len(&bytes[pos..]);
            zero_sector_in(pos + RECORD_HEADER_LEN + plen as usize)
        }
        RecordError::BadMagic(_) | RecordError::BadLength(_) => {
            zero_sector_in(pos + RECORD_HEADER_LEN)
        }
        RecordError::Malformed(_) => false,
    }
}

/// Validates every record of one segment.
pub(crate) fn scan_segment(
    path: &Path,
    bytes: &[u8],
    first: Index,
    mut prev_term: Option<Term>,
    is_last: bool,
) -> Result<Scan> {
    let mut entries = Vec::new();
    let mut offsets = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut expect = first;
    while pos < bytes.len() {
        let decoded = decode_record(&bytes[pos..]);
        let crash_shaped = match &decoded {
            Ok(_) => false,
            Err(e) => looks_like_a_crash(bytes, pos, e),
        };
        let problem = match decoded {
            Ok(d) => {
                let e = &d.entry;
                if e.index != expect {
                    Some(format!(
                        "record has index {} where index {expect} was expected",
                        e.index
                    ))
                } else if prev_term.is_some_and(|t| e.term < t) {
                    Some(format!(
                        "record {} has term {}, lower than the previous record's term {}",
                        e.index,
                        e.term,
                        prev_term.unwrap_or(0)
                    ))
                } else if d.durable_mark > pos as u64 {
                    Some(format!(
                        "record {} claims {} durable bytes before its own offset",
                        e.index, d.durable_mark
                    ))
                } else {
                    offsets.push(pos as u32);
                    prev_term = Some(e.term);
                    expect += 1;
                    pos += d.len;
                    entries.push(d.entry);
                    None
                }
            }
            Err(RecordError::Malformed(m)) => Some(format!("malformed record: {m}")),
            Err(e) => Some(e.to_string()),
        };
        let Some(problem) = problem else { continue };
        if is_last && bytes[pos..].iter().all(|&b| b == 0) {
            // Preallocated space: a clean end.
            return Ok(Scan {
                entries,
                offsets,
                end: pos,
                torn: None,
            });
        }
        if !is_last {
            return Err(corrupt(
                path,
                pos as u64,
                format!("{problem} (in a segment that was closed and synced)"),
            ));
        }
        // The last segment: is this a torn tail (never synced) or damage to
        // data that was proven durable?
        if !crash_shaped {
            return Err(corrupt(
                path,
                pos as u64,
                format!(
                    "{problem}; this is not a torn tail: a crash leaves a record cut short by \
                     the end of the file or whole {SECTOR}-byte sectors of it unwritten \
                     (zeros), while these bytes were changed after they were written"
                ),
            ));
        }
        let mut proof: Option<(usize, u64)> = None;
        let mut later_valid = 0usize;
        let mut at = pos + 1;
        while at + RECORD_HEADER_LEN <= bytes.len() {
            if bytes[at..at + 4] == RECORD_MAGIC.to_le_bytes() {
                if let Ok(d) = decode_record(&bytes[at..]) {
                    later_valid += 1;
                    if d.durable_mark > pos as u64 && proof.is_none() {
                        proof = Some((at, d.durable_mark));
                    }
                }
            }
            at += 1;
        }
        if let Some((at, mark)) = proof {
            return Err(corrupt(
                path,
                pos as u64,
                format!(
                    "{problem}; this is not a torn tail: the valid record at offset {at} was \
                     appended after {mark} bytes of this segment had been synced"
                ),
            ));
        }
        let reason = if later_valid == 0 {
            problem
        } else {
            format!(
                "{problem}; {later_valid} later record(s) were appended after it but never \
                 synced before it, so they are dropped too"
            )
        };
        return Ok(Scan {
            entries,
            offsets,
            end: pos,
            torn: Some(TornTail {
                file: path.to_path_buf(),
                offset: pos as u64,
                dropped_bytes: (bytes.len() - pos) as u64,
                reason,
            }),
        });
    }
    Ok(Scan {
        entries,
        offsets,
        end: pos,
        torn: None,
    })
}
