//! *txn-bank*: `ACCOUNTS` balances, one key each (`tbank/<i>`); transfers
//! are transactions — compare the mod revision of both accounts as read,
//! then put both — retried (after a fresh read) when a compare fails.
//! Readers read every account in ONE transaction (a prefix range op, or
//! one get op per account: the ops of a transaction read one revision);
//! every such read must total `TOTAL`, and so must a final read.
//! Non-transactional single-page range reads (one revision too) are
//! checked the same way.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_client::{
    Compare, Consistency, Error, KeyValue, RangeOptions, Txn, TxnOp, TxnOpResult,
};

use super::{write_failure, Counts, Ctx};
use crate::fault::history::Outcome;
use crate::sim::rng::Rng;

pub const ACCOUNTS: usize = 6;
pub const TOTAL: u64 = 6000;
const PREFIX: &str = "tbank/";

fn key(i: usize) -> String {
    format!("{PREFIX}{i}")
}

/// Checks one read of every account; `Err` describes what is wrong.
pub fn check_read(kvs: &[KeyValue]) -> Result<(), String> {
    let mut seen = [false; ACCOUNTS];
    let mut sum = 0u64;
    for kv in kvs {
        let k = String::from_utf8_lossy(&kv.key);
        let Some(i) = k
            .strip_prefix(PREFIX)
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|i| *i < ACCOUNTS)
        else {
            return Err(format!("unexpected key {k}"));
        };
        if seen[i] {
            return Err(format!("account {i} twice"));
        }
        seen[i] = true;
        match super::parse(&kv.value) {
            Some(v) => sum += v,
            None => {
                return Err(format!(
                    "account {i} holds `{}`",
                    String::from_utf8_lossy(&kv.value)
                ))
            }
        }
    }
    if seen.iter().any(|s| !s) {
        return Err(format!("{} of {ACCOUNTS} accounts present", kvs.len()));
    }
    if sum != TOTAL {
        return Err(format!("total {sum}, must be {TOTAL}"));
    }
    Ok(())
}

