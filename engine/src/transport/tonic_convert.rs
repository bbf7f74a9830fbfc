//! Conversion between the core's [`Message`] and the wire's [`pb::RaftMessage`].
//!
//! Core → wire never fails. Wire → core fails with [`ConvertError`] when a
//! required field is missing (a message without a body, an entry without a
//! payload, a conf change without a change): such a message came from a
//! broken or foreign peer and is refused as a whole, never guessed at.

use std::collections::BTreeMap;

use bytes::Bytes;
use d_engine_core::{
    ConfChange, Entry, EntryPayload, Index, Member, MemberRole, Membership, Message, MessageBody,
    SnapshotMeta, Term,
};
use d_engine_proto::v1 as pb;

/// A wire message the core cannot represent; names the missing part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError(pub String);

impl std::fmt::Display for ConvertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed raft message: {}", self.0)
    }
}

impl std::error::Error for ConvertError {}

fn missing(what: &str) -> ConvertError {
    ConvertError(format!("{what} is missing"))
}

// ---- core -> wire -------------------------------------------------------

pub fn membership_to_pb(m: &Membership) -> pb::RaftMembership {
    pb::RaftMembership {
        members: m
            .members
            .iter()
            .map(|(id, mem)| pb::RaftMember {
                id: *id,
                learner: mem.role == MemberRole::Learner,
                addr: mem.addr.clone(),
            })
            .collect(),
    }
}

pub fn snapshot_meta_to_pb(m: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_index: m.last_index,
        last_term: m.last_term,
        membership: Some(membership_to_pb(&m.membership)),
    }
}

fn conf_change_to_pb(c: &ConfChange) -> pb::RaftConfChange {
    use pb::raft_conf_change::Change;
    let change = match c {
        ConfChange::AddLearner { id, addr } => Change::AddLearner(pb::RaftMember {
            id: *id,
            learner: true,
            addr: addr.clone(),
        }),
        ConfChange::Promote { id } => Change::Promote(*id),
        ConfChange::Remove { id } => Change::Remove(*id),
    };
    pb::RaftConfChange {
        change: Some(change),
    }
}

pub fn entry_to_pb(e: &Entry) -> pb::RaftEntry {
    use pb::raft_entry::Payload;
    let payload = match &e.payload {
        EntryPayload::Noop => Payload::Noop(true),
        EntryPayload::Command(b) => Payload::Command(b.to_vec()),
        EntryPayload::Config(c) => Payload::Config(conf_change_to_pb(c)),
    };
    pb::RaftEntry {
        term: e.term,
        index: e.index,
        payload: Some(payload),
    }
}

/// Encodes a core message for the wire.
pub fn message_to_pb(m: &Message) -> pb::RaftMessage {
    use pb::raft_message::Body;
    let body = match &m.body {
        MessageBody::RequestVote {
            pre_vote,
            last_log_index,
            last_log_term,
            leader_transfer,
        } => Body::RequestVote(pb::RequestVote {
            pre_vote: *pre_vote,
            last_log_index: *last_log_index,
            last_log_term: *last_log_term,
            leader_transfer: *leader_transfer,
        }),
        MessageBody::RequestVoteResponse { pre_vote, granted } => {
            Body::RequestVoteResponse(pb::RequestVoteResponse {
                pre_vote: *pre_vote,
                granted: *granted,
            })
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            heartbeat_seq,
        } => Body::AppendEntries(pb::AppendEntries {
            prev_log_index: *prev_log_index,
            prev_log_term: *prev_log_term,
            entries: entries.iter().map(entry_to_pb).collect(),
            leader_commit: *leader_commit,
            heartbeat_seq: *heartbeat_seq,
        }),
        MessageBody::AppendEntriesResponse {
            success,
            match_index,
            conflict_index,
            conflict_term,
            heartbeat_seq,
        } => Body::AppendEntriesResponse(pb::AppendEntriesResponse {
            success: *success,
            match_index: *match_index,
            conflict_index: *conflict_index,
            conflict_term: conflict_term.unwrap_or(0),
            heartbeat_seq: *heartbeat_seq,
        }),
        MessageBody::InstallSnapshot { meta } => Body::InstallSnapshot(pb::InstallSnapshot {
            meta: Some(snapshot_meta_to_pb(meta)),
        }),
        MessageBody::InstallSnapshotResponse { last_index } => {
            Body::InstallSnapshotResponse(pb::InstallSnapshotResponse {
                last_index: *last_index,
            })
        }
        MessageBody::TimeoutNow => Body::TimeoutNow(pb::TimeoutNow {}),
    };
    pb::RaftMessage {
        from: m.from,
        to: m.to,
        term: m.term,
        body: Some(body),
    }
}

