//! One `d-engine-server` child process: start, signals, logs.

use std::fs::OpenOptions;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub peer_addr: String,
    pub client_addr: String,
    pub data_dir: PathBuf,
    /// stdout and stderr of every incarnation, appended.
    pub log_path: PathBuf,
    pub binary: PathBuf,
    /// Full argument list (the harness builds it from the cluster layout).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// A node's process (possibly not running: killed, exited, not yet started).
pub struct NodeProcess {
    pub spec: NodeSpec,
    child: Option<Child>,
    paused: bool,
    /// Exit status of the last incarnation that ended.
    last_exit: Option<ExitStatus>,
    /// The harness stopped it (kill / terminate): not a crash.
    stopped_on_purpose: bool,
}

impl NodeProcess {
    /// Spawns the node.
    pub fn spawn(spec: NodeSpec) -> io::Result<Self> {
        let mut p = NodeProcess {
            spec,
            child: None,
            paused: false,
            last_exit: None,
            stopped_on_purpose: false,
        };
        p.start()?;
        Ok(p)
    }

    /// A process handle for a node that is not started yet.
    pub fn not_started(spec: NodeSpec) -> Self {
        NodeProcess {
            spec,
            child: None,
            paused: false,
            last_exit: None,
            stopped_on_purpose: true,
        }
    }

    /// Starts the node if it is not running (same data dir and arguments).
    pub fn start(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)?;
        let mut cmd = Command::new(&self.spec.binary);
        cmd.args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env_remove("DENGINE_CONFIG");
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn()?);
        self.paused = false;
        self.last_exit = None;
        self.stopped_on_purpose = false;
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// True while the process exists (running or paused).
    pub fn is_running(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        match c.try_wait() {
            Ok(None) => true,
            Ok(Some(st)) => {
                self.last_exit = Some(st);
                self.child = None;
                false
            }
            Err(_) => false,
        }
    }

    /// The exit status of the last incarnation, if it ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        let _ = self.is_running();
        self.last_exit
    }

    /// The exit status if the process ended by itself (not through
    /// [`NodeProcess::kill`] / [`NodeProcess::terminate`]).
    pub fn crashed(&mut self) -> Option<ExitStatus> {
        let st = self.exit_status()?;
        (!self.stopped_on_purpose).then_some(st)
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    fn signal(&self, sig: libc::c_int) -> bool {
        match self.pid() {
            // SAFETY: kill(2) with a pid of our own child.
            Some(pid) => unsafe { libc::kill(pid as libc::pid_t, sig) == 0 },
            None => false,
        }
    }

    /// SIGKILL (works on a paused process too) and reap it.
    pub fn kill(&mut self) {
        self.stopped_on_purpose = true;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if let Ok(st) = c.wait() {
                self.last_exit = Some(st);
            }
        }
        self.paused = false;
    }

    /// SIGSTOP: the process stays alive but does nothing (a long GC pause,
    /// a frozen VM).
    pub fn pause(&mut self) {
        if self.signal(libc::SIGSTOP) {
            self.paused = true;
        }
    }

    /// SIGCONT after [`NodeProcess::pause`].
    pub fn resume(&mut self) {
        if self.signal(libc::SIGCONT) {
            self.paused = false;
        }
    }

    /// SIGTERM and wait up to `timeout` for a graceful exit; SIGKILL after
    /// that. Returns the exit status of the graceful exit, `None` if it had
    /// to be killed or was not running.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.paused {
            self.resume();
        }
        if !self.signal(libc::SIGTERM) {
            return None;
        }
        self.stopped_on_purpose = true;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return self.last_exit;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        None
    }

    /// Waits (blocking, at most `timeout`) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.is_running() {
                return self.last_exit;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Everything the node logged so far (all incarnations).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.spec.log_path).unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
