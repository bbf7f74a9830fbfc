//! Durable hard state (term, vote, commit) in `<data_dir>/hardstate`.
//!
//! [`HardStateStore::save`] replaces the file atomically: it writes
//! `hardstate.tmp`, fsyncs it, renames it over `hardstate` and fsyncs the
//! directory, so after a crash the file holds either the old or the new
//! value, never a mix. It returns only once the new value is durable: the
//! host calls it before sending any vote or append reply that depends on it.
//!
//! File format (44 bytes, little-endian):
//! ```text
//!  0..8   magic "DEHARDST"
//!  8..12  format version (1)
//! 12..16  flags: bit 0 = voted_for is set
//! 16..24  term
//! 24..32  voted_for (0 when unset)
//! 32..40  commit
//! 40..44  CRC32C of bytes 0..40
//! ```

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use d_engine_core::HardState;

/// Name of the hard-state file inside the data directory.
pub const FILE_NAME: &str = "hardstate";
const TEMP_NAME: &str = "hardstate.tmp";
const MAGIC: &[u8; 8] = b"DEHARDST";
const VERSION: u32 = 1;
const LEN: usize = 44;

#[derive(Debug)]
pub enum HardStateError {
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The file exists but cannot be trusted.
    Corrupt { path: PathBuf, detail: String },
}

impl fmt::Display for HardStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HardStateError::Io { op, path, source } => {
                write!(f, "hard state {op} failed on {}: {source}", path.display())
            }
            HardStateError::Corrupt { path, detail } => write!(
                f,
                "hard state file {} is corrupt ({detail}); the node cannot know its term and \
                 vote, so it must not start: move the data dir aside and re-add the node to \
                 the cluster as a learner",
                path.display()
            ),
        }
    }
}

impl std::error::Error for HardStateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HardStateError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> HardStateError {
    HardStateError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

pub fn encode(hs: &HardState) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let flags: u32 = hs.voted_for.is_some() as u32;
    b[12..16].copy_from_slice(&flags.to_le_bytes());
    b[16..24].copy_from_slice(&hs.term.to_le_bytes());
    b[24..32].copy_from_slice(&hs.voted_for.unwrap_or(0).to_le_bytes());
    b[32..40].copy_from_slice(&hs.commit.to_le_bytes());
    let crc = crc32c::crc32c(&b[0..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes the file contents; the error is a description of the damage.
pub fn decode(b: &[u8]) -> Result<HardState, String> {
    if b.len() != LEN {
        return Err(format!("{} bytes long, expected {LEN}", b.len()));
    }
    if &b[0..8] != MAGIC {
        return Err("wrong magic bytes: not a d-engine hard state file".into());
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    if crc32c::crc32c(&b[0..40]) != u32_at(40) {
        return Err("checksum mismatch".into());
    }
    let version = u32_at(8);
    if version != VERSION {
        return Err(format!(
            "format version {version}; this build reads version {VERSION}"
        ));
    }
    let flags = u32_at(12);
    if flags > 1 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    Ok(HardState {
        term: u64_at(16),
        voted_for: (flags == 1).then(|| u64_at(24)),
        commit: u64_at(32),
    })
}

/// Loads `<dir>/hardstate`: `Ok(None)` if it was never saved.
pub fn load(dir: &Path) -> Result<Option<HardState>, HardStateError> {
    let path = dir.join(FILE_NAME);
    match fs::read(&path) {
        Ok(b) => decode(&b)
            .map(Some)
            .map_err(|detail| HardStateError::Corrupt { path, detail }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &path, e)),
    }
}

/// The durable hard state of one node.
#[derive(Debug)]
pub struct HardStateStore {
    dir: PathBuf,
    /// The value on disk (`None` before the first save).
    current: Option<HardState>,
}

impl HardStateStore {
    /// Opens the store in `dir` (which must exist) and loads the saved state:
    /// `None` if it was never saved. A leftover `hardstate.tmp` from a crash
    /// during `save` is removed (the rename never happened, so the old value
    /// is still the valid one).
    pub fn open(dir: impl AsRef<Path>) -> Result<(Self, Option<HardState>), HardStateError> {
        let dir = dir.as_ref().to_path_buf();
        let tmp = dir.join(TEMP_NAME);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &tmp, e)),
        }
        let current = load(&dir)?;
        Ok((HardStateStore { dir, current }, current))
    }

