//! The engine's own runtime for peer traffic, kept apart from the
//! application's so application tasks cannot delay heartbeats.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::runtime::StartError;
use crate::transport::{self, RaftService};

/// A dedicated one-thread tokio runtime for peer traffic (Raft messages,
/// snapshot transfers, the peer gRPC server). The application's (or the
/// server's client API's) tasks cannot delay heartbeats: with 1,000 client
/// tasks on the caller's runtime, peer messages sharing it went undelivered
/// for 150–270 ms and deposed healthy leaders (`docs/performance.md`).
///
/// On drop it is shut down in the background, never blocking the caller's
/// runtime, and the peer tasks still on it are cancelled.
pub(super) struct NetRuntime(Option<tokio::runtime::Runtime>);

impl NetRuntime {
    pub(super) fn new(node_id: u64) -> Result<Self, StartError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("dengine-net-{node_id}"))
            .enable_all()
            .build()?;
        Ok(NetRuntime(Some(rt)))
    }

    pub(super) fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle()
    }

    /// Runs `f` on the peer runtime (tasks it spawns stay there) and waits
    /// for its output.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StartError> {
        self.handle().spawn(f).await.map_err(|e| {
            StartError::Io(std::io::Error::other(format!(
                "the node's start task failed: {e}"
            )))
        })
    }

    /// Serves `service` on `listener` from the peer runtime until `stop`
    /// fires.
    pub(super) fn serve_peers(
        &self,
        listener: TcpListener,
        service: RaftService,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<JoinHandle<()>> {
        // Re-registered with the peer runtime's reactor, so accepted peer
        // connections are polled there too.
        let listener = {
            let _on_net = self.handle().enter();
            TcpListener::from_std(listener.into_std()?)?
        };
        Ok(self.handle().spawn(async move {
            if let Err(e) = transport::serve_peers(listener, service, stopped(stop)).await {
                tracing::error!(error = %e, "peer server failed");
            }
        }))
    }
}

impl Drop for NetRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(super) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
