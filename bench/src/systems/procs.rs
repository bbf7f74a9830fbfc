//! Child processes (servers the tool starts) and free loopback ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::process::{Child, Command};

/// A free 127.0.0.1 port (bound then released; the OS does not hand it out
/// again immediately).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A server process killed when dropped; its stdout/stderr go to `log`.
pub struct Proc {
    pub name: String,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> Result<Proc> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("creating log file {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        // The child's configuration comes from `args` only (a DENGINE_*
        // variable in the caller's environment would override it).
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("DENGINE_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!("starting {name}: {} {}", program.display(), args.join(" "))
            })?;
        Ok(Proc {
            name: name.into(),
            log: log.to_path_buf(),
            child,
        })
    }

    /// Fails (with the log's tail) if the process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "{} exited with {status}; last log lines:\n{}",
                self.name,
                self.log_tail(20)
            );
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The process id; `None` once the process has been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dead_process_reports_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sh.log");
        let mut p = Proc::spawn(
            "sh",
            Path::new("/bin/sh"),
            &["-c".into(), "echo hello-from-child; exit 3".into()],
            &log,
        )
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Err(e) = p.check_alive() {
                let e = e.to_string();
                assert!(e.contains("hello-from-child") && e.contains('3'), "{e}");
                break;
            }
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn free_port_is_bindable() {
        let p = free_port().unwrap();
        std::net::TcpListener::bind(("127.0.0.1", p)).unwrap();
    }
}
