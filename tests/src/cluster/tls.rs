//! [`TlsCluster`]: real `d-engine-server` processes whose client and peer
//! ports use TLS, with certificates written by `d-engine-server certs`.
//!
//! Each node gets a TOML file holding its `[tls]` section (the shape
//! `docs/tls.md` documents); addresses and timings are passed as flags like
//! in [`super::Cluster`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use d_engine_client::{Client, ClientBuilder, TlsOptions};

use super::binary::server_binary;
use super::ports::free_ports;
use super::process::{NodeProcess, NodeSpec};

/// Runs `d-engine-server certs` into `out` for `nodes` and `clients`
/// (hosts 127.0.0.1 and localhost). Panics with the tool's output on failure.
pub fn make_certs(out: &Path, nodes: &[u64], clients: &[&str]) {
    let ids: Vec<String> = nodes.iter().map(u64::to_string).collect();
    let mut cmd = Command::new(server_binary());
    cmd.arg("certs")
        .arg("--out")
        .arg(out)
        .arg("--nodes")
        .arg(ids.join(","))
        .arg("--hosts")
        .arg("127.0.0.1,localhost");
    if !clients.is_empty() {
        cmd.arg("--clients").arg(clients.join(","));
    }
    let o = cmd.output().expect("run d-engine-server certs");
    assert!(
        o.status.success(),
        "d-engine-server certs failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// How the nodes of a [`TlsCluster`] use TLS.
#[derive(Clone, Debug)]
pub struct TlsClusterConfig {
    pub nodes: usize,
    /// `[tls] client_api`.
    pub client_api: bool,
    /// `[tls] peer`.
    pub peer: bool,
    /// `[tls] client_auth`: "none", "optional" or "require".
    pub client_auth: String,
    /// Client certificate names `certs` also issues (`client-<name>.pem`).
    pub clients: Vec<String>,
    pub election_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
}

impl Default for TlsClusterConfig {
    fn default() -> Self {
        TlsClusterConfig {
            nodes: 3,
            client_api: true,
            peer: true,
            client_auth: "none".into(),
            clients: vec!["app".into()],
            election_timeout_ms: 500,
            heartbeat_interval_ms: 50,
        }
    }
}

/// A cluster of TLS-configured server processes in a temporary directory
/// (certificates in `<dir>/certs`). Dropping it SIGKILLs every process; a
/// panicking test keeps the directory and prints the log tails.
pub struct TlsCluster {
    pub config: TlsClusterConfig,
    dir: Option<tempfile::TempDir>,
    nodes: BTreeMap<u64, NodeProcess>,
    peers: String,
}

impl TlsCluster {
    /// Writes certificates for nodes 1..=n+3 (the extra ones for joiners),
    /// then starts nodes 1..=n.
    pub fn start(config: TlsClusterConfig) -> TlsCluster {
        let dir = tempfile::Builder::new()
            .prefix("dengine-tls-")
            .tempdir()
            .expect("temp dir");
        let n = config.nodes as u64;
        let ids: Vec<u64> = (1..=n + 3).collect();
        let clients: Vec<&str> = config.clients.iter().map(String::as_str).collect();
        make_certs(&dir.path().join("certs"), &ids, &clients);
        let ports = free_ports(2 * config.nodes);
        let addrs: Vec<(u64, String, String)> = (0..config.nodes)
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
        let mut c = TlsCluster {
            config,
            dir: Some(dir),
            nodes: BTreeMap::new(),
            peers,
        };
        for (id, peer, client) in addrs {
            let certs = c.certs();
            let spec = c.spec(id, peer, client, &certs, id, false);
            c.nodes
                .insert(id, NodeProcess::spawn(spec).expect("spawn d-engine-server"));
        }
        c
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// Where `certs` wrote the cluster's CA and certificates.
    pub fn certs(&self) -> PathBuf {
        self.dir().join("certs")
    }

    /// The cluster CA (`ca.pem`).
    pub fn ca(&self) -> PathBuf {
        self.certs().join("ca.pem")
    }

    /// The `[tls]` section of a node using `node-<cert_id>` from `certs`.
    pub fn tls_toml(&self, certs: &Path, cert_id: u64) -> String {
        let c = &self.config;
        let path = |name: &str| certs.join(name).display().to_string();
        format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\nclient_api = {}\npeer = {}\n\
             client_auth = {:?}\n",
            path(&format!("node-{cert_id}.pem")),
            path(&format!("node-{cert_id}-key.pem")),
            path("ca.pem"),
            c.client_api,
            c.peer,
            c.client_auth
        )
    }

    fn spec(
        &self,
        id: u64,
        peer: String,
        client: String,
        certs: &Path,
        cert_id: u64,
        join: bool,
    ) -> NodeSpec {
        let data_dir = self.dir().join(format!("node-{id}"));
        let log_path = self.dir().join(format!("node-{id}.log"));
        let config_path = self.dir().join(format!("node-{id}.toml"));
        std::fs::write(&config_path, self.tls_toml(certs, cert_id)).expect("write node config");
        let c = &self.config;
        let mut args = vec![
            "--config".to_string(),
            config_path.display().to_string(),
            "--node-id".into(),
            id.to_string(),
            "--cluster-id".into(),
            "tls-test".into(),
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
            "info".into(),
        ];
        // A joiner learns the membership from the leader; `--peers` then
        // only says where the existing cluster is.
        args.push("--peers".into());
        args.push(self.peers.clone());
        if join {
            args.push("--join".into());
        }
        NodeSpec {
            id,
            peer_addr: peer,
            client_addr: client,
            data_dir,
            log_path,
            binary: server_binary(),
            args,
            env: Vec::new(),
        }
    }

    /// Starts node `id` with `--join`, configured with `node-<cert_id>`'s
    /// certificate from `certs` (another CA's, or another node's, to test
    /// that a peer without a valid certificate cannot join). Returns its
    /// (peer, client) addresses.
    pub fn spawn_joiner(&mut self, id: u64, certs: &Path, cert_id: u64) -> (String, String) {
        let ports = free_ports(2);
        let peer = format!("127.0.0.1:{}", ports[0]);
        let client = format!("127.0.0.1:{}", ports[1]);
        let spec = self.spec(id, peer.clone(), client.clone(), certs, cert_id, true);
        self.nodes
            .insert(id, NodeProcess::spawn(spec).expect("spawn d-engine-server"));
        (peer, client)
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn client_addr(&self, id: u64) -> String {
        self.nodes[&id].spec.client_addr.clone()
    }

    /// `https://` client endpoints of nodes 1..=n (not joiners).
    pub fn endpoints(&self) -> Vec<String> {
        (1..=self.config.nodes as u64)
            .map(|id| format!("https://{}", self.client_addr(id)))
            .collect()
    }

    /// A client trusting the cluster CA and presenting `client-app`'s
    /// certificate (accepted whatever `client_auth` says).
    pub fn admin_tls(&self) -> TlsOptions {
        let certs = self.certs();
        TlsOptions::new()
            .ca_file(certs.join("ca.pem"))
            .client_cert_files(
                certs.join("client-app.pem"),
                certs.join("client-app-key.pem"),
            )
    }

    /// A client over every node with `tls`.
    pub async fn client(&self, tls: TlsOptions) -> d_engine_client::Result<Client> {
        ClientBuilder::new(self.endpoints())
            .tls(tls)
            .request_timeout(Duration::from_secs(15))
            .connect_timeout(Duration::from_secs(3))
            .build()
            .await
    }

    /// Waits until nodes 1..=n agree on a leader that says it leads
    /// (asked over TLS with [`TlsCluster::admin_tls`]).
    pub async fn wait_leader(&mut self, timeout: Duration) -> Result<u64, String> {
        let client = ClientBuilder::new(self.endpoints())
            .tls(self.admin_tls())
            .lazy(true)
            .request_timeout(Duration::from_secs(2))
            .build()
            .await
            .map_err(|e| format!("admin client: {e}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.agreed_leader(&client).await {
                Ok(l) => return Ok(l),
                Err(e) => e,
            };
            for (id, n) in self.nodes.iter_mut() {
                if let Some(st) = n.crashed() {
                    return Err(format!(
                        "node {id} exited ({st}); log tail:\n{}",
                        n.log_tail(30)
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("no agreed leader within {timeout:?}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn agreed_leader(&self, client: &Client) -> Result<u64, String> {
        let mut leader = None;
        for id in 1..=self.config.nodes as u64 {
            let s = client
                .admin()
                .node_status_at(&self.client_addr(id))
                .await
                .map_err(|e| format!("node {id}: {e}"))?;
            if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
                return Err(format!("node {id} sees leader {}", s.leader_id));
            }
            leader = Some(s.leader_id);
        }
        Ok(leader.expect("at least one node"))
    }

    pub fn node(&mut self, id: u64) -> &mut NodeProcess {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// Every node's log tail, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|(id, n)| format!("---- node {id} ----\n{}", n.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for n in self.nodes.values_mut() {
            n.kill();
        }
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!(
                    "[tls cluster] test failed; data, certificates and logs kept in {}\n{}",
                    path.display(),
                    self.log_tails(40)
                );
            }
        }
    }
}
