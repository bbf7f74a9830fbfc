//! Data directories rewritten offline, while no node runs on them:
//!
//! - [`restore_backup`]: a backup (a snapshot file taken from a live member
//!   with `Maintenance.Snapshot`) becomes the data directory of a node of a
//!   **new** cluster (new cluster id, the members the operator names).
//! - [`force_sole_voter`]: a survivor of a cluster that lost its majority
//!   for good becomes the only voter of its configuration (force-new-cluster).
//!
//! Both refuse bad input before writing anything and say what to do.
//!
//! # Restore
//! The backup is verified completely first (magic, format version, every
//! record, record count, CRC32C trailer). The target must not exist or be
//! an empty directory. The new directory holds: `IDENTITY` (the given node
//! and cluster id), a snapshot at the backup's index and term whose records
//! are the backup's (key-values with their revisions, leases, client
//! sessions) and whose membership is the given one, a hard state of the
//! backup's term with the commit at the backup's index, and an empty WAL
//! whose next index is the backup's index + 1. On start the node loads the
//! snapshot like one received from a leader, so every key is served with the
//! revisions it had in the backup and new writes get revisions above it. If
//! building fails half way, everything it created is removed again.
//!
//! # Force-new-cluster
//! The survivor's own log is kept whole (entries past its last known
//! commit too: the commit index is not made durable on every change, so
//! cutting there could drop acknowledged writes; an entry that was never
//! committed was never acknowledged, so committing it now breaks no
//! promise). After the last entry, config entries are appended in its
//! current term that promote it (if it was a learner) and remove every
//! other member, and made durable. A config entry takes effect when it is
//! appended, so on its next start the node is the only voter, elects itself
//! and commits the whole log. Other members' data dirs must never be
//! started again with their old contents (wipe them and add them back as
//! learners).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use d_engine_core::{
    membership_after, ConfChange, Entry, EntryPayload, HardState, Index, MemberRole, Membership,
    NodeId, SnapshotMeta,
};

use crate::data_dir::DataDir;
use crate::hard_state::HardStateStore;
use crate::sm::{SmError, SnapshotRecord, SnapshotSource};
use crate::snapshot::{SnapshotError, SnapshotFileReader};
use crate::wal::{LogStore, Wal, WalOptions};

/// Why a data directory could not be rebuilt. Nothing was changed unless
/// the variant says so.
#[derive(Debug)]
pub enum RebuildError {
    /// The backup file is missing, unreadable, damaged, foreign or of an
    /// unsupported format version.
    BadBackup { path: PathBuf, detail: String },
    /// The target data directory exists and holds files.
    NotEmpty { path: PathBuf, entries: Vec<String> },
    /// The target exists and is not a directory.
    NotADirectory { path: PathBuf },
    /// The node is not a member of the configuration it would have.
    NotAMember {
        node_id: NodeId,
        members: Vec<NodeId>,
        hint: &'static str,
    },
    /// Opening or writing the data directory failed (after a failed
    /// restore, what it had created was removed again).
    Storage { what: &'static str, detail: String },
}

impl std::fmt::Display for RebuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RebuildError::BadBackup { path, detail } => write!(
                f,
                "{} is not a usable d-engine backup: {detail}. Nothing was written. Check that \
                 you gave the right file, or take a new backup from a live member \
                 (`dengine snapshot save FILE`)",
                path.display()
            ),
            RebuildError::NotEmpty { path, entries } => write!(
                f,
                "data dir {} is not empty (it holds {}): restore only builds the data \
                 directory of a new node and never overwrites one. Nothing was changed. Give \
                 an empty or non-existent --data-dir, or move the old directory aside first",
                path.display(),
                entries.join(", ")
            ),
            RebuildError::NotADirectory { path } => write!(
                f,
                "{} exists and is not a directory; give an empty or non-existent --data-dir",
                path.display()
            ),
            RebuildError::NotAMember {
                node_id,
                members,
                hint,
            } => write!(
                f,
                "node {node_id} is not among the members {members:?}; {hint}. Nothing was \
                 changed"
            ),
            RebuildError::Storage { what, detail } => write!(f, "{what}: {detail}"),
        }
    }
}

impl std::error::Error for RebuildError {}

fn storage<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> RebuildError {
    move |e| RebuildError::Storage {
        what,
        detail: e.to_string(),
    }
}

fn bad_backup(path: &Path, e: SnapshotError) -> RebuildError {
    let detail = match e {
        SnapshotError::Corrupt { offset, what, .. } => {
            format!("the file is damaged or not a snapshot (at byte offset {offset}: {what})")
        }
        SnapshotError::Io {
            context, source, ..
        } => format!("cannot read it ({context}: {source})"),
    };
    RebuildError::BadBackup {
        path: path.to_path_buf(),
        detail,
    }
}

