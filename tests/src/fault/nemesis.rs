//! The nemesis: injects one fault at a time into a running cluster, holds
//! it, heals it, and waits for the cluster to recover (an agreed leader and
//! every node caught up) before the next one.
//!
//! Choices (which node, how long, how much delay) come from a seeded RNG,
//! so a seed reproduces the schedule (timing on a loaded machine may still
//! differ).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use d_engine_client::{Error, MemberRole};

use super::disk::{wipe_dir, Tmpfs};
use super::proxy::{LinkProxy, Mode};
use crate::cluster::Cluster;
use crate::sim::rng::Rng;

/// Every kind of fault the nemesis can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Cut every link of the leader, both ways.
    IsolateLeader,
    /// Cut every link of a follower, both ways.
    IsolateFollower,
    /// The leader's messages to one follower are lost; the reverse works.
    OneWayLoss,
    /// Added latency on every link of one node.
    Delay,
    /// A random minority cut off from the majority.
    Partition,
    /// A node is killed and restarts behind links that refuse new
    /// connections to it (it can dial out, nobody can dial in).
    Refuse,
    /// SIGKILL then restart (leader half of the time).
    Kill,
    /// SIGSTOP then SIGCONT (leader half of the time).
    Pause,
    /// The leader's disk fills up; then space returns.
    DiskFull,
    /// Remove a follower, wipe it, re-add it as a learner, promote it.
    Membership,
    /// Transfer leadership to a follower.
    TransferLeader,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::IsolateLeader,
        Fault::IsolateFollower,
        Fault::OneWayLoss,
        Fault::Delay,
        Fault::Partition,
        Fault::Refuse,
        Fault::Kill,
        Fault::Pause,
        Fault::DiskFull,
        Fault::Membership,
        Fault::TransferLeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::IsolateLeader => "isolate-leader",
            Fault::IsolateFollower => "isolate-follower",
            Fault::OneWayLoss => "one-way-loss",
            Fault::Delay => "delay",
            Fault::Partition => "partition",
            Fault::Refuse => "refuse-connections",
            Fault::Kill => "sigkill-restart",
            Fault::Pause => "sigstop-sigcont",
            Fault::DiskFull => "disk-full",
            Fault::Membership => "membership-change",
            Fault::TransferLeader => "leader-transfer",
        }
    }
}

/// How long recovery may take after a fault is healed.
const RECOVERY: Duration = Duration::from_secs(40);

pub struct Nemesis {
    pub cluster: Cluster,
    pub links: BTreeMap<(u64, u64), LinkProxy>,
    pub disks: BTreeMap<u64, Tmpfs>,
    pub client: d_engine_client::Client,
    rng: Rng,
}

impl Nemesis {
    pub fn new(
        cluster: Cluster,
        links: BTreeMap<(u64, u64), LinkProxy>,
        disks: BTreeMap<u64, Tmpfs>,
        client: d_engine_client::Client,
        seed: u64,
    ) -> Self {
        Nemesis {
            cluster,
            links,
            disks,
            client,
            rng: Rng::new(seed ^ 0x4E4D),
        }
    }

    fn set_links(&self, pred: impl Fn(u64, u64) -> bool, mode: Mode) {
        for ((a, b), p) in &self.links {
            if pred(*a, *b) {
                p.set(mode);
            }
        }
    }

    fn hold(&mut self) -> Duration {
        Duration::from_millis(self.rng.range(1500, 3000))
    }

    async fn leader(&mut self) -> Result<u64, String> {
        self.cluster.wait_leader(Duration::from_secs(30)).await
    }

