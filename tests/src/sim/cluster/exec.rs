//! The simulated host's effects for each part of a `Ready`. The order is
//! not decided here: [`World::execute`] hands each `Ready` to the engine's
//! own `d_engine::runtime::host::process_ready` (the code the real
//! consensus loop runs), with [`SimEffects`] doing the work in memory and
//! checking the host contract on the way:
//!
//! - the hard state is durable at once (`HostBug::SkipHardState` drops it);
//! - entries are queued on the simulated disk and become durable (and
//!   reported with `log_persisted`) when their write completes; a crash
//!   loses the queue (`HostBug::AckBeforeFsync` reports them at once);
//! - messages go through the lossy simulated network;
//! - committed entries are applied to the in-memory state machine, which
//!   may be flushed to the durable half at random;
//! - reads are served once applied; snapshots are created, sent and
//!   installed in memory.
//!
//! Every effect returns a `Violation` when the core broke the contract.

use d_engine::runtime::host::{process_ready, HostEffects};
use d_engine_core::{HardState, ReadReady, ReadRefused};

use super::*;

/// The effects of one node's host, for one `Ready`.
struct SimEffects<'a> {
    world: &'a mut World,
    host: &'a mut Host,
}

impl HostEffects for SimEffects<'_> {
    type Error = Violation;

    fn install_snapshot(&mut self, meta: SnapshotMeta) -> Check {
        self.world.install_snapshot(self.host, meta)
    }

    fn persist_hard_state(&mut self, hs: HardState) -> Check {
        let id = self.host.id;
        let skip = self.world.opts.bug == Some(HostBug::SkipHardState);
        let d = self.world.durable(id);
        contract::check_hard_state(id, &d.hard_state, &hs)?;
        if !skip {
            d.hard_state = hs;
        }
        Ok(())
    }

    fn append(&mut self, entries: Vec<Entry>) -> Check {
        self.world.append(self.host, entries)
    }

    fn send(&mut self, msg: Message) -> Check {
        self.world.check_and_send(self.host, msg)
    }

    fn apply(&mut self, committed: Vec<Entry>) -> Check {
        for e in committed {
            self.world.apply_entry(self.host, e)?;
        }
        Ok(())
    }

    fn release_reads(&mut self, reads: Vec<ReadReady>, refused: Vec<ReadRefused>) -> Check {
        let (world, h) = (&mut *self.world, &mut *self.host);
        let id = h.id;
        for r in reads {
            let Some(op) = h.reads_waiting.remove(&r.id) else {
                return Err(Violation::new(
                    "host-contract",
                    format!("node {id} released read {} which is not waiting", r.id),
                ));
            };
            h.reads_ready.push((r.read_index, op));
        }
        for r in refused {
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
            world.complete_op(op, Outcome::Failed(format!("{:?}", r.error)), hint);
        }
        world.serve_reads(h)
    }

    fn create_snapshot(&mut self) -> Check {
        self.world.create_snapshot(self.host)
    }

    fn send_snapshot(&mut self, to: NodeId) -> Check {
        self.world.send_snapshot(self.host, to)
    }
}

impl World {
    /// Executes one `Ready` with the engine's own processor.
    pub(super) fn execute(&mut self, h: &mut Host, rd: Ready) -> Check {
        if self.tracing() && !rd.is_empty() {
            let s = summarize(&rd);
            let id = h.id;
            self.trace_line(|| format!("n{id} READY {s}"));
        }
        process_ready(
            rd,
            &mut SimEffects {
                world: self,
                host: h,
            },
        )
    }

    pub(super) fn append(&mut self, h: &mut Host, entries: Vec<Entry>) -> Check {
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
        let delay = if self.rng.chance(5_000) {
            // A disk stall: this write and every one queued behind it wait.
            self.rng.range(100_000, 500_000)
        } else if self.rng.chance(50_000) {
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

    pub(super) fn check_and_send(&mut self, h: &mut Host, m: Message) -> Check {
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
    pub(super) fn send(&mut self, m: Message, data: Option<Arc<SnapshotData>>, from_inc: u64) {
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

    pub(super) fn apply_entry(&mut self, h: &mut Host, e: Entry) -> Check {
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
        let first = e.index > self.max_applied;
        if let Some((cmd, r)) = &applied_cmd {
            self.lease_applied(h, e.index, cmd, r, first)?;
        }
        if first {
            self.max_applied = e.index;
            if let Some((cmd, r)) = &applied_cmd {
                if let Some(key) = cmd.key().filter(|_| !leases::is_lease_op(cmd.op())) {
                    self.history.committed_write(key, e.index, cmd.op());
                    self.dirty_keys.insert(key);
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
        }
        if let Some((t, op)) = h.proposals.remove(&e.index) {
            let matched = applied_cmd.as_ref().filter(|(c, _)| c.op() == op);
            if t == e.term && matched.is_none() {
                return Err(Violation::new(
                    "log-matching",
                    format!(
                        "node {id} proposed op {op} at (index {}, term {t}) but applied a \
                         different entry with that index and term",
                        e.index
                    ),
                ));
            }
            let matched = matched.filter(|_| t == e.term);
            if leases::is_expiry_op(op) {
                if matched.is_none() {
                    self.expiry_failed(h, op);
                }
            } else if leases::is_lease_op(op) {
                self.lease_proposal_done(op, matched.map(|(_, r)| r))?;
            } else if let Some((cmd, r)) = matched {
                let outcome = match r {
                    ApplyResult::Cas { ok } => Outcome::Cas { ok: *ok },
                    _ => Outcome::Put,
                };
                if self.complete_op(op, outcome, None) {
                    let key = cmd.key().expect("a register write");
                    let version =
                        h.kv.get(key)
                            .and_then(|v| self.value_index.get(&v).copied())
                            .unwrap_or(0);
                    self.ck.stale.on_write_ack(self.now, key, e.index, version);
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
            if let Some((_, (_, op))) = h.proposals.pop_first() {
                if leases::is_expiry_op(op) {
                    self.expiry_failed(h, op);
                }
            }
        }
        Ok(())
    }

    pub(super) fn serve_reads(&mut self, h: &mut Host) -> Check {
        if h.reads_ready.is_empty() {
            return Ok(());
        }
        let applied = h.applied;
        let (now, later): (Vec<_>, Vec<_>) =
            h.reads_ready.drain(..).partition(|(ri, _)| *ri <= applied);
        h.reads_ready = later;
        for (read_index, op) in now {
            if leases::is_lease_op(op) {
                self.serve_keepalive(h, op);
                continue;
            }
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

    pub(super) fn install_snapshot(&mut self, h: &mut Host, meta: SnapshotMeta) -> Check {
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

    pub(super) fn create_snapshot(&mut self, h: &mut Host) -> Check {
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

    pub(super) fn send_snapshot(&mut self, h: &mut Host, to: NodeId) -> Check {
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
}

pub(super) fn apply_conf(m: &mut Membership, c: &ConfChange) {
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
