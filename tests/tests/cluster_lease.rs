//! Leases on real server processes: expiry is decided by the leader and
//! replicated (every node deletes the keys, watchers on followers see the
//! deletes), a leader change never expires a lease early, a holder that
//! stops renewing loses its lease and its keys, and followers refuse lease
//! calls with NOT_LEADER and the leader's address.
//!
//! The tests in this file run one at a time (a 2-core CI machine should
//! not host several clusters at once: timing bounds would become noise).

use std::time::{Duration, Instant};

use d_engine_client::Error;
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::lease_client::LeaseClient;
use d_engine_tests::cluster::{Cluster, ClusterConfig};
use tonic::transport::Channel;
use tonic::Code;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ELECTION_TIMEOUT_MS: u64 = 500;
const NEW_LEADER_BOUND: Duration = Duration::from_millis(20 * ELECTION_TIMEOUT_MS);

fn config() -> ClusterConfig {
    ClusterConfig {
        nodes: 3,
        election_timeout_ms: ELECTION_TIMEOUT_MS,
        ..Default::default()
    }
}

async fn lease_client(c: &Cluster, id: u64) -> LeaseClient<Channel> {
    LeaseClient::new(c.channel(id).await.expect("connect"))
}

/// The error class a status decodes to (`NOT_LEADER`, `LEASE_NOT_FOUND`, ...).
fn reason(s: &tonic::Status) -> String {
    format!("{:?}", Error::from(s.clone()).code())
}

/// Grants a lease of `ttl_ms` on the leader `l` and attaches `keys`.
async fn grant_with_keys(c: &Cluster, l: u64, ttl_ms: u64, keys: &[&str]) -> u64 {
    let g = lease_client(c, l)
        .await
        .lease_grant(pb::LeaseGrantRequest {
            ttl_ms,
            ..Default::default()
        })
        .await
        .expect("grant on the leader")
        .into_inner();
    let mut kv = c.kv(l).await.unwrap();
    for k in keys {
        kv.put(pb::PutRequest {
            key: k.as_bytes().to_vec(),
            value: b"v".to_vec(),
            lease: g.id,
            ..Default::default()
        })
        .await
        .expect("put with the lease");
    }
    g.id
}

/// Whether `key` exists on node `id` (its own state: an eventual read).
async fn exists(c: &Cluster, id: u64, key: &str) -> Option<bool> {
    let mut kv = c.kv(id).await.ok()?;
    let r = kv
        .get(pb::GetRequest {
            key: key.as_bytes().to_vec(),
            consistency: pb::Consistency::Eventual as i32,
        })
        .await
        .ok()?;
    Some(r.into_inner().kv.is_some())
}

