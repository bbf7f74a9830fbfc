//! A replicated application state machine: named counters and a job queue,
//! run by d-engine as a 3-process cluster (each process embeds one node).
//!
//! The application is the `Jobs` type: its commands, a deterministic
//! `apply`, a snapshot image and its reader, and queries. d-engine orders,
//! batches and deduplicates the commands, takes and transfers snapshots,
//! compacts the log and restarts from snapshot + log.
//!
//! Run: `cargo run -p d-engine --example app_jobs -- <config.toml> <app addr>`
//! for each node (config as for `embedded_node`, e.g.
//! `examples/cluster/embedded.sh`'s files). The process answers one line per
//! request on `<app addr>` (TCP):
//!
//! ```text
//! P incr <name> <n> | P push <job> | P pop   -> OK <output> | ERR <error>
//! W <client id> <seq> <command>              -> as P, under that write id (a retry
//!                                               with the same id applies once)
//! Q <e|s|l> dump | Q <e|s|l> counter <name>  -> OK <answer>  (eventual, linearizable, lease)
//! S                                          -> OK role=.. leader=.. applied=.. snapshot=..
//! ```
//!
//! Proposals work on any node: a follower forwards them to the leader.
//! The snapshot image is streamed (one line per counter and job), never
//! rendered whole, and the state is shared copy-on-write with it.
//! `tests/tests/cluster_app.rs` runs this file as a 3-process cluster.

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader as StdBufReader, Read, Write};
use std::sync::Arc;
use std::time::Duration;

use d_engine::app::{
    AppEngine, AppError, Application, Applying, Codec, Consistency, SnapshotImage, WriteId,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A command, carried in the log as one line of text.
#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    Incr(String, u64),
    Push(String),
    Pop,
}

impl Codec for Cmd {
    fn encode(&self) -> Vec<u8> {
        match self {
            Cmd::Incr(name, n) => format!("incr {name} {n}"),
            Cmd::Push(job) => format!("push {job}"),
            Cmd::Pop => "pop".to_string(),
        }
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Result<Self, AppError> {
        let text = std::str::from_utf8(bytes).map_err(|e| AppError::new(e.to_string()))?;
        let parts: Vec<&str> = text.split_whitespace().collect();
        match parts.as_slice() {
            ["incr", name, n] => n
                .parse()
                .map(|n| Cmd::Incr(name.to_string(), n))
                .map_err(|e| AppError::new(format!("incr: count {n:?}: {e}"))),
            ["push", job] => Ok(Cmd::Push(job.to_string())),
            ["pop"] => Ok(Cmd::Pop),
            _ => Err(AppError::new(format!(
                "unknown command {text:?} (incr <name> <n> | push <job> | pop)"
            ))),
        }
    }
}

/// The replicated state. Ordered maps only: iteration order is part of
/// the snapshot and the dump, and must be the same on every replica.
/// The collections sit behind `Arc`s: a snapshot shares them (O(1) on the
/// apply thread) and an apply copies one only while a snapshot still holds
/// it (`Arc::make_mut`). A large state would use a persistent structure.
#[derive(Default, Clone)]
pub struct Jobs {
    counters: Arc<BTreeMap<String, u64>>,
    queue: Arc<VecDeque<String>>,
    popped: u64,
}

/// The snapshot image: the shared state, written out line by line
/// (`c <name> <value>`, `j <job>`, `p <popped>`) straight into the file.
struct JobsImage(Jobs);

impl SnapshotImage for JobsImage {
    fn write_to(self: Box<Self>, out: &mut dyn Write) -> std::io::Result<()> {
        for (name, v) in self.0.counters.iter() {
            writeln!(out, "c {name} {v}")?;
        }
        for job in self.0.queue.iter() {
            writeln!(out, "j {job}")?;
        }
        writeln!(out, "p {}", self.0.popped)
    }
}

impl Jobs {
    fn dump(&self) -> String {
        let c: Vec<String> = self
            .counters
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        let q: Vec<&str> = self.queue.iter().map(String::as_str).collect();
        format!(
            "counters={} queue={} popped={}",
            c.join(","),
            q.join("|"),
            self.popped
        )
    }
}

impl Application for Jobs {
    type Command = Cmd;
    /// `incr`: the new value; `push`: the queue length; `pop`: the job or "".
    type Output = String;
    /// `dump` or `counter <name>`.
    type Query = String;
    type QueryOutput = String;

    fn apply(&mut self, batch: Vec<Applying<Cmd>>) -> Result<Vec<String>, AppError> {
        let mut out = Vec::with_capacity(batch.len());
        for a in batch {
            out.push(match a.command {
                Cmd::Incr(name, n) => {
                    let v = Arc::make_mut(&mut self.counters).entry(name).or_default();
                    *v = v.saturating_add(n);
                    v.to_string()
                }
                Cmd::Push(job) => {
                    Arc::make_mut(&mut self.queue).push_back(job);
                    self.queue.len().to_string()
                }
                Cmd::Pop => match Arc::make_mut(&mut self.queue).pop_front() {
                    Some(job) => {
                        self.popped += 1;
                        job
                    }
                    None => String::new(),
                },
            });
        }
        Ok(out)
    }

