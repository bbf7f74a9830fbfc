//! The durable write-ahead log: a directory of segment files.
//!
//! Files: `<dir>/<first index, 20 digits>.log`. Segments are contiguous: each
//! one starts at the index after the previous one's last record. Only the
//! last segment is written to; it is synced and closed when it reaches
//! `segment_size`, and a new one is created (written as `*.log.tmp`, synced,
//! renamed, directory synced), so every segment file on disk has a valid
//! header.
//!
//! Crash-safety of the mutating operations:
//! - `append` only buffers; `sync` writes and issues one `fdatasync`.
//! - `truncate_suffix` deletes whole later segments newest first (syncing
//!   the directory after each), then shortens the segment holding `from` and
//!   syncs it. A crash at any point leaves a contiguous log that is the old
//!   one minus some of the suffix being removed.
//! - `compact` deletes whole leading segments oldest first, syncing the
//!   directory after each: a crash leaves a contiguous log.
//! - `reset` deletes every segment newest first, then creates the new one.
//!   A crash in between leaves a shorter (possibly empty) prefix of the old
//!   log: the host must compare the log with its snapshot on restart and
//!   reset again if they do not connect.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use d_engine_core::{Entry, Index, Term};

use super::error::{Result, WalError};
use super::mem::{check_range, validate_batch};
use super::options::WalOptions;
use super::record::{
    self, decode_record, encode_record, encode_segment_header, MAX_PAYLOAD, RECORD_HEADER_LEN,
    SEGMENT_HEADER_LEN,
};
use super::recovery::{check_segment_header, check_segment_header_bytes, corrupt, scan_segment};
pub use super::recovery::{Recovered, TornTail};
use super::store::LogStore;

const SEGMENT_SUFFIX: &str = ".log";
const TEMP_SUFFIX: &str = ".log.tmp";

/// The file name of the segment whose first entry is `first`.
pub fn segment_file_name(first: Index) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<Index> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Syncs a directory so that creations, renames and deletions in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    first: Index,
    /// Byte offset of each record: entry `first + i` starts at `offsets[i]`.
    offsets: Vec<u32>,
    /// Length of the segment in bytes (for the active segment: including
    /// bytes still in the write buffer).
    len: u64,
}

impl Segment {
    fn last(&self) -> Index {
        self.first + self.offsets.len() as Index - 1
    }
    fn offset_of(&self, index: Index) -> u64 {
        self.offsets[(index - self.first) as usize] as u64
    }
    /// Byte range `[start, end)` of records `[lo, hi)` (all within this segment).
    fn byte_range(&self, lo: Index, hi: Index) -> (u64, u64) {
        let start = self.offset_of(lo);
        let end = if hi > self.last() {
            self.len
        } else {
            self.offset_of(hi)
        };
        (start, end)
    }
}

