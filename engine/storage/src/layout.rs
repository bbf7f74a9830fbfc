//! Every path of a data directory, and the one call that opens each part.
//!
//! ```text
//! <data_dir>/
//!   IDENTITY, LOCK       crate::data_dir (who the dir belongs to; one process at a time)
//!   hardstate            crate::hard_state
//!   wal/                 crate::wal
//!   snapshots/           crate::snapshot::store (+ quarantine/)
//!   snapshot-staging/    crate::snapshot::transfer (inbound transfers from a leader)
//!   sm/                  crate::sm::sled_sm (backend `sled` only)
//!   log-store/           an embedder's own log store, instead of wal/ (`EngineBuilder::log_store`)
//! ```
//!
//! Contract: a host never joins these names itself. It opens a
//! [`DataDir`] and asks it for each part ([`DataDir::wal_dir`],
//! [`DataDir::open_snapshot_store`], [`DataDir::open_snapshot_staging`],
//! [`DataDir::open_state_machine`]); every directory is created 0700 and
//! every file 0600 ([`crate::data_dir`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data_dir::{DataDir, DataDirError};
use crate::sm::StateMachine;
use crate::sm::{open_or_rebuild, MemStateMachine, OpenOutcome, SledOptions, SmError};
use crate::snapshot::{SnapshotError, SnapshotStaging, SnapshotStore};

/// `<data_dir>/wal`: the Raft log.
pub const WAL_DIR: &str = "wal";
/// `<data_dir>/snapshots`: complete snapshot files.
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// `<data_dir>/snapshot-staging`: inbound transfers, before installation.
pub const SNAPSHOT_STAGING_DIR: &str = "snapshot-staging";
/// `<data_dir>/sm`: the sled state machine.
pub const STATE_MACHINE_DIR: &str = "sm";
/// `<data_dir>/log-store`: the directory handed to an embedder's log store
/// (a node runs either the built-in WAL in `wal/` or its own store).
pub const LOG_STORE_DIR: &str = "log-store";

/// Where the state machine keeps its keys.
#[derive(Clone, Debug)]
pub enum StateMachineBackend {
    /// In RAM; rebuilt on start from the latest snapshot and the log.
    Memory,
    /// A sled database in `<data_dir>/sm`.
    Sled(SledOptions),
}

/// How [`DataDir::open_state_machine`] found the state machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateMachineOpened {
    /// Memory backend: loaded from the latest snapshot, or empty without one.
    Memory,
    /// Sled backend, as [`open_or_rebuild`] reports it.
    Sled(OpenOutcome),
}

/// A state machine ready for log replay from `sm.applied_index() + 1`.
pub struct OpenedStateMachine {
    pub sm: Arc<dyn StateMachine>,
    pub how: StateMachineOpened,
}

/// Why the state machine could not be opened, by backend.
#[derive(Debug)]
pub enum StateMachineOpenError {
    /// Loading the latest snapshot into memory failed.
    Memory(SmError),
    /// Opening (or rebuilding) the sled database failed.
    Sled(SmError),
}

/// True if `dir` exists and holds any entry.
fn non_empty(dir: &Path) -> Result<bool, DataDirError> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DataDirError::Io {
            op: "list directory",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

impl std::fmt::Display for StateMachineOpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StateMachineOpenError::Memory(e) => write!(
                f,
                "state machine (memory backend, loading the latest snapshot): {e}"
            ),
            StateMachineOpenError::Sled(e) => write!(f, "state machine: {e}"),
        }
    }
}

impl std::error::Error for StateMachineOpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StateMachineOpenError::Memory(e) | StateMachineOpenError::Sled(e) => Some(e),
        }
    }
}

