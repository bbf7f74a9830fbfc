//! The simulated world: a cluster of real [`RaftNode`]s, each inside a
//! simulated host, a network, disks, clocks, clients, a fault injector and
//! the checkers. One seed drives everything; one thread runs it.
//!
//! Every event (a tick, a delivered message, a completed disk write, a client
//! request, a fault) is popped from one time-ordered queue (ties broken by
//! insertion order), handed to the node it concerns, and the node's `Ready`
//! output is executed exactly as `engine/core/src/ready.rs` prescribes. After
//! each event the checkers inspect the node.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use d_engine_core::{
    ConfChange, Config, Entry, EntryPayload, Index, Member, MemberRole, Membership, Message,
    MessageBody, NodeId, ProposeError, ReadConsistency, ReadId, Ready, Role, SnapshotMeta,
};

use super::checkers::{
    commit::CommitMonotonic,
    contract::{self, body_name},
    election::ElectionSafety,
    leader_completeness::LeaderCompleteness,
    lease::{check_leases, LeaderState},
    lease_expiry::LeaseExpiry,
    linearizability,
    log_matching::LogMatching,
    reads::{ReadObs, StaleReads},
    sm_safety::StateMachineSafety,
    Check, LogView, Violation,
};
use super::history::{History, OpKind, Outcome, Time};
use super::host::{Host, PendingWrite};
use super::kv::{ApplyResult, Command, Key, OpId, Value};
use super::rng::{fnv1a, Rng};
use super::storage::{entry_digest, Durable, FlushedSm, SnapshotData};

mod clients;
mod describe;
mod exec;
mod faults;
mod hostile;
mod leases;
mod observe;

use describe::{describe, summarize};

/// Simulated microseconds per tick at the nominal clock rate.
pub const TICK_US: Time = 10_000;
/// Per seed, `election_ticks` is drawn from this range and `heartbeat_ticks`
/// from `1..=election_ticks / 4`.
pub const ELECTION_TICKS: (u64, u64) = (6, 20);
/// Clock rates stay within ±this of nominal (re-drawn as they wander).
pub const MAX_DRIFT_PPM: u64 = 50_000;

/// The smallest lease margin that covers a clock-rate spread of `±drift_ppm`.
///
/// A lease lasts `election_ticks - margin` leader ticks from the tick in which
/// its confirming heartbeat round was sent; a voter that received that round
/// refuses votes until its own `election_ticks`-th tick after receiving it,
/// which is at least `election_ticks - 1` of its (fastest) periods later. So
/// the lease is safe iff `(E - m) * (1 + d) <= (E - 1) * (1 - d)`.
pub fn min_lease_margin(election_ticks: u64, drift_ppm: u64) -> u64 {
    let e = election_ticks;
    let safe = (e - 1) * (1_000_000 - drift_ppm) / (1_000_000 + drift_ppm);
    e - safe
}
/// A client gives up on a request after this long (its outcome is unknown).
pub const CLIENT_TIMEOUT_US: Time = 400_000;
/// After the chaos, the healed cluster must serve a write and a read within this.
pub const SETTLE_US: Time = 5_000_000;

/// A deliberate host bug, to prove the checkers catch contract breaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostBug {
    /// Serve every read from the local state machine at once, without asking
    /// the core for a read index (what a host that treats all reads as
    /// eventual would do).
    LocalReads,
    /// Report entries durable as soon as their write is queued.
    AckBeforeFsync,
    /// Never write the hard state.
    SkipHardState,
    /// On restart, claim the state machine applied entries the log never
    /// had (the core must refuse: it asserts and the node panics).
    ClaimAppliedBeyondLog,
    /// Every node runs a lease clock from its own applied state, whatever
    /// its role, and a follower forwards the revokes it decides to its
    /// leader (`lease-decider` must fire).
    FollowerExpiresLeases,
    /// Every node tracks lease deadlines from the grant's apply, and a new
    /// leader keeps them instead of giving every lease its full TTL: a lease
    /// kept alive on the old leader expires at once (`lease-early`).
    NoLeaseResetOnLeaderChange,
    /// The lease clock never starts: leases never expire
    /// (`lease-liveness`).
    LeaseClockNeverRuns,
    /// A keepalive renews at once on a node whose clock runs, without the
    /// lease read barrier: a deposed leader that still believes it leads
    /// renews after its successor's clock started (`lease-early`).
    RenewWithoutBarrier,
}

