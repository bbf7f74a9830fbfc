//! Property-based fuzzing of the command codec that every replica runs on
//! every log entry, and of the state machine's handling of what it decodes.
//!
//! Contracts checked:
//! - `Command::decode` never panics; what it accepts is valid and re-encodes
//!   to exactly the input (one encoding per command, so replicas cannot
//!   disagree about what an entry means);
//! - encode → decode is the identity for every valid command, and decode
//!   refuses exactly the commands that `validate` refuses;
//! - applying arbitrary entry bytes (garbage included) to the in-memory and
//!   the sled state machine gives the same results and the same state.
//!
//! Set `PROPTEST_CASES` for a longer run.

use bytes::Bytes;
use d_engine_core::{Entry, EntryPayload};
use d_engine_storage::command::{
    Command, Compare, CompareOp, CompareTarget, KeyRange, Op, RangeSpec, Txn, TxnOp, MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
};
use d_engine_storage::sm::{
    KvStateMachine, MemStateMachine, SledOptions, SledStateMachine, StateMachine,
};
use proptest::prelude::*;

mod common;

fn bytes(max: usize) -> impl Strategy<Value = Bytes> + Clone {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Sizes cluster around the limits so both sides of each boundary are hit.
fn sized(limit: usize) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => bytes(24),
        1 => (limit - 2..=limit + 2).prop_map(|n| Bytes::from(vec![b'x'; n])),
    ]
}

/// Ranges: a single key, an open end, or an arbitrary (maybe inverted) end.
fn key_range(key: impl Strategy<Value = Bytes> + Clone) -> impl Strategy<Value = KeyRange> {
    (
        key.clone(),
        prop_oneof![
            1 => Just(Bytes::new()),
            1 => Just(Bytes::from_static(b"\0")),
            2 => key,
        ],
    )
        .prop_map(|(start, end)| KeyRange { start, end })
}

fn compare(
    key: impl Strategy<Value = Bytes> + Clone,
    val: impl Strategy<Value = Bytes> + Clone,
) -> impl Strategy<Value = Compare> {
    let op = prop::sample::select(vec![
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ]);
    let target = prop_oneof![
        val.prop_map(CompareTarget::Value),
        (0u64..4).prop_map(CompareTarget::Version),
        (0u64..20).prop_map(CompareTarget::CreateRevision),
        (0u64..20).prop_map(CompareTarget::ModRevision),
        (0u64..4).prop_map(CompareTarget::Lease),
    ];
    (key, op, target).prop_map(|(key, op, target)| Compare { key, op, target })
}

fn txn_op(
    key: impl Strategy<Value = Bytes> + Clone,
    val: impl Strategy<Value = Bytes> + Clone,
    lease: impl Strategy<Value = u64> + Clone,
) -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (
            key_range(key.clone()),
            0u32..4,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(range, limit, keys_only, count_only)| TxnOp::Range(RangeSpec {
                    range,
                    limit,
                    keys_only,
                    count_only
                })
            ),
        (key.clone(), val, lease).prop_map(|(key, value, lease)| TxnOp::Put {
            key,
            value,
            expires_at_ms: None,
            lease
        }),
        (key_range(key), any::<bool>())
            .prop_map(|(range, prev_kv)| TxnOp::DeleteRange { range, prev_kv }),
    ]
}

