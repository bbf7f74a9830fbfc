//! Snapshot images of application machines, streamed both ways (see
//! `machine.rs` for the record layout): [`AppSnapshotSource`] runs
//! [`SnapshotImage::write_to`] on a thread of its own into a [`ChunkSink`]
//! and hands the chunks to the snapshot builder; [`ImageReader`] feeds
//! `Application::restore` from the file record by record. Neither holds
//! more than a few chunks of an image.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use bytes::Bytes;
use d_engine_core::SnapshotMeta;
use d_engine_storage::sm::{SmError, SnapshotRecord, SnapshotSource};
use d_engine_storage::snapshot::priority::lower_this_thread_priority;
use d_engine_storage::snapshot::SnapshotFileReader;

use super::SnapshotImage;

/// Snapshot record kinds.
pub(super) const KIND_SESSIONS: u8 = 1;
pub(super) const KIND_DATA: u8 = 2;
/// Largest image chunk per snapshot record.
pub(super) const CHUNK_BYTES: usize = 1 << 20;

pub(super) fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

pub(super) fn kv_records(path: &Path) -> SmError {
    SmError::Corrupt(format!(
        "snapshot {} holds key-value records: this node runs an application state machine; \
         start it with the same state machine as the rest of the cluster",
        path.display()
    ))
}

/// The image of a snapshot file as a `Read`: its [`KIND_DATA`] records in
/// order, read from the file one at a time. A file problem is kept in
/// `failed` (and reported to the reader as an I/O error), so the install
/// names the file rather than blaming the application's reader.
pub(super) struct ImageReader<'a> {
    file: &'a mut SnapshotFileReader,
    path: &'a Path,
    chunk: Bytes,
    pub(super) failed: Option<SmError>,
    /// The trailer was read and the checksum verified.
    end: bool,
}

impl<'a> ImageReader<'a> {
    pub(super) fn new(file: &'a mut SnapshotFileReader, path: &'a Path) -> Self {
        ImageReader {
            file,
            path,
            chunk: Bytes::new(),
            failed: None,
            end: false,
        }
    }

    /// The next image chunk into `self.chunk`; false at the end of the file.
    fn next_chunk(&mut self) -> Result<bool, SmError> {
        match self.file.next_record()? {
            None => {
                self.end = true;
                Ok(false)
            }
            Some(SnapshotRecord::App(b)) if b.first() == Some(&KIND_DATA) => {
                self.chunk = b.slice(1..);
                Ok(true)
            }
            Some(SnapshotRecord::App(b)) => Err(SmError::Corrupt(format!(
                "snapshot {}: unexpected application record kind {:?} inside the image",
                self.path.display(),
                b.first()
            ))),
            Some(_) => Err(kv_records(self.path)),
        }
    }

    /// Reads what the application did not, to the verified end.
    pub(super) fn drain(&mut self) -> Result<(), SmError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        while !self.end {
            self.next_chunk()?;
        }
        Ok(())
    }
}

impl std::io::Read for ImageReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            if self.end || out.is_empty() {
                return Ok(0);
            }
            if let Some(e) = &self.failed {
                return Err(std::io::Error::other(e.to_string()));
            }
            match self.next_chunk() {
                Ok(_) => {}
                Err(e) => {
                    let io = std::io::Error::other(e.to_string());
                    self.failed = Some(e);
                    return Err(io);
                }
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// What the image writer thread hands the snapshot builder.
type Chunk = Result<Bytes, String>;

pub(super) struct AppSnapshotSource {
    meta: SnapshotMeta,
    sessions: Option<Bytes>,
    image: Option<Box<dyn SnapshotImage>>,
    /// Chunks from the image writer thread, once started.
    chunks: Option<Receiver<Chunk>>,
}

impl AppSnapshotSource {
    pub(super) fn new(meta: SnapshotMeta, sessions: Bytes, image: Box<dyn SnapshotImage>) -> Self {
        AppSnapshotSource {
            meta,
            sessions: Some(sessions),
            image: Some(image),
            chunks: None,
        }
    }

    /// Runs `write_to` on its own thread into a [`ChunkSink`].
    fn start_writer(&mut self, image: Box<dyn SnapshotImage>) -> Result<(), SmError> {
        let (tx, rx) = sync_channel::<Chunk>(1);
        let index = self.meta.last_index;
        std::thread::Builder::new()
            .name("app-snapshot-image".into())
            .spawn(move || {
                // Background work, like the builder that reads its chunks.
                let _ = lower_this_thread_priority();
                let mut sink = ChunkSink {
                    buf: Vec::new(),
                    tx: &tx,
                };
                let res = catch_unwind(AssertUnwindSafe(|| {
                    image.write_to(&mut sink)?;
                    sink.send()
                }));
                let err = match res {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => format!("writing the snapshot image at index {index}: {e}"),
                    Err(p) => format!(
                        "writing the snapshot image at index {index} panicked: {}",
                        panic_text(p)
                    ),
                };
                // Fails only when the snapshot was abandoned meanwhile.
                let _ = tx.send(Err(err));
            })
            .map_err(SmError::Io)?;
        self.chunks = Some(rx);
        Ok(())
    }
}

/// The `Write` an image is written into: cuts it into [`KIND_DATA`]
/// records of at most [`CHUNK_BYTES`] and sends each as soon as it is
/// full (blocking while the builder is one chunk behind).
struct ChunkSink<'a> {
    /// `KIND_DATA` then up to `CHUNK_BYTES` of image; empty between chunks.
    buf: Vec<u8>,
    tx: &'a SyncSender<Chunk>,
}

impl ChunkSink<'_> {
    /// Sends the chunk being filled (if it holds any image bytes).
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.len() <= 1 {
            return Ok(());
        }
        let full = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(Ok(full)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the snapshot build stopped reading the image",
            )
        })
    }
}

impl std::io::Write for ChunkSink<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            self.buf.reserve_exact(CHUNK_BYTES + 1);
            self.buf.push(KIND_DATA);
        }
        let n = data.len().min(CHUNK_BYTES + 1 - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK_BYTES + 1 {
            self.send()?;
        }
        Ok(n)
    }

    /// A no-op: chunks go out when full (flushing an image often would
    /// otherwise cut it into tiny records).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SnapshotSource for AppSnapshotSource {
    fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SmError> {
        if let Some(s) = self.sessions.take() {
            return Ok(Some(SnapshotRecord::App(s)));
        }
        if let Some(image) = self.image.take() {
            self.start_writer(image)?;
        }
        let Some(rx) = &self.chunks else {
            return Ok(None);
        };
        match rx.recv() {
            Ok(Ok(chunk)) => Ok(Some(SnapshotRecord::App(chunk))),
            Ok(Err(e)) => {
                self.chunks = None;
                Err(SmError::Application(e))
            }
            // The writer finished and closed the channel.
            Err(_) => {
                self.chunks = None;
                Ok(None)
            }
        }
    }
}
