//! A node's disk filling up: its data dir on a small dedicated tmpfs that
//! a ballast file fills to the last byte, then frees.
//!
//! Needs root (`mount -t tmpfs`). [`Tmpfs::mount`] returns an error (the
//! runner prints it and skips the disk-full fault) when mounting fails.
//! Dropping a [`Tmpfs`] unmounts it (lazily, so a still-running process
//! cannot keep it busy).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a `size_mb` MiB tmpfs on `dir` (created if missing).
    pub fn mount(dir: &Path, size_mb: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root: cannot mount a tmpfs".into());
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs on {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join("fault-ballast")
    }

    /// Writes the ballast until the filesystem is full; returns its size.
    pub fn fill(&self) -> std::io::Result<u64> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.ballast())?;
        let mut written = 0u64;
        for chunk in [1usize << 20, 4096, 1] {
            let buf = vec![0xAAu8; chunk];
            while f.write_all(&buf).is_ok() {
                written += chunk as u64;
            }
        }
        let _ = f.flush();
        Ok(written)
    }

    /// Deletes the ballast.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.ballast());
    }

    /// Deletes everything on the filesystem (a wiped node).
    pub fn wipe(&self) {
        wipe_dir(&self.dir);
    }
}

/// Removes the contents of `dir`, keeping `dir` itself (it may be a mount point).
pub fn wipe_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