// ---- wire -> core -------------------------------------------------------

pub fn membership_from_pb(m: &pb::RaftMembership) -> Result<Membership, ConvertError> {
    let mut members = BTreeMap::new();
    for mem in &m.members {
        if mem.id == 0 {
            return Err(ConvertError("membership lists node id 0".into()));
        }
        let role = if mem.learner {
            MemberRole::Learner
        } else {
            MemberRole::Voter
        };
        if members
            .insert(
                mem.id,
                Member {
                    role,
                    addr: mem.addr.clone(),
                },
            )
            .is_some()
        {
            return Err(ConvertError(format!(
                "membership lists node {} twice",
                mem.id
            )));
        }
    }
    Ok(Membership { members })
}

pub fn snapshot_meta_from_pb(m: &pb::SnapshotMeta) -> Result<SnapshotMeta, ConvertError> {
    Ok(SnapshotMeta {
        last_index: m.last_index,
        last_term: m.last_term,
        membership: membership_from_pb(
            m.membership
                .as_ref()
                .ok_or_else(|| missing("snapshot meta membership"))?,
        )?,
    })
}

fn conf_change_from_pb(c: &pb::RaftConfChange) -> Result<ConfChange, ConvertError> {
    use pb::raft_conf_change::Change;
    Ok(
        match c.change.as_ref().ok_or_else(|| missing("conf change"))? {
            Change::AddLearner(m) => ConfChange::AddLearner {
                id: m.id,
                addr: m.addr.clone(),
            },
            Change::Promote(id) => ConfChange::Promote { id: *id },
            Change::Remove(id) => ConfChange::Remove { id: *id },
        },
    )
}

pub fn entry_from_pb(e: pb::RaftEntry) -> Result<Entry, ConvertError> {
    use pb::raft_entry::Payload;
    let payload = match e.payload {
        None => return Err(missing(&format!("payload of entry {}", e.index))),
        Some(Payload::Noop(_)) => EntryPayload::Noop,
        Some(Payload::Command(b)) => EntryPayload::Command(Bytes::from(b)),
        Some(Payload::Config(c)) => EntryPayload::Config(conf_change_from_pb(&c)?),
    };
    Ok(Entry {
        term: e.term,
        index: e.index,
        payload,
    })
}

