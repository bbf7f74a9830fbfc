//! A node's data directory: identity and exclusive ownership.
//!
//! [`DataDir::open`] creates the directory if needed, takes an exclusive
//! `flock` on `<dir>/LOCK` (held until the `DataDir` is dropped, released by
//! the kernel if the process dies) so two engines can never share it, and
//! checks `<dir>/IDENTITY`: on first use it records the node id, cluster id
//! and format version; afterwards it refuses a directory that belongs to
//! another node or cluster.
//!
//! Layout: this module owns `IDENTITY` and `LOCK`; every other path of the
//! directory, and the call that opens it, is in [`crate::layout`].
//!
//! File modes: every directory d-engine creates in a data dir is created
//! [`DIR_MODE`] (0700) and every file [`FILE_MODE`] (0600), whatever the
//! process umask: the files hold every stored value. An existing data dir
//! whose mode lets group or others in is tightened to 0700 on open
//! ([`DataDir::mode_notice`] reports it so the host can warn; if the mode
//! cannot be changed, e.g. another user owns the directory, the open goes on
//! and the notice says so); without search permission on it nobody else
//! reaches anything inside, whatever the modes of older files.

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use d_engine_core::NodeId;

/// On-disk layout version of the whole data directory.
pub const FORMAT_VERSION: u32 = 1;
pub const IDENTITY_FILE: &str = "IDENTITY";
pub const LOCK_FILE: &str = "LOCK";
const IDENTITY_TEMP: &str = "IDENTITY.tmp";
const MAX_CLUSTER_ID_LEN: usize = 128;
/// Mode of every directory d-engine creates in a data dir: owner only.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file d-engine creates in a data dir: owner read/write.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents with mode [`DIR_MODE`] (an
/// existing directory is left as it is).
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates (or truncates) the file at `path` for writing; a new file gets
/// mode [`FILE_MODE`]. The private replacement for [`File::create`].
pub fn create_private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Best effort: sets every directory under `root` (and `root`) to
/// [`DIR_MODE`] and every file to [`FILE_MODE`]. For trees written by a
/// library that does not take a mode (sled). Symlinks are not followed.
pub fn restrict_tree(root: &Path) -> io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(DIR_MODE))?;
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                fs::set_permissions(e.path(), fs::Permissions::from_mode(FILE_MODE))?;
            }
        }
    }
    Ok(())
}

/// Space on the filesystem holding a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged writer may still use.
    pub available: u64,
    /// Size of the filesystem in bytes.
    pub total: u64,
}

/// Free and total space of the filesystem holding `path` (`statvfs`).
pub fn fs_space(path: &Path) -> io::Result<FsSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid
    // NUL-terminated string for the duration of the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let frsize = if st.f_frsize > 0 {
        st.f_frsize as u64
    } else {
        st.f_bsize as u64
    };
    Ok(FsSpace {
        available: (st.f_bavail as u64).saturating_mul(frsize),
        total: (st.f_blocks as u64).saturating_mul(frsize),
    })
}

/// Who a data directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub format_version: u32,
}

