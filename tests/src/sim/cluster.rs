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

/// Simulated microseconds per tick at the nominal clock rate.
pub const TICK_US: Time = 10_000;
pub const ELECTION_TICKS: u64 = 10;
pub const HEARTBEAT_TICKS: u64 = 2;
/// The lease lasts `ELECTION_TICKS - LEASE_MARGIN_TICKS` leader ticks from the
/// confirming heartbeat; a follower that heard that heartbeat refuses votes
/// for at least `ELECTION_TICKS - 1` of its own ticks. With clock rates within
/// ±`MAX_DRIFT_PPM`, `(10 - 3) * 1.05 <= (10 - 1) * 0.95`, so the margin covers
/// the drift with room to spare.
pub const LEASE_MARGIN_TICKS: u64 = 3;
pub const MAX_DRIFT_PPM: u64 = 50_000;
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
    pub seed: u64,
    /// Events to simulate under chaos (the settle phase comes on top).
    pub events: u64,
    /// Keep the last `trace_len` trace lines (0: no trace, fastest).
    pub trace_len: usize,
    /// After the chaos, heal everything and require progress.
    pub check_liveness: bool,
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
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub leaders: usize,
    pub commits: usize,
    pub msgs_sent: u64,
    pub msgs_dropped: u64,
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
    /// Chance per applied entry that the host flushes its state machine
    /// (0: the state machine is rebuilt from the snapshot on restart).
    sm_flush_ppm: u32,
    fault_gap: (Time, Time),
    disk_max: Time,
    drift_ppm: u64,
    clients: usize,
    think: (Time, Time),
    keys: u64,
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
}

fn addr(id: NodeId) -> String {
    format!("n{id}")
}

impl World {
    pub fn new(opts: SimOptions) -> World {
        let mut rng = Rng::new(opts.seed);
        let nodes = if rng.chance(500_000) { 3 } else { 5 };
        let calm = rng.chance(150_000);
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
            drift_ppm: match opts.drift_ppm {
                Some(d) => d,
                None => rng.range(0, MAX_DRIFT_PPM),
            },
            clients: rng.range(2, 5) as usize,
            think: (rng.range(0, 5_000), rng.range(10_000, 60_000)),
            keys: rng.range(1, 4),
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
        World {
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
            ck: Checkers::default(),
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
        let gap = self.fault_gap();
        self.schedule(gap, Ev::Fault);

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
                return self.converge();
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
                    let applied = self.slots.get(m).and_then(|s| s.host.as_ref())?.applied;
                    (applied < target).then_some((*m, applied))
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
            election_ticks: ELECTION_TICKS,
            heartbeat_ticks: HEARTBEAT_TICKS,
            lease_drift_margin_ticks: self.opts.lease_margin_ticks.unwrap_or(LEASE_MARGIN_TICKS),
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: self.rng.range(1, 8) as usize,
            max_entries_per_msg: self.rng.range(1, 16) as usize,
            max_bytes_per_msg: self.rng.range(64, 4096) as usize,
            snapshot_threshold: self.rng.range(4, 40),
            seed: self.rng.next_u64(),
        };
        let initial = self.initial.clone();
        let slot = self.slots.get_mut(&id).expect("slot exists");
        slot.incarnation += 1;
        let membership = if slot.initial_member || self.opts.joiner_knows_bootstrap {
            initial
        } else {
            Membership::default()
        };
        let host = Host::restore(
            cfg,
            slot.incarnation,
            &slot.durable,
            membership,
            tick_period,
        )
        .map_err(|e| Violation::new("simulator", format!("node {id}: {e}")))?;
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
                    h.tick_period = p;
                }
                h.node.tick();
                let next = now + h.tick_period;
                self.mix(b"tick", id, 0);
                self.schedule(next, Ev::Tick(id, inc));
                self.drive(id)
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
        h.node.step(msg);
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

