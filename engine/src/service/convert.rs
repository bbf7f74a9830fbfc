//! Node-side values → `dengine.v1` messages.

use d_engine_client::{EventType, KeyValue, MemberInfo, MemberRole, WatchEvent};
use d_engine_proto::v1 as pb;

use crate::runtime::handle::Header;

pub fn header(h: Header) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        node_id: h.node_id,
        term: h.term,
        revision: h.revision,
    })
}

pub fn kv(k: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: k.key,
        value: k.value,
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        expires_at_ms: k.expires_at_ms,
    }
}

pub fn member(m: MemberInfo) -> pb::Member {
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

pub fn members(ms: Vec<MemberInfo>) -> Vec<pb::Member> {
    ms.into_iter().map(member).collect()
}

pub fn event(e: WatchEvent) -> pb::WatchEvent {
    pb::WatchEvent {
        r#type: match e.kind {
            EventType::Put => pb::EventType::Put,
            EventType::Delete => pb::EventType::Delete,
        } as i32,
        kv: Some(kv(e.kv)),
    }
}

/// Protobuf-encoded size of a key-value (for response size budgeting).
pub fn kv_encoded_len(k: &pb::KeyValue) -> usize {
    prost::Message::encoded_len(k) + 8
}
