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
//!   completes the waiting proposals and feeds the watch hub;
//! - lease and eventual reads are served off the loop from published atomics.
//!
//! Start a node with [`start`]; talk to it through [`NodeHandle`].

//! Layout: [`handle`] holds [`NodeHandle`]; its methods are `impl NodeHandle`
//! blocks, one file per request path (`lifecycle`, `cluster_info`, `writes`,
//! `reads`, `watches`, `admin`, with `validate`). The state they share with
//! the threads is `shared` (plus the loop's input queue, `input`); the
//! threads are `core_loop`, `wal_thread`, `apply`; `node` starts them. The
//! modules import each other without a circle (`tests/module_graph.rs`).

mod addr;
mod admin;
pub(crate) mod app_ops;
mod apply;
mod auth_changes;
mod backup;
mod cluster_info;
mod core_loop;
mod failure;
pub mod handle;
/// The host contract's order of effects, shared by the consensus loop and
/// the simulator (`tests/`); not a user API.
#[doc(hidden)]
pub mod host;
mod inbox;
pub(crate) mod input;
pub(crate) mod lease_clock;
mod leases;
mod lifecycle;
mod node;
mod observe;
pub(crate) mod quota;
pub(crate) mod ranges;
pub(crate) mod read_rounds;
pub(crate) mod reads;
mod recovery;
pub(crate) mod shared;
mod txn;
pub(crate) mod types;
pub(crate) mod validate;
mod wal_thread;
pub(crate) mod watch_hub;
mod watches;
mod writes;

#[cfg(test)]
mod coord_tests;

pub use addr::MemberAddr;
pub use app_ops::AppOutcome;
pub use auth_changes::AuthChangeOutcome;
pub use backup::BackupSnapshot;
pub use failure::NodeFailure;
pub use handle::{
    Alarm, DeleteOutcome, Header, NodeHandle, NodeRole, NodeStatus, ProposeOutcome, WatchStream,
    WriteId,
};
pub use node::{
    start, start_with, start_with_state_machine, start_with_storage, LogStoreFactory, NodeStorage,
    StartError, StateMachineFactory,
};
pub use recovery::{force_new_cluster, restore_backup, RecoveryError};
