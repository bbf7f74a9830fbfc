//! [`AppStateMachine`]: an [`Application`] as the engine's
//! [`StateMachine`]. It keeps what every machine needs and an application
//! should not write: the applied index and term, the membership from
//! configuration entries, the write-id table, and the snapshot records.
//!
//! Log payload of an application command: `crate::runtime::app_ops`
//! (`u8 0xA5 | u8 flags | [u64 client_id, u64 seq] | command bytes`).
//!
//! Snapshot: `App` records, each starting with a kind byte: one
//! `KIND_SESSIONS` record (the write-id table) first, then the image
//! written by `SnapshotImage::write_to` in `KIND_DATA` chunks of at most
//! `CHUNK_BYTES` (1 MiB). Neither direction holds the whole image in
//! memory (`image.rs`): it is written on a thread of its own into the
//! snapshot file chunk by chunk, and `restore` reads the records from the
//! file as it goes; the file's checksum is verified at its end, after
//! `restore` returned and before the restored instance replaces the
//! state, so a damaged or refused file leaves the previous state.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use d_engine_core::{membership_after, Entry, EntryPayload, Membership, SnapshotMeta};
use d_engine_storage::sm::{
    Applied, ApplyResult, SmError, SnapshotRecord, SnapshotSource, StateMachine,
};
use d_engine_storage::snapshot::SnapshotFileReader;

use super::image::{kv_records, panic_text, AppSnapshotSource, ImageReader, KIND_SESSIONS};
use super::sessions::{Seen, Sessions};
use super::{AppError, Application, Applying, Codec};
use crate::runtime::app_ops::{app_payload, APP_MAGIC, FLAG_WRITE_ID};

/// Builds the engine's application factory from the application's.
pub(super) type Factory<A> = Arc<dyn Fn() -> A + Send + Sync>;

struct State<A> {
    app: A,
    applied_index: u64,
    applied_term: u64,
    membership: Membership,
    sessions: Sessions,
}

/// Runs an [`Application`] as the engine's state machine (memory-resident:
/// on start it is restored from the latest snapshot, then the log after it
/// is replayed). Built by [`super::AppEngine`]; public so that the
/// conformance checks and custom hosts can drive it directly.
pub struct AppStateMachine<A: Application> {
    state: RwLock<State<A>>,
    factory: Factory<A>,
    /// Set when `apply` failed: the state may hold part of a batch.
    failed: Mutex<Option<String>>,
}

/// Encodes a command for the log (see the module docs).
pub(super) fn encode_payload<C: Codec>(cmd: &C, write_id: Option<(u64, u64)>) -> Bytes {
    app_payload(&cmd.encode(), write_id)
}

/// A write id: `(client_id, seq)`.
type Id = (u64, u64);

/// The write id and command bytes of a payload, or why it is not one.
fn decode_payload(b: &[u8]) -> Result<(Option<Id>, &[u8]), String> {
    match b {
        [APP_MAGIC, 0, rest @ ..] => Ok((None, rest)),
        [APP_MAGIC, FLAG_WRITE_ID, rest @ ..] if rest.len() >= 16 => {
            let client = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
            let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
            Ok((Some((client, seq)), &rest[16..]))
        }
        [APP_MAGIC, ..] => Err("malformed application command header".into()),
        _ => Err(
            "not an application command (a key-value command was proposed to a node \
                  running an application state machine)"
                .into(),
        ),
    }
}

/// Commands waiting to be applied as one batch.
struct Run<C> {
    items: Vec<(Applying<C>, Option<Id>)>,
    ids: HashSet<(u64, u64)>,
}

impl<A: Application> AppStateMachine<A> {
    /// An empty machine (applied index 0).
    pub fn new(factory: impl Fn() -> A + Send + Sync + 'static) -> Self {
        Self::with_factory(Arc::new(factory))
    }

    pub(super) fn with_factory(factory: Factory<A>) -> Self {
        AppStateMachine {
            state: RwLock::new(State {
                app: factory(),
                applied_index: 0,
                applied_term: 0,
                membership: Membership::default(),
                sessions: Sessions::default(),
            }),
            factory,
            failed: Mutex::new(None),
        }
    }

    /// A machine loaded from `snapshot` (or empty without one).
    pub(super) fn open(factory: Factory<A>, snapshot: Option<&Path>) -> Result<Self, SmError> {
        let m = Self::with_factory(factory);
        if let Some(p) = snapshot {
            m.install_snapshot(p)?;
        }
        Ok(m)
    }

