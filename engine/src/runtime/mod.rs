//! The node runtime: the only place with threads, channels and timers.
//!
//! It drives the pure consensus core (`d-engine-core`) and executes each
//! `Ready` in the order the host contract (`docs/raft-core.md`,
//! `docs/runtime.md`) requires:
//!
//! - the **core loop** (one dedicated thread) drains a bounded input queue,
//!   coalesces every waiting proposal into one `propose` batch, ticks the
//!   core, persists a changed term/vote synchronously, hands new entries to
//!   the WAL thread and then sends messages (replication runs in parallel
//!   with the leader's own fsync);
//! - the **WAL thread** appends everything pending, issues ONE fdatasync
//!   (group commit) and reports `log_persisted`;
//! - the **apply thread** applies committed entries to the state machine,
//!   completes the waiting proposals and reads, and feeds the watch hub;
//! - lease and eventual reads are served off the loop from published atomics.
//!
//! Start a node with [`start`]; talk to it through [`NodeHandle`].

mod addr;
mod apply;
mod core_loop;
mod failure;
pub mod handle;
mod inbox;
mod node;
pub(crate) mod quota;
pub(crate) mod shared;
mod wal_thread;
pub(crate) mod watch_hub;

pub use addr::MemberAddr;
pub use failure::NodeFailure;
pub use handle::{
    Alarm, DeleteOutcome, Header, NodeHandle, NodeRole, NodeStatus, ProposeOutcome, ScanOutcome,
    WatchStream, WriteId,
};
pub use node::{start, StartError};
