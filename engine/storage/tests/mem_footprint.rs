//! The memory state machine's heap cost per key stays near the data's size.
//!
//! A counting allocator (over the system allocator, so the figure is the
//! bytes requested, before any allocator's size-class rounding) measures the
//! heap that 20,000 keys of 8 bytes with 256-byte values leave live, as the
//! bench's memory scenario loads them. The layout documented in
//! docs/performance.md ("Memory with 1 M keys") costs 417 bytes per key:
//! the value (256), the key (8), the record (128 with its reference counts)
//! and the key tree (~25 with half-full leaves). The bound leaves room for
//! small changes but fails if the tree goes back to holding a key handle
//! per entry (511 bytes per key), or if reading every key for a snapshot
//! leaves a shared header behind on each stored key and value (+48).

use bytes::Bytes;
use d_engine_core::{Entry, EntryPayload};
use d_engine_storage::command::{Command, Op};
use d_engine_storage::sm::{KvStateMachine, MemStateMachine, SnapshotRecord, StateMachine};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(l.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE_BYTES.fetch_sub(l.size() as isize, Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const KEYS: usize = 20_000;
const VALUE: usize = 256;
/// Bytes per key allowed above the value and the key themselves.
const MAX_OVERHEAD_PER_KEY: usize = 180;

#[test]
fn heap_per_key_is_the_data_plus_a_bounded_overhead() {
    let sm = MemStateMachine::new();
    let value = vec![b'v'; VALUE];
    // Built before the baseline: the commands are transient, only what the
    // state machine keeps is measured.
    let batches: Vec<Vec<Entry>> = (0..KEYS)
        .collect::<Vec<_>>()
        .chunks(64)
        .map(|c| {
            c.iter()
                .map(|&k| {
                    let cmd = Command::new(Op::Put {
                        key: Bytes::from(format!("{k:08}").into_bytes()),
                        value: Bytes::copy_from_slice(&value),
                        expires_at_ms: None,
                        lease: 0,
                    });
                    Entry {
                        term: 1,
                        index: k as u64 + 1,
                        payload: EntryPayload::Command(cmd.encode()),
                    }
                })
                .collect()
        })
        .collect();
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for b in &batches {
        sm.apply(b).expect("apply");
    }
    let limit = (VALUE + 8 + MAX_OVERHEAD_PER_KEY) as f64;
    let check = |when: &str| {
        let per_key = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64 / KEYS as f64;
        eprintln!("{when}: {per_key:.0} heap bytes per key");
        assert!(
            per_key <= limit,
            "{when}, the memory state machine keeps {per_key:.0} heap bytes per key of \
             8 + {VALUE} bytes (limit {limit}); see docs/performance.md, \"Memory with 1 M keys\""
        );
    };
    check("after loading");
    // A snapshot reads every key; what it leaves behind must be nothing.
    let mut snap = sm.begin_snapshot().expect("begin snapshot");
    let mut kvs = 0;
    while let Some(rec) = snap.next_record().expect("next record") {
        if let SnapshotRecord::Kv(kv) = rec {
            assert_eq!(kv.value.len(), VALUE);
            kvs += 1;
        }
    }
    drop(snap);
    assert_eq!(kvs, KEYS, "the snapshot holds every key");
    check("after a snapshot");
    // Still a working map: every key reads back with its value.
    for k in [0, KEYS / 2, KEYS - 1] {
        let kv = sm
            .get(format!("{k:08}").as_bytes(), 0)
            .expect("get")
            .expect("key present");
        assert_eq!(kv.value.len(), VALUE);
    }
    // The commands are still live; they were counted before the baseline.
    drop(batches);
}
