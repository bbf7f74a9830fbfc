//! The outbound links of the tonic transport, one per peer: shared by the
//! transport ([`super::TonicTransport`]) and its inbound service
//! ([`super::RaftService`], which may add a return link for a sender it did
//! not know).
//!
//! Contracts: each link owns a bounded queue (`peer_queue_capacity`) and
//! one long-lived `Raft.Stream` client stream; it connects lazily, on the
//! first message, reconnects with exponential backoff, and while the peer
//! cannot be reached drops queued messages and reports the peer through
//! [`PeerInbox::unreachable`]. Messages to one peer are sent in order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use d_engine_core::{Message, NodeId};
use d_engine_proto::v1 as pb;
use d_engine_proto::v1::raft_client::RaftClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;

use super::peer_auth::PeerCall;
use super::tonic_common::{add_peer_metadata, connect, TransportOptions};
use super::tonic_convert::message_to_pb;
use super::PeerInbox;
/// Messages buffered between the peer queue and the HTTP/2 stream.
const STREAM_BUFFER: usize = 256;
/// A stream that lived at least this long resets the reconnect backoff.
const HEALTHY_STREAM: Duration = Duration::from_secs(1);

struct Link {
    addr: String,
    /// Created from an inbound call's `x-dengine-from-addr` (the peer is
    /// not in the configured peer list): kept until `set_peers` names it,
    /// the node stops joining, or `learned_link_ttl` passes without a new
    /// call from that peer.
    learned: bool,
    /// Last time the peer's own call confirmed a learned link.
    seen: Instant,
    tx: mpsc::Sender<Message>,
    task: JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The outbound links, shared by the transport and its inbound service
/// (which may add a return link for a sender it did not know).
pub(crate) struct Links {
    opts: Arc<TransportOptions>,
    inbox: Arc<dyn PeerInbox>,
    rt: tokio::runtime::Handle,
    table: Mutex<HashMap<NodeId, Link>>,
}

impl Links {
    pub(crate) fn new(opts: Arc<TransportOptions>, inbox: Arc<dyn PeerInbox>) -> Self {
        Links {
            opts,
            inbox,
            rt: tokio::runtime::Handle::current(),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Where the links report unreachable peers.
    pub(crate) fn inbox(&self) -> &Arc<dyn PeerInbox> {
        &self.inbox
    }

    fn spawn_link(&self, peer: NodeId, addr: String, learned: bool) -> Link {
        let (tx, rx) = mpsc::channel(self.opts.peer_queue_capacity.max(1));
        let task = self.rt.spawn(run_link(
            self.opts.clone(),
            self.inbox.clone(),
            peer,
            self.opts.dial_addr(peer, &addr),
            rx,
        ));
        Link {
            addr,
            learned,
            seen: Instant::now(),
            tx,
            task,
        }
    }

    /// Drops learned links whose TTL has passed.
    fn expire_learned(&self, links: &mut HashMap<NodeId, Link>) {
        let ttl = self.opts.learned_link_ttl;
        links.retain(|id, l| {
            let keep = !l.learned || l.seen.elapsed() < ttl;
            if !keep {
                tracing::info!(peer = id, addr = %l.addr, "dropping an expired learned return link");
            }
            keep
        });
    }

    pub(crate) fn send(&self, msg: Message) {
        let to = msg.to;
        let res = {
            let mut links = self.table.lock().unwrap_or_else(|e| e.into_inner());
            if links.get(&to).is_some_and(|l| l.learned) {
                self.expire_learned(&mut links);
            }
            match links.get(&to) {
                Some(link) => link.tx.try_send(msg).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "link closed",
                }),
                None => Err("unknown peer"),
            }
        };
        if let Err(why) = res {
            tracing::trace!(peer = to, why, "dropping raft message");
            self.inbox.unreachable(to);
        }
    }

    /// Makes the links match `peers` (configured); learned links to peers
    /// not in `peers` stay.
    pub(crate) fn set(&self, peers: &BTreeMap<NodeId, String>) {
        let mut links = self.table.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|id, link| match peers.get(id) {
            Some(addr) => *addr == link.addr,
            None => link.learned,
        });
        for (id, addr) in peers {
            if links.get(id).is_some_and(|l| l.learned) {
                links.remove(id);
            }
            if !links.contains_key(id) {
                let link = self.spawn_link(*id, addr.clone(), false);
                links.insert(*id, link);
            }
        }
    }

