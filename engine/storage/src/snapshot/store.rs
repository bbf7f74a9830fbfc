//! The `<data_dir>/snapshots/` directory.
//!
//! Files: `snapshot-<index:020>-<term:020>.snap` (complete, verified when
//! written or received; named by [`SnapshotStore::file_path`]),
//! `snapshot-….snap.tmp` (a build in progress; removed on open),
//! `quarantine/` (files that failed validation at start-up, moved aside by
//! [`SnapshotStore::latest_valid`]). Transfers being received are staged
//! elsewhere ([`super::transfer`]) and enter only through
//! [`SnapshotStore::adopt_staged`]. The directory is created 0700 and every
//! file 0600 ([`crate::data_dir`]).
//!
//! Creating a snapshot: write a temp file, fsync it, rename it, fsync the
//! directory; only then is it reported, and only then may the host compact
//! the log up to its index. The latest [`KEEP_SNAPSHOTS`] are kept.

use super::format::{verify_snapshot_file, SnapshotFileReader, SnapshotWriter};
use super::{io_err, sync_dir, SnapshotError};
use crate::sm::{SmError, SnapshotSource};
use d_engine_core::{Index, SnapshotMeta, Term};
use std::fs;
use std::path::{Path, PathBuf};

/// Completed snapshot files kept on disk.
pub const KEEP_SNAPSHOTS: usize = 2;

/// A complete snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    pub size: u64,
    /// Records written; 0 when not known (a listed or received file).
    pub records: u64,
}

/// Sub-directory of `snapshots/` holding files that failed validation.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A snapshot file moved aside by [`SnapshotStore::latest_valid`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    pub original: PathBuf,
    pub moved_to: PathBuf,
    /// Why it failed validation.
    pub reason: String,
}

/// What [`SnapshotStore::latest_valid`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidLatest {
    /// The newest snapshot that validates; `None` if there is none.
    pub latest: Option<SnapshotInfo>,
    /// Newer files that failed, newest first, now in the quarantine dir.
    pub quarantined: Vec<Quarantined>,
}

/// Manages the snapshot directory of one node.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    dir: PathBuf,
}

fn snapshot_file_name(index: Index, term: Term) -> String {
    format!("snapshot-{index:020}-{term:020}.snap")
}

fn parse_name(name: &str) -> Option<(Index, Term)> {
    let rest = name.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
    let (i, t) = rest.split_once('-')?;
    Some((i.parse().ok()?, t.parse().ok()?))
}

