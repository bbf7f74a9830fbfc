//! mem_footprint: what the memory state machine alone costs per key.
//!
//! Loads N keys (the bench's key format: the key number zero-padded to
//! `--key-size` bytes, values of `--value-size` bytes) into a
//! [`MemStateMachine`] in apply batches, as a node does, then prints the
//! live heap (bytes requested and bytes mimalloc actually hands out, i.e.
//! after size-class rounding) and the process's VmRSS.
//!
//! ```text
//! cargo run -p d-engine-storage --example mem_footprint -- --keys 1000000
//! options: --keys N (default 1000000)  --key-size N (default 8)
//!          --value-size N (default 256)  --batch N (default 64)
//!          --read  (read every key once after loading, in a scattered
//!                   order, as a workload would; prints the time per read)
//! ```
//!
//! It also prints the time per put of the load (commands built outside the
//! timed part).

use bytes::Bytes;
use d_engine_core::{Entry, EntryPayload};
use d_engine_storage::command::{Command, Op};
use d_engine_storage::sm::{KvStateMachine, MemStateMachine, StateMachine};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};

extern "C" {
    fn mi_usable_size(p: *const std::ffi::c_void) -> usize;
    fn mi_collect(force: bool);
}

/// mimalloc with two counters: live bytes as requested and as rounded up
/// to mimalloc's size class.
struct Counting;

static REQUESTED: AtomicIsize = AtomicIsize::new(0);
static USABLE: AtomicIsize = AtomicIsize::new(0);
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = mimalloc::MiMalloc.alloc(l);
        if !p.is_null() {
            REQUESTED.fetch_add(l.size() as isize, Ordering::Relaxed);
            USABLE.fetch_add(mi_usable_size(p.cast()) as isize, Ordering::Relaxed);
            LIVE.fetch_add(1, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        REQUESTED.fetch_sub(l.size() as isize, Ordering::Relaxed);
        USABLE.fetch_sub(mi_usable_size(p.cast()) as isize, Ordering::Relaxed);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        mimalloc::MiMalloc.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn report(what: &str, keys: usize, base: (isize, isize, isize, u64)) {
    let (r, u, n, rss) = (
        REQUESTED.load(Ordering::Relaxed) - base.0,
        USABLE.load(Ordering::Relaxed) - base.1,
        LIVE.load(Ordering::Relaxed) - base.2,
        rss_kib() - base.3,
    );
    let mib = |b: f64| b / (1 << 20) as f64;
    println!(
        "{what}: requested {:.1} MiB ({:.0} B/key), usable {:.1} MiB ({:.0} B/key), \
         {:.2} allocations/key, VmRSS +{:.1} MiB ({:.0} B/key)",
        mib(r as f64),
        r as f64 / keys as f64,
        mib(u as f64),
        u as f64 / keys as f64,
        n as f64 / keys as f64,
        rss as f64 / 1024.0,
        rss as f64 * 1024.0 / keys as f64,
    );
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number")),
        None => default,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let keys = arg(&args, "--keys", 1_000_000);
    let key_size = arg(&args, "--key-size", 8);
    let value_size = arg(&args, "--value-size", 256);
    let batch = arg(&args, "--batch", 64).max(1);
    let read = args.iter().any(|a| a == "--read");

    let sm = MemStateMachine::new();
    let value = vec![b'v'; value_size];
    let base = (
        REQUESTED.load(Ordering::Relaxed),
        USABLE.load(Ordering::Relaxed),
        LIVE.load(Ordering::Relaxed),
        rss_kib(),
    );
    let mut index = 0u64;
    let mut i = 0usize;
    let mut apply_time = std::time::Duration::ZERO;
    while i < keys {
        let n = batch.min(keys - i);
        let entries: Vec<Entry> = (i..i + n)
            .map(|k| {
                index += 1;
                let c = Command::new(Op::Put {
                    key: Bytes::from(format!("{k:0key_size$}").into_bytes()),
                    value: Bytes::copy_from_slice(&value),
                    expires_at_ms: None,
                    lease: 0,
                });
                Entry {
                    term: 1,
                    index,
                    payload: EntryPayload::Command(c.encode()),
                }
            })
            .collect();
        let t = std::time::Instant::now();
        sm.apply(&entries).expect("apply");
        apply_time += t.elapsed();
        i += n;
    }
    unsafe { mi_collect(true) };
    report("after load", keys, base);
    println!(
        "load: {:.0} ns per put (apply only)",
        apply_time.as_nanos() as f64 / keys as f64
    );
    if read {
        // Every key once, in a scattered order (a stride coprime with the
        // key count), so the tree is walked from cold parts too.
        let stride = (keys / 2 + 1..)
            .find(|s| gcd(*s, keys) == 1)
            .expect("a coprime stride");
        let names: Vec<Vec<u8>> = (0..keys)
            .map(|j| format!("{:0key_size$}", (j * stride) % keys).into_bytes())
            .collect();
        // The first pass, then the fastest of five more (the least
        // disturbed by other processes on a shared machine).
        let mut best = std::time::Duration::MAX;
        for pass in 0..6 {
            let t = std::time::Instant::now();
            for key in &names {
                let v = sm.get(key, 0).expect("get").expect("key");
                assert_eq!(v.value.len(), value_size);
            }
            let el = t.elapsed();
            if pass == 0 {
                println!(
                    "read: {:.0} ns per get (first read of each key)",
                    el.as_nanos() as f64 / keys as f64
                );
            } else {
                best = best.min(el);
            }
        }
        println!(
            "read: {:.0} ns per get (fastest of 5 more passes)",
            best.as_nanos() as f64 / keys as f64
        );
        drop(names);
        unsafe { mi_collect(true) };
        report("after reading every key once", keys, base);
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