/// Verifies the backup at `path` completely (every record, count and
/// checksum) and returns its meta (index = the backup's revision, term and
/// the membership of the cluster it came from).
pub fn verify_backup(path: &Path) -> Result<SnapshotMeta, RebuildError> {
    crate::snapshot::verify_snapshot_file(path).map_err(|e| bad_backup(path, e))
}

/// Where and as whom [`restore_backup`] builds a data directory.
#[derive(Clone, Debug)]
pub struct RestoreTarget {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    /// The new cluster's id (every node of the new cluster uses the same).
    pub cluster_id: String,
    /// The new cluster's members (`node_id` must be a voter among them).
    pub membership: Membership,
    /// Options of the WAL the node will open (segment size).
    pub wal: WalOptions,
}

/// The target must not exist, or be an empty directory.
fn check_target_empty(path: &Path) -> Result<bool, RebuildError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(storage("inspecting the data dir")(format!(
            "{}: {e}",
            path.display()
        ))),
        Ok(m) if !m.is_dir() => Err(RebuildError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Ok(_) => {
            let mut entries: Vec<String> = fs::read_dir(path)
                .map_err(|e| storage("listing the data dir")(format!("{}: {e}", path.display())))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if entries.is_empty() {
                return Ok(true);
            }
            entries.sort();
            if entries.len() > 5 {
                let more = entries.len() - 5;
                entries.truncate(5);
                entries.push(format!("and {more} more"));
            }
            Err(RebuildError::NotEmpty {
                path: path.to_path_buf(),
                entries,
            })
        }
    }
}

/// A snapshot file's records under a replaced meta (the new membership).
struct Remembered {
    reader: SnapshotFileReader,
    meta: SnapshotMeta,
}

impl SnapshotSource for Remembered {
    fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SmError> {
        Ok(self.reader.next_record()?)
    }
}

/// Builds the data directory of a node of a new cluster from the backup
/// at `backup` (see the module docs). Returns the backup's meta with the
/// new membership. Refuses, changing nothing, a backup that does not verify,
/// a target that exists and is not empty, and a node id that is not a
/// voter of `target.membership`.
pub fn restore_backup(backup: &Path, target: &RestoreTarget) -> Result<SnapshotMeta, RebuildError> {
    if !target.membership.is_voter(target.node_id) {
        return Err(RebuildError::NotAMember {
            node_id: target.node_id,
            members: target.membership.members.keys().copied().collect(),
            hint: "give --node-id one of the listed voters, or add this node to --peers",
        });
    }
    let meta = verify_backup(backup)?;
    let existed = check_target_empty(&target.data_dir)?;
    let result = build_restored(backup, &meta, target);
    if result.is_err() {
        // Leave the target as it was: absent, or empty.
        if existed {
            if let Ok(rd) = fs::read_dir(&target.data_dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
        } else {
            let _ = fs::remove_dir_all(&target.data_dir);
        }
    }
    result
}

fn build_restored(
    backup: &Path,
    meta: &SnapshotMeta,
    target: &RestoreTarget,
) -> Result<SnapshotMeta, RebuildError> {
    let dir = DataDir::open(&target.data_dir, target.node_id, &target.cluster_id)
        .map_err(storage("creating the data dir"))?;
    let reader = SnapshotFileReader::open(backup).map_err(|e| bad_backup(backup, e))?;
    let new_meta = SnapshotMeta {
        last_index: meta.last_index,
        last_term: meta.last_term,
        membership: target.membership.clone(),
    };
    let store = dir
        .open_snapshot_store()
        .map_err(storage("creating the snapshot directory"))?;
    let mut source = Remembered {
        reader,
        meta: new_meta.clone(),
    };
    store
        .create(&mut source)
        .map_err(storage("writing the restored snapshot"))?;
    let (mut hs, _) =
        HardStateStore::open(dir.hard_state_dir()).map_err(storage("creating the hard state"))?;
    hs.save(&HardState {
        term: meta.last_term,
        voted_for: None,
        commit: meta.last_index,
    })
    .map_err(storage("writing the hard state"))?;
    let (mut wal, _) =
        Wal::open(dir.wal_dir(), target.wal.clone()).map_err(storage("creating the WAL"))?;
    wal.reset(meta.last_index + 1)
        .map_err(storage("starting the WAL after the backup"))?;
    Ok(new_meta)
}

/// What [`force_sole_voter`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForcedSoleVoter {
    /// The configuration at the end of the survivor's log before.
    pub before: Membership,
    /// The configuration now: this node, the only voter.
    pub after: Membership,
    /// The config entries appended (empty: it already was the only voter
    /// with no other member, nothing was written).
    pub appended: Vec<Entry>,
    /// Index of the last entry of the log before the rewrite.
    pub last_index_before: Index,
}

