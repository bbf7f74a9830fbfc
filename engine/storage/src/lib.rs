//! Durable storage for a d-engine node.
//!
//! - [`data_dir`]: the node's data directory: identity check and exclusive lock.
//! - [`layout`]: every path of the data directory and the call that opens
//!   each part (snapshot store, staging area, state machine of a backend).
//! - [`wal`]: the Raft log as segmented, checksummed, group-committed files,
//!   behind the public [`wal::LogStore`] trait.
//! - [`hard_state`]: term / vote / commit, replaced atomically.
//! - [`auth`]: the replicated users, roles and tokens, and their changes.
//! - [`command`]: application commands carried in log entries, and their limits.
//! - [`sm`]: the key-value state machine (sled) behind the `StateMachine` trait.
//! - [`rebuild`]: offline rewrites of a data dir: restore from a backup,
//!   force-new-cluster.
//! - [`snapshot`]: point-in-time snapshot files, chunked transfer and atomic install.
//! - [`conformance`]: the suites an implementer of [`wal::LogStore`] or of
//!   a key-value [`sm::StateMachine`] runs against their store.

pub mod auth;
pub mod command;
pub mod conformance;
pub mod data_dir;
pub mod hard_state;
pub mod layout;
pub mod rebuild;
pub mod sm;
pub mod snapshot;
pub mod wal;
