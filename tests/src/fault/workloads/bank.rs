//! *bank*: `ACCOUNTS` balances in one value (`bank/state`, comma separated);
//! clients move money with read + compare-and-swap and read the state at
//! every consistency level. The total must never change in any read.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_client::Consistency;

use super::{write_failure, Counts, Ctx};
use crate::fault::history::Outcome;
use crate::sim::rng::Rng;

pub const ACCOUNTS: usize = 5;
pub const TOTAL: u64 = 1000;
const KEY: &str = "bank/state";

fn encode(b: &[u64]) -> String {
    b.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
}

fn decode(v: &[u8]) -> Option<Vec<u64>> {
    let s = std::str::from_utf8(v).ok()?;
    s.split(',').map(|x| x.parse().ok()).collect()
}

#[derive(Default)]
pub struct Bank {
    counts: Mutex<Counts>,
    anomalies: Mutex<Vec<String>>,
    pub reads: Mutex<u64>,
}

impl Bank {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Creates the accounts (before faults start).
    pub async fn setup(&self, ctx: &Ctx) -> Result<(), String> {
        let each = TOTAL / ACCOUNTS as u64;
        let init = encode(&[each; ACCOUNTS]);
        for _ in 0..20 {
            match ctx
                .client
                .kv()
                .compare_and_swap(KEY, None, Some(init.clone().into_bytes()))
                .await
            {
                Ok(_) => return Ok(()),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        Err("bank: cannot create the accounts".into())
    }

    fn observe(&self, what: &str, v: &[u8]) -> Option<Vec<u64>> {
        *self.reads.lock().unwrap() += 1;
        match decode(v) {
            Some(b) if b.len() == ACCOUNTS && b.iter().sum::<u64>() == TOTAL => Some(b),
            _ => {
                self.anomalies.lock().unwrap().push(format!(
                    "bank: {what} saw `{}` (total must be {TOTAL} over {ACCOUNTS} accounts)",
                    String::from_utf8_lossy(v)
                ));
                None
            }
        }
    }

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
                let mut rng = Rng::new(seed ^ 0xB4A4 ^ (c as u64) << 8);
                tokio::spawn(async move {
                    while !ctx.stopped() {
                        me.one(&ctx, &mut rng).await;
                        tokio::time::sleep(Duration::from_millis(rng.range(1, 15))).await;
                    }
                })
            })
            .collect()
    }

    async fn one(&self, ctx: &Ctx, rng: &mut Rng) {
        let kv = ctx.client.kv();
        let consistency = match rng.below(4) {
            0 => Consistency::Eventual,
            1 => Consistency::Lease,
            _ => Consistency::Linearizable,
        };
        let read = kv.get_with(KEY, consistency).await;
        let Ok(Some(cur)) = read else {
            self.counts.lock().unwrap()[Outcome::Fail as usize] += 1;
            return;
        };
        self.counts.lock().unwrap()[Outcome::Ok as usize] += 1;
        let Some(mut b) = self.observe(&format!("{consistency:?} read"), &cur.value) else {
            return;
        };
        if consistency == Consistency::Eventual {
            return;
        }
        let from = rng.below(ACCOUNTS as u64) as usize;
        let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
        let amount = rng.range(1, 50).min(b[from]);
        b[from] -= amount;
        b[to] += amount;
        let o = match kv
            .compare_and_swap(KEY, Some(cur.value.to_vec()), Some(encode(&b).into_bytes()))
            .await
        {
            Ok(r) => {
                if let Some(now) = r.current {
                    self.observe("compare-and-swap", &now.value);
                }
                Outcome::Ok
            }
            Err(e) => write_failure(&e),
        };
        self.counts.lock().unwrap()[o as usize] += 1;
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }

    /// Anomalies seen during the run plus a final linearizable read.
    pub async fn check(&self, ctx: &Ctx) -> Vec<String> {
        let mut done = false;
        for _ in 0..20 {
            if let Ok(Some(v)) = ctx
                .client
                .kv()
                .get_with(KEY, Consistency::Linearizable)
                .await
            {
                self.observe("final read", &v.value);
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut out = self.anomalies.lock().unwrap().clone();
        if !done {
            out.push("bank: final read failed".into());
        }
        out
    }
}
