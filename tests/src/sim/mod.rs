//! A seeded, deterministic whole-cluster simulator for the Raft core.
//!
//! One `u64` seed drives everything: cluster size, clock rates, network
//! faults, disk latencies, crashes, membership changes, leadership transfers
//! and the client workload. The real [`d_engine_core::RaftNode`] runs inside
//! simulated hosts that follow the host contract; checkers inspect the cluster
//! after every event. See `docs/simulation.md`.

pub mod checkers;
pub mod cluster;
pub mod history;
pub mod host;
pub mod kv;
pub mod lease_clock;
pub mod rng;
pub mod storage;

pub use cluster::{run, RunReport, SimOptions, Stats};
