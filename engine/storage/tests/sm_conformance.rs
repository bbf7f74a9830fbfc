//! The state-machine conformance suite, run against both implementations.

use d_engine_storage::sm::conformance as c;
use d_engine_storage::sm::{
    KvStateMachine, MemStateMachine, SledOptions, SledStateMachine, StateMachine,
};
use std::path::Path;

fn mem(_: &Path) -> Box<dyn KvStateMachine> {
    Box::new(MemStateMachine::new())
}

fn sled(dir: &Path) -> Box<dyn KvStateMachine> {
    Box::new(
        SledStateMachine::open(
            dir,
            SledOptions {
                cache_bytes: 16 << 20,
            },
        )
        .expect("open sled"),
    )
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        const CHECKED_HERE: &[&str] = &[$(stringify!($name)),*];
        mod mem_sm {
            $(#[test] fn $name() {
                let d = tempfile::tempdir().unwrap();
                super::c::$name(&super::mem, d.path());
            })*
        }
        mod sled_sm {
            $(#[test] fn $name() {
                let d = tempfile::tempdir().unwrap();
                super::c::$name(&super::sled, d.path());
            })*
        }
    };
}

both!(
    put_get_revisions,
    compare_and_swap,
    ttl_expiry,
    dedup_retries,
    membership_changes,
    watch_events,
    rejects_bad_commands,
    scan_prefix_order_and_limit,
    snapshot_roundtrip,
    snapshot_is_point_in_time,
    snapshot_concurrent_with_applies,
    data_bytes_accounting,
    delete_range_semantics,
    txn_semantics,
    lease_semantics,
    lease_snapshot_roundtrip,
    auth_state_roundtrip,
    range_reads,
    dedup_multi_key_results,
    snapshot_with_unknown_lease_is_refused,
);

/// The exported suite (`d_engine_storage::conformance::
/// run_state_machine_conformance`, what an implementer runs) is exactly the
/// checks run one by one above, so the built-in machines pass what it asks.
#[test]
fn the_exported_suite_runs_exactly_these_checks() {
    let listed: Vec<&str> = c::CHECKS.iter().map(|(name, _)| *name).collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    let mut here = CHECKED_HERE.to_vec();
    here.sort();
    assert_eq!(
        listed_sorted, here,
        "sm::conformance::CHECKS and this file differ"
    );
}

/// The exported entry point itself, on the memory machine (a cheap run;
/// the per-check tests above cover both backends with better names).
#[test]
fn exported_suite_passes_on_the_memory_machine() {
    let d = tempfile::tempdir().unwrap();
    d_engine_storage::conformance::run_state_machine_conformance(&mem, d.path());
}

#[test]
fn mem_and_sled_snapshots_are_interchangeable() {
    let d = tempfile::tempdir().unwrap();
    let m = MemStateMachine::new();
    let s = sled(&d.path().join("sled"));
    c::varied_history(&m, 1, 250);
    c::varied_history(&*s, 1, 250);
    assert_eq!(c::dump(&m), c::dump(&*s));
    assert_eq!(c::dump_leases(&m), c::dump_leases(&*s));
    assert_eq!(m.data_bytes(), s.data_bytes());
    let store = d_engine_storage::snapshot::SnapshotStore::open(d.path()).unwrap();
    let from_sled = store.create(&mut *s.begin_snapshot().unwrap()).unwrap();
    let m2 = MemStateMachine::new();
    m2.install_snapshot(&from_sled.path).unwrap();
    assert_eq!(c::dump(&m2), c::dump(&m));
    assert_eq!(c::dump_leases(&m2), c::dump_leases(&m));
    assert_eq!(m2.membership(), m.membership());
    // And the other way: a memory snapshot installs into sled.
    let from_mem = store.create(&mut *m.begin_snapshot().unwrap()).unwrap();
    let s2 = sled(&d.path().join("sled2"));
    s2.install_snapshot(&from_mem.path).unwrap();
    assert_eq!(c::dump(&*s2), c::dump(&m));
    assert_eq!(c::dump_leases(&*s2), c::dump_leases(&m));
}
