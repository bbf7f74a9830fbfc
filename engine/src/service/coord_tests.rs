//! Kv.Range / DeleteRange / Txn and the Lease service over a real socket.

use std::time::Duration;

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::lease_client::LeaseClient;
use tonic::transport::Channel;
use tonic::Code;

use super::tests::{error_info, Fixture};

fn put(key: &str, value: Vec<u8>) -> pb::PutRequest {
    pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value,
        ..Default::default()
    }
}

fn lease(f: &Fixture) -> LeaseClient<Channel> {
    LeaseClient::new(f.channel.clone())
}

fn prefix_end(p: &str) -> Vec<u8> {
    d_engine_api::prefix_end(p.as_bytes())
}

#[tokio::test]
async fn range_pages_stop_at_the_limit_and_the_byte_budget_and_walk_everything() {
    let f = Fixture::start().await;
    let mut kv = f.kv();
    // Six values of 1 MiB: a 4 MiB response holds three of them.
    let mut last = 0;
    for i in 0..6 {
        last = kv
            .put(put(&format!("big/{i}"), vec![i as u8; 1 << 20]))
            .await
            .unwrap()
            .into_inner()
            .revision;
    }
    let mut key = b"big/".to_vec();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let p = kv
            .range(pb::RangeRequest {
                key: key.clone(),
                range_end: prefix_end("big/"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        // The request's range: from this page's first key on.
        assert_eq!(p.count as usize, 6 - seen.len());
        assert!(p.header.unwrap().revision >= last);
        assert!(!p.kvs.is_empty());
        seen.extend(p.kvs.iter().map(|kv| kv.key.to_vec()));
        if !p.more {
            assert!(p.next_key.is_empty());
            break;
        }
        key = p.next_key;
    }
    assert!(pages >= 2, "the byte budget split the range ({pages} page)");
    let want: Vec<Vec<u8>> = (0..6).map(|i| format!("big/{i}").into_bytes()).collect();
    assert_eq!(seen, want);
    // The limit, keys only.
    let p = kv
        .range(pb::RangeRequest {
            key: b"big/".to_vec(),
            range_end: prefix_end("big/"),
            limit: 4,
            keys_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.kvs.len(), 4, "keys only fit in one page");
    assert!(p.more && p.kvs.iter().all(|kv| kv.value.is_empty()));
    assert_eq!(p.next_key, b"big/3\0");
    f.shutdown().await;
}

#[tokio::test]
async fn bad_ranges_and_txns_name_the_field_and_the_limit() {
    let f = Fixture::start().await;
    let mut kv = f.kv();
    let e = kv
        .range(pb::RangeRequest {
            key: b"b".to_vec(),
            range_end: b"a".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(error_info(&e).1["field"], "range_end");
    let e = kv
        .range(pb::RangeRequest {
            key: b"a".to_vec(),
            range_end: b"\0".to_vec(),
            limit: 10_001,
            ..Default::default()
        })
        .await
        .unwrap_err();
    let (_, meta) = error_info(&e);
    assert_eq!(
        (meta["field"].as_str(), meta["limit"].as_str()),
        ("limit", "10000")
    );
    let e = kv
        .delete_range(pb::DeleteRangeRequest {
            key: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_info(&e).1["field"], "key");

    let op = |k: &str| pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(put(k, b"v".to_vec()))),
    };
    let e = kv
        .txn(pb::TxnRequest {
            success: (0..129).map(|i| op(&format!("k{i}"))).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let (_, meta) = error_info(&e);
    assert_eq!(
        (meta["field"].as_str(), meta["limit"].as_str()),
        ("success", "128")
    );
    let mut with_ttl = put("k", b"v".to_vec());
    with_ttl.ttl_ms = 5;
    let e = kv
        .txn(pb::TxnRequest {
            failure: vec![
                op("a"),
                pb::TxnOp {
                    op: Some(pb::txn_op::Op::Put(with_ttl)),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_info(&e).1["field"], "failure[1].put.ttl_ms");
    let e = kv
        .txn(pb::TxnRequest {
            compare: vec![pb::Compare {
                key: b"k".to_vec(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_info(&e).1["field"], "compare[0]");
    assert!(e.message().contains("no target"), "{}", e.message());
    let e = kv
        .txn(pb::TxnRequest {
            success: vec![pb::TxnOp { op: None }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_info(&e).1["field"], "success[0]");
    // Nothing was applied by any of them.
    let all = kv
        .range(pb::RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.count, 0);
    f.shutdown().await;
}

#[tokio::test]
async fn delete_range_and_txn_over_grpc() {
    let f = Fixture::start().await;
    let mut kv = f.kv();
    for k in ["acct/a", "acct/b", "other"] {
        kv.put(put(k, b"100".to_vec())).await.unwrap();
    }
    // Move 10 from a to b if a still holds 100.
    use pb::compare::{Op as CmpOp, Target};
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            op: CmpOp::Equal as i32,
            key: b"acct/a".to_vec(),
            target: Some(Target::Value(b"100".to_vec())),
        }],
        success: vec![
            pb::TxnOp {
                op: Some(pb::txn_op::Op::Put(put("acct/a", b"90".to_vec()))),
            },
            pb::TxnOp {
                op: Some(pb::txn_op::Op::Put(put("acct/b", b"110".to_vec()))),
            },
            pb::TxnOp {
                op: Some(pb::txn_op::Op::Range(pb::RangeRequest {
                    key: b"acct/".to_vec(),
                    range_end: prefix_end("acct/"),
                    ..Default::default()
                })),
            },
        ],
        failure: vec![],
        write_id: Some(pb::WriteId {
            client_id: 9,
            seq: 1,
        }),
    };
    let out = kv.txn(txn.clone()).await.unwrap().into_inner();
    assert!(out.succeeded && !out.replayed);
    assert_eq!(out.results.len(), 3);
    let Some(pb::txn_op_result::Result::Range(r)) = &out.results[2].result else {
        panic!("{:?}", out.results[2]);
    };
    let values: Vec<_> = r.kvs.iter().map(|kv| kv.value.to_vec()).collect();
    assert_eq!(values, [b"90".to_vec(), b"110".to_vec()]);
    let again = kv.txn(txn).await.unwrap().into_inner();
    assert!(again.replayed, "the retry is answered, not applied");
    assert_eq!(again.revision, out.revision);

    let d = kv
        .delete_range(pb::DeleteRangeRequest {
            key: b"acct/".to_vec(),
            range_end: prefix_end("acct/"),
            prev_kv: true,
            write_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.deleted, 2);
    assert_eq!(d.prev_kvs.len(), 2);
    assert!(d.revision > out.revision);
    let left = kv
        .range(pb::RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.kvs.len(), 1);
    assert_eq!(left.kvs[0].key, &b"other"[..]);
    f.shutdown().await;
}

#[tokio::test]
async fn lease_service_grants_keeps_alive_and_reports_lease_not_found() {
    let f = Fixture::start().await;
    let mut kv = f.kv();
    let mut ls = lease(&f);
    let e = ls
        .lease_grant(pb::LeaseGrantRequest {
            ttl_ms: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_info(&e).1["field"], "ttl_ms");
    let g = ls
        .lease_grant(pb::LeaseGrantRequest {
            ttl_ms: 60_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(g.id > 0);
    assert_eq!(g.ttl_ms, 60_000);
    let mut p = put("svc/1", b"addr".to_vec());
    p.lease = g.id;
    kv.put(p.clone()).await.unwrap();
    let got = kv
        .get(pb::GetRequest {
            key: b"svc/1".to_vec(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kv.unwrap().lease, g.id);
    // Lease and TTL together, and a missing lease.
    let mut both = p.clone();
    both.ttl_ms = 10;
    let e = kv.put(both).await.unwrap_err();
    assert_eq!(error_info(&e).1["field"], "lease");
    let mut missing = p.clone();
    missing.lease = 4242;
    let e = kv.put(missing).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let (reason, meta) = error_info(&e);
    assert_eq!(reason, "LEASE_NOT_FOUND");
    assert_eq!(meta["lease_id"], "4242");

    let ttl = ls
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: g.id,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ttl.granted_ttl_ms, 60_000);
    assert!(ttl.remaining_ms > 50_000 && ttl.remaining_ms <= 60_000);
    assert_eq!(ttl.keys, [b"svc/1".to_vec()]);
    assert_eq!(ttl.key_count, 1);
    let list = ls
        .lease_list(pb::LeaseListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.leases.len(), 1);
    assert_eq!(list.leases[0].id, g.id);

    // Keepalive: one response per request, ends with LEASE_NOT_FOUND.
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut stream = ls
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        tx.send(pb::LeaseKeepAliveRequest { id: g.id })
            .await
            .unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((r.id, r.ttl_ms), (g.id, 60_000));
    }
    let renewed = ls
        .lease_renew(pb::LeaseKeepAliveRequest { id: g.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.ttl_ms, 60_000);
    let rev = ls
        .lease_revoke(pb::LeaseRevokeRequest {
            id: g.id,
            write_id: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rev.deleted, 1);
    assert!(rev.revision > 0);
    tx.send(pb::LeaseKeepAliveRequest { id: g.id })
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(error_info(&e).1["lease_id"], g.id.to_string());
    assert!(
        tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .unwrap()
            .unwrap()
            .is_none(),
        "the stream ends after the error"
    );
    for e in [
        ls.lease_renew(pb::LeaseKeepAliveRequest { id: g.id })
            .await
            .unwrap_err(),
        ls.lease_revoke(pb::LeaseRevokeRequest {
            id: g.id,
            write_id: None,
        })
        .await
        .unwrap_err(),
        ls.lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: g.id,
            keys: false,
        })
        .await
        .unwrap_err(),
    ] {
        assert_eq!(error_info(&e).0, "LEASE_NOT_FOUND", "{e:?}");
    }
    assert!(kv
        .get(pb::GetRequest {
            key: b"svc/1".to_vec(),
            consistency: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .kv
        .is_none());
    f.shutdown().await;
}