/// Decodes a wire message; consumes it so command bytes move, not copy.
pub fn message_from_pb(m: pb::RaftMessage) -> Result<Message, ConvertError> {
    use pb::raft_message::Body;
    let body = match m.body.ok_or_else(|| missing("message body"))? {
        Body::RequestVote(v) => MessageBody::RequestVote {
            pre_vote: v.pre_vote,
            last_log_index: v.last_log_index,
            last_log_term: v.last_log_term,
            leader_transfer: v.leader_transfer,
        },
        Body::RequestVoteResponse(v) => MessageBody::RequestVoteResponse {
            pre_vote: v.pre_vote,
            granted: v.granted,
        },
        Body::AppendEntries(a) => MessageBody::AppendEntries {
            prev_log_index: a.prev_log_index,
            prev_log_term: a.prev_log_term,
            entries: a
                .entries
                .into_iter()
                .map(entry_from_pb)
                .collect::<Result<_, _>>()?,
            leader_commit: a.leader_commit,
            heartbeat_seq: a.heartbeat_seq,
        },
        Body::AppendEntriesResponse(r) => MessageBody::AppendEntriesResponse {
            success: r.success,
            match_index: r.match_index,
            conflict_index: r.conflict_index,
            conflict_term: (r.conflict_term != 0).then_some(r.conflict_term),
            heartbeat_seq: r.heartbeat_seq,
        },
        Body::InstallSnapshot(s) => MessageBody::InstallSnapshot {
            meta: snapshot_meta_from_pb(
                s.meta
                    .as_ref()
                    .ok_or_else(|| missing("install snapshot meta"))?,
            )?,
        },
        Body::InstallSnapshotResponse(r) => MessageBody::InstallSnapshotResponse {
            last_index: r.last_index,
        },
        Body::TimeoutNow(_) => MessageBody::TimeoutNow,
    };
    if let MessageBody::AppendEntries {
        prev_log_index,
        prev_log_term,
        entries,
        ..
    } = &body
    {
        check_append(m.term, *prev_log_index, *prev_log_term, entries)?;
    }
    Ok(Message {
        from: m.from,
        to: m.to,
        term: m.term,
        body,
    })
}

