//! A scripted in-process d-engine node (Kv, Cluster, Admin) on 127.0.0.1:0
//! for testing the client's routing, retries and watch handling.
//!
//! Each node answers like a real one from a tiny in-memory store, except
//! that a test can script the next calls' outcomes (fail with a status,
//! answer late, apply then answer late) and inspect every call received.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use d_engine_client::{status_codec, Error};
use d_engine_proto::v1 as pb;
use pb::admin_server::{Admin, AdminServer};
use pb::cluster_server::{Cluster, ClusterServer};
use pb::kv_server::{Kv, KvServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

/// What the next gated call does.
#[derive(Clone, Debug)]
pub enum Scripted {
    /// Return this status without doing anything.
    Fail(Status),
    /// Wait, then behave normally.
    Delay(Duration),
    /// Do the operation, then wait before answering (a lost reply).
    ApplyThenDelay(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: &'static str,
    pub write_id: Option<pb::WriteId>,
    pub consistency: i32,
}

#[derive(Default)]
pub struct State {
    pub id: u64,
    pub addr: String,
    /// This node serves leader-only requests.
    pub is_leader: bool,
    /// The leader this node reports (id, client address) in Leader
    /// answers and NotLeader hints.
    pub leader: Option<(u64, String)>,
    pub script: VecDeque<Scripted>,
    pub calls: Vec<Call>,
    pub leader_queries: usize,
    pub store: BTreeMap<Vec<u8>, pb::KeyValue>,
    pub revision: u64,
    /// Applied writes by (client_id, seq) -> revision.
    pub applied: HashMap<(u64, u64), u64>,
    pub members: Vec<pb::Member>,
    pub watch_requests: Vec<pb::WatchRequest>,
    pub watch_feeds: Vec<mpsc::Sender<Result<pb::WatchResponse, Status>>>,
}

#[derive(Clone)]
struct Svc(Arc<Mutex<State>>);

pub struct MockNode {
    pub id: u64,
    /// `127.0.0.1:port` (no scheme).
    pub addr: String,
    pub state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for MockNode {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// An address nothing listens on (bound, then released).
pub async fn dead_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a.to_string()
}

impl MockNode {
    pub async fn spawn(id: u64) -> MockNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            id,
            addr: addr.to_string(),
            ..Default::default()
        }));
        let svc = Svc(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(KvServer::new(svc.clone()))
                .add_service(ClusterServer::new(svc.clone()))
                .add_service(AdminServer::new(svc))
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        MockNode {
            id,
            addr: addr.to_string(),
            state,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops serving: closes the listener and every connection (graceful
    /// shutdown, bounded to 5 s, then the server task is aborted).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let abort = h.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), h)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Makes this node the leader.
    pub fn lead(&self) {
        let mut s = self.st();
        s.is_leader = true;
        s.leader = Some((self.id, self.addr.clone()));
    }

    /// Makes this node a follower that reports `leader` (None: no leader).
    pub fn follow(&self, leader: Option<&MockNode>) {
        let mut s = self.st();
        s.is_leader = false;
        s.leader = leader.map(|l| (l.id, l.addr.clone()));
    }

    pub fn script(&self, steps: impl IntoIterator<Item = Scripted>) {
        self.st().script.extend(steps);
    }

    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.st()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Sends a message on the `i`-th watch opened on this node.
    pub async fn feed(&self, i: usize, msg: Result<pb::WatchResponse, Status>) {
        let tx = self.st().watch_feeds[i].clone();
        tx.send(msg).await.expect("watch feed open");
    }
}

pub fn put_event(key: &[u8], value: &[u8], rev: u64) -> pb::WatchResponse {
    pb::WatchResponse {
        events: vec![pb::WatchEvent {
            r#type: pb::EventType::Put as i32,
            kv: Some(pb::KeyValue {
                key: key.to_vec().into(),
                value: value.to_vec().into(),
                create_revision: rev,
                mod_revision: rev,
                version: 1,
                lease: 0,
                expires_at_ms: 0,
            }),
            prev_kv: None,
        }],
        ..Default::default()
    }
}

impl Svc {
    fn header(&self, s: &State) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            node_id: s.id,
            term: 7,
            revision: s.revision,
        })
    }

    /// Records the call, applies the script, enforces leadership.
    /// Returns the delay to apply after the operation, if any.
    async fn gate(
        &self,
        method: &'static str,
        write_id: Option<pb::WriteId>,
        consistency: i32,
        needs_leader: bool,
    ) -> Result<Option<Duration>, Status> {
        let step = {
            let mut s = self.0.lock().unwrap();
            s.calls.push(Call {
                method,
                write_id,
                consistency,
            });
            s.script.pop_front()
        };
        let mut after = None;
        match step {
            Some(Scripted::Fail(st)) => return Err(st),
            Some(Scripted::Delay(d)) => tokio::time::sleep(d).await,
            Some(Scripted::ApplyThenDelay(d)) => after = Some(d),
            None => {}
        }
        let s = self.0.lock().unwrap();
        if needs_leader && !s.is_leader {
            let (leader_id, leader_addr) = match &s.leader {
                Some((id, a)) => (Some(*id), Some(a.clone())),
                None => (None, None),
            };
            return Err(status_codec::to_status(&Error::NotLeader {
                leader_id,
                leader_addr,
            }));
        }
        Ok(after)
    }

    fn write(&self, wid: Option<pb::WriteId>, f: impl FnOnce(&mut State, u64)) -> u64 {
        let mut s = self.0.lock().unwrap();
        if let Some(w) = wid {
            if let Some(rev) = s.applied.get(&(w.client_id, w.seq)) {
                return *rev;
            }
        }
        s.revision += 1;
        let rev = s.revision;
        f(&mut s, rev);
        if let Some(w) = wid {
            s.applied.insert((w.client_id, w.seq), rev);
        }
        rev
    }
}

