//! Hostile peer messages from non-members (`SimOptions::hostile_non_members`).
//!
//! Every few milliseconds of simulated time a stranger (an id no member
//! ever has) sends a running node an arbitrary well-formed message: any
//! kind, any term (up to `u64::MAX`), any index, forged entries and commit
//! indices, snapshot metadata, transfer votes, fake acknowledgements. A node
//! that knows its configuration must refuse it outright
//! (`Refusal::NotAMember`) and the checkers must see nothing change. Nodes
//! still waiting to join (empty configuration) are not targeted: they accept
//! an unknown sender by design, until they learn the configuration.

use bytes::Bytes;
use d_engine_core::{Refusal, Status, Term, MAX_INDEX, MAX_TERM};

use super::*;

/// Strangers' ids: never used by a member (the simulator numbers members
/// from 1 and adds a few).
pub const STRANGER_BASE: NodeId = 1_000_000;

fn arb_term(rng: &mut Rng, cur: Term) -> Term {
    match rng.below(9) {
        0 => 0,
        1 | 2 => cur,
        3 => cur.saturating_add(1),
        4 => 1 << 40,
        5 => u64::MAX,
        6 => MAX_TERM,
        7 => MAX_TERM + 1,
        _ => rng.next_u64(),
    }
}

fn arb_index(rng: &mut Rng, st: &Status) -> Index {
    match rng.below(8) {
        0 => 0,
        1 => st.last_index,
        2 => st.last_index.saturating_add(1),
        3 => st.commit,
        4 => st.snapshot_index,
        5 => u64::MAX,
        6 => MAX_INDEX + 1,
        _ => rng.below(st.last_index.saturating_add(10)),
    }
}

fn arb_message(rng: &mut Rng, from: NodeId, to: NodeId, st: &Status) -> Message {
    let ids: Vec<NodeId> = st
        .membership
        .members
        .keys()
        .copied()
        .chain([from])
        .collect();
    let some_id = |rng: &mut Rng| *rng.pick(&ids).expect("non-empty");
    let body = match rng.below(8) {
        0 => MessageBody::RequestVote {
            pre_vote: rng.chance(500_000),
            last_log_index: arb_index(rng, st),
            last_log_term: arb_term(rng, st.term),
            leader_transfer: rng.chance(500_000),
        },
        1 => MessageBody::RequestVoteResponse {
            pre_vote: rng.chance(500_000),
            granted: true,
        },
        2 | 3 => {
            let prev = arb_index(rng, st);
            let t = arb_term(rng, st.term);
            let entries = (0..rng.below(4))
                .map(|i| Entry {
                    index: prev.wrapping_add(1 + i),
                    term: t,
                    payload: match rng.below(4) {
                        0 => EntryPayload::Noop,
                        1 => EntryPayload::Config(match rng.below(3) {
                            0 => ConfChange::AddLearner {
                                id: some_id(rng),
                                addr: "forged".into(),
                            },
                            1 => ConfChange::Promote { id: some_id(rng) },
                            _ => ConfChange::Remove { id: some_id(rng) },
                        }),
                        _ => EntryPayload::Command(Bytes::from_static(b"forged")),
                    },
                })
                .collect();
            MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: arb_term(rng, st.term),
                entries,
                leader_commit: arb_index(rng, st),
                heartbeat_seq: rng.next_u64(),
            }
        }
        4 => MessageBody::AppendEntriesResponse {
            success: rng.chance(700_000),
            match_index: arb_index(rng, st),
            conflict_index: arb_index(rng, st),
            conflict_term: None,
            heartbeat_seq: rng.next_u64(),
        },
        5 => MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                last_index: arb_index(rng, st),
                last_term: arb_term(rng, st.term),
                membership: if rng.chance(500_000) {
                    st.membership.clone()
                } else {
                    Membership::default()
                },
            },
        },
        6 => MessageBody::InstallSnapshotResponse {
            last_index: arb_index(rng, st),
        },
        _ => MessageBody::TimeoutNow,
    };
    Message {
        from,
        to,
        term: arb_term(rng, st.term),
        body,
    }
}

impl World {
    /// Sends one hostile message from a stranger to a running node that
    /// knows its configuration; it must be refused as `NotAMember`.
    pub(super) fn hostile(&mut self) -> Check {
        let Some(mut rng) = self.hostile_rng.take() else {
            return Ok(());
        };
        let result = self.hostile_with(&mut rng);
        let at = self.now + rng.range(2_000, 20_000);
        self.hostile_rng = Some(rng);
        if !self.settling {
            self.schedule(at, Ev::Hostile);
        }
        result
    }

    fn hostile_with(&mut self, rng: &mut Rng) -> Check {
        let targets: Vec<NodeId> = self
            .slots
            .iter()
            .filter_map(|(id, s)| {
                let h = s.host.as_ref()?;
                (!h.node.status().membership.members.is_empty()).then_some(*id)
            })
            .collect();
        let Some(&to) = rng.pick(&targets) else {
            return Ok(());
        };
        let from = STRANGER_BASE + rng.below(3);
        let st = self.host(to).expect("running").node.status();
        let msg = arb_message(rng, from, to, &st);
        if self.tracing() {
            let d = describe(&msg);
            self.trace_line(|| format!("HOSTILE n{from} -> n{to} t{} {d}", msg.term));
        }
        self.stats.hostile_sent += 1;
        let h = self.host(to).expect("running");
        match h.node.step(msg.clone()) {
            Err(Refusal::NotAMember { .. }) => self.stats.msgs_refused += 1,
            other => {
                return Err(Violation::new(
                    "hostile",
                    format!(
                        "node {to} (members {:?}) did not refuse a stranger's message as \
                         NotAMember: {other:?} for {msg:?}",
                        st.membership.members.keys().collect::<Vec<_>>()
                    ),
                ))
            }
        }
        self.drive(to)
    }
}
