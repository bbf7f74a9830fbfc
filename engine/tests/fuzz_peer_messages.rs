//! Property-based fuzzing of the peer wire format: the bytes a peer sends
//! are decoded by prost and converted by `message_from_pb` before anything
//! reaches the consensus core.
//!
//! Contracts checked:
//! - arbitrary bytes never panic the decoder or the conversion;
//! - an AppendEntries reaches the core only if its entries are numbered
//!   `prev_log_index + 1, + 2, ...` without overflow and their terms lie
//!   between `prev_log_term` and the message term, never decreasing;
//! - every message the core can produce survives encode → decode unchanged.
//!
//! Set `PROPTEST_CASES` for a longer run.

mod common;

use bytes::Bytes;
use d_engine_core::{ConfChange, Entry, EntryPayload, Message, MessageBody};
use d_engine_node::transport::tonic_convert::{message_from_pb, message_to_pb};
use d_engine_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message as _;

fn payload() -> impl Strategy<Value = EntryPayload> {
    prop_oneof![
        Just(EntryPayload::Noop),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| EntryPayload::Command(Bytes::from(b))),
        (1u64..10, "[0-9.:]{1,21}")
            .prop_map(|(id, addr)| EntryPayload::Config(ConfChange::AddLearner { id, addr })),
        (1u64..10).prop_map(|id| EntryPayload::Config(ConfChange::Promote { id })),
        (1u64..10).prop_map(|id| EntryPayload::Config(ConfChange::Remove { id })),
    ]
}

/// An AppendEntries whose indices and terms are perturbed in some cases.
fn append() -> impl Strategy<Value = (u64, u64, u64, Vec<(u64, u64, EntryPayload)>)> {
    (
        0u64..5,
        prop_oneof![0u64..20, Just(u64::MAX - 2)],
        0u64..5,
        proptest::collection::vec(
            (
                0u64..3,
                prop_oneof![8 => Just(0i64), 1 => -2i64..3],
                payload(),
            ),
            0..6,
        ),
    )
        .prop_map(|(msg_term_extra, prev, prev_term, raw)| {
            // Terms climb from prev_term by small steps; indices follow prev
            // with an occasional skew.
            let mut term = prev_term;
            let mut entries = Vec::new();
            for (i, (step, skew, p)) in raw.into_iter().enumerate() {
                term += step;
                let index = prev.wrapping_add(1 + i as u64).wrapping_add(skew as u64);
                entries.push((term, index, p));
            }
            let msg_term = term + msg_term_extra;
            let msg_term = if msg_term_extra == 0 && !entries.is_empty() {
                msg_term.saturating_sub(1) // sometimes older than its entries
            } else {
                msg_term
            };
            (msg_term, prev, prev_term, entries)
        })
}

fn well_formed(
    msg_term: u64,
    prev: u64,
    prev_term: u64,
    entries: &[(u64, u64, EntryPayload)],
) -> bool {
    let mut idx = prev;
    let mut last = prev_term;
    for (term, index, _) in entries {
        let Some(next) = idx.checked_add(1) else {
            return false;
        };
        if *index != next || *term < last || *term > msg_term {
            return false;
        }
        idx = next;
        last = *term;
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(3000)))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(m) = pb::RaftMessage::decode(bytes.as_slice()) {
            let _ = message_from_pb(m);
        }
    }

    #[test]
    fn append_entries_reach_the_core_only_when_well_formed((msg_term, prev, prev_term, entries) in append()) {
        let expect = well_formed(msg_term, prev, prev_term, &entries);
        let core_entries: Vec<Entry> = entries
            .iter()
            .map(|(term, index, payload)| Entry { term: *term, index: *index, payload: payload.clone() })
            .collect();
        let msg = Message {
            from: 1,
            to: 2,
            term: msg_term,
            body: MessageBody::AppendEntries {
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries: core_entries,
                leader_commit: prev,
                heartbeat_seq: 1,
            },
        };
        let wire = message_to_pb(&msg).encode_to_vec();
        let decoded = pb::RaftMessage::decode(wire.as_slice()).unwrap();
        match message_from_pb(decoded) {
            Ok(back) => {
                prop_assert!(expect, "malformed append accepted: {:?}", msg);
                prop_assert_eq!(back, msg);
            }
            Err(e) => {
                prop_assert!(!expect, "well-formed append refused: {}", e);
                prop_assert!(e.to_string().contains("append entries"), "{}", e);
            }
        }
    }
}
