//! snapshot-bench: how long a snapshot of a large sled state machine takes,
//! and how long applies pause while it is built.
//!
//! ```text
//! cargo run --release -p d-engine-storage --bin snapshot-bench -- --bytes 1G
//! options: --bytes N[K|M|G]   data to load first (default 64M)
//!          --value-size N     bytes per value (default 1024)
//!          --batch N          entries per apply batch during the build (default 64)
//!          --dir PATH         where to put the data (default: a fresh dir under $TMPDIR)
//!          --install          also time installing the snapshot into a fresh sled dir
//!          --cache-mb N       sled page cache (default 256, the SledOptions default)
//!          --normal-priority  build at normal priority (default: builder
//!                             priority, as a node builds)
//! ```
//!
//! A writer thread applies batches of overwrites, deletes and new keys
//! continuously while the snapshot is built on the main thread; the report
//! gives the apply-call latency distribution and the longest gap between two
//! consecutive applies during the build (target: no pause above 50 ms).

use bytes::Bytes;
use d_engine_core::{Entry, EntryPayload};
use d_engine_storage::command::{Command, Op};
use d_engine_storage::sm::{SledOptions, SledStateMachine, StateMachine};
use d_engine_storage::snapshot::priority::lower_this_thread_priority;
use d_engine_storage::snapshot::{verify_snapshot_file, SnapshotStore};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    bytes: u64,
    value_size: usize,
    batch: u64,
    dir: Option<std::path::PathBuf>,
    install: bool,
    cache_mb: u64,
    normal_priority: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mul)
        .map_err(|_| format!("bad size {s:?}: use e.g. 256M or 1G"))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        bytes: 64 << 20,
        value_size: 1024,
        batch: 64,
        dir: None,
        install: false,
        cache_mb: 256,
        normal_priority: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bytes" => a.bytes = parse_size(&val()?)?,
            "--value-size" => {
                a.value_size = val()?.parse().map_err(|_| "--value-size: not a number")?
            }
            "--batch" => a.batch = val()?.parse().map_err(|_| "--batch: not a number")?,
            "--dir" => a.dir = Some(val()?.into()),
            "--install" => a.install = true,
            "--normal-priority" => a.normal_priority = true,
            "--cache-mb" => a.cache_mb = val()?.parse().map_err(|_| "--cache-mb: not a number")?,
            "-h" | "--help" => {
                println!("usage: snapshot-bench [--bytes 1G] [--value-size 1024] [--batch 64] [--dir PATH] [--install] [--cache-mb 256] [--normal-priority]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.value_size == 0 || a.batch == 0 {
        return Err("--value-size and --batch must be at least 1".into());
    }
    Ok(a)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn put(index: u64, key: u64, value: &Bytes) -> Entry {
    Entry {
        term: 1,
        index,
        payload: EntryPayload::Command(
            Command::new(Op::Put {
                key: Bytes::from(format!("bench/{key:012}")),
                value: value.clone(),
                expires_at_ms: None,
                lease: 0,
            })
            .encode(),
        ),
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("snapshot-bench: {e}");
            std::process::exit(2);
        }
    };
    let dir = args.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("snapshot-bench-{}", std::process::id()))
    });
    let cleanup = args.dir.is_none();
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let sm = Arc::new(
        SledStateMachine::open(
            &dir.join("sm"),
            SledOptions {
                cache_bytes: args.cache_mb << 20,
            },
        )
        .expect("open sled"),
    );
    let value = Bytes::from(vec![b'v'; args.value_size]);
    let keys = args.bytes.div_ceil(args.value_size as u64).max(1);
    println!(
        "loading {:.0} MiB: {keys} keys x {} B values into {}",
        mib(args.bytes),
        args.value_size,
        dir.display()
    );
    let t = Instant::now();
    let mut index = sm.applied_index();
    let mut k = 0;
    while k < keys {
        let n = 512.min(keys - k);
        let batch: Vec<Entry> = (0..n).map(|j| put(index + 1 + j, k + j, &value)).collect();
        sm.apply(&batch).expect("apply");
        index += n;
        k += n;
    }
    let load = t.elapsed();
    println!(
        "loaded in {:.1} s ({:.0} MiB/s, {:.0} puts/s); sled size on disk {:.0} MiB",
        load.as_secs_f64(),
        mib(args.bytes) / load.as_secs_f64(),
        keys as f64 / load.as_secs_f64(),
        mib(sm.size_on_disk().unwrap_or(0))
    );

    sm.take_apply_stats(); // forget the load phase

    // Writer thread: continuous applies; latency per apply call and gaps.
    let stop = Arc::new(AtomicBool::new(false));
    let building = Arc::new(AtomicBool::new(false));
    let writer = {
        let sm = sm.clone();
        let stop = stop.clone();
        let building = building.clone();
        let value = value.clone();
        let batch = args.batch;
        std::thread::spawn(move || {
            let mut idle = Histogram::<u64>::new(3).expect("hist");
            let mut during = Histogram::<u64>::new(3).expect("hist");
            let mut max_gap_during = Duration::ZERO;
            let mut applies_during = 0u64;
            let mut index = sm.applied_index();
            let mut last = Instant::now();
            let mut r = 1u64;
            while !stop.load(Ordering::Relaxed) {
                let entries: Vec<Entry> = (0..batch)
                    .map(|j| {
                        r = splitmix(r);
                        let i = index + 1 + j;
                        match r % 10 {
                            0 => Entry {
                                term: 1,
                                index: i,
                                payload: EntryPayload::Command(
                                    Command::new(Op::Delete {
                                        key: Bytes::from(format!("bench/{:012}", (r >> 8) % keys)),
                                    })
                                    .encode(),
                                ),
                            },
                            1 => put(i, keys + (r >> 8) % keys, &value),
                            _ => put(i, (r >> 8) % keys, &value),
                        }
                    })
                    .collect();
                let t = Instant::now();
                sm.apply(&entries).expect("apply");
                let now = Instant::now();
                let us = (now - t).as_micros() as u64;
                index += batch;
                if building.load(Ordering::Relaxed) {
                    during.record(us.max(1)).ok();
                    max_gap_during = max_gap_during.max(now - last);
                    applies_during += 1;
                } else {
                    idle.record(us.max(1)).ok();
                }
                last = now;
            }
            (idle, during, max_gap_during, applies_during)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let store = SnapshotStore::open(&dir).expect("snapshot dir");
    let idle_stats = sm.take_apply_stats();
    building.store(true, Ordering::Relaxed);
    let t = Instant::now();
    let src = sm.begin_snapshot().expect("begin snapshot");
    // Built on its own thread at builder priority, as a node does.
    let background = !args.normal_priority;
    let (info, src) = std::thread::spawn(move || {
        let mut src = src;
        if background {
            lower_this_thread_priority().expect("lower the builder's priority");
        }
        (store.create(&mut *src).expect("snapshot"), src)
    })
    .join()
    .expect("builder thread");
    let build = t.elapsed();
    building.store(false, Ordering::Relaxed);
    let build_stats = sm.take_apply_stats();
    drop(src);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (idle, during, max_gap, applies) = writer.join().expect("writer");

    println!(
        "snapshot at index {}: {} records, {:.0} MiB file, built in {:.2} s ({:.0} MiB/s)",
        info.meta.last_index,
        info.records,
        mib(info.size),
        build.as_secs_f64(),
        mib(info.size) / build.as_secs_f64()
    );
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "applies during the build: {applies} batches of {} entries ({:.0} entries/s)",
        args.batch,
        (applies * args.batch) as f64 / build.as_secs_f64()
    );
    println!(
        "apply latency during build: p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms; longest gap between applies {:.2} ms",
        ms(during.value_at_quantile(0.5)),
        ms(during.value_at_quantile(0.99)),
        ms(during.value_at_quantile(0.999)),
        ms(during.max()),
        max_gap.as_secs_f64() * 1000.0
    );
    println!(
        "apply latency without a build: p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms ({} batches)",
        ms(idle.value_at_quantile(0.5)),
        ms(idle.value_at_quantile(0.99)),
        ms(idle.max()),
        idle.len()
    );
    println!(
        "inside apply (max): waiting for the snapshot lock {:.2} ms, executing commands {:.2} ms, sled apply_batch {:.2} ms, whole call {:.2} ms (without a build: lock {:.2} ms, execute {:.2} ms, apply_batch {:.2} ms, call {:.2} ms)",
        ms(build_stats.max_snapshot_lock_wait_us),
        ms(build_stats.max_execute_us),
        ms(build_stats.max_commit_us),
        ms(build_stats.max_apply_us),
        ms(idle_stats.max_snapshot_lock_wait_us),
        ms(idle_stats.max_execute_us),
        ms(idle_stats.max_commit_us),
        ms(idle_stats.max_apply_us),
    );
    let verdict = if max_gap < Duration::from_millis(50) {
        "PASS"
    } else {
        "OVER TARGET"
    };
    println!("target: no apply pause above 50 ms -> {verdict}");
    let t = Instant::now();
    verify_snapshot_file(&info.path).expect("verify");
    println!(
        "verify (read + CRC32C): {:.2} s ({:.0} MiB/s)",
        t.elapsed().as_secs_f64(),
        mib(info.size) / t.elapsed().as_secs_f64()
    );
    if args.install {
        let other =
            SledStateMachine::open(&dir.join("sm-install"), SledOptions::default()).expect("open");
        let t = Instant::now();
        other.install_snapshot(&info.path).expect("install");
        println!(
            "install into a fresh sled dir (incl. flush + CURRENT switch): {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    drop(sm);
    if cleanup {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
