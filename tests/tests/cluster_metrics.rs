//! Observability on real processes: `/metrics` (Prometheus text) moves
//! under load, and `/ready` plus gRPC health follow whether a node still
//! has a live leader (docs/metrics.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use d_engine_proto::v1 as pb;
use d_engine_tests::cluster::{free_ports, Cluster, ClusterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const BOUND: Duration = Duration::from_secs(30);

/// A 3-node cluster whose nodes serve `/metrics` on their own port;
/// returns it with node id → metrics address.
async fn cluster_with_metrics() -> (Cluster, BTreeMap<u64, String>) {
    let mut c = Cluster::prepare(ClusterConfig::default());
    let ids = c.ids();
    let ports = free_ports(ids.len());
    let mut addrs = BTreeMap::new();
    for (id, port) in ids.iter().zip(ports) {
        let addr = format!("127.0.0.1:{port}");
        let spec = &mut c.node(*id).spec;
        spec.args.push("--listen-metrics".into());
        spec.args.push(addr.clone());
        addrs.insert(*id, addr);
    }
    c.start_all();
    c.wait_leader(BOUND).await.unwrap();
    (c, addrs)
}

/// A plain HTTP/1.1 GET: (status code, content type, body). Errors are
/// returned as text (the node may be down).
async fn get(addr: &str, path: &str) -> Result<(u16, String, String), String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| format!("GET {addr}{path}: no answer within 5 s"))?
        .map_err(|e| format!("GET {addr}{path}: {e}"))?;
    let text = String::from_utf8(buf).map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no header end in {text:?}"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let ctype = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok((status, ctype, body.to_string()))
}

/// Parses the Prometheus text exposition format strictly enough to catch
/// a malformed line: `# HELP`/`# TYPE` comments, and samples
/// `name{label="value",...} number`. Returns sample (name with labels as
/// written) → value. Panics naming the bad line.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut typed = 0;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts.next().unwrap_or("");
            assert!(
                kind == "HELP" || kind == "TYPE",
                "unknown comment line {line:?}"
            );
            assert!(name.starts_with("dengine_"), "metric name in {line:?}");
            if kind == "TYPE" {
                let t = parts.next().unwrap_or("");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&t),
                    "bad type in {line:?}"
                );
                typed += 1;
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample without value: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels in {line:?}"
            );
            for pair in labels[1..labels.len() - 1].split("\",") {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                assert!(!k.is_empty(), "empty label name in {line:?}");
                assert!(v.starts_with('"'), "unquoted label value in {line:?}");
            }
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value {v:?} in {line:?}")),
        };
        out.insert(series.to_string(), v);
    }
    assert!(
        typed > 20,
        "expected every metric to have a TYPE line:\n{text}"
    );
    out
}

async fn scrape(addr: &str) -> BTreeMap<String, f64> {
    let (status, ctype, body) = get(addr, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        ctype.starts_with("text/plain") && ctype.contains("version=0.0.4"),
        "content type {ctype:?}"
    );
    parse_prometheus(&body)
}

