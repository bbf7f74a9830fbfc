//! Workloads: concurrent clients issuing operations during faults, each
//! recording what it did and checking its own invariant at the end.
//!
//! Every workload runs until `stop` is set, then [`Workload::check`]
//! returns the anomalies found (empty = the invariant held).

pub mod bank;
pub mod leases;
pub mod lock;
pub mod register;
pub mod renewals;
pub mod set;
pub mod txn_bank;
pub mod watch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use d_engine_client::Error;

use super::history::Outcome;

/// What every workload shares: the client, the run clock, the stop flag
/// and a source of unique values.
#[derive(Clone)]
pub struct Ctx {
    pub client: d_engine_client::Client,
    pub clock: super::history::Clock,
    pub stop: Arc<AtomicBool>,
    pub unique: Arc<AtomicU64>,
}

impl Ctx {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// A value never handed out before in this run (>= 1).
    pub fn next_value(&self) -> u64 {
        self.unique.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The outcome of a failed write: only a request refused before it was
/// sent (invalid argument) certainly did not happen; anything else may
/// have been applied by an earlier attempt of the client's retries.
pub fn write_failure(e: &Error) -> Outcome {
    match e {
        Error::InvalidArgument(_) => Outcome::Fail,
        _ => Outcome::Info,
    }
}

/// Parses a stored decimal value.
pub fn parse(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Ops by outcome: [ok, fail, info].
pub type Counts = [u64; 3];
