//! Conversions between the wire messages and the API's plain types, used
//! by the gRPC client (wire → API) and the client service (API → wire).

use d_engine_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::types::{
    Consistency, EventType, KeyValue, LeaderInfo, MemberInfo, MemberRole, WatchEvent,
};

pub fn consistency(c: Consistency) -> i32 {
    match c {
        Consistency::Linearizable => pb::Consistency::Linearizable as i32,
        Consistency::Lease => pb::Consistency::Lease as i32,
        Consistency::Eventual => pb::Consistency::Eventual as i32,
    }
}

/// The wire key-value's `Bytes` become the client's `Vec`s (a copy out of
/// the received message).
pub fn key_value(kv: pb::KeyValue) -> KeyValue {
    KeyValue {
        key: Vec::from(kv.key),
        value: Vec::from(kv.value),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        expires_at_ms: kv.expires_at_ms,
    }
}

/// A member; an unspecified role (an older or buggy server) reads as `Voter`.
pub fn member(m: pb::Member) -> MemberInfo {
    let role = match pb::MemberRole::try_from(m.role) {
        Ok(pb::MemberRole::Learner) => MemberRole::Learner,
        _ => MemberRole::Voter,
    };
    MemberInfo {
        id: m.id,
        peer_addr: m.peer_addr,
        client_addr: m.client_addr,
        role,
    }
}

pub fn members(ms: Vec<pb::Member>) -> Vec<MemberInfo> {
    ms.into_iter().map(member).collect()
}

/// A member as the wire carries it (the inverse of [`member`]).
pub fn member_to_wire(m: MemberInfo) -> pb::Member {
    pb::Member {
        id: m.id,
        peer_addr: m.peer_addr,
        client_addr: m.client_addr,
        role: match m.role {
            MemberRole::Voter => pb::MemberRole::Voter,
            MemberRole::Learner => pb::MemberRole::Learner,
        } as i32,
    }
}

pub fn members_to_wire(ms: Vec<MemberInfo>) -> Vec<pb::Member> {
    ms.into_iter().map(member_to_wire).collect()
}

pub fn leader(r: &pb::LeaderResponse) -> LeaderInfo {
    LeaderInfo {
        id: r.leader_id,
        client_addr: r.leader_addr.clone(),
        term: r.header.as_ref().map_or(0, |h| h.term),
    }
}

/// A watch event; an event without a type or key-value is a server bug,
/// reported as `Internal` rather than guessed at.
pub fn watch_event(e: pb::WatchEvent) -> Result<WatchEvent> {
    let kind = match pb::EventType::try_from(e.r#type) {
        Ok(pb::EventType::Put) => EventType::Put,
        Ok(pb::EventType::Delete) => EventType::Delete,
        _ => {
            return Err(Error::Internal(format!(
                "server sent a watch event with unknown type {}",
                e.r#type
            )))
        }
    };
    let kv = e
        .kv
        .ok_or_else(|| Error::Internal("server sent a watch event without a key-value".into()))?;
    Ok(WatchEvent {
        kind,
        kv: key_value(kv),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_members() {
        let kv = pb::KeyValue {
            key: b"k".to_vec().into(),
            value: b"v".to_vec().into(),
            create_revision: 1,
            mod_revision: 2,
            version: 2,
            expires_at_ms: 0,
        };
        let ev = watch_event(pb::WatchEvent {
            r#type: pb::EventType::Delete as i32,
            kv: Some(kv.clone()),
        })
        .unwrap();
        assert_eq!(ev.kind, EventType::Delete);
        assert_eq!(ev.kv.mod_revision, 2);
        assert!(watch_event(pb::WatchEvent {
            r#type: 0,
            kv: Some(kv)
        })
        .is_err());
        assert!(watch_event(pb::WatchEvent {
            r#type: 1,
            kv: None
        })
        .is_err());
        let m = member(pb::Member {
            id: 2,
            peer_addr: "p".into(),
            client_addr: "c".into(),
            role: pb::MemberRole::Learner as i32,
        });
        assert_eq!(m.role, MemberRole::Learner);
        assert_eq!(member(member_to_wire(m.clone())), m);
        assert_eq!(consistency(Consistency::Eventual), 3);
    }
}
