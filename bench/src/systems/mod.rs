//! The systems under test: d-engine embedded, d-engine standalone, etcd.

pub mod embedded;
pub mod etcd;
pub mod procs;
pub mod standalone;

use crate::workload::{Consistency, OpError};

/// Maps a d-engine client error to the benchmark's error classes.
pub fn dengine_error(e: d_engine_client::Error) -> OpError {
    match e {
        d_engine_client::Error::Timeout(m) => OpError::Timeout(m),
        other => OpError::Other(other.to_string()),
    }
}

/// The d-engine consistency for a benchmark consistency.
pub fn dengine_consistency(c: Consistency) -> d_engine_client::Consistency {
    match c {
        Consistency::Linearizable => d_engine_client::Consistency::Linearizable,
        Consistency::Lease => d_engine_client::Consistency::Lease,
        Consistency::Eventual => d_engine_client::Consistency::Eventual,
    }
}
