//! `GrpcCluster`: who is in the cluster and who leads.

use d_engine_proto::v1 as pb;
use tokio::time::Instant;

use crate::client::Client;
use crate::convert;
use crate::error::{Error, Result};
use crate::router::{request, Retry, Route};
use crate::types::{LeaderInfo, MemberInfo};

/// Cluster information; from [`Client::cluster`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcCluster {
    pub(crate) client: Client,
}

/// The membership as one node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub members: Vec<MemberInfo>,
    /// 0 if the answering node knows no leader.
    pub leader_id: u64,
    /// Node that answered.
    pub node_id: u64,
    pub term: u64,
}

impl GrpcCluster {
    /// The members, asked of the leader if known (else any node).
    pub async fn members(&self) -> Result<Vec<MemberInfo>> {
        self.membership().await.map(|m| m.members)
    }

    /// Members plus the answering node's view of the leader.
    pub async fn membership(&self) -> Result<Membership> {
        let inner = &self.client.inner;
        let resp = inner
            .execute("members", Route::PreferLeader, Retry::Safe, |ch, t| {
                let mut rpc = inner.cluster_rpc(ch);
                let req = request(pb::MembersRequest {}, t);
                async move { Ok(rpc.members(req).await?.into_inner()) }
            })
            .await?;
        let h = resp.header.unwrap_or_default();
        Ok(Membership {
            members: convert::members(resp.members),
            leader_id: resp.leader_id,
            node_id: h.node_id,
            term: h.term,
        })
    }

    /// The current leader. Asks the cached leader first, then every
    /// endpoint; updates the client's leader cache. `id == 0` (and an empty
    /// address) when nodes answer but none knows a leader (an election is
    /// in progress).
    pub async fn leader(&self) -> Result<LeaderInfo> {
        let inner = &self.client.inner;
        if let Some(addr) = inner.cached_leader() {
            match inner.query_leader(&addr, inner.cfg.attempt_timeout).await {
                Ok(r) if r.leader_id != 0 && !r.leader_addr.is_empty() => {
                    let node_id = r.header.as_ref().map_or(0, |h| h.node_id);
                    if let Some(l) =
                        inner.accept_leader(&r.leader_addr, r.leader_id, Some((&addr, node_id)))
                    {
                        inner.set_leader(Some(l));
                        return Ok(convert::leader(&r));
                    }
                }
                _ => {}
            }
            inner.set_leader(None);
        }
        let deadline = Instant::now() + inner.cfg.request_timeout;
        match inner.discover(deadline, false).await {
            Ok((_, Some(r))) => Ok(convert::leader(&r)),
            Ok((addr, None)) => Err(Error::Internal(format!(
                "leader discovery returned {addr} without an answer"
            ))),
            Err(Error::NoLeader(_)) => Ok(LeaderInfo {
                id: 0,
                client_addr: String::new(),
                term: 0,
            }),
            Err(e) => Err(e),
        }
    }
}
