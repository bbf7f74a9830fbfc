//! The client workload: puts, compare-and-sets and reads sent to whichever
//! node each client believes leads, recorded in the history.

use super::*;

impl World {
    pub(super) fn complete_op(&mut self, op: OpId, outcome: Outcome, hint: Option<NodeId>) -> bool {
        if leases::is_lease_op(op) {
            let o = match outcome {
                Outcome::Failed(why) => leases::LeaseOutcome::Failed(why),
                _ => leases::LeaseOutcome::Unknown,
            };
            return self.complete_lease_op(op, o, hint);
        }
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
                    None => {
                        let up = self.running();
                        self.rng.pick(&up).copied().unwrap_or(1)
                    }
                };
            }
            let (lo, hi) = self.profile.think;
            let at = self.now + self.rng.range(lo, hi);
            self.schedule(at, Ev::ClientWake(c));
        }
        true
    }

    pub(super) fn client_wake(&mut self, c: usize) -> Check {
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
        let offloop_lease = self.profile.offloop_lease_reads;
        let Some(h) = self.host(target) else {
            self.complete_op(op, Outcome::Failed("node down".into()), None);
            return Ok(());
        };
        match kind {
            OpKind::Put { value } => {
                let cmd = Command::Put {
                    op,
                    key,
                    value,
                    lease: 0,
                };
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
            OpKind::Read(ReadConsistency::Lease) if offloop_lease => {
                // Off the consensus loop, as `Status` documents: serve from
                // the local state machine while the lease holds.
                let st = h.node.status();
                if st.role == Role::Leader && st.now_tick < st.lease_until_tick {
                    h.reads_ready.push((st.commit, op));
                    let mut h = self
                        .slots
                        .get_mut(&target)
                        .and_then(|s| s.host.take())
                        .expect("up");
                    let r = self.serve_reads(&mut h);
                    self.slots.get_mut(&target).expect("slot").host = Some(h);
                    r
                } else {
                    h.reads_waiting.insert(op as ReadId, op);
                    h.node.read(op as ReadId, ReadConsistency::Lease);
                    self.drive(target)
                }
            }
            OpKind::Read(consistency) => {
                h.reads_waiting.insert(op as ReadId, op);
                h.node.read(op as ReadId, consistency);
                self.drive(target)
            }
        }
    }

    /// Proposes the host's queued client writes as one batch.
    pub(super) fn flush(&mut self, id: NodeId, inc: u64) -> Check {
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
                self.maybe_crash_soon(id, inc);
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
}
