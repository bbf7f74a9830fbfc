//! Application state machines: replicate your own state, not key-value
//! pairs.
//!
//! Implement [`Application`] (your command, output and query types, a
//! deterministic `apply`, a point-in-time snapshot writer and a reader),
//! then start a node that runs it with [`AppEngine::start`] (or
//! [`crate::EngineBuilder::start_app`]). The engine keeps everything that is
//! hard: ordering and batching of commands through the Raft log,
//! exactly-once application of retried proposals (write ids), snapshot
//! scheduling and files, log compaction, restart from the latest snapshot
//! plus the log, and snapshot transfer to followers that fell behind.
//!
//! ```no_run
//! use d_engine_node::app::{AppEngine, AppError, Application, Applying, Consistency};
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Application for Counter {
//!     type Command = u64; // add this much
//!     type Output = u64; // the new total
//!     type Query = ();
//!     type QueryOutput = u64;
//!     fn apply(&mut self, batch: Vec<Applying<u64>>) -> Result<Vec<u64>, AppError> {
//!         Ok(batch.into_iter().map(|a| { self.0 += a.command; self.0 }).collect())
//!     }
//!     fn query(&self, _: &()) -> u64 { self.0 }
//!     fn snapshot(&self) -> Box<dyn d_engine_node::app::SnapshotImage> {
//!         Box::new(self.0.to_le_bytes().to_vec())
//!     }
//!     fn restore(&mut self, image: &mut dyn std::io::Read) -> Result<(), AppError> {
//!         let mut b = [0u8; 8];
//!         image.read_exact(&mut b).map_err(|e| AppError::new(format!("counter image: {e}")))?;
//!         self.0 = u64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run(config: d_engine_node::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! let engine = AppEngine::start(config, Counter::default).await?;
//! engine.wait_ready(std::time::Duration::from_secs(5)).await?;
//! let total = engine.propose(5).await?; // on a follower: forwarded to the leader
//! assert_eq!(engine.query(&(), Consistency::Linearizable).await?, total);
//! # Ok(()) }
//! ```
//!
//! Contracts (also in `docs/embedding.md`):
//!
//! - [`Application::apply`] must be **deterministic**: the same commands in
//!   the same order give the same state and outputs on every replica (no
//!   clock, randomness, thread timing or unordered-map iteration that
//!   changes results). It runs on the engine's apply thread, one batch at a
//!   time, never concurrently with itself or with `restore`; it may block,
//!   but every write waits behind it.
//! - An `Err` or a panic from `apply` stops the node: it stops applying,
//!   reports failed in its status and health, and logs the entry index; it
//!   never skips the entry or applies later ones.
//! - [`Application::snapshot`] runs on the apply thread between batches and
//!   must capture the state as of that moment cheaply (clone, or share an
//!   immutable structure); the returned [`SnapshotImage`] is then written
//!   on another thread, straight into the snapshot file in 1 MiB records:
//!   the engine never holds the whole image, so write it piece by piece
//!   (never render it into one buffer first) and memory stays flat however
//!   large the state is.
//! - [`Application::restore`] is called on a **fresh** instance (from your
//!   factory) with the image as a stream read from the file as it goes; if
//!   it fails, or the file turns out damaged (its checksum is verified at
//!   its end, after `restore` returns), the snapshot is refused and the
//!   previous state stays in place.
//! - [`AppEngine::propose`] on a follower is forwarded to the leader under
//!   the same write id (applied once); see [`AppEngine`].
//! - Queries run concurrently with each other (never with `apply`, which
//!   holds the machine exclusively); they must not change the state.
//!
//! Layout: this file (the trait and the codecs), `machine.rs` (the
//! engine-side [`AppStateMachine`]: indexes, membership, write-id
//! deduplication, snapshot records), `image.rs` (snapshot images streamed
//! to and from the file), `engine.rs` ([`AppEngine`]: propose and query),
//! `conformance.rs` (checks an implementer runs on their machine).

mod conformance;
mod engine;
mod image;
mod machine;
mod sessions;

pub use conformance::{app_conformance, ConformanceCase};
pub use engine::AppEngine;
pub use machine::AppStateMachine;

pub use crate::runtime::handle::{Consistency, WriteId};

use std::fmt;

/// One command handed to [`Application::apply`], with the log position it
/// was committed at (the same on every replica: use it, never a clock, when
/// the state needs a notion of "when").
#[derive(Debug)]
pub struct Applying<C> {
    pub index: u64,
    pub term: u64,
    pub command: C,
}

/// An application failure: from `apply` (stops the node), `restore` (the
/// snapshot is refused) or a codec (a command that cannot be decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError(pub String);

impl AppError {
    pub fn new(msg: impl Into<String>) -> Self {
        AppError(msg.into())
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AppError {}

/// How a command or an output travels through the log: its bytes. Provided
/// for `Vec<u8>`, `String`, `u64`, `()` and [`Json`]`<T>` (any serde type).
/// `decode(encode(x))` must give `x` back, on every replica and version.
pub trait Codec: Sized + Send + 'static {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, AppError>;
}

impl Codec for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Self, AppError> {
        Ok(bytes.to_vec())
    }
}

impl Codec for String {
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, AppError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| AppError::new(format!("not UTF-8: {e}")))
    }
}

