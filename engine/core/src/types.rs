//! Value types shared by the consensus core and its hosts.
//!
//! Everything here is plain data: no I/O, no clocks, no randomness.

use bytes::Bytes;
use std::collections::BTreeMap;

/// Identifies a member of the cluster. `0` is never a valid node id.
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log; the first real entry has index 1.
pub type Index = u64;

/// The highest term a peer message may carry (2^62). A message with a higher
/// term is refused ([`Refusal::TermTooHigh`]) and a node whose own term
/// reached it stops campaigning, so `term + 1` can never overflow (release
/// builds would wrap to 0). No honest cluster comes near it: at one election
/// per millisecond it takes 146 million years.
pub const MAX_TERM: Term = 1 << 62;

/// The highest log index a peer message may carry (2^62), so that index
/// arithmetic (`index + 1`, `prev + entries.len()`) can never overflow.
pub const MAX_INDEX: Index = 1 << 62;

/// One replicated log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub payload: EntryPayload,
}

/// What an entry carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryPayload {
    /// Appended by every new leader so it can commit entries of its own term.
    Noop,
    /// An application command, opaque to the core.
    Command(Bytes),
    /// A membership change; takes effect as soon as it is appended to a log.
    Config(ConfChange),
}

/// A single-server membership change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Add a non-voting learner at `addr`.
    AddLearner { id: NodeId, addr: String },
    /// Turn a learner into a voter.
    Promote { id: NodeId },
    /// Remove a voter or learner.
    Remove { id: NodeId },
}

/// Role of a member in a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberRole {
    Voter,
    Learner,
}

/// One member: its role and the address peers and clients reach it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub role: MemberRole,
    pub addr: String,
}

/// A cluster configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
}

impl Membership {
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Voter)
            .map(|(id, _)| *id)
    }
    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.role == MemberRole::Learner)
            .map(|(id, _)| *id)
    }
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members
            .get(&id)
            .map(|m| m.role == MemberRole::Voter)
            .unwrap_or(false)
    }
    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }
}

/// State that must be durable before any message that depends on it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    /// Highest index known committed. Persisting it is an optimisation only:
    /// a node may restart with a lower commit index and relearn it.
    pub commit: Index,
}

/// Describes a snapshot: the state machine after applying every entry up to
/// and including `last_index`, plus the membership in force at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub last_index: Index,
    pub last_term: Term,
    pub membership: Membership,
}

/// How a read must be ordered against writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// ReadIndex: the leader confirms it still leads with a quorum round.
    Linearizable,
    /// Served by the leader while its lease (shorter than the election
    /// timeout by the configured drift margin) holds; falls back to ReadIndex.
    Lease,
    /// Served by any node from its local state; may be stale.
    Eventual,
}

/// Caller-chosen identifier that ties a read request to its `ReadReady`.
pub type ReadId = u64;

/// A message between two cores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// A (pre-)vote request. `leader_transfer` lets a TimeoutNow-triggered
    /// candidate bypass the followers' leader-stickiness check.
    RequestVote {
        pre_vote: bool,
        last_log_index: Index,
        last_log_term: Term,
        leader_transfer: bool,
    },
    RequestVoteResponse {
        pre_vote: bool,
        granted: bool,
    },
    /// Entries (possibly none: a heartbeat). `heartbeat_seq` is echoed back so
    /// the leader can confirm leadership for ReadIndex and lease renewal.
    AppendEntries {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
        heartbeat_seq: u64,
    },
    /// `success`: the follower's log matches up to `match_index`, and that
    /// prefix is durable on the follower. On failure, `match_index` echoes
    /// the rejected `prev_log_index` (so the leader can drop stale
    /// rejections), and `conflict_index` / `conflict_term` let the leader skip
    /// a whole term at once: `conflict_term = None` means the follower's log
    /// ends before `prev_log_index` and `conflict_index` is its last index + 1;
    /// otherwise `conflict_term` is the follower's term at `prev_log_index`
    /// and `conflict_index` the first index of that term in its log.
    /// `match_index = 0, conflict_index = 0` means "I cannot start from
    /// index 1, send me a snapshot" (a node that does not know the bootstrap
    /// membership). A rejection with a higher `term` (and all fields 0) tells
    /// a stale leader to step down.
    AppendEntriesResponse {
        success: bool,
        match_index: Index,
        conflict_index: Index,
        conflict_term: Option<Term>,
        heartbeat_seq: u64,
    },
    /// The leader's snapshot; the data travels beside the message (the host
    /// streams it in chunks); the receiving host delivers this message only
    /// once it has the whole snapshot staged.
    InstallSnapshot {
        meta: SnapshotMeta,
    },
    /// `last_index` is the follower's last log index after the install (or
    /// its current last index if it rejected a stale snapshot).
    InstallSnapshotResponse {
        last_index: Index,
    },
    /// Leadership transfer: the target should start an election now.
    TimeoutNow,
}

