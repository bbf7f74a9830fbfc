//! The Raft log's write-ahead log.
//!
//! - [`Wal`]: segmented, checksummed, append-only files with group commit
//!   (many entries, one `fdatasync`), suffix truncation, whole-segment
//!   compaction, and recovery that cuts a torn tail but refuses to start on
//!   any other damage.
//! - [`SyncMode`] / [`WalOptions`]: durability mode and sizing.
//! - [`LogStore`]: the contract the node runtime drives the log through
//!   (the public seam: an embedder may plug in its own store, see
//!   `docs/embedding.md`), also implemented in memory by [`MemLog`];
//!   [`conformance`] checks any implementation against it.
//!
//! Host usage (one dedicated blocking thread owns the `Wal`):
//! ```no_run
//! use d_engine_storage::wal::{LogStore, Wal, WalOptions};
//! # fn main() -> Result<(), d_engine_storage::wal::WalError> {
//! let (mut wal, recovered) = Wal::open("/var/lib/dengine/wal", WalOptions::default())?;
//! // feed recovered.entries to the core (RestoreState::entries), then per Ready:
//! // wal.append(&ready.entries)?;  ... more batches ...
//! wal.sync()?; // one fdatasync for all of them
//! if let (i, Some(t)) = (wal.last_index(), wal.last_term()) {
//!     // node.log_persisted(i, t);
//!     let _ = (i, t);
//! }
//! # let _ = recovered; Ok(()) }
//! ```

pub mod conformance;
mod error;
mod mem;
mod options;
pub mod record;
mod recovery;
mod segmented;
mod store;

pub use error::{Result, WalError, RESTORE_ADVICE};
pub use mem::MemLog;
pub use options::{SyncMode, WalOptions, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
pub use segmented::{segment_file_name, sync_dir, Recovered, TornTail, Wal};
pub use store::{read_all, LogStore, LogStoreContext};
