//! `Engine.call(method, request)`: the coordination calls of the embedded
//! engine (ranges, delete-range, transactions, leases, locks, election),
//! taking and returning serialized `dengine.v1` messages. The Python side
//! builds and reads them with the same code as the gRPC client, so both
//! modes share one codec; the calls run on the embedded client (forwarded
//! to the leader like every call).
//!
//! Admin calls (`AddLearner`, `Promote`, `RemoveMember`, `TransferLeader`,
//! `TriggerSnapshot`, `NodeStatus`) run on the local node's handle, like a
//! Rust embedder's `engine.handle()`: changes on a follower are NotLeader.
//!
//! Contract: an unknown method or an undecodable request is
//! `InvalidArgument`; otherwise the call's own errors.

use std::time::Duration;

use d_engine::{convert, CoordClient, EmbeddedClient, Error, LeaderKey, Result};
use d_engine_proto::v1 as pb;
use prost::Message;

fn decode<M: Message + Default>(method: &str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes)
        .map_err(|e| Error::InvalidArgument(format!("{method}: undecodable request: {e}")))
}

fn header(c: &EmbeddedClient) -> Option<pb::ResponseHeader> {
    let h = c.handle().header();
    Some(pb::ResponseHeader {
        node_id: h.node_id,
        term: h.term,
        revision: h.revision,
    })
}

fn leader_key(k: Option<pb::LeaderKey>) -> Result<LeaderKey> {
    let k = k.ok_or_else(|| Error::InvalidArgument("leader is missing".into()))?;
    Ok(LeaderKey {
        name: k.name,
        key: k.key,
        revision: k.revision,
        lease: k.lease,
    })
}

