//! Measures the core alone: a 3-node cluster in one thread, messages
//! delivered in FIFO order, persistence reported at once. Prints committed
//! commands per second of CPU time spent in the cores and the harness; the
//! real floor is the host's fsync and network, which this leaves out.
//!
//! Run: `cargo run --release -p d-engine-core --example core_throughput [commands] [batch]`

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use d_engine_core::*;

fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let batch: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let mut m = Membership::default();
    for id in 1..=3 {
        m.members.insert(
            id,
            Member {
                role: MemberRole::Voter,
                addr: format!("n{id}"),
            },
        );
    }
    let mut nodes: BTreeMap<NodeId, RaftNode> = (1..=3)
        .map(|id| {
            let mut c = Config::new(id);
            c.snapshot_threshold = 0;
            let r = RestoreState {
                initial_membership: m.clone(),
                ..Default::default()
            };
            (id, RaftNode::new(c, r).expect("valid config"))
        })
        .collect();
    let mut queue: VecDeque<Message> = VecDeque::new();
    let mut applied: u64 = 0;
    let payload = Bytes::from(vec![7u8; 100]);
    let pump = |nodes: &mut BTreeMap<NodeId, RaftNode>,
                queue: &mut VecDeque<Message>,
                applied: &mut u64| {
        for _ in 0..1_000_000 {
            let mut busy = false;
            for (id, n) in nodes.iter_mut() {
                while n.has_ready() {
                    busy = true;
                    let rd = n.ready();
                    if let Some(last) = rd.entries.last() {
                        n.log_persisted(last.index, last.term);
                    }
                    if *id == 1 {
                        *applied += rd.committed.len() as u64;
                    }
                    queue.extend(rd.messages);
                }
            }
            while let Some(msg) = queue.pop_front() {
                busy = true;
                nodes
                    .get_mut(&msg.to)
                    .expect("known node")
                    .step(msg)
                    .expect("honest traffic is never refused");
            }
            if !busy {
                return;
            }
        }
    };
    // Elect node 1.
    while nodes[&1].status().role != Role::Leader {
        for n in nodes.values_mut() {
            n.tick();
        }
        if nodes[&2].status().role == Role::Leader || nodes[&3].status().role == Role::Leader {
            panic!("another node won; rerun");
        }
        pump(&mut nodes, &mut queue, &mut applied);
    }
    pump(&mut nodes, &mut queue, &mut applied);
    let start_applied = applied;
    let t0 = Instant::now();
    let mut proposed = 0;
    while proposed < total {
        let cmds: Vec<Bytes> = (0..batch).map(|_| payload.clone()).collect();
        nodes
            .get_mut(&1)
            .expect("leader")
            .propose(cmds)
            .expect("leader accepts");
        proposed += batch;
        pump(&mut nodes, &mut queue, &mut applied);
    }
    let secs = t0.elapsed().as_secs_f64();
    let done = applied - start_applied;
    println!(
        "{done} commands committed and applied in {secs:.3} s ({:.0} commands/s, batch {batch}, 3 cores in one thread)",
        done as f64 / secs
    );
}
