//! WAL benchmark: append throughput and per-batch latency (append + one
//! `sync`, i.e. one `fdatasync`) at several batch sizes, printed beside the
//! disk's floor: the latency of appending 4 KiB to a file and `fdatasync`ing.
//!
//! ```text
//! cargo run --release -p d-engine-storage --bin wal-bench -- [--dir D] [--secs S]
//!     [--batches 1,16,256] [--entry-bytes 256] [--preallocate BYTES]
//! ```
//! `--dir` must be on the disk under test (default: a fresh directory in the
//! system temp dir); it is removed afterwards.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use d_engine_core::{Entry, EntryPayload};
use d_engine_storage::wal::{LogStore, Wal, WalOptions};
use hdrhistogram::Histogram;

struct Args {
    dir: PathBuf,
    secs: f64,
    batches: Vec<u64>,
    entry_bytes: usize,
    preallocate: u64,
}

fn parse_args() -> Args {
    let mut a = Args {
        dir: std::env::temp_dir().join(format!("wal-bench-{}", std::process::id())),
        secs: 3.0,
        batches: vec![1, 16, 256],
        entry_bytes: 256,
        preallocate: WalOptions::default().preallocate,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(val()),
            "--secs" => a.secs = val().parse().unwrap_or_else(|_| die("--secs: a number")),
            "--batches" => {
                a.batches = val()
                    .split(',')
                    .map(|s| {
                        s.parse()
                            .unwrap_or_else(|_| die("--batches: e.g. 1,16,256"))
                    })
                    .collect()
            }
            "--entry-bytes" => {
                a.entry_bytes = val()
                    .parse()
                    .unwrap_or_else(|_| die("--entry-bytes: a number"))
            }
            "--preallocate" => {
                a.preallocate = val()
                    .parse()
                    .unwrap_or_else(|_| die("--preallocate: bytes (0 disables)"))
            }
            "-h" | "--help" => {
                println!(
                    "wal-bench [--dir D] [--secs S] [--batches 1,16,256] [--entry-bytes 256] \
                     [--preallocate BYTES]"
                );
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other}")),
        }
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("wal-bench: {msg}");
    std::process::exit(2)
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Latency (µs) of writing 4 KiB and calling fdatasync: appending to the
/// file (`prefilled == false`), or overwriting zeros written and synced
/// beforehand (what the WAL does when it preallocates).
fn fdatasync_floor(dir: &Path, secs: f64, prefilled: bool) -> Histogram<u64> {
    let path = dir.join("fdatasync-probe");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("create probe file");
    let block = vec![0x5au8; 4096];
    if prefilled {
        let zeros = vec![0u8; 1 << 20];
        for i in 0..64u64 {
            f.write_all_at(&zeros, i << 20).expect("prefill");
        }
        f.sync_all().expect("sync prefill");
    }
    let mut h = hist();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut off = 0u64;
    let mut n = 0;
    while (Instant::now() < end || n < 50) && off < (64 << 20) {
        let t = Instant::now();
        f.write_all_at(&block, off).expect("write");
        f.sync_data().expect("fdatasync");
        let us = t.elapsed().as_micros() as u64;
        if n >= 10 {
            h.record(us.max(1)).expect("record");
        }
        off += 4096;
        n += 1;
    }
    drop(f);
    fs::remove_file(&path).ok();
    h
}

struct Run {
    batch: u64,
    entries_per_sec: f64,
    mib_per_sec: f64,
    lat: Histogram<u64>,
}

fn run_batch(dir: &Path, batch: u64, a: &Args) -> Run {
    let (entry_bytes, secs) = (a.entry_bytes, a.secs);
    let wdir = dir.join(format!("wal-batch-{batch}"));
    let opts = WalOptions {
        preallocate: a.preallocate,
        ..Default::default()
    };
    let (mut wal, _) = Wal::open(&wdir, opts).expect("open WAL");
    let payload = Bytes::from(vec![0xabu8; entry_bytes]);
    let mut next = 1u64;
    let mut make = |n: u64| -> Vec<Entry> {
        let v = (next..next + n)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(payload.clone()),
            })
            .collect();
        next += n;
        v
    };
    for _ in 0..20 {
        let b = make(batch);
        wal.append(&b).expect("append");
        wal.sync().expect("sync");
    }
    let mut lat = hist();
    let mut entries = 0u64;
    let mut busy = Duration::ZERO;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0;
    while Instant::now() < end || n < 50 {
        let b = make(batch);
        let t = Instant::now();
        wal.append(&b).expect("append");
        wal.sync().expect("sync");
        let d = t.elapsed();
        busy += d;
        lat.record((d.as_micros() as u64).max(1)).expect("record");
        entries += batch;
        n += 1;
    }
    drop(wal);
    fs::remove_dir_all(&wdir).ok();
    let s = busy.as_secs_f64();
    Run {
        batch,
        entries_per_sec: entries as f64 / s,
        mib_per_sec: (entries * entry_bytes as u64) as f64 / s / (1024.0 * 1024.0),
        lat,
    }
}