impl DataDir {
    /// `<data_dir>/snapshots`.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.path().join(SNAPSHOTS_DIR)
    }

    /// `<data_dir>/snapshot-staging`.
    pub fn snapshot_staging_dir(&self) -> PathBuf {
        self.path().join(SNAPSHOT_STAGING_DIR)
    }

    /// `<data_dir>/sm` (used by the sled backend only).
    pub fn state_machine_dir(&self) -> PathBuf {
        self.path().join(STATE_MACHINE_DIR)
    }

    /// `<data_dir>/log-store`: the directory of an embedder's log store.
    pub fn log_store_dir(&self) -> PathBuf {
        self.path().join(LOG_STORE_DIR)
    }

    /// Before opening the built-in WAL: refuses a data dir whose log was
    /// kept by an embedder's store (`log-store/` exists: the engine
    /// creates it for every custom store, wherever the store keeps its
    /// data), since starting on an empty `wal/` would lose every entry it
    /// holds.
    pub fn check_builtin_log(&self) -> Result<(), DataDirError> {
        let dir = self.log_store_dir();
        if dir.exists() {
            return Err(DataDirError::InvalidArgument(format!(
                "{} holds the log of a custom log store (EngineBuilder::log_store); this node \
                 was started with the built-in WAL, which would start from an empty log and \
                 lose acknowledged entries: start it with the same log store as before",
                dir.display()
            )));
        }
        Ok(())
    }

    /// Before opening an embedder's log store: refuses a data dir whose
    /// log is in the built-in WAL (segments in `wal/`), then creates
    /// `log-store/` (`0700`) and returns it.
    pub fn prepare_custom_log(&self) -> Result<PathBuf, DataDirError> {
        let wal = self.wal_dir();
        if non_empty(&wal)? {
            return Err(DataDirError::InvalidArgument(format!(
                "{} holds this node's log in the built-in WAL; a custom log store \
                 (EngineBuilder::log_store) would start from an empty log and lose \
                 acknowledged entries: start the node without it, or give it a new data dir",
                wal.display()
            )));
        }
        let dir = self.log_store_dir();
        crate::data_dir::create_private_dir_all(&dir).map_err(|source| DataDirError::Io {
            op: "create directory",
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// Opens (creating) the snapshot store; removes abandoned builds.
    pub fn open_snapshot_store(&self) -> Result<SnapshotStore, SnapshotError> {
        SnapshotStore::open(self.path())
    }

    /// Creates the staging directory and deletes transfers that were staged
    /// but not installed before the last stop (nothing refers to them after
    /// a restart; the leader sends again). Partial transfers are kept for
    /// resume. A staged file that cannot be deleted does not stop the
    /// start: it is returned with the staging area, for the host to log.
    pub fn open_snapshot_staging(
        &self,
    ) -> Result<(SnapshotStaging, Vec<SnapshotError>), SnapshotError> {
        SnapshotStaging::open_on_start(&self.snapshot_staging_dir())
    }

    /// Opens the state machine of `backend`, rebuilt from `latest_snapshot`
    /// (the newest valid snapshot file) when it is behind it, missing or
    /// unreadable (sled), or loaded from it (memory). Call it only once the
    /// log is known to continue where that snapshot ends.
    pub fn open_state_machine(
        &self,
        backend: StateMachineBackend,
        latest_snapshot: Option<&Path>,
    ) -> Result<OpenedStateMachine, StateMachineOpenError> {
        match backend {
            StateMachineBackend::Sled(opts) => {
                let opened = open_or_rebuild(&self.state_machine_dir(), opts, latest_snapshot)
                    .map_err(StateMachineOpenError::Sled)?;
                Ok(OpenedStateMachine {
                    sm: Arc::new(opened.sm),
                    how: StateMachineOpened::Sled(opened.outcome),
                })
            }
            StateMachineBackend::Memory => {
                let sm = match latest_snapshot {
                    Some(p) => MemStateMachine::from_snapshot(p),
                    None => Ok(MemStateMachine::new()),
                }
                .map_err(StateMachineOpenError::Memory)?;
                Ok(OpenedStateMachine {
                    sm: Arc::new(sm),
                    how: StateMachineOpened::Memory,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sm::conformance as c;

    #[test]
    fn every_part_lives_under_the_data_dir() {
        let root = tempfile::tempdir().unwrap();
        let d = DataDir::open(root.path(), 1, "c").unwrap();
        assert_eq!(d.wal_dir(), root.path().join("wal"));
        assert_eq!(d.snapshots_dir(), root.path().join("snapshots"));
        assert_eq!(d.open_snapshot_store().unwrap().dir(), d.snapshots_dir());
        let (staging, not_removed) = d.open_snapshot_staging().unwrap();
        assert!(not_removed.is_empty());
        assert_eq!(staging.dir(), root.path().join("snapshot-staging"));
        assert!(staging.dir().is_dir());
    }

    #[test]
    fn both_backends_open_from_the_latest_snapshot() {
        let root = tempfile::tempdir().unwrap();
        let d = DataDir::open(root.path(), 1, "c").unwrap();
        let source = MemStateMachine::new();
        c::varied_history(&source, 1, 30);
        let store = d.open_snapshot_store().unwrap();
        let info = store
            .create(&mut *source.begin_snapshot().unwrap())
            .unwrap();
        for backend in [
            StateMachineBackend::Memory,
            StateMachineBackend::Sled(SledOptions::default()),
        ] {
            let opened = d
                .open_state_machine(backend.clone(), Some(&info.path))
                .unwrap();
            assert_eq!(opened.sm.applied_index(), 30, "{backend:?}");
        }
        assert!(d.state_machine_dir().join("CURRENT").exists());
        let empty = d
            .open_state_machine(StateMachineBackend::Memory, None)
            .unwrap();
        assert_eq!(empty.how, StateMachineOpened::Memory);
        assert_eq!(empty.sm.applied_index(), 0);
        let e = d
            .open_state_machine(
                StateMachineBackend::Memory,
                Some(&root.path().join("missing.snap")),
            )
            .err()
            .unwrap();
        assert!(
            e.to_string().starts_with("state machine (memory backend"),
            "{e}"
        );
    }
}