    /// Answers `q` from the applied state (shared lock: concurrent with
    /// other queries, never with an apply).
    pub fn query(&self, q: &A::Query) -> A::QueryOutput {
        self.state.read().expect("poisoned").app.query(q)
    }

    /// Applies the pending run as one batch; pushes one result per command.
    fn flush(
        &self,
        st: &mut State<A>,
        run: &mut Run<A::Command>,
        out: &mut Vec<Applied>,
    ) -> Result<(), SmError> {
        if run.items.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut run.items);
        run.ids.clear();
        let (first, last) = (items[0].0.index, items[items.len() - 1].0.index);
        let mut meta = Vec::with_capacity(items.len());
        let batch: Vec<Applying<A::Command>> = items
            .into_iter()
            .map(|(a, id)| {
                meta.push((a.index, a.term, id));
                a
            })
            .collect();
        let where_ = if first == last {
            format!("entry {first}")
        } else {
            format!("entries {first}..={last} (one batch)")
        };
        let outputs = match catch_unwind(AssertUnwindSafe(|| st.app.apply(batch))) {
            Ok(Ok(o)) if o.len() == meta.len() => o,
            Ok(Ok(o)) => Err(format!(
                "apply returned {} outputs for {} commands at {where_}",
                o.len(),
                meta.len()
            ))
            .map_err(|e| self.fail(e))?,
            Ok(Err(e)) => return Err(self.fail(format!("apply failed at {where_}: {e}"))),
            Err(p) => {
                return Err(self.fail(format!("apply panicked at {where_}: {}", panic_text(p))))
            }
        };
        for ((index, term, id), o) in meta.into_iter().zip(outputs) {
            let bytes = Bytes::from(o.encode());
            if let Some((client, seq)) = id {
                st.sessions.record(client, seq, index, bytes.clone());
            }
            st.applied_index = index;
            st.applied_term = term;
            out.push(applied(index, term, index, ApplyResult::Output(bytes)));
        }
        Ok(())
    }

    fn fail(&self, msg: String) -> SmError {
        *self.failed.lock().expect("poisoned") = Some(msg.clone());
        SmError::Application(msg)
    }
}

fn applied(index: u64, term: u64, revision: u64, result: ApplyResult) -> Applied {
    Applied {
        index,
        term,
        revision,
        result,
        events: Vec::new(),
    }
}

impl<A: Application> StateMachine for AppStateMachine<A> {
    fn apply(&self, entries: &[Entry]) -> Result<Vec<Applied>, SmError> {
        if let Some(f) = &*self.failed.lock().expect("poisoned") {
            return Err(SmError::Application(format!(
                "stopped after an earlier failure ({f}); restart the node"
            )));
        }
        let mut st = self.state.write().expect("poisoned");
        let start = st.applied_index;
        for (expect, e) in (start + 1..).zip(entries.iter().filter(|e| e.index > start)) {
            if e.index != expect {
                return Err(SmError::Gap {
                    applied: expect - 1,
                    got: e.index,
                });
            }
        }
        let mut out = Vec::with_capacity(entries.len());
        let mut run = Run {
            items: Vec::new(),
            ids: HashSet::new(),
        };
        for e in entries.iter().filter(|e| e.index > start) {
            let (index, term) = (e.index, e.term);
            let done = match &e.payload {
                EntryPayload::Noop => ApplyResult::Noop,
                EntryPayload::Config(cc) => {
                    self.flush(&mut st, &mut run, &mut out)?;
                    st.membership = membership_after(&st.membership, cc);
                    ApplyResult::MembershipChanged
                }
                EntryPayload::Command(b) => match decode_payload(b) {
                    Err(reason) => ApplyResult::Rejected { reason },
                    Ok((id, body)) => {
                        let seen = match id {
                            Some((c, s)) if run.ids.contains(&(c, s)) => {
                                // A retry of a command in this very batch.
                                self.flush(&mut st, &mut run, &mut out)?;
                                st.sessions.check(c, s)
                            }
                            Some((c, s)) => st.sessions.check(c, s),
                            None => Seen::New,
                        };
                        match seen {
                            Seen::Done { revision, output } => {
                                self.flush(&mut st, &mut run, &mut out)?;
                                out.push(applied(
                                    index,
                                    term,
                                    revision,
                                    ApplyResult::Output(output),
                                ));
                                st.applied_index = index;
                                st.applied_term = term;
                                continue;
                            }
                            Seen::Expired => {
                                let (client_id, seq) = id.expect("expired needs a write id");
                                ApplyResult::DuplicateExpired { client_id, seq }
                            }
                            Seen::New => match A::Command::decode(body) {
                                Err(err) => ApplyResult::Rejected {
                                    reason: format!("application command: {err}"),
                                },
                                Ok(command) => {
                                    if let Some(id) = id {
                                        run.ids.insert(id);
                                    }
                                    run.items.push((
                                        Applying {
                                            index,
                                            term,
                                            command,
                                        },
                                        id,
                                    ));
                                    continue;
                                }
                            },
                        }
                    }
                },
            };
            // Anything but a new command: the batch before it goes first.
            self.flush(&mut st, &mut run, &mut out)?;
            out.push(applied(index, term, index, done));
            st.applied_index = index;
            st.applied_term = term;
        }
        self.flush(&mut st, &mut run, &mut out)?;
        Ok(out)
    }

