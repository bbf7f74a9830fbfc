//! Key leases in the simulated hosts and the lease workload.
//!
//! Host side (mirrors `engine/src/runtime/core_loop/leases.rs` and
//! `runtime/leases.rs`): only a leader that committed an entry of its term
//! runs its lease clock ([`crate::sim::lease_clock`]) on its own drifting
//! clock; every tick it looks for leases whose deadline passed and proposes
//! their revoke once (again at the next tick if that proposal fails). A
//! keepalive goes to the node the holder believes leads; that node renews
//! only if its clock runs, after a lease read barrier (`ReadConsistency::
//! Lease`, served once applied up to its read index, like the engine's
//! `lease_leader`), and only if the lease is live on its clock; only then is
//! the holder told the lease lives.
//!
//! Workload: each holder grants a lease (TTL 30–300 ms, ids chosen by the
//! holder, never reused), attaches 1–3 keys to it (sometimes a put names a
//! lease that is gone, which must fail), then keeps it alive (keepalive
//! every ttl/3; a per-seed share of keepalives is lost) for a while and
//! revokes it or lets it lapse, or lets it lapse at once. Holders go silent
//! when the settle phase starts; then every lease must be revoked by expiry
//! within its bound (`lease-liveness`).

use crate::sim::checkers::lease_expiry::{check_replica, ExpiryDecision};
use crate::sim::kv::{LeaseId, LEASE_KEY_BASE};
use crate::sim::lease_clock::Renew;

use super::*;

/// Lease workload operations have this bit set in their op id.
pub const LEASE_OP: OpId = 1 << 62;
/// A revoke a leader proposes because a lease expired carries
/// `EXPIRY_OP | decision` as its op.
pub const EXPIRY_OP: OpId = 1 << 61;

pub fn is_lease_op(op: OpId) -> bool {
    op & LEASE_OP != 0
}

pub fn is_expiry_op(op: OpId) -> bool {
    op & EXPIRY_OP != 0 && !is_lease_op(op)
}