    fn follower_of(&mut self, leader: u64) -> u64 {
        let ids: Vec<u64> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|i| *i != leader)
            .collect();
        *self.rng.pick(&ids).expect("a follower")
    }

    async fn target(&mut self) -> Result<u64, String> {
        let l = self.leader().await?;
        Ok(if self.rng.below(2) == 0 {
            l
        } else {
            self.follower_of(l)
        })
    }

    /// Injects `fault`, holds and heals it. Ok: a description for the
    /// timeline. Err: an anomaly (the system broke a promise).
    pub async fn inject(&mut self, fault: Fault) -> Result<String, String> {
        match fault {
            Fault::IsolateLeader | Fault::IsolateFollower => {
                let l = self.leader().await?;
                let x = if fault == Fault::IsolateLeader {
                    l
                } else {
                    self.follower_of(l)
                };
                self.set_links(|a, b| a == x || b == x, Mode::Cut);
                let d = self.hold();
                tokio::time::sleep(d).await;
                Ok(format!("isolated node {x} (leader {l}) for {d:?}"))
            }
            Fault::OneWayLoss => {
                let l = self.leader().await?;
                let f = self.follower_of(l);
                self.set_links(
                    |a, b| a == l && b == f,
                    Mode::Drop {
                        forward: true,
                        backward: false,
                    },
                );
                let d = self.hold();
                tokio::time::sleep(d).await;
                Ok(format!(
                    "leader {l} -> follower {f} messages dropped for {d:?}"
                ))
            }
            Fault::Delay => {
                let x = self.target().await?;
                let ms = self.rng.range(20, 150);
                self.set_links(
                    |a, b| a == x || b == x,
                    Mode::Delay(Duration::from_millis(ms)),
                );
                let d = self.hold();
                tokio::time::sleep(d).await;
                Ok(format!("{ms} ms delay on every link of node {x} for {d:?}"))
            }
            Fault::Partition => {
                let mut ids = self.cluster.ids();
                let k = 1 + self.rng.below((ids.len() as u64 - 1) / 2) as usize;
                let mut minority = Vec::new();
                for _ in 0..k {
                    let i = self.rng.below(ids.len() as u64) as usize;
                    minority.push(ids.remove(i));
                }
                let m = minority.clone();
                self.set_links(move |a, b| m.contains(&a) != m.contains(&b), Mode::Cut);
                let d = self.hold();
                tokio::time::sleep(d).await;
                Ok(format!("partition {minority:?} | {ids:?} for {d:?}"))
            }
            Fault::Refuse => {
                let x = self.target().await?;
                self.set_links(|_, b| b == x, Mode::Refuse);
                self.cluster.kill(x);
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.cluster.restart(x);
                let d = self.hold();
                tokio::time::sleep(d).await;
                Ok(format!(
                    "node {x} restarted behind refused inbound links for {d:?}"
                ))
            }
            Fault::Kill => {
                let x = self.target().await?;
                self.cluster.kill(x);
                let d = self.hold();
                tokio::time::sleep(d).await;
                self.cluster.restart(x);
                Ok(format!("SIGKILL node {x}, restarted after {d:?}"))
            }
            Fault::Pause => {
                let x = self.target().await?;
                self.cluster.pause(x);
                let d = self.hold();
                tokio::time::sleep(d).await;
                self.cluster.resume(x);
                Ok(format!("SIGSTOP node {x}, SIGCONT after {d:?}"))
            }
            Fault::DiskFull => self.disk_full().await,
            Fault::Membership => self.membership().await,
            Fault::TransferLeader => {
                let l = self.leader().await?;
                let t = self.follower_of(l);
                let res = self.client.admin().transfer_leader(t).await;
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut now_leader = None;
                while Instant::now() < deadline {
                    if let Some(x) = self.cluster.agreed_leader().await {
                        if x != l {
                            now_leader = Some(x);
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(format!(
                    "transfer leader {l} -> {t}: {res:?}; leader now {now_leader:?}",
                    res = res.map(|_| ())
                ))
            }
        }
    }

    /// Fills the leader's disk and writes until it refuses; frees the space
    /// and restarts it if it stopped.
    async fn disk_full(&mut self) -> Result<String, String> {
        let x = self.leader().await?;
        let Some(disk) = self.disks.get(&x) else {
            return Ok(format!("SKIPPED: no tmpfs under node {x}'s data dir"));
        };
        let ballast = disk
            .fill()
            .map_err(|e| format!("disk-full: cannot fill: {e}"))?;
        let kv = self.client.kv();
        let value = vec![b'x'; 32 << 10];
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = None;
        let mut writes = 0;
        while Instant::now() < deadline {
            if !self.cluster.node(x).is_running() {
                seen = Some(format!(
                    "process exited ({:?})",
                    self.cluster.node(x).exit_status()
                ));
                break;
            }
            match kv.put(format!("disk/{writes}"), &value).await {
                Ok(_) => writes += 1,
                Err(e @ Error::Storage(_)) => {
                    seen = Some(format!("client got {e}"));
                    break;
                }
                Err(_) => {}
            }
        }
        let Some(seen) = seen else {
            self.disks[&x].free();
            return Err(format!(
                "disk-full: node {x}'s disk was full ({ballast} bytes ballast) but {writes} writes of 32 KiB went on without a storage error"
            ));
        };
        // A node whose storage failed must stop and its process exit (code
        // 1), so a supervisor restarts it; it stops after syncing what it
        // can, which on a full disk may take a moment.
        let exit_deadline = Instant::now() + Duration::from_secs(10);
        while self.cluster.node(x).is_running() && Instant::now() < exit_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Stacks are taken before space is freed, while a hang still holds.
        let hung_stacks = self.cluster.node(x).is_running().then(|| {
            self.cluster
                .node(x)
                .pid()
                .map(thread_stacks)
                .unwrap_or_default()
        });
        self.disks[&x].free();
        if let Some(stacks) = hung_stacks {
            return Err(format!(
                "disk-full: node {x} reported a storage failure ({seen}) but its process was still running 10 s later\n{stacks}"
            ));
        }
        let exit = self.cluster.node(x).exit_status();
        if exit.and_then(|s| s.code()) != Some(1) {
            return Err(format!(
                "disk-full: node {x} exited with {exit:?} after a storage failure, expected exit code 1"
            ));
        }
        let log = self.cluster.node(x).log();
        let log_says = log.lines().rev().take(200).any(|l| {
            l.contains("No space left") || l.contains("WAL failed") || l.contains("storage")
        });
        if !log_says {
            return Err(format!(
                "disk-full: node {x} stopped ({seen}) but its log names no storage error"
            ));
        }
        // A node that stopped after a storage failure may still be exiting:
        // make sure the old incarnation is gone, then start it again.
        self.cluster.kill(x);
        self.cluster.restart(x);
        Ok(format!(
            "node {x} (leader) disk full after {writes} writes: {seen}{}; space freed, restarted",
            if seen.starts_with("process exited") {
                ""
            } else {
                "; process exited with code 1"
            }
        ))
    }

    /// Remove a follower, wipe it, re-add it as a learner and promote it.
    async fn membership(&mut self) -> Result<String, String> {
        let l = self.leader().await?;
        let f = self.follower_of(l);
        let admin = self.client.admin();
        let cluster = self.client.cluster();
        let is_member = |ms: &[d_engine_client::MemberInfo], role: Option<MemberRole>| {
            ms.iter()
                .any(|m| m.id == f && role.is_none_or(|r| m.role == r))
        };
        retry_change(
            || admin.remove_member(f),
            || async {
                cluster
                    .members()
                    .await
                    .map(|ms| !is_member(&ms, None))
                    .unwrap_or(false)
            },
        )
        .await
        .map_err(|e| format!("membership: remove {f}: {e}"))?;
        self.cluster.kill(f);
        let dir = self.cluster.data_dir(f);
        wipe_dir(&dir);
        let node = self.cluster.node(f);
        if !node.spec.args.iter().any(|a| a == "--join") {
            node.spec.args.push("--join".into());
        }
        self.cluster.restart(f);
        self.cluster
            .wait_serving(f, Duration::from_secs(20))
            .await?;
        let (peer, client) = (self.cluster.peer_addr(f), self.cluster.client_addr(f));
        retry_change(
            || admin.add_learner(f, peer.clone(), client.clone()),
            || async {
                cluster
                    .members()
                    .await
                    .map(|ms| is_member(&ms, None))
                    .unwrap_or(false)
            },
        )
        .await
        .map_err(|e| format!("membership: add learner {f}: {e}"))?;
        let leader = self.leader().await?;
        let commit = self.cluster.status(leader).await?.commit_index;
        self.cluster
            .wait_applied(f, commit, Duration::from_secs(30))
            .await?;
        retry_change(
            || admin.promote(f),
            || async {
                cluster
                    .members()
                    .await
                    .map(|ms| is_member(&ms, Some(MemberRole::Voter)))
                    .unwrap_or(false)
            },
        )
        .await
        .map_err(|e| format!("membership: promote {f}: {e}"))?;
        Ok(format!(
            "removed follower {f}, wiped it, re-added as learner, promoted"
        ))
    }

    /// Heals every link, resumes and restarts what is down, then waits for
    /// an agreed leader and every node to apply the leader's commit index.
    pub async fn recover(&mut self) -> Result<Duration, String> {
        let t = Instant::now();
        self.set_links(|_, _| true, Mode::Pass);
        for id in self.cluster.ids() {
            if self.cluster.node(id).is_paused() {
                self.cluster.resume(id);
            }
            if let Some(st) = self.cluster.node(id).crashed() {
                return Err(format!(
                    "node {id} exited on its own ({st}); log tail:\n{}",
                    self.cluster.node(id).log_tail(30)
                ));
            }
            if !self.cluster.node(id).is_running() {
                self.cluster.restart(id);
            }
        }
        let leader = self
            .cluster
            .wait_leader(RECOVERY)
            .await
            .map_err(|e| format!("no recovery after healing: {e}"))?;
        let commit = self.cluster.status(leader).await?.commit_index;
        for id in self.cluster.ids() {
            self.cluster
                .wait_applied(id, commit, RECOVERY)
                .await
                .map_err(|e| format!("no recovery after healing: {e}"))?;
        }
        Ok(t.elapsed())
    }
}

/// Runs an admin change, retrying while another change settles or the
/// answer was lost; `done` tells whether it took effect anyway.
async fn retry_change<T, F, Fut, D, DFut>(mut change: F, done: D) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
    D: Fn() -> DFut,
    DFut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let res = change().await;
        if res.is_ok() || done().await {
            return Ok(());
        }
        let e = res.err().map(|e| e.to_string()).unwrap_or_default();
        if Instant::now() > deadline {
            return Err(e);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every thread's stack of a live process (`gdb -batch`), for diagnosing a
/// hang; empty when gdb is not installed.
fn thread_stacks(pid: u32) -> String {
    let out = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt 40",
        ])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("Thread") || l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => String::new(),
    }
}
