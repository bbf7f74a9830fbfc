//! Fault injection: crashes, partitions, membership changes, transfers.

use super::*;

impl World {
    pub(super) fn fault(&mut self) -> Check {
        let roll = self.rng.below(100);
        let running = self.running();
        match roll {
            0..=24 => {
                // Leaders crash more often than their share: most interesting
                // histories (Figure 8, lost suffixes) start with a leader dying
                // before its entries reach everyone.
                let victim = match self.leader() {
                    Some(l) if self.rng.chance(400_000) => Some(l),
                    _ => self.rng.pick(&running).copied(),
                };
                if let Some(id) = victim {
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

    pub(super) fn partition(&mut self) {
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
    pub(super) fn membership_change(&mut self) -> Check {
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
