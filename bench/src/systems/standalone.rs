//! d-engine standalone: `d-engine-server` processes this tool starts on free
//! 127.0.0.1 ports with temporary data dirs, driven through the Rust gRPC
//! client (`d_engine_client::Client`), one client per connection.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use d_engine_client::{Client, ClientBuilder, GrpcKv};

use super::procs::{free_port, Proc};
use d_engine_proto::v1 as pb;
use tokio::sync::mpsc;

use super::{
    dengine_consistency, dengine_error, page_options, page_reply, transfer_reply, transfer_txn,
};
use crate::cli::SmBackend;
use crate::memory::Holder;
use crate::workload::{
    Consistency, Driver, LeaseRenewer, OpError, OpFuture, OpKind, PageReply, TxnReply,
};

pub struct StandaloneCluster {
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
    clients: Vec<Client>,
    kvs: Vec<GrpcKv>,
    /// Client endpoints, in node order.
    endpoints: Vec<String>,
    /// From spawning the first server to the first acknowledged write
    /// (polled every 100 ms).
    pub ready_in: Duration,
}

/// Where the server binary is: `--server-bin`, else next to this tool, else
/// `target/release/d-engine-server`.
pub fn find_server(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--server-bin {} does not exist", p.display());
    }
    let mut candidates = Vec::new();
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            candidates.push(dir.join("d-engine-server"));
        }
    }
    candidates.push(PathBuf::from("target/release/d-engine-server"));
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "d-engine-server not found (looked at {:?}); build it with `cargo build --release -p d-engine-server` or pass --server-bin",
        candidates
    )
}

/// The name of node `id`'s server process (logs, errors).
fn node_proc_name(id: usize) -> String {
    format!("d-engine-server node {id}")
}

/// The TOML configuration of node `id` of the cluster.
pub fn node_config(id: usize, data_dir: &Path, nodes: &[(u16, u16)], sm: SmBackend) -> String {
    let (peer, client) = nodes[id - 1];
    let mut s = format!(
        "node_id = {id}\ncluster_id = \"bench\"\ndata_dir = \"{}\"\npeer_addr = \"127.0.0.1:{peer}\"\nclient_addr = \"127.0.0.1:{client}\"\n\n[state_machine]\nbackend = \"{}\"\n",
        data_dir.display(),
        sm.toml_name()
    );
    if let Some(n) = super::node_tuning().read_rounds {
        s += &format!("\n[raft]\nmax_read_rounds_in_flight = {n}\n");
    }
    if nodes.len() > 1 {
        for (i, (p, c)) in nodes.iter().enumerate() {
            s += &format!(
                "\n[[members]]\nid = {}\npeer_addr = \"127.0.0.1:{p}\"\nclient_addr = \"127.0.0.1:{c}\"\n",
                i + 1
            );
        }
    }
    s
}

