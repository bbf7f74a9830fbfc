//! Conformance suites for the storage seams, for anyone implementing them
//! (the engine's own tests run the same functions on the built-in stores).
//!
//! - A log store ([`crate::wal::LogStore`], plugged in with
//!   `EngineBuilder::log_store`): [`run_log_store_conformance`] for the
//!   checks every store must pass, [`run_durable_log_store_conformance`]
//!   to also check what survives a close and reopen after every step.
//! - A key-value state machine ([`crate::sm::KvStateMachine`], plugged in
//!   with `EngineBuilder::state_machine`):
//!   [`run_state_machine_conformance`]. (An application's own machine is
//!   checked by `d_engine::app::app_conformance` instead.)
//!
//! Every check panics with a message naming the check and what broke;
//! call them from a `#[test]`:
//!
//! ```
//! use d_engine_storage::conformance::run_log_store_conformance;
//! use d_engine_storage::wal::MemLog;
//!
//! run_log_store_conformance(MemLog::new);
//! ```

use std::path::Path;

use crate::wal::LogStore;

pub use crate::sm::conformance::{Check as StateMachineCheck, Factory as StateMachineFactory};
pub use crate::wal::conformance::{Fresh, Harness as LogStoreHarness};

/// Runs every log-store check on stores made by `fresh` (each call: a new,
/// empty store whose first index is 1). Nothing is reopened; use
/// [`run_durable_log_store_conformance`] for a store that persists.
pub fn run_log_store_conformance<S: LogStore, F: FnMut() -> S>(fresh: F) {
    crate::wal::conformance::run(&mut Fresh(fresh))
}

/// Runs every log-store check with `harness`; when
/// [`LogStoreHarness::durable`] is true, each check also closes the store
/// and opens it again (as the engine does at a restart) and verifies that
/// every synced entry, `first_index` and `last_index` survived.
pub fn run_durable_log_store_conformance<H: LogStoreHarness>(harness: &mut H) {
    crate::wal::conformance::run(harness)
}

/// Runs every key-value state-machine check
/// ([`crate::sm::conformance::CHECKS`]); `open` opens a fresh, empty
/// machine in the directory it is given (a new subdirectory of `dir` per
/// check).
pub fn run_state_machine_conformance(open: StateMachineFactory<'_>, dir: &Path) {
    crate::sm::conformance::run_all(open, dir)
}
