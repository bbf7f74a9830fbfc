//! Test support shared by the cross-crate tests.
//!
//! [`sim`] is the seeded, deterministic whole-cluster simulator for the Raft
//! core (`d-engine-core`); see `docs/simulation.md`.

/// Multi-process clusters of real `d-engine-server` processes (net).
pub mod cluster;
/// Fault injection on real processes with history checking.
pub mod fault;
pub mod sim;
