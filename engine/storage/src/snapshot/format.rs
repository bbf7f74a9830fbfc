//! Snapshot file format (version 1). Integers little-endian.
//!
//! ```text
//! header : magic "DENGSNAP" (8) | u32 version = 1 | u32 meta_len | meta
//! meta   : u64 last_index | u64 last_term | membership
//! record : u8 tag (1 = key-value, 4 = (user, client) dedup session; 2 and
//!          3 = anonymous sessions without result indexes / without
//!          operation fingerprints, still read; 5 = lease: u64 id,
//!          u64 ttl_ms; 6 = the replicated auth state, at most one,
//!          [`crate::auth::AuthState::encode`]) | u32 len | body
//!
//! Key-value bodies are `bytes key` + a value record
//! ([`crate::sm::record::encode_value`], version 1 or 2). Lease records
//! precede the key-value records that name them (installers rely on it).
//! Files without leases are read as before; a node that predates leases
//! refuses tag 5 as unknown.
//! trailer: u8 0xFF | u64 record_count | u32 crc32c
//! ```
//!
//! The CRC32C covers every byte before it. Readers check it (and that nothing
//! follows the trailer) before reporting the end of the records, so a caller
//! that applies records must only commit once `next_record` returned `None`.

use super::{io_err, SnapshotError};
use crate::sm::dedup::SessionKey;
use crate::sm::record::{
    decode_kv, decode_lease, decode_membership, decode_session, encode_kv, encode_lease,
    encode_membership, encode_session, SessionFormat,
};
use crate::sm::wire::{Reader, Writer};
use crate::sm::SnapshotRecord;
use d_engine_core::SnapshotMeta;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"DENGSNAP";
pub const FORMAT_VERSION: u32 = 1;
const TAG_KV: u8 = 1;
/// Client session without result indexes (written by older nodes; read only).
const TAG_CLIENT_V1: u8 = 2;
/// Client session whose results carry the index that applied them
/// (anonymous user, no fingerprints; read only).
const TAG_CLIENT_V2: u8 = 3;
/// `str user, u64 client_id, session` whose results carry the index that
/// applied them and the fingerprint of their operation
/// ([`crate::sm::dedup`]).
const TAG_CLIENT: u8 = 4;
/// `u64 id, u64 ttl_ms`.
const TAG_LEASE: u8 = 5;
/// The auth state (opaque here; decoded by the installer).
const TAG_AUTH: u8 = 6;
/// An application machine's opaque record (`SnapshotRecord::App`); far
/// from the key-value tags so new key-value records can take 7, 8, ...
const TAG_APP: u8 = 0x40;
const TAG_TRAILER: u8 = 0xFF;
/// Upper bound on one record or the meta block (a corrupt length beyond it
/// or beyond the file is reported, never allocated).
pub const MAX_RECORD_BYTES: u64 = 1 << 30;

/// Streams a snapshot into a file, computing the checksum as it goes.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    path: PathBuf,
    crc: u32,
    count: u64,
    bytes: u64,
    /// `bytes` at the last incremental sync.
    synced: u64,
    scratch: Writer,
}

/// A snapshot writer syncs its file every this many bytes while writing.
/// Without it the whole image (up to gigabytes) would be written back in
/// one burst at the final fsync, and that burst stalls the node's other
/// disk users (the WAL's fsyncs, sled reads waiting on sled's flusher) for
/// hundreds of milliseconds. The builder is background work; it waits for
/// its own writeback in small steps instead.
pub const SYNC_EVERY_BYTES: u64 = 8 << 20;

impl SnapshotWriter {
    /// Writes the header into `file` (already created at `path`).
    pub fn new(file: File, path: &Path, meta: &SnapshotMeta) -> Result<Self, SnapshotError> {
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            crc: 0,
            count: 0,
            bytes: 0,
            synced: 0,
            scratch: Writer::new(),
        };
        let mut m = Writer::new();
        m.u64(meta.last_index).u64(meta.last_term);
        encode_membership(&meta.membership, &mut m);
        let m = m.into_vec();
        let mut h = Writer::new();
        h.raw(MAGIC).u32(FORMAT_VERSION).u32(m.len() as u32).raw(&m);
        w.put(&h.into_vec())?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<(), SnapshotError> {
        self.crc = crc32c::crc32c_append(self.crc, b);
        self.bytes += b.len() as u64;
        self.out
            .write_all(b)
            .map_err(io_err(&self.path, "write snapshot"))
    }

