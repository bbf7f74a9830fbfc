//! State shared by the node handle (any task) and the runtime threads, and
//! the request paths of [`super::NodeHandle`].
//!
//! Requests that need the consensus loop go through one channel whose
//! admission is bounded by counters (`queues.input_capacity`,
//! `queues.max_pending_proposals`, `queues.max_pending_reads`): a full queue
//! answers `Overloaded` at once. Lease and eventual reads never touch the
//! loop: they use the atomics the loop publishes after every iteration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use d_engine_api::{
    CasOutcome, Consistency, Error, KeyValue, LeaderInfo, MemberInfo, MemberRole, Result,
};
use d_engine_core::{ConfChange, Membership, Message, NodeId, ProposeError, SnapshotMeta, Term};
use d_engine_storage::command::{Command, Op};
use d_engine_storage::sm::{logical_kv_bytes, ApplyResult, KeyValue as SmKv, StateMachine};
use tokio::sync::{oneshot, watch};

use super::addr::MemberAddr;
use super::handle::*;
use super::watch_hub::{HubStream, WatchHub};
use crate::config::Config;
use crate::transport::PeerInbox;

/// Role codes stored in [`Published::role`].
pub(crate) const ROLE_FOLLOWER: u8 = 0;
pub(crate) const ROLE_PRE_CANDIDATE: u8 = 1;
pub(crate) const ROLE_CANDIDATE: u8 = 2;
pub(crate) const ROLE_LEADER: u8 = 3;
pub(crate) const ROLE_LEARNER: u8 = 4;

pub(crate) fn role_code(r: d_engine_core::Role) -> u8 {
    use d_engine_core::Role::*;
    match r {
        Follower => ROLE_FOLLOWER,
        PreCandidate => ROLE_PRE_CANDIDATE,
        Candidate => ROLE_CANDIDATE,
        Leader => ROLE_LEADER,
        Learner => ROLE_LEARNER,
    }
}

/// Lifecycle states stored in [`Shared::state`].
pub(crate) const STATE_RUNNING: u8 = 0;
pub(crate) const STATE_STOPPING: u8 = 1;
pub(crate) const STATE_STOPPED: u8 = 2;
pub(crate) const STATE_FAILED: u8 = 3;

/// The result a proposal waiter receives from the apply thread.
pub(crate) type ProposeReply = Result<ProposeOutcome>;

/// Something waiting for a proposal's entry to be applied. Dropping it
/// releases its slot in `max_pending_proposals`.
pub(crate) struct ProposalWaiter {
    pub(crate) tx: oneshot::Sender<ProposeReply>,
    _slot: Slot,
}

impl ProposalWaiter {
    pub(crate) fn complete(self, r: ProposeReply) {
        let _ = self.tx.send(r);
    }
}

/// Something waiting for the applied index to reach a read index. Dropping
/// it releases its slot in `max_pending_reads`.
pub(crate) struct ReadWaiter {
    pub(crate) tx: oneshot::Sender<Result<u64>>,
    _slot: Slot,
}

impl ReadWaiter {
    pub(crate) fn complete(self, r: Result<u64>) {
        let _ = self.tx.send(r);
    }

    /// Releases reads confirmed at `read_index` if the state machine has
    /// applied that far (`applied`); otherwise hands them back to be parked
    /// until it has.
    pub(crate) fn release_if_applied(
        read_index: u64,
        applied: u64,
        waiters: Vec<ReadWaiter>,
    ) -> Option<Vec<ReadWaiter>> {
        if read_index > applied {
            return Some(waiters);
        }
        for w in waiters {
            w.complete(Ok(applied));
        }
        None
    }
}

/// One unit of a bounded counter, released on drop.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take_slot(counter: &Arc<AtomicUsize>, cap: usize, what: &str, key: &str) -> Result<Slot> {
    let n = counter.fetch_add(1, Ordering::AcqRel);
    if n >= cap {
        counter.fetch_sub(1, Ordering::AcqRel);
        return Err(Error::Overloaded(format!(
            "{n} {what} are pending, the limit is {key} = {cap}; back off and retry"
        )));
    }
    Ok(Slot(counter.clone()))
}

/// Inputs of the consensus loop.
pub(crate) enum Input {
    // -- from clients (counted against queues.input_capacity) --
    Propose {
        cmd: Bytes,
        waiter: ProposalWaiter,
    },
    Read {
        waiter: ReadWaiter,
    },
    ConfChange {
        change: ConfChange,
        waiter: ProposalWaiter,
    },
    Transfer {
        to: NodeId,
        tx: oneshot::Sender<Result<()>>,
    },
    Snapshot {
        tx: oneshot::Sender<Result<u64>>,
    },
    // -- from peers (counted against queues.peer_inbox_capacity) --
    /// A message and when the transport handed it over (for the queueing
    /// delay reported when an election starts).
    Peer(Message, Instant),
    // -- internal (never refused) --
    Unreachable(NodeId),
    SnapshotStaged {
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        path: PathBuf,
    },
    Persisted {
        index: u64,
        term: u64,
    },
    SnapshotBegun {
        result: std::result::Result<Box<dyn d_engine_storage::sm::SnapshotSource>, String>,
    },
    SnapshotCreated {
        result: std::result::Result<(SnapshotMeta, PathBuf), String>,
    },
    SnapshotSendFailed(NodeId),
    Fatal(String),
    Shutdown,
}

