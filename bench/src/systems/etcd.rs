//! etcd: `etcd` processes (Debian's `etcd-server` package, default settings,
//! so fsync before acknowledging) that this tool starts on free 127.0.0.1
//! ports with temporary data dirs, driven through etcd's v3 gRPC KV API.
//!
//! Connections are spread round-robin over all members (as etcd's own
//! benchmark tool does); a follower forwards writes to the leader itself.
//! etcd has no lease read: `lease` cases are skipped; nor a unary lease
//! renew: `lease-renew` is skipped (its keep-alive is a stream).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::procs::{free_port, Proc};
use super::ttl_secs;
use crate::memory::Holder;
use crate::pb::etcd::kv_client::KvClient;
use crate::pb::etcd::lease_client::LeaseClient;
use crate::pb::etcd::{
    compare, request_op, response_op, Compare, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use crate::workload::{
    Consistency, Driver, LeaseRenewer, OpError, OpFuture, OpKind, PageReply, TxnReply,
};

pub struct EtcdCluster {
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
    clients: Vec<KvClient<Channel>>,
    /// Lease service clients on the same connections.
    leases: Vec<LeaseClient<Channel>>,
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
            leases: Vec::new(),
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
            cluster.clients.push(KvClient::new(ch.clone()));
            cluster.leases.push(LeaseClient::new(ch));
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
        drop(self.leases);
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
                ..Default::default()
            })
            .await
            .map_err(status_error)?;
        Ok(!r.into_inner().kvs.is_empty())
    }

    /// Txn, Range with a limit and the LeaseKeepAlive stream; no unary renew.
    fn supports_op(&self, op: OpKind) -> bool {
        match op {
            OpKind::Get(c) => self.supports(c),
            OpKind::LeaseRenew { stream } => stream,
            OpKind::Put | OpKind::Txn | OpKind::RangePage => true,
        }
    }

    async fn txn_transfer<'a>(
        &'a self,
        conn: usize,
        from: &'a [u8],
        to: &'a [u8],
        from_mod_revision: u64,
        value: &'a [u8],
    ) -> Result<TxnReply, OpError> {
        let put = |key: &[u8]| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                lease: 0,
            })),
        };
        let req = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: from.to_vec(),
                target_union: Some(compare::TargetUnion::ModRevision(from_mod_revision as i64)),
            }],
            success: vec![put(from), put(to)],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: from.to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let r = self.clients[conn]
            .clone()
            .txn(req)
            .await
            .map_err(status_error)?
            .into_inner();
        if r.succeeded {
            let revision = r.header.map_or(0, |h| h.revision) as u64;
            return Ok(TxnReply {
                succeeded: true,
                revision,
            });
        }
        let current = match r.responses.into_iter().next().and_then(|op| op.response) {
            Some(response_op::Response::ResponseRange(rr)) => {
                rr.kvs.first().map_or(0, |kv| kv.mod_revision as u64)
            }
            _ => 0,
        };
        Ok(TxnReply {
            succeeded: false,
            revision: current,
        })
    }

    async fn range_page<'a>(
        &'a self,
        conn: usize,
        start: &'a [u8],
        end: &'a [u8],
        limit: u32,
    ) -> Result<PageReply, OpError> {
        let r = self.clients[conn]
            .clone()
            .range(RangeRequest {
                key: start.to_vec(),
                range_end: end.to_vec(),
                limit: i64::from(limit),
                ..Default::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let next = match (r.more, r.kvs.last()) {
            (true, Some(last)) => {
                let mut k = last.key.clone();
                k.push(0);
                Some(k)
            }
            _ => None,
        };
        Ok(PageReply {
            keys: r.kvs.len() as u64,
            next,
        })
    }

    async fn lease_open(
        &self,
        conn: usize,
        ttl: Duration,
        _stream: bool,
    ) -> Result<Box<dyn LeaseRenewer>, OpError> {
        let mut client = self.leases[conn].clone();
        let g = client
            .lease_grant(LeaseGrantRequest {
                ttl: ttl_secs(ttl),
                id: 0,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        if !g.error.is_empty() {
            return Err(OpError::Other(format!("etcd lease grant: {}", g.error)));
        }
        // etcd sends the stream's response headers with its first answer,
        // so the first renewal is queued before the call (else opening the
        // stream would wait for ever) and its answer read here, as set-up.
        let (tx, rx) = mpsc::channel(1);
        tx.send(LeaseKeepAliveRequest { id: g.id })
            .await
            .map_err(|_| OpError::Other("etcd keep-alive stream closed".into()))?;
        let responses = client
            .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(status_error)?
            .into_inner();
        let mut lease = EtcdLease {
            tx,
            responses,
            id: g.id,
        };
        lease.answer().await?;
        Ok(Box::new(lease))
    }
}

/// An etcd lease renewed over its own LeaseKeepAlive stream: one request
/// message, then its answer (a TTL of 0 or less: the lease is gone).
struct EtcdLease {
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: tonic::Streaming<LeaseKeepAliveResponse>,
    id: i64,
}

impl EtcdLease {
    /// Reads the answer to the renewal sent last.
    async fn answer(&mut self) -> Result<(), OpError> {
        match self.responses.message().await {
            Ok(Some(r)) if r.ttl > 0 => Ok(()),
            Ok(Some(r)) => Err(OpError::Other(format!("etcd lease {} not found", r.id))),
            Ok(None) => Err(OpError::Other("etcd keep-alive stream ended".into())),
            Err(s) => Err(status_error(s)),
        }
    }
}

impl LeaseRenewer for EtcdLease {
    fn renew(&mut self) -> OpFuture<'_, ()> {
        Box::pin(async move {
            self.tx
                .send(LeaseKeepAliveRequest { id: self.id })
                .await
                .map_err(|_| OpError::Other("etcd keep-alive stream closed".into()))?;
            self.answer().await
        })
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