    fn data_bytes(&self) -> u64 {
        self.state.read().expect("poisoned").app.data_bytes()
    }

    fn applied_index(&self) -> u64 {
        self.state.read().expect("poisoned").applied_index
    }

    fn applied_term(&self) -> u64 {
        self.state.read().expect("poisoned").applied_term
    }

    fn membership(&self) -> Membership {
        self.state.read().expect("poisoned").membership.clone()
    }

    fn begin_snapshot(&self) -> Result<Box<dyn SnapshotSource>, SmError> {
        let st = self.state.read().expect("poisoned");
        let image = catch_unwind(AssertUnwindSafe(|| st.app.snapshot())).map_err(|p| {
            SmError::Application(format!(
                "snapshot at index {} panicked: {}",
                st.applied_index,
                panic_text(p)
            ))
        })?;
        let mut sessions = vec![KIND_SESSIONS];
        sessions.extend_from_slice(&st.sessions.encode());
        Ok(Box::new(AppSnapshotSource::new(
            SnapshotMeta {
                last_index: st.applied_index,
                last_term: st.applied_term,
                membership: st.membership.clone(),
            },
            Bytes::from(sessions),
            image,
        )))
    }

    /// Restores a fresh instance from the file as it reads it (see the
    /// module docs), checks the rest of the file to its checksum, and only
    /// then replaces the state: a damaged file or a failing reader keeps
    /// the old one.
    fn install_snapshot(&self, path: &Path) -> Result<SnapshotMeta, SmError> {
        let mut r = SnapshotFileReader::open(path)?;
        let meta = r.meta().clone();
        let refused = |why: String| {
            SmError::Application(format!(
                "snapshot {} (index {}) refused, the previous state is kept: {why}",
                path.display(),
                meta.last_index
            ))
        };
        let sessions = match r.next_record()? {
            Some(SnapshotRecord::App(b)) if b.first() == Some(&KIND_SESSIONS) => {
                Sessions::decode(&b[1..])
                    .map_err(|e| SmError::Corrupt(format!("snapshot {}: {e}", path.display())))?
            }
            Some(SnapshotRecord::App(_)) | None => {
                return Err(refused("it does not start with a write-id table".into()))
            }
            Some(_) => return Err(kv_records(path)),
        };
        let mut fresh = (self.factory)();
        let mut image = ImageReader::new(&mut r, path);
        let restored = catch_unwind(AssertUnwindSafe(|| fresh.restore(&mut image)));
        if let Some(e) = image.failed.take() {
            // The file, not the reader, failed.
            return Err(e);
        }
        // The rest of the file (image bytes the reader left unread, the
        // trailer) is checked whether the reader accepted the image or not:
        // a damaged file is reported as such, not as a refusal.
        image.drain()?;
        match restored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(refused(format!("the application's reader failed: {e}"))),
            Err(p) => {
                return Err(refused(format!(
                    "the application's reader panicked: {}",
                    panic_text(p)
                )))
            }
        }
        *self.state.write().expect("poisoned") = State {
            app: fresh,
            applied_index: meta.last_index,
            applied_term: meta.last_term,
            membership: meta.membership.clone(),
            sessions,
        };
        *self.failed.lock().expect("poisoned") = None;
        Ok(meta)
    }
}

impl From<AppError> for SmError {
    fn from(e: AppError) -> Self {
        SmError::Application(e.0)
    }
}
