//! A conformance suite for [`LogStore`] implementations.
//!
//! Run it from a test with a [`Harness`] that makes fresh stores (and, for
//! durable stores, reopens them): `conformance::run(&mut harness)`. Every
//! check panics with a message naming the check on failure.

use bytes::Bytes;
use d_engine_core::{ConfChange, Entry, EntryPayload, Index, Term};

use super::error::WalError;
use super::store::LogStore;

/// Makes stores for the suite.
///
/// For a store without a reopen (in memory, or to run the quick checks
/// only) use [`Fresh`]; for a durable store implement `reopen` so every
/// check also verifies what survives closing and opening the store again.
pub trait Harness {
    type Store: LogStore;
    /// A new, empty store (first index 1).
    fn fresh(&mut self) -> Self::Store;
    /// Closes `store` and opens it again from what it made durable,
    /// returning it with the entries recovered on open. `None` for a store
    /// without durability (the suite then skips its reopen checks).
    fn reopen(&mut self, store: Self::Store) -> Option<(Self::Store, Vec<Entry>)>;
    /// True if `reopen` is supported.
    fn durable(&self) -> bool;
}

/// A [`Harness`] from a function making fresh, empty stores; no reopen
/// checks. `run(&mut Fresh(|| MyLog::new()))`.
pub struct Fresh<F>(pub F);

impl<S: LogStore, F: FnMut() -> S> Harness for Fresh<F> {
    type Store = S;
    fn fresh(&mut self) -> S {
        (self.0)()
    }
    fn reopen(&mut self, _: S) -> Option<(S, Vec<Entry>)> {
        None
    }
    fn durable(&self) -> bool {
        false
    }
}

/// A command entry whose payload is derived from `(index, term)` and is
/// about `size` bytes long.
pub fn entry(index: Index, term: Term, size: usize) -> Entry {
    let seed = format!("{index}/{term}:");
    let mut p = Vec::with_capacity(size);
    while p.len() < size {
        p.extend_from_slice(seed.as_bytes());
    }
    p.truncate(size);
    Entry {
        term,
        index,
        payload: EntryPayload::Command(Bytes::from(p)),
    }
}

/// An entry whose payload (0..=600 bytes) is fully determined by
/// `(index, term)`: lets a checker verify recovered bytes without a copy.
pub fn derived_entry(index: Index, term: Term) -> Entry {
    let size = (index.wrapping_mul(2_654_435_761) ^ term.wrapping_mul(40_503)) % 601;
    entry(index, term, size as usize)
}

/// Entries `lo..=hi` in `term`, with ~`size`-byte payloads.
pub fn entries(lo: Index, hi: Index, term: Term, size: usize) -> Vec<Entry> {
    (lo..=hi).map(|i| entry(i, term, size)).collect()
}

/// Runs every check.
pub fn run<H: Harness>(h: &mut H) {
    empty_log(h);
    append_and_read(h);
    rejects_bad_batches(h);
    overwrites_conflicting_suffix(h);
    respects_committed_floor(h);
    truncates_suffix(h);
    compacts(h);
    resets(h);
    keeps_every_payload_kind(h);
    many_small_batches(h);
    flush_keeps_entries(h);
    reset_raises_committed_floor(h);
}

fn assert_log<S: LogStore>(s: &S, first: Index, last: Index, want: &[Entry], check: &str) {
    assert_eq!(s.last_index(), last, "{check}: last_index");
    assert!(
        s.first_index() <= first,
        "{check}: first_index {} > {first}",
        s.first_index()
    );
    let got = s
        .read(first, last + 1)
        .unwrap_or_else(|e| panic!("{check}: read({first}, {}) failed: {e}", last + 1));
    assert_eq!(got.len(), want.len(), "{check}: number of entries read");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{check}: entry {}", w.index);
    }
    assert_eq!(
        s.last_term(),
        want.last().map(|e| e.term),
        "{check}: last_term"
    );
}

/// Reopens if the store is durable and checks the log survived intact.
fn reopen_and_check<H: Harness>(
    h: &mut H,
    s: H::Store,
    first: Index,
    want: &[Entry],
    check: &str,
) -> H::Store {
    let last = first + want.len() as Index - 1;
    let first_before = s.first_index();
    match h.reopen(s) {
        None => panic!("{check}: reopen_and_check called on a non-durable store"),
        Some((s, recovered)) => {
            assert_eq!(
                s.first_index(),
                first_before,
                "{check} after reopen: first_index"
            );
            assert_log(&s, first, last, want, &format!("{check} after reopen"));
            let skip = (first - s.first_index()) as usize;
            assert_eq!(
                &recovered[skip.min(recovered.len())..],
                want,
                "{check} after reopen: recovered entries"
            );
            assert_eq!(
                recovered
                    .first()
                    .map(|e| e.index)
                    .unwrap_or(s.first_index()),
                s.first_index(),
                "{check} after reopen: recovered entries start at first_index"
            );
            s
        }
    }
}