/// The shape the core relies on for an AppendEntries: entries numbered
/// `prev_log_index + 1, + 2, ...` with no overflow, terms never decreasing,
/// none older than `prev_log_term` and none newer than the message's term.
/// A peer that breaks this is buggy or hostile; its message is refused
/// before it reaches the log.
fn check_append(
    msg_term: Term,
    prev_index: Index,
    prev_term: Term,
    entries: &[Entry],
) -> Result<(), ConvertError> {
    let mut expect_index = prev_index;
    let mut last_term = prev_term;
    for e in entries {
        expect_index = expect_index.checked_add(1).ok_or_else(|| {
            ConvertError(format!(
                "append entries: index overflow after prev_log_index {prev_index}"
            ))
        })?;
        if e.index != expect_index {
            return Err(ConvertError(format!(
                "append entries: entry index {} where {expect_index} was expected (prev_log_index {prev_index})",
                e.index
            )));
        }
        if e.term < last_term || e.term > msg_term {
            return Err(ConvertError(format!(
                "append entries: entry {} has term {}, outside {last_term}..={msg_term}",
                e.index, e.term
            )));
        }
        last_term = e.term;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn membership() -> Membership {
        let mut members = BTreeMap::new();
        members.insert(
            1,
            Member {
                role: MemberRole::Voter,
                addr: "127.0.0.1:9081".into(),
            },
        );
        members.insert(
            4,
            Member {
                role: MemberRole::Learner,
                addr: "127.0.0.1:9084".into(),
            },
        );
        Membership { members }
    }

    fn all_bodies() -> Vec<MessageBody> {
        vec![
            MessageBody::RequestVote {
                pre_vote: true,
                last_log_index: 10,
                last_log_term: 3,
                leader_transfer: true,
            },
            MessageBody::RequestVoteResponse {
                pre_vote: false,
                granted: true,
            },
            MessageBody::AppendEntries {
                prev_log_index: 7,
                prev_log_term: 2,
                entries: vec![
                    Entry {
                        term: 3,
                        index: 8,
                        payload: EntryPayload::Noop,
                    },
                    Entry {
                        term: 3,
                        index: 9,
                        payload: EntryPayload::Command(Bytes::from_static(b"\x00put k v\xff")),
                    },
                    Entry {
                        term: 3,
                        index: 10,
                        payload: EntryPayload::Config(ConfChange::AddLearner {
                            id: 4,
                            addr: "127.0.0.1:9084".into(),
                        }),
                    },
                    Entry {
                        term: 3,
                        index: 11,
                        payload: EntryPayload::Config(ConfChange::Promote { id: 4 }),
                    },
                    Entry {
                        term: 3,
                        index: 12,
                        payload: EntryPayload::Config(ConfChange::Remove { id: 2 }),
                    },
                    Entry {
                        term: 3,
                        index: 13,
                        payload: EntryPayload::Command(Bytes::new()),
                    },
                ],
                leader_commit: 6,
                heartbeat_seq: 99,
            },
            MessageBody::AppendEntries {
                prev_log_index: 0,
                prev_log_term: 0,
                entries: vec![],
                leader_commit: 0,
                heartbeat_seq: 0,
            },
            MessageBody::AppendEntriesResponse {
                success: false,
                match_index: 5,
                conflict_index: 4,
                conflict_term: Some(2),
                heartbeat_seq: 17,
            },
            MessageBody::AppendEntriesResponse {
                success: true,
                match_index: 13,
                conflict_index: 0,
                conflict_term: None,
                heartbeat_seq: 18,
            },
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    last_index: 100,
                    last_term: 4,
                    membership: membership(),
                },
            },
            MessageBody::InstallSnapshot {
                meta: SnapshotMeta::default(),
            },
            MessageBody::InstallSnapshotResponse { last_index: 100 },
            MessageBody::TimeoutNow,
        ]
    }

    #[test]
    fn every_message_kind_round_trips_through_the_wire_encoding() {
        for (i, body) in all_bodies().into_iter().enumerate() {
            let msg = Message {
                from: 1 + i as u64,
                to: 2,
                term: 7 + i as u64,
                body,
            };
            let wire = message_to_pb(&msg);
            // Through real protobuf bytes, not just the structs.
            let bytes = prost::Message::encode_to_vec(&wire);
            let decoded: pb::RaftMessage = prost::Message::decode(bytes.as_slice()).unwrap();
            assert_eq!(message_from_pb(decoded).unwrap(), msg, "case {i}");
        }
    }

    #[test]
    fn snapshot_meta_round_trips() {
        let meta = SnapshotMeta {
            last_index: 42,
            last_term: 9,
            membership: membership(),
        };
        assert_eq!(
            snapshot_meta_from_pb(&snapshot_meta_to_pb(&meta)).unwrap(),
            meta
        );
    }

    #[test]
    fn a_message_without_body_is_refused() {
        let err = message_from_pb(pb::RaftMessage {
            from: 1,
            to: 2,
            term: 3,
            body: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("message body is missing"), "{err}");
    }

    #[test]
    fn an_entry_without_payload_is_refused() {
        let msg = pb::RaftMessage {
            from: 1,
            to: 2,
            term: 3,
            body: Some(pb::raft_message::Body::AppendEntries(pb::AppendEntries {
                entries: vec![pb::RaftEntry {
                    term: 3,
                    index: 5,
                    payload: None,
                }],
                ..Default::default()
            })),
        };
        let err = message_from_pb(msg).unwrap_err();
        assert!(err.to_string().contains("payload of entry 5"), "{err}");
    }

    #[test]
    fn snapshot_without_membership_or_with_duplicates_is_refused() {
        let no_membership = pb::SnapshotMeta {
            last_index: 1,
            last_term: 1,
            membership: None,
        };
        assert!(snapshot_meta_from_pb(&no_membership).is_err());
        let dup = pb::RaftMembership {
            members: vec![
                pb::RaftMember {
                    id: 1,
                    learner: false,
                    addr: "a".into(),
                },
                pb::RaftMember {
                    id: 1,
                    learner: true,
                    addr: "b".into(),
                },
            ],
        };
        assert!(membership_from_pb(&dup)
            .unwrap_err()
            .to_string()
            .contains("twice"));
        let zero = pb::RaftMembership {
            members: vec![pb::RaftMember {
                id: 0,
                learner: false,
                addr: "a".into(),
            }],
        };
        assert!(membership_from_pb(&zero).is_err());
    }
}
