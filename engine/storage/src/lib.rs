//! Durable storage for a d-engine node.
//!
//! - [`wal`]: the Raft log as segmented, checksummed, group-committed files.
//! - [`hard_state`]: term / vote / commit, replaced atomically.
//! - [`sm`]: the key-value state machine (sled) behind the `StateMachine` trait.
//! - [`snapshot`]: point-in-time snapshot files, chunked transfer and atomic install.

pub mod hard_state;
pub mod sm;
pub mod snapshot;
pub mod wal;
