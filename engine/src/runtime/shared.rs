//! The state shared by the node handle (any task) and the runtime threads:
//! [`Shared`], the values the consensus loop publishes ([`Published`],
//! [`MembersView`]), the lifecycle and role codes, and the few helpers every
//! request path and thread needs (admission to the loop, waiting for an
//! answer, the "not leader" error). The request paths themselves are
//! `impl NodeHandle` blocks in their own files (see [`super::handle`]).
//!
//! Contracts:
//! - requests that need the consensus loop go through one channel whose
//!   admission is bounded (`queues.input_capacity`): a full queue answers
//!   `Overloaded` at once; internal inputs are never refused;
//! - lease and eventual reads never touch the loop: they use the atomics
//!   the loop publishes after every iteration;
//! - once the node is failed every request gets `Storage` with the cause,
//!   once it is stopping `ShuttingDown`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use d_engine_core::{Membership, NodeId, ProposeError};
use d_engine_storage::sm::{KvStateMachine, StateMachine};
use tokio::sync::{oneshot, watch};

use super::addr::MemberAddr;
use super::failure::NodeFailure;
use super::input::{take_slot, Slot};
pub(crate) use super::input::{Input, ProposalWaiter};
use super::lease_clock::LeaseClock;
use super::quota::Quota;
use super::read_rounds::ReadProgress;
use super::types::{Error, LeaderInfo, MemberInfo, MemberRole, Result};
use super::watch_hub::WatchHub;
use crate::config::Config;

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
    /// The ReadIndex watermark linearizable readers wait on
    /// (`runtime/read_rounds.rs`).
    pub(crate) reads: ReadProgress,
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
    /// Why the node stopped serving, once `state` is `STATE_FAILED`.
    pub(crate) failure: Mutex<Option<NodeFailure>>,
    pub(crate) stopped_tx: watch::Sender<bool>,
    pub(crate) staging_dir: PathBuf,
    pub(crate) threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// The storage quota: measured by the apply thread, enforced when a
    /// write is admitted (see [`super::quota`]).
    pub(crate) quota: Quota,
    /// Lease deadlines while this node leads (see [`super::lease_clock`]).
    pub(crate) leases: LeaseClock,
    /// Prometheus metrics of this node (`crate::metrics`).
    pub(crate) metrics: Arc<crate::metrics::NodeMetrics>,
}

/// Unix time in milliseconds (TTL deadlines and expiry checks).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    /// A slot among `queues.max_pending_proposals` for one write or
    /// membership change; `Overloaded` when all are taken. Dropping the
    /// slot frees it.
    pub(crate) fn proposal_slot(&self) -> Result<Slot> {
        take_slot(
            &self.pending_proposals,
            self.config.queues.max_pending_proposals,
            "writes",
            "queues.max_pending_proposals",
        )
        .inspect_err(|_| self.metrics.overloaded("queues.max_pending_proposals"))
    }

    /// The state machine, or the reason the node cannot serve.
    pub(crate) fn sm(&self) -> Result<Arc<dyn StateMachine>> {
        match &*self.sm.read().expect("poisoned") {
            Some(sm) => Ok(sm.clone()),
            None => Err(self.stopped_error()),
        }
    }

    /// The key-value view of the state machine, or why the key-value API
    /// cannot be served: the node stopped, or it runs an application's own
    /// state machine (`d_engine::app`), which stores no keys.
    pub(crate) fn kv(&self) -> Result<Arc<dyn KvStateMachine>> {
        self.sm()?.into_kv().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "node {} runs an application state machine, not the key-value one: the \
                 key-value, lease and watch calls are not available on it (use the \
                 application's AppEngine::propose and AppEngine::query)",
                self.id
            ))
        })
    }

    pub(crate) fn is_running(&self) -> bool {
        self.state.load(Ordering::Acquire) == STATE_RUNNING
    }

    pub(crate) fn check_running(&self) -> Result<()> {
        match self.state.load(Ordering::Acquire) {
            STATE_RUNNING => Ok(()),
            STATE_FAILED => Err(match &*self.failure.lock().expect("poisoned") {
                Some(f) => f.to_error(self.id),
                None => NodeFailure::Thread(String::new()).to_error(self.id),
            }),
            _ => Err(Error::ShuttingDown(format!("node {} is stopping", self.id))),
        }
    }

    pub(crate) fn stopped_error(&self) -> Error {
        match self.check_running() {
            Err(e) => e,
            Ok(()) => Error::ShuttingDown(format!("node {} is stopping", self.id)),
        }
    }

    /// Queues a client input, refusing with `Overloaded` when the queue is full.
    pub(crate) fn send_client(&self, input: Input) -> Result<()> {
        let cap = self.config.queues.input_capacity;
        let n = self.queued.fetch_add(1, Ordering::AcqRel);
        if n >= cap {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.metrics.overloaded("queues.input_capacity");
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

    pub(crate) async fn wait<T>(&self, rx: oneshot::Receiver<Result<T>>, what: &str) -> Result<T> {
        match tokio::time::timeout(self.config.request_timeout(), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.stopped_error()),
            Err(_) => Err(Error::Timeout(format!(
                "{what} did not complete within queues.request_timeout_ms = {} ms",
                self.config.queues.request_timeout_ms
            ))),
        }
    }

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

    pub(crate) fn is_leader(&self) -> bool {
        self.published.role.load(Ordering::Acquire) == ROLE_LEADER
    }

    pub(crate) fn leader_hint_error(&self) -> Error {
        self.not_leader(Some(self.published.leader.load(Ordering::Acquire)))
    }
}