impl StandaloneCluster {
    pub async fn start(
        server: &Path,
        nodes: usize,
        connections: usize,
        base: &Path,
        request_timeout: Duration,
        sm: SmBackend,
    ) -> Result<Self> {
        std::fs::create_dir_all(base)?;
        let dir = tempfile::Builder::new()
            .prefix("standalone-")
            .tempdir_in(base)?;
        let t0 = Instant::now();
        let mut ports = Vec::new();
        for _ in 0..nodes {
            ports.push((free_port()?, free_port()?));
        }
        let mut procs = Vec::new();
        for id in 1..=nodes {
            let data = dir.path().join(format!("node{id}"));
            let cfg = dir.path().join(format!("node{id}.toml"));
            std::fs::write(&cfg, node_config(id, &data, &ports, sm))?;
            let log = dir.path().join(format!("node{id}.log"));
            procs.push(Proc::spawn(
                &node_proc_name(id),
                server,
                &["--config".into(), cfg.display().to_string()],
                &log,
            )?);
        }
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("http://127.0.0.1:{c}"))
            .collect();
        let mut cluster = StandaloneCluster {
            procs,
            _dir: dir,
            clients: Vec::new(),
            kvs: Vec::new(),
            endpoints: endpoints.clone(),
            ready_in: Duration::ZERO,
        };
        cluster
            .wait_ready(&endpoints, Duration::from_secs(30))
            .await?;
        cluster.ready_in = t0.elapsed();
        for i in 0..connections.max(1) {
            let c = ClientBuilder::new(endpoints.clone())
                .request_timeout(request_timeout)
                .build()
                .await
                .with_context(|| format!("connecting client {i}"))?;
            cluster.kvs.push(c.kv());
            cluster.clients.push(c);
        }
        Ok(cluster)
    }

    async fn wait_ready(&mut self, endpoints: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for p in &mut self.procs {
                p.check_alive()?;
            }
            let attempt = async {
                let c = ClientBuilder::new(endpoints.to_vec())
                    .request_timeout(Duration::from_secs(2))
                    .build()
                    .await?;
                c.kv().put(b"bench-ready", b"1").await
            };
            let last = match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no reply within 3 s".to_string(),
            };
            if Instant::now() >= deadline {
                bail!(
                    "standalone cluster not serving writes within {timeout:?} (last error: {last}); log of node 1:\n{}",
                    self.procs[0].log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The server processes, in node order (see [`Holder`]).
    /// Fails if one has already been reaped.
    pub fn holder(&self) -> Result<Holder> {
        Holder::servers("d-engine-server", &self.procs)
    }

    /// The client endpoints (`http://127.0.0.1:port`), in node order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Client `i` of the `connections` the cluster was started with.
    pub fn client(&self, i: usize) -> &Client {
        &self.clients[i]
    }

    /// SIGKILLs the server of node `index` (0-based, node order) and reaps
    /// it; the cluster keeps running without it.
    pub async fn kill_node(&mut self, index: usize) -> Result<()> {
        let name = node_proc_name(index + 1);
        let Some(p) = self.procs.iter().position(|p| p.name == name) else {
            bail!("node {} is not running", index + 1);
        };
        self.procs.remove(p).stop().await;
        Ok(())
    }

    pub async fn stop(self) {
        drop(self.kvs);
        drop(self.clients);
        for p in self.procs {
            p.stop().await;
        }
    }
}

impl Driver for StandaloneCluster {
    fn connections(&self) -> usize {
        self.kvs.len()
    }

    fn supports(&self, _: Consistency) -> bool {
        true
    }

    async fn put<'a>(&'a self, conn: usize, key: &'a [u8], value: &'a [u8]) -> Result<(), OpError> {
        self.kvs[conn]
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(dengine_error)
    }

    async fn get<'a>(
        &'a self,
        conn: usize,
        key: &'a [u8],
        c: Consistency,
    ) -> Result<bool, OpError> {
        self.kvs[conn]
            .get_with(key, dengine_consistency(c))
            .await
            .map(|kv| kv.is_some())
            .map_err(dengine_error)
    }

    fn supports_op(&self, _: OpKind) -> bool {
        true
    }

    async fn txn_transfer<'a>(
        &'a self,
        conn: usize,
        from: &'a [u8],
        to: &'a [u8],
        from_mod_revision: u64,
        value: &'a [u8],
    ) -> Result<TxnReply, OpError> {
        self.kvs[conn]
            .txn(transfer_txn(from, to, from_mod_revision, value))
            .await
            .map(|o| transfer_reply(&o))
            .map_err(dengine_error)
    }

    async fn range_page<'a>(
        &'a self,
        conn: usize,
        start: &'a [u8],
        end: &'a [u8],
        limit: u32,
    ) -> Result<PageReply, OpError> {
        self.kvs[conn]
            .range(start, page_options(end, limit))
            .await
            .map(page_reply)
            .map_err(dengine_error)
    }

    /// Grants through the client (leader discovery, retries); the stream
    /// is `Lease.LeaseKeepAlive` opened on the leader's channel, the unary
    /// renew the client's `lease_renew` (`Lease.LeaseRenew`).
    async fn lease_open(
        &self,
        conn: usize,
        ttl: Duration,
        stream: bool,
    ) -> Result<Box<dyn LeaseRenewer>, OpError> {
        let kv = self.kvs[conn].clone();
        let id = kv.lease_grant(ttl).await.map_err(dengine_error)?.id;
        if !stream {
            return Ok(Box::new(UnaryLease { kv, id }));
        }
        let client = &self.clients[conn];
        let leader = match client.cached_leader() {
            Some(l) => l,
            None => client.refresh_leader().await.map_err(dengine_error)?,
        };
        let ch = client.channel(&leader).map_err(dengine_error)?;
        // The first renewal is queued before the call and answered here, as
        // set-up (a server may send the stream's headers with its first
        // answer only).
        let (tx, rx) = mpsc::channel(1);
        tx.send(pb::LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| OpError::Other("keep-alive stream closed".into()))?;
        let responses = pb::lease_client::LeaseClient::new(ch)
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(status_error)?
            .into_inner();
        let mut lease = StreamLease { tx, responses, id };
        lease.answer().await?;
        Ok(Box::new(lease))
    }
}