impl Input {
    pub(crate) fn is_client(&self) -> bool {
        matches!(
            self,
            Input::Propose { .. }
                | Input::Read { .. }
                | Input::ConfChange { .. }
                | Input::Transfer { .. }
                | Input::Snapshot { .. }
        )
    }

    /// Fails a client input (the node is stopping).
    pub(crate) fn fail(self, e: Error) {
        match self {
            Input::Propose { waiter, .. } | Input::ConfChange { waiter, .. } => {
                waiter.complete(Err(e))
            }
            Input::Read { waiter } => waiter.complete(Err(e)),
            Input::Transfer { tx, .. } => {
                let _ = tx.send(Err(e));
            }
            Input::Snapshot { tx } => {
                let _ = tx.send(Err(e));
            }
            _ => {}
        }
    }
}

/// Members as published by the loop.
#[derive(Clone, Debug, Default)]
pub(crate) struct MembersView {
    pub(crate) list: Vec<MemberInfo>,
    pub(crate) membership: Membership,
}

impl MembersView {
    pub(crate) fn from_membership(m: &Membership) -> Self {
        let list = m
            .members
            .iter()
            .map(|(id, mem)| {
                let a = MemberAddr::decode(&mem.addr);
                MemberInfo {
                    id: *id,
                    peer_addr: a.peer,
                    client_addr: a.client,
                    role: match mem.role {
                        d_engine_core::MemberRole::Voter => MemberRole::Voter,
                        d_engine_core::MemberRole::Learner => MemberRole::Learner,
                    },
                }
            })
            .collect();
        MembersView {
            list,
            membership: m.clone(),
        }
    }

    pub(crate) fn client_addr(&self, id: NodeId) -> Option<String> {
        self.list
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.client_addr.clone())
            .filter(|a| !a.is_empty())
    }

    pub(crate) fn peer_map(&self, except: NodeId) -> BTreeMap<NodeId, String> {
        self.list
            .iter()
            .filter(|m| m.id != except)
            .map(|m| (m.id, m.peer_addr.clone()))
            .collect()
    }
}

/// Values the consensus loop publishes after every iteration.
#[derive(Default)]
pub(crate) struct Published {
    pub(crate) role: AtomicU8,
    pub(crate) term: AtomicU64,
    /// 0 = unknown.
    pub(crate) leader: AtomicU64,
    pub(crate) commit: AtomicU64,
    pub(crate) last_index: AtomicU64,
    pub(crate) snapshot_index: AtomicU64,
    /// Payload bytes of the committed log since the latest snapshot.
    pub(crate) log_bytes: AtomicU64,
    /// Nanoseconds since `Shared::epoch` until which this leader's lease
    /// holds; 0 = no lease. Only set once the leader has committed an entry
    /// of its term.
    pub(crate) lease_deadline_ns: AtomicU64,
    /// This node leads and has committed an entry of its current term.
    pub(crate) leader_ready: AtomicBool,
    /// This node is the only voter of its latest configuration (the one in
    /// effect on it: appended, not necessarily committed). Nobody else can
    /// be elected or commit while it holds: any configuration that adds a
    /// voter is appended on this node first and clears it in the same loop
    /// iteration, before the new voter even learns of it.
    pub(crate) sole_voter: AtomicBool,
    pub(crate) members: RwLock<Arc<MembersView>>,
}

/// See the module docs.
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    pub(crate) config: Config,
    pub(crate) epoch: Instant,
    pub(crate) input: std_mpsc::Sender<Input>,
    /// Client inputs queued for the loop.
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) pending_proposals: Arc<AtomicUsize>,
    pub(crate) pending_reads: Arc<AtomicUsize>,
    /// Peer messages queued for the loop.
    pub(crate) peer_queued: Arc<AtomicUsize>,
    pub(crate) published: Published,
    pub(crate) applied: AtomicU64,
    pub(crate) applied_rx: watch::Receiver<u64>,
    /// `None` once the node stopped (so sled is closed and its lock released
    /// even while handles are still alive).
    pub(crate) sm: RwLock<Option<Arc<dyn StateMachine>>>,
    pub(crate) hub: Arc<WatchHub>,
    pub(crate) leader_tx: watch::Sender<LeaderInfo>,
    pub(crate) members_tx: watch::Sender<Vec<MemberInfo>>,
    pub(crate) state: AtomicU8,
    pub(crate) failure: Mutex<Option<String>>,
    pub(crate) stopped_tx: watch::Sender<bool>,
    pub(crate) staging_dir: PathBuf,
    pub(crate) threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The storage quota: measured by the apply thread, enforced when a
    /// write is admitted (see [`super::quota`]).
    pub(crate) quota: super::quota::Quota,
}

