//! # d-engine-core
//!
//! The Raft consensus core of d-engine as a pure, deterministic state machine.
//! It performs no I/O: it reads no clock (time arrives as [`RaftNode::tick`]),
//! draws no OS randomness (a seed arrives in [`Config`]), touches no file and
//! opens no socket. A host feeds it inputs and executes the [`Ready`] it hands
//! back, following the contract in `docs/raft-core.md`.

mod config;
mod election;
mod guard;
mod log;
mod membership;
mod node;
mod progress;
mod read;
mod ready;
mod replication;
mod rng;
mod snapshot;
mod types;

pub use config::{Config, ConfigError};
pub use membership::membership_after;
pub use node::{RaftNode, RestoreState};
pub use ready::{ReadReady, ReadRefused, Ready};
pub use types::*;

#[cfg(test)]
mod tests;