#[derive(Debug)]
pub enum DataDirError {
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    InvalidArgument(String),
    /// Another process holds the lock.
    InUse {
        path: PathBuf,
        pid: Option<u32>,
    },
    WrongNode {
        path: PathBuf,
        expected: NodeId,
        found: NodeId,
    },
    WrongCluster {
        path: PathBuf,
        expected: String,
        found: String,
    },
    UnsupportedFormat {
        path: PathBuf,
        version: u32,
    },
    CorruptIdentity {
        path: PathBuf,
        detail: String,
    },
    /// No identity file, but other files: not ours, or damaged.
    NotADataDir {
        path: PathBuf,
        found: String,
    },
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataDirError::Io { op, path, source } => {
                write!(f, "data dir: {op} failed on {}: {source}", path.display())
            }
            DataDirError::InvalidArgument(m) => write!(f, "data dir: {m}"),
            DataDirError::InUse { path, pid } => {
                write!(
                    f,
                    "data dir {} is in use by another d-engine process",
                    path.display()
                )?;
                match pid {
                    Some(pid) => write!(f, " (pid {pid})"),
                    None => write!(f, " (pid unknown)"),
                }?;
                write!(f, "; stop it or give this node its own data dir")
            }
            DataDirError::WrongNode {
                path,
                expected,
                found,
            } => write!(
                f,
                "data dir {} belongs to node {found}, not node {expected}; point this node at \
                 its own data dir (a node id can never be reused with another node's data)",
                path.display()
            ),
            DataDirError::WrongCluster {
                path,
                expected,
                found,
            } => write!(
                f,
                "data dir {} belongs to cluster {found:?}, not cluster {expected:?}; point this \
                 node at a data dir of this cluster or at an empty directory",
                path.display()
            ),
            DataDirError::UnsupportedFormat { path, version } => write!(
                f,
                "data dir {} has format version {version}; this build of d-engine reads \
                 version {FORMAT_VERSION}: run a matching d-engine version",
                path.display()
            ),
            DataDirError::CorruptIdentity { path, detail } => write!(
                f,
                "identity file {} is corrupt ({detail}); refusing to guess who this data \
                 belongs to: if you know it is this node's, restore the file, otherwise move \
                 the data dir aside and re-add the node as a learner",
                path.display()
            ),
            DataDirError::NotADataDir { path, found } => write!(
                f,
                "{} is not empty ({found}) but has no d-engine {IDENTITY_FILE} file: it is not \
                 a d-engine data dir (or it is damaged); choose an empty or new directory",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DataDirError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataDirError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> DataDirError {
    DataDirError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// What [`DataDir::open`] did about a data dir open to group or others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirModeNotice {
    /// The mode was `from`; it is now [`DIR_MODE`].
    Tightened { from: u32 },
    /// The mode is `mode` and could not be changed (`error`).
    CannotTighten { mode: u32, error: String },
}

impl fmt::Display for DirModeNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirModeNotice::Tightened { from } => write!(
                f,
                "the data dir had mode {from:04o}, letting other users read every stored \
                 value; tightened it to 0700 (run backup tools as the node's user instead of \
                 widening it)"
            ),
            DirModeNotice::CannotTighten { mode, error } => write!(
                f,
                "the data dir has mode {mode:04o}, letting other users read every stored \
                 value, and it could not be set to 0700 ({error}): chown it to the node's user \
                 and chmod it 0700"
            ),
        }
    }
}

/// An opened, locked data directory. The lock lives as long as this value.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    identity: Identity,
    created: bool,
    mode_notice: Option<DirModeNotice>,
    _lock: File,
}

impl DataDir {
    /// Opens (creating on first use) the data directory at `path` for node
    /// `node_id` of cluster `cluster_id`. See the module docs.
    pub fn open(
        path: impl AsRef<Path>,
        node_id: NodeId,
        cluster_id: &str,
    ) -> Result<DataDir, DataDirError> {
        if node_id == 0 {
            return Err(DataDirError::InvalidArgument(
                "node id 0 is invalid; node ids start at 1".into(),
            ));
        }
        validate_cluster_id(cluster_id)?;
        let path = path.as_ref().to_path_buf();
        let mut mode_notice = None;
        if !path.exists() {
            create_private_dir_all(&path).map_err(|e| io_err("create directory", &path, e))?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        } else if !path.is_dir() {
            return Err(DataDirError::InvalidArgument(format!(
                "{} exists and is not a directory",
                path.display()
            )));
        } else {
            let mode = fs::metadata(&path)
                .map_err(|e| io_err("stat", &path, e))?
                .permissions()
                .mode()
                & 0o7777;
            if mode & 0o077 != 0 {
                mode_notice = Some(
                    match fs::set_permissions(&path, fs::Permissions::from_mode(DIR_MODE)) {
                        Ok(()) => DirModeNotice::Tightened { from: mode },
                        Err(e) => DirModeNotice::CannotTighten {
                            mode,
                            error: e.to_string(),
                        },
                    },
                );
            }
        }
        let lock = lock(&path)?;

        let id_path = path.join(IDENTITY_FILE);
        let (identity, created) = match fs::read(&id_path) {
            Ok(bytes) => (parse_identity(&id_path, &bytes)?, false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                refuse_if_not_empty(&path)?;
                let id = Identity {
                    node_id,
                    cluster_id: cluster_id.to_string(),
                    format_version: FORMAT_VERSION,
                };
                write_identity(&path, &id)?;
                (id, true)
            }
            Err(e) => return Err(io_err("read", &id_path, e)),
        };
        if identity.format_version != FORMAT_VERSION {
            return Err(DataDirError::UnsupportedFormat {
                path,
                version: identity.format_version,
            });
        }
        if identity.cluster_id != cluster_id {
            return Err(DataDirError::WrongCluster {
                path,
                expected: cluster_id.to_string(),
                found: identity.cluster_id,
            });
        }
        if identity.node_id != node_id {
            return Err(DataDirError::WrongNode {
                path,
                expected: node_id,
                found: identity.node_id,
            });
        }
        Ok(DataDir {
            path,
            identity,
            created,
            mode_notice,
            _lock: lock,
        })
    }