fn main() {
    let a = parse_args();
    fs::create_dir_all(&a.dir).expect("create bench dir");
    println!(
        "wal-bench: dir {} ({} s per measurement, WAL preallocate {} bytes)",
        a.dir.display(),
        a.secs,
        a.preallocate
    );
    let floor = fdatasync_floor(&a.dir, a.secs, false);
    let f50 = floor.value_at_quantile(0.5) as f64;
    let f99 = floor.value_at_quantile(0.99) as f64;
    println!(
        "fdatasync floor (4 KiB append + fdatasync):    p50 {f50:.0} us, p99 {f99:.0} us, {} samples",
        floor.len()
    );
    let over = fdatasync_floor(&a.dir, a.secs, true);
    println!(
        "fdatasync floor (4 KiB overwrite + fdatasync): p50 {:.0} us, p99 {:.0} us, {} samples",
        over.value_at_quantile(0.5),
        over.value_at_quantile(0.99),
        over.len()
    );
    println!("ratios below are against the append floor");
    println!(
        "{:>6} {:>6} {:>12} {:>8} {:>9} {:>9} {:>10} {:>10}",
        "batch", "bytes", "entries/s", "MiB/s", "p50 us", "p99 us", "p50/floor", "p99/floor"
    );
    for &b in &a.batches {
        let r = run_batch(&a.dir, b, &a);
        let p50 = r.lat.value_at_quantile(0.5) as f64;
        let p99 = r.lat.value_at_quantile(0.99) as f64;
        println!(
            "{:>6} {:>6} {:>12.0} {:>8.2} {:>9.0} {:>9.0} {:>10.2} {:>10.2}",
            r.batch,
            a.entry_bytes,
            r.entries_per_sec,
            r.mib_per_sec,
            p50,
            p99,
            p50 / f50,
            p99 / f99
        );
    }
    let cpu = append_only(&a.dir, &a);
    println!("append without fdatasync (CPU + page cache ceiling), batch 256: {cpu:.0} entries/s");
    fs::remove_dir_all(&a.dir).ok();
}

/// Entries/s of append + flush to the OS, no fdatasync: what the WAL costs
/// besides the disk.
fn append_only(dir: &Path, a: &Args) -> f64 {
    let wdir = dir.join("wal-append-only");
    let opts = WalOptions {
        preallocate: a.preallocate,
        ..Default::default()
    };
    let (mut wal, _) = Wal::open(&wdir, opts).expect("open WAL");
    let payload = Bytes::from(vec![0xcdu8; a.entry_bytes]);
    let mut next = 1u64;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.secs.min(1.0));
    while Instant::now() < end {
        let b: Vec<Entry> = (next..next + 256)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Command(payload.clone()),
            })
            .collect();
        wal.append(&b).expect("append");
        wal.flush().expect("flush");
        next += 256;
    }
    let rate = (next - 1) as f64 / start.elapsed().as_secs_f64();
    drop(wal);
    fs::remove_dir_all(&wdir).ok();
    rate
}
