//! A small seeded chaos run on the in-test harness, with the core's optional
//! features (pre-vote, check-quorum) toggled per seed: message loss,
//! partitions, crashes (restart from what was reported durable), proposals,
//! membership changes and transfers; checks election safety and state-machine
//! safety after every step. The full simulator lives in `tests/`; this keeps a
//! fast regression net inside the crate.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::harness::*;
use crate::rng::Rng;
use crate::*;

struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    applied: BTreeMap<Index, (Term, EntryPayload)>,
}

impl Checker {
    fn check(&mut self, net: &Network, seed: u64, step: usize) {
        for (id, n) in &net.nodes {
            let st = n.status();
            if st.role == Role::Leader {
                let prev = *self.leaders.entry(st.term).or_insert(*id);
                assert_eq!(
                    prev, *id,
                    "seed {seed} step {step}: two leaders in term {}",
                    st.term
                );
            }
        }
        for (id, d) in &net.disks {
            for e in &d.applied {
                let seen = self
                    .applied
                    .entry(e.index)
                    .or_insert((e.term, e.payload.clone()));
                assert_eq!(
                    *seen,
                    (e.term, e.payload.clone()),
                    "seed {seed} step {step}: node {id} applied a different entry at {}",
                    e.index
                );
            }
        }
    }
}

fn restart(net: &mut Network, id: NodeId, boot: &Membership, seed: u64) {
    let d = net.disks[&id].clone();
    let mut c = cfg(id);
    c.seed = seed;
    c.pre_vote = net.nodes[&id].cfg.pre_vote;
    c.check_quorum = net.nodes[&id].cfg.check_quorum;
    c.snapshot_threshold = net.nodes[&id].cfg.snapshot_threshold;
    c.max_read_rounds_in_flight = net.nodes[&id].cfg.max_read_rounds_in_flight;
    let applied = d.applied.last().map(|e| e.index).unwrap_or(0);
    let snap_idx = d.snapshot.as_ref().map(|s| s.last_index).unwrap_or(0);
    let restore = RestoreState {
        hard_state: d.hard_state,
        snapshot: d.snapshot.clone(),
        entries: d.log.clone(),
        initial_membership: boot.clone(),
        applied: applied.max(snap_idx),
    };
    net.nodes
        .insert(id, RaftNode::new(c, restore).expect("restart"));
    net.queue.retain(|m| m.to != id && m.from != id);
}