/// Makes the node `node_id` whose data directory is `data_dir` the only
/// voter of its configuration, durably (see the module docs). `initial` is
/// the bootstrap membership (used when neither a snapshot nor the log
/// records one). Refuses a directory in use by a running node, of another
/// node or cluster, and a node that is not a member of its own latest
/// configuration. Running it again on a node that already is the only
/// member changes nothing.
pub fn force_sole_voter(
    data_dir: &Path,
    node_id: NodeId,
    cluster_id: &str,
    initial: &Membership,
    wal_opts: WalOptions,
) -> Result<ForcedSoleVoter, RebuildError> {
    if !data_dir.is_dir() {
        return Err(RebuildError::Storage {
            what: "force-new-cluster",
            detail: format!(
                "data dir {} does not exist: force-new-cluster restarts a survivor from its \
                 own data; point --data-dir at the survivor's data directory",
                data_dir.display()
            ),
        });
    }
    let dir =
        DataDir::open(data_dir, node_id, cluster_id).map_err(storage("opening the data dir"))?;
    let (mut hs_store, hs) =
        HardStateStore::open(dir.hard_state_dir()).map_err(storage("reading the hard state"))?;
    let snapshots = dir
        .open_snapshot_store()
        .map_err(storage("opening the snapshots"))?;
    let latest = snapshots
        .latest_valid()
        .map_err(storage("reading the snapshots"))?
        .latest
        .map(|i| i.meta);
    let (mut wal, recovered) =
        Wal::open(dir.wal_dir(), wal_opts).map_err(storage("opening the WAL"))?;
    let (snap_index, snap_term) = latest
        .as_ref()
        .map(|m| (m.last_index, m.last_term))
        .unwrap_or((0, 0));
    let mut before = match &latest {
        Some(m) if !m.membership.members.is_empty() => m.membership.clone(),
        _ => initial.clone(),
    };
    let mut last_index = snap_index;
    let mut last_term = snap_term;
    for e in recovered.entries.iter().filter(|e| e.index > snap_index) {
        if let EntryPayload::Config(c) = &e.payload {
            before = membership_after(&before, c);
        }
        last_index = e.index;
        last_term = e.term;
    }
    let Some(me) = before.members.get(&node_id) else {
        return Err(RebuildError::NotAMember {
            node_id,
            members: before.members.keys().copied().collect(),
            hint: "force-new-cluster must run on a survivor that is a member of the \
                   configuration in its own log",
        });
    };
    let mut changes = Vec::new();
    if me.role == MemberRole::Learner {
        changes.push(ConfChange::Promote { id: node_id });
    }
    for id in before.members.keys().copied().filter(|id| *id != node_id) {
        changes.push(ConfChange::Remove { id });
    }
    let mut after = before.clone();
    for c in &changes {
        after = membership_after(&after, c);
    }
    if changes.is_empty() {
        return Ok(ForcedSoleVoter {
            before,
            after,
            appended: Vec::new(),
            last_index_before: last_index,
        });
    }
    let hs = hs.unwrap_or_default();
    let term = hs.term.max(last_term);
    if wal.last_index() < last_index || wal.first_index() > last_index + 1 {
        // An empty log that does not continue the snapshot: start it there.
        wal.reset(last_index + 1)
            .map_err(storage("starting the WAL after the snapshot"))?;
    }
    let appended: Vec<Entry> = changes
        .into_iter()
        .enumerate()
        .map(|(i, c)| Entry {
            term,
            index: last_index + 1 + i as u64,
            payload: EntryPayload::Config(c),
        })
        .collect();
    wal.append(&appended)
        .and_then(|_| wal.sync())
        .map_err(storage("appending the membership rewrite to the WAL"))?;
    if hs.term < term {
        hs_store
            .save(&HardState { term, ..hs })
            .map_err(storage("writing the hard state"))?;
    }
    Ok(ForcedSoleVoter {
        before,
        after,
        appended,
        last_index_before: last_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_engine_core::Member;

    fn membership(ids: &[NodeId]) -> Membership {
        let mut m = Membership::default();
        for id in ids {
            m.members.insert(
                *id,
                Member {
                    role: MemberRole::Voter,
                    addr: format!("127.0.0.1:{}", 9000 + id),
                },
            );
        }
        m
    }

    #[test]
    fn restore_refuses_a_foreign_file_and_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("not-a-backup");
        fs::write(&bad, b"hello, this is not a snapshot file at all").unwrap();
        let target = RestoreTarget {
            data_dir: tmp.path().join("d1"),
            node_id: 1,
            cluster_id: "restored".into(),
            membership: membership(&[1, 2, 3]),
            wal: WalOptions::default(),
        };
        let e = restore_backup(&bad, &target).unwrap_err();
        assert!(matches!(e, RebuildError::BadBackup { .. }), "{e}");
        assert!(e.to_string().contains("bad magic"), "{e}");
        assert!(!target.data_dir.exists());
    }

    #[test]
    fn restore_refuses_a_node_that_is_not_a_member() {
        let tmp = tempfile::tempdir().unwrap();
        let target = RestoreTarget {
            data_dir: tmp.path().join("d4"),
            node_id: 4,
            cluster_id: "restored".into(),
            membership: membership(&[1, 2, 3]),
            wal: WalOptions::default(),
        };
        let e = restore_backup(&tmp.path().join("whatever"), &target).unwrap_err();
        assert!(
            matches!(e, RebuildError::NotAMember { node_id: 4, .. }),
            "{e}"
        );
        assert!(!target.data_dir.exists());
    }

    #[test]
    fn restore_refuses_a_non_empty_dir_and_leaves_it_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d1");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("precious"), b"keep me").unwrap();
        let target = RestoreTarget {
            data_dir: dir.clone(),
            node_id: 1,
            cluster_id: "restored".into(),
            membership: membership(&[1]),
            wal: WalOptions::default(),
        };
        // A valid backup: an empty snapshot file.
        let snap_dir = tmp.path().join("src");
        let src = DataDir::open(&snap_dir, 1, "orig").unwrap();
        let store = src.open_snapshot_store().unwrap();
        struct Empty(SnapshotMeta);
        impl SnapshotSource for Empty {
            fn meta(&self) -> &SnapshotMeta {
                &self.0
            }
            fn next_record(&mut self) -> Result<Option<SnapshotRecord>, SmError> {
                Ok(None)
            }
        }
        let info = store
            .create(&mut Empty(SnapshotMeta {
                last_index: 7,
                last_term: 2,
                membership: membership(&[1, 2, 3]),
            }))
            .unwrap();
        let e = restore_backup(&info.path, &target).unwrap_err();
        assert!(matches!(e, RebuildError::NotEmpty { .. }), "{e}");
        assert!(e.to_string().contains("precious"), "{e}");
        assert_eq!(fs::read(dir.join("precious")).unwrap(), b"keep me");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);

        // Into an empty dir it works: snapshot at the backup's index with the
        // new membership, the WAL continuing after it.
        let empty = tmp.path().join("d2");
        fs::create_dir(&empty).unwrap();
        let target = RestoreTarget {
            data_dir: empty.clone(),
            ..target
        };
        let meta = restore_backup(&info.path, &target).unwrap();
        assert_eq!((meta.last_index, meta.last_term), (7, 2));
        assert_eq!(meta.membership, membership(&[1]));
        let d = DataDir::open(&empty, 1, "restored").unwrap();
        let latest = d
            .open_snapshot_store()
            .unwrap()
            .latest_valid()
            .unwrap()
            .latest
            .unwrap();
        assert_eq!(latest.meta, meta);
        let (wal, _) = Wal::open(d.wal_dir(), WalOptions::default()).unwrap();
        assert_eq!(wal.first_index(), 8);
    }

    #[test]
    fn force_sole_voter_appends_removals_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("n2");
        let three = membership(&[1, 2, 3]);
        {
            let d = DataDir::open(&dir, 2, "c").unwrap();
            let (mut wal, _) = Wal::open(d.wal_dir(), WalOptions::default()).unwrap();
            wal.append(&[
                Entry {
                    term: 1,
                    index: 1,
                    payload: EntryPayload::Noop,
                },
                Entry {
                    term: 3,
                    index: 2,
                    payload: EntryPayload::Command(bytes::Bytes::from_static(b"x")),
                },
            ])
            .unwrap();
            wal.sync().unwrap();
            let (mut hs, _) = HardStateStore::open(d.hard_state_dir()).unwrap();
            hs.save(&HardState {
                term: 4,
                voted_for: Some(1),
                commit: 1,
            })
            .unwrap();
        }
        let r = force_sole_voter(&dir, 2, "c", &three, WalOptions::default()).unwrap();
        assert_eq!(r.before, three);
        assert_eq!(r.after, membership(&[2]));
        assert_eq!(r.last_index_before, 2);
        assert_eq!(r.appended.len(), 2);
        assert!(r.appended.iter().all(|e| e.term == 4));
        assert_eq!(r.appended[0].index, 3);
        // Again: nothing more to do.
        let again = force_sole_voter(&dir, 2, "c", &three, WalOptions::default()).unwrap();
        assert!(again.appended.is_empty());
        assert_eq!(again.after, membership(&[2]));
        // The log kept every entry and ends with the rewrite.
        let d = DataDir::open(&dir, 2, "c").unwrap();
        let (_, rec) = Wal::open(d.wal_dir(), WalOptions::default()).unwrap();
        assert_eq!(rec.entries.len(), 4);
    }
}
