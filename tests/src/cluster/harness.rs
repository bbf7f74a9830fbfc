//! [`Cluster`]: N real `d-engine-server` processes on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::admin_client::AdminClient;
use d_engine_proto::v1::kv_client::KvClient;
use tonic::transport::{Channel, Endpoint};

use super::binary::server_binary;
use super::ports::free_ports;
use super::process::{NodeProcess, NodeSpec};

/// Shape and timing of a test cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Initial voters (ids 1..=nodes).
    pub nodes: usize,
    pub cluster_id: String,
    /// Generous defaults: the CI machine has 2 shared cores.
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    /// Extra flags for every node (e.g. `--snapshot-threshold 100`).
    pub extra_args: Vec<String>,
    /// Log filter passed as `--log`.
    pub log_filter: String,
    /// Authenticate peers with a cluster secret written by
    /// `d-engine-server gen-secret` (`--peer-secret-file`), as a real
    /// multi-node deployment must. Default true; false runs the loopback
    /// cluster unauthenticated (allowed on loopback, with a warning).
    pub peer_secret: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: 3,
            cluster_id: "test-cluster".into(),
            election_timeout_ms: 500,
            heartbeat_interval_ms: 50,
            extra_args: Vec::new(),
            log_filter: "info".into(),
            peer_secret: true,
        }
    }
}