/// The durable Raft log. Not thread-safe by design: a host owns it on one
/// dedicated blocking thread and feeds it batches.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// Never empty; the last one is the active segment.
    segments: Vec<Segment>,
    /// The active segment, opened for writing.
    active: File,
    /// Bytes of the active segment handed to the OS.
    file_len: u64,
    /// Bytes of the active segment known to be on stable storage.
    durable_len: u64,
    /// Size of the active segment file: records end at `file_len`, the rest
    /// is zeros written ahead (see [`WalOptions::preallocate`]).
    alloc_len: u64,
    /// Encoded records not yet written, to go at `file_len`.
    buf: Vec<u8>,
    last_term: Option<Term>,
    committed: Index,
    poisoned: Option<(String, ErrorKind)>,
    last_sync: Instant,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir` and recovers it.
    ///
    /// A torn tail of the last segment is cut off and reported in
    /// [`Recovered::torn_tail`]: damage at offset `X` of the last segment is
    /// a torn tail if it has the shape a crash leaves (the record cut short
    /// by the end of the file, or a 512-byte sector of it still zero) and no
    /// valid record after it was appended once `X` had been synced (so the
    /// damaged bytes were never acknowledged; a power loss may write back
    /// unsynced sectors in any order). Any other damage, a gap between
    /// segments, or a file the WAL did not write refuses to open with
    /// [`WalError::Corrupt`] / [`WalError::Foreign`] naming the file and
    /// offset. On success the recovered log is durable (the last segment is
    /// synced), so the host may treat every recovered entry as persisted.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<(Wal, Recovered)> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            crate::data_dir::create_private_dir_all(&dir)
                .map_err(|e| WalError::io("create directory", &dir, e))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(|e| WalError::io("sync directory", parent, e))?;
            }
        }
        let mut recovered = Recovered::default();
        let mut names = Vec::new();
        let listing = fs::read_dir(&dir).map_err(|e| WalError::io("list directory", &dir, e))?;
        for item in listing {
            let item = item.map_err(|e| WalError::io("list directory", &dir, e))?;
            let path = item.path();
            let name = item.file_name();
            let Some(name) = name.to_str() else {
                return Err(WalError::Foreign {
                    file: path,
                    detail: "file name is not UTF-8".into(),
                });
            };
            if name.ends_with(TEMP_SUFFIX) && parse_segment_name(&name[..name.len() - 4]).is_some()
            {
                fs::remove_file(&path).map_err(|e| WalError::io("remove temp file", &path, e))?;
                recovered.removed_temp_files.push(path);
                continue;
            }
            match parse_segment_name(name) {
                Some(first) if item.file_type().map(|t| t.is_file()).unwrap_or(false) => {
                    names.push((first, path))
                }
                _ => {
                    return Err(WalError::Foreign {
                        file: path,
                        detail: "unexpected name: WAL segments are named \
                                 <20-digit first index>.log"
                            .into(),
                    })
                }
            }
        }
        names.sort();
        if !recovered.removed_temp_files.is_empty() {
            sync_dir(&dir).map_err(|e| WalError::io("sync directory", &dir, e))?;
        }
        if names.is_empty() {
            let path = create_segment(&dir, 1)?;
            names.push((1, path));
        }

        // Every file must be one of ours before any record is judged.
        for (name_first, path) in &names {
            check_segment_header(path, *name_first)?;
        }
        let mut segments: Vec<Segment> = Vec::with_capacity(names.len());
        let mut last_term: Option<Term> = None;
        let n = names.len();
        for (i, (first, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == n;
            let bytes = fs::read(&path).map_err(|e| WalError::io("read segment", &path, e))?;
            if bytes.len() as u64 > u32::MAX as u64 {
                return Err(corrupt(&path, 0, "segment is larger than 4 GiB".into()));
            }
            check_segment_header_bytes(&path, &bytes, first)?;
            if let Some(prev) = segments.last() {
                if first != prev.last() + 1 {
                    return Err(corrupt(
                        &path,
                        0,
                        format!(
                            "gap in the log: {} ends at index {} but this segment starts at {first}",
                            prev.path.display(),
                            prev.last()
                        ),
                    ));
                }
            }
            let scan = scan_segment(&path, &bytes, first, last_term, is_last)?;
            let len = scan.end as u64;
            if let Some(t) = scan.torn {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| WalError::io("open segment", &path, e))?;
                f.set_len(t.offset)
                    .and_then(|_| f.sync_data())
                    .map_err(|e| WalError::io("truncate torn tail", &path, e))?;
                recovered.torn_tail = Some(t);
            }
            if let Some(e) = scan.entries.last() {
                last_term = Some(e.term);
            }
            recovered.entries.extend(scan.entries);
            segments.push(Segment {
                path,
                first,
                offsets: scan.offsets,
                len,
            });
        }

        let active_path = segments.last().expect("at least one segment").path.clone();
        let active = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&active_path)
            .map_err(|e| WalError::io("open segment", &active_path, e))?;
        // Whatever recovery saw may still be only in the page cache (e.g.
        // after a process crash, even the last segment's directory entry):
        // make it durable before anyone relies on it.
        active
            .sync_data()
            .map_err(|e| WalError::io("fdatasync", &active_path, e))?;
        sync_dir(&dir).map_err(|e| WalError::io("sync directory", &dir, e))?;
        let len = segments.last().expect("segment").len;
        let active_alloc = active
            .metadata()
            .map_err(|e| WalError::io("stat segment", &active_path, e))?
            .len()
            .max(len);
        let wal = Wal {
            dir,
            opts,
            segments,
            active,
            file_len: len,
            durable_len: len,
            alloc_len: active_alloc,
            buf: Vec::new(),
            last_term,
            committed: 0,
            poisoned: None,
            last_sync: Instant::now(),
        };
        Ok((wal, recovered))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn options(&self) -> &WalOptions {
        &self.opts
    }

    /// The committed floor (see [`LogStore::set_committed`]).
    pub fn committed(&self) -> Index {
        self.committed
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// True if entries were appended since the last completed `sync`.
    pub fn has_unsynced(&self) -> bool {
        !self.buf.is_empty() || self.file_len > self.durable_len
    }

    /// True if the host must call `sync` now under the configured
    /// [`super::SyncMode`] (always true with unsynced data in `Always` mode).
    pub fn needs_sync(&self, now: Instant) -> bool {
        self.opts
            .sync_mode
            .needs_sync(self.has_unsynced(), self.last_sync, now)
    }

    /// When the last `sync` completed (or the log was opened).
    pub fn last_sync(&self) -> Instant {
        self.last_sync
    }

    /// The error that stopped the log, if any.
    pub fn poisoned(&self) -> Option<WalError> {
        self.poisoned
            .as_ref()
            .map(|(cause, kind)| WalError::Poisoned {
                cause: cause.clone(),
                kind: *kind,
            })
    }

    fn check(&self) -> Result<()> {
        match self.poisoned() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Records a failure of a write or sync; from now on every call fails.
    fn poison(&mut self, op: &'static str, path: &Path, e: io::Error) -> WalError {
        let err = WalError::io(op, path, e);
        if self.poisoned.is_none() {
            let kind = match &err {
                WalError::Io { source, .. } => source.kind(),
                _ => ErrorKind::Other,
            };
            self.poisoned = Some((err.to_string(), kind));
        }
        err
    }

    fn active_seg(&self) -> &Segment {
        self.segments.last().expect("at least one segment")
    }

    fn flush_buf(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.file_len + self.buf.len() as u64;
        if end > self.alloc_len {
            // Write zeros ahead in the same call (up to the segment size):
            // later appends overwrite them, so their fdatasync needs no
            // file-size (journal) update.
            let new_alloc = (end + self.opts.preallocate).min(self.opts.segment_size);
            if new_alloc > end {
                self.buf.resize((new_alloc - self.file_len) as usize, 0);
            }
        }
        if let Err(e) = self.active.write_all_at(&self.buf, self.file_len) {
            let path = self.active_seg().path.clone();
            return Err(self.poison("write", &path, e));
        }
        self.alloc_len = self.alloc_len.max(self.file_len + self.buf.len() as u64);
        self.file_len = end;
        self.buf.clear();
        Ok(())
    }

    fn sync_active(&mut self) -> Result<()> {
        self.flush_buf()?;
        if self.file_len == self.durable_len {
            return Ok(());
        }
        if let Err(e) = self.active.sync_data() {
            let path = self.active_seg().path.clone();
            return Err(self.poison("fdatasync", &path, e));
        }
        self.durable_len = self.file_len;
        Ok(())
    }

    fn sync_dir_or_poison(&mut self) -> Result<()> {
        if let Err(e) = sync_dir(&self.dir) {
            let dir = self.dir.clone();
            return Err(self.poison("sync directory", &dir, e));
        }
        Ok(())
    }

    /// Closes the active segment (synced) and starts a new one at `next`.
    fn roll(&mut self, next: Index) -> Result<()> {
        self.flush_buf()?;
        if self.alloc_len > self.file_len {
            // Closed segments end exactly at their last record.
            if let Err(e) = self.active.set_len(self.file_len) {
                let path = self.active_seg().path.clone();
                return Err(self.poison("trim segment", &path, e));
            }
            self.alloc_len = self.file_len;
        }
        if let Err(e) = self.active.sync_data() {
            let path = self.active_seg().path.clone();
            return Err(self.poison("fdatasync", &path, e));
        }
        self.durable_len = self.file_len;
        let path = match create_segment(&self.dir, next) {
            Ok(p) => p,
            Err(WalError::Io { op, path, source }) => return Err(self.poison(op, &path, source)),
            Err(e) => return Err(e),
        };
        self.activate(Segment {
            path,
            first: next,
            offsets: Vec::new(),
            len: SEGMENT_HEADER_LEN as u64,
        })
    }

    /// Makes `seg` (already on disk, synced, `seg.len` bytes) the active one.
    fn activate(&mut self, seg: Segment) -> Result<()> {
        let path = seg.path.clone();
        let len = seg.len;
        self.segments.push(seg);
        self.buf.clear();
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) => return Err(self.poison("open segment", &path, e)),
        };
        self.active = file;
        self.file_len = len;
        self.durable_len = len;
        self.alloc_len = len;
        Ok(())
    }

    /// Term of entry `index`, which must be in the log.
    fn term_at(&self, index: Index) -> Result<Term> {
        let si = self.segment_holding(index);
        let seg = &self.segments[si];
        let off = seg.offset_of(index);
        let bytes = self.read_bytes(si, off, off + RECORD_HEADER_LEN as u64)?;
        Ok(record::peek_term_index(&bytes).0)
    }

    fn segment_holding(&self, index: Index) -> usize {
        // Segments are sorted by first index; find the last with first <= index.
        self.segments.partition_point(|s| s.first <= index) - 1
    }

    /// Bytes `[start, end)` of segment `si`, including unwritten buffer bytes.
    fn read_bytes(&self, si: usize, start: u64, end: u64) -> Result<Vec<u8>> {
        let seg = &self.segments[si];
        let is_active = si + 1 == self.segments.len();
        let mut out = vec![0u8; (end - start) as usize];
        let file_end = if is_active {
            end.min(self.file_len)
        } else {
            end
        };
        if start < file_end {
            let n = (file_end - start) as usize;
            let f;
            let file = if is_active {
                &self.active
            } else {
                f = File::open(&seg.path)
                    .map_err(|e| WalError::io("open segment", &seg.path, e))?;
                &f
            };
            file.read_exact_at(&mut out[..n], start)
                .map_err(|e| WalError::io("read segment", &seg.path, e))?;
        }
        if is_active && end > self.file_len {
            let from = start.max(self.file_len);
            let b0 = (from - self.file_len) as usize;
            let b1 = (end - self.file_len) as usize;
            let o0 = (from - start) as usize;
            out[o0..].copy_from_slice(&self.buf[b0..b1]);
        }
        Ok(out)
    }

    /// Removes entries `from..` (assumed valid: `first <= from <= last`).
    fn truncate_inner(&mut self, from: Index) -> Result<()> {
        self.flush_buf()?;
        let k = self.segment_holding(from);
        // Newest first, directory synced after each: a crash leaves a
        // contiguous log.
        while self.segments.len() > k + 1 {
            let seg = self.segments.pop().expect("segment");
            if let Err(e) = fs::remove_file(&seg.path) {
                return Err(self.poison("remove segment", &seg.path, e));
            }
            self.sync_dir_or_poison()?;
        }
        let path = self.segments[k].path.clone();
        let keep = self.segments[k].offset_of(from);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) => return Err(self.poison("open segment", &path, e)),
        };
        if let Err(e) = file.set_len(keep).and_then(|_| file.sync_data()) {
            return Err(self.poison("truncate segment", &path, e));
        }
        let seg = &mut self.segments[k];
        seg.offsets.truncate((from - seg.first) as usize);
        seg.len = keep;
        self.active = file;
        self.file_len = keep;
        self.durable_len = keep;
        self.alloc_len = keep;
        self.buf.clear();
        self.last_term = if from > self.first_index() {
            Some(self.term_at(from - 1)?)
        } else {
            None
        };
        Ok(())
    }
}

/// Creates segment `first` durably: temp file, header, fsync, rename, dir fsync.
fn create_segment(dir: &Path, first: Index) -> Result<PathBuf> {
    let path = dir.join(segment_file_name(first));
    let tmp = dir.join(format!("{}.tmp", segment_file_name(first)));
    let f = crate::data_dir::create_private_file(&tmp)
        .map_err(|e| WalError::io("create segment", &tmp, e))?;
    f.write_all_at(&encode_segment_header(first), 0)
        .and_then(|_| f.sync_data())
        .map_err(|e| WalError::io("write segment header", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| WalError::io("rename segment", &path, e))?;
    sync_dir(dir).map_err(|e| WalError::io("sync directory", dir, e))?;
    Ok(path)
}

impl LogStore for Wal {
    fn append(&mut self, entries: &[Entry]) -> Result<()> {
        self.check()?;
        let (first, last) = (self.first_index(), self.last_index());
        validate_batch(entries, first, last, self.committed, |i| {
            self.term_at(i).map(Some)
        })?;
        for e in entries {
            let n = record::payload_len(&e.payload);
            if n > MAX_PAYLOAD {
                return Err(WalError::EntryTooLarge {
                    index: e.index,
                    bytes: n,
                    max: MAX_PAYLOAD,
                });
            }
        }
        let Some(head) = entries.first() else {
            return Ok(());
        };
        if head.index <= last {
            self.truncate_inner(head.index)?;
        }
        for e in entries {
            let seg = self.active_seg();
            if seg.len >= self.opts.segment_size && !seg.offsets.is_empty() {
                self.roll(e.index)?;
            }
            let offset = self.file_len + self.buf.len() as u64;
            encode_record(e, self.durable_len, &mut self.buf);
            let len = self.file_len + self.buf.len() as u64;
            let seg = self.segments.last_mut().expect("segment");
            seg.offsets.push(offset as u32);
            seg.len = len;
            self.last_term = Some(e.term);
            if self.buf.len() >= self.opts.write_buffer {
                self.flush_buf()?;
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        self.check()?;
        self.sync_active()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Hands buffered entries to the operating system without syncing
    /// them: after this they survive a process crash, not a power loss.
    fn flush(&mut self) -> Result<()> {
        self.check()?;
        self.flush_buf()
    }

    fn truncate_suffix(&mut self, from: Index) -> Result<()> {
        self.check()?;
        let (first, last) = (self.first_index(), self.last_index());
        if from > last {
            return Ok(());
        }
        if from <= self.committed {
            return Err(WalError::TruncateCommitted {
                from,
                committed: self.committed,
            });
        }
        if from < first {
            return Err(WalError::OutOfRange {
                index: from,
                first,
                last,
            });
        }
        self.truncate_inner(from)
    }

    fn compact(&mut self, upto: Index) -> Result<()> {
        self.check()?;
        // Oldest first, directory synced after each deletion.
        while self.segments.len() > 1 && self.segments[1].first - 1 <= upto {
            let seg = self.segments.remove(0);
            if let Err(e) = fs::remove_file(&seg.path) {
                return Err(self.poison("remove segment", &seg.path, e));
            }
            self.sync_dir_or_poison()?;
        }
        Ok(())
    }

    fn reset(&mut self, next_index: Index) -> Result<()> {
        self.check()?;
        if next_index == 0 {
            return Err(WalError::OutOfRange {
                index: 0,
                first: self.first_index(),
                last: self.last_index(),
            });
        }
        self.buf.clear();
        for i in (0..self.segments.len()).rev() {
            let path = self.segments[i].path.clone();
            if let Err(e) = fs::remove_file(&path) {
                return Err(self.poison("remove segment", &path, e));
            }
            self.sync_dir_or_poison()?;
        }
        let path = match create_segment(&self.dir, next_index) {
            Ok(p) => p,
            Err(WalError::Io { op, path, source }) => return Err(self.poison(op, &path, source)),
            Err(e) => return Err(e),
        };
        self.segments.clear();
        self.activate(Segment {
            path,
            first: next_index,
            offsets: Vec::new(),
            len: SEGMENT_HEADER_LEN as u64,
        })?;
        self.last_term = None;
        self.committed = self.committed.max(next_index - 1);
        Ok(())
    }

    fn read(&self, lo: Index, hi: Index) -> Result<Vec<Entry>> {
        self.check()?;
        check_range(lo, hi, self.first_index(), self.last_index())?;
        let mut out = Vec::with_capacity((hi - lo) as usize);
        let mut i = lo;
        while i < hi {
            let si = self.segment_holding(i);
            let seg = &self.segments[si];
            let seg_hi = hi.min(seg.last() + 1);
            let (start, end) = seg.byte_range(i, seg_hi);
            let bytes = self.read_bytes(si, start, end)?;
            let mut pos = 0usize;
            for want in i..seg_hi {
                let d = decode_record(&bytes[pos..]).map_err(|e| {
                    corrupt(
                        &seg.path,
                        start + pos as u64,
                        format!("{e} while reading entry {want}"),
                    )
                })?;
                if d.entry.index != want {
                    return Err(corrupt(
                        &seg.path,
                        start + pos as u64,
                        format!("found entry {} while reading entry {want}", d.entry.index),
                    ));
                }
                pos += d.len;
                out.push(d.entry);
            }
            i = seg_hi;
        }
        Ok(out)
    }

    fn set_committed(&mut self, index: Index) {
        self.committed = self.committed.max(index);
    }

    fn first_index(&self) -> Index {
        self.segments[0].first
    }

    fn last_index(&self) -> Index {
        self.active_seg().last()
    }

    fn last_term(&self) -> Option<Term> {
        self.last_term
    }
}