fn describe(kvs: &[KeyValue]) -> String {
    kvs.iter()
        .map(|kv| {
            format!(
                "{}={}@{}",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.mod_revision
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Default)]
pub struct TxnBank {
    counts: Mutex<Counts>,
    anomalies: Mutex<Vec<String>>,
    /// Reads checked: [txn range op, txn get ops, range page].
    pub reads: Mutex<[u64; 3]>,
    /// Transfers: [committed, compare failed (retried)].
    pub transfers: Mutex<[u64; 2]>,
}

impl TxnBank {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Creates the accounts in one transaction (before faults start).
    pub async fn setup(&self, ctx: &Ctx) -> Result<(), String> {
        let each = (TOTAL / ACCOUNTS as u64).to_string();
        let txn = Txn::new()
            .when((0..ACCOUNTS).map(|i| Compare::missing(key(i))))
            .and_then((0..ACCOUNTS).map(|i| TxnOp::put(key(i), each.clone())));
        let mut last = String::new();
        for _ in 0..20 {
            match ctx.client.kv().txn(txn.clone()).await {
                Ok(o) if o.succeeded || o.replayed => return Ok(()),
                Ok(_) => return Err("txn-bank: accounts already exist".into()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("txn-bank: cannot create the accounts: {last}"))
    }

    fn observe(&self, what: &str, kvs: &[KeyValue], revision: u64) {
        if let Err(e) = check_read(kvs) {
            self.anomalies.lock().unwrap().push(format!(
                "txn-bank: {what} at revision {revision}: {e}: {}",
                describe(kvs)
            ));
        }
    }

    /// `transferers` clients moving money, `readers` clients reading.
    pub fn spawn(
        self: &Arc<Self>,
        ctx: &Ctx,
        transferers: usize,
        readers: usize,
        seed: u64,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for c in 0..transferers + readers {
            let me = self.clone();
            let ctx = ctx.clone();
            let mut rng = Rng::new(seed ^ 0x7B4E ^ ((c as u64) << 12));
            let reader = c >= transferers;
            tasks.push(tokio::spawn(async move {
                while !ctx.stopped() {
                    if reader {
                        me.read(&ctx, &mut rng).await;
                    } else {
                        me.transfer(&ctx, &mut rng).await;
                    }
                    tokio::time::sleep(Duration::from_millis(rng.range(1, 10))).await;
                }
            }));
        }
        tasks
    }

    async fn read(&self, ctx: &Ctx, rng: &mut Rng) {
        let kv = ctx.client.kv();
        let kind = rng.below(3) as usize;
        let res = match kind {
            0 => kv
                .txn(Txn::new().and_then([TxnOp::Range {
                    key: PREFIX.into(),
                    options: RangeOptions::prefix(),
                }]))
                .await
                .map(|o| {
                    if o.replayed {
                        return None;
                    }
                    match o.results.as_slice() {
                        [TxnOpResult::Range(p)] => Some((p.kvs.clone(), o.revision)),
                        _ => Some((Vec::new(), o.revision)),
                    }
                }),
            1 => kv
                .txn(Txn::new().and_then((0..ACCOUNTS).map(|i| TxnOp::get(key(i)))))
                .await
                .map(|o| {
                    if o.replayed {
                        return None;
                    }
                    let mut kvs = Vec::new();
                    for r in &o.results {
                        if let TxnOpResult::Range(p) = r {
                            kvs.extend(p.kvs.iter().cloned());
                        }
                    }
                    Some((kvs, o.revision))
                }),
            _ => {
                let consistency = if rng.below(2) == 0 {
                    Consistency::Linearizable
                } else {
                    Consistency::Lease
                };
                kv.range(PREFIX, RangeOptions::prefix().with_consistency(consistency))
                    .await
                    .map(|p| Some((p.kvs, p.revision)))
            }
        };
        let o = match res {
            Ok(Some((kvs, rev))) => {
                let what = ["txn read (range op)", "txn read (get ops)", "range page"][kind];
                self.observe(what, &kvs, rev);
                self.reads.lock().unwrap()[kind] += 1;
                Outcome::Ok
            }
            Ok(None) => Outcome::Ok,
            Err(_) => Outcome::Fail,
        };
        self.counts.lock().unwrap()[o as usize] += 1;
    }

    async fn transfer(&self, ctx: &Ctx, rng: &mut Rng) {
        let kv = ctx.client.kv();
        let from = rng.below(ACCOUNTS as u64) as usize;
        let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
        // Retry on a failed compare with a fresh read, a few times.
        for _ in 0..5 {
            if ctx.stopped() {
                return;
            }
            let cur = match kv
                .get_multi(
                    vec![key(from).into(), key(to).into()],
                    Consistency::Linearizable,
                )
                .await
            {
                Ok(v) => v,
                Err(_) => {
                    self.counts.lock().unwrap()[Outcome::Fail as usize] += 1;
                    return;
                }
            };
            let (Some(a), Some(b)) = (&cur[0], &cur[1]) else {
                self.anomalies.lock().unwrap().push(format!(
                    "txn-bank: an account is missing: {}={:?} {}={:?}",
                    key(from),
                    cur[0],
                    key(to),
                    cur[1]
                ));
                return;
            };
            let (Some(va), Some(vb)) = (super::parse(&a.value), super::parse(&b.value)) else {
                self.anomalies
                    .lock()
                    .unwrap()
                    .push(format!("txn-bank: unreadable balances {a:?} {b:?}"));
                return;
            };
            let amount = rng.range(1, 100).min(va);
            let txn = Txn::new()
                .when([
                    Compare::mod_revision_is(key(from), a.mod_revision),
                    Compare::mod_revision_is(key(to), b.mod_revision),
                ])
                .and_then([
                    TxnOp::put(key(from), (va - amount).to_string()),
                    TxnOp::put(key(to), (vb + amount).to_string()),
                ]);
            let o = match kv.txn(txn).await {
                Ok(out) if out.succeeded => {
                    self.transfers.lock().unwrap()[0] += 1;
                    Outcome::Ok
                }
                Ok(_) => {
                    self.transfers.lock().unwrap()[1] += 1;
                    self.counts.lock().unwrap()[Outcome::Fail as usize] += 1;
                    continue;
                }
                Err(Error::InvalidArgument(m)) => {
                    self.anomalies
                        .lock()
                        .unwrap()
                        .push(format!("txn-bank: transfer refused as invalid: {m}"));
                    Outcome::Fail
                }
                Err(e) => write_failure(&e),
            };
            self.counts.lock().unwrap()[o as usize] += 1;
            return;
        }
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }

    /// Anomalies seen during the run plus a final read in one transaction.
    pub async fn check(&self, ctx: &Ctx) -> Vec<String> {
        let mut done = false;
        for _ in 0..20 {
            let r = ctx
                .client
                .kv()
                .txn(Txn::new().and_then([TxnOp::Range {
                    key: PREFIX.into(),
                    options: RangeOptions::prefix(),
                }]))
                .await;
            if let Ok(o) = r {
                if let [TxnOpResult::Range(p)] = o.results.as_slice() {
                    self.observe("final txn read", &p.kvs, o.revision);
                    done = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut out = self.anomalies.lock().unwrap().clone();
        if !done {
            out.push("txn-bank: final read failed".into());
        }
        if self.transfers.lock().unwrap()[0] == 0 {
            out.push("txn-bank: no transfer committed during the whole run".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(i: usize, v: &str) -> KeyValue {
        KeyValue {
            key: key(i).into_bytes().into(),
            value: v.as_bytes().to_vec().into(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            expires_at_ms: 0,
            lease: 0,
        }
    }

    #[test]
    fn a_read_must_hold_every_account_once_and_the_total() {
        let each = (TOTAL / ACCOUNTS as u64).to_string();
        let good: Vec<KeyValue> = (0..ACCOUNTS).map(|i| kv(i, &each)).collect();
        assert!(check_read(&good).is_ok());
        let mut torn = good.clone();
        torn[0] = kv(0, "0"); // money left account 0 but did not arrive
        assert!(check_read(&torn).unwrap_err().contains("total"));
        assert!(check_read(&good[1..])
            .unwrap_err()
            .contains("accounts present"));
        let mut twice = good.clone();
        twice[1] = kv(0, &each);
        assert!(check_read(&twice).unwrap_err().contains("twice"));
    }
}
