//! Child process for the WAL crash tests (`tests/wal_crash.rs`); not a
//! user tool. It reopens the WAL in `<dir>` and runs a seeded random mix of
//! operations, announcing each on stdout so the parent, which SIGKILLs it at
//! random moments, knows what must have survived:
//!
//! ```text
//! open <first> <last>          after recovery
//! durable <lo> <hi> <term>     entries lo..=hi (all in term) are synced
//! truncating <from>            about to remove entries from..  (maybe partly done)
//! truncated <from>             removal complete and durable
//! compacting <upto>            about to drop entries ..=upto (whole segments)
//! compacted <upto>
//! error <message>              an operation failed (fsize mode)
//! poisoned <message>           a later operation failed too, as it must
//! done                         finished without being killed
//! ```
//! Payloads are `conformance::derived_entry(index, term)`.
//!
//! Usage: `wal-crash-child <dir> <seed> [fsize <bytes>]`. With `fsize`, the
//! process's file-size limit (RLIMIT_FSIZE) is set so that a write fails
//! with EFBIG, standing in for a full disk.

use std::time::{Duration, Instant};

use d_engine_core::{Entry, Index};
use d_engine_storage::wal::conformance::derived_entry;
use d_engine_storage::wal::{LogStore, Wal, WalOptions};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn batch(lo: Index, n: u64, term: u64) -> Vec<Entry> {
    (lo..lo + n).map(|i| derived_entry(i, term)).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: wal-crash-child <dir> <seed> [fsize <bytes>]");
        std::process::exit(2);
    }
    let dir = &args[1];
    let seed: u64 = args[2].parse().expect("seed must be a number");
    let fsize: Option<u64> = match args.get(3).map(String::as_str) {
        Some("fsize") => Some(args[4].parse().expect("fsize bytes")),
        Some(other) => panic!("unknown mode {other}"),
        None => None,
    };
    let opts = match fsize {
        None => WalOptions {
            segment_size: 16 * 1024,
            write_buffer: 8 * 1024,
            ..Default::default()
        },
        // Small preallocation steps, so that entries are written before a
        // write crosses the file-size limit.
        Some(_) => WalOptions {
            segment_size: 64 * 1024,
            preallocate: 1024,
            ..Default::default()
        },
    };
    let (mut wal, _recovered) = Wal::open(dir, opts).expect("open WAL");
    println!("open {} {}", wal.first_index(), wal.last_index());
    match fsize {
        Some(limit) => fill_until_error(&mut wal, limit),
        None => random_ops(&mut wal, seed),
    }
    println!("done");
}

fn random_ops(wal: &mut Wal, seed: u64) {
    let mut rng = Rng(seed);
    // Entries recovered at open are durable; keep a committed floor below them.
    wal.set_committed(wal.last_index().saturating_sub(rng.below(30)));
    let mut term = wal.last_term().unwrap_or(1);
    let deadline = Instant::now() + Duration::from_secs(3);
    for _ in 0..2_000 {
        if Instant::now() > deadline {
            break;
        }
        let (first, last) = (wal.first_index(), wal.last_index());
        match rng.below(100) {
            // Group commit: 1-3 appends, one sync.
            0..=69 => {
                if rng.below(10) == 0 {
                    term += 1;
                }
                let lo = last + 1;
                let mut hi = last;
                for _ in 0..=rng.below(3) {
                    let n = 1 + rng.below(40);
                    wal.append(&batch(hi + 1, n, term)).expect("append");
                    hi += n;
                }
                wal.sync().expect("sync");
                println!("durable {lo} {hi} {term}");
            }
            // Overwrite a suffix through append (a new leader's entries).
            70..=79 => {
                let floor = first.max(wal.committed() + 1);
                if floor > last {
                    continue;
                }
                let from = floor + rng.below(last - floor + 1);
                term += 1;
                let n = 1 + rng.below(20);
                println!("truncating {from}");
                wal.append(&batch(from, n, term)).expect("overwrite");
                wal.sync().expect("sync");
                println!("durable {from} {} {term}", from + n - 1);
            }
            80..=87 => {
                let floor = first.max(wal.committed() + 1);
                if floor > last {
                    continue;
                }
                let from = floor + rng.below(last - floor + 1);
                println!("truncating {from}");
                wal.truncate_suffix(from).expect("truncate_suffix");
                println!("truncated {from}");
            }
            88..=96 => {
                if last < first + 50 {
                    continue;
                }
                let upto = first + rng.below(last - first - 20);
                println!("compacting {upto}");
                wal.compact(upto).expect("compact");
                println!("compacted {upto}");
                wal.set_committed(upto);
            }
            _ => {
                wal.sync().expect("idle sync");
                let c = wal.committed().max(last.saturating_sub(rng.below(100)));
                wal.set_committed(c);
            }
        }
    }
}

fn fill_until_error(wal: &mut Wal, limit: u64) {
    // SAFETY: plain libc calls with valid arguments.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0, "setrlimit");
    }
    let term = wal.last_term().unwrap_or(1);
    for _ in 0..100_000 {
        let lo = wal.last_index() + 1;
        let r = wal.append(&batch(lo, 7, term)).and_then(|_| wal.sync());
        match r {
            Ok(()) => println!("durable {lo} {} {term}", lo + 6),
            Err(e) => {
                println!("error {} disk_full={}", one_line(&e), e.is_disk_full());
                let lo = wal.last_index() + 1;
                let again = wal.append(&batch(lo, 1, term)).and_then(|_| wal.sync());
                match again {
                    Err(e @ d_engine_storage::wal::WalError::Poisoned { .. }) => {
                        println!("poisoned {} disk_full={}", one_line(&e), e.is_disk_full())
                    }
                    other => println!("not-poisoned {other:?}"),
                }
                match wal.sync() {
                    Err(d_engine_storage::wal::WalError::Poisoned { .. }) => {
                        println!("sync-poisoned")
                    }
                    other => println!("sync-not-poisoned {other:?}"),
                }
                return;
            }
        }
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', " ")
}