    /// The last value saved (or loaded).
    pub fn current(&self) -> Option<HardState> {
        self.current
    }

    /// True if saving `hs` would change the term or vote: a change the host
    /// must make durable before sending messages. (A change of `commit`
    /// alone may be deferred: a node may restart with a lower commit index.)
    pub fn term_or_vote_changed(&self, hs: &HardState) -> bool {
        match self.current {
            None => true,
            Some(c) => c.term != hs.term || c.voted_for != hs.voted_for,
        }
    }

    /// Makes `hs` durable; returns once it is. No-op if it equals the
    /// current value. On error the old value is still intact on disk (or the
    /// new one, if only the final directory sync failed); calling `save`
    /// again is safe because it rewrites a whole new temp file.
    pub fn save(&mut self, hs: &HardState) -> Result<(), HardStateError> {
        if self.current.as_ref() == Some(hs) {
            return Ok(());
        }
        let tmp = self.dir.join(TEMP_NAME);
        let path = self.dir.join(FILE_NAME);
        let mut f =
            crate::data_dir::create_private_file(&tmp).map_err(|e| io_err("create", &tmp, e))?;
        f.write_all(&encode(hs))
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err("write", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| io_err("rename", &path, e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("sync directory", &self.dir, e))?;
        self.current = Some(*hs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
        HardState {
            term,
            voted_for: vote,
            commit,
        }
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, loaded) = HardStateStore::open(dir.path()).unwrap();
        assert_eq!(loaded, None);
        assert!(s.term_or_vote_changed(&HardState::default()));
        for v in [
            hs(1, None, 0),
            hs(2, Some(3), 0),
            hs(2, Some(3), 17),
            hs(9, None, 17),
        ] {
            s.save(&v).unwrap();
            assert_eq!(s.current(), Some(v));
            let (_, again) = HardStateStore::open(dir.path()).unwrap();
            assert_eq!(again, Some(v));
        }
        assert!(!s.term_or_vote_changed(&hs(9, None, 40)));
        assert!(s.term_or_vote_changed(&hs(9, Some(1), 17)));
        assert!(!dir.path().join(TEMP_NAME).exists());
    }

    #[test]
    fn vote_for_node_zero_is_distinct_from_no_vote() {
        let b = encode(&hs(5, Some(0), 1));
        assert_eq!(decode(&b).unwrap().voted_for, Some(0));
        let b = encode(&hs(5, None, 1));
        assert_eq!(decode(&b).unwrap().voted_for, None);
    }

    #[test]
    fn leftover_temp_file_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = HardStateStore::open(dir.path()).unwrap();
        s.save(&hs(4, Some(2), 3)).unwrap();
        // A crash after writing the temp file but before the rename.
        fs::write(dir.path().join(TEMP_NAME), encode(&hs(5, Some(1), 3))).unwrap();
        let (_, loaded) = HardStateStore::open(dir.path()).unwrap();
        assert_eq!(loaded, Some(hs(4, Some(2), 3)));
        assert!(!dir.path().join(TEMP_NAME).exists());
    }

    #[test]
    fn every_bit_flip_and_truncation_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = HardStateStore::open(dir.path()).unwrap();
        s.save(&hs(7, Some(2), 11)).unwrap();
        let path = dir.path().join(FILE_NAME);
        let good = fs::read(&path).unwrap();
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            fs::write(&path, &b).unwrap();
            let err = HardStateStore::open(dir.path()).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, HardStateError::Corrupt { .. }),
                "bit {bit}: {msg}"
            );
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("re-add the node"), "{msg}");
        }
        for n in 0..good.len() {
            fs::write(&path, &good[..n]).unwrap();
            assert!(matches!(
                HardStateStore::open(dir.path()),
                Err(HardStateError::Corrupt { .. })
            ));
        }
        fs::write(&path, &good).unwrap();
        assert_eq!(
            HardStateStore::open(dir.path()).unwrap().1,
            Some(hs(7, Some(2), 11))
        );
    }
}
