//! A tiny in-memory cluster for unit tests: nodes in a map, a FIFO of
//! messages, cut links, and a host that persists, applies and snapshots
//! immediately (unless told to hold a node's persistence).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;

use crate::*;

pub const E: u64 = 10;
pub const H: u64 = 2;
pub const MARGIN: u64 = 2;

pub fn cfg(id: NodeId) -> Config {
    let mut c = Config::new(id);
    c.election_ticks = E;
    c.heartbeat_ticks = H;
    c.lease_drift_margin_ticks = MARGIN;
    c.snapshot_threshold = 0;
    c
}

pub fn membership(voters: &[NodeId], learners: &[NodeId]) -> Membership {
    let mut m = Membership::default();
    for v in voters {
        m.members.insert(
            *v,
            Member {
                role: MemberRole::Voter,
                addr: format!("n{v}"),
            },
        );
    }
    for l in learners {
        m.members.insert(
            *l,
            Member {
                role: MemberRole::Learner,
                addr: format!("n{l}"),
            },
        );
    }
    m
}

pub fn ent(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Command(Bytes::from(format!("c{index}"))),
    }
}

pub fn noop(index: Index, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Noop,
    }
}

/// A node restored with `entries` at term `term`, past its start-up window.
pub fn node_with(id: NodeId, m: &Membership, term: Term, entries: Vec<Entry>) -> RaftNode {
    let restore = RestoreState {
        hard_state: HardState {
            term,
            voted_for: None,
            commit: 0,
        },
        entries,
        initial_membership: m.clone(),
        ..Default::default()
    };
    let mut n = RaftNode::new(cfg(id), restore).expect("valid config");
    n.now = E; // past the start-up stickiness window
    n
}

