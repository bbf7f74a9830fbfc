//! Node-side values → `dengine.v1` messages.
//!
//! Keys and values of `KeyValue` messages are `bytes::Bytes` (see
//! `proto/build.rs`): the conversions from the state machine's types share
//! its bytes, they never copy them.

use bytes::Bytes;
use d_engine_proto::v1 as pb;
use d_engine_storage::sm::{KeyValue as SmKv, WatchEventKind};

use crate::runtime::handle::Header;
use crate::runtime::watch_hub::Delivery;

/// Response bytes kept free for headers and framing when a response is
/// cut to fit `limits.max_request_bytes`.
pub(crate) const RESPONSE_SLACK: usize = 64 << 10;

pub fn header(h: Header) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        node_id: h.node_id,
        term: h.term,
        revision: h.revision,
    })
}

/// A client-typed key-value (owned `Vec`s, moved into the message).
pub use d_engine_api::convert::kv_to_wire as kv;

/// A state-machine key-value; the message shares its key and value bytes.
pub fn shared_kv(k: &SmKv) -> pb::KeyValue {
    pb::KeyValue {
        key: k.key.clone(),
        value: k.value.clone(),
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        expires_at_ms: k.expires_at_ms.unwrap_or(0),
        lease: k.lease,
    }
}

pub use d_engine_api::convert::{member_to_wire as member, members_to_wire as members};

/// A delivered watch event; the message shares the event's key and value
/// bytes (and its previous value, if the watcher asked for `prev_kv`). A
/// delete carries the key, an empty value and the deletion's revision.
pub(crate) fn event(d: &Delivery) -> pb::WatchEvent {
    let e = d.event();
    let (kind, kv) = match (&e.kind, &e.kv) {
        (WatchEventKind::Put, Some(kv)) => (pb::EventType::Put, shared_kv(kv)),
        (kind, _) => (
            match kind {
                WatchEventKind::Put => pb::EventType::Put,
                WatchEventKind::Delete => pb::EventType::Delete,
            },
            pb::KeyValue {
                key: e.key.clone(),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: e.revision,
                version: 0,
                expires_at_ms: 0,
                lease: 0,
            },
        ),
    };
    pb::WatchEvent {
        r#type: kind as i32,
        kv: Some(kv),
        prev_kv: d.prev_kv().as_ref().map(shared_kv),
    }
}