fn maybe_reopen<H: Harness>(
    h: &mut H,
    s: H::Store,
    first: Index,
    want: &[Entry],
    check: &str,
) -> H::Store {
    if h.durable() {
        reopen_and_check(h, s, first, want, check)
    } else {
        s
    }
}

fn empty_log<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    assert_eq!(s.first_index(), 1, "empty: first_index");
    assert_eq!(s.last_index(), 0, "empty: last_index");
    assert_eq!(s.last_term(), None, "empty: last_term");
    assert_eq!(s.read(1, 1).expect("empty: read(1,1)"), vec![]);
    assert!(s.read(1, 2).is_err(), "empty: read past the end must fail");
    s.sync().expect("empty: sync");
    s.truncate_suffix(1)
        .expect("empty: truncate_suffix past the end is a no-op");
    s.compact(10).expect("empty: compact");
    assert_eq!(s.last_index(), 0, "empty: last_index after compact");
    let _ = maybe_reopen(h, s, 1, &[], "empty");
}

fn append_and_read<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = entries(1, 5, 1, 100);
    s.append(&want).expect("append 1..=5");
    assert_log(&s, 1, 5, &want, "append before sync");
    s.sync().expect("sync");
    want.extend(entries(6, 40, 2, 700));
    s.append(&want[5..20]).expect("append 6..=20");
    s.append(&want[20..]).expect("append 21..=40");
    s.sync().expect("sync");
    assert_log(&s, 1, 40, &want, "append");
    for (lo, hi) in [
        (1, 1),
        (1, 2),
        (3, 9),
        (5, 7),
        (20, 41),
        (40, 41),
        (41, 41),
        (1, 41),
    ] {
        let got = s
            .read(lo, hi)
            .unwrap_or_else(|e| panic!("read({lo},{hi}): {e}"));
        assert_eq!(
            got,
            want[(lo - 1) as usize..(hi - 1) as usize],
            "read({lo},{hi})"
        );
    }
    for (lo, hi) in [(0, 3), (1, 42), (5, 4), (42, 42)] {
        assert!(s.read(lo, hi).is_err(), "read({lo},{hi}) must fail");
    }
    let _ = maybe_reopen(h, s, 1, &want, "append");
}

fn rejects_bad_batches<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let want = entries(1, 10, 3, 50);
    s.append(&want).expect("append");
    let gap = entries(12, 13, 3, 50);
    assert!(
        matches!(s.append(&gap), Err(WalError::NotContiguous { .. })),
        "a batch after a gap must be refused"
    );
    let mut holey = entries(11, 12, 3, 50);
    holey[1].index = 13;
    assert!(
        matches!(s.append(&holey), Err(WalError::NotContiguous { .. })),
        "a batch with a hole must be refused"
    );
    let lower = entries(11, 12, 2, 50);
    assert!(
        matches!(s.append(&lower), Err(WalError::TermRegression { .. })),
        "a term lower than the last entry's must be refused"
    );
    let mut falling = entries(11, 12, 4, 50);
    falling[1].term = 3;
    assert!(
        matches!(s.append(&falling), Err(WalError::TermRegression { .. })),
        "a batch whose terms decrease must be refused"
    );
    let overwrite_lower = entries(5, 6, 2, 50);
    assert!(
        matches!(
            s.append(&overwrite_lower),
            Err(WalError::TermRegression { .. })
        ),
        "an overwrite with a term below its predecessor's must be refused"
    );
    s.append(&[]).expect("an empty batch is fine");
    s.sync().expect("sync");
    assert_log(&s, 1, 10, &want, "after refused batches");
    let _ = maybe_reopen(h, s, 1, &want, "after refused batches");
}