/// How one run is configured.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Inject a host bug (for testing the checkers); `None` in real sweeps.
    pub bug: Option<HostBug>,
    /// Give nodes that join later the bootstrap membership as their
    /// `initial_membership` (default: empty, what a host naturally knows).
    pub joiner_knows_bootstrap: bool,
    /// Override the clock-rate spread (ppm) and the lease margin, to show the
    /// lease checker fires when the margin does not cover the drift.
    pub drift_ppm: Option<u64>,
    pub lease_margin_ticks: Option<u64>,
    /// `lease-early` counts a key lease's life from the grant's
    /// acknowledgement to the client instead of its commit (finding F4:
    /// the engine does not guarantee that).
    pub lease_grant_from_ack: bool,
    /// Serve Lease reads off the consensus loop from `Status`.
    pub offloop_lease_reads: bool,
    pub seed: u64,
    /// Events to simulate under chaos (the settle phase comes on top).
    pub events: u64,
    /// Keep the last `trace_len` trace lines (0: no trace, fastest).
    pub trace_len: usize,
    /// After the chaos, heal everything and require progress.
    pub check_liveness: bool,
    /// Every few ms a stranger (not a member) sends a node an arbitrary
    /// well-formed message, which must be refused (see `hostile.rs`).
    pub hostile_non_members: bool,
}

