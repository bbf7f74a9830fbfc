//! Inbound side of the tonic peer transport: the `dengine.v1.Raft` service.
//!
//! Every call is checked first (cluster id, the cluster secret's handshake
//! when one is configured, a sender that is a current member, its TLS
//! identity; see [`super::tonic_common::admit_peer_call`]); refusals are
//! counted ([`RaftService::refused_calls`]) and logged with the caller's
//! address. Messages of a `Stream`
//! call are handed to [`PeerInbox::deliver`] in arrival order; each must name
//! the stream's sender as `from` and this node as `to`, and must not be an
//! `InstallSnapshot` (a snapshot arrives only through the `InstallSnapshot`
//! call, staged first), or the stream is closed with an error (the sender
//! reconnects). Snapshot transfers are staged by
//! [`super::tonic_snapshot::receive`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_server::{Raft, RaftServer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::links::Links;
use super::peer_auth::PeerCall;
use super::tonic_common::{admit_peer_call, sender_addr, PeerDirectory, TransportOptions};
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
    return_links: Option<Arc<Links>>,
    /// Peer calls refused (bad cluster id, handshake, non-member, certificate).
    refused: Arc<AtomicU64>,
    /// True once the server shuts down: open streams end so that peers see
    /// a broken link (and reconnect to whoever serves the address next).
    stop_tx: Arc<watch::Sender<bool>>,
    stop_rx: watch::Receiver<bool>,
}

impl RaftService {
    pub fn new(opts: TransportOptions, inbox: Arc<dyn PeerInbox>, peers: PeerDirectory) -> Self {
        let slots = opts.max_inbound_snapshots.max(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        RaftService {
            opts: Arc::new(opts),
            inbox,
            peers,
            snapshot_slots: Arc::new(Semaphore::new(slots)),
            transfers: Default::default(),
            return_links: None,
            refused: Arc::default(),
            stop_tx: Arc::new(stop_tx),
            stop_rx,
        }
    }

    /// Lets the service open a return link to a sender that is not in the
    /// peer list, at the address the sender advertises — only while the
    /// node waits to join, only for senders that authenticated (cluster
    /// secret or peer mTLS) or whose address
    /// [`TransportOptions::unauthenticated_return_links`] permits, at most `max_learned_links` of them, each
    /// dropped after `learned_link_ttl` without a new call.
    pub(crate) fn with_return_links(mut self, links: Arc<Links>) -> Self {
        self.return_links = Some(links);
        self
    }

    /// Counts refused calls into `refused` (shared with the transport).
    pub(crate) fn with_refused_counter(mut self, refused: Arc<AtomicU64>) -> Self {
        self.refused = refused;
        self
    }

    /// Peer calls this service refused so far.
    pub fn refused_calls(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
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
        let from = admit_peer_call(
            &request,
            &self.opts,
            &self.peers,
            PeerCall::Stream,
            &self.refused,
        )?;
        // The learned return link this stream keeps alive, if any.
        let mut learned_link = None;
        if let (Some(links), Some(addr)) = (&self.return_links, sender_addr(request.metadata())) {
            if !self.peers.contains(from) && self.peers.is_joining() {
                if self.opts.authenticated()
                    || self.opts.unauthenticated_return_links.permits(&addr)
                {
                    links.learn(from, addr);
                    learned_link = Some((links.clone(), std::time::Instant::now()));
                } else {
                    tracing::debug!(
                        peer = from,
                        %addr,
                        "not learning a return link from an unauthenticated peer at a \
                         non-loopback address (set peer.secret_file or tls.peer)"
                    );
                }
            }
        }
        let local = self.opts.local_id;
        let mut stream = request.into_inner();
        tracing::debug!(peer = from, "raft stream opened");
        let mut stop = self.stop_rx.clone();
        loop {
            let next = tokio::select! {
                m = stream.message() => m,
                _ = stopping(&mut stop) => {
                    return Err(Status::unavailable(format!("node {local} is shutting down")));
                }
            };
            let msg = match next {
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
            if matches!(msg.body, d_engine_core::MessageBody::InstallSnapshot { .. }) {
                // A snapshot reaches the core only through the InstallSnapshot
                // call, which stages the file first; the core would otherwise
                // ask to install a snapshot that was never staged (a fatal
                // error). No honest sender puts one on the stream.
                tracing::warn!(
                    peer = from,
                    "refusing an InstallSnapshot message on a raft stream"
                );
                return Err(Status::invalid_argument(
                    "InstallSnapshot travels on the InstallSnapshot call, never on a raft stream",
                ));
            }
            if msg.to != local {
                return Err(Status::failed_precondition(format!(
                    "message addressed to node {} reached node {local}: check the peer \
                     addresses in node {from}'s configuration",
                    msg.to
                )));
            }
            self.inbox.deliver(msg);
            if let Some((links, touched)) = &mut learned_link {
                if touched.elapsed() >= std::time::Duration::from_secs(1) {
                    links.touch(from);
                    *touched = std::time::Instant::now();
                }
            }
        }
        tracing::debug!(peer = from, "raft stream closed by peer");
        Ok(Response::new(pb::StreamAck {}))
    }

    type InstallSnapshotStream = ReceiverStream<Result<pb::SnapshotChunkAck, Status>>;

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<Self::InstallSnapshotStream>, Status> {
        let from = admit_peer_call(
            &request,
            &self.opts,
            &self.peers,
            PeerCall::Snapshot,
            &self.refused,
        )?;
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
        let opts = self.opts.clone();
        let chunks = request.into_inner();
        let mut stop = self.stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = tonic_snapshot::receive(from, chunks, inbox, transfers, opts, tx.clone()) => {}
                _ = stopping(&mut stop) => {
                    let _ = tx.send(Err(Status::unavailable("node is shutting down"))).await;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Resolves once the service is told to stop (or its sender is gone).
async fn stopping(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Serves the peer service on `listener` until `shutdown` resolves. Then
/// it stops accepting and ends every open peer stream and snapshot
/// transfer with UNAVAILABLE, so peers notice at once and reconnect to
/// whatever serves this address next (e.g. the restarted node).
/// Garbage on the port only fails that connection. With `opts.tls` the
/// port speaks mutual TLS only: a caller without a certificate signed by
/// the cluster CA fails the handshake.
pub async fn serve_peers(
    listener: TcpListener,
    service: RaftService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let opts = service.opts.clone();
    let stop = service.stop_tx.clone();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &opts.tls {
        builder = builder.tls_config(tls.server.clone())?;
    }
    builder
        .http2_keepalive_interval(Some(opts.keepalive_interval))
        .http2_keepalive_timeout(Some(opts.keepalive_timeout))
        .max_concurrent_streams(Some(opts.max_concurrent_streams))
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            stop.send_replace(true);
        })
        .await
}
