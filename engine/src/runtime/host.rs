//! The host's processing of one [`Ready`]: the order of the host contract
//! (`docs/raft-core.md`, "The `Ready` contract, in order") as one function,
//! with no threads, channels, clocks or I/O in it. Whoever executes a
//! `Ready` — the node's consensus loop (`core_loop.rs`) or the simulator
//! (`tests/src/sim/cluster/exec.rs`) — calls [`process_ready`] with its own
//! [`HostEffects`]; the effects do the work, this module fixes the order.
//!
//! Contract of [`process_ready`], for one `Ready`:
//! - a snapshot to install is installed (and reported to the core by the
//!   effect) before anything else;
//! - a hard state is handed to [`HostEffects::persist_hard_state`], which
//!   must make a changed term/vote durable before it returns, and before any
//!   message of the same `Ready` is sent;
//! - new entries are handed to [`HostEffects::append`] *before* the messages
//!   are sent, and the append may complete later (the effect reports
//!   `log_persisted` when the log is durable): this is what lets the leader
//!   replicate in parallel with its own fsync;
//! - committed entries go to [`HostEffects::apply`] in log order, once, after
//!   the sends; then released and refused reads; then snapshot creation and
//!   transfers;
//! - the first effect error stops processing and is returned; the rest of
//!   the `Ready` is dropped (the host is expected to stop the node).
//!
//! Draining the core (`while core.has_ready()`) stays with the caller, which
//! owns the core and decides how many rounds to run.

use d_engine_core::{
    Entry, HardState, Message, NodeId, ReadReady, ReadRefused, Ready, SnapshotMeta,
};

/// What a host does for each part of a [`Ready`]. Implementations own (or
/// reach) the core, so effects that must answer it (`snapshot_installed`,
/// `snapshot_created`, `log_persisted`, `snapshot_send_failed`) call it
/// themselves, at the time the contract allows.
pub trait HostEffects {
    /// Why an effect failed (the real loop: a storage failure that stops
    /// the node; the simulator: a contract violation).
    type Error;

    /// Step 1: install the received snapshot atomically (state machine
    /// replaced, whole log discarded), then call `snapshot_installed(meta)`.
    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), Self::Error>;

    /// Step 2: make a changed `(term, voted_for)` durable before returning.
    /// A change of `commit` alone may be deferred (it is an optimisation).
    fn persist_hard_state(&mut self, hs: HardState) -> Result<(), Self::Error>;

    /// Step 3: start persisting `entries` (non-empty, contiguous; the first
    /// one's index replaces the log from there on). May return before they
    /// are durable; durability is reported later, in log order, through
    /// `log_persisted`.
    fn append(&mut self, entries: Vec<Entry>) -> Result<(), Self::Error>;

    /// Step 4: send one message (the network may lose, delay, duplicate or
    /// reorder it).
    fn send(&mut self, msg: Message) -> Result<(), Self::Error>;

    /// Step 5: apply committed entries (non-empty, in log order, each
    /// exactly once; all are durable locally).
    fn apply(&mut self, committed: Vec<Entry>) -> Result<(), Self::Error>;

    /// Step 6: answer confirmed reads once the state machine has applied
    /// their `read_index`, and fail the refused ones with their error.
    /// Called for every `Ready`, also with both lists empty.
    fn release_reads(
        &mut self,
        reads: Vec<ReadReady>,
        refused: Vec<ReadRefused>,
    ) -> Result<(), Self::Error>;

    /// Step 7: snapshot the state machine at its applied index (then call
    /// `snapshot_created`, possibly later).
    fn create_snapshot(&mut self) -> Result<(), Self::Error>;

    /// Step 7: stream the latest snapshot to `to` (on failure, call
    /// `snapshot_send_failed(to)`, possibly later).
    fn send_snapshot(&mut self, to: NodeId) -> Result<(), Self::Error>;
}