    fn query(&self, q: &String) -> String {
        match q.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["dump"] => self.dump(),
            ["counter", name] => self.counters.get(*name).copied().unwrap_or(0).to_string(),
            _ => format!("unknown query {q:?} (dump | counter <name>)"),
        }
    }

    /// Shares the state with the image (see [`Jobs`]); nothing is copied
    /// or rendered on the apply thread.
    fn snapshot(&self) -> Box<dyn SnapshotImage> {
        Box::new(JobsImage(self.clone()))
    }

    /// Reads the image line by line as it streams from the file.
    fn restore(&mut self, image: &mut dyn Read) -> Result<(), AppError> {
        let (mut counters, mut queue, mut popped) = (BTreeMap::new(), VecDeque::new(), None);
        for (n, line) in StdBufReader::new(image).lines().enumerate() {
            let line = line.map_err(|e| AppError::new(format!("image line {}: {e}", n + 1)))?;
            let bad = || AppError::new(format!("image line {}: {line:?}", n + 1));
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["c", name, v] => {
                    counters.insert(name.to_string(), v.parse().map_err(|_| bad())?);
                }
                ["j", job] => queue.push_back(job.to_string()),
                ["p", p] if popped.is_none() => popped = Some(p.parse().map_err(|_| bad())?),
                _ => return Err(bad()),
            }
        }
        self.popped = popped.ok_or_else(|| AppError::new("image: no popped count (p line)"))?;
        self.counters = Arc::new(counters);
        self.queue = Arc::new(queue);
        Ok(())
    }

    fn data_bytes(&self) -> u64 {
        self.dump().len() as u64
    }
}

async fn answer(engine: &AppEngine<Jobs>, line: &str) -> String {
    let result = match line.split_once(' ').unwrap_or((line, "")) {
        ("P", cmd) => match Cmd::decode(cmd.as_bytes()) {
            Ok(cmd) => engine.propose(cmd).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        ("W", rest) => {
            let mut parts = rest.splitn(3, ' ');
            let mut num = || parts.next().and_then(|p| p.parse::<u64>().ok());
            match (
                num(),
                num(),
                parts.next().map(|c| Cmd::decode(c.as_bytes())),
            ) {
                (Some(client_id), Some(seq), Some(Ok(cmd))) => {
                    let id = WriteId {
                        client_id,
                        seq,
                        user: String::new(),
                    };
                    engine
                        .propose_with_id(&cmd, &id)
                        .await
                        .map_err(|e| e.to_string())
                }
                (_, _, Some(Err(e))) => Err(e.to_string()),
                _ => Err("usage: W <client id> <seq> <command>".to_string()),
            }
        }
        ("Q", rest) => {
            let (c, q) = rest.split_once(' ').unwrap_or((rest, ""));
            let c = match c {
                "l" => Consistency::Linearizable,
                "s" => Consistency::Lease,
                _ => Consistency::Eventual,
            };
            engine
                .query(&q.to_string(), c)
                .await
                .map_err(|e| e.to_string())
        }
        ("S", _) => {
            let s = engine.engine().status();
            Ok(format!(
                "role={:?} leader={} applied={} snapshot={}",
                s.role, s.leader_id, s.applied_index, s.snapshot_index
            ))
        }
        _ => Err(format!("unknown request {line:?} (P | Q | S)")),
    };
    match result {
        Ok(v) => format!("OK {v}\n"),
        Err(e) => format!("ERR {}\n", e.replace('\n', " ")),
    }
}

/// `pub`: `tests/src/bin/app_jobs.rs` runs this file as a binary.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: app_jobs <config.toml> <app addr, e.g. 127.0.0.1:7001>";
    let config = args.next().ok_or(usage)?;
    let app_addr = args.next().ok_or(usage)?;
    let engine = std::sync::Arc::new(AppEngine::start_with(&config, Jobs::default).await?);
    let listener = TcpListener::bind(&app_addr).await?;
    println!("READY {} {app_addr}", engine.engine().node_id());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            conn = listener.accept() => {
                let (sock, _) = conn?;
                let engine = engine.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        let reply = tokio::time::timeout(
                            Duration::from_secs(10),
                            answer(&engine, line.trim()),
                        )
                        .await
                        .unwrap_or_else(|_| "ERR timeout\n".to_string());
                        if w.write_all(reply.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
            _ = term.recv() => break,
        }
    }
    engine.stop().await?;
    Ok(())
}