    /// Executes one `Ready` in the contract's order.
    fn execute(&mut self, h: &mut Host, rd: Ready) -> Check {
        let id = h.id;
        if self.tracing() && !rd.is_empty() {
            let s = summarize(&rd);
            self.trace_line(|| format!("n{id} READY {s}"));
        }
        // 1. Install a snapshot, atomically.
        if let Some(meta) = rd.snapshot_to_install {
            self.install_snapshot(h, meta)?;
        }
        // 2. Hard state, synchronously.
        if let Some(hs) = rd.hard_state {
            let skip = self.opts.bug == Some(HostBug::SkipHardState);
            let d = self.durable(id);
            contract::check_hard_state(id, &d.hard_state, &hs)?;
            if !skip {
                d.hard_state = hs;
            }
        }
        // 3. Start persisting entries.
        if !rd.entries.is_empty() {
            self.append(h, rd.entries)?;
        }
        // 4. Send.
        for m in rd.messages {
            self.check_and_send(h, m)?;
        }
        // 5. Apply.
        for e in rd.committed {
            self.apply_entry(h, e)?;
        }
        // 6. Reads.
        for r in rd.reads {
            let Some(op) = h.reads_waiting.remove(&r.id) else {
                return Err(Violation::new(
                    "host-contract",
                    format!("node {id} released read {} which is not waiting", r.id),
                ));
            };
            h.reads_ready.push((r.read_index, op));
        }
        for r in rd.refused_reads {
            let Some(op) = h.reads_waiting.remove(&r.id) else {
                return Err(Violation::new(
                    "host-contract",
                    format!("node {id} refused read {} which is not waiting", r.id),
                ));
            };
            let hint = match r.error {
                ProposeError::NotLeader { leader } => leader,
                _ => None,
            };
            self.complete_op(op, Outcome::Failed(format!("{:?}", r.error)), hint);
        }
        self.serve_reads(h)?;
        // 7. Snapshots.
        if rd.create_snapshot {
            self.create_snapshot(h)?;
        }
        for to in rd.send_snapshot_to {
            self.send_snapshot(h, to)?;
        }
        Ok(())
    }

    fn append(&mut self, h: &mut Host, entries: Vec<Entry>) -> Check {
        let id = h.id;
        let f = entries[0].index;
        let contract = |d: String| Err(Violation::new("host-contract", d));
        if entries.windows(2).any(|w| w[1].index != w[0].index + 1) {
            return contract(format!("node {id}: Ready.entries are not contiguous"));
        }
        if f <= h.mirror.snap_index {
            return contract(format!(
                "node {id}: Ready.entries start at {f}, inside its snapshot (up to {})",
                h.mirror.snap_index
            ));
        }
        if f > h.mirror.last() + 1 {
            return contract(format!(
                "node {id}: Ready.entries start at {f} but its log ends at {}: a gap",
                h.mirror.last()
            ));
        }
        for i in f..=h.mirror.last() {
            let old = h.mirror.get(i).expect("in range").0.term;
            let new = entries.get((i - f) as usize).map(|e| e.term);
            if new != Some(old) {
                self.ck.completeness.on_overwrite(id, i, old)?;
            }
        }
        h.mirror
            .entries
            .truncate((f - h.mirror.snap_index - 1) as usize);
        for e in &entries {
            let prev = h.mirror.term_at(e.index - 1).unwrap_or(0);
            let d = entry_digest(e);
            self.ck.log_matching.observe(id, e.index, e.term, prev, d)?;
            h.mirror.entries.push((e.clone(), d));
        }
        let delay = if self.rng.chance(50_000) {
            self.rng.range(5_000, 30_000)
        } else {
            self.rng.range(50, self.profile.disk_max)
        };
        let done_at = (self.now + delay).max(h.disk.back().map_or(0, |w| w.done_at));
        if self.opts.bug == Some(HostBug::AckBeforeFsync) {
            let last = entries.last().expect("non-empty");
            h.node.log_persisted(last.index, last.term);
        }
        h.disk.push_back(PendingWrite { entries, done_at });
        self.schedule(done_at, Ev::DiskDone(id, h.incarnation));
        Ok(())
    }