fn overwrites_conflicting_suffix<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = entries(1, 30, 1, 500);
    s.append(&want).expect("append");
    s.sync().expect("sync");
    let newer = entries(12, 16, 2, 300);
    s.append(&newer).expect("overwrite from 12");
    want.truncate(11);
    want.extend(newer);
    assert_log(&s, 1, 16, &want, "overwrite before sync");
    s.sync().expect("sync");
    let more = entries(17, 20, 2, 300);
    s.append(&more).expect("append after overwrite");
    want.extend(more);
    // Overwrite the very last entry only.
    let last = entries(20, 21, 3, 10);
    s.append(&last).expect("overwrite last");
    want.truncate(19);
    want.extend(last);
    s.sync().expect("sync");
    assert_log(&s, 1, 21, &want, "overwrite");
    let mut s = maybe_reopen(h, s, 1, &want, "overwrite");
    // Overwrite everything from the first entry.
    let all = entries(1, 3, 5, 20);
    s.append(&all).expect("overwrite from first");
    s.sync().expect("sync");
    assert_log(&s, 1, 3, &all, "overwrite from first");
    let _ = maybe_reopen(h, s, 1, &all, "overwrite from first");
}

fn respects_committed_floor<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let want = entries(1, 10, 1, 50);
    s.append(&want).expect("append");
    s.set_committed(5);
    s.set_committed(3); // never lowers
    assert!(
        matches!(
            s.append(&entries(5, 6, 2, 50)),
            Err(WalError::TruncateCommitted {
                from: 5,
                committed: 5
            })
        ),
        "overwriting a committed entry must be refused"
    );
    assert!(
        matches!(
            s.truncate_suffix(4),
            Err(WalError::TruncateCommitted { .. })
        ),
        "truncating committed entries must be refused"
    );
    assert_log(&s, 1, 10, &want, "after refused truncation");
    s.append(&entries(6, 7, 2, 50))
        .expect("overwrite above the floor");
    s.truncate_suffix(7).expect("truncate above the floor");
    s.sync().expect("sync");
    let mut w = want[..5].to_vec();
    w.extend(entries(6, 6, 2, 50));
    assert_log(&s, 1, 6, &w, "committed floor");
}

fn truncates_suffix<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let want = entries(1, 60, 1, 400);
    s.append(&want).expect("append");
    s.sync().expect("sync");
    s.truncate_suffix(100)
        .expect("truncate past the end is a no-op");
    s.truncate_suffix(61)
        .expect("truncate just past the end is a no-op");
    assert_log(&s, 1, 60, &want, "no-op truncation");
    s.truncate_suffix(45).expect("truncate 45..");
    assert_log(&s, 1, 44, &want[..44], "truncate 45..");
    let mut s = maybe_reopen(h, s, 1, &want[..44], "truncate 45..");
    s.truncate_suffix(3).expect("truncate 3..");
    assert_log(&s, 1, 2, &want[..2], "truncate 3..");
    s.truncate_suffix(1).expect("truncate everything");
    assert_eq!(s.last_index(), 0, "truncate everything: last_index");
    assert_eq!(s.last_term(), None, "truncate everything: last_term");
    let mut s = maybe_reopen(h, s, 1, &[], "truncate everything");
    let again = entries(1, 4, 2, 30);
    s.append(&again)
        .expect("append after truncating everything");
    s.sync().expect("sync");
    assert_log(&s, 1, 4, &again, "append after truncating everything");
    let _ = maybe_reopen(h, s, 1, &again, "append after truncating everything");
}

fn compacts<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let want = entries(1, 100, 1, 1000);
    for chunk in want.chunks(7) {
        s.append(chunk).expect("append");
    }
    s.sync().expect("sync");
    s.compact(0).expect("compact(0)");
    assert_eq!(s.first_index(), 1, "compact(0) keeps everything");
    s.compact(50).expect("compact(50)");
    let first = s.first_index();
    assert!(first <= 51, "compact(50): first_index {first} > 51");
    assert!(
        s.read(first, 101).is_ok(),
        "compact(50): remaining entries readable"
    );
    assert_log(&s, 51, 100, &want[50..], "compact(50)");
    if first > 1 {
        assert!(
            s.read(first - 1, 101).is_err(),
            "compacted entries must not be readable"
        );
    }
    let s = maybe_reopen(h, s, 51, &want[50..], "compact(50)");
    let mut s = s;
    s.compact(40)
        .expect("compacting less than before is a no-op");
    assert!(s.first_index() <= 51);
    s.compact(1000).expect("compact past the end");
    assert_eq!(s.last_index(), 100, "compact never changes last_index");
    let more = entries(101, 110, 2, 1000);
    s.append(&more).expect("append after compaction");
    s.sync().expect("sync");
    assert_log(&s, 101, 110, &more, "append after compaction");
    let _ = maybe_reopen(h, s, 101, &more, "append after compaction");
}

