//! Byte budgets of the stored data and of the log (issue 16, finding 5):
//! the storage quota (`storage.quota_bytes`) refuses writes with `NoSpace`
//! and raises the NOSPACE alarm while reads and deletes keep working, and
//! snapshots are also triggered by the log's bytes
//! (`snapshot.threshold_bytes`), not only by its entry count.

mod common;

use std::time::{Duration, Instant};

use d_engine_node::runtime::Alarm;
use d_engine_node::{status_codec, Config, EmbeddedEngine, Error};
use d_engine_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::kv_client::KvClient;
use tonic::transport::Channel;

/// Key + value + 32 bytes of metadata: what the quota counts per key.
fn logical(key: &str, value_len: usize) -> u64 {
    (key.len() + value_len) as u64 + 32
}

const QUOTA: u64 = 4096;
const VALUE: usize = 1000;

async fn embedded(tune: impl FnOnce(&mut Config)) -> (EmbeddedEngine, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::single_node(dir.path());
    cfg.client_addr.clear();
    tune(&mut cfg);
    cfg.validate().unwrap();
    let e = EmbeddedEngine::start_in_process(cfg).await.expect("start");
    e.wait_ready(Duration::from_secs(10)).await.expect("ready");
    (e, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_writes_past_the_quota_fail_with_no_space_and_deletes_clear_the_alarm() {
    let (e, _dir) = embedded(|c| c.storage.quota_bytes = QUOTA).await;
    let c = e.client();
    let v = vec![7u8; VALUE];
    // Three keys of 1036 logical bytes fit in 4096; a fourth does not.
    for k in ["k1", "k2", "k3"] {
        c.put(k, &v).await.expect("under the quota");
    }
    let st = e.status();
    assert_eq!(st.data_bytes, 3 * logical("k1", VALUE));
    assert_eq!(st.quota_bytes, QUOTA);
    assert!(st.alarms.is_empty(), "{:?}", st.alarms);

    let err = c.put("k4", &v).await.expect_err("past the quota");
    let Error::NoSpace(msg) = &err else {
        panic!("expected NoSpace, got {err:?}")
    };
    let used = format!("stores {} bytes", 3 * logical("k1", VALUE));
    let adds = format!("add {} bytes", logical("k4", VALUE));
    for want in ["storage.quota_bytes = 4096", "delete keys", &used, &adds] {
        assert!(msg.contains(want), "the message lacks {want:?}: {msg}");
    }
    assert!(!err.is_retryable());
    assert_eq!(e.status().alarms, vec![Alarm::NoSpace]);
    // Every kind of write that stores data is checked: TTL put, CAS that
    // stores, an overwrite (counted in full: admission reads nothing).
    let err = c
        .put_with_ttl("k4", &v, Duration::from_secs(60))
        .await
        .expect_err("TTL put past the quota");
    assert!(matches!(err, Error::NoSpace(_)), "{err:?}");
    let err = c
        .compare_and_swap("k5", None, Some(v.clone()))
        .await
        .expect_err("a CAS that stores past the quota");
    assert!(matches!(err, Error::NoSpace(_)), "{err:?}");
    let err = c.put("k1", &v).await.expect_err("overwrite past the quota");
    assert!(matches!(err, Error::NoSpace(_)), "{err:?}");
    assert_eq!(c.get("k4").await.unwrap(), None, "nothing was written");
    assert_eq!(c.get("k5").await.unwrap(), None, "nothing was written");
    assert_eq!(e.status().alarms, vec![Alarm::NoSpace]);

    // Reads, a CAS that deletes, deletes and snapshots still work.
    assert_eq!(c.get("k1").await.unwrap().unwrap().value, v);
    assert!(
        c.compare_and_swap("k3", Some(v.clone()), None)
            .await
            .unwrap()
            .succeeded
    );
    e.handle()
        .trigger_snapshot()
        .await
        .expect("a snapshot under the alarm");
    // The CAS delete freed space: the alarm cleared.
    let st = e.status();
    assert_eq!(st.data_bytes, 2 * logical("k1", VALUE));
    assert!(st.alarms.is_empty(), "{:?}", st.alarms);
    c.put("k4", &v).await.expect("space was freed");
    assert!(c.delete("k4").await.unwrap());
    assert!(c.delete("k2").await.unwrap());
    assert_eq!(e.status().data_bytes, logical("k1", VALUE));
    e.stop().await.unwrap();
}

fn put(key: &str, value: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        key: key.into(),
        value: value.to_vec(),
        ..Default::default()
    }
}

async fn alarms(admin: &mut AdminClient<Channel>) -> Vec<String> {
    let st = admin.node_status(pb::NodeStatusRequest {}).await.unwrap();
    st.into_inner().alarms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_gets_no_space_and_sees_the_alarm_in_node_status() {
    let (engine, url, _dir) = common::single_node(|c| c.storage.quota_bytes = QUOTA).await;
    let ch = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let (mut kv, mut admin) = (KvClient::new(ch.clone()), AdminClient::new(ch));
    let v = vec![1u8; VALUE];
    for k in ["k1", "k2", "k3"] {
        kv.put(put(k, &v)).await.expect("under the quota");
    }
    let status = kv.put(put("k4", &v)).await.expect_err("past the quota");
    let err = status_codec::from_status(&status);
    assert!(
        matches!(&err, Error::NoSpace(m) if m.contains("storage.quota_bytes")),
        "{err:?}"
    );
    let st = admin
        .node_status(pb::NodeStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.alarms, vec!["NOSPACE".to_string()]);
    assert_eq!(st.quota_bytes, QUOTA);
    assert_eq!(st.data_bytes, 3 * logical("k1", VALUE));
    // Reads and deletes work; the delete clears the alarm; writes resume.
    let got = kv
        .get(pb::GetRequest {
            key: b"k2".to_vec(),
            consistency: pb::Consistency::Linearizable as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.kv.unwrap().value, v);
    let deleted = kv
        .delete(pb::DeleteRequest {
            key: b"k2".to_vec(),
            write_id: None,
        })
        .await
        .unwrap();
    assert!(deleted.into_inner().deleted);
    assert!(alarms(&mut admin).await.is_empty());
    kv.put(put("k4", &v)).await.expect("space was freed");
    engine.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_quota_when_set_to_zero() {
    let (e, _dir) = embedded(|c| c.storage.quota_bytes = 0).await;
    let c = e.client();
    for i in 0..8 {
        c.put(format!("k{i}"), vec![0u8; VALUE]).await.unwrap();
    }
    let st = e.status();
    assert!(st.alarms.is_empty());
    assert_eq!(st.quota_bytes, 0);
    assert_eq!(st.data_bytes, 8 * logical("k0", VALUE));
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_taken_once_the_log_passes_threshold_bytes() {
    const THRESHOLD: u64 = 1 << 20;
    let (e, _dir) = embedded(|c| {
        // The entry threshold alone would never fire in this test.
        c.snapshot.threshold_entries = 1_000_000;
        c.snapshot.threshold_bytes = THRESHOLD;
    })
    .await;
    let c = e.client();
    let v = vec![3u8; 64 << 10];
    // 24 values of 64 KiB: 1.5 MiB of payload, past the 1 MiB threshold.
    for i in 0..24 {
        c.put(format!("big/{i}"), &v).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = e.status();
        if st.snapshot_index > 0 && st.log_bytes <= THRESHOLD {
            // Compacted: the log since the snapshot is under the threshold.
            assert!(
                st.last_log_index - st.snapshot_index < 24,
                "the log was compacted to the snapshot: {st:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no snapshot after 1.5 MiB of log with threshold_bytes = 1 MiB: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every value is still there, read back from the state machine.
    assert_eq!(c.get("big/0").await.unwrap().unwrap().value, v);
    e.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_stay_under_the_byte_threshold() {
    let (e, _dir) = embedded(|c| {
        c.snapshot.threshold_entries = 1_000_000;
        c.snapshot.threshold_bytes = 1 << 20;
    })
    .await;
    let c = e.client();
    for i in 0..50 {
        c.put(format!("k{i}"), b"small").await.unwrap();
    }
    let st = e.status();
    assert_eq!(st.snapshot_index, 0, "no snapshot below both thresholds");
    assert!(st.log_bytes > 0 && st.log_bytes < 1 << 20, "{st:?}");
    e.stop().await.unwrap();
}