async fn pause(after: Option<Duration>) {
    if let Some(d) = after {
        tokio::time::sleep(d).await;
    }
}

fn is_eventual(c: i32) -> bool {
    c == pb::Consistency::Eventual as i32
}

#[tonic::async_trait]
impl Kv for Svc {
    async fn put(&self, r: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let r = r.into_inner();
        let after = self.gate("put", r.write_id, 0, true).await?;
        let rev = self.write(r.write_id, |s, rev| {
            s.store.insert(
                r.key.clone(),
                pb::KeyValue {
                    key: r.key.clone().into(),
                    value: r.value.clone().into(),
                    create_revision: rev,
                    mod_revision: rev,
                    version: 1,
                    expires_at_ms: if r.ttl_ms > 0 { 1 } else { 0 },
                    lease: r.lease,
                },
            );
        });
        pause(after).await;
        let s = self.0.lock().unwrap();
        Ok(Response::new(pb::PutResponse {
            header: self.header(&s),
            revision: rev,
        }))
    }

    async fn get(&self, r: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let r = r.into_inner();
        let after = self
            .gate("get", None, r.consistency, !is_eventual(r.consistency))
            .await?;
        pause(after).await;
        let s = self.0.lock().unwrap();
        Ok(Response::new(pb::GetResponse {
            header: self.header(&s),
            kv: s.store.get(&r.key).cloned(),
        }))
    }

    async fn get_multi(
        &self,
        r: Request<pb::GetMultiRequest>,
    ) -> Result<Response<pb::GetMultiResponse>, Status> {
        let r = r.into_inner();
        self.gate(
            "get_multi",
            None,
            r.consistency,
            !is_eventual(r.consistency),
        )
        .await?;
        let s = self.0.lock().unwrap();
        let results = r
            .keys
            .iter()
            .map(|k| pb::GetResponse {
                header: None,
                kv: s.store.get(k).cloned(),
            })
            .collect();
        Ok(Response::new(pb::GetMultiResponse {
            header: self.header(&s),
            results,
        }))
    }