    /// Adds a return link to `id` at `addr` unless one exists (a learned
    /// one is refreshed). At most `max_learned_links` learned links exist;
    /// beyond that the new address is not learned (logged).
    pub(crate) fn learn(&self, id: NodeId, addr: String) {
        if id == self.opts.local_id || id == 0 {
            return;
        }
        let mut links = self.table.lock().unwrap_or_else(|e| e.into_inner());
        self.expire_learned(&mut links);
        if let Some(l) = links.get_mut(&id) {
            if l.learned {
                l.seen = Instant::now();
            }
            return;
        }
        let learned = links.values().filter(|l| l.learned).count();
        if learned >= self.opts.max_learned_links {
            tracing::warn!(
                peer = id,
                %addr,
                max = self.opts.max_learned_links,
                "not learning another return link: the limit of learned links is reached"
            );
            return;
        }
        tracing::info!(peer = id, %addr, "learned the address of a peer not in the configuration");
        links.insert(id, self.spawn_link(id, addr, true));
    }

    /// Marks the learned link to `id` as still in use (its peer's stream is
    /// alive), so it does not expire under an active stream.
    pub(crate) fn touch(&self, id: NodeId) {
        let mut links = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = links.get_mut(&id).filter(|l| l.learned) {
            l.seen = Instant::now();
        }
    }

    /// Drops every learned link (the node has a membership now).
    pub(crate) fn forget_learned(&self) {
        let mut links = self.table.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|_, l| !l.learned);
    }

    /// Number of learned return links.
    pub(crate) fn learned_count(&self) -> usize {
        let links = self.table.lock().unwrap_or_else(|e| e.into_inner());
        links.values().filter(|l| l.learned).count()
    }

    pub(crate) fn addr(&self, id: NodeId) -> Option<String> {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|l| l.addr.clone())
    }
}
/// Drives one peer's outbound stream until the link is dropped.
async fn run_link(
    opts: Arc<TransportOptions>,
    inbox: Arc<dyn PeerInbox>,
    peer: NodeId,
    addr: String,
    mut rx: mpsc::Receiver<Message>,
) {
    let mut backoff = opts.backoff_min;
    let mut failing = false;
    loop {
        // Lazy: connect only when there is something to send.
        let Some(first) = rx.recv().await else { return };
        let channel = match connect(&addr, peer, &opts).await {
            Ok(c) => c,
            Err(e) => {
                if !failing {
                    tracing::warn!(peer, error = %e, "peer unreachable; retrying with backoff");
                    failing = true;
                } else {
                    tracing::debug!(peer, error = %e, "peer still unreachable");
                }
                drop_queued(&mut rx, &*inbox, peer);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(opts.backoff_max);
                drop_queued(&mut rx, &*inbox, peer);
                continue;
            }
        };
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(opts.max_message_bytes)
            .max_encoding_message_size(opts.max_message_bytes);
        let (stx, srx) = mpsc::channel::<pb::RaftMessage>(STREAM_BUFFER);
        let _ = stx.try_send(message_to_pb(&first));
        let mut req = Request::new(ReceiverStream::new(srx));
        add_peer_metadata(req.metadata_mut(), &opts, peer, PeerCall::Stream);
        let opened = Instant::now();
        let call = async move { client.stream(req).await };
        tokio::pin!(call);
        if failing {
            tracing::info!(peer, %addr, "peer reachable again");
            failing = false;
        }
        let why = loop {
            tokio::select! {
                res = &mut call => break match res {
                    Ok(_) => "peer closed the stream".to_string(),
                    Err(s) => format!("{:?}: {}", s.code(), s.message()),
                },
                m = rx.recv() => match m {
                    None => return,
                    Some(m) => {
                        if stx.send(message_to_pb(&m)).await.is_err() {
                            break "stream broke".to_string();
                        }
                    }
                },
            }
        };
        if opened.elapsed() >= HEALTHY_STREAM {
            backoff = opts.backoff_min;
            tracing::info!(peer, reason = %why, "raft stream to peer ended; reconnecting");
        } else {
            tracing::warn!(peer, reason = %why, "raft stream to peer failed; retrying with backoff");
            failing = true;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(opts.backoff_max);
        }
        drop_queued(&mut rx, &*inbox, peer);
    }
}

/// Discards what queued up while the peer was unreachable (stale by now).
fn drop_queued(rx: &mut mpsc::Receiver<Message>, inbox: &dyn PeerInbox, peer: NodeId) {
    let mut dropped = 0usize;
    while rx.try_recv().is_ok() {
        dropped += 1;
    }
    if dropped > 0 {
        tracing::trace!(
            peer,
            dropped,
            "dropped messages queued for an unreachable peer"
        );
    }
    inbox.unreachable(peer);
}