fn status_error(s: tonic::Status) -> OpError {
    dengine_error(d_engine_client::status_codec::from_status(&s))
}

/// A lease renewed with one `LeaseRenew` call per renewal.
struct UnaryLease {
    kv: GrpcKv,
    id: u64,
}

impl LeaseRenewer for UnaryLease {
    fn renew(&mut self) -> OpFuture<'_, ()> {
        Box::pin(async move {
            self.kv
                .lease_renew(self.id)
                .await
                .map(|_| ())
                .map_err(dengine_error)
        })
    }
}

/// A lease renewed over its own `LeaseKeepAlive` stream: one request
/// message, then its answer.
struct StreamLease {
    tx: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    responses: tonic::Streaming<pb::LeaseKeepAliveResponse>,
    id: u64,
}

impl StreamLease {
    /// Reads the answer to the renewal sent last.
    async fn answer(&mut self) -> Result<(), OpError> {
        match self.responses.message().await {
            Ok(Some(r)) if r.ttl_ms > 0 => Ok(()),
            Ok(Some(r)) => Err(OpError::Other(format!("lease {} not renewed", r.id))),
            Ok(None) => Err(OpError::Other("keep-alive stream ended".into())),
            Err(s) => Err(status_error(s)),
        }
    }
}

impl LeaseRenewer for StreamLease {
    fn renew(&mut self) -> OpFuture<'_, ()> {
        Box::pin(async move {
            self.tx
                .send(pb::LeaseKeepAliveRequest { id: self.id })
                .await
                .map_err(|_| OpError::Other("keep-alive stream closed".into()))?;
            self.answer().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_node_config_parses_as_an_engine_config() {
        let ports = [(1001, 2001), (1002, 2002), (1003, 2003)];
        let text = node_config(2, Path::new("/tmp/x"), &ports, SmBackend::Memory);
        let cfg = d_engine::Config::from_toml_str(&text).unwrap();
        assert_eq!(cfg.node_id, 2);
        assert_eq!(cfg.members.len(), 3);
        assert_eq!(cfg.client_addr, "127.0.0.1:2002");
        assert_eq!(cfg.members[2].peer_addr, "127.0.0.1:1003");
        assert_eq!(
            cfg.state_machine.backend,
            d_engine::config::StateMachineBackend::Memory
        );
    }

    #[test]
    fn missing_server_binary_is_a_clear_error() {
        let e = find_server(Some(Path::new("/nonexistent/d-engine-server")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--server-bin"), "{e}");
    }
}