/// Executes one `Ready` in contract order (see the module header).
pub fn process_ready<H: HostEffects + ?Sized>(rd: Ready, host: &mut H) -> Result<(), H::Error> {
    let Ready {
        hard_state,
        entries,
        messages,
        committed,
        reads,
        refused_reads,
        snapshot_to_install,
        create_snapshot,
        send_snapshot_to,
    } = rd;
    debug_assert!(
        snapshot_to_install.is_none() || entries.is_empty(),
        "a Ready that installs a snapshot carries no entries"
    );
    if let Some(meta) = snapshot_to_install {
        host.install_snapshot(meta)?;
    }
    if let Some(hs) = hard_state {
        host.persist_hard_state(hs)?;
    }
    if !entries.is_empty() {
        host.append(entries)?;
    }
    for m in messages {
        host.send(m)?;
    }
    if !committed.is_empty() {
        host.apply(committed)?;
    }
    host.release_reads(reads, refused_reads)?;
    if create_snapshot {
        host.create_snapshot()?;
    }
    for to in send_snapshot_to {
        host.send_snapshot(to)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_engine_core::{EntryPayload, MessageBody};

    /// Records the order in which effects run.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        fail_on: Option<&'static str>,
    }

    impl Recorder {
        fn note(&mut self, what: &'static str, detail: String) -> Result<(), String> {
            self.calls.push(format!("{what}{detail}"));
            if self.fail_on == Some(what) {
                return Err(what.to_string());
            }
            Ok(())
        }
    }

    impl HostEffects for Recorder {
        type Error = String;
        fn install_snapshot(&mut self, meta: SnapshotMeta) -> Result<(), String> {
            self.note("install", format!(" {}", meta.last_index))
        }
        fn persist_hard_state(&mut self, hs: HardState) -> Result<(), String> {
            self.note("hard_state", format!(" t{}", hs.term))
        }
        fn append(&mut self, entries: Vec<Entry>) -> Result<(), String> {
            self.note("append", format!(" {}", entries.len()))
        }
        fn send(&mut self, msg: Message) -> Result<(), String> {
            self.note("send", format!(" ->{}", msg.to))
        }
        fn apply(&mut self, committed: Vec<Entry>) -> Result<(), String> {
            self.note("apply", format!(" {}", committed.len()))
        }
        fn release_reads(
            &mut self,
            reads: Vec<ReadReady>,
            refused: Vec<ReadRefused>,
        ) -> Result<(), String> {
            self.note("reads", format!(" {}/{}", reads.len(), refused.len()))
        }
        fn create_snapshot(&mut self) -> Result<(), String> {
            self.note("create_snapshot", String::new())
        }
        fn send_snapshot(&mut self, to: NodeId) -> Result<(), String> {
            self.note("send_snapshot", format!(" ->{to}"))
        }
    }

    fn entry(index: u64) -> Entry {
        Entry {
            index,
            term: 2,
            payload: EntryPayload::Noop,
        }
    }

    fn full_ready() -> Ready {
        Ready {
            hard_state: Some(HardState {
                term: 2,
                voted_for: Some(1),
                commit: 1,
            }),
            entries: vec![entry(2), entry(3)],
            messages: vec![
                Message {
                    from: 1,
                    to: 2,
                    term: 2,
                    body: MessageBody::TimeoutNow,
                },
                Message {
                    from: 1,
                    to: 3,
                    term: 2,
                    body: MessageBody::TimeoutNow,
                },
            ],
            committed: vec![entry(1)],
            reads: vec![ReadReady {
                id: 7,
                read_index: 1,
            }],
            refused_reads: vec![],
            snapshot_to_install: None,
            create_snapshot: true,
            send_snapshot_to: vec![4],
        }
    }

    #[test]
    fn effects_run_in_contract_order() {
        let mut r = Recorder::default();
        process_ready(full_ready(), &mut r).unwrap();
        assert_eq!(
            r.calls,
            [
                "hard_state t2",
                "append 2",
                "send ->2",
                "send ->3",
                "apply 1",
                "reads 1/0",
                "create_snapshot",
                "send_snapshot ->4"
            ]
        );
    }

    #[test]
    fn install_comes_first_and_empty_parts_are_skipped() {
        let mut r = Recorder::default();
        let rd = Ready {
            snapshot_to_install: Some(SnapshotMeta {
                last_index: 9,
                last_term: 1,
                membership: Default::default(),
            }),
            hard_state: Some(HardState {
                term: 3,
                voted_for: None,
                commit: 9,
            }),
            ..Ready::default()
        };
        process_ready(rd, &mut r).unwrap();
        assert_eq!(r.calls, ["install 9", "hard_state t3", "reads 0/0"]);
    }

    #[test]
    fn a_failed_hard_state_sends_nothing() {
        let mut r = Recorder {
            fail_on: Some("hard_state"),
            ..Recorder::default()
        };
        assert_eq!(
            process_ready(full_ready(), &mut r),
            Err("hard_state".to_string())
        );
        assert_eq!(r.calls, ["hard_state t2"]);
    }
}
