//! Hostile peer messages in the seeded whole-cluster simulator (issue 16).
//!
//! `non_members_change_nothing`: the normal simulated chaos (crashes,
//! partitions, lossy and reordering network, membership changes, transfers,
//! clients) runs with a stranger injecting an arbitrary well-formed message
//! every few ms into nodes that know their configuration: any kind, any term
//! up to `u64::MAX`, forged entries, commits, snapshot metadata, transfer
//! votes, fake acknowledgements. Every one must be refused as `NotAMember`,
//! no node may panic, and every checker (election safety, log matching,
//! leader completeness, state-machine safety, commit monotonicity, stale
//! reads, leases, linearizability, liveness after healing) must still hold.
//!
//! CI size: `DENGINE_HOSTILE_ITERS` seeds (default 300, about 3 s) of `SIM_EVENTS`
//! events (default 3000). A failing seed prints its trace; replay it with
//! `DENGINE_HOSTILE_SEED=<n>`.
//!
//! Hostile messages from *members* are not in here: Raft is not Byzantine
//! tolerant, so a forged message from a member may legitimately break
//! safety; what must hold for them (no panic, the node keeps running) is
//! the core's `tests::hostile` property test.

use d_engine_tests::sim::{self, SimOptions};

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
        Err(_) => default,
    }
}

fn options(seed: u64, events: u64) -> SimOptions {
    let mut o = SimOptions::new(seed, events);
    o.hostile_non_members = true;
    o
}

#[test]
fn non_members_change_nothing() {
    let events = env_u64("SIM_EVENTS", 3000);
    let seeds: Vec<u64> = match std::env::var("DENGINE_HOSTILE_SEED") {
        Ok(_) => vec![env_u64("DENGINE_HOSTILE_SEED", 0)],
        Err(_) => (0..env_u64("DENGINE_HOSTILE_ITERS", 300)).collect(),
    };
    let (mut sent, mut refused, mut writes) = (0, 0, 0);
    for seed in seeds {
        let r = sim::run(options(seed, events));
        if let Some(v) = &r.violation {
            let mut o = options(seed, events);
            o.trace_len = 300;
            let again = sim::run(o);
            for line in &again.trace {
                println!("{line}");
            }
            panic!(
                "seed {seed}: {v} (replay: DENGINE_HOSTILE_SEED={seed} cargo test -p \
                 d-engine-tests --test peer_hostile -- --nocapture)"
            );
        }
        sent += r.stats.hostile_sent;
        refused += r.stats.msgs_refused;
        writes += r.stats.writes_ok;
    }
    println!(
        "{sent} hostile messages sent, {refused} refused in all, {writes} writes acknowledged"
    );
    assert!(sent > 0, "the stranger sent nothing");
    assert!(refused >= sent, "{refused} refused < {sent} sent");
    assert!(writes > 0, "the clusters served no write");
}