    pub fn record(&mut self, rec: &SnapshotRecord) -> Result<(), SnapshotError> {
        let mut body = std::mem::take(&mut self.scratch);
        body.buf.clear();
        let tag = match rec {
            SnapshotRecord::Lease(l) => {
                encode_lease(l, &mut body);
                TAG_LEASE
            }
            SnapshotRecord::Kv(kv) => {
                encode_kv(kv, &mut body);
                TAG_KV
            }
            SnapshotRecord::Auth(a) => {
                body.raw(a);
                TAG_AUTH
            }
            SnapshotRecord::Client { key, session } => {
                body.str(&key.user).u64(key.client_id);
                encode_session(session, &mut body);
                TAG_CLIENT
            }
            SnapshotRecord::App(bytes) => {
                body.buf.extend_from_slice(bytes);
                TAG_APP
            }
        };
        let mut head = [0u8; 5];
        head[0] = tag;
        head[1..].copy_from_slice(&(body.buf.len() as u32).to_le_bytes());
        self.put(&head)?;
        self.put(&body.buf)?;
        self.scratch = body;
        self.count += 1;
        if self.bytes - self.synced >= SYNC_EVERY_BYTES {
            self.sync_so_far()?;
        }
        Ok(())
    }

    fn sync_so_far(&mut self) -> Result<(), SnapshotError> {
        self.out
            .flush()
            .map_err(io_err(&self.path, "write snapshot"))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(io_err(&self.path, "fsync snapshot"))?;
        self.synced = self.bytes;
        Ok(())
    }

    /// Writes the trailer and fsyncs; returns the file size.
    pub fn finish(mut self) -> Result<u64, SnapshotError> {
        let mut t = Writer::new();
        t.u8(TAG_TRAILER).u64(self.count);
        self.put(&t.into_vec())?;
        let crc = self.crc.to_le_bytes();
        self.out
            .write_all(&crc)
            .map_err(io_err(&self.path, "write snapshot"))?;
        self.bytes += 4;
        let file = self
            .out
            .into_inner()
            .map_err(|e| io_err(&self.path, "flush snapshot")(e.into_error()))?;
        file.sync_all()
            .map_err(io_err(&self.path, "fsync snapshot"))?;
        Ok(self.bytes)
    }

    pub fn records(&self) -> u64 {
        self.count
    }
}

/// Reads a snapshot file record by record, verifying as it goes.
pub struct SnapshotFileReader {
    input: BufReader<File>,
    path: PathBuf,
    len: u64,
    offset: u64,
    crc: u32,
    count: u64,
    meta: SnapshotMeta,
    done: bool,
    buf: Vec<u8>,
}

