//! etcd: `etcd` processes (Debian's `etcd-server` package, default settings,
//! so fsync before acknowledging) that this tool starts on free 127.0.0.1
//! ports with temporary data dirs, driven through etcd's v3 gRPC KV API.
//!
//! Connections are spread round-robin over all members (as etcd's own
//! benchmark tool does); a follower forwards writes to the leader itself.
//! etcd has no lease read: `lease` cases are skipped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tonic::transport::{Channel, Endpoint};

use super::procs::{free_port, Proc};
use crate::memory::Holder;
use crate::pb::etcd::kv_client::KvClient;
use crate::pb::etcd::{PutRequest, RangeRequest};
use crate::workload::{Consistency, Driver, OpError};

pub struct EtcdCluster {
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
    clients: Vec<KvClient<Channel>>,
}

/// `--etcd-bin`, else `etcd` on PATH, else /usr/bin/etcd.
pub fn find_etcd(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .chain([PathBuf::from("/usr/bin/etcd")])
        .find(|p| p.is_file())
}

/// Command-line arguments of member `i` (0-based) of the cluster.
pub fn member_args(i: usize, data: &Path, ports: &[(u16, u16)]) -> Vec<String> {
    let (client, peer) = ports[i];
    let cluster: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(j, (_, p))| format!("m{}=http://127.0.0.1:{p}", j + 1))
        .collect();
    vec![
        format!("--name=m{}", i + 1),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls=http://127.0.0.1:{client}"),
        format!("--advertise-client-urls=http://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster={}", cluster.join(",")),
        "--initial-cluster-state=new".into(),
        format!("--initial-cluster-token=bench-{}", std::process::id()),
    ]
}

fn status_error(s: tonic::Status) -> OpError {
    match s.code() {
        tonic::Code::DeadlineExceeded => OpError::Timeout(s.message().to_string()),
        code => OpError::Other(format!("etcd {code:?}: {}", s.message())),
    }
}

impl EtcdCluster {
    pub async fn start(etcd: &Path, nodes: usize, connections: usize, base: &Path) -> Result<Self> {
        std::fs::create_dir_all(base)?;
        let dir = tempfile::Builder::new().prefix("etcd-").tempdir_in(base)?;
        let mut ports = Vec::new();
        for _ in 0..nodes {
            ports.push((free_port()?, free_port()?));
        }
        let mut procs = Vec::new();
        for i in 0..nodes {
            let data = dir.path().join(format!("m{}", i + 1));
            let log = dir.path().join(format!("m{}.log", i + 1));
            procs.push(Proc::spawn(
                &format!("etcd member {}", i + 1),
                etcd,
                &member_args(i, &data, &ports),
                &log,
            )?);
        }
        let endpoints: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("http://127.0.0.1:{c}"))
            .collect();
        let mut cluster = EtcdCluster {
            procs,
            _dir: dir,
            clients: Vec::new(),
        };
        cluster
            .wait_ready(&endpoints, Duration::from_secs(30))
            .await?;
        for i in 0..connections.max(1) {
            let ep = &endpoints[i % endpoints.len()];
            let ch = Endpoint::from_shared(ep.clone())?
                .tcp_nodelay(true)
                .connect()
                .await
                .with_context(|| format!("connecting to etcd at {ep}"))?;
            cluster.clients.push(KvClient::new(ch));
        }
        Ok(cluster)
    }

    async fn wait_ready(&mut self, endpoints: &[String], timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut last = String::new();
            for p in &mut self.procs {
                p.check_alive()?;
            }
            let mut all = true;
            for ep in endpoints {
                let attempt = async {
                    let ch = Endpoint::from_shared(ep.clone())?.connect().await?;
                    KvClient::new(ch)
                        .put(PutRequest {
                            key: b"bench-ready".to_vec(),
                            value: b"1".to_vec(),
                            lease: 0,
                        })
                        .await?;
                    Ok::<(), anyhow::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(3), attempt).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        last = format!("{ep}: {e}");
                        all = false;
                    }
                    Err(_) => {
                        last = format!("{ep}: no reply within 3 s");
                        all = false;
                    }
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "etcd not serving writes within {timeout:?} (last error: {last}); log of member 1:\n{}",
                    self.procs[0].log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The etcd processes, in member order (see [`Holder`]).
    /// Fails if one has already been reaped.
    pub fn holder(&self) -> Result<Holder> {
        Holder::servers("etcd", &self.procs)
    }

    pub async fn stop(self) {
        drop(self.clients);
        for p in self.procs {
            p.stop().await;
        }
    }
}

impl Driver for EtcdCluster {
    fn connections(&self) -> usize {
        self.clients.len()
    }

    fn supports(&self, c: Consistency) -> bool {
        c != Consistency::Lease
    }

    async fn put<'a>(&'a self, conn: usize, key: &'a [u8], value: &'a [u8]) -> Result<(), OpError> {
        let mut c = self.clients[conn].clone();
        c.put(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            lease: 0,
        })
        .await
        .map(|_| ())
        .map_err(status_error)
    }

    async fn get<'a>(
        &'a self,
        conn: usize,
        key: &'a [u8],
        c: Consistency,
    ) -> Result<bool, OpError> {
        let mut cl = self.clients[conn].clone();
        let r = cl
            .range(RangeRequest {
                key: key.to_vec(),
                range_end: Vec::new(),
                limit: 0,
                revision: 0,
                serializable: c == Consistency::Eventual,
            })
            .await
            .map_err(status_error)?;
        Ok(!r.into_inner().kvs.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_each_other_in_the_initial_cluster() {
        let ports = [(1, 2), (3, 4), (5, 6)];
        let a = member_args(1, Path::new("/d"), &ports);
        assert!(a.contains(&"--name=m2".to_string()));
        assert!(a.contains(&"--listen-client-urls=http://127.0.0.1:3".to_string()));
        assert!(a.contains(
            &"--initial-cluster=m1=http://127.0.0.1:2,m2=http://127.0.0.1:4,m3=http://127.0.0.1:6"
                .to_string()
        ));
    }
}
