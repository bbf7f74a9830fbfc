//! Inbound side of the tonic peer transport: the `dengine.v1.Raft` service.
//!
//! Every call is checked first (cluster id, known sender; see
//! [`super::tonic_common::check_peer_metadata`]). Messages of a `Stream`
//! call are handed to [`PeerInbox::deliver`] in arrival order; each must name
//! the stream's sender as `from` and this node as `to`, or the stream is
//! closed with an error (the sender reconnects). Snapshot transfers are
//! staged by [`super::tonic_snapshot::receive`].

use std::future::Future;
use std::sync::Arc;

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_server::{Raft, RaftServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::tonic_common::{check_peer_metadata, PeerDirectory, TransportOptions};
use super::tonic_convert::message_from_pb;
use super::tonic_snapshot;
use super::PeerInbox;

/// The `Raft` gRPC service of one node.
pub struct RaftService {
    opts: Arc<TransportOptions>,
    inbox: Arc<dyn PeerInbox>,
    peers: PeerDirectory,
    snapshot_slots: Arc<Semaphore>,
    transfers: tonic_snapshot::ActiveTransfers,
}

impl RaftService {
    pub fn new(opts: TransportOptions, inbox: Arc<dyn PeerInbox>, peers: PeerDirectory) -> Self {
        let slots = opts.max_inbound_snapshots.max(1);
        RaftService {
            opts: Arc::new(opts),
            inbox,
            peers,
            snapshot_slots: Arc::new(Semaphore::new(slots)),
            transfers: Default::default(),
        }
    }

    /// Wraps the service with the configured message size limits.
    pub fn into_server(self) -> RaftServer<RaftService> {
        let max = self.opts.max_message_bytes;
        RaftServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }
}

#[tonic::async_trait]
impl Raft for RaftService {
    async fn stream(
        &self,
        request: Request<Streaming<pb::RaftMessage>>,
    ) -> Result<Response<pb::StreamAck>, Status> {
        let from = check_peer_metadata(request.metadata(), &self.opts, &self.peers)?;
        let local = self.opts.local_id;
        let mut stream = request.into_inner();
        tracing::debug!(peer = from, "raft stream opened");
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(peer = from, %status, "raft stream from peer broke");
                    return Err(status);
                }
            };
            let msg = message_from_pb(msg).map_err(|e| {
                tracing::warn!(peer = from, error = %e, "refusing malformed raft message");
                Status::invalid_argument(e.to_string())
            })?;
            if msg.from != from {
                return Err(Status::invalid_argument(format!(
                    "message claims to come from node {} on a stream opened by node {from}",
                    msg.from
                )));
            }
            if msg.to != local {
                return Err(Status::failed_precondition(format!(
                    "message addressed to node {} reached node {local}: check the peer \
                     addresses in node {from}'s configuration",
                    msg.to
                )));
            }
            self.inbox.deliver(msg);
        }
        tracing::debug!(peer = from, "raft stream closed by peer");
        Ok(Response::new(pb::StreamAck {}))
    }

    type InstallSnapshotStream = ReceiverStream<Result<pb::SnapshotChunkAck, Status>>;

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<Self::InstallSnapshotStream>, Status> {
        let from = check_peer_metadata(request.metadata(), &self.opts, &self.peers)?;
        let permit = self
            .snapshot_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "node {} is already receiving {} snapshot(s); retry later",
                    self.opts.local_id, self.opts.max_inbound_snapshots
                ))
            })?;
        let (tx, rx) = mpsc::channel(self.opts.snapshot_window.max(1) + 2);
        let inbox = self.inbox.clone();
        let transfers = self.transfers.clone();
        let chunks = request.into_inner();
        tokio::spawn(async move {
            let _permit = permit;
            tonic_snapshot::receive(from, chunks, inbox, transfers, tx).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves the peer service on `listener` until `shutdown` resolves.
/// Garbage on the port only fails that connection.
pub async fn serve_peers(
    listener: TcpListener,
    service: RaftService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let opts = service.opts.clone();
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(opts.keepalive_interval))
        .http2_keepalive_timeout(Some(opts.keepalive_timeout))
        .max_concurrent_streams(Some(opts.max_concurrent_streams))
        .tcp_nodelay(true)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