impl SnapshotFileReader {
    /// Opens `path` and reads the header.
    pub fn open(path: &Path) -> Result<Self, SnapshotError> {
        let file = File::open(path).map_err(io_err(path, "open snapshot"))?;
        let len = file
            .metadata()
            .map_err(io_err(path, "stat snapshot"))?
            .len();
        let mut r = SnapshotFileReader {
            input: BufReader::with_capacity(1 << 20, file),
            path: path.to_path_buf(),
            len,
            offset: 0,
            crc: 0,
            count: 0,
            meta: SnapshotMeta::default(),
            done: false,
            buf: Vec::new(),
        };
        let mut head = [0u8; 16];
        r.read_exact(&mut head, "header")?;
        if &head[..8] != MAGIC {
            return Err(r.corrupt(0, "not a d-engine snapshot (bad magic)".into()));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4"));
        if version != FORMAT_VERSION {
            return Err(r.corrupt(
                8,
                format!("unsupported snapshot format version {version} (this node reads {FORMAT_VERSION})"),
            ));
        }
        let meta_len = u32::from_le_bytes(head[12..16].try_into().expect("4")) as u64;
        let start = r.offset;
        let body = r.read_body(meta_len, "meta")?;
        let mut rd = Reader::new(&body);
        let parse = (|| {
            let last_index = rd.u64("last_index")?;
            let last_term = rd.u64("last_term")?;
            let membership = decode_membership(&mut rd)?;
            rd.finish("meta")?;
            Ok::<_, crate::sm::wire::WireError>(SnapshotMeta {
                last_index,
                last_term,
                membership,
            })
        })();
        r.meta =
            parse.map_err(|e| r.corrupt(start + e.offset as u64, format!("meta: {}", e.what)))?;
        r.buf = body;
        Ok(r)
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, offset: u64, what: String) -> SnapshotError {
        SnapshotError::Corrupt {
            path: self.path.clone(),
            offset,
            what,
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), SnapshotError> {
        if self.len - self.offset < buf.len() as u64 {
            return Err(self.corrupt(
                self.offset,
                format!(
                    "truncated {what}: need {} bytes, file ends after {}",
                    buf.len(),
                    self.len - self.offset
                ),
            ));
        }
        self.input
            .read_exact(buf)
            .map_err(io_err(&self.path, "read snapshot"))?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn read_body(&mut self, len: u64, what: &str) -> Result<Vec<u8>, SnapshotError> {
        if len > MAX_RECORD_BYTES || len > self.len - self.offset {
            return Err(self.corrupt(
                self.offset - 4,
                format!(
                    "{what} length {len} exceeds the {} bytes left in the file",
                    self.len - self.offset
                ),
            ));
        }
        let mut body = std::mem::take(&mut self.buf);
        body.resize(len as usize, 0);
        self.read_exact(&mut body, what)?;
        Ok(body)
    }

    /// The next record; `None` once the trailer has been verified.
    pub fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SnapshotError> {
        if self.done {
            return Ok(None);
        }
        let at = self.offset;
        let mut tag = [0u8; 1];
        self.read_exact(&mut tag, "record tag")?;
        match tag[0] {
            TAG_TRAILER => {
                let mut cnt = [0u8; 8];
                self.read_exact(&mut cnt, "trailer record count")?;
                let expect_crc = self.crc;
                let crc_at = self.offset;
                let mut crc = [0u8; 4];
                self.read_exact(&mut crc, "trailer checksum")?;
                let crc = u32::from_le_bytes(crc);
                if crc != expect_crc {
                    return Err(self.corrupt(
                        crc_at,
                        format!("checksum mismatch: trailer says {crc:#010x}, contents hash to {expect_crc:#010x}"),
                    ));
                }
                let count = u64::from_le_bytes(cnt);
                if count != self.count {
                    return Err(self.corrupt(
                        at + 1,
                        format!("trailer counts {count} records, file holds {}", self.count),
                    ));
                }
                if self.offset != self.len {
                    return Err(self.corrupt(
                        self.offset,
                        format!(
                            "{} unexpected bytes after the trailer",
                            self.len - self.offset
                        ),
                    ));
                }
                self.done = true;
                Ok(None)
            }
            TAG_APP => {
                let mut l = [0u8; 4];
                self.read_exact(&mut l, "record length")?;
                let body = self.read_body(u32::from_le_bytes(l) as u64, "record")?;
                self.count += 1;
                Ok(Some(SnapshotRecord::App(bytes::Bytes::from(body))))
            }
            TAG_KV | TAG_LEASE | TAG_CLIENT | TAG_CLIENT_V2 | TAG_CLIENT_V1 | TAG_AUTH => {
                let mut l = [0u8; 4];
                self.read_exact(&mut l, "record length")?;
                let body_at = self.offset;
                let body = self.read_body(u32::from_le_bytes(l) as u64, "record")?;
                let mut rd = Reader::new(&body);
                let rec = if tag[0] == TAG_AUTH {
                    Ok(SnapshotRecord::Auth(rd.rest().to_vec()))
                } else if tag[0] == TAG_KV {
                    decode_kv(&mut rd).map(SnapshotRecord::Kv)
                } else if tag[0] == TAG_LEASE {
                    decode_lease(&mut rd).map(SnapshotRecord::Lease)
                } else {
                    let (format, user) = match tag[0] {
                        TAG_CLIENT => (SessionFormat::V3, rd.string("user")),
                        TAG_CLIENT_V2 => (SessionFormat::V2, Ok(String::new())),
                        _ => (SessionFormat::V1, Ok(String::new())),
                    };
                    user.and_then(|user| {
                        rd.u64("client_id").and_then(|client_id| {
                            decode_session(&mut rd, format).map(|session| SnapshotRecord::Client {
                                key: SessionKey::new(user, client_id),
                                session,
                            })
                        })
                    })
                }
                .and_then(|r| rd.finish("record").map(|_| r));
                let rec = rec.map_err(|e| {
                    self.corrupt(body_at + e.offset as u64, format!("record: {}", e.what))
                });
                self.buf = body;
                self.count += 1;
                rec.map(Some)
            }
            other => Err(self.corrupt(at, format!("unknown record tag {other:#04x}"))),
        }
    }
}

/// Reads the whole file, checking every record and the checksum; returns
/// its meta.
pub fn verify_snapshot_file(path: &Path) -> Result<SnapshotMeta, SnapshotError> {
    let mut r = SnapshotFileReader::open(path)?;
    while r.next_record()?.is_some() {}
    Ok(r.meta().clone())
}