pub fn msg(from: NodeId, to: NodeId, term: Term, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

/// What the simulated host of one node holds durably.
#[derive(Default, Clone)]
pub struct Disk {
    pub hard_state: HardState,
    pub log: Vec<Entry>,
    pub snapshot: Option<SnapshotMeta>,
    pub applied: Vec<Entry>,
}

pub struct Network {
    pub nodes: BTreeMap<NodeId, RaftNode>,
    pub disks: BTreeMap<NodeId, Disk>,
    pub queue: VecDeque<Message>,
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes whose persistence is held back (entries are written but not reported).
    pub hold_persist: BTreeSet<NodeId>,
    pub reads: BTreeMap<NodeId, Vec<ReadReady>>,
    pub refused: BTreeMap<NodeId, Vec<ReadRefused>>,
    /// Every message delivered or dropped, for assertions.
    pub trace: Vec<Message>,
    /// Every delivered message a node refused, with the reason.
    pub refusals: Vec<(Message, Refusal)>,
    pub auto_snapshot: bool,
}

impl Network {
    pub fn new(voters: &[NodeId], learners: &[NodeId]) -> Self {
        let m = membership(voters, learners);
        let mut net = Network {
            nodes: BTreeMap::new(),
            disks: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            hold_persist: BTreeSet::new(),
            reads: BTreeMap::new(),
            refused: BTreeMap::new(),
            trace: Vec::new(),
            refusals: Vec::new(),
            auto_snapshot: true,
        };
        for id in voters.iter().chain(learners) {
            net.nodes.insert(*id, node_with(*id, &m, 0, vec![]));
            net.disks.insert(*id, Disk::default());
        }
        net
    }

    pub fn node(&self, id: NodeId) -> &RaftNode {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut RaftNode {
        self.nodes.get_mut(&id).expect("node exists")
    }

    pub fn status(&self, id: NodeId) -> Status {
        self.nodes[&id].status()
    }

    /// Makes `id` campaign (with pre-vote) and delivers until quiet.
    pub fn elect(&mut self, id: NodeId) {
        self.node_mut(id).campaign(true, false);
        self.settle();
        assert_eq!(
            self.status(id).role,
            Role::Leader,
            "node {id} should have won"
        );
    }

    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for o in ids {
            if o != id {
                self.cut.insert((id, o));
                self.cut.insert((o, id));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// Runs one node's host loop step: executes its Ready.
    pub fn process(&mut self, id: NodeId) {
        let hold = self.hold_persist.contains(&id);
        let node = self.nodes.get_mut(&id).expect("node exists");
        if !node.has_ready() {
            return;
        }
        let rd = node.ready();
        let disk = self.disks.get_mut(&id).expect("disk exists");
        if let Some(meta) = &rd.snapshot_to_install {
            disk.log.clear();
            disk.snapshot = Some(meta.clone());
            node.snapshot_installed(meta.clone());
        }
        if let Some(hs) = rd.hard_state {
            disk.hard_state = hs;
        }
        if let Some(first) = rd.entries.first() {
            let base = disk.snapshot.as_ref().map(|s| s.last_index).unwrap_or(0);
            disk.log.truncate((first.index - base - 1) as usize);
            disk.log.extend(rd.entries.iter().cloned());
            if !hold {
                let last = rd.entries.last().expect("non-empty");
                node.log_persisted(last.index, last.term);
            }
        }
        self.queue.extend(rd.messages);
        disk.applied.extend(rd.committed);
        self.reads.entry(id).or_default().extend(rd.reads);
        self.refused.entry(id).or_default().extend(rd.refused_reads);
        if rd.create_snapshot && self.auto_snapshot {
            let last = disk.applied.last().expect("applied something");
            let meta = SnapshotMeta {
                last_index: last.index,
                last_term: last.term,
                membership: node.membership_at(last.index).expect("in memory"),
            };
            node.snapshot_created(meta);
            disk.snapshot = Some(node.snapshot_meta());
            let keep_from = node.snapshot_meta().last_index;
            disk.log.retain(|e| e.index > keep_from);
        }
        for to in rd.send_snapshot_to {
            let meta = node.snapshot_meta();
            let term = node.status().term;
            self.queue
                .push_back(msg(id, to, term, MessageBody::InstallSnapshot { meta }));
        }
    }

    /// Reports the held log of `id` as durable.
    pub fn persist(&mut self, id: NodeId) {
        let disk = &self.disks[&id];
        if let Some(last) = disk.log.last().cloned() {
            self.node_mut(id).log_persisted(last.index, last.term);
        }
    }

    pub fn process_all(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.process(id);
        }
    }

    /// Delivers one queued message (dropping it if its link is cut).
    pub fn deliver_one(&mut self) -> bool {
        let Some(m) = self.queue.pop_front() else {
            return false;
        };
        self.trace.push(m.clone());
        if self.cut.contains(&(m.from, m.to)) {
            return true;
        }
        if let Some(n) = self.nodes.get_mut(&m.to) {
            if let Err(r) = n.step(m.clone()) {
                // Refused: dropped, as if lost; kept for assertions.
                self.refusals.push((m, r));
            }
        }
        true
    }

    /// Processes and delivers until nothing is left (bounded).
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            self.process_all();
            if !self.deliver_one() {
                self.process_all();
                if self.queue.is_empty() {
                    return;
                }
            }
        }
        panic!("network did not settle");
    }

    pub fn tick_all(&mut self, n: u64) {
        for _ in 0..n {
            for node in self.nodes.values_mut() {
                node.tick();
            }
            self.settle();
        }
    }

    /// Processes `id` and returns the messages it produced (removed from the queue).
    pub fn take_msgs(&mut self, id: NodeId) -> Vec<Message> {
        self.process(id);
        let (mine, rest): (Vec<Message>, Vec<Message>) =
            self.queue.drain(..).partition(|m| m.from == id);
        self.queue = rest.into();
        mine
    }

    pub fn propose(&mut self, id: NodeId, cmd: &str) -> (Index, Term) {
        self.node_mut(id)
            .propose(vec![Bytes::from(cmd.to_string())])
            .expect("leader accepts the proposal")
    }
}