fn resets<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    s.append(&entries(1, 30, 1, 500)).expect("append");
    s.sync().expect("sync");
    s.reset(200).expect("reset(200)");
    assert_eq!(s.first_index(), 200, "reset: first_index");
    assert_eq!(s.last_index(), 199, "reset: last_index");
    assert_eq!(s.last_term(), None, "reset: last_term");
    let mut s = maybe_reopen(h, s, 200, &[], "reset");
    assert!(
        s.append(&entries(150, 151, 3, 10)).is_err(),
        "append below the reset point must fail"
    );
    assert!(
        s.append(&entries(201, 202, 3, 10)).is_err(),
        "append after a gap must fail"
    );
    let want = entries(200, 260, 3, 300);
    s.append(&want).expect("append after reset");
    s.sync().expect("sync");
    assert_log(&s, 200, 260, &want, "append after reset");
    let mut s = maybe_reopen(h, s, 200, &want, "append after reset");
    assert!(s.reset(0).is_err(), "reset(0) must fail");
    s.reset(5).expect("reset to a lower index");
    assert_eq!((s.first_index(), s.last_index()), (5, 4));
    let _ = maybe_reopen(h, s, 5, &[], "reset lower");
}

fn keeps_every_payload_kind<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let payloads = [
        EntryPayload::Noop,
        EntryPayload::Command(Bytes::new()),
        EntryPayload::Command(Bytes::from_static(b"\0\xff binary")),
        EntryPayload::Config(ConfChange::AddLearner {
            id: 4,
            addr: "127.0.0.1:7004".into(),
        }),
        EntryPayload::Config(ConfChange::AddLearner {
            id: 5,
            addr: String::new(),
        }),
        EntryPayload::Config(ConfChange::Promote { id: 4 }),
        EntryPayload::Config(ConfChange::Remove { id: 2 }),
        EntryPayload::Command(Bytes::from(vec![7u8; 70_000])),
    ];
    let want: Vec<Entry> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, payload)| Entry {
            term: 1 + i as Term / 3,
            index: 1 + i as Index,
            payload,
        })
        .collect();
    s.append(&want).expect("append");
    s.sync().expect("sync");
    let n = want.len() as Index;
    assert_log(&s, 1, n, &want, "payload kinds");
    let _ = maybe_reopen(h, s, 1, &want, "payload kinds");
}

fn many_small_batches<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let mut want = Vec::new();
    let mut term = 1;
    for i in 1..=500u64 {
        if i % 97 == 0 {
            term += 1;
        }
        let e = entry(i, term, (i % 300) as usize);
        s.append(std::slice::from_ref(&e)).expect("append one");
        want.push(e);
        if i % 10 == 0 {
            s.sync().expect("sync");
        }
    }
    s.sync().expect("sync");
    assert_log(&s, 1, 500, &want, "many small batches");
    let _ = maybe_reopen(h, s, 1, &want, "many small batches");
}

/// `flush` (the `periodic` durability mode's step) keeps every appended
/// entry readable, and a reopen after it (a process restart) finds them.
fn flush_keeps_entries<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    let want = entries(1, 25, 1, 200);
    s.append(&want[..10]).expect("append 1..=10");
    s.flush().expect("flush");
    s.append(&want[10..]).expect("append 11..=25");
    s.flush().expect("flush");
    assert_log(&s, 1, 25, &want, "after flush");
    let s = maybe_reopen(h, s, 1, &want, "after flush");
    let mut s = s;
    s.sync().expect("sync after flush");
    assert_log(&s, 1, 25, &want, "sync after flush");
}

/// After `reset(n)` the entries before `n` are committed: the store must
/// refuse to overwrite below it (there is nothing there to overwrite) and
/// accept exactly `n` next.
fn reset_raises_committed_floor<H: Harness>(h: &mut H) {
    let mut s = h.fresh();
    s.append(&entries(1, 8, 1, 40)).expect("append");
    s.set_committed(3);
    s.reset(50).expect("reset(50)");
    assert!(
        s.append(&entries(49, 49, 2, 10)).is_err(),
        "append at next_index - 1 after a reset must fail"
    );
    assert!(
        matches!(
            s.truncate_suffix(1),
            Ok(()) | Err(WalError::TruncateCommitted { .. })
        ),
        "truncating below an empty reset log is a no-op or refused"
    );
    let want = entries(50, 52, 2, 10);
    s.append(&want).expect("append at next_index after reset");
    s.sync().expect("sync");
    assert_log(&s, 50, 52, &want, "after reset");
    let _ = maybe_reopen(h, s, 50, &want, "after reset");
}
