//! Why a node could not start or stopped serving: typed, with the storage
//! error that caused it kept as its source (each storage error names the
//! file and what to do). The runtime's threads report a [`NodeFailure`]
//! (`Input::Fatal`, the install and reset replies); it is turned into the
//! wire's `Error` once, by [`NodeFailure::to_error`].

use std::sync::Arc;

use d_engine_core::NodeId;
use d_engine_storage::data_dir::DataDirError;
use d_engine_storage::hard_state::HardStateError;
use d_engine_storage::layout::StateMachineOpenError;
use d_engine_storage::sm::SmError;
use d_engine_storage::snapshot::SnapshotError;
use d_engine_storage::wal::WalError;

use super::types::Error;

/// A failure of the node's storage or of its own threads. Once a running
/// node reports one it is failed: every waiting and later request gets
/// `Error::Storage` carrying this text (see [`NodeFailure::to_error`]).
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
    /// A failure with what was being done when it happened.
    #[error("{context}: {source}")]
    During {
        context: String,
        #[source]
        source: Box<NodeFailure>,
    },
    /// The stored state can be read but not used as it is (for example,
    /// the WAL does not continue where the snapshot ends); the text says
    /// why and what to do.
    #[error("{0}")]
    Inconsistent(String),
    /// A runtime thread ended unexpectedly (panic or closed channel).
    #[error("{0}")]
    Thread(String),
    /// The host contract was broken (for example the core asked to install
    /// a snapshot that was never staged): a bug, never a disk problem.
    #[error("{0}")]
    HostContract(String),
    /// One failure reported to more than one place (the thread that hit it
    /// stops the node with it and answers the step that was waiting).
    #[error(transparent)]
    Shared(Arc<NodeFailure>),
}

impl NodeFailure {
    /// An I/O failure with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        NodeFailure::Io {
            context: context.into(),
            source,
        }
    }

    /// `source`, with what was being done when it happened.
    pub fn during(context: impl Into<String>, source: impl Into<NodeFailure>) -> Self {
        NodeFailure::During {
            context: context.into(),
            source: Box::new(source.into()),
        }
    }

    /// The error every request gets once node `node` stopped on this
    /// failure: the one conversion to the wire's vocabulary.
    pub(crate) fn to_error(&self, node: NodeId) -> Error {
        Error::Storage(format!(
            "node {node} stopped after a storage failure: {self}"
        ))
    }
}

impl From<StateMachineOpenError> for NodeFailure {
    fn from(e: StateMachineOpenError) -> Self {
        match e {
            StateMachineOpenError::Memory(e) => {
                NodeFailure::during("memory backend, loading the latest snapshot", e)
            }
            StateMachineOpenError::Sled(e) => NodeFailure::StateMachine(e),
        }
    }
}

impl From<Arc<NodeFailure>> for NodeFailure {
    fn from(f: Arc<NodeFailure>) -> Self {
        NodeFailure::Shared(f)
    }
}