    fn check_and_send(&mut self, h: &mut Host, m: Message) -> Check {
        let id = h.id;
        if m.from != id {
            return Err(Violation::new(
                "host-contract",
                format!("node {id} emitted a message from node {}", m.from),
            ));
        }
        let d = &self.slots[&id].durable;
        contract::check_send(&m, &d.hard_state)?;
        let mut data = None;
        match &m.body {
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index,
                ..
            } => {
                let mi = *match_index;
                let durable = if mi <= h.mirror.snap_index {
                    d.snapshot_index() >= mi
                } else {
                    h.mirror.term_at(mi).is_some_and(|t| d.holds(mi, t))
                };
                contract::check_ack(id, m.to, mi, durable)?;
            }
            MessageBody::InstallSnapshot { meta } => match &d.snapshot {
                Some(s) if &s.meta == meta => data = Some(s.clone()),
                _ => {
                    return Err(Violation::new(
                        "host-contract",
                        format!(
                            "node {id} sent InstallSnapshot at {} but holds no such snapshot",
                            meta.last_index
                        ),
                    ))
                }
            },
            _ => {}
        }
        self.send(m, data, h.incarnation);
        Ok(())
    }

    /// Puts a message on the wire: it may be lost, duplicated, delayed.
    fn send(&mut self, m: Message, data: Option<Arc<SnapshotData>>, from_inc: u64) {
        self.stats.msgs_sent += 1;
        let snap = data.is_some();
        if self.blocked.contains(&(m.from, m.to)) || self.rng.chance(self.profile.drop_ppm) {
            self.stats.msgs_dropped += 1;
            if snap {
                let at = self.now + 20_000;
                self.schedule(at, Ev::SnapSendFailed(m.from, from_inc, m.to));
            }
            return;
        }
        let copies = if self.rng.chance(self.profile.dup_ppm) {
            self.stats.msgs_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if self.rng.chance(self.profile.stale_ppm) {
                self.rng.range(100_000, 1_500_000)
            } else if self.rng.chance(self.profile.slow_ppm) {
                self.rng.range(5_000, 60_000)
            } else {
                self.rng.range(100, 2_000)
            } + if snap { 2_000 } else { 0 };
            let at = self.now + delay;
            self.schedule(at, Ev::Deliver(Box::new(m.clone()), data.clone(), from_inc));
        }
    }

    fn apply_entry(&mut self, h: &mut Host, e: Entry) -> Check {
        let id = h.id;
        let in_log = e.index > h.mirror.snap_index
            && h.mirror.get(e.index).is_some_and(|(m, _)| m.term == e.term);
        if !in_log {
            return Err(Violation::new(
                "host-contract",
                format!(
                    "node {id} handed out committed entry ({}, t{}) that is not in its log",
                    e.index, e.term
                ),
            ));
        }
        let digest = entry_digest(&e);
        let mut applied_cmd = None;
        match &e.payload {
            EntryPayload::Command(b) => {
                let cmd = Command::decode(b).map_err(|m| {
                    Violation::new("host-contract", format!("node {id} index {}: {m}", e.index))
                })?;
                let r = h.kv.apply(&cmd);
                applied_cmd = Some((cmd, r));
            }
            EntryPayload::Config(c) => apply_conf(&mut h.applied_membership, c),
            EntryPayload::Noop => {}
        }
        h.applied = e.index;
        h.applied_term = e.term;
        self.ck
            .sm
            .on_apply(id, e.index, e.term, digest, h.kv.digest())?;
        if self.rng.chance(self.profile.sm_flush_ppm) {
            self.durable(id).sm = Some(FlushedSm {
                applied: h.applied,
                applied_term: h.applied_term,
                kv: h.kv.clone(),
                membership: h.applied_membership.clone(),
            });
        }
        if e.index > self.max_applied {
            self.max_applied = e.index;
            if let Some((cmd, r)) = &applied_cmd {
                self.history.committed_write(cmd.key(), e.index, cmd.op());
                self.dirty_keys.insert(cmd.key());
                let new_value = match (cmd, r) {
                    (Command::Put { value, .. }, _) => Some(*value),
                    (Command::Cas { new, .. }, ApplyResult::Cas { ok: true }) => Some(*new),
                    _ => None,
                };
                if let Some(v) = new_value {
                    self.value_index.insert(v, e.index);
                }
            }
        }
        if let Some((t, op)) = h.proposals.remove(&e.index) {
            if t == e.term {
                match &applied_cmd {
                    Some((cmd, r)) if cmd.op() == op => {
                        let outcome = match r {
                            ApplyResult::Put => Outcome::Put,
                            ApplyResult::Cas { ok } => Outcome::Cas { ok: *ok },
                        };
                        if self.complete_op(op, outcome, None) {
                            let version =
                                h.kv.get(cmd.key())
                                    .and_then(|v| self.value_index.get(&v).copied())
                                    .unwrap_or(0);
                            self.ck
                                .stale
                                .on_write_ack(self.now, cmd.key(), e.index, version);
                        }
                    }
                    _ => {
                        return Err(Violation::new(
                            "log-matching",
                            format!(
                                "node {id} proposed op {op} at (index {}, term {t}) but applied a \
                                 different entry with that index and term",
                                e.index
                            ),
                        ))
                    }
                }
            } else {
                self.complete_op(
                    op,
                    Outcome::Failed(format!(
                        "its index {} went to a term {} entry",
                        e.index, e.term
                    )),
                    None,
                );
            }
        }
        // Proposals below the applied index can no longer be resolved here.
        while h
            .proposals
            .first_key_value()
            .is_some_and(|(i, _)| *i < e.index)
        {
            h.proposals.pop_first();
        }
        Ok(())
    }

    fn serve_reads(&mut self, h: &mut Host) -> Check {
        if h.reads_ready.is_empty() {
            return Ok(());
        }
        let applied = h.applied;
        let (now, later): (Vec<_>, Vec<_>) =
            h.reads_ready.drain(..).partition(|(ri, _)| *ri <= applied);
        h.reads_ready = later;
        for (read_index, op) in now {
            let rec = self.history.get(op).expect("known op").clone();
            let OpKind::Read(consistency) = rec.kind else {
                unreachable!("only reads wait for ReadReady")
            };
            let value = h.kv.get(rec.key);
            let value_index = match value {
                None => 0,
                Some(v) => *self.value_index.get(&v).ok_or_else(|| {
                    Violation::new(
                        "linearizability",
                        format!(
                            "read op {op} on node {} returned {v}, which no committed write \
                             produced",
                            h.id
                        ),
                    )
                })?,
            };
            if rec.outcome == Outcome::Pending {
                self.ck.stale.check_read(&ReadObs {
                    op,
                    node: h.id,
                    consistency,
                    key: rec.key,
                    invoke: rec.invoke,
                    read_index,
                    value_index,
                })?;
            }
            self.complete_op(op, Outcome::Read { value, read_index }, None);
        }
        Ok(())
    }

    fn install_snapshot(&mut self, h: &mut Host, meta: SnapshotMeta) -> Check {
        let id = h.id;
        let key = (meta.last_index, meta.last_term);
        let Some(data) = h.staged.get(&key).cloned() else {
            return Err(Violation::new(
                "host-contract",
                format!(
                    "node {id} was told to install snapshot (index {}, term {}) that it never \
                     received",
                    meta.last_index, meta.last_term
                ),
            ));
        };
        if data.meta != meta {
            return Err(Violation::new(
                "host-contract",
                format!(
                    "node {id} was told to install {meta:?} but the received snapshot is {:?}",
                    data.meta
                ),
            ));
        }
        self.ck
            .sm
            .on_install(id, meta.last_index, meta.last_term, data.kv.digest())?;
        // The disk is sequential: queued writes land before the install.
        let writes: Vec<PendingWrite> = h.disk.drain(..).collect();
        let d = self.durable(id);
        for w in writes {
            d.write(&w.entries)
                .map_err(|e| Violation::new("host-contract", format!("node {id}: {e}")))?;
        }
        d.set_snapshot(data.clone());
        d.sm = None;
        h.kv = data.kv.clone();
        h.applied = meta.last_index;
        h.applied_term = meta.last_term;
        h.applied_membership = meta.membership.clone();
        h.node.snapshot_installed(meta.clone());
        self.stats.snapshots_installed += 1;
        self.trace_line(|| format!("n{id} INSTALLED snapshot ({}, t{})", key.0, key.1));

        // Re-read the log the core kept after the snapshot.
        let st = h.node.status();
        let kept = if st.last_index > meta.last_index {
            h.node.entries(meta.last_index + 1, st.last_index + 1)
        } else {
            Vec::new()
        };
        for i in meta.last_index + 1..=h.mirror.last() {
            let old = h.mirror.get(i).expect("in range").0.term;
            let new = kept.get((i - meta.last_index - 1) as usize).map(|e| e.term);
            if new != Some(old) {
                self.ck.completeness.on_overwrite(id, i, old)?;
            }
        }
        h.mirror.snap_index = meta.last_index;
        h.mirror.snap_term = meta.last_term;
        h.mirror.entries.clear();
        for e in &kept {
            let prev = h.mirror.term_at(e.index - 1).unwrap_or(0);
            let dg = entry_digest(e);
            self.ck
                .log_matching
                .observe(id, e.index, e.term, prev, dg)?;
            h.mirror.entries.push((e.clone(), dg));
        }
        // The disk keeps only what matches the core's log.
        let d = self.durable(id);
        let keep = d
            .log
            .iter()
            .zip(kept.iter())
            .take_while(|(a, b)| a.index == b.index && a.term == b.term)
            .count();
        d.log.truncate(keep);
        let last = d.log.last().map(|e| (e.index, e.term));
        h.proposals = h.proposals.split_off(&(meta.last_index + 1));
        if let Some((i, t)) = last {
            h.node.log_persisted(i, t);
        }
        Ok(())
    }

    fn create_snapshot(&mut self, h: &mut Host) -> Check {
        let id = h.id;
        if h.applied <= self.slots[&id].durable.snapshot_index() {
            self.trace_line(|| format!("n{id} create_snapshot: nothing new to snapshot"));
            return Ok(());
        }
        if h.config_entry_after(h.applied).is_none() {
            let m = h.node.status().membership;
            if m != h.applied_membership {
                return Err(Violation::new(
                    "membership",
                    format!(
                        "node {id}: no config change is pending above applied index {}, yet the \
                         core's membership {:?} differs from the applied one {:?}",
                        h.applied, m, h.applied_membership
                    ),
                ));
            }
        }
        let meta = SnapshotMeta {
            last_index: h.applied,
            last_term: h.applied_term,
            membership: h.applied_membership.clone(),
        };
        let data = Arc::new(SnapshotData {
            meta: meta.clone(),
            kv: h.kv.clone(),
        });
        self.durable(id).set_snapshot(data);
        h.mirror.compact(meta.last_index, meta.last_term);
        self.stats.snapshots_created += 1;
        self.trace_line(|| {
            format!(
                "n{id} CREATED snapshot ({}, t{})",
                meta.last_index, meta.last_term
            )
        });
        h.node.snapshot_created(meta);
        Ok(())
    }

    fn send_snapshot(&mut self, h: &mut Host, to: NodeId) -> Check {
        let id = h.id;
        let Some(data) = self.slots[&id].durable.snapshot.clone() else {
            return Err(Violation::new(
                "host-contract",
                format!("node {id} was asked to send a snapshot to {to} but has none"),
            ));
        };
        let m = Message {
            from: id,
            to,
            term: h.node.status().term,
            body: MessageBody::InstallSnapshot {
                meta: data.meta.clone(),
            },
        };
        contract::check_send(&m, &self.slots[&id].durable.hard_state)?;
        self.stats.snapshots_sent += 1;
        self.send(m, Some(data), h.incarnation);
        Ok(())
    }

    /// Checks run after every event on the node it concerned.
    fn observe(&mut self, id: NodeId) -> Check {
        let Some(h) = self.slots.get_mut(&id).and_then(|s| s.host.as_mut()) else {
            return Ok(());
        };
        let st = h.node.status();
        h.role = st.role;
        h.term = st.term;
        h.leader = st.leader;
        h.now_tick = st.now_tick;
        h.lease_until_tick = st.lease_until_tick;
        // Entries this node compacted before we looked are known from the
        // global applied record (a snapshot only covers applied entries).
        let from = h.seen_commit + 1;
        h.seen_commit = st.commit;
        let inc = h.incarnation;
        let newly_leader = st.role == Role::Leader && h.checked_leader_term != st.term;
        if newly_leader {
            h.checked_leader_term = st.term;
        }
        self.ck
            .commit
            .observe(id, inc, st.commit, st.snapshot_index, st.last_index)?;
        let applied = self.slots[&id].host.as_ref().expect("running").applied;
        if st.commit < applied {
            return Err(Violation::new(
                "commit-monotonic",
                format!(
                    "node {id} has commit {} below the index its state machine applied ({applied})",
                    st.commit
                ),
            ));
        }
        if st.role == Role::Leader {
            self.ck.election.observe_leader(st.term, id)?;
            let leaders: Vec<LeaderState> = self
                .slots
                .iter()
                .filter_map(|(n, s)| s.host.as_ref().map(|h| (*n, h)))
                .filter(|(_, h)| h.role == Role::Leader)
                .map(|(node, h)| LeaderState {
                    node,
                    term: h.term,
                    lease_valid: h.now_tick < h.lease_until_tick,
                    now_tick: h.now_tick,
                    lease_until_tick: h.lease_until_tick,
                })
                .collect();
            if leaders.len() > 1 {
                check_leases(&leaders)?;
            }
        }
        let h = self.slots[&id].host.as_ref().expect("running");
        if newly_leader {
            self.ck.completeness.on_leader(st.term, &h.mirror)?;
        }
        if from > st.commit {
            return Ok(());
        }
        let leaders: Vec<(u64, &dyn LogView)> = self
            .slots
            .values()
            .filter_map(|s| s.host.as_ref())
            .filter(|x| x.role == Role::Leader)
            .map(|x| (x.term, &x.mirror as &dyn LogView))
            .collect();
        let voters: Vec<NodeId> = st.membership.voters().collect();
        for i in from..=st.commit {
            let (term, digest) = match h.mirror.get(i) {
                Some((e, d)) => (e.term, *d),
                None if i <= h.mirror.snap_index => match self.ck.sm.applied_at(i) {
                    Some(x) => x,
                    None => continue, // from a snapshot installed here: seen before
                },
                None => {
                    return Err(Violation::new(
                        "commit-monotonic",
                        format!(
                            "node {id} has commit {} but its log ends at {}",
                            st.commit,
                            h.mirror.last()
                        ),
                    ));
                }
            };
            if self
                .ck
                .completeness
                .on_committed(id, st.term, i, term, digest, &leaders)?
            {
                let holders: Vec<NodeId> = self
                    .slots
                    .iter()
                    .filter(|(_, s)| s.durable.holds(i, term))
                    .map(|(n, _)| *n)
                    .collect();
                contract::check_commit_quorum(id, i, term, &voters, &holders)?;
            }
        }
        Ok(())
    }

    /// The host's mirror must equal the log the core holds.
    fn cross_check_logs(&mut self) -> Check {
        for (id, s) in &self.slots {
            let Some(h) = s.host.as_ref() else { continue };
            let st = h.node.status();
            if st.last_index != h.mirror.last() {
                return Err(Violation::new(
                    "host-contract",
                    format!(
                        "node {id}: core's last index {} differs from the log it asked the host \
                         to write (last {})",
                        st.last_index,
                        h.mirror.last()
                    ),
                ));
            }
            if st.last_index > h.mirror.snap_index {
                for e in h.node.entries(h.mirror.snap_index + 1, st.last_index + 1) {
                    if h.mirror.get(e.index).map(|m| &m.0) != Some(&e) {
                        return Err(Violation::new(
                            "host-contract",
                            format!(
                                "node {id}: core's entry at {} differs from what it asked the \
                                 host to write",
                                e.index
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    // --------------------------------------------------------------- clients

    fn complete_op(&mut self, op: OpId, outcome: Outcome, hint: Option<NodeId>) -> bool {
        let failed = matches!(outcome, Outcome::Failed(_));
        let unknown = outcome == Outcome::Unknown;
        if !self.history.complete(op, self.now, outcome) {
            return false;
        }
        let rec = self.history.get(op).expect("known op");
        let (c, key, is_write, consistency) = (
            rec.client,
            rec.key,
            rec.kind.is_write(),
            match rec.kind {
                OpKind::Read(c) => Some(c),
                _ => None,
            },
        );
        if self.tracing() {
            let o = format!("{:?}", rec.outcome);
            self.trace_line(|| format!("client {c} op {op} -> {o}"));
        }
        if failed {
            self.stats.ops_failed += 1;
        } else if unknown {
            self.stats.ops_unknown += 1;
        } else if is_write {
            self.stats.writes_ok += 1;
            self.dirty_keys.insert(key);
        } else {
            let i = match consistency {
                Some(ReadConsistency::Linearizable) => 0,
                Some(ReadConsistency::Lease) => 1,
                _ => 2,
            };
            self.stats.reads_ok[i] += 1;
            self.dirty_keys.insert(key);
        }
        if self.clients[c].op == Some(op) {
            self.clients[c].op = None;
            if failed || unknown {
                self.clients[c].guess = match hint {
                    Some(l) => l,
                    None => 1 + self.rng.below(self.max_id),
                };
            }
            let (lo, hi) = self.profile.think;
            let at = self.now + self.rng.range(lo, hi);
            self.schedule(at, Ev::ClientWake(c));
        }
        true
    }

    fn client_wake(&mut self, c: usize) -> Check {
        if self.clients[c].op.is_some() {
            return Ok(());
        }
        let key = self.rng.below(self.profile.keys) as Key;
        let roll = self.rng.below(100);
        let kind = if roll < 40 {
            let value = self.next_value;
            self.next_value += 1;
            OpKind::Put { value }
        } else if roll < 55 {
            let new = self.next_value;
            self.next_value += 1;
            // Expect a recent value of the key (often the current one).
            let recent: Vec<Value> = self
                .history
                .committed(key)
                .iter()
                .rev()
                .take(3)
                .filter_map(|(_, op)| match self.history.get(*op).map(|o| o.kind) {
                    Some(OpKind::Put { value }) => Some(value),
                    Some(OpKind::Cas { new, .. }) => Some(new),
                    _ => None,
                })
                .collect();
            let expect = self.rng.pick(&recent).copied();
            OpKind::Cas { expect, new }
        } else {
            let c = match self.rng.below(10) {
                0..=3 => ReadConsistency::Linearizable,
                4..=7 => ReadConsistency::Lease,
                _ => ReadConsistency::Eventual,
            };
            OpKind::Read(c)
        };
        let mut target = self.clients[c].guess;
        if self.slots.get(&target).is_none_or(|s| s.host.is_none()) {
            let up = self.running();
            if let Some(&t) = self.rng.pick(&up) {
                target = t;
            }
        }
        self.clients[c].guess = target;
        let op = self.history.invoke(c, target, key, kind, self.now);
        self.clients[c].op = Some(op);
        self.trace_line(|| format!("client {c} op {op} INVOKE {kind:?} key {key} at n{target}"));
        let at = self.now + CLIENT_TIMEOUT_US;
        self.schedule(at, Ev::ClientTimeout(c, op));
        let now = self.now;
        let flush_delay = self.rng.range(0, 500);
        let local_reads = self.opts.bug == Some(HostBug::LocalReads);
        let Some(h) = self.host(target) else {
            self.complete_op(op, Outcome::Failed("node down".into()), None);
            return Ok(());
        };
        match kind {
            OpKind::Put { value } => {
                let cmd = Command::Put { op, key, value };
                h.batch.push((op, cmd));
                if h.batch.len() == 1 {
                    let inc = h.incarnation;
                    self.schedule(now + flush_delay, Ev::Flush(target, inc));
                }
                Ok(())
            }
            OpKind::Cas { expect, new } => {
                let cmd = Command::Cas {
                    op,
                    key,
                    expect,
                    new,
                };
                h.batch.push((op, cmd));
                if h.batch.len() == 1 {
                    let inc = h.incarnation;
                    self.schedule(now + flush_delay, Ev::Flush(target, inc));
                }
                Ok(())
            }
            OpKind::Read(_) if local_reads => {
                let mut h = self
                    .slots
                    .get_mut(&target)
                    .and_then(|s| s.host.take())
                    .expect("up");
                h.reads_ready.push((h.applied, op));
                let r = self.serve_reads(&mut h);
                self.slots.get_mut(&target).expect("slot").host = Some(h);
                r
            }
            OpKind::Read(consistency) => {
                h.reads_waiting.insert(op as ReadId, op);
                h.node.read(op as ReadId, consistency);
                self.drive(target)
            }
        }
    }

    /// Proposes the host's queued client writes as one batch.
    fn flush(&mut self, id: NodeId, inc: u64) -> Check {
        let Some(h) = self.host(id).filter(|h| h.incarnation == inc) else {
            return Ok(());
        };
        let batch = std::mem::take(&mut h.batch);
        if batch.is_empty() {
            return Ok(());
        }
        let cmds = batch.iter().map(|(_, c)| c.encode()).collect();
        match h.node.propose(cmds) {
            Ok((first, term)) => {
                for (k, (op, _)) in batch.iter().enumerate() {
                    h.proposals.insert(first + k as Index, (term, *op));
                }
                let n = batch.len();
                self.trace_line(|| format!("n{id} PROPOSED {n} writes at {first} t{term}"));
            }
            Err(e) => {
                let hint = match e {
                    ProposeError::NotLeader { leader } => leader,
                    _ => None,
                };
                for (op, _) in batch {
                    self.complete_op(op, Outcome::Failed(format!("{e:?}")), hint);
                }
            }
        }
        self.drive(id)
    }

    // ---------------------------------------------------------------- faults

    fn fault(&mut self) -> Check {
        let roll = self.rng.below(100);
        let running = self.running();
        match roll {
            0..=24 => {
                if let Some(&id) = self.rng.pick(&running) {
                    self.crash(id);
                }
                Ok(())
            }
            25..=49 => {
                self.partition();
                Ok(())
            }
            50..=59 => {
                self.blocked.clear();
                self.trace_line(|| "HEAL network".into());
                Ok(())
            }
            60..=84 => self.membership_change(),
            _ => {
                let Some(l) = self.leader() else {
                    return Ok(());
                };
                let h = self.host(l).expect("leader runs");
                let voters: Vec<NodeId> = h
                    .node
                    .status()
                    .membership
                    .voters()
                    .filter(|v| *v != l)
                    .collect();
                let Some(&to) = self.rng.pick(&voters) else {
                    return Ok(());
                };
                let h = self.host(l).expect("leader runs");
                let r = h.node.transfer_leadership(to);
                self.stats.transfers += 1;
                self.trace_line(|| format!("TRANSFER leadership n{l} -> n{to}: {r:?}"));
                self.drive(l)
            }
        }
    }

    fn partition(&mut self) {
        let ids: Vec<NodeId> = self.slots.keys().copied().collect();
        self.blocked.clear();
        match self.rng.below(3) {
            0 => {
                // Isolate one node, usually the leader (the interesting case).
                let leader = self.leader();
                let x = match leader {
                    Some(l) if self.rng.chance(700_000) => l,
                    _ => *self.rng.pick(&ids).expect("nodes"),
                };
                for &y in &ids {
                    if y != x {
                        self.blocked.insert((x, y));
                        self.blocked.insert((y, x));
                    }
                }
            }
            1 => {
                // Split in two.
                let side: Vec<bool> = ids.iter().map(|_| self.rng.chance(500_000)).collect();
                for (i, &a) in ids.iter().enumerate() {
                    for (j, &b) in ids.iter().enumerate() {
                        if side[i] != side[j] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
            _ => {
                // One-way cuts.
                for _ in 0..self.rng.range(1, 4) {
                    let a = *self.rng.pick(&ids).expect("nodes");
                    let b = *self.rng.pick(&ids).expect("nodes");
                    if a != b {
                        self.blocked.insert((a, b));
                    }
                }
            }
        }
        self.partition_gen += 1;
        self.stats.partitions += 1;
        if self.tracing() {
            let b = format!("{:?}", self.blocked);
            self.trace_line(|| format!("PARTITION blocked links {b}"));
        }
        let at = self.now + self.rng.range(20_000, 500_000);
        let gen = self.partition_gen;
        self.schedule(at, Ev::Heal(gen));
    }

    /// Adds, promotes, removes or re-adds a member through the current leader.
    fn membership_change(&mut self) -> Check {
        let Some(l) = self.leader() else {
            return Ok(());
        };
        let m = self.host(l).expect("leader runs").node.status().membership;
        let voters: Vec<NodeId> = m.voters().collect();
        let learners: Vec<NodeId> = m.learners().collect();
        let outsiders: Vec<NodeId> = (1..=self.max_id).filter(|i| !m.contains(*i)).collect();
        let change = match self.rng.below(4) {
            0 if !outsiders.is_empty() => {
                let id = *self.rng.pick(&outsiders).expect("non-empty");
                // The joiner runs before it is added (fresh disk, or the disk
                // it had when it was removed).
                self.slots.entry(id).or_insert_with(|| Slot {
                    durable: Durable::default(),
                    host: None,
                    incarnation: 0,
                    initial_member: false,
                });
                if self.slots[&id].host.is_none() {
                    self.start(id)?;
                }
                ConfChange::AddLearner { id, addr: addr(id) }
            }
            1 if !learners.is_empty() => ConfChange::Promote {
                id: *self.rng.pick(&learners).expect("non-empty"),
            },
            2 if voters.len() > 3 => ConfChange::Remove {
                id: *self.rng.pick(&voters).expect("non-empty"),
            },
            3 if !learners.is_empty() => ConfChange::Remove {
                id: *self.rng.pick(&learners).expect("non-empty"),
            },
            _ => return Ok(()),
        };
        let Some(h) = self.host(l) else {
            return Ok(());
        };
        let r = h.node.propose_conf_change(change.clone());
        self.stats.conf_changes += r.is_ok() as u64;
        self.trace_line(|| format!("CONF CHANGE via n{l}: {change:?} -> {r:?}"));
        self.drive(l)
    }
}

fn apply_conf(m: &mut Membership, c: &ConfChange) {
    match c {
        ConfChange::AddLearner { id, addr } => {
            m.members.entry(*id).or_insert(Member {
                role: MemberRole::Learner,
                addr: addr.clone(),
            });
        }
        ConfChange::Promote { id } => {
            if let Some(x) = m.members.get_mut(id) {
                x.role = MemberRole::Voter;
            }
        }
        ConfChange::Remove { id } => {
            m.members.remove(id);
        }
    }
}

fn describe(m: &Message) -> String {
    match &m.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            leader_transfer,
        } => format!(
            "{} last ({last_log_index}, t{last_log_term}){}",
            if *pre_vote { "PreVote" } else { "RequestVote" },
            if *leader_transfer { " transfer" } else { "" }
        ),
        MessageBody::RequestVoteResponse { pre_vote, granted } => format!(
            "{} {}",
            if *pre_vote { "PreVoteResp" } else { "VoteResp" },
            if *granted { "GRANTED" } else { "refused" }
        ),
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            heartbeat_seq,
        } => format!(
            "AppendEntries prev ({prev_log_index}, t{prev_log_term}) {} entries{} commit \
             {leader_commit} hb {heartbeat_seq}",
            entries.len(),
            match (entries.first(), entries.last()) {
                (Some(a), Some(b)) => format!(" [{}..={}]", a.index, b.index),
                _ => String::new(),
            }
        ),
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            conflict_index,
            conflict_term,
            heartbeat_seq,
        } => format!(
            "AppendResp {} match {match_index} conflict ({conflict_index}, {conflict_term:?}) hb \
             {heartbeat_seq}",
            if *success { "ok" } else { "REJECT" }
        ),
        MessageBody::InstallSnapshot { meta } => {
            format!("InstallSnapshot ({}, t{})", meta.last_index, meta.last_term)
        }
        other => body_name(other).to_string(),
    }
}

fn summarize(rd: &Ready) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &rd.snapshot_to_install {
        parts.push(format!("install ({}, t{})", m.last_index, m.last_term));
    }
    if let Some(hs) = &rd.hard_state {
        parts.push(format!(
            "hs(t{} vote {:?} commit {})",
            hs.term, hs.voted_for, hs.commit
        ));
    }
    if let (Some(a), Some(b)) = (rd.entries.first(), rd.entries.last()) {
        parts.push(format!("entries [{}..={}] t{}", a.index, b.index, b.term));
    }
    if !rd.messages.is_empty() {
        parts.push(format!("{} msgs", rd.messages.len()));
    }
    if let (Some(a), Some(b)) = (rd.committed.first(), rd.committed.last()) {
        parts.push(format!("apply [{}..={}]", a.index, b.index));
    }
    if !rd.reads.is_empty() || !rd.refused_reads.is_empty() {
        parts.push(format!(
            "reads {:?} refused {:?}",
            rd.reads
                .iter()
                .map(|r| (r.id, r.read_index))
                .collect::<Vec<_>>(),
            rd.refused_reads.iter().map(|r| r.id).collect::<Vec<_>>()
        ));
    }
    if rd.create_snapshot {
        parts.push("create_snapshot".into());
    }
    if !rd.send_snapshot_to.is_empty() {
        parts.push(format!("send_snapshot_to {:?}", rd.send_snapshot_to));
    }
    parts.join(", ")
}

/// Runs one seed.
pub fn run(opts: SimOptions) -> RunReport {
    World::new(opts).run()
}