/// Keys the lease workload attaches (shared by the holders, so keys move
/// between leases).
const LEASE_KEYS: u64 = 6;
/// TTLs the holders grant, simulated microseconds.
const TTL_US: (u64, u64) = (30_000, 300_000);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LeaseOpKind {
    Grant {
        id: LeaseId,
        ttl: u64,
    },
    Attach {
        id: LeaseId,
        key: Key,
        current: bool,
    },
    KeepAlive {
        id: LeaseId,
    },
    Revoke {
        id: LeaseId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum LeaseOutcome {
    Pending,
    Unknown,
    Failed(String),
    Granted,
    Put,
    Renewed,
    Revoked,
    NotFound,
}

#[derive(Clone, Debug)]
pub(super) struct LeaseOpRec {
    holder: usize,
    kind: LeaseOpKind,
    invoke: Time,
    outcome: LeaseOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Needs a (new) lease.
    Idle,
    Attaching {
        left: u32,
    },
    Keeping {
        until: Time,
    },
    /// Stopped renewing; grants a new lease after this.
    Lapsing {
        until: Time,
    },
}

#[derive(Clone, Debug)]
pub(super) struct Holder {
    guess: NodeId,
    op: Option<OpId>,
    lease: Option<(LeaseId, u64)>,
    phase: Phase,
    /// When the last keepalive was sent.
    last_keepalive: Time,
}

#[derive(Debug, Default)]
pub(super) struct LeaseWorkload {
    pub holders: Vec<Holder>,
    ops: Vec<LeaseOpRec>,
    next_id: LeaseId,
    /// Chance that a keepalive request is lost on its way.
    pub keepalive_loss_ppm: u32,
}

impl LeaseWorkload {
    pub fn new(holders: usize, nodes: usize, keepalive_loss_ppm: u32) -> Self {
        LeaseWorkload {
            holders: (0..holders)
                .map(|i| Holder {
                    guess: 1 + (i as NodeId % nodes as NodeId),
                    op: None,
                    lease: None,
                    phase: Phase::Idle,
                    last_keepalive: 0,
                })
                .collect(),
            ops: Vec::new(),
            next_id: 1,
            keepalive_loss_ppm,
        }
    }

    fn rec(&mut self, op: OpId) -> Option<&mut LeaseOpRec> {
        self.ops
            .get_mut(((op & !LEASE_OP) as usize).checked_sub(1)?)
    }
}

impl World {
    fn lease_local_now(&self, h: &Host) -> Time {
        h.local_now(self.now, TICK_US)
    }

    /// Starts or stops node `id`'s lease clock to follow its leadership
    /// (called after every event on the node, with its fresh status).
    pub(super) fn sync_lease_clock(&mut self, id: NodeId, st: &d_engine_core::Status) {
        let now = self.now;
        let bug = self.opts.bug;
        let Some(h) = self.slots.get_mut(&id).and_then(|s| s.host.as_mut()) else {
            return;
        };
        let local = h.local_now(now, TICK_US);
        if bug == Some(HostBug::FollowerExpiresLeases) {
            // Every node runs the clock, whatever its role.
            if h.lease_clock.term != Some(st.term) {
                h.lease_clock.activate(st.term, local, h.kv.leases());
            }
            return;
        }
        let leader = st.role == Role::Leader;
        if h.lease_clock.running() && (!leader || h.lease_clock.term != Some(st.term)) {
            h.lease_clock.deactivate();
        }
        let ready = leader && h.mirror.term_at(st.commit) == Some(st.term);
        if ready && !h.lease_clock.running() && bug != Some(HostBug::LeaseClockNeverRuns) {
            h.lease_clock.activate(st.term, local, h.kv.leases());
            let n = h.lease_clock.len();
            self.trace_line(|| {
                format!(
                    "n{id} LEASE CLOCK started for term {} ({n} leases)",
                    st.term
                )
            });
        }
    }

    /// A tick on node `id`: propose the revoke of every lease whose deadline
    /// passed on its clock.
    pub(super) fn expire_leases(&mut self, id: NodeId, inc: u64) -> Check {
        let now = self.now;
        let Some(h) = self.host(id).filter(|h| h.incarnation == inc) else {
            return Ok(());
        };
        if !h.lease_clock.running() {
            return Ok(());
        }
        let local = h.local_now(now, TICK_US);
        let due = h.lease_clock.take_due(local);
        if due.is_empty() {
            return Ok(());
        }
        let st = h.node.status();
        let clock_term = h.lease_clock.term;
        let mut cmds = Vec::new();
        for lease in &due {
            let dec = self.ck.leases.decide(ExpiryDecision {
                node: id,
                lease: *lease,
                at: now,
                term: st.term,
                leader: st.role == Role::Leader,
                clock_term,
            });
            cmds.push((
                EXPIRY_OP | dec,
                Command::LeaseRevoke {
                    op: EXPIRY_OP | dec,
                    id: *lease,
                },
            ));
        }
        self.trace_line(|| format!("n{id} LEASES EXPIRED {due:?}: proposing revokes"));
        // A (buggy) follower forwards its revokes to the leader it knows.
        let target = if st.role == Role::Leader {
            Some(id)
        } else {
            st.leader
                .filter(|l| self.slots.get(l).is_some_and(|s| s.host.is_some()))
        };
        let proposed = match target {
            Some(t) => {
                let th = self.host(t).expect("running");
                match th
                    .node
                    .propose(cmds.iter().map(|(_, c)| c.encode()).collect())
                {
                    Ok((first, term)) => {
                        for (k, (op, _)) in cmds.iter().enumerate() {
                            th.proposals.insert(first + k as Index, (term, *op));
                        }
                        true
                    }
                    Err(_) => false,
                }
            }
            None => false,
        };
        if !proposed {
            let h = self.host(id).expect("running");
            for lease in due {
                h.lease_clock.retry(lease, local);
            }
        }
        match target {
            Some(t) if t != id => {
                self.drive(t)?;
                self.drive(id)
            }
            _ => self.drive(id),
        }
    }

    /// Node `h` applied `cmd` at `index` with result `r`: its lease clock
    /// and the replica invariant; the first apply of an expiry revoke
    /// anywhere goes to the expiry checker.
    pub(super) fn lease_applied(
        &mut self,
        h: &mut Host,
        index: Index,
        cmd: &Command,
        r: &ApplyResult,
        first: bool,
    ) -> Check {
        let local = self.lease_local_now(h);
        let mut revoked = None;
        match r {
            ApplyResult::LeaseGranted { id, ttl_us } => {
                h.lease_clock.granted(*id, *ttl_us, local);
                if first {
                    self.ck.leases.on_grant_committed(*id, *ttl_us, self.now);
                }
            }
            ApplyResult::LeaseRevoked { id, deleted } => {
                h.lease_clock.removed(*id);
                revoked = Some((*id, &deleted[..]));
            }
            ApplyResult::LeaseNotFound { id } => h.lease_clock.removed(*id),
            _ => {}
        }
        check_replica(h.id, index, &h.kv, revoked)?;
        if let (Some((id, _)), true) = (revoked, first) {
            self.ck.leases.on_revoke_committed(id, self.now);
        }
        if let (Command::LeaseRevoke { op, .. }, true) = (cmd, first) {
            if is_expiry_op(*op) {
                let election = &self.ck.election;
                let done = matches!(r, ApplyResult::LeaseRevoked { .. });
                self.ck
                    .leases
                    .on_expiry_committed(op & !EXPIRY_OP, index, done, |t| election.leader_of(t))?;
                if done {
                    self.stats.leases_expired += 1;
                }
            }
        }
        Ok(())
    }

    /// The expiry revoke `op` proposed at some index of node `h` lost its
    /// slot: the lease is due again.
    pub(super) fn expiry_failed(&mut self, h: &mut Host, op: OpId) {
        let local = self.lease_local_now(h);
        if let Some(d) = self.ck.leases.decision(op & !EXPIRY_OP) {
            h.lease_clock.retry(d.lease, local);
        }
    }

    /// Resolves a lease workload operation proposed on `h` whose entry
    /// applied (`matched`: it is this op's entry, with result `r`).
    pub(super) fn lease_proposal_done(&mut self, op: OpId, r: Option<&ApplyResult>) -> Check {
        if let (Some(ApplyResult::Put), Some(rec)) = (r, self.lw.rec(op)) {
            if let LeaseOpKind::Attach { id, key, .. } = rec.kind {
                let invoke = rec.invoke;
                self.ck.leases.check_attach(id, key, invoke)?;
            }
        }
        let outcome = match r {
            Some(ApplyResult::LeaseGranted { .. }) => LeaseOutcome::Granted,
            Some(ApplyResult::Put) => LeaseOutcome::Put,
            Some(ApplyResult::LeaseRevoked { .. }) => LeaseOutcome::Revoked,
            Some(ApplyResult::LeaseNotFound { .. }) => LeaseOutcome::NotFound,
            Some(other) => LeaseOutcome::Failed(format!("unexpected result {other:?}")),
            None => LeaseOutcome::Failed("its log slot went to another entry".into()),
        };
        self.complete_lease_op(op, outcome, None);
        Ok(())
    }

    /// Completes a lease workload op (`false` if it was no longer pending).
    pub(super) fn complete_lease_op(
        &mut self,
        op: OpId,
        outcome: LeaseOutcome,
        hint: Option<NodeId>,
    ) -> bool {
        let now = self.now;
        let Some(rec) = self.lw.rec(op) else {
            return false;
        };
        if rec.outcome != LeaseOutcome::Pending {
            return false;
        }
        rec.outcome = outcome.clone();
        let (hi, kind, invoke) = (rec.holder, rec.kind, rec.invoke);
        self.trace_line(|| {
            format!(
                "holder {hi} lease op {} {kind:?} -> {outcome:?}",
                op & !LEASE_OP
            )
        });
        let h = &mut self.lw.holders[hi];
        if h.op == Some(op) {
            h.op = None;
        }
        let mut wake = now + self.rng.range(0, 5_000);
        match (kind, &outcome) {
            (LeaseOpKind::Grant { id, ttl }, LeaseOutcome::Granted) => {
                self.ck.leases.on_grant_ack(id, ttl, now);
                self.stats.leases_granted += 1;
                let h = &mut self.lw.holders[hi];
                h.lease = Some((id, ttl));
                h.phase = Phase::Attaching {
                    left: self.rng.range(1, 3) as u32,
                };
            }
            (LeaseOpKind::Grant { .. }, _) => {
                // Unknown: the lease may exist; nobody will renew it.
                self.lw.holders[hi].phase = Phase::Idle;
            }
            (LeaseOpKind::Attach { current: true, .. }, LeaseOutcome::NotFound) => {
                // The lease expired under us.
                self.lw.holders[hi].phase = Phase::Idle;
            }
            (LeaseOpKind::Attach { .. }, _) => {}
            (LeaseOpKind::KeepAlive { id }, LeaseOutcome::Renewed) => {
                let ttl = self.lw.holders[hi].lease.map_or(0, |l| l.1);
                self.ck.leases.on_keepalive_ack(id, ttl, now);
                self.stats.keepalives_ok += 1;
                wake = invoke + ttl / 3;
            }
            (LeaseOpKind::KeepAlive { .. }, LeaseOutcome::NotFound) => {
                self.lw.holders[hi].phase = Phase::Idle;
            }
            (LeaseOpKind::KeepAlive { .. }, _) => {
                let ttl = self.lw.holders[hi].lease.map_or(0, |l| l.1);
                wake = (invoke + ttl / 3).max(now + 1_000);
            }
            (LeaseOpKind::Revoke { .. }, o) => {
                if *o == LeaseOutcome::Revoked {
                    self.stats.leases_revoked += 1;
                }
                self.lw.holders[hi].phase = Phase::Idle;
            }
        }
        if matches!(outcome, LeaseOutcome::Failed(_) | LeaseOutcome::Unknown) {
            self.lw.holders[hi].guess = match hint {
                Some(l) => l,
                None => {
                    let up = self.running();
                    self.rng.pick(&up).copied().unwrap_or(1)
                }
            };
        }
        self.schedule(wake.max(now), Ev::LeaseWake(hi));
        true
    }

    /// Holder `hi` acts: its next grant, attach, keepalive or revoke.
    pub(super) fn lease_wake(&mut self, hi: usize) -> Check {
        if self.settling || self.lw.holders[hi].op.is_some() {
            // Settle: the holders went silent (their leases must expire).
            return Ok(());
        }
        let now = self.now;
        let h = self.lw.holders[hi].clone();
        let kind = match (h.phase, h.lease) {
            (Phase::Attaching { left }, Some((id, ttl))) => {
                let key = LEASE_KEY_BASE + self.rng.below(LEASE_KEYS) as Key;
                self.lw.holders[hi].phase = if left > 1 {
                    Phase::Attaching { left: left - 1 }
                } else if self.rng.chance(650_000) {
                    Phase::Keeping {
                        until: now + ttl * self.rng.range(1, 5),
                    }
                } else {
                    Phase::Lapsing {
                        until: now + 2 * ttl + 200_000,
                    }
                };
                if self.rng.chance(100_000) && self.lw.next_id > 1 {
                    // A put naming an older lease (usually revoked or
                    // expired by now, possibly never granted).
                    let old = self.rng.range(1, self.lw.next_id - 1);
                    LeaseOpKind::Attach {
                        id: old,
                        key,
                        current: old == id,
                    }
                } else {
                    LeaseOpKind::Attach {
                        id,
                        key,
                        current: true,
                    }
                }
            }
            (Phase::Keeping { until }, Some((id, ttl))) => {
                if now >= until {
                    if self.rng.chance(500_000) {
                        self.lw.holders[hi].phase = Phase::Idle;
                        LeaseOpKind::Revoke { id }
                    } else {
                        self.lw.holders[hi].phase = Phase::Lapsing {
                            until: now + 2 * ttl + 200_000,
                        };
                        self.schedule(now + 2 * ttl + 200_000, Ev::LeaseWake(hi));
                        return Ok(());
                    }
                } else if now < h.last_keepalive + ttl / 3 {
                    self.schedule(h.last_keepalive + ttl / 3, Ev::LeaseWake(hi));
                    return Ok(());
                } else {
                    self.lw.holders[hi].last_keepalive = now;
                    LeaseOpKind::KeepAlive { id }
                }
            }
            (Phase::Lapsing { until }, _) if now < until => {
                self.schedule(until, Ev::LeaseWake(hi));
                return Ok(());
            }
            _ => {
                let id = self.lw.next_id;
                self.lw.next_id += 1;
                let ttl = self.rng.range(TTL_US.0, TTL_US.1);
                self.lw.holders[hi].lease = None;
                self.lw.holders[hi].phase = Phase::Idle;
                LeaseOpKind::Grant { id, ttl }
            }
        };
        self.lw.ops.push(LeaseOpRec {
            holder: hi,
            kind,
            invoke: now,
            outcome: LeaseOutcome::Pending,
        });
        let op = LEASE_OP | self.lw.ops.len() as OpId;
        self.lw.holders[hi].op = Some(op);
        let mut target = self.lw.holders[hi].guess;
        if self.slots.get(&target).is_none_or(|s| s.host.is_none()) {
            let up = self.running();
            if let Some(&t) = self.rng.pick(&up) {
                target = t;
            }
        }
        self.lw.holders[hi].guess = target;
        self.trace_line(|| {
            format!(
                "holder {hi} lease op {} INVOKE {kind:?} at n{target}",
                op & !LEASE_OP
            )
        });
        let timeout = match kind {
            LeaseOpKind::KeepAlive { .. } => h.lease.map_or(CLIENT_TIMEOUT_US, |l| l.1 / 3),
            _ => CLIENT_TIMEOUT_US,
        };
        self.schedule(now + timeout, Ev::LeaseTimeout(op));
        let flush_delay = self.rng.range(0, 500);
        let lost = matches!(kind, LeaseOpKind::KeepAlive { .. })
            && self.rng.chance(self.lw.keepalive_loss_ppm);
        let no_barrier = self.opts.bug == Some(HostBug::RenewWithoutBarrier);
        if lost {
            return Ok(());
        }
        let Some(host) = self.host(target) else {
            self.complete_lease_op(op, LeaseOutcome::Failed("node down".into()), None);
            return Ok(());
        };
        let cmd = match kind {
            LeaseOpKind::Grant { id, ttl } => Command::LeaseGrant {
                op,
                id,
                ttl_us: ttl,
            },
            LeaseOpKind::Attach { id, key, .. } => Command::Put {
                op,
                key,
                value: op & !LEASE_OP,
                lease: id,
            },
            LeaseOpKind::Revoke { id } => Command::LeaseRevoke { op, id },
            LeaseOpKind::KeepAlive { .. } => {
                // Leader only, with its clock running, after a lease read
                // barrier (`serve_keepalive` renews once it is through).
                if !host.lease_clock.running() {
                    let (leader, hint) = (host.role == Role::Leader, host.leader);
                    let why = if leader {
                        "NoLeader: its lease clock is not running yet"
                    } else {
                        "NotLeader"
                    };
                    self.complete_lease_op(
                        op,
                        LeaseOutcome::Failed(why.into()),
                        if leader { None } else { hint },
                    );
                    return Ok(());
                }
                if no_barrier {
                    let mut h = self
                        .slots
                        .get_mut(&target)
                        .and_then(|s| s.host.take())
                        .expect("up");
                    self.serve_keepalive(&mut h, op);
                    self.slots.get_mut(&target).expect("slot").host = Some(h);
                    return Ok(());
                }
                host.reads_waiting.insert(op as ReadId, op);
                host.node.read(op as ReadId, ReadConsistency::Lease);
                return self.drive(target);
            }
        };
        host.batch.push((op, cmd));
        if host.batch.len() == 1 {
            let inc = host.incarnation;
            self.schedule(now + flush_delay, Ev::Flush(target, inc));
        }
        Ok(())
    }

    /// A keepalive's lease read barrier is through on `h` (applied up to
    /// its read index): renew if the clock still runs for the node's term.
    pub(super) fn serve_keepalive(&mut self, h: &mut Host, op: OpId) {
        let Some(rec) = self.lw.rec(op) else {
            return;
        };
        let LeaseOpKind::KeepAlive { id } = rec.kind else {
            return;
        };
        let st = h.node.status();
        let local = self.lease_local_now(h);
        let outcome = if st.role != Role::Leader || h.lease_clock.term != Some(st.term) {
            LeaseOutcome::Failed("NoLeader: lost its leadership during the call".into())
        } else {
            match h.lease_clock.renew(id, local) {
                Renew::Live { .. } => LeaseOutcome::Renewed,
                Renew::Gone => LeaseOutcome::NotFound,
                Renew::NotRunning => LeaseOutcome::Failed("NoLeader".into()),
            }
        };
        self.complete_lease_op(op, outcome, None);
    }

    /// Liveness once the settled cluster is stable and the holders are
    /// silent: every lease is revoked within its TTL (at the fastest clock
    /// rate), the leader's check tick, and one election plus commit slack.
    pub(super) fn lease_liveness(&mut self) -> Check {
        let d = self.profile.drift_ppm;
        let max_ttl = self
            .slots
            .values()
            .filter_map(|s| s.host.as_ref())
            .flat_map(|h| h.kv.leases().map(|(_, t)| t))
            .max();
        let Some(max_ttl) = max_ttl else {
            return Ok(());
        };
        let slow = |t: Time| t * (1_000_000 + d) / 1_000_000;
        let election = slow(2 * self.profile.election_ticks * TICK_US);
        let bound = slow(max_ttl) + slow(TICK_US) + election + LEASE_COMMIT_SLACK_US;
        let deadline = self.now + bound;
        self.trace_line(|| {
            format!("=== lease liveness: every lease revoked within {bound} us ===")
        });
        loop {
            // The leader's applied state (`converge` already required the
            // members to follow it); `[0]`: no leader at the moment.
            let left: Vec<LeaseId> = match self.leader().and_then(|l| self.slots[&l].host.as_ref())
            {
                Some(h) => h.kv.leases().map(|(l, _)| l).collect(),
                None => vec![0],
            };
            if left.is_empty() {
                return Ok(());
            }
            if self.now >= deadline {
                return Err(Violation::new(
                    "lease-liveness",
                    format!(
                        "the cluster was healed and stable and no holder renewed, yet {} us later \
                         (max TTL {max_ttl} us, bound {bound} us) the leader still holds leases {left:?}",
                        bound
                    ),
                ));
            }
            self.step()?;
        }
    }
}

/// Liveness slack for a revoke to commit on the settled cluster (disk
/// stalls of up to 0.5 s and held-back messages still happen there).
pub const LEASE_COMMIT_SLACK_US: Time = 1_000_000;