/// Unix time in milliseconds (TTL deadlines and expiry checks).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn to_client_kv(kv: &SmKv) -> KeyValue {
    KeyValue {
        key: kv.key.to_vec(),
        value: kv.value.to_vec(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        expires_at_ms: kv.expires_at_ms.unwrap_or(0),
    }
}

/// Response bytes one pair costs in a read's byte budget: its key, value
/// and the protobuf framing of a `KeyValue` with every field set.
pub(crate) fn read_cost(kv: &SmKv) -> usize {
    kv.key.len() + kv.value.len() + 64
}

/// Response bytes an absent key costs in `get_multi`'s budget.
pub(crate) const ABSENT_COST: usize = 4;

/// The outcome of [`Shared::get_multi_shared`].
#[derive(Debug)]
pub(crate) enum MultiRead {
    /// One entry per requested key, in request order.
    Complete(Vec<Option<SmKv>>),
    /// Reading stopped at the budget: the first `read` keys already cost
    /// `bytes`.
    OverBudget { read: usize, bytes: usize },
}

/// The outcome of [`Shared::scan_prefix_shared`].
#[derive(Debug)]
pub(crate) struct SharedScan {
    pub(crate) kvs: Vec<SmKv>,
    /// More pairs match than were returned (limit or budget).
    pub(crate) more: bool,
}

/// The positions `(first, again)` of the first key that appears twice.
pub(crate) fn first_duplicate(keys: &[Bytes]) -> Option<(usize, usize)> {
    let mut seen = std::collections::HashMap::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        if let Some(first) = seen.insert(&k[..], i) {
            return Some((first, i));
        }
    }
    None
}

/// "keys[again] repeats keys[first] (<key>); ..." for a duplicate key.
pub(crate) fn duplicate_key_message(keys: &[Bytes], first: usize, again: usize) -> String {
    format!(
        "keys[{again}] repeats keys[{first}] ({}); ask for each key once per get_multi",
        show_key(&keys[again])
    )
}

/// A key for an error message: text if it is printable UTF-8, else escaped,
/// cut after 64 bytes.
pub(crate) fn show_key(k: &[u8]) -> String {
    let cut = &k[..k.len().min(64)];
    let more = if k.len() > 64 { "…" } else { "" };
    match std::str::from_utf8(cut) {
        Ok(s) if !s.chars().any(char::is_control) => format!("'{s}'{more}"),
        _ => format!("{}{more}", cut.escape_ascii()),
    }
}

fn sm_err(e: d_engine_storage::sm::SmError) -> Error {
    Error::Storage(e.to_string())
}

impl Shared {
    // ----- lifecycle helpers -------------------------------------------

    /// The state machine, or the reason the node cannot serve.
    pub(crate) fn sm(&self) -> Result<Arc<dyn StateMachine>> {
        match &*self.sm.read().expect("poisoned") {
            Some(sm) => Ok(sm.clone()),
            None => Err(self.stopped_error()),
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_RUNNING
    }

    fn check_running(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            STATE_RUNNING => Ok(()),
            STATE_FAILED => Err(Error::Storage(format!(
                "node {} stopped after a storage failure: {}",
                self.id,
                self.failure
                    .lock()
                    .expect("poisoned")
                    .clone()
                    .unwrap_or_default()
            ))),
            _ => Err(Error::ShuttingDown(format!("node {} is stopping", self.id))),
        }
    }

    fn stopped_error(&self) -> Error {
        match self.check_running() {
            Err(e) => e,
            Ok(()) => Error::ShuttingDown(format!("node {} is stopping", self.id)),
        }
    }

