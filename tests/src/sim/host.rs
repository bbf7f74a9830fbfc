//! The volatile half of a simulated node: the core itself plus everything a
//! real host keeps in memory (queued disk writes, the state machine, staged
//! snapshots, client requests in progress). A crash drops all of it; only
//! [`Durable`] survives.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use d_engine_core::{
    Config, Entry, EntryPayload, Index, Membership, NodeId, RaftNode, ReadId, RestoreState, Role,
    Term,
};

use super::history::Time;
use super::kv::{Command, Kv, OpId};
use super::lease_clock::LeaseClock;
use super::storage::{Durable, LogMirror, SnapshotData};

/// A write queued on the simulated disk: completes (becomes durable) at `done_at`.
#[derive(Debug)]
pub struct PendingWrite {
    pub entries: Vec<Entry>,
    pub done_at: Time,
}

pub struct Host {
    pub id: NodeId,
    pub incarnation: u64,
    pub node: RaftNode,
    pub mirror: LogMirror,
    pub disk: VecDeque<PendingWrite>,
    pub kv: Kv,
    pub applied: Index,
    pub applied_term: Term,
    /// Membership as of `applied` (what a snapshot taken now must carry).
    pub applied_membership: Membership,
    /// Snapshots received from leaders, by `(last_index, last_term)`.
    pub staged: BTreeMap<(Index, Term), Arc<SnapshotData>>,
    /// Proposed client writes by log index: `(term, op)`.
    pub proposals: BTreeMap<Index, (Term, OpId)>,
    /// Client writes waiting to be proposed as one batch.
    pub batch: Vec<(OpId, Command)>,
    /// Reads handed to the core, waiting for `ReadReady`.
    pub reads_waiting: BTreeMap<ReadId, OpId>,
    /// Reads the core released: served once `applied >= read_index`.
    pub reads_ready: Vec<(Index, OpId)>,
    /// Simulated microseconds per tick (the node's clock rate).
    pub tick_period: Time,
    // Last observed status, for the checkers and the workload.
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub seen_commit: Index,
    pub now_tick: u64,
    pub lease_until_tick: u64,
    pub checked_leader_term: Term,
    /// Deadlines of the key leases (runs only on a ready leader).
    pub lease_clock: LeaseClock,
    /// The node's local clock: `(global, local)` at the last rate change;
    /// local time advances `TICK_US` per `tick_period` of global time.
    pub clock_base: (Time, Time),
}

impl Host {
    /// Boots a node from what its disk holds.
    pub fn restore(
        cfg: Config,
        incarnation: u64,
        durable: &Durable,
        initial_membership: Membership,
        tick_period: Time,
    ) -> Result<Host, String> {
        let id = cfg.id;
        let snap = durable.snapshot.clone();
        // The state machine restarts from the newest of the snapshot and the
        // flushed state machine (which never runs ahead of the durable log:
        // the core hands out only locally durable entries).
        let (kv, applied, applied_term, applied_membership) = match (&durable.sm, &snap) {
            (Some(sm), _) if sm.applied > durable.snapshot_index() => (
                sm.kv.clone(),
                sm.applied,
                sm.applied_term,
                sm.membership.clone(),
            ),
            (_, Some(s)) => (
                s.kv.clone(),
                s.meta.last_index,
                s.meta.last_term,
                s.meta.membership.clone(),
            ),
            (_, None) => (Kv::default(), 0, 0, initial_membership.clone()),
        };
        let restore = RestoreState {
            hard_state: durable.hard_state,
            snapshot: snap.as_ref().map(|s| s.meta.clone()),
            entries: durable.log.clone(),
            initial_membership,
            applied,
        };
        let node = RaftNode::new(cfg, restore).map_err(|e| format!("core refused config: {e}"))?;
        Ok(Host {
            id,
            incarnation,
            node,
            mirror: LogMirror::from_durable(id, durable),
            disk: VecDeque::new(),
            kv,
            applied,
            applied_term,
            applied_membership,
            staged: BTreeMap::new(),
            proposals: BTreeMap::new(),
            batch: Vec::new(),
            reads_waiting: BTreeMap::new(),
            reads_ready: Vec::new(),
            tick_period,
            role: Role::Follower,
            term: durable.hard_state.term,
            leader: None,
            seen_commit: 0,
            now_tick: 0,
            lease_until_tick: 0,
            checked_leader_term: 0,
            lease_clock: LeaseClock::default(),
            clock_base: (0, 0),
        })
    }

    /// The node's local clock at global time `now` (rounded down).
    pub fn local_now(&self, now: Time, tick_us: Time) -> Time {
        let (g, l) = self.clock_base;
        l + (now - g) * tick_us / self.tick_period
    }

    /// Changes the clock rate at global time `now`.
    pub fn set_tick_period(&mut self, now: Time, period: Time, tick_us: Time) {
        self.clock_base = (now, self.local_now(now, tick_us));
        self.tick_period = period;
    }

    /// Index of the newest config entry in the (mirrored) log above `after`.
    pub fn config_entry_after(&self, after: Index) -> Option<Index> {
        self.mirror
            .entries
            .iter()
            .rev()
            .take_while(|(e, _)| e.index > after)
            .find(|(e, _)| matches!(e.payload, EntryPayload::Config(_)))
            .map(|(e, _)| e.index)
    }
}