    /// Set when the data dir let group or others in (see the module docs):
    /// the host should log it as a warning.
    pub fn mode_notice(&self) -> Option<&DirModeNotice> {
        self.mode_notice.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// True if this `open` initialised the directory (a brand-new node).
    pub fn is_new(&self) -> bool {
        self.created
    }

    /// Directory of the Raft log ([`crate::wal::Wal::open`] creates it).
    pub fn wal_dir(&self) -> PathBuf {
        self.path.join(crate::layout::WAL_DIR)
    }

    /// Directory holding the hard-state file ([`crate::hard_state`]).
    pub fn hard_state_dir(&self) -> &Path {
        &self.path
    }
}

fn sync_dir(dir: &Path) -> Result<(), DataDirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync directory", dir, e))
}

fn validate_cluster_id(id: &str) -> Result<(), DataDirError> {
    if id.is_empty() || id.len() > MAX_CLUSTER_ID_LEN {
        return Err(DataDirError::InvalidArgument(format!(
            "cluster id must be 1..={MAX_CLUSTER_ID_LEN} bytes, got {}",
            id.len()
        )));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(DataDirError::InvalidArgument(format!(
            "cluster id {id:?} may only contain ASCII letters, digits and - _ . :"
        )));
    }
    Ok(())
}

/// Takes the exclusive lock and records our pid in the lock file.
fn lock(dir: &Path) -> Result<File, DataDirError> {
    let path = dir.join(LOCK_FILE);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|e| io_err("open", &path, e))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut s = String::new();
            let pid = f
                .read_to_string(&mut s)
                .ok()
                .and_then(|_| s.trim().parse().ok());
            return Err(DataDirError::InUse {
                path: dir.to_path_buf(),
                pid,
            });
        }
        return Err(io_err("flock", &path, err));
    }
    f.set_len(0)
        .and_then(|_| f.rewind())
        .and_then(|_| writeln!(f, "{}", std::process::id()))
        .map_err(|e| io_err("write", &path, e))?;
    Ok(f)
}