    async fn delete(
        &self,
        r: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = r.into_inner();
        let after = self.gate("delete", r.write_id, 0, true).await?;
        let mut existed = false;
        let rev = self.write(r.write_id, |s, _| {
            existed = s.store.remove(&r.key).is_some()
        });
        pause(after).await;
        let s = self.0.lock().unwrap();
        Ok(Response::new(pb::DeleteResponse {
            header: self.header(&s),
            deleted: existed,
            revision: rev,
        }))
    }

    async fn compare_and_swap(
        &self,
        r: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let r = r.into_inner();
        self.gate("cas", r.write_id, 0, true).await?;
        let mut ok = false;
        let rev = self.write(r.write_id, |s, rev| {
            let cur = s.store.get(&r.key).map(|kv| kv.value.to_vec());
            ok = cur == r.expected_value;
            if ok {
                match &r.new_value {
                    Some(v) => {
                        s.store.insert(
                            r.key.clone(),
                            pb::KeyValue {
                                key: r.key.clone().into(),
                                value: v.clone().into(),
                                create_revision: rev,
                                mod_revision: rev,
                                version: 1,
                                lease: 0,
                                expires_at_ms: 0,
                            },
                        );
                    }
                    None => {
                        s.store.remove(&r.key);
                    }
                }
            }
        });
        let s = self.0.lock().unwrap();
        Ok(Response::new(pb::CompareAndSwapResponse {
            header: self.header(&s),
            succeeded: ok,
            current: s.store.get(&r.key).cloned(),
            revision: rev,
        }))
    }

    async fn scan_prefix(
        &self,
        r: Request<pb::ScanPrefixRequest>,
    ) -> Result<Response<pb::ScanPrefixResponse>, Status> {
        let r = r.into_inner();
        self.gate("scan", None, r.consistency, !is_eventual(r.consistency))
            .await?;
        let s = self.0.lock().unwrap();
        let limit = if r.limit == 0 {
            10_000
        } else {
            r.limit as usize
        };
        let all: Vec<_> = s
            .store
            .values()
            .filter(|kv| kv.key.starts_with(&r.prefix))
            .cloned()
            .collect();
        Ok(Response::new(pb::ScanPrefixResponse {
            header: self.header(&s),
            more: all.len() > limit,
            kvs: all.into_iter().take(limit).collect(),
        }))
    }

    /// Pages of `[key, range_end)` like the real server (single key,
    /// "\0" = from the key on), `limit` 0 = 10,000.
    async fn range(
        &self,
        r: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let r = r.into_inner();
        self.gate("range", None, r.consistency, !is_eventual(r.consistency))
            .await?;
        let s = self.0.lock().unwrap();
        let limit = if r.limit == 0 {
            10_000
        } else {
            r.limit as usize
        };
        let in_range = |k: &[u8]| match r.range_end.as_slice() {
            [] => k == r.key.as_slice(),
            [0] => k >= r.key.as_slice(),
            end => k >= r.key.as_slice() && k < end,
        };
        let all: Vec<_> = s
            .store
            .values()
            .filter(|kv| in_range(&kv.key))
            .cloned()
            .collect();
        let (count, more) = (all.len() as u64, all.len() > limit);
        let kvs: Vec<_> = all.into_iter().take(limit).collect();
        let next_key = match (more, kvs.last()) {
            (true, Some(last)) => {
                let mut k = last.key.to_vec();
                k.push(0);
                k
            }
            _ => Vec::new(),
        };
        Ok(Response::new(pb::RangeResponse {
            header: self.header(&s),
            count,
            more,
            kvs,
            next_key,
        }))
    }

    async fn delete_range(
        &self,
        _: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        Err(Status::unimplemented(
            "the routing mock has no delete_range",
        ))
    }