/// Runs `method` with the serialized request `req`; returns the serialized
/// response.
pub async fn dispatch(c: EmbeddedClient, method: String, req: Vec<u8>) -> Result<Vec<u8>> {
    let m = method.as_str();
    Ok(match m {
        "Range" => {
            let (key, options) = convert::range_request_from_wire(decode(m, &req)?)?;
            let page = c.range(key, options).await?;
            convert::range_page_to_wire(page, header(&c)).encode_to_vec()
        }
        "DeleteRange" => {
            let r: pb::DeleteRangeRequest = decode(m, &req)?;
            let end = convert::range_end_from_wire(r.range_end);
            let d = c.delete_range(r.key, end, r.prev_kv).await?;
            convert::delete_range_to_wire(d, header(&c)).encode_to_vec()
        }
        "Txn" => {
            let (txn, _) = convert::txn_from_wire(decode(m, &req)?)?;
            let out = c.txn(txn).await?;
            convert::txn_outcome_to_wire(out, header(&c)).encode_to_vec()
        }
        "Put" => {
            let r: pb::PutRequest = decode(m, &req)?;
            let revision = match (r.lease, r.ttl_ms) {
                (0, 0) => c.put(r.key, r.value).await?,
                (0, ms) => {
                    c.put_with_ttl(r.key, r.value, Duration::from_millis(ms))
                        .await?
                }
                (lease, 0) => c.put_with_lease(r.key, r.value, lease).await?,
                _ => {
                    return Err(Error::InvalidArgument(
                        "a put takes a lease or a ttl, not both".into(),
                    ))
                }
            };
            pb::PutResponse {
                header: header(&c),
                revision,
            }
            .encode_to_vec()
        }
        "LeaseGrant" => {
            let r: pb::LeaseGrantRequest = decode(m, &req)?;
            let g = if r.id == 0 {
                c.lease_grant(Duration::from_millis(r.ttl_ms)).await?
            } else {
                c.lease_grant_with_id(Duration::from_millis(r.ttl_ms), r.id)
                    .await?
            };
            pb::LeaseGrantResponse {
                header: header(&c),
                id: g.id,
                ttl_ms: convert::duration_ms(g.ttl),
                revision: g.revision,
            }
            .encode_to_vec()
        }
        "LeaseRevoke" => {
            let r: pb::LeaseRevokeRequest = decode(m, &req)?;
            let deleted = c.lease_revoke(r.id).await?;
            pb::LeaseRevokeResponse {
                header: header(&c),
                deleted,
                revision: c.handle().header().revision,
            }
            .encode_to_vec()
        }
        "LeaseRenew" => {
            let r: pb::LeaseKeepAliveRequest = decode(m, &req)?;
            let ttl = c.lease_renew(r.id).await?;
            pb::LeaseKeepAliveResponse {
                header: header(&c),
                id: r.id,
                ttl_ms: convert::duration_ms(ttl),
            }
            .encode_to_vec()
        }
        "LeaseTimeToLive" => {
            let r: pb::LeaseTimeToLiveRequest = decode(m, &req)?;
            let t = c.lease_time_to_live(r.id, r.keys).await?;
            pb::LeaseTimeToLiveResponse {
                header: header(&c),
                id: t.id,
                granted_ttl_ms: convert::duration_ms(t.granted_ttl),
                remaining_ms: convert::duration_ms(t.remaining),
                keys: t.keys,
                key_count: t.key_count,
            }
            .encode_to_vec()
        }
        "LeaseList" => {
            let leases = c.lease_list().await?;
            pb::LeaseListResponse {
                header: header(&c),
                leases: leases
                    .into_iter()
                    .map(|l| pb::LeaseStatus {
                        id: l.id,
                        granted_ttl_ms: convert::duration_ms(l.granted_ttl),
                    })
                    .collect(),
            }
            .encode_to_vec()
        }
        "Lock" => {
            let r: pb::LockRequest = decode(m, &req)?;
            let k = c.lock(r.name, r.lease).await?;
            pb::LockResponse {
                header: header(&c),
                key: k.key,
                revision: k.revision,
            }
            .encode_to_vec()
        }
        "Unlock" => {
            let r: pb::UnlockRequest = decode(m, &req)?;
            c.unlock(r.key).await?;
            pb::UnlockResponse { header: header(&c) }.encode_to_vec()
        }
        "Campaign" => {
            let r: pb::CampaignRequest = decode(m, &req)?;
            let l = c.campaign(r.name, r.lease, r.value).await?;
            pb::CampaignResponse {
                header: header(&c),
                leader: Some(pb::LeaderKey {
                    name: l.name,
                    key: l.key,
                    revision: l.revision,
                    lease: l.lease,
                }),
            }
            .encode_to_vec()
        }
        "Proclaim" => {
            let r: pb::ProclaimRequest = decode(m, &req)?;
            c.proclaim(&leader_key(r.leader)?, r.value).await?;
            pb::ProclaimResponse { header: header(&c) }.encode_to_vec()
        }
        "Resign" => {
            let r: pb::ResignRequest = decode(m, &req)?;
            c.resign(&leader_key(r.leader)?).await?;
            pb::ResignResponse { header: header(&c) }.encode_to_vec()
        }
        "Leader" => {
            let r: pb::ElectionLeaderRequest = decode(m, &req)?;
            let kv = c.election_leader(r.name).await?;
            pb::ElectionLeaderResponse {
                header: header(&c),
                kv: kv.map(convert::kv_to_wire),
            }
            .encode_to_vec()
        }
        // Admin calls on the local node (leader-only ones answer NotLeader
        // on a follower, as for a Rust embedder's `NodeHandle`).
        "AddLearner" => {
            let r: pb::AddLearnerRequest = decode(m, &req)?;
            let ms = c
                .handle()
                .add_learner(r.id, r.peer_addr, r.client_addr)
                .await?;
            change_response(&c, ms)
        }
        "Promote" => {
            let r: pb::PromoteRequest = decode(m, &req)?;
            let ms = c.handle().promote_with(r.id, r.force).await?;
            change_response(&c, ms)
        }
        "RemoveMember" => {
            let r: pb::RemoveMemberRequest = decode(m, &req)?;
            let ms = c.handle().remove_member(r.id).await?;
            change_response(&c, ms)
        }
        "TransferLeader" => {
            let r: pb::TransferLeaderRequest = decode(m, &req)?;
            c.handle().transfer_leader(r.to).await?;
            change_response(&c, c.handle().members())
        }
        "TriggerSnapshot" => {
            let snapshot_index = c.handle().trigger_snapshot().await?;
            pb::TriggerSnapshotResponse {
                header: header(&c),
                snapshot_index,
            }
            .encode_to_vec()
        }
        "NodeStatus" => {
            convert::node_status_to_wire(c.handle().status(), header(&c)).encode_to_vec()
        }
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown embedded call {other:?}"
            )))
        }
    })
}

fn change_response(c: &EmbeddedClient, members: Vec<d_engine::MemberInfo>) -> Vec<u8> {
    pb::ChangeResponse {
        header: header(c),
        members: convert::members_to_wire(members),
    }
    .encode_to_vec()
}