impl SimOptions {
    pub fn new(seed: u64, events: u64) -> Self {
        SimOptions {
            seed,
            events,
            trace_len: 0,
            check_liveness: true,
            bug: None,
            joiner_knows_bootstrap: false,
            drift_ppm: None,
            lease_margin_ticks: None,
            offloop_lease_reads: false,
            lease_grant_from_ack: false,
            hostile_non_members: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub leaders: usize,
    pub commits: usize,
    pub msgs_sent: u64,
    pub msgs_dropped: u64,
    /// Messages the receiving core refused (see `d_engine_core::Refusal`).
    pub msgs_refused: u64,
    pub msgs_duplicated: u64,
    pub writes_ok: u64,
    pub reads_ok: [u64; 3],
    pub ops_failed: u64,
    pub ops_unknown: u64,
    pub crashes: u64,
    /// Restarts whose state machine came from a flush newer than the snapshot.
    pub flushed_sm_restores: u64,
    pub partitions: u64,
    pub snapshots_created: u64,
    pub snapshots_installed: u64,
    pub snapshots_sent: u64,
    pub conf_changes: u64,
    pub transfers: u64,
    /// Hostile messages a stranger sent (`SimOptions::hostile_non_members`).
    pub hostile_sent: u64,
    /// Key leases: grants and keepalives acknowledged, leases revoked by
    /// expiry (committed) and by their holder.
    pub leases_granted: u64,
    pub keepalives_ok: u64,
    pub leases_expired: u64,
    pub leases_revoked: u64,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub nodes: usize,
    pub events: u64,
    pub settle_events: u64,
    pub sim_time: Time,
    pub violation: Option<Violation>,
    pub stats: Stats,
    pub trace: Vec<String>,
    /// Digest of every event processed: equal for equal seeds.
    pub fingerprint: u64,
}

/// Per-seed chaos profile: some seeds are calm, some brutal.
#[derive(Clone, Debug)]
struct Profile {
    nodes: usize,
    drop_ppm: u32,
    dup_ppm: u32,
    slow_ppm: u32,
    /// Messages held back for 0.1–1.5 s: delivered long after they were
    /// sent (stale terms, stale responses, stale heartbeat echoes).
    stale_ppm: u32,
    /// Chance that a leader crashes right after proposing or being elected.
    crash_point_ppm: u32,
    /// Chance per applied entry that the host flushes its state machine
    /// (0: the state machine is rebuilt from the snapshot on restart).
    sm_flush_ppm: u32,
    pre_vote: bool,
    check_quorum: bool,
    /// The host serves Lease reads itself from `Status` (lease_until_tick,
    /// commit) when the lease holds, as `Status`'s docs allow.
    offloop_lease_reads: bool,
    election_ticks: u64,
    heartbeat_ticks: u64,
    lease_margin: u64,
    fault_gap: (Time, Time),
    disk_max: Time,
    drift_ppm: u64,
    clients: usize,
    think: (Time, Time),
    keys: u64,
    /// Lease holders and the share of their keepalives that is lost.
    holders: usize,
    keepalive_loss_ppm: u32,
}

enum Ev {
    Tick(NodeId, u64),
    Deliver(Box<Message>, Option<Arc<SnapshotData>>, u64),
    DiskDone(NodeId, u64),
    SnapSendFailed(NodeId, u64, NodeId),
    Flush(NodeId, u64),
    ClientWake(usize),
    ClientTimeout(usize, OpId),
    Fault,
    Restart(NodeId),
    Heal(u64),
    /// A crash aimed at a fragile moment (just after proposing or winning).
    Crash(NodeId, u64),
    /// A stranger sends a hostile message (`SimOptions::hostile_non_members`).
    Hostile,
    /// A lease holder acts / gives up on its op.
    LeaseWake(usize),
    LeaseTimeout(OpId),
}

struct Scheduled {
    time: Time,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.time, self.seq) == (o.time, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse so the earliest pops first.
        (o.time, o.seq).cmp(&(self.time, self.seq))
    }
}

struct Slot {
    durable: Durable,
    host: Option<Host>,
    incarnation: u64,
    initial_member: bool,
}

#[derive(Default)]
struct Checkers {
    election: ElectionSafety,
    log_matching: LogMatching,
    completeness: LeaderCompleteness,
    sm: StateMachineSafety,
    commit: CommitMonotonic,
    stale: StaleReads,
    leases: LeaseExpiry,
}

struct Client {
    guess: NodeId,
    op: Option<OpId>,
}

pub struct World {
    opts: SimOptions,
    profile: Profile,
    rng: Rng,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    slots: BTreeMap<NodeId, Slot>,
    max_id: NodeId,
    initial: Membership,
    blocked: BTreeSet<(NodeId, NodeId)>,
    partition_gen: u64,
    clients: Vec<Client>,
    history: History,
    next_value: Value,
    /// Log index of the write that produced each value.
    value_index: BTreeMap<Value, Index>,
    max_applied: Index,
    dirty_keys: BTreeSet<Key>,
    ck: Checkers,
    stats: Stats,
    trace: VecDeque<String>,
    fingerprint: u64,
    events: u64,
    settling: bool,
    /// Draws for hostile messages (a fork, so other draws are not shifted).
    hostile_rng: Option<Rng>,
    lw: leases::LeaseWorkload,
}

fn addr(id: NodeId) -> String {
    format!("n{id}")
}

impl World {
    pub fn new(opts: SimOptions) -> World {
        let mut rng = Rng::new(opts.seed);
        let nodes = if rng.chance(500_000) { 3 } else { 5 };
        let calm = rng.chance(150_000);
        let drift_ppm = match opts.drift_ppm {
            Some(d) => d,
            None => rng.range(0, MAX_DRIFT_PPM),
        };
        let election_ticks = rng.range(ELECTION_TICKS.0, ELECTION_TICKS.1);
        let profile = Profile {
            nodes,
            drop_ppm: if calm {
                0
            } else {
                rng.range(0, 100_000) as u32
            },
            dup_ppm: if calm { 0 } else { rng.range(0, 50_000) as u32 },
            slow_ppm: rng.range(0, 100_000) as u32,
            stale_ppm: if calm { 0 } else { rng.range(0, 20_000) as u32 },
            election_ticks,
            heartbeat_ticks: rng.range(1, (election_ticks / 4).max(1)),
            lease_margin: opts
                .lease_margin_ticks
                .unwrap_or_else(|| min_lease_margin(election_ticks, drift_ppm)),
            offloop_lease_reads: opts.offloop_lease_reads || rng.chance(500_000),
            crash_point_ppm: if calm { 0 } else { rng.range(0, 30_000) as u32 },
            pre_vote: rng.chance(850_000),
            check_quorum: rng.chance(850_000),
            sm_flush_ppm: if rng.chance(500_000) {
                0
            } else {
                rng.range(20_000, 500_000) as u32
            },
            fault_gap: if calm {
                (300_000, 900_000)
            } else if rng.chance(100_000) {
                // A fault storm.
                let lo = rng.range(5_000, 20_000);
                (lo, lo * 3)
            } else {
                let lo = rng.range(20_000, 120_000);
                (lo, lo * 3)
            },
            disk_max: rng.range(200, 8_000),
            drift_ppm,
            clients: rng.range(2, 5) as usize,
            think: (rng.range(0, 5_000), rng.range(10_000, 60_000)),
            keys: rng.range(1, 4),
            holders: rng.range(1, 3) as usize,
            keepalive_loss_ppm: if calm {
                0
            } else {
                rng.range(0, 200_000) as u32
            },
        };
        let mut initial = Membership::default();
        for id in 1..=nodes as NodeId {
            initial.members.insert(
                id,
                Member {
                    role: MemberRole::Voter,
                    addr: addr(id),
                },
            );
        }
        let clients = (0..profile.clients)
            .map(|i| Client {
                guess: 1 + (i as NodeId % nodes as NodeId),
                op: None,
            })
            .collect();
        let hostile_rng = opts.hostile_non_members.then(|| rng.fork());
        let lw = leases::LeaseWorkload::new(profile.holders, nodes, profile.keepalive_loss_ppm);
        let mut ck = Checkers {
            leases: LeaseExpiry::new(profile.drift_ppm),
            ..Default::default()
        };
        ck.leases.grant_from_ack = opts.lease_grant_from_ack;
        World {
            lw,
            hostile_rng,
            trace: VecDeque::with_capacity(opts.trace_len),
            opts,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            slots: BTreeMap::new(),
            max_id: nodes as NodeId + 2,
            initial,
            blocked: BTreeSet::new(),
            partition_gen: 0,
            clients,
            history: History::default(),
            next_value: 1,
            value_index: BTreeMap::new(),
            max_applied: 0,
            dirty_keys: BTreeSet::new(),
            ck,
            stats: Stats::default(),
            fingerprint: fnv1a(0, b"sim"),
            events: 0,
            settling: false,
            profile,
        }
    }