fn txn(
    key: impl Strategy<Value = Bytes> + Clone,
    val: impl Strategy<Value = Bytes> + Clone,
    lease: impl Strategy<Value = u64> + Clone,
) -> impl Strategy<Value = Op> {
    (
        proptest::collection::vec(compare(key.clone(), val.clone()), 0..3),
        proptest::collection::vec(txn_op(key.clone(), val.clone(), lease.clone()), 0..4),
        proptest::collection::vec(txn_op(key, val, lease), 0..3),
    )
        .prop_map(|(compares, success, failure)| {
            Op::Txn(Box::new(Txn {
                compares,
                success,
                failure,
            }))
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // A lease with no TTL (a lease and a TTL together cannot be encoded;
        // validation refuses them before encoding).
        (sized(MAX_KEY_BYTES), bytes(24), any::<u64>()).prop_map(|(key, value, lease)| Op::Put {
            key,
            value,
            expires_at_ms: None,
            lease
        }),
        (key_range(bytes(12)), any::<bool>())
            .prop_map(|(range, prev_kv)| Op::DeleteRange { range, prev_kv }),
        txn(bytes(8), bytes(8), any::<u64>()),
        (
            any::<u64>(),
            prop_oneof![Just(0u64), Just(1u64), any::<u64>()]
        )
            .prop_map(|(id, ttl_ms)| Op::LeaseGrant { id, ttl_ms }),
        any::<u64>().prop_map(|id| Op::LeaseRevoke { id }),
        (
            sized(MAX_KEY_BYTES),
            sized(MAX_VALUE_BYTES),
            proptest::option::of(any::<u64>())
        )
            .prop_map(|(key, value, expires_at_ms)| Op::Put {
                key,
                value,
                expires_at_ms,
                lease: 0,
            }),
        sized(MAX_KEY_BYTES).prop_map(|key| Op::Delete { key }),
        (
            bytes(24),
            proptest::option::of(bytes(24)),
            proptest::option::of(bytes(24)),
            proptest::option::of(any::<u64>())
        )
            .prop_map(
                |(key, expected, new_value, expires_at_ms)| Op::CompareAndSwap {
                    key,
                    expected,
                    new_value,
                    expires_at_ms
                }
            ),
        any::<u64>().prop_map(|now_ms| Op::Expire { now_ms }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    (op(), proptest::option::of((any::<u64>(), any::<u64>()))).prop_map(|(op, c)| match c {
        Some((id, seq)) => Command::with_client(op, id, seq),
        None => Command::new(op),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(2000)))]

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_commands_reencode_exactly(
        raw in proptest::collection::vec(any::<u8>(), 0..96),
        fix_version in any::<bool>(),
    ) {
        let mut raw = raw;
        if fix_version && !raw.is_empty() {
            raw[0] = 1;
        }
        if let Ok(cmd) = Command::decode(&raw) {
            prop_assert!(cmd.validate().is_ok());
            prop_assert_eq!(cmd.encode().to_vec(), raw);
        }
    }

    #[test]
    fn valid_commands_round_trip_and_invalid_ones_are_refused(cmd in command()) {
        let decoded = Command::decode(&cmd.encode());
        match cmd.validate() {
            Ok(()) => prop_assert_eq!(decoded, Ok(cmd)),
            Err(e) => prop_assert_eq!(decoded, Err(e)),
        }
    }
}

/// Entry payloads: mostly real commands, some garbage.
fn payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        6 => (op_small(), proptest::option::of((0u64..3, 0u64..6))).prop_map(|(op, c)| match c {
            Some((id, seq)) => Command::with_client(op, id, seq).encode(),
            None => Command::new(op).encode(),
        }),
        1 => bytes(40),
    ]
}

/// Operations on a tiny key space so they interact.
fn op_small() -> impl Strategy<Value = Op> {
    let key = prop::sample::select(vec!["a", "b", "c"]).prop_map(Bytes::from);
    // Range ends beyond the key space too.
    let key = prop_oneof![4 => key, 1 => Just(Bytes::from_static(b"d"))];
    let val = prop::sample::select(vec!["1", "2", ""]).prop_map(Bytes::from);
    prop_oneof![
        (key.clone(), val.clone(), proptest::option::of(0u64..40)).prop_map(
            |(key, value, expires_at_ms)| Op::Put {
                key,
                value,
                expires_at_ms,
                lease: 0,
            }
        ),
        key.clone().prop_map(|key| Op::Delete { key }),
        (
            key.clone(),
            proptest::option::of(val.clone()),
            proptest::option::of(val.clone()),
            proptest::option::of(0u64..40)
        )
            .prop_map(
                |(key, expected, new_value, expires_at_ms)| Op::CompareAndSwap {
                    key,
                    expected,
                    new_value,
                    expires_at_ms
                }
            ),
        (0u64..40).prop_map(|now_ms| Op::Expire { now_ms }),
        (key.clone(), val.clone(), 1u64..4).prop_map(|(key, value, lease)| Op::Put {
            key,
            value,
            expires_at_ms: None,
            lease
        }),
        (1u64..4, 1u64..50).prop_map(|(id, ttl_ms)| Op::LeaseGrant { id, ttl_ms }),
        (1u64..4).prop_map(|id| Op::LeaseRevoke { id }),
        (key_range(key.clone()), any::<bool>())
            .prop_map(|(range, prev_kv)| Op::DeleteRange { range, prev_kv }),
        txn(key, val, 0u64..4),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::cases(48)))]

    #[test]
    fn mem_and_sled_state_machines_agree_on_arbitrary_entries(payloads in proptest::collection::vec(payload(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mem = MemStateMachine::new();
        let sled = SledStateMachine::open(&dir.path().join("sm"), SledOptions::default()).unwrap();
        let entries: Vec<Entry> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| Entry { term: 1, index: i as u64 + 1, payload: EntryPayload::Command(p) })
            .collect();
        for chunk in entries.chunks(7) {
            let a = mem.apply(chunk).unwrap();
            let b = sled.apply(chunk).unwrap();
            prop_assert_eq!(a, b);
        }
        for key in [&b"a"[..], b"b", b"c", b"d"] {
            prop_assert_eq!(mem.get(key, 0).unwrap(), sled.get(key, 0).unwrap());
        }
        prop_assert_eq!(mem.leases().unwrap(), sled.leases().unwrap());
        for id in 1..4 {
            let keys = |sm: &dyn KvStateMachine| {
                let mut v = Vec::new();
                sm.lease_keys_each(id, &mut |k| {
                    v.push(k.to_vec());
                    true
                })
                .unwrap();
                v
            };
            prop_assert_eq!(keys(&mem), keys(&sled));
        }
        prop_assert_eq!(mem.data_bytes(), sled.data_bytes());
        prop_assert_eq!(mem.applied_index(), sled.applied_index());
    }
}
