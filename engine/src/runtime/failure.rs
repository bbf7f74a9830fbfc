//! Why a node could not start or stopped serving: typed, with the storage
//! error that caused it kept as its source (each storage error names the
//! file and what to do). Converted to the wire's `Error` once, at the edge.

use d_engine_storage::data_dir::DataDirError;
use d_engine_storage::hard_state::HardStateError;
use d_engine_storage::sm::SmError;
use d_engine_storage::snapshot::SnapshotError;
use d_engine_storage::wal::WalError;

/// A failure of the node's storage or of its own threads. Once a running
/// node reports one it is failed: every waiting and later request gets
/// `Error::Failed` carrying this text.
#[derive(Debug, thiserror::Error)]
pub enum NodeFailure {
    #[error("WAL: {0}")]
    Wal(#[from] WalError),
    #[error("hard state: {0}")]
    HardState(#[from] HardStateError),
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("state machine: {0}")]
    StateMachine(#[from] SmError),
    #[error("data directory: {0}")]
    DataDir(#[from] DataDirError),
    /// An I/O failure outside the typed stores; `context` says what was
    /// being done and on which path.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A runtime thread ended unexpectedly (panic or closed channel).
    #[error("{0}")]
    Thread(String),
    /// The host contract was broken (for example the core asked to install
    /// a snapshot that was never staged): a bug, never a disk problem.
    #[error("{0}")]
    HostContract(String),
}

impl NodeFailure {
    /// An I/O failure with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NodeFailure::Io {
            context: context.into(),
            source,
        }
    }
}
