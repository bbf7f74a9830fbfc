//! Hardware floors measured in the same run as the benchmarks.
//!
//! - `fdatasync`: append 4 KiB to a file in the data directory and
//!   `fdatasync` it, one at a time (the floor of `peers.md`: the file grows,
//!   so each sync also commits the file-size change to the journal).
//! - `fdatasync-prealloc`: the same 4 KiB writes into space zero-filled
//!   beforehand (as d-engine's WAL does), so no size change is synced: what
//!   a durable write on this disk cannot beat.
//! - `grpc`: one loopback gRPC round trip to a tonic service whose handler
//!   does nothing (what a standalone request cannot beat).
//! - `channel`: one in-process round trip through a tokio mpsc channel to a
//!   task and back through a oneshot (what an embedded request cannot beat).

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

use crate::pb::floor::floor_client::FloorClient;
use crate::pb::floor::floor_server::{Floor, FloorServer};
use crate::pb::floor::Empty;
use crate::stats::{new_histogram, Latency};

#[derive(Debug, Clone, Serialize)]
pub struct FloorResult {
    pub name: String,
    pub what: String,
    pub samples: u64,
    pub latency: Latency,
}

/// Name of each floor.
pub const FSYNC: &str = "fdatasync";
pub const FSYNC_PREALLOC: &str = "fdatasync-prealloc";
pub const GRPC: &str = "grpc";
pub const CHANNEL: &str = "channel";

fn result(name: &str, what: &str, h: &hdrhistogram::Histogram<u64>) -> FloorResult {
    FloorResult {
        name: name.into(),
        what: what.into(),
        samples: h.len(),
        latency: Latency::from_histogram(h),
    }
}

/// 4 KiB append + fdatasync in `dir`, repeated for `time` (at least 20
/// times). With `prealloc`, the writes land in 16 MiB of zeros written and
/// synced beforehand.
pub fn fdatasync(dir: &Path, time: Duration, prealloc: bool) -> Result<FloorResult> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix("floor-fsync")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let mut f = tmp.as_file();
    const PREALLOC: u64 = 16 << 20;
    if prealloc {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(PREALLOC >> 20) {
            f.write_all(&zeros)?;
        }
        f.sync_all()?;
        f.seek(SeekFrom::Start(0))?;
    }
    let block = vec![0x5au8; 4096];
    let mut h = new_histogram();
    let start = Instant::now();
    let mut n = 0u64;
    while n < 20 || start.elapsed() < time {
        let t0 = Instant::now();
        f.write_all(&block)?;
        // SAFETY: the descriptor is open for the lifetime of `tmp`.
        if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("fdatasync");
        }
        h.record(t0.elapsed().as_nanos().max(1) as u64)?;
        n += 1;
        if n >= 100_000 || (prealloc && (n + 1) * 4096 > PREALLOC) {
            break;
        }
    }
    Ok(if prealloc {
        result(
            FSYNC_PREALLOC,
            &format!(
                "4 KiB write into preallocated zeros + fdatasync in {}",
                dir.display()
            ),
            &h,
        )
    } else {
        result(
            FSYNC,
            &format!("4 KiB append + fdatasync in {}", dir.display()),
            &h,
        )
    })
}

struct Empty0;

#[tonic::async_trait]
impl Floor for Empty0 {
    async fn ping(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        Ok(Response::new(Empty {}))
    }
}

/// Sequential unary calls over one loopback connection for `time`.
pub async fn grpc(time: Duration) -> Result<FloorResult> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(FloorServer::new(Empty0))
            // `serve_with_incoming*` ignores `Server::tcp_nodelay`: the
            // accepted sockets must get TCP_NODELAY from the incoming stream.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .context("connecting to the floor gRPC service")?;
    let mut client = FloorClient::new(channel);
    for _ in 0..200 {
        client.ping(Empty {}).await?;
    }
    let mut h = new_histogram();
    let start = Instant::now();
    while start.elapsed() < time {
        let t0 = Instant::now();
        client.ping(Empty {}).await?;
        h.record(t0.elapsed().as_nanos().max(1) as u64)?;
    }
    drop(client);
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(result(
        GRPC,
        "loopback gRPC unary round trip, empty handler (tonic)",
        &h,
    ))
}

/// Round trips through an mpsc channel to a task and back via oneshot.
pub async fn channel(time: Duration) -> Result<FloorResult> {
    let (tx, mut rx) = mpsc::channel::<oneshot::Sender<()>>(1024);
    let server = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let _ = reply.send(());
        }
    });
    let mut h = new_histogram();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < time {
        let t0 = Instant::now();
        let (rtx, rrx) = oneshot::channel();
        tx.send(rtx).await.context("channel floor task ended")?;
        rrx.await.context("channel floor task dropped the reply")?;
        h.record(t0.elapsed().as_nanos().max(1) as u64)?;
        n += 1;
        if n >= 5_000_000 {
            break;
        }
    }
    drop(tx);
    let _ = server.await;
    Ok(result(
        CHANNEL,
        "in-process tokio mpsc hop to a task + oneshot reply",
        &h,
    ))
}

/// All three floors, `time` each.
pub async fn measure_all(dir: &Path, time: Duration) -> Result<Vec<FloorResult>> {
    let dir2 = dir.to_path_buf();
    let fs = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((
            fdatasync(&dir2, time, false)?,
            fdatasync(&dir2, time, true)?,
        ))
    })
    .await??;
    Ok(vec![fs.0, fs.1, grpc(time).await?, channel(time).await?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn floors_measure_something_positive() {
        let dir = tempfile::tempdir().unwrap();
        let f = measure_all(dir.path(), Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(f.len(), 4);
        for r in &f {
            assert!(r.samples >= 1, "{r:?}");
            assert!(
                r.latency.p50_us > 0.0 && r.latency.max_us >= r.latency.p50_us,
                "{r:?}"
            );
        }
        assert!(f[0].samples >= 20);
    }
}
