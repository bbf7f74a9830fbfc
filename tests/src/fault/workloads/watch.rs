//! *watch*: a writer puts unique values under `w/` while watchers follow
//! the prefix. Each watch instance must see every committed change in its
//! range exactly once, in revision order, with the committed value — or
//! end with a cancellation carrying a reason (then a new instance starts,
//! and the cancelled one is checked up to its last event).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{write_failure, Counts, Ctx};
use crate::fault::history::Outcome;

const KEYS: u64 = 4;

#[derive(Default, Debug)]
struct Instance {
    start: u64,
    /// (revision, key, value)
    events: Vec<(u64, String, String)>,
    cancelled: Option<String>,
}

#[derive(Default)]
pub struct WatchWorkload {
    acked: Mutex<BTreeMap<u64, (String, String)>>,
    attempted: Mutex<BTreeSet<(String, String)>>,
    instances: Mutex<Vec<Instance>>,
    counts: Mutex<Counts>,
    done: AtomicBool,
}

impl WatchWorkload {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    pub fn spawn(self: &Arc<Self>, ctx: &Ctx, watchers: usize) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for w in 0..watchers {
            let me = self.clone();
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move { me.watcher(&ctx, w).await }));
        }
        let me = self.clone();
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            while !ctx.stopped() {
                let v = ctx.next_value();
                let key = format!("w/{}", v % KEYS);
                let value = v.to_string();
                me.attempted
                    .lock()
                    .unwrap()
                    .insert((key.clone(), value.clone()));
                let o = match ctx.client.kv().put(&key, &value).await {
                    Ok(rev) => {
                        me.acked.lock().unwrap().insert(rev, (key, value));
                        Outcome::Ok
                    }
                    Err(e) => write_failure(&e),
                };
                me.counts.lock().unwrap()[o as usize] += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }));
        tasks
    }

    /// One watcher: instances one after another until the check is done.
    async fn watcher(&self, ctx: &Ctx, w: usize) {
        // The first instance replays from revision 1; later ones start now.
        let mut start = if w == 0 { 1 } else { 0 };
        while !self.done.load(Ordering::Relaxed) {
            let from = start;
            start = 0;
            let idx = {
                let mut all = self.instances.lock().unwrap();
                all.push(Instance {
                    start: from,
                    ..Default::default()
                });
                all.len() - 1
            };
            let mut stream = match ctx.client.kv().watch_prefix("w/", from).await {
                Ok(s) => s,
                Err(e) => {
                    self.instances.lock().unwrap()[idx].cancelled =
                        Some(format!("open failed: {e}"));
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            };
            loop {
                if self.done.load(Ordering::Relaxed) {
                    return;
                }
                match tokio::time::timeout(Duration::from_millis(200), stream.recv()).await {
                    Err(_) => continue,
                    Ok(Some(Ok(ev))) => {
                        self.instances.lock().unwrap()[idx].events.push((
                            ev.kv.mod_revision,
                            String::from_utf8_lossy(&ev.kv.key).into_owned(),
                            String::from_utf8_lossy(&ev.kv.value).into_owned(),
                        ));
                    }
                    Ok(Some(Err(e))) => {
                        self.instances.lock().unwrap()[idx].cancelled = Some(e.to_string());
                        break;
                    }
                    Ok(None) => {
                        self.instances.lock().unwrap()[idx].cancelled =
                            Some("stream ended without a reason".into());
                        break;
                    }
                }
            }
        }
    }

    pub fn counts(&self) -> Counts {
        *self.counts.lock().unwrap()
    }

    /// Distinct cancellation reasons (first `n`).
    pub fn cancel_reasons(&self, n: usize) -> Vec<String> {
        let all = self.instances.lock().unwrap();
        let set: BTreeSet<&String> = all.iter().filter_map(|i| i.cancelled.as_ref()).collect();
        set.into_iter().take(n).cloned().collect()
    }

    /// (events delivered, instances, cancellations)
    pub fn stats(&self) -> (u64, usize, usize) {
        let all = self.instances.lock().unwrap();
        (
            all.iter().map(|i| i.events.len() as u64).sum(),
            all.len(),
            all.iter().filter(|i| i.cancelled.is_some()).count(),
        )
    }

    /// Waits (up to `drain`) for live watchers to catch up with the last
    /// acknowledged write, then checks every instance.
    pub async fn check(&self, drain: Duration) -> Vec<String> {
        let max_acked = self
            .acked
            .lock()
            .unwrap()
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0);
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline {
            let caught_up = self.instances.lock().unwrap().iter().all(|i| {
                i.cancelled.is_some() || i.events.last().is_some_and(|e| e.0 >= max_acked)
            });
            if caught_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.done.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let acked = self.acked.lock().unwrap();
        let attempted = self.attempted.lock().unwrap();
        let mut out = Vec::new();
        for (n, inst) in self.instances.lock().unwrap().iter().enumerate() {
            let mut last = 0;
            for (rev, key, value) in &inst.events {
                if *rev <= last {
                    out.push(format!("watch instance {n}: revision {rev} delivered after {last} (duplicate or out of order)"));
                }
                last = last.max(*rev);
                match acked.get(rev) {
                    Some((k, v)) if k != key || v != value => out.push(format!(
                        "watch instance {n}: revision {rev} delivered as {key}={value} but committed as {k}={v}"
                    )),
                    Some(_) => {}
                    None if !attempted.contains(&(key.clone(), value.clone())) => {
                        out.push(format!("watch instance {n}: event {key}={value} at {rev} was never written"))
                    }
                    None => {}
                }
            }
            let lo = if inst.start > 0 {
                inst.start
            } else {
                inst.events.first().map_or(u64::MAX, |e| e.0)
            };
            let hi = if inst.cancelled.is_some() {
                last
            } else {
                max_acked
            };
            let seen: BTreeSet<u64> = inst.events.iter().map(|e| e.0).collect();
            let missing: Vec<u64> = acked
                .range(lo..=hi.max(lo))
                .map(|(r, _)| *r)
                .filter(|r| !seen.contains(r) && lo <= hi)
                .collect();
            if !missing.is_empty() {
                // Was the same write delivered under another revision?
                let elsewhere: Vec<String> = missing
                    .iter()
                    .take(5)
                    .map(|r| {
                        let (k, v) = &acked[r];
                        let at: Vec<u64> = inst
                            .events
                            .iter()
                            .filter(|e| &e.1 == k && &e.2 == v)
                            .map(|e| e.0)
                            .collect();
                        format!("{r}: {k}={v} acknowledged at {r}, delivered at {at:?}")
                    })
                    .collect();
                out.push(format!(
                    "watch instance {n} ({}): {} committed changes in [{lo}, {hi}] never delivered: {}",
                    inst.cancelled.as_deref().unwrap_or("live"),
                    missing.len(),
                    elsewhere.join("; ")
                ));
            }
        }
        out
    }
}
