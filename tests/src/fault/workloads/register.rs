//! *register*: a few keys, each a register; clients get (linearizable),
//! put and compare-and-swap with unique values. Every operation is
//! recorded and each key's history is checked for linearizability.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_client::Consistency;

use super::super::history::{History, Outcome};
use super::super::linearizability::{check, excerpt, prune, Call, RegOp, Ret, Verdict};
use super::{parse, write_failure, Counts, Ctx};
use crate::sim::rng::Rng;

pub const KEYS: usize = 3;
const BUDGET: u64 = 20_000_000;

fn key(k: usize) -> String {
    format!("reg/{k}")
}

/// One history per key.
#[derive(Default)]
pub struct Register {
    pub histories: Vec<History<RegOp>>,
    /// Last value each key was seen with (a CAS expects it).
    seen: Mutex<BTreeMap<usize, Option<u64>>>,
}

impl Register {
    pub fn new() -> Arc<Self> {
        Arc::new(Register {
            histories: (0..KEYS).map(|_| History::default()).collect(),
            seen: Mutex::default(),
        })
    }

    /// Spawns `clients` sequential clients.
    pub fn spawn(
        self: &Arc<Self>,
        ctx: &Ctx,
        clients: usize,
        seed: u64,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..clients)
            .map(|c| {
                let me = self.clone();
                let ctx = ctx.clone();
                let mut rng = Rng::new(seed ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9));
                tokio::spawn(async move {
                    while !ctx.stopped() {
                        me.one(&ctx, c, &mut rng).await;
                        tokio::time::sleep(Duration::from_millis(rng.range(1, 20))).await;
                    }
                })
            })
            .collect()
    }

    async fn one(&self, ctx: &Ctx, c: usize, rng: &mut Rng) {
        let k = rng.below(KEYS as u64) as usize;
        let kv = ctx.client.kv();
        let t0 = ctx.clock.now();
        let (outcome, op) = match rng.below(10) {
            0..=3 => match kv.get_with(key(k), Consistency::Linearizable).await {
                Ok(got) => {
                    let v = got.and_then(|kv| parse(&kv.value));
                    self.seen.lock().unwrap().insert(k, v);
                    (
                        Outcome::Ok,
                        RegOp {
                            call: Call::Read,
                            ret: Some(Ret::Read(v)),
                        },
                    )
                }
                Err(_) => (
                    Outcome::Fail,
                    RegOp {
                        call: Call::Read,
                        ret: None,
                    },
                ),
            },
            4..=6 => {
                let v = ctx.next_value();
                let call = Call::Write(v);
                match kv.put(key(k), v.to_string()).await {
                    Ok(_) => (
                        Outcome::Ok,
                        RegOp {
                            call,
                            ret: Some(Ret::Write),
                        },
                    ),
                    Err(e) => (write_failure(&e), RegOp { call, ret: None }),
                }
            }
            _ => {
                let expected = self.seen.lock().unwrap().get(&k).copied().flatten();
                let new = ctx.next_value();
                let call = Call::Cas { expected, new };
                match kv
                    .compare_and_swap(
                        key(k),
                        expected.map(|v| v.to_string().into_bytes()),
                        Some(new.to_string().into_bytes()),
                    )
                    .await
                {
                    Ok(o) => {
                        let current = o.current.and_then(|kv| parse(&kv.value));
                        self.seen.lock().unwrap().insert(k, current);
                        (
                            Outcome::Ok,
                            RegOp {
                                call,
                                ret: Some(Ret::Cas {
                                    ok: o.succeeded,
                                    current,
                                }),
                            },
                        )
                    }
                    Err(e) => (write_failure(&e), RegOp { call, ret: None }),
                }
            }
        };
        self.histories[k].push(c, t0, ctx.clock.now(), outcome, op);
    }

    pub fn counts(&self) -> Counts {
        let mut t = [0; 3];
        for h in &self.histories {
            for (i, n) in h.counts().iter().enumerate() {
                t[i] += n;
            }
        }
        t
    }

    /// Linearizability per key; anomalies carry a history excerpt.
    /// Also returns notes (inconclusive searches).
    pub fn check(&self) -> (Vec<String>, Vec<String>) {
        let (mut anomalies, mut notes) = (Vec::new(), Vec::new());
        for (k, h) in self.histories.iter().enumerate() {
            let ops = prune(&h.snapshot());
            match check(&ops, None, BUDGET) {
                Verdict::Linearizable => {}
                Verdict::Violation { culprit } => anomalies.push(format!(
                    "register {}: history not linearizable ({} ops checked); no valid order explains the op marked >>:\n{}",
                    key(k),
                    ops.len(),
                    excerpt(&ops, culprit, 500_000_000, 30)
                )),
                Verdict::Unknown => notes.push(format!(
                    "register {}: linearizability search gave up after {BUDGET} steps ({} ops)",
                    key(k),
                    ops.len()
                )),
            }
        }
        (anomalies, notes)
    }
}