    /// Queues a client input, refusing with `Overloaded` when the queue is full.
    fn send_client(&self, input: Input) -> Result<()> {
        let cap = self.config.queues.input_capacity;
        let n = self.queued.fetch_add(1, Ordering::AcqRel);
        if n >= cap {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Overloaded(format!(
                "{n} requests are queued for the consensus loop, the limit is \
                 queues.input_capacity = {cap}; back off and retry"
            )));
        }
        if self.input.send(input).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(self.stopped_error());
        }
        Ok(())
    }

    /// Queues an internal input (never refused while the loop runs).
    pub(crate) fn send_internal(&self, input: Input) {
        let _ = self.input.send(input);
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T>>, what: &str) -> Result<T> {
        match tokio::time::timeout(self.config.request_timeout(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(Error::Timeout(format!(
                "{what} did not complete within queues.request_timeout_ms = {} ms",
                self.config.queues.request_timeout_ms
            ))),
        }
    }

    // ----- leader info ---------------------------------------------------

    pub(crate) fn members_view(&self) -> Arc<MembersView> {
        self.published.members.read().expect("poisoned").clone()
    }

    /// The error for "this node cannot take the request, go to the leader".
    pub(crate) fn not_leader(&self, leader: Option<NodeId>) -> Error {
        match leader.filter(|l| *l != 0 && *l != self.id) {
            Some(id) => Error::NotLeader {
                leader_id: Some(id),
                leader_addr: self.members_view().client_addr(id),
            },
            None => Error::NoLeader(format!(
                "node {} knows no leader right now (election in progress); retry shortly",
                self.id
            )),
        }
    }

    pub(crate) fn map_propose_error(&self, e: ProposeError) -> Error {
        match e {
            ProposeError::NotLeader { leader } => self.not_leader(leader),
            ProposeError::TransferInProgress => Error::ChangeInProgress(
                "a leadership transfer is in progress; retry shortly".into(),
            ),
            ProposeError::ConfChangeInProgress => Error::ChangeInProgress(
                "a membership change is still uncommitted (or the new leader has not yet \
                 committed an entry of its term); retry shortly"
                    .into(),
            ),
            ProposeError::InvalidConfChange(s) => Error::InvalidArgument(s),
        }
    }

    fn is_leader(&self) -> bool {
        self.published.role.load(Ordering::Acquire) == ROLE_LEADER
    }

    fn leader_hint_error(&self) -> Error {
        self.not_leader(Some(self.published.leader.load(Ordering::Acquire)))
    }

    pub(crate) fn members(&self) -> Vec<MemberInfo> {
        self.members_view().list.clone()
    }

    pub(crate) fn leader(&self) -> LeaderInfo {
        let id = self.published.leader.load(Ordering::Acquire);
        LeaderInfo {
            id,
            client_addr: if id == 0 {
                String::new()
            } else {
                self.members_view().client_addr(id).unwrap_or_default()
            },
            term: self.published.term.load(Ordering::Acquire),
        }
    }

    pub(crate) fn header(&self) -> Header {
        Header {
            node_id: self.id,
            term: self.published.term.load(Ordering::Acquire),
            revision: self.applied.load(Ordering::Acquire),
        }
    }

    /// A consistent view: the loop publishes its commit index at the end of
    /// an iteration, so the apply thread can be ahead of it for a moment;
    /// the commit index reported is never below the applied index.
    pub(crate) fn status(&self) -> NodeStatus {
        let p = &self.published;
        let applied = self.applied.load(Ordering::Acquire);
        NodeStatus {
            id: self.id,
            role: match p.role.load(Ordering::Acquire) {
                ROLE_LEADER => NodeRole::Leader,
                ROLE_CANDIDATE => NodeRole::Candidate,
                ROLE_PRE_CANDIDATE => NodeRole::PreCandidate,
                ROLE_LEARNER => NodeRole::Learner,
                _ => NodeRole::Follower,
            },
            term: p.term.load(Ordering::Acquire),
            leader_id: p.leader.load(Ordering::Acquire),
            commit_index: p.commit.load(Ordering::Acquire).max(applied),
            applied_index: applied,
            last_log_index: p.last_index.load(Ordering::Acquire),
            snapshot_index: p.snapshot_index.load(Ordering::Acquire),
            members: self.members(),
            sole_voter: p.sole_voter.load(Ordering::Acquire),
            alarms: if self.quota.alarm() {
                vec![Alarm::NoSpace]
            } else {
                Vec::new()
            },
            data_bytes: self.quota.used(),
            quota_bytes: self.quota.limit(),
            log_bytes: p.log_bytes.load(Ordering::Acquire),
        }
    }

    pub(crate) async fn wait_leader(&self, timeout: Duration) -> Result<LeaderInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.leader_tx.subscribe();
        loop {
            self.check_running()?;
            let l = self.leader();
            let ready = l.id != 0
                && (l.id != self.id || self.published.leader_ready.load(Ordering::Acquire));
            if ready {
                return Ok(l);
            }
            // The leader watch fires on leader/term changes; poll briefly as
            // well for `leader_ready`, which has no notification of its own.
            let step = tokio::time::Instant::now() + Duration::from_millis(5);
            let until = step.min(deadline);
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "no leader was elected within {timeout:?}; check that a majority of the \
                     members are running and reachable"
                )));
            }
            let _ = tokio::time::timeout_at(until, rx.changed()).await;
        }
    }

    // ----- writes --------------------------------------------------------

    /// The API's size limits with this node's configured maxima.
    fn limits(&self) -> d_engine_api::Limits {
        d_engine_api::Limits {
            max_key_bytes: self.config.limits.max_key_bytes,
            max_value_bytes: self.config.limits.max_value_bytes,
        }
    }

    fn validate_key(&self, key: &[u8]) -> Result<()> {
        Ok(self.limits().key("key", key)?)
    }

    fn validate_value(&self, value: &[u8]) -> Result<()> {
        Ok(self.limits().value("value", value)?)
    }

    fn validate_op(&self, op: &Op) -> Result<()> {
        match op {
            Op::Put { key, value, .. } => {
                self.validate_key(key)?;
                self.validate_value(value)
            }
            Op::Delete { key } => self.validate_key(key),
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
                ..
            } => {
                self.validate_key(key)?;
                if let Some(v) = expected {
                    self.validate_value(v)?;
                }
                if let Some(v) = new_value {
                    self.validate_value(v)?;
                }
                Ok(())
            }
            Op::Expire { .. } => Ok(()),
        }
    }

    fn deadline(ttl: Option<Duration>) -> Result<Option<u64>> {
        match ttl {
            None => Ok(None),
            Some(d) if d.is_zero() => Err(Error::InvalidArgument(
                "ttl must be > 0 (omit it for a key that never expires)".into(),
            )),
            Some(d) => {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                Ok(Some(now_ms().saturating_add(ms.max(1))))
            }
        }
    }

    /// The logical bytes a write stores if it succeeds (see
    /// [`d_engine_storage::sm::StateMachine::data_bytes`]); 0 for one that
    /// stores nothing (a delete, a CAS that deletes, expiry).
    fn stored_bytes(op: &Op) -> u64 {
        match op {
            Op::Put { key, value, .. }
            | Op::CompareAndSwap {
                key,
                new_value: Some(value),
                ..
            } => logical_kv_bytes(key.len(), value.len()),
            Op::CompareAndSwap {
                new_value: None, ..
            }
            | Op::Delete { .. }
            | Op::Expire { .. } => 0,
        }
    }

    /// Admits a write: the node runs, the op is valid, this node leads, and
    /// the write fits in the storage quota (checked here, on the leader,
    /// only: once in the log a write is applied on every replica).
    pub(crate) async fn propose(&self, cmd: Command) -> Result<ProposeOutcome> {
        self.check_running()?;
        self.validate_op(&cmd.op)?;
        if !self.is_leader() {
            return Err(self.leader_hint_error());
        }
        if let Err(e) = self.quota.admit(Self::stored_bytes(&cmd.op), self.id) {
            return Err(match (e, &cmd.client) {
                // Admission cannot tell a retry from a first attempt: an
                // earlier attempt with the same write id may have been
                // applied before the quota was reached.
                (Error::NoSpace(m), Some(c)) => Error::NoSpace(format!(
                    "{m}. (This request, write id {}/{}, was refused; if it retries an \
                     attempt whose outcome was unknown, that attempt may have been applied: \
                     read the key to find out.)",
                    c.client_id, c.seq
                )),
                (e, _) => e,
            });
        }
        let slot = take_slot(
            &self.pending_proposals,
            self.config.queues.max_pending_proposals,
            "writes",
            "queues.max_pending_proposals",
        )?;
        let (tx, rx) = oneshot::channel();
        self.send_client(Input::Propose {
            cmd: cmd.encode(),
            waiter: ProposalWaiter { tx, _slot: slot },
        })?;
        self.wait(rx, "the write").await
    }

    fn command(op: Op, write_id: Option<WriteId>) -> Command {
        match write_id {
            Some(w) if w.client_id != 0 => {
                Command::with_user_client(op, &w.user, w.client_id, w.seq)
            }
            _ => Command::new(op),
        }
    }

    fn rejected(reason: String) -> Error {
        Error::InvalidArgument(reason)
    }

    pub(crate) async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        ttl: Option<Duration>,
        write_id: Option<WriteId>,
    ) -> Result<u64> {
        let op = Op::Put {
            key,
            value,
            expires_at_ms: Self::deadline(ttl)?,
        };
        let out = self.propose(Self::command(op, write_id)).await?;
        match out.result {
            ApplyResult::Put { .. } => Ok(out.revision),
            other => Err(self.unexpected(other)),
        }
    }

    pub(crate) async fn delete(
        &self,
        key: Bytes,
        write_id: Option<WriteId>,
    ) -> Result<DeleteOutcome> {
        let out = self
            .propose(Self::command(Op::Delete { key }, write_id))
            .await?;
        match out.result {
            ApplyResult::Delete { existed } => Ok(DeleteOutcome {
                deleted: existed,
                revision: out.revision,
            }),
            other => Err(self.unexpected(other)),
        }
    }

    pub(crate) async fn compare_and_swap(
        &self,
        key: Bytes,
        expected: Option<Bytes>,
        new_value: Option<Bytes>,
        ttl: Option<Duration>,
        write_id: Option<WriteId>,
    ) -> Result<CasOutcome> {
        let op = Op::CompareAndSwap {
            key,
            expected,
            new_value,
            expires_at_ms: Self::deadline(ttl)?,
        };
        let out = self.propose(Self::command(op, write_id)).await?;
        match out.result {
            ApplyResult::CompareAndSwap { succeeded, current } => Ok(CasOutcome {
                succeeded,
                current: current.as_ref().map(to_client_kv),
                revision: out.revision,
            }),
            other => Err(self.unexpected(other)),
        }
    }

    fn unexpected(&self, r: ApplyResult) -> Error {
        match r {
            ApplyResult::Rejected { reason } => Self::rejected(reason),
            ApplyResult::DuplicateExpired { client_id, seq } => Error::InvalidArgument(format!(
                "write (client_id {client_id}, seq {seq}) is a retry older than the \
                 deduplication window; it was not applied again and its result is no longer \
                 known"
            )),
            other => Error::Internal(format!("unexpected apply result {other:?}")),
        }
    }

    // ----- reads ---------------------------------------------------------

    /// Waits until this node may serve a read with `consistency`.
    async fn read_barrier(&self, consistency: Consistency) -> Result<()> {
        self.check_running()?;
        match consistency {
            Consistency::Eventual => Ok(()),
            Consistency::Lease if self.lease_valid() => self.wait_published_commit().await,
            // The only voter confirms its own leadership: a ReadIndex round
            // would ask a quorum of one, itself, so it is skipped.
            Consistency::Lease | Consistency::Linearizable if self.sole_voter_leader() => {
                self.wait_published_commit().await
            }
            Consistency::Lease | Consistency::Linearizable => {
                if !self.is_leader() {
                    return Err(self.leader_hint_error());
                }
                let slot = take_slot(
                    &self.pending_reads,
                    self.config.queues.max_pending_reads,
                    "linearizable reads",
                    "queues.max_pending_reads",
                )?;
                let (tx, rx) = oneshot::channel();
                self.send_client(Input::Read {
                    waiter: ReadWaiter { tx, _slot: slot },
                })?;
                self.wait(rx, "the linearizable read").await.map(|_| ())
            }
        }
    }

    /// Waits until the published commit index is applied. Every write
    /// acknowledged before this call is at or below it (a write is
    /// acknowledged only once applied, and applied never passes commit).
    async fn wait_published_commit(&self) -> Result<()> {
        let commit = self.published.commit.load(Ordering::Acquire);
        self.wait_applied(commit).await
    }

    /// True if this node leads a configuration in which it is the only
    /// voter, and has committed an entry of its term (so its commit index
    /// covers every earlier term's entries).
    pub(crate) fn sole_voter_leader(&self) -> bool {
        self.is_leader()
            && self.published.leader_ready.load(Ordering::Acquire)
            && self.published.sole_voter.load(Ordering::Acquire)
    }

    /// True if this node leads under a lease that still holds now.
    pub(crate) fn lease_valid(&self) -> bool {
        if !self.is_leader() || !self.published.leader_ready.load(Ordering::Acquire) {
            return false;
        }
        let deadline = self.published.lease_deadline_ns.load(Ordering::Acquire);
        deadline != 0 && (self.epoch.elapsed().as_nanos() as u64) < deadline
    }

    async fn wait_applied(&self, index: u64) -> Result<()> {
        if self.applied.load(Ordering::Acquire) >= index {
            return Ok(());
        }
        let mut rx = self.applied_rx.clone();
        let fut = async move { rx.wait_for(|a| *a >= index).await.map(|_| ()) };
        match tokio::time::timeout(self.config.request_timeout(), fut).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(Error::Timeout(format!(
                "the state machine did not reach index {index} within {} ms",
                self.config.queues.request_timeout_ms
            ))),
        }
    }

    pub(crate) async fn get(&self, key: Bytes, c: Consistency) -> Result<Option<KeyValue>> {
        Ok(self.get_shared(key, c).await?.as_ref().map(to_client_kv))
    }

    /// Reads one key; the value shares the state machine's bytes.
    pub(crate) async fn get_shared(&self, key: Bytes, c: Consistency) -> Result<Option<SmKv>> {
        self.validate_key(&key)?;
        self.read_barrier(c).await?;
        self.sm()?.get(&key, now_ms()).map_err(sm_err)
    }

    pub(crate) async fn get_multi(
        &self,
        keys: Vec<Bytes>,
        c: Consistency,
    ) -> Result<Vec<Option<KeyValue>>> {
        match self.get_multi_shared(keys, c, None).await? {
            MultiRead::Complete(kvs) => {
                Ok(kvs.iter().map(|kv| kv.as_ref().map(to_client_kv)).collect())
            }
            MultiRead::OverBudget { .. } => Err(Error::Internal(
                "get_multi without a budget stopped at a budget".into(),
            )),
        }
    }

    /// Reads several keys at one point in time, sharing the state
    /// machine's bytes. Keys must be distinct (a repeated key is refused
    /// with `InvalidArgument` naming both positions and the key). With a
    /// `budget`, reading stops as soon as the pairs read pass it (counted
    /// by [`read_cost`]): nothing past the budget is read or copied.
    pub(crate) async fn get_multi_shared(
        &self,
        keys: Vec<Bytes>,
        c: Consistency,
        budget: Option<usize>,
    ) -> Result<MultiRead> {
        let max = self.config.limits.max_get_multi_keys;
        if keys.len() > max {
            return Err(Error::InvalidArgument(format!(
                "{} keys requested; the limit is limits.max_get_multi_keys = {max}",
                keys.len()
            )));
        }
        for k in &keys {
            self.validate_key(k)?;
        }
        if let Some((first, again)) = first_duplicate(&keys) {
            return Err(Error::InvalidArgument(duplicate_key_message(
                &keys, first, again,
            )));
        }
        self.read_barrier(c).await?;
        let now = now_ms();
        let sm = self.sm()?;
        let mut out = Vec::with_capacity(keys.len());
        let mut bytes = 0usize;
        for k in &keys {
            let kv = sm.get(k, now).map_err(sm_err)?;
            bytes += kv.as_ref().map_or(ABSENT_COST, read_cost);
            if budget.is_some_and(|b| bytes > b) {
                return Ok(MultiRead::OverBudget {
                    read: out.len() + 1,
                    bytes,
                });
            }
            out.push(kv);
        }
        Ok(MultiRead::Complete(out))
    }

    pub(crate) async fn scan_prefix(
        &self,
        prefix: Bytes,
        limit: u32,
        c: Consistency,
    ) -> Result<ScanOutcome> {
        let s = self.scan_prefix_shared(prefix, limit, c, None).await?;
        Ok(ScanOutcome {
            kvs: s.kvs.iter().map(to_client_kv).collect(),
            more: s.more,
        })
    }

    /// Up to `limit` live pairs under `prefix` in key order (`limit` 0 =
    /// `limits.max_scan_limit`, larger limits are capped to it), sharing
    /// the state machine's bytes. With a `budget`, the page ends before the
    /// pair that would pass it (by [`read_cost`]; the first pair is always
    /// returned) and `more` is set: nothing past the budget is read or
    /// copied.
    pub(crate) async fn scan_prefix_shared(
        &self,
        prefix: Bytes,
        limit: u32,
        c: Consistency,
        budget: Option<usize>,
    ) -> Result<SharedScan> {
        self.limits().prefix("prefix", &prefix)?;
        let max = self.config.limits.max_scan_limit;
        let limit = if limit == 0 { max } else { limit.min(max) } as usize;
        self.read_barrier(c).await?;
        let mut kvs = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        self.sm()?
            .scan_prefix_each(&prefix, now_ms(), &mut |kv| {
                let n = read_cost(&kv);
                let over_budget = budget.is_some_and(|b| bytes + n > b) && !kvs.is_empty();
                if kvs.len() == limit || over_budget {
                    more = true;
                    return false;
                }
                bytes += n;
                kvs.push(kv);
                true
            })
            .map_err(sm_err)?;
        Ok(SharedScan { kvs, more })
    }

    /// A watch for the embedded API (client types; see [`WatchHub::watch_client`]).
    pub(crate) fn watch(
        &self,
        key: Bytes,
        prefix: bool,
        start_revision: u64,
    ) -> Result<WatchStream> {
        self.check_watch(&key, prefix)?;
        self.hub.watch_client(key, prefix, start_revision)
    }

    /// A watch whose events share the hub's bytes (see [`WatchHub::watch`]).
    pub(crate) fn watch_shared(
        &self,
        key: Bytes,
        prefix: bool,
        start_revision: u64,
    ) -> Result<HubStream> {
        self.check_watch(&key, prefix)?;
        self.hub.watch(key, prefix, start_revision)
    }

    fn check_watch(&self, key: &Bytes, prefix: bool) -> Result<()> {
        self.check_running()?;
        if !prefix {
            self.validate_key(key)?;
        } else {
            self.limits().prefix("prefix", key)?;
        }
        Ok(())
    }

    // ----- admin -----------------------------------------------------------

    async fn conf_change(&self, change: ConfChange) -> Result<Vec<MemberInfo>> {
        self.check_running()?;
        if !self.is_leader() {
            return Err(self.leader_hint_error());
        }
        let slot = take_slot(
            &self.pending_proposals,
            self.config.queues.max_pending_proposals,
            "writes",
            "queues.max_pending_proposals",
        )?;
        let (tx, rx) = oneshot::channel();
        self.send_client(Input::ConfChange {
            change,
            waiter: ProposalWaiter { tx, _slot: slot },
        })?;
        let out = self.wait(rx, "the membership change").await?;
        match out.result {
            // The core applies a change when it is appended, so the published
            // membership already holds it.
            ApplyResult::MembershipChanged => Ok(self.members()),
            other => Err(self.unexpected(other)),
        }
    }

    fn check_member(&self, id: NodeId) -> Result<()> {
        if !self.members_view().membership.contains(id) {
            return Err(Error::UnknownNode(format!(
                "node {id} is not a member of the cluster (members: {:?})",
                self.members_view()
                    .list
                    .iter()
                    .map(|m| m.id)
                    .collect::<Vec<_>>()
            )));
        }
        Ok(())
    }

    pub(crate) async fn add_learner(
        &self,
        id: NodeId,
        peer_addr: String,
        client_addr: String,
    ) -> Result<Vec<MemberInfo>> {
        if id == 0 {
            return Err(Error::InvalidArgument(
                "node id 0 is reserved; use >= 1".into(),
            ));
        }
        for (name, a) in [("peer_addr", &peer_addr), ("client_addr", &client_addr)] {
            if a.contains('|') || (name == "peer_addr" && a.is_empty()) {
                return Err(Error::InvalidArgument(format!(
                    "{name} `{a}` must be a host:port address"
                )));
            }
        }
        if let Some(m) = self.members_view().membership.members.get(&id) {
            // Idempotent for a retried call with the same addresses.
            let a = MemberAddr::decode(&m.addr);
            if a.peer == peer_addr && a.client == client_addr {
                return Ok(self.members());
            }
            return Err(Error::InvalidArgument(format!(
                "node {id} is already a member at {}; remove it first to re-add it at other \
                 addresses",
                a.peer
            )));
        }
        let addr = MemberAddr::new(peer_addr, client_addr).encode();
        self.conf_change(ConfChange::AddLearner { id, addr }).await
    }

    pub(crate) async fn promote(&self, id: NodeId) -> Result<Vec<MemberInfo>> {
        self.check_member(id)?;
        if self.members_view().membership.is_voter(id) {
            // Idempotent: a retried promote succeeds.
            return Ok(self.members());
        }
        self.conf_change(ConfChange::Promote { id }).await
    }

    pub(crate) async fn remove_member(&self, id: NodeId) -> Result<Vec<MemberInfo>> {
        self.check_member(id)?;
        self.conf_change(ConfChange::Remove { id }).await
    }

    pub(crate) async fn transfer_leader(&self, to: NodeId) -> Result<()> {
        self.check_running()?;
        self.check_member(to)?;
        if self.published.leader.load(Ordering::Acquire) == to {
            return Ok(());
        }
        if !self.is_leader() {
            return Err(self.leader_hint_error());
        }
        let (tx, rx) = oneshot::channel();
        self.send_client(Input::Transfer { to, tx })?;
        self.wait(rx, "the leadership transfer").await?;
        let mut leader = self.leader_tx.subscribe();
        let target = async {
            loop {
                if leader.borrow_and_update().id == to {
                    return Ok(());
                }
                if leader.changed().await.is_err() {
                    return Err(self.stopped_error());
                }
            }
        };
        match tokio::time::timeout(self.config.request_timeout(), target).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!(
                "node {to} did not take over leadership within {} ms",
                self.config.queues.request_timeout_ms
            ))),
        }
    }

    pub(crate) async fn trigger_snapshot(&self) -> Result<u64> {
        self.check_running()?;
        let (tx, rx) = oneshot::channel();
        self.send_client(Input::Snapshot { tx })?;
        self.wait(rx, "the snapshot").await
    }

    pub(crate) fn peer_inbox(self: &Arc<Self>) -> Arc<dyn PeerInbox> {
        Arc::new(super::inbox::NodeInbox::new(self))
    }

    pub(crate) async fn shutdown(&self) -> Result<()> {
        let prev = self.state.compare_exchange(
            STATE_RUNNING,
            STATE_STOPPING,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if prev.is_ok() {
            self.send_internal(Input::Shutdown);
        }
        self.stopped().await;
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().expect("poisoned"));
        if !threads.is_empty() {
            tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await
            .map_err(|e| Error::Internal(format!("joining runtime threads: {e}")))?;
        }
        Ok(())
    }

    pub(crate) async fn stopped(&self) {
        let mut rx = self.stopped_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}