fn run(seed: u64, steps: usize) -> (usize, usize) {
    let mut rng = Rng::new(seed);
    let voters = [1, 2, 3, 4, 5];
    let boot = membership(&voters, &[]);
    let mut net = Network::new(&voters, &[]);
    // Node 6 joins later, knowing nothing (empty initial membership).
    net.nodes
        .insert(6, node_with(6, &Membership::default(), 0, vec![]));
    net.disks.insert(6, Disk::default());
    let (pre_vote, check_quorum) = (seed.is_multiple_of(2), seed % 4 < 2);
    for id in [1, 2, 3, 4, 5, 6] {
        let n = net.node_mut(id);
        n.cfg.pre_vote = pre_vote;
        n.cfg.check_quorum = check_quorum;
        n.cfg.snapshot_threshold = 5 + rng.below(20);
        n.cfg.max_inflight_msgs = 1 + rng.below(4) as usize;
        n.cfg.max_entries_per_msg = 1 + rng.below(5) as usize;
        n.cfg.max_read_rounds_in_flight = 1 + (seed % 3) as usize;
    }
    let mut chk = Checker {
        leaders: BTreeMap::new(),
        applied: BTreeMap::new(),
    };
    for step in 0..steps {
        match rng.below(100) {
            0..=29 => {
                for id in [1, 2, 3, 4, 5, 6] {
                    // Nodes tick at slightly different rates.
                    if rng.below(10) > 0 {
                        net.node_mut(id).tick();
                    }
                }
            }
            30..=39 => {
                let id = 1 + rng.below(6);
                net.node_mut(id).tick();
            }
            40..=69 => {
                // Deliver (or drop, or duplicate) a few queued messages,
                // mostly in order, sometimes reordered.
                for _ in 0..1 + rng.below(6) {
                    if net.queue.is_empty() {
                        break;
                    }
                    let i = if rng.below(4) == 0 {
                        rng.below(net.queue.len() as u64) as usize
                    } else {
                        0
                    };
                    let m = net.queue.remove(i).expect("index in range");
                    match rng.below(10) {
                        0 => {}
                        1 => {
                            net.queue.push_back(m.clone());
                            net.queue.push_front(m);
                            net.deliver_one();
                        }
                        _ => {
                            net.queue.push_front(m);
                            net.deliver_one();
                        }
                    }
                    net.process_all();
                }
            }
            70..=79 => {
                if let Some(l) = net.nodes.values().find(|n| n.status().role == Role::Leader) {
                    let id = l.status().id;
                    let _ = net
                        .node_mut(id)
                        .propose(vec![Bytes::from(format!("s{seed}-{step}"))]);
                }
            }
            80..=84 => {
                let a = 1 + rng.below(6);
                let b = 1 + rng.below(6);
                if a != b {
                    net.cut.insert((a, b));
                }
            }
            85..=89 => net.heal(),
            90..=92 => {
                let id = 1 + rng.below(6);
                let b = if id == 6 {
                    Membership::default()
                } else {
                    boot.clone()
                };
                restart(&mut net, id, &b, rng.next_u64());
            }
            93 => {
                if let Some(l) = net.nodes.values().find(|n| n.status().role == Role::Leader) {
                    let id = l.status().id;
                    let m = l.status().membership;
                    let change = match rng.below(3) {
                        0 if !m.contains(6) => ConfChange::AddLearner {
                            id: 6,
                            addr: "n6".into(),
                        },
                        0 | 1 => ConfChange::Promote { id: 6 },
                        _ => ConfChange::Remove {
                            id: 1 + rng.below(6),
                        },
                    };
                    let _ = net.node_mut(id).propose_conf_change(change);
                }
            }
            94..=95 => {
                if let Some(l) = net.nodes.values().find(|n| n.status().role == Role::Leader) {
                    let id = l.status().id;
                    let to = voters[rng.below(5) as usize];
                    let _ = net.node_mut(id).transfer_leadership(to);
                }
            }
            _ => {
                let id = voters[rng.below(5) as usize];
                net.node_mut(id)
                    .read(step as u64, ReadConsistency::Linearizable);
            }
        }
        net.process_all();
        chk.check(&net, seed, step);
    }
    // Heal and require progress: a leader commits a fresh entry.
    net.heal();
    for _ in 0..20 * E {
        net.tick_all(1);
    }
    let leader = net
        .nodes
        .values()
        .find(|n| n.status().role == Role::Leader)
        .map(|n| n.status().id)
        .unwrap_or_else(|| {
            for n in net.nodes.values() {
                let st = n.status();
                eprintln!(
                    "{} {:?} t{} vote {:?} lastterm {} leader {:?} commit {} last {} snap {} members {:?} pending_install {}",
                    st.id,
                    st.role,
                    st.term,
                    n.voted_for,
                    n.log.last_term(),
                    st.leader,
                    st.commit,
                    st.last_index,
                    st.snapshot_index,
                    st.membership.members.iter().map(|(i, m)| (*i, m.role)).collect::<Vec<_>>(),
                    n.pending_install.is_some()
                );
            }
            net.trace.clear();
            for _ in 0..2 * E {
                net.tick_all(1);
            }
            for m in net.trace.iter().filter(|m| !matches!(m.body, MessageBody::AppendEntries { .. } | MessageBody::AppendEntriesResponse { .. })).take(40) {
                eprintln!("{} -> {} t{} {:?}", m.from, m.to, m.term, m.body);
            }
            panic!("seed {seed}: no leader after healing")
        });
    let (idx, _) = net.propose(leader, "final");
    net.tick_all(4 * H);
    assert!(
        net.status(leader).commit >= idx,
        "seed {seed}: no progress after healing"
    );
    chk.check(&net, seed, steps);
    (chk.leaders.len(), chk.applied.len())
}

#[test]
fn seeded_chaos_keeps_safety_with_every_feature_combination() {
    let (mut terms, mut applied) = (0, 0);
    for seed in 0..std::env::var("CHAOS_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80u64)
    {
        let (t, a) = run(seed, 1500);
        terms += t;
        applied += a;
    }
    // The run must actually exercise elections and commits.
    println!("chaos: {terms} terms with a leader, {applied} entries applied");
    assert!(
        terms > 500 && applied > 1000,
        "{terms} terms, {applied} applied"
    );
}
