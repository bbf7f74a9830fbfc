//! The WAL thread: owns the [`Wal`], does group commit, reports durability.
//!
//! Contract: every `Append` drained in one wake-up is written, then ONE
//! `fdatasync` covers all of it (`durability.mode = "fsync"`), and only then
//! is `log_persisted(last_index, last_term)` reported to the consensus loop.
//! In `periodic` mode entries are reported once handed to the OS and synced
//! at least every `durability.interval_ms` (see `docs/config.md` for the
//! exact risk). Any WAL error stops the node (`Input::Fatal`): a failed
//! fsync may have dropped data, so nothing more may be acknowledged.

use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::time::{Duration, Instant};

use d_engine_core::{Entry, Index};
use d_engine_storage::wal::{LogStore, Wal};

use super::shared::Input;

pub(crate) enum WalTask {
    Append(Vec<Entry>),
    SetCommitted(Index),
    Compact(Index),
    /// Discard the whole log; the next entry will have index `next`.
    Reset {
        next: Index,
        done: std_mpsc::Sender<Result<(), String>>,
    },
    Shutdown,
}

pub(crate) fn spawn(
    mut wal: Wal,
    periodic: Option<Duration>,
    input: std_mpsc::Sender<Input>,
    node_id: u64,
) -> std::io::Result<(std_mpsc::Sender<WalTask>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std_mpsc::channel::<WalTask>();
    let h = std::thread::Builder::new()
        .name(format!("dengine-wal-{node_id}"))
        .spawn(move || {
            if let Err(e) = run(&mut wal, periodic, &rx, &input) {
                tracing::error!(error = %e, "WAL failed; stopping the node");
                let _ = input.send(Input::Fatal(format!("WAL: {e}")));
                // Keep answering resets so the loop never blocks on us.
                while let Ok(t) = rx.recv() {
                    match t {
                        WalTask::Reset { done, .. } => {
                            let _ = done.send(Err(format!("WAL stopped: {e}")));
                        }
                        WalTask::Shutdown => break,
                        _ => {}
                    }
                }
            }
        })?;
    Ok((tx, h))
}

fn run(
    wal: &mut Wal,
    periodic: Option<Duration>,
    rx: &std_mpsc::Receiver<WalTask>,
    input: &std_mpsc::Sender<Input>,
) -> Result<(), String> {
    let mut tasks: Vec<WalTask> = Vec::new();
    loop {
        let first = match periodic {
            Some(iv) if wal.has_unsynced() => {
                let wait = iv.saturating_sub(wal.last_sync().elapsed());
                match rx.recv_timeout(wait) {
                    Ok(t) => Some(t),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return finish(wal),
                }
            }
            _ => match rx.recv() {
                Ok(t) => Some(t),
                Err(_) => return finish(wal),
            },
        };
        tasks.extend(first);
        while let Ok(t) = rx.try_recv() {
            tasks.push(t);
        }
        let mut appended = false;
        let mut shutdown = false;
        for t in tasks.drain(..) {
            match t {
                WalTask::Append(entries) => {
                    wal.append(&entries).map_err(|e| e.to_string())?;
                    appended = true;
                }
                WalTask::SetCommitted(i) => wal.set_committed(i),
                WalTask::Compact(i) => wal.compact(i).map_err(|e| e.to_string())?,
                WalTask::Reset { next, done } => {
                    // Anything appended before the reset is discarded by it.
                    let r = wal.reset(next).map_err(|e| e.to_string());
                    let failed = r.is_err();
                    let _ = done.send(r.clone());
                    if failed {
                        return r;
                    }
                }
                WalTask::Shutdown => shutdown = true,
            }
        }
        if appended {
            match periodic {
                None => wal.sync().map_err(|e| e.to_string())?,
                Some(_) => {
                    wal.flush().map_err(|e| e.to_string())?;
                    if wal.needs_sync(Instant::now()) {
                        wal.sync().map_err(|e| e.to_string())?;
                    }
                }
            }
            if let Some(term) = wal.last_term() {
                let _ = input.send(Input::Persisted {
                    index: wal.last_index(),
                    term,
                });
            }
        } else if periodic.is_some() && wal.needs_sync(Instant::now()) {
            wal.sync().map_err(|e| e.to_string())?;
        }
        if shutdown {
            return finish(wal);
        }
    }
}

fn finish(wal: &mut Wal) -> Result<(), String> {
    wal.sync().map_err(|e| e.to_string())
}
