//! *set*: clients add unique elements (one key each under `set/`); at the
//! end one linearizable scan must hold every acknowledged add, and nothing
//! that was never attempted.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_client::Consistency;

use super::{write_failure, Counts, Ctx};
use crate::fault::history::Outcome;

#[derive(Default)]
pub struct SetWorkload {
    acked: Mutex<BTreeSet<String>>,
    attempted: Mutex<BTreeSet<String>>,
    counts: Mutex<Counts>,
}

impl SetWorkload {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn spawn(self: &Arc<Self>, ctx: &Ctx, clients: usize) -> Vec<tokio::task::JoinHandle<()>> {
        (0..clients)
            .map(|c| {
                let me = self.clone();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    while !ctx.stopped() {
                        let key = format!("set/{c}-{:08}", ctx.next_value());
                        me.attempted.lock().unwrap().insert(key.clone());
                        let o = match ctx.client.kv().put(&key, "1").await {
                            Ok(_) => {
                                me.acked.lock().unwrap().insert(key);
                                Outcome::Ok
                            }
                            Err(e) => write_failure(&e),
                        };
                        me.counts.lock().unwrap()[o as usize] += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect()
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }

    /// The final read (retried until it succeeds or `ctx` time runs out).
    pub async fn check(&self, ctx: &Ctx) -> Vec<String> {
        // One page holds every element (the server maximum is 10,000).
        let mut present = BTreeSet::new();
        let mut last_err = None;
        for _ in 0..20 {
            match ctx
                .client
                .kv()
                .scan_prefix_page("set/", 0, Consistency::Linearizable)
                .await
            {
                Ok(p) if !p.more => {
                    present = p
                        .kvs
                        .iter()
                        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                        .collect();
                    last_err = None;
                    break;
                }
                Ok(_) => last_err = Some("more elements than one scan page".to_string()),
                Err(e) => last_err = Some(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some(e) = last_err {
            return vec![format!("set: final read failed: {e}")];
        }
        let acked = self.acked.lock().unwrap();
        let attempted = self.attempted.lock().unwrap();
        let mut out = Vec::new();
        let lost: Vec<&String> = acked.difference(&present).collect();
        if !lost.is_empty() {
            out.push(format!(
                "set: {} acknowledged adds missing from the final read (of {} acknowledged), e.g. {:?}",
                lost.len(),
                acked.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        let phantom: Vec<&String> = present.difference(&attempted).collect();
        if !phantom.is_empty() {
            out.push(format!(
                "set: elements nobody added: {:?}",
                &phantom[..phantom.len().min(10)]
            ));
        }
        out
    }
}