impl SnapshotStore {
    /// Opens (creating) `<data_dir>/snapshots` and removes abandoned builds.
    pub fn open(data_dir: &Path) -> Result<Self, SnapshotError> {
        let dir = data_dir.join(crate::layout::SNAPSHOTS_DIR);
        crate::data_dir::create_private_dir_all(&dir)
            .map_err(io_err(&dir, "create snapshot directory"))?;
        for e in fs::read_dir(&dir).map_err(io_err(&dir, "list snapshots"))? {
            let e = e.map_err(io_err(&dir, "list snapshots"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("snapshot-") && name.ends_with(".tmp") {
                let p = e.path();
                fs::remove_file(&p).map_err(io_err(&p, "remove abandoned snapshot build"))?;
            }
        }
        Ok(SnapshotStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the complete snapshot of `index` and `term` lives.
    pub fn file_path(&self, index: Index, term: Term) -> PathBuf {
        self.dir.join(snapshot_file_name(index, term))
    }

    /// Moves a received snapshot that passed validation while staged
    /// ([`super::StagedSnapshot`]) into the store under its final name,
    /// durably (rename, then fsync of the directory), and returns its new
    /// path. The staging directory must be on the same filesystem.
    pub fn adopt_staged(
        &self,
        staged: &Path,
        meta: &SnapshotMeta,
    ) -> Result<PathBuf, SnapshotError> {
        let dest = self.file_path(meta.last_index, meta.last_term);
        fs::rename(staged, &dest)
            .map_err(io_err(staged, "move received snapshot into the store"))?;
        sync_dir(&self.dir)?;
        Ok(dest)
    }

    /// Complete snapshot files, newest (highest index) first.
    pub fn list(&self) -> Result<Vec<(Index, Term, PathBuf)>, SnapshotError> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.dir).map_err(io_err(&self.dir, "list snapshots"))? {
            let e = e.map_err(io_err(&self.dir, "list snapshots"))?;
            if let Some((i, t)) = parse_name(&e.file_name().to_string_lossy()) {
                v.push((i, t, e.path()));
            }
        }
        v.sort_by(|a, b| b.cmp(a));
        Ok(v)
    }

    /// The newest complete snapshot (header read; records are verified when
    /// it is installed or sent).
    pub fn latest(&self) -> Result<Option<SnapshotInfo>, SnapshotError> {
        match self.list()?.into_iter().next() {
            None => Ok(None),
            Some((_, _, path)) => {
                let r = SnapshotFileReader::open(&path)?;
                let size = fs::metadata(&path)
                    .map_err(io_err(&path, "stat snapshot"))?
                    .len();
                Ok(Some(SnapshotInfo {
                    meta: r.meta().clone(),
                    path,
                    size,
                    records: 0,
                }))
            }
        }
    }

    /// The newest snapshot that validates completely: every record, the
    /// trailer and checksum ([`verify_snapshot_file`]), and a meta that
    /// matches the file name. Each newer file that fails is moved aside into
    /// `snapshots/`[`QUARANTINE_DIR`]`/` as `<name>.corrupt-<unix seconds>`
    /// (never deleted: keep it for inspection) and reported in
    /// [`ValidLatest::quarantined`]; the next older one is tried. Use it
    /// once at start-up: it reads every candidate whole. An I/O error while
    /// reading (as opposed to content that does not parse) is returned, not
    /// quarantined: the disk, not the file, may be at fault.
    ///
    /// The caller must check that the log continues where the returned
    /// snapshot ends: entries that only a quarantined snapshot covered are
    /// gone from this node.
    pub fn latest_valid(&self) -> Result<ValidLatest, SnapshotError> {
        let mut quarantined = Vec::new();
        for (index, term, path) in self.list()? {
            let reason = match verify_snapshot_file(&path) {
                Ok(meta) if meta.last_index == index && meta.last_term == term => {
                    let size = fs::metadata(&path)
                        .map_err(io_err(&path, "stat snapshot"))?
                        .len();
                    return Ok(ValidLatest {
                        latest: Some(SnapshotInfo {
                            meta,
                            path,
                            size,
                            records: 0,
                        }),
                        quarantined,
                    });
                }
                Ok(meta) => format!(
                    "the file is named for index {index} term {term} but holds a snapshot of \
                     index {} term {}",
                    meta.last_index, meta.last_term
                ),
                Err(e @ SnapshotError::Io { .. }) => return Err(e),
                Err(e) => e.to_string(),
            };
            quarantined.push(self.quarantine(&path, reason)?);
        }
        Ok(ValidLatest {
            latest: None,
            quarantined,
        })
    }

    /// Moves `path` into the quarantine directory (durably).
    fn quarantine(&self, path: &Path, reason: String) -> Result<Quarantined, SnapshotError> {
        let qdir = self.dir.join(QUARANTINE_DIR);
        crate::data_dir::create_private_dir_all(&qdir)
            .map_err(io_err(&qdir, "create snapshot quarantine directory"))?;
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut moved_to = qdir.join(format!("{name}.corrupt-{secs}"));
        let mut n = 1;
        while moved_to.exists() {
            moved_to = qdir.join(format!("{name}.corrupt-{secs}-{n}"));
            n += 1;
        }
        fs::rename(path, &moved_to).map_err(io_err(path, "move corrupt snapshot aside"))?;
        sync_dir(&qdir)?;
        sync_dir(&self.dir)?;
        Ok(Quarantined {
            original: path.to_path_buf(),
            moved_to,
            reason,
        })
    }

    /// Drains `source` into a new durable snapshot file and prunes old ones.
    /// Runs on the caller's thread; applies may continue meanwhile.
    pub fn create(&self, source: &mut dyn SnapshotSource) -> Result<SnapshotInfo, SmError> {
        let meta = source.meta().clone();
        let name = snapshot_file_name(meta.last_index, meta.last_term);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file =
            crate::data_dir::create_private_file(&tmp).map_err(io_err(&tmp, "create snapshot"))?;
        let res = (|| {
            let mut w = SnapshotWriter::new(file, &tmp, &meta)?;
            while let Some(rec) = source.next_record()? {
                w.record(&rec)?;
            }
            let records = w.records();
            let size = w.finish()?;
            Ok::<_, SmError>((size, records))
        })();
        let (size, records) = match res {
            Ok(x) => x,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &path).map_err(io_err(&path, "rename snapshot into place"))?;
        sync_dir(&self.dir)?;
        self.prune()?;
        Ok(SnapshotInfo {
            meta,
            path,
            size,
            records,
        })
    }

    /// The complete snapshot file of `index` in `<data_dir>/snapshots`, if
    /// one exists. Read-only (unlike [`SnapshotStore::open`], which cleans
    /// up), so it may be called while the node runs; the file may be pruned
    /// at any time, so open it at once and read through the open handle.
    pub fn find_complete(data_dir: &Path, index: Index) -> Result<Option<PathBuf>, SnapshotError> {
        let store = SnapshotStore {
            dir: data_dir.join(crate::layout::SNAPSHOTS_DIR),
        };
        Ok(store
            .list()?
            .into_iter()
            .find(|(i, _, _)| *i == index)
            .map(|(_, _, p)| p))
    }

    /// Deletes all but the newest [`KEEP_SNAPSHOTS`] complete snapshots.
    pub fn prune(&self) -> Result<(), SnapshotError> {
        for (_, _, p) in self.list()?.into_iter().skip(KEEP_SNAPSHOTS) {
            fs::remove_file(&p).map_err(io_err(&p, "remove old snapshot"))?;
        }
        Ok(())
    }
}