fn refuse_if_not_empty(dir: &Path) -> Result<(), DataDirError> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| io_err("list directory", dir, e))? {
        let item = item.map_err(|e| io_err("list directory", dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name == LOCK_FILE || name == IDENTITY_TEMP {
            continue;
        }
        found.push(name);
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    let shown: Vec<_> = found.iter().take(5).map(|s| s.as_str()).collect();
    Err(DataDirError::NotADataDir {
        path: dir.to_path_buf(),
        found: format!("contains {}", shown.join(", ")),
    })
}

fn identity_body(id: &Identity) -> String {
    format!(
        "# d-engine data directory identity. Do not edit or copy to another node.\n\
         format_version = {}\nnode_id = {}\ncluster_id = {}\n",
        id.format_version, id.node_id, id.cluster_id
    )
}

fn write_identity(dir: &Path, id: &Identity) -> Result<(), DataDirError> {
    let body = identity_body(id);
    let text = format!("{body}crc32c = {:08x}\n", crc32c::crc32c(body.as_bytes()));
    let tmp = dir.join(IDENTITY_TEMP);
    let path = dir.join(IDENTITY_FILE);
    let mut f = create_private_file(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err("write", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| io_err("rename", &path, e))?;
    sync_dir(dir)
}

fn parse_identity(path: &Path, bytes: &[u8]) -> Result<Identity, DataDirError> {
    let bad = |detail: String| DataDirError::CorruptIdentity {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    let crc_at = text
        .rfind("crc32c = ")
        .ok_or_else(|| bad("no checksum line".into()))?;
    let (body, crc_line) = text.split_at(crc_at);
    let want = crc_line
        .trim()
        .strip_prefix("crc32c = ")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| bad("unreadable checksum line".into()))?;
    if crc32c::crc32c(body.as_bytes()) != want {
        return Err(bad(
            "checksum mismatch: the file was edited or damaged".into()
        ));
    }
    let mut version = None;
    let mut node = None;
    let mut cluster = None;
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once(" = ")
            .ok_or_else(|| bad(format!("unreadable line {line:?}")))?;
        match k {
            "format_version" => version = v.parse().ok(),
            "node_id" => node = v.parse().ok(),
            "cluster_id" => cluster = Some(v.to_string()),
            _ => return Err(bad(format!("unknown key {k:?}"))),
        }
    }
    Ok(Identity {
        format_version: version.ok_or_else(|| bad("missing or bad format_version".into()))?,
        node_id: node.ok_or_else(|| bad("missing or bad node_id".into()))?,
        cluster_id: cluster.ok_or_else(|| bad("missing cluster_id".into()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_open_writes_identity_and_reopen_checks_it() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("node1");
        let d = DataDir::open(&p, 1, "prod-a").unwrap();
        assert!(d.is_new());
        assert_eq!(
            d.identity(),
            &Identity {
                node_id: 1,
                cluster_id: "prod-a".into(),
                format_version: FORMAT_VERSION
            }
        );
        assert_eq!(d.wal_dir(), p.join("wal"));
        drop(d);
        let d = DataDir::open(&p, 1, "prod-a").unwrap();
        assert!(!d.is_new());
        drop(d);

        let e = DataDir::open(&p, 2, "prod-a").unwrap_err().to_string();
        assert!(e.contains("belongs to node 1, not node 2"), "{e}");
        assert!(e.contains(&p.display().to_string()), "{e}");
        let e = DataDir::open(&p, 1, "prod-b").unwrap_err().to_string();
        assert!(e.contains("belongs to cluster \"prod-a\""), "{e}");
    }

    #[test]
    fn second_opener_is_refused_with_the_holders_pid() {
        let root = tempfile::tempdir().unwrap();
        let held = DataDir::open(root.path(), 3, "c").unwrap();
        let err = DataDir::open(root.path(), 3, "c").unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, DataDirError::InUse { pid: Some(p), .. } if p == std::process::id()),
            "{msg}"
        );
        assert!(
            msg.contains(&format!(
                "is in use by another d-engine process (pid {})",
                std::process::id()
            )),
            "{msg}"
        );
        drop(held);
        DataDir::open(root.path(), 3, "c").expect("lock released on drop");
    }

    #[test]
    fn refuses_foreign_or_damaged_directories() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("photos.jpg"), b"x").unwrap();
        let e = DataDir::open(root.path(), 1, "c").unwrap_err().to_string();
        assert!(
            e.contains("not a d-engine data dir") && e.contains("photos.jpg"),
            "{e}"
        );

        let root = tempfile::tempdir().unwrap();
        drop(DataDir::open(root.path(), 1, "c").unwrap());
        let id = root.path().join(IDENTITY_FILE);
        let text = fs::read_to_string(&id).unwrap();
        fs::write(&id, text.replace("node_id = 1", "node_id = 2")).unwrap();
        let e = DataDir::open(root.path(), 2, "c").unwrap_err();
        assert!(matches!(e, DataDirError::CorruptIdentity { .. }), "{e}");
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        fs::write(&id, "garbage").unwrap();
        assert!(matches!(
            DataDir::open(root.path(), 1, "c"),
            Err(DataDirError::CorruptIdentity { .. })
        ));
    }

    #[test]
    fn creates_private_dirs_and_files_and_tightens_an_open_dir() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("a").join("node1");
        let d = DataDir::open(&p, 1, "c").unwrap();
        assert_eq!(d.mode_notice(), None);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&p), DIR_MODE);
        assert_eq!(mode(&p.join(IDENTITY_FILE)), FILE_MODE);
        assert_eq!(mode(&p.join(LOCK_FILE)), FILE_MODE);
        drop(d);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        let d = DataDir::open(&p, 1, "c").unwrap();
        assert_eq!(
            d.mode_notice(),
            Some(&DirModeNotice::Tightened { from: 0o755 })
        );
        assert!(d.mode_notice().unwrap().to_string().contains("0755"));
        assert_eq!(mode(&p), DIR_MODE);
    }

    #[test]
    fn free_space_is_reported() {
        let root = tempfile::tempdir().unwrap();
        let s = fs_space(root.path()).unwrap();
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        assert!(fs_space(&root.path().join("missing")).is_err());
    }

    #[test]
    fn rejects_bad_arguments() {
        let root = tempfile::tempdir().unwrap();
        assert!(DataDir::open(root.path(), 0, "c").is_err());
        assert!(DataDir::open(root.path(), 1, "").is_err());
        assert!(DataDir::open(root.path(), 1, "a\nnode_id = 5").is_err());
        let f = root.path().join("file");
        fs::write(&f, b"").unwrap();
        assert!(DataDir::open(&f, 1, "c").is_err());
    }
}