/// Writes a new cluster secret to `path` with `d-engine-server gen-secret`.
/// Panics with the tool's output on failure.
pub fn gen_secret(path: &Path) {
    let o = std::process::Command::new(server_binary())
        .arg("gen-secret")
        .arg("--out")
        .arg(path)
        .output()
        .expect("run d-engine-server gen-secret");
    assert!(
        o.status.success(),
        "d-engine-server gen-secret failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A cluster of server processes with temporary data directories. Dropping
/// it SIGKILLs every process; if the test is panicking, the directory (data
/// and `node-<id>.log` files) is kept and its path and the log tails are
/// printed.
pub struct Cluster {
    pub config: ClusterConfig,
    dir: Option<tempfile::TempDir>,
    nodes: BTreeMap<u64, NodeProcess>,
}

fn http(addr: &str) -> String {
    format!("http://{addr}")
}

impl Cluster {
    /// Starts `config.nodes` voters (ids 1..=n) and returns at once; use
    /// [`Cluster::wait_leader`] to wait for an election.
    pub fn start(config: ClusterConfig) -> Cluster {
        let mut c = Cluster::prepare(config);
        c.start_all();
        c
    }

    /// Like [`Cluster::start`] but starts no process: addresses, data dirs
    /// and arguments are chosen, so a test can adjust a node's
    /// [`NodeSpec`] (`node(id).spec.args`, e.g. per-node dial overrides) or
    /// its data dir before [`Cluster::start_all`].
    pub fn prepare(config: ClusterConfig) -> Cluster {
        let binary = server_binary();
        let dir = tempfile::Builder::new()
            .prefix("dengine-cluster-")
            .tempdir()
            .expect("temp dir");
        let n = config.nodes;
        let ports = free_ports(2 * n);
        let addrs: Vec<(u64, String, String)> = (0..n)
            .map(|i| {
                (
                    i as u64 + 1,
                    format!("127.0.0.1:{}", ports[2 * i]),
                    format!("127.0.0.1:{}", ports[2 * i + 1]),
                )
            })
            .collect();
        let peers = addrs
            .iter()
            .map(|(id, p, c)| format!("{id}={p}/{c}"))
            .collect::<Vec<_>>()
            .join(",");
        if config.peer_secret {
            gen_secret(&dir.path().join("cluster-secret"));
        }
        let mut cluster = Cluster {
            config,
            dir: Some(dir),
            nodes: BTreeMap::new(),
        };
        for (id, peer, client) in addrs {
            let spec = cluster.spec(&binary, id, peer, client, Some(&peers), false);
            cluster.nodes.insert(id, NodeProcess::not_started(spec));
        }
        cluster
    }

    /// Starts every node that is not running.
    pub fn start_all(&mut self) {
        for n in self.nodes.values_mut() {
            n.start().expect("spawn d-engine-server");
        }
    }

    /// The directory holding every node's data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// The cluster secret file (exists when `config.peer_secret`).
    pub fn secret_path(&self) -> PathBuf {
        self.dir().join("cluster-secret")
    }

    fn spec(
        &self,
        binary: &Path,
        id: u64,
        peer: String,
        client: String,
        peers: Option<&str>,
        join: bool,
    ) -> NodeSpec {
        let data_dir = self.dir().join(format!("node-{id}"));
        let log_path = self.dir().join(format!("node-{id}.log"));
        let c = &self.config;
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--cluster-id".into(),
            c.cluster_id.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-peer".into(),
            peer.clone(),
            "--listen-client".into(),
            client.clone(),
            "--election-timeout-ms".into(),
            c.election_timeout_ms.to_string(),
            "--heartbeat-interval-ms".into(),
            c.heartbeat_interval_ms.to_string(),
            "--log".into(),
            c.log_filter.clone(),
        ];
        if let Some(p) = peers {
            args.push("--peers".into());
            args.push(p.to_string());
        }
        if join {
            args.push("--join".into());
        }
        if c.peer_secret {
            args.push("--peer-secret-file".into());
            args.push(self.secret_path().display().to_string());
        }
        args.extend(c.extra_args.iter().cloned());
        NodeSpec {
            id,
            peer_addr: peer,
            client_addr: client,
            data_dir,
            log_path,
            binary: binary.to_path_buf(),
            args,
            env: Vec::new(),
        }
    }

    /// Starts a new node `id` with `--join` (a learner waiting for
    /// AddLearner on the leader); returns its (peer, client) addresses.
    pub fn spawn_joiner(&mut self, id: u64) -> (String, String) {
        let ports = free_ports(2);
        let peer = format!("127.0.0.1:{}", ports[0]);
        let client = format!("127.0.0.1:{}", ports[1]);
        let spec = self.spec(
            &server_binary(),
            id,
            peer.clone(),
            client.clone(),
            None,
            true,
        );
        self.nodes
            .insert(id, NodeProcess::spawn(spec).expect("spawn d-engine-server"));
        (peer, client)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub fn client_addr(&self, id: u64) -> String {
        self.nodes[&id].spec.client_addr.clone()
    }

    pub fn peer_addr(&self, id: u64) -> String {
        self.nodes[&id].spec.peer_addr.clone()
    }

    /// `http://` client endpoints of every node (for `ClientBuilder`).
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes
            .values()
            .map(|n| http(&n.spec.client_addr))
            .collect()
    }

    /// A d-engine Rust client over every node.
    pub async fn client(&self) -> d_engine_client::Client {
        d_engine_client::ClientBuilder::new(self.endpoints())
            .request_timeout(Duration::from_secs(15))
            .build()
            .await
            .expect("client builds")
    }

    /// A raw channel to node `id`'s client port (1 s connect timeout).
    pub async fn channel(&self, id: u64) -> Result<Channel, String> {
        let addr = self.client_addr(id);
        Endpoint::from_shared(http(&addr))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| format!("connect to node {id} at {addr}: {e}"))
    }

    /// Raw Kv stub for node `id`.
    pub async fn kv(&self, id: u64) -> Result<KvClient<Channel>, String> {
        Ok(KvClient::new(self.channel(id).await?))
    }

    /// Node `id`'s status (role, leader, indexes), within ~2 s.
    pub async fn status(&self, id: u64) -> Result<pb::NodeStatusResponse, String> {
        let ch = self.channel(id).await?;
        AdminClient::new(ch)
            .node_status(pb::NodeStatusRequest {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("node {id}: {s}"))
    }

    fn running_ids(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|(id, n)| (n.is_running() && !n.is_paused()).then_some(*id))
            .collect()
    }

    /// The leader every running, unpaused node agrees on, if any right now.
    pub async fn agreed_leader(&mut self) -> Option<u64> {
        let ids = self.running_ids();
        let mut leader = None;
        for id in &ids {
            let s = self.status(*id).await.ok()?;
            if s.leader_id == 0 {
                return None;
            }
            match leader {
                None => leader = Some(s.leader_id),
                Some(l) if l != s.leader_id => return None,
                _ => {}
            }
        }
        let l = leader?;
        let s = self.status(l).await.ok()?;
        (s.role == "leader").then_some(l)
    }

    /// Waits until every running node agrees on a leader that says it
    /// leads. Fails early (with the log tail) if a node process exits.
    pub async fn wait_leader(&mut self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.agreed_leader().await {
                return Ok(l);
            }
            for (id, n) in self.nodes.iter_mut() {
                if let Some(st) = n.crashed() {
                    return Err(format!(
                        "node {id} exited ({st}) while waiting for a leader; log tail:\n{}",
                        n.log_tail(30)
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no agreed leader within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the leader is not `old` (and agreed on by running nodes).
    pub async fn wait_new_leader(&mut self, old: u64, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.agreed_leader().await {
                if l != old {
                    return Ok(l);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no new leader (other than {old}) within {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.status(id).await {
                if s.applied_index >= index {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let s = self.status(id).await;
                return Err(format!(
                    "node {id} did not apply index {index} within {timeout:?}: {s:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id` answers the gRPC health check on its client
    /// port, SERVING or NOT_SERVING: the process is up and its client API
    /// runs. (Health says SERVING only once the node follows a live leader
    /// — docs/metrics.md — which a restarted node in a cluster that lost
    /// its majority, or a joiner not yet added, does not.)
    pub async fn wait_serving(&mut self, id: u64, timeout: Duration) -> Result<(), String> {
        use tonic_health::pb::health_client::HealthClient;
        use tonic_health::pb::HealthCheckRequest;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(ch) = self.channel(id).await {
                if let Ok(r) = HealthClient::new(ch)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                {
                    // 1 = SERVING, 2 = NOT_SERVING.
                    if matches!(r.into_inner().status, 1 | 2) {
                        return Ok(());
                    }
                }
            }
            if let Some(st) = self.node(id).crashed() {
                return Err(format!(
                    "node {id} exited ({st}); log tail:\n{}",
                    self.node(id).log_tail(30)
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!("node {id} not serving within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL node `id`.
    pub fn kill(&mut self, id: u64) {
        self.node(id).kill();
    }

    /// SIGSTOP node `id`.
    pub fn pause(&mut self, id: u64) {
        self.node(id).pause();
    }

    /// SIGCONT node `id`.
    pub fn resume(&mut self, id: u64) {
        self.node(id).resume();
    }

    /// SIGTERM node `id` and wait for its graceful exit.
    pub fn terminate(&mut self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        self.node(id).terminate(timeout)
    }

    /// Starts node `id` again with its data dir and arguments.
    pub fn restart(&mut self, id: u64) {
        self.node(id).start().expect("restart d-engine-server");
    }

    /// Every node's log tail, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|(id, n)| {
                format!(
                    "---- node {id} ({}) ----\n{}",
                    n.spec.log_path.display(),
                    n.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.nodes[&id].spec.data_dir.clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            n.kill();
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!(
                    "[cluster harness] test failed; data and logs kept in {}\n{}",
                    path.display(),
                    self.log_tails(40)
                );
            }
        }
    }
}
