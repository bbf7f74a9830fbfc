//! [`Client::cluster_changes`](crate::Client::cluster_changes): follows
//! `Cluster.WatchCluster` across the configured endpoints.
//!
//! Contract: items follow [`d_engine_api::cluster_state`] (whole state per
//! item, first item with both flags, no repeats, the term never goes
//! backwards). Any node serves the stream (no consensus round), so when
//! the serving node's stream ends or breaks (it stopped, crashed, or the
//! connection failed) the stream is re-opened on the next endpoint in the
//! configured order, within `request_timeout`; since every message is the
//! whole state, nothing is lost across the switch, and a state identical
//! to the last one delivered is not delivered again. When no endpoint
//! serves it within `request_timeout`, or the credentials are refused, the
//! stream yields one `Err` and ends. Dropping the receiver ends it;
//! closing the client (`Client::close`) ends it with one
//! `Err(Error::CLIENT_CLOSED)`.
//!
//! Not detected: a serving node that is alive but cut off from the
//! others keeps reporting its own (stale) view; configure HTTP/2
//! keepalive (`ClientConfig::keepalive_interval`) to detect a silent peer.

use std::sync::Arc;

use d_engine_api::{ClusterChangeStream, ClusterState, ClusterStateTracker};
use d_engine_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Streaming;

use crate::convert;
use crate::error::{Error, ErrorCode, Result};
use crate::router::Inner;

/// Items buffered between the network task and the reader.
const BUFFER: usize = 4;

/// Opens the stream on the first endpoint that serves it and spawns the
/// task that feeds the returned receiver.
pub(crate) async fn open(inner: Arc<Inner>) -> Result<ClusterChangeStream> {
    inner.ensure_open()?;
    let (addr, stream, first) = connect(&inner, None).await?;
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(forward(inner, addr, stream, first, tx));
    Ok(rx)
}

fn is_final(e: &Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Unauthenticated | ErrorCode::PermissionDenied
    )
}

/// Asks `addr` for the stream and waits for its first message.
async fn open_on(
    inner: &Inner,
    addr: &str,
) -> Result<(Streaming<pb::ClusterEvent>, pb::ClusterEvent)> {
    let ch = inner.channel(addr)?;
    let mut rpc = inner.cluster_rpc(ch);
    // No grpc-timeout: it would end the stream.
    let mut stream = rpc
        .watch_cluster(tonic::Request::new(pb::WatchClusterRequest {}))
        .await?
        .into_inner();
    match stream.message().await? {
        Some(first) => Ok((stream, first)),
        None => Err(Error::Unavailable(format!(
            "{addr} closed the cluster watch before its first message"
        ))),
    }
}

/// Tries the endpoints in order, starting after `after` (the node whose
/// stream just ended) and going round, with the retry policy's backoff
/// between rounds, until `request_timeout` has passed.
async fn connect(
    inner: &Inner,
    after: Option<&str>,
) -> Result<(String, Streaming<pb::ClusterEvent>, pb::ClusterEvent)> {
    let deadline = Instant::now() + inner.cfg.request_timeout;
    let n = inner.endpoints.len();
    let start = after
        .and_then(|a| inner.endpoints.iter().position(|e| e == a))
        .map_or(0, |i| i + 1);
    let mut failures: Vec<String> = Vec::new();
    let mut round = 0u32;
    loop {
        for k in 0..n {
            let addr = &inner.endpoints[(start + k) % n];
            let budget = deadline
                .saturating_duration_since(Instant::now())
                .min(inner.cfg.attempt_timeout);
            if budget.is_zero() {
                break;
            }
            match tokio::time::timeout(budget, open_on(inner, addr)).await {
                Ok(Ok((stream, first))) => return Ok((addr.clone(), stream, first)),
                Ok(Err(e)) if is_final(&e) => return Err(e),
                Ok(Err(e)) => failures.push(format!("{addr}: {e}")),
                Err(_) => failures.push(format!("{addr}: no answer within {budget:?}")),
            }
        }
        round += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // The most recent failures say the most.
            let start = failures.len().saturating_sub(n);
            return Err(Error::Unavailable(format!(
                "cluster watch: no endpoint served it within {:?} ({})",
                inner.cfg.request_timeout,
                failures[start..].join("; ")
            )));
        }
        tokio::time::sleep(inner.cfg.retry.delay(round).min(left)).await;
    }
}

/// Feeds `tx` until the reader drops it or the stream cannot be re-opened.
async fn forward(
    inner: Arc<Inner>,
    mut addr: String,
    mut stream: Streaming<pb::ClusterEvent>,
    first: pb::ClusterEvent,
    tx: mpsc::Sender<Result<ClusterState>>,
) {
    let mut tracker = ClusterStateTracker::new();
    let mut pending = Some(first);
    loop {
        let msg = match pending.take() {
            Some(ev) => Ok(Some(ev)),
            None => tokio::select! {
                biased;
                _ = tx.closed() => return,
                _ = inner.wait_closed() => {
                    let _ = tx.send(Err(Error::CLIENT_CLOSED)).await;
                    return;
                }
                m = stream.message() => m,
            },
        };
        match msg {
            Ok(Some(ev)) => {
                let (node_id, leader, members) = convert::cluster_event(ev);
                if let Some(state) = tracker.observe(node_id, leader, members) {
                    if tx.send(Ok(state)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Err(st) => {
                let e = Error::from(st);
                if is_final(&e) {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                tracing::debug!(%addr, error = %e, "cluster watch broke; switching node");
            }
            // The node ended the stream (it sends SHUTTING_DOWN first; a
            // bare end is treated the same).
            Ok(None) => tracing::debug!(%addr, "cluster watch ended; switching node"),
        }
        let reopened = tokio::select! {
            biased;
            _ = tx.closed() => return,
            _ = inner.wait_closed() => Err(Error::CLIENT_CLOSED),
            r = connect(&inner, Some(&addr)) => r,
        };
        match reopened {
            Ok((a, s, f)) => {
                addr = a;
                stream = s;
                pending = Some(f);
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}