impl Codec for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_le_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<Self, AppError> {
        let b: [u8; 8] = bytes
            .try_into()
            .map_err(|_| AppError::new(format!("a u64 is 8 bytes, got {}", bytes.len())))?;
        Ok(u64::from_le_bytes(b))
    }
}

impl Codec for () {
    fn encode(&self) -> Vec<u8> {
        Vec::new()
    }
    fn decode(_: &[u8]) -> Result<Self, AppError> {
        Ok(())
    }
}

/// A serde type carried as JSON: `type Command = Json<MyCommand>;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T> Codec for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    fn encode(&self) -> Vec<u8> {
        // Serializing plain data to a Vec cannot fail; a type whose
        // Serialize impl fails is a programming error worth a loud stop.
        serde_json::to_vec(&self.0).expect("command or output serializes to JSON")
    }
    fn decode(bytes: &[u8]) -> Result<Self, AppError> {
        serde_json::from_slice(bytes)
            .map(Json)
            .map_err(|e| AppError::new(format!("JSON: {e}")))
    }
}

/// A point-in-time image of an application's state, taken by
/// [`Application::snapshot`] (on the apply thread) and written by
/// [`SnapshotImage::write_to`] on a thread of its own while applies go on.
///
/// `out` streams into the snapshot file: every 1 MiB written becomes one
/// checksummed record of the file (fsynced every few MiB, renamed into
/// place only when complete), and `write_to` blocks while the file writer
/// is a record behind. Write the state piece by piece (a `BufWriter` is
/// not needed): the engine holds at most a few MiB of it at any time.
/// `Vec<u8>` is an image of itself (fine for a small state; it is the
/// whole image in memory).
///
/// An `Err` or a panic fails this snapshot (the previous one stays; the
/// next is tried later). An `Err` from `out` means the snapshot was
/// abandoned (e.g. the node stops): return it.
pub trait SnapshotImage: Send {
    /// Writes the image; [`Application::restore`] reads these bytes back.
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()>;
}

impl SnapshotImage for Vec<u8> {
    fn write_to(self: Box<Self>, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        out.write_all(&self)
    }
}

/// An application's replicated state machine. See the module docs for the
/// contract.
pub trait Application: Send + Sync + 'static {
    /// What [`AppEngine::propose`] takes and the log carries.
    type Command: Codec;
    /// What applying one command returns to its proposer (remembered for
    /// retries with the same write id, so it travels as bytes too).
    type Output: Codec;
    /// A read-only question, answered locally (never logged).
    type Query: Send + Sync;
    /// The answer to a query (returned as is, never copied through bytes).
    type QueryOutput: Send;

    /// Applies committed commands in log order: one output per command, in
    /// the same order. Deterministic. An `Err` (or a panic) stops the node.
    fn apply(&mut self, batch: Vec<Applying<Self::Command>>)
        -> Result<Vec<Self::Output>, AppError>;

    /// Answers `query` from the current state. Must not change the state.
    fn query(&self, query: &Self::Query) -> Self::QueryOutput;

    /// Captures the current state (cheaply; see [`SnapshotImage`]): called
    /// on the apply thread, which waits for it; the image is written later.
    fn snapshot(&self) -> Box<dyn SnapshotImage>;

    /// Loads an image written by [`SnapshotImage::write_to`] into this
    /// fresh instance, reading `image` as a stream (it is read from the
    /// snapshot file record by record; reads may return fewer bytes than
    /// asked, and crossing a record is invisible). An `Err` (or a panic)
    /// refuses the snapshot. Bytes left unread are checked with the rest
    /// of the file and ignored. An I/O error from `image` is a damaged
    /// file: return it (the engine reports the file, not your reader).
    fn restore(&mut self, image: &mut dyn std::io::Read) -> Result<(), AppError>;

    /// The logical size of the state in bytes, counted by the storage quota
    /// (`storage.quota_bytes`); must be the same on every replica at the
    /// same applied index. Default 0 (the quota then counts nothing).
    fn data_bytes(&self) -> u64 {
        0
    }
}