    /// Runs the whole simulation.
    pub fn run(mut self) -> RunReport {
        let result = self.run_inner();
        let settle_events = self.events.saturating_sub(self.opts.events);
        self.stats.leaders = self.ck.election.terms_with_leader();
        self.stats.commits = self.ck.completeness.committed_count();
        RunReport {
            seed: self.opts.seed,
            nodes: self.profile.nodes,
            events: self.events.min(self.opts.events),
            settle_events,
            sim_time: self.now,
            violation: result.err(),
            stats: self.stats,
            trace: self.trace.into_iter().collect(),
            fingerprint: self.fingerprint,
        }
    }

    fn run_inner(&mut self) -> Check {
        let p = format!("seed {} profile {:?}", self.opts.seed, self.profile);
        self.trace_line(|| p);
        for id in 1..=self.profile.nodes as NodeId {
            self.slots.insert(
                id,
                Slot {
                    durable: Durable::default(),
                    host: None,
                    incarnation: 0,
                    initial_member: true,
                },
            );
            self.start(id)?;
        }
        for c in 0..self.clients.len() {
            let at = self.rng.range(0, 50_000);
            self.schedule(at, Ev::ClientWake(c));
        }
        for hi in 0..self.lw.holders.len() {
            let at = self.rng.range(0, 50_000);
            self.schedule(at, Ev::LeaseWake(hi));
        }
        let gap = self.fault_gap();
        self.schedule(gap, Ev::Fault);
        if self.hostile_rng.is_some() {
            self.schedule(1_000, Ev::Hostile);
        }

        while self.events < self.opts.events {
            self.step()?;
        }
        self.cross_check_logs()?;
        if self.opts.check_liveness {
            self.settle()?;
        }
        self.cross_check_logs()?;
        linearizability::check_all(&self.history)
    }