/// Why a proposal or read was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is its best guess, if any.
    NotLeader { leader: Option<NodeId> },
    /// A leadership transfer is in progress; retry shortly.
    TransferInProgress,
    /// A membership change is still uncommitted, or the leader has not yet
    /// committed an entry of its own term.
    ConfChangeInProgress,
    /// The change makes no sense for the current membership.
    InvalidConfChange(String),
}

/// Role of the local node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
    Learner,
}

/// Status of the node, for observability and for hosts that serve lease and
/// eventual reads off the consensus loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub last_index: Index,
    pub durable_index: Index,
    pub applied_handed_out: Index,
    pub snapshot_index: Index,
    /// Tick count up to which this leader's lease holds (exclusive), or 0.
    /// Non-zero only while a lease read may be served: the node leads, no
    /// leadership transfer is under way, and it has committed an entry of
    /// its term. A host serving lease reads off the consensus loop answers
    /// at `commit` while its CURRENT tick count (the number of `tick()` calls
    /// so far, not an old `now_tick`) is below this value.
    pub lease_until_tick: u64,
    pub now_tick: u64,
    pub membership: Membership,
    /// Peer messages refused by [`crate::RaftNode::step`] since start (see
    /// [`Refusal`]).
    pub refused_messages: u64,
}

/// Why [`crate::RaftNode::step`] refused a peer message.
///
/// A refused message has no effect at all on the node: it is dropped as if
/// the network had lost it, which Raft tolerates. An honest, correctly
/// configured member never causes a refusal, with one exception documented
/// in `docs/raft-core.md`: a node that missed the configuration change that
/// added the sender refuses it as [`Refusal::NotAMember`]. Every other refusal
/// means the sender is buggy, misconfigured or hostile. The host should log it
/// (with the sender) and may drop the stream it arrived on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `to` is not this node's id.
    WrongRecipient { to: NodeId },
    /// `from` is 0 (never a valid id) or this node's own id.
    InvalidSender { from: NodeId },
    /// `from` is neither a voter nor a learner of this node's configuration.
    /// (A node whose configuration is still empty, one started to join,
    /// accepts any sender until it learns its configuration.)
    NotAMember { from: NodeId },
    /// The message term is above [`MAX_TERM`].
    TermTooHigh { term: Term },
    /// A log index in the message is above [`MAX_INDEX`].
    IndexTooHigh { index: Index },
    /// An AppendEntries or InstallSnapshot in the term this node leads:
    /// Raft allows one leader per term.
    SecondLeader { term: Term },
    /// The entries do not directly follow `prev_log_index`, are not
    /// contiguous, have decreasing terms, or have a term above the message's.
    MalformedEntries { reason: String },
    /// The message contradicts an entry this node knows committed (it would
    /// truncate or replace it).
    ConflictsWithCommitted { index: Index, commit: Index },
    /// An AppendEntriesResponse for an index beyond this leader's log.
    AckBeyondLog {
        match_index: Index,
        last_index: Index,
    },
    /// The snapshot metadata is inconsistent (see `reason`).
    InvalidSnapshot { reason: String },
    /// A configuration entry that is not valid against the configuration in
    /// force before it (the leader would never have appended it).
    InvalidConfChange { index: Index, reason: String },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::WrongRecipient { to } => write!(
                f,
                "addressed to node {to}, not to this node: the sender's peer list maps this \
                 address to the wrong node id"
            ),
            Refusal::InvalidSender { from } => write!(
                f,
                "sender id {from} is 0 or this node's own id: two nodes share an id, or the \
                 sender is forged"
            ),
            Refusal::NotAMember { from } => write!(
                f,
                "sender {from} is not a member (voter or learner) of this node's configuration; \
                 if it was added while this node was away, remove this node and add it again"
            ),
            Refusal::TermTooHigh { term } => write!(
                f,
                "term {term} is above the maximum term {MAX_TERM}: no honest node gets there"
            ),
            Refusal::IndexTooHigh { index } => write!(
                f,
                "log index {index} is above the maximum index {MAX_INDEX}"
            ),
            Refusal::SecondLeader { term } => write!(
                f,
                "leader traffic in term {term}, which this node leads: two leaders in one term"
            ),
            Refusal::MalformedEntries { reason } => write!(f, "malformed entries: {reason}"),
            Refusal::ConflictsWithCommitted { index, commit } => write!(
                f,
                "the message contradicts committed entry {index} (commit index {commit}): a \
                 committed entry is never replaced"
            ),
            Refusal::AckBeyondLog {
                match_index,
                last_index,
            } => write!(
                f,
                "acknowledges index {match_index}, beyond this leader's last index {last_index}"
            ),
            Refusal::InvalidSnapshot { reason } => write!(f, "invalid snapshot metadata: {reason}"),
            Refusal::InvalidConfChange { index, reason } => {
                write!(f, "invalid configuration entry at index {index}: {reason}")
            }
        }
    }
}

impl std::error::Error for Refusal {}