    async fn txn(&self, _: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        Err(Status::unimplemented("the routing mock has no txn"))
    }

    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        r: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = r.into_inner();
        self.gate("watch", None, 0, true).await?;
        let (tx, rx) = mpsc::channel(16);
        let created = {
            let mut s = self.0.lock().unwrap();
            s.watch_requests.push(r);
            s.watch_feeds.push(tx.clone());
            pb::WatchResponse {
                header: self.header(&s),
                created: true,
                ..Default::default()
            }
        };
        tx.send(Ok(created)).await.unwrap();
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Cluster for Svc {
    async fn members(
        &self,
        _r: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.gate("members", None, 0, false).await?;
        let s = self.0.lock().unwrap();
        Ok(Response::new(pb::MembersResponse {
            header: self.header(&s),
            members: s.members.clone(),
            leader_id: s.leader.as_ref().map_or(0, |l| l.0),
        }))
    }

    async fn leader(
        &self,
        _r: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let mut s = self.0.lock().unwrap();
        s.leader_queries += 1;
        let (leader_id, leader_addr) = s.leader.clone().unwrap_or((0, String::new()));
        Ok(Response::new(pb::LeaderResponse {
            header: self.header(&s),
            leader_id,
            leader_addr,
        }))
    }

    type WatchClusterStream = ReceiverStream<Result<pb::ClusterEvent, Status>>;

    /// The scripted server has no cluster stream (tests of it run against
    /// real nodes).
    async fn watch_cluster(
        &self,
        _r: Request<pb::WatchClusterRequest>,
    ) -> Result<Response<Self::WatchClusterStream>, Status> {
        Err(Status::unimplemented(
            "the scripted test server has no WatchCluster",
        ))
    }
}

#[tonic::async_trait]
impl Admin for Svc {
    async fn add_learner(
        &self,
        r: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let r = r.into_inner();
        self.gate("add_learner", None, 0, true).await?;
        let mut s = self.0.lock().unwrap();
        s.members.push(pb::Member {
            id: r.id,
            peer_addr: r.peer_addr,
            client_addr: r.client_addr,
            role: pb::MemberRole::Learner as i32,
        });
        Ok(Response::new(pb::ChangeResponse {
            header: self.header(&s),
            members: s.members.clone(),
        }))
    }

    async fn promote(
        &self,
        r: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let id = r.into_inner().id;
        self.gate("promote", None, 0, true).await?;
        let mut s = self.0.lock().unwrap();
        let Some(m) = s.members.iter_mut().find(|m| m.id == id) else {
            return Err(status_codec::to_status(&Error::UnknownNode(format!(
                "node {id}"
            ))));
        };
        m.role = pb::MemberRole::Voter as i32;
        Ok(Response::new(pb::ChangeResponse {
            header: self.header(&s),
            members: s.members.clone(),
        }))
    }

    async fn remove_member(
        &self,
        r: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        let id = r.into_inner().id;
        self.gate("remove_member", None, 0, true).await?;
        let mut s = self.0.lock().unwrap();
        s.members.retain(|m| m.id != id);
        Ok(Response::new(pb::ChangeResponse {
            header: self.header(&s),
            members: s.members.clone(),
        }))
    }

    async fn transfer_leader(
        &self,
        _r: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::ChangeResponse>, Status> {
        self.gate("transfer_leader", None, 0, true).await?;
        let s = self.0.lock().unwrap();
        Ok(Response::new(pb::ChangeResponse {
            header: self.header(&s),
            members: s.members.clone(),
        }))
    }

    async fn trigger_snapshot(
        &self,
        _r: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        self.gate("trigger_snapshot", None, 0, true).await?;
        let s = self.0.lock().unwrap();
        Ok(Response::new(pb::TriggerSnapshotResponse {
            header: self.header(&s),
            snapshot_index: s.revision,
        }))
    }

    async fn node_status(
        &self,
        _r: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::NodeStatusResponse>, Status> {
        self.gate("node_status", None, 0, false).await?;
        let s = self.0.lock().unwrap();
        Ok(Response::new(pb::NodeStatusResponse {
            header: self.header(&s),
            id: s.id,
            role: if s.is_leader { "leader" } else { "follower" }.into(),
            leader_id: s.leader.as_ref().map_or(0, |l| l.0),
            commit_index: s.revision,
            applied_index: s.revision,
            last_log_index: s.revision,
            snapshot_index: 0,
            members: s.members.clone(),
            ..Default::default()
        }))
    }
}