    fn step(&mut self) -> Check {
        let Some(s) = self.queue.pop() else {
            return Err(Violation::new("simulator", "event queue ran dry"));
        };
        debug_assert!(s.time >= self.now);
        self.now = s.time;
        self.events += 1;
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handle(s.ev)));
        match handled {
            Ok(r) => r?,
            Err(p) => {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                return Err(Violation::new("panic", format!("a node panicked: {msg}")));
            }
        }
        let keys = std::mem::take(&mut self.dirty_keys);
        for k in keys {
            linearizability::check_key(&self.history, k)?;
        }
        if self.events.is_multiple_of(128) {
            self.cross_check_logs()?;
        }
        Ok(())
    }

    /// Chaos over: heal the network, restart every node, stop injecting
    /// faults, and require that the cluster serves a fresh write and a fresh
    /// linearizable read.
    fn settle(&mut self) -> Check {
        self.settling = true;
        self.blocked.clear();
        self.profile.drop_ppm = 0;
        self.profile.dup_ppm = 0;
        self.trace_line(|| "=== settle: healed, restarting all nodes ===".into());
        let down: Vec<NodeId> = self
            .slots
            .iter()
            .filter(|(_, s)| s.host.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.start(id)?;
        }
        let start = self.now;
        let deadline = start + SETTLE_US;
        while self.now < deadline {
            self.step()?;
            let ok = |o: &super::history::OpRecord, write: bool| {
                o.invoke >= start
                    && o.acked()
                    && (if write {
                        o.kind.is_write()
                    } else {
                        o.kind == OpKind::Read(ReadConsistency::Linearizable)
                    })
            };
            let ops = self.history.ops();
            let tail = &ops[ops.partition_point(|o| o.invoke < start)..];
            if tail.iter().any(|o| ok(o, true)) && tail.iter().any(|o| ok(o, false)) {
                self.converge()?;
                return self.lease_liveness();
            }
        }
        let st: Vec<String> = self
            .slots
            .iter()
            .filter_map(|(id, s)| s.host.as_ref().map(|h| (id, h)))
            .map(|(id, h)| {
                let s = h.node.status();
                format!(
                    "n{id}: {:?} term {} leader {:?} commit {} last {} voters {:?}",
                    s.role,
                    s.term,
                    s.leader,
                    s.commit,
                    s.last_index,
                    s.membership.voters().collect::<Vec<_>>()
                )
            })
            .collect();
        Err(Violation::new(
            "liveness",
            format!(
                "after healing the network and restarting every node, no write and linearizable \
                 read both succeeded within {} ms of simulated time; nodes: {}",
                SETTLE_US / 1000,
                st.join("; ")
            ),
        ))
    }

    /// After the healed cluster made progress, every member must catch up
    /// with the leader's commit index (by log or snapshot) within `SETTLE_US`.
    fn converge(&mut self) -> Check {
        let deadline = self.now + SETTLE_US;
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let st = self.host(l).expect("leader runs").node.status();
        let target = st.commit;
        let members: Vec<NodeId> = st.membership.members.keys().copied().collect();
        self.trace_line(|| format!("=== converge: members {members:?} must apply {target} ==="));
        loop {
            let lagging: Vec<(NodeId, Index)> = members
                .iter()
                .filter_map(|m| {
                    let h = self.slots.get(m).and_then(|s| s.host.as_ref())?;
                    let view = h.node.status().membership;
                    if !view.members.is_empty() && !view.contains(l) {
                        // Stranded: this member missed the configuration
                        // changes that added the leader, and a node that
                        // knows its configuration refuses non-members (core
                        // and transport alike; docs/raft-core.md, "Messages
                        // the core refuses"). It is not expected to catch up
                        // from this leader.
                        return None;
                    }
                    (h.applied < target).then_some((*m, h.applied))
                })
                .collect();
            if lagging.is_empty() {
                return Ok(());
            }
            if self.now >= deadline {
                let detail: Vec<String> = lagging
                    .iter()
                    .map(|(m, a)| {
                        let s = self.slots[m].host.as_ref().expect("running").node.status();
                        format!(
                            "n{m} applied {a} ({:?}, term {}, leader {:?}, commit {}, last {}, \
                             snapshot {})",
                            s.role, s.term, s.leader, s.commit, s.last_index, s.snapshot_index
                        )
                    })
                    .collect();
                return Err(Violation::new(
                    "liveness",
                    format!(
                        "healed cluster: members still behind leader n{l}'s commit {target} \
                         after {} ms: {}",
                        SETTLE_US / 1000,
                        detail.join("; ")
                    ),
                ));
            }
            self.step()?;
        }
    }

    // ---------------------------------------------------------------- plumbing

    fn schedule(&mut self, at: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            time: at,
            seq: self.seq,
            ev,
        });
    }

    fn tracing(&self) -> bool {
        self.opts.trace_len > 0
    }

    fn trace_line(&mut self, f: impl FnOnce() -> String) {
        if self.opts.trace_len == 0 {
            return;
        }
        if self.trace.len() == self.opts.trace_len {
            self.trace.pop_front();
        }
        let line = format!(
            "{:>10.3}ms #{:<6} {}",
            self.now as f64 / 1000.0,
            self.events,
            f()
        );
        self.trace.push_back(line);
    }

    fn mix(&mut self, tag: &[u8], a: u64, b: u64) {
        let mut h = fnv1a(self.fingerprint, tag);
        h = fnv1a(h, &a.to_le_bytes());
        h = fnv1a(h, &b.to_le_bytes());
        self.fingerprint = fnv1a(h, &self.now.to_le_bytes());
    }

    /// Maybe crash `id` within the next 2 ms (before its messages land).
    fn maybe_crash_soon(&mut self, id: NodeId, inc: u64) {
        if !self.settling && self.rng.chance(self.profile.crash_point_ppm) {
            let at = self.now + self.rng.range(0, 2_000);
            self.schedule(at, Ev::Crash(id, inc));
        }
    }

    fn fault_gap(&mut self) -> Time {
        let (lo, hi) = self.profile.fault_gap;
        self.now + self.rng.range(lo, hi)
    }

    fn running(&self) -> Vec<NodeId> {
        self.slots
            .iter()
            .filter(|(_, s)| s.host.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn host(&mut self, id: NodeId) -> Option<&mut Host> {
        self.slots.get_mut(&id).and_then(|s| s.host.as_mut())
    }

    fn durable(&mut self, id: NodeId) -> &mut Durable {
        &mut self.slots.get_mut(&id).expect("slot exists").durable
    }

    /// The node that believes it leads in the highest term, if any.
    fn leader(&self) -> Option<NodeId> {
        self.slots
            .iter()
            .filter_map(|(id, s)| s.host.as_ref().map(|h| (id, h)))
            .filter(|(_, h)| h.role == Role::Leader)
            .max_by_key(|(_, h)| h.term)
            .map(|(id, _)| *id)
    }

    // ------------------------------------------------------------- node life

    /// A clock rate within `±drift_ppm` of nominal, as microseconds per tick.
    fn draw_tick_period(&mut self) -> Time {
        let drift = self.profile.drift_ppm;
        let ppm = self.rng.range(0, 2 * drift) as i64 - drift as i64;
        (TICK_US as i64 + TICK_US as i64 * ppm / 1_000_000) as Time
    }

    /// Boots node `id` from its disk (a fresh node has an empty disk).
    fn start(&mut self, id: NodeId) -> Check {
        let tick_period = self.draw_tick_period();
        let cfg = Config {
            id,
            election_ticks: self.profile.election_ticks,
            heartbeat_ticks: self.profile.heartbeat_ticks,
            lease_drift_margin_ticks: self.profile.lease_margin,
            pre_vote: self.profile.pre_vote,
            check_quorum: self.profile.check_quorum,
            max_inflight_msgs: self.rng.range(1, 8) as usize,
            max_entries_per_msg: self.rng.range(1, 16) as usize,
            max_bytes_per_msg: self.rng.range(64, 4096) as usize,
            snapshot_threshold: self.rng.range(4, 40),
            max_read_rounds_in_flight: 1,
            seed: self.rng.next_u64(),
        };
        // 1 to 3 read rounds out at once, derived from the seed already
        // drawn so that existing seeds replay the same schedules.
        let cfg = Config {
            max_read_rounds_in_flight: 1 + (cfg.seed % 3) as usize,
            ..cfg
        };
        let initial = self.initial.clone();
        let slot = self.slots.get_mut(&id).expect("slot exists");
        slot.incarnation += 1;
        let membership = if slot.initial_member || self.opts.joiner_knows_bootstrap {
            initial
        } else {
            Membership::default()
        };
        let mut durable = std::borrow::Cow::Borrowed(&slot.durable);
        if self.opts.bug == Some(HostBug::ClaimAppliedBeyondLog) && slot.incarnation > 1 {
            let d = durable.to_mut();
            d.sm = Some(FlushedSm {
                applied: d.last_index() + 3,
                applied_term: d.hard_state.term,
                kv: Default::default(),
                membership: Default::default(),
            });
        }
        let mut host = Host::restore(cfg, slot.incarnation, &durable, membership, tick_period)
            .map_err(|e| Violation::new("simulator", format!("node {id}: {e}")))?;
        host.clock_base = (self.now, 0);
        host.lease_clock.passive = self.opts.bug == Some(HostBug::NoLeaseResetOnLeaderChange);
        let (inc, snap, digest) = (slot.incarnation, host.applied, host.kv.digest());
        if host.applied > slot.durable.snapshot_index() {
            self.stats.flushed_sm_restores += 1;
        }
        slot.host = Some(host);
        self.trace_line(|| {
            format!("START n{id} incarnation {inc} applied {snap} tick {tick_period}us")
        });
        self.ck.sm.on_restore(id, snap, digest)?;
        let first = self.now + self.rng.range(1, tick_period);
        self.schedule(first, Ev::Tick(id, inc));
        self.drive(id)
    }

    fn crash(&mut self, id: NodeId) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        if let Some(h) = slot.host.take() {
            let lost = h.disk.iter().map(|w| w.entries.len()).sum::<usize>();
            self.stats.crashes += 1;
            self.trace_line(|| format!("CRASH n{id} (loses {lost} unsynced entries)"));
            let at = self.now + self.rng.range(5_000, 400_000);
            self.schedule(at, Ev::Restart(id));
        }
    }

    // ---------------------------------------------------------------- events

    fn handle(&mut self, ev: Ev) -> Check {
        match ev {
            Ev::Tick(id, inc) => {
                let now = self.now;
                // Clock rates wander (within the bound) so that any node,
                // not only the fastest, sometimes leads with a slow clock.
                let new_period = self.rng.chance(20_000).then(|| self.draw_tick_period());
                let Some(h) = self.host(id).filter(|h| h.incarnation == inc) else {
                    return Ok(());
                };
                if let Some(p) = new_period {
                    h.set_tick_period(now, p, TICK_US);
                }
                h.node.tick();
                let next = now + h.tick_period;
                self.mix(b"tick", id, 0);
                self.schedule(next, Ev::Tick(id, inc));
                self.drive(id)?;
                self.expire_leases(id, inc)
            }
            Ev::Deliver(msg, data, from_inc) => self.deliver(*msg, data, from_inc),
            Ev::DiskDone(id, inc) => {
                let now = self.now;
                let Some(slot) = self.slots.get_mut(&id) else {
                    return Ok(());
                };
                let Some(h) = slot.host.as_mut().filter(|h| h.incarnation == inc) else {
                    return Ok(());
                };
                let mut last = None;
                while h.disk.front().is_some_and(|w| w.done_at <= now) {
                    let w = h.disk.pop_front().unwrap();
                    slot.durable
                        .write(&w.entries)
                        .map_err(|e| Violation::new("host-contract", format!("node {id}: {e}")))?;
                    last = w.entries.last().map(|e| (e.index, e.term));
                }
                if let Some((i, t)) = last {
                    h.node.log_persisted(i, t);
                    self.mix(b"disk", id, i);
                    self.trace_line(|| format!("n{id} DISK durable up to ({i}, t{t})"));
                }
                self.drive(id)
            }
            Ev::SnapSendFailed(from, inc, to) => {
                let Some(h) = self.host(from).filter(|h| h.incarnation == inc) else {
                    return Ok(());
                };
                h.node.snapshot_send_failed(to);
                self.trace_line(|| format!("n{from} snapshot send to n{to} FAILED"));
                self.drive(from)
            }
            Ev::Flush(id, inc) => self.flush(id, inc),
            Ev::ClientWake(c) => self.client_wake(c),
            Ev::ClientTimeout(c, op) => {
                if self.clients[c].op == Some(op) {
                    self.trace_line(|| format!("client {c} op {op} TIMEOUT"));
                    self.complete_op(op, Outcome::Unknown, None);
                }
                Ok(())
            }
            Ev::Fault => {
                if !self.settling {
                    self.fault()?;
                    let at = self.fault_gap();
                    self.schedule(at, Ev::Fault);
                }
                Ok(())
            }
            Ev::Restart(id) => {
                if self.slots.get(&id).is_some_and(|s| s.host.is_none()) {
                    self.start(id)?;
                }
                Ok(())
            }
            Ev::Crash(id, inc) => {
                if !self.settling && self.host(id).is_some_and(|h| h.incarnation == inc) {
                    self.crash(id);
                }
                Ok(())
            }
            Ev::Hostile => self.hostile(),
            Ev::LeaseWake(hi) => self.lease_wake(hi),
            Ev::LeaseTimeout(op) => {
                self.complete_lease_op(op, leases::LeaseOutcome::Unknown, None);
                Ok(())
            }
            Ev::Heal(gen) => {
                if gen == self.partition_gen && !self.blocked.is_empty() {
                    self.blocked.clear();
                    self.trace_line(|| "HEAL network".into());
                }
                Ok(())
            }
        }
    }

    fn deliver(&mut self, msg: Message, data: Option<Arc<SnapshotData>>, from_inc: u64) -> Check {
        let (from, to) = (msg.from, msg.to);
        let is_snap = matches!(msg.body, MessageBody::InstallSnapshot { .. });
        let blocked = self.blocked.contains(&(from, to));
        let up = self.slots.get(&to).is_some_and(|s| s.host.is_some());
        if blocked || !up {
            self.stats.msgs_dropped += 1;
            if is_snap {
                let at = self.now + 20_000;
                self.schedule(at, Ev::SnapSendFailed(from, from_inc, to));
            } else if blocked && self.rng.chance(100_000) {
                if let Some(h) = self.host(from).filter(|h| h.incarnation == from_inc) {
                    h.node.report_unreachable(to);
                    self.trace_line(|| format!("n{from} report_unreachable(n{to})"));
                    return self.drive(from);
                }
            }
            return Ok(());
        }
        self.mix(b"msg", from, to);
        if self.tracing() {
            let d = describe(&msg);
            self.trace_line(|| format!("n{from} -> n{to} t{} {d}", msg.term));
        }
        let h = self.host(to).expect("checked up");
        if let (MessageBody::InstallSnapshot { meta }, Some(data)) = (&msg.body, data) {
            h.staged.insert((meta.last_index, meta.last_term), data);
            while h.staged.len() > 4 {
                h.staged.pop_first();
            }
        }
        if h.node.step(msg).is_err() {
            // Refused (e.g. from a removed member): dropped, as if lost.
            self.stats.msgs_refused += 1;
        }
        self.drive(to)
    }

    /// Feeds the node's output back through the host until it is quiet,
    /// then lets the checkers look at it.
    fn drive(&mut self, id: NodeId) -> Check {
        let Some(mut host) = self.slots.get_mut(&id).and_then(|s| s.host.take()) else {
            return Ok(());
        };
        let mut result = Ok(());
        for _ in 0..1_000 {
            if !host.node.has_ready() {
                break;
            }
            let rd = host.node.ready();
            result = self.execute(&mut host, rd);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() && host.node.has_ready() {
            result = Err(Violation::new(
                "simulator",
                format!("node {id} still has output after 1000 Ready rounds"),
            ));
        }
        self.slots.get_mut(&id).expect("slot").host = Some(host);
        result?;
        self.observe(id)
    }
}

/// Runs one seed.
pub fn run(opts: SimOptions) -> RunReport {
    World::new(opts).run()
}