fn val(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_under_load() {
    let (mut c, addrs) = cluster_with_metrics().await;
    let leader = c.wait_leader(BOUND).await.unwrap();
    let follower = *c.ids().iter().find(|id| **id != leader).unwrap();
    // The exposition lists label names in sorted order.
    let put_ok = "dengine_grpc_requests_total{code=\"OK\",method=\"/dengine.v1.Kv/Put\"}";
    let put_bad =
        "dengine_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"/dengine.v1.Kv/Put\"}";
    let proposals = "dengine_proposals_total{result=\"ok\"}";

    let before = scrape(&addrs[&leader]).await;
    let f_before = scrape(&addrs[&follower]).await;
    assert_eq!(val(&before, "dengine_is_leader"), 1.0);
    assert_eq!(val(&before, "dengine_role{role=\"leader\"}"), 1.0);
    assert_eq!(val(&f_before, "dengine_is_leader"), 0.0);
    assert_eq!(val(&f_before, "dengine_leader_id"), leader as f64);
    assert!(val(&before, "dengine_leader_changes_total") >= 1.0);

    // A little load: 40 writes through the leader's client port, reads,
    // and one bad request.
    let mut kv = c.kv(leader).await.unwrap();
    let mut last = 0;
    for i in 0..40u32 {
        last = kv
            .put(pb::PutRequest {
                key: format!("m{i:03}").into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("put {i}: {e}\n{}", c.log_tails(20)))
            .into_inner()
            .header
            .map(|h| h.revision)
            .unwrap_or(0);
    }
    let err = kv
        .put(pb::PutRequest {
            key: Vec::new(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for id in c.ids() {
        c.wait_applied(id, last, BOUND).await.unwrap();
    }

    let after = scrape(&addrs[&leader]).await;
    assert!(
        val(&after, proposals) >= val(&before, proposals) + 40.0,
        "proposals: {} -> {}",
        val(&before, proposals),
        val(&after, proposals)
    );
    assert!(
        val(&after, put_ok) >= val(&before, put_ok) + 40.0,
        "{put_ok}: {} -> {}",
        val(&before, put_ok),
        val(&after, put_ok)
    );
    assert!(
        val(&after, put_bad) >= val(&before, put_bad) + 1.0,
        "{put_bad}: {} -> {}",
        val(&before, put_bad),
        val(&after, put_bad)
    );
    assert!(val(&after, "dengine_applied_index") >= last as f64);
    assert!(val(&after, "dengine_applied_index") > val(&before, "dengine_applied_index"));
    assert!(
        val(&after, "dengine_proposal_duration_seconds_count")
            >= val(&before, "dengine_proposal_duration_seconds_count") + 40.0
    );
    assert!(
        val(&after, "dengine_wal_sync_duration_seconds_count")
            > val(&before, "dengine_wal_sync_duration_seconds_count")
    );
    assert!(val(&after, "dengine_apply_duration_seconds_count") > 0.0);
    // The leader reports every follower's lag (a number; 0 once caught up).
    for id in c.ids().into_iter().filter(|id| *id != leader) {
        let series = format!("dengine_follower_lag_entries{{follower=\"{id}\"}}");
        assert!(after.contains_key(&series), "no {series} in {after:?}");
    }
    assert_eq!(val(&after, "dengine_ready"), 1.0);
    assert_eq!(val(&after, "dengine_live"), 1.0);

    // The follower applied the same writes and replicated them to its WAL.
    let f_after = scrape(&addrs[&follower]).await;
    assert!(val(&f_after, "dengine_applied_index") >= last as f64);
    assert!(
        val(&f_after, "dengine_wal_sync_batch_entries_sum")
            > val(&f_before, "dengine_wal_sync_batch_entries_sum")
    );
    let silence = val(&f_after, "dengine_leader_last_contact_seconds");
    assert!((0.0..5.0).contains(&silence), "follower silence {silence}");

    // Unknown paths are 404.
    let (status, _, _) = get(&addrs[&leader], "/nope").await.unwrap();
    assert_eq!(status, 404);
}

/// `/ready`'s JSON body: (HTTP status, ready flag, reasons).
async fn ready(addr: &str) -> Result<(u16, bool, String), String> {
    let (status, _, body) = get(addr, "/ready").await?;
    let flag = body.contains("\"ready\":true");
    Ok((status, flag, body))
}

async fn grpc_serving(c: &Cluster, id: u64) -> Result<bool, String> {
    let ch = c.channel(id).await?;
    let r = HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(r.into_inner().status == 1)
}

/// Waits until node `id`'s `/ready` and gRPC health both say `want`.
async fn wait_ready_is(c: &Cluster, addrs: &BTreeMap<u64, String>, id: u64, want: bool) {
    let deadline = Instant::now() + BOUND;
    let mut last: String;
    loop {
        match (ready(&addrs[&id]).await, grpc_serving(c, id).await) {
            (Ok((status, flag, body)), Ok(serving)) => {
                let expect_status = if want { 200 } else { 503 };
                if status == expect_status && flag == want && serving == want {
                    if !want {
                        assert!(
                            body.contains("\"reasons\":[\""),
                            "a node that is not ready says why: {body}"
                        );
                    }
                    return;
                }
                last = format!("/ready {status} {body}; gRPC serving {serving}");
            }
            (a, b) => last = format!("{a:?} {b:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "node {id}: /ready and gRPC health did not become {want} within {BOUND:?}; \
             last: {last}\n{}",
            c.log_tails(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_grpc_health_follow_the_majority() {
    let (mut c, addrs) = cluster_with_metrics().await;
    for id in c.ids() {
        wait_ready_is(&c, &addrs, id, true).await;
    }

    // Round 1: the leader loses both followers (check_quorum deposes it);
    // round 2: a follower loses the leader and the other follower.
    for round in 0..2 {
        let leader = c.wait_leader(BOUND).await.unwrap();
        let survivor = if round == 0 {
            leader
        } else {
            *c.ids().iter().find(|id| **id != leader).unwrap()
        };
        let others: Vec<u64> = c.ids().into_iter().filter(|id| *id != survivor).collect();
        for id in &others {
            c.kill(*id);
        }
        wait_ready_is(&c, &addrs, survivor, false).await;
        // Still alive: liveness does not depend on the majority.
        let (status, _, body) = get(&addrs[&survivor], "/health").await.unwrap();
        assert_eq!(status, 200, "round {round}: {body}");
        assert!(body.contains("\"live\":true"), "{body}");

        for id in &others {
            c.restart(*id);
        }
        c.wait_leader(BOUND).await.unwrap();
        for id in c.ids() {
            wait_ready_is(&c, &addrs, id, true).await;
        }
    }
}