/// Renews `id` on whoever leads now; true once a renewal succeeded.
async fn renew_anywhere(c: &mut Cluster, id: u64) -> bool {
    let Ok(l) = c.wait_leader(Duration::from_millis(200)).await else {
        return false;
    };
    let Ok(ch) = c.channel(l).await else {
        return false;
    };
    LeaseClient::new(ch)
        .lease_renew(pb::LeaseKeepAliveRequest { id })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_is_replicated_and_followers_refuse_lease_calls() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(config());
    let l = c.wait_leader(NEW_LEADER_BOUND).await.unwrap();
    let follower = *c.ids().iter().find(|id| **id != l).unwrap();

    // A follower refuses every lease call with the leader's address.
    let mut fl = lease_client(&c, follower).await;
    let e = fl
        .lease_grant(pb::LeaseGrantRequest {
            ttl_ms: 1000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    match Error::from(e) {
        Error::NotLeader {
            leader_id,
            leader_addr,
        } => {
            assert_eq!(leader_id, Some(l));
            assert_eq!(leader_addr, Some(c.client_addr(l)));
        }
        other => panic!("{other:?}"),
    }
    for e in [
        fl.lease_renew(pb::LeaseKeepAliveRequest { id: 7 })
            .await
            .unwrap_err(),
        fl.lease_list(pb::LeaseListRequest {}).await.unwrap_err(),
        fl.lease_time_to_live(pb::LeaseTimeToLiveRequest { id: 7, keys: false })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(reason(&e), "NotLeader", "{e:?}");
    }

    // A watch on a follower sees the expiry's deletes.
    let mut watch = c
        .kv(follower)
        .await
        .unwrap()
        .watch(pb::WatchRequest {
            key: b"svc/".to_vec(),
            prefix: true,
            start_revision: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(watch.message().await.unwrap().unwrap().created);

    let ttl = Duration::from_millis(1500);
    let id = grant_with_keys(&c, l, ttl.as_millis() as u64, &["svc/a", "svc/b", "svc/c"]).await;
    // Renewed for three TTLs: the keys stay (on every node).
    let start = Instant::now();
    while start.elapsed() < 3 * ttl {
        lease_client(&c, l)
            .await
            .lease_renew(pb::LeaseKeepAliveRequest { id })
            .await
            .expect("renew");
        tokio::time::sleep(ttl / 5).await;
    }
    for n in c.ids() {
        assert_eq!(exists(&c, n, "svc/a").await, Some(true), "node {n}");
    }
    // The holder stops: the keys go, everywhere, in one replicated step.
    let stopped = Instant::now();
    let mut deletes = Vec::new();
    while deletes.len() < 3 {
        let m = tokio::time::timeout(ttl + Duration::from_secs(10), watch.message())
            .await
            .expect("the expiry reaches the follower's watch")
            .unwrap()
            .unwrap();
        // The puts that attached the keys came first.
        for ev in m.events {
            if ev.r#type == pb::EventType::Delete as i32 {
                deletes.push(ev.kv.unwrap().mod_revision);
            }
        }
    }
    let after = stopped.elapsed();
    assert!(
        after >= ttl - Duration::from_millis(300),
        "expired early: {after:?}"
    );
    assert!(deletes.iter().all(|r| *r == deletes[0]), "{deletes:?}");
    for n in c.ids() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while exists(&c, n, "svc/b").await != Some(false) {
            assert!(Instant::now() < deadline, "node {n} kept the key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let e = lease_client(&c, l)
        .await
        .lease_renew(pb::LeaseKeepAliveRequest { id })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(reason(&e), "LeaseNotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_survives_a_leader_change_without_expiring_early() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::start(config());
    let l = c.wait_leader(NEW_LEADER_BOUND).await.unwrap();
    let ttl = Duration::from_secs(4);

    // Lease A is kept alive by its holder across the leader change.
    let kept = grant_with_keys(&c, l, ttl.as_millis() as u64, &["kept/1"]).await;
    // Lease B's holder renews once more, then dies with the leader.
    let orphan = grant_with_keys(&c, l, ttl.as_millis() as u64, &["orphan/1"]).await;
    // Let the grants reach every node.
    tokio::time::sleep(Duration::from_millis(300)).await;
    lease_client(&c, l)
        .await
        .lease_renew(pb::LeaseKeepAliveRequest { id: orphan })
        .await
        .unwrap();
    let last_renew = Instant::now();
    c.kill(l);
    let next = c.wait_new_leader(l, NEW_LEADER_BOUND).await.unwrap();
    let elected = Instant::now();

    // Until the orphan's TTL has passed since its last renewal, nobody may
    // expire it; the kept lease is renewed throughout on whoever leads.
    let survivors: Vec<u64> = c.ids().into_iter().filter(|id| *id != l).collect();
    let mut renewed = 0;
    while last_renew.elapsed() < ttl - Duration::from_millis(200) {
        for n in &survivors {
            assert_ne!(
                exists(&c, *n, "orphan/1").await,
                Some(false),
                "node {n}: the orphan lease expired early ({:?} after its last renewal)",
                last_renew.elapsed()
            );
            assert_ne!(exists(&c, *n, "kept/1").await, Some(false), "node {n}");
        }
        if renew_anywhere(&mut c, kept).await {
            renewed += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(renewed > 0, "the kept lease was renewed on the new leader");
    // The new leader gave the orphan a full TTL from its election.
    let t = lease_client(&c, next)
        .await
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: orphan,
            keys: true,
        })
        .await;
    if let Ok(t) = t {
        let t = t.into_inner();
        assert_eq!(t.keys, [b"orphan/1".to_vec()]);
        assert!(
            Duration::from_millis(t.remaining_ms) + elected.elapsed()
                <= ttl + Duration::from_millis(500),
            "remaining {} ms",
            t.remaining_ms
        );
    }
    // ... and then it expires: the dead holder's keys go within about one
    // TTL after the election, while the kept lease lives on.
    let deadline = elected + ttl + Duration::from_secs(10);
    loop {
        let _ = renew_anywhere(&mut c, kept).await;
        if exists(&c, next, "orphan/1").await == Some(false) {
            break;
        }
        assert!(Instant::now() < deadline, "the orphan lease never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let gone_after = elected.elapsed();
    assert!(
        gone_after >= ttl - Duration::from_millis(300),
        "the new leader expired the orphan {gone_after:?} after its election (TTL {ttl:?})"
    );
    assert_eq!(exists(&c, next, "kept/1").await, Some(true));
    // The killed node comes back and catches up: the orphan's key is gone
    // there too, the kept one is not.
    c.restart(l);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = renew_anywhere(&mut c, kept).await;
        if exists(&c, l, "orphan/1").await == Some(false)
            && exists(&c, l, "kept/1").await == Some(true)
        {
            break;
        }
        assert!(Instant::now() < deadline, "node {l} did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
