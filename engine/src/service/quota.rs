//! Per-user and per-connection bounds on client-API watches, and the
//! bound on open client connections (issue 16, finding 7).
//!
//! The node-wide `watch.max_watchers` alone let one client take every watch
//! slot. A watch now also needs a place under `watch.max_watchers_per_user`
//! (authenticated users; all of a user's connections together) and under
//! `watch.max_watchers_per_connection` (a connection is its peer address).
//! A refusal is OVERLOADED (RESOURCE_EXHAUSTED) naming the limit; the
//! place is given back when the watch ends, however it ends.
//!
//! [`LimitedIncoming`] accepts at most `limits.max_client_connections`
//! connections at once: one beyond it is closed immediately and logged (at
//! most once per second), and the listener keeps serving everyone else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use d_engine_api::status_codec::to_status_with_metadata;
use d_engine_api::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::Status;

/// Open watches per user and per connection.
pub struct WatchQuota {
    per_user: usize,
    per_connection: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    users: HashMap<String, usize>,
    connections: HashMap<SocketAddr, usize>,
}

/// One watch's place in the quota; given back on drop.
pub struct WatchPermit {
    quota: Arc<WatchQuota>,
    user: Option<String>,
    connection: Option<SocketAddr>,
}

fn over(limit_key: &str, limit: usize, whose: String) -> Status {
    to_status_with_metadata(
        &Error::Overloaded(format!(
            "{whose} has {limit} watches open, the limit is {limit_key} = {limit}; close a \
             watch (or watch a common prefix) before opening another"
        )),
        [("limit".to_string(), limit_key.to_string())],
    )
}

impl WatchQuota {
    pub fn new(per_user: usize, per_connection: usize) -> Arc<WatchQuota> {
        Arc::new(WatchQuota {
            per_user,
            per_connection,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// A place for one more watch of `user` (`None`: auth off, not
    /// counted per user) on `connection` (`None`: unknown, not counted).
    pub fn acquire(
        self: &Arc<Self>,
        user: Option<&str>,
        connection: Option<SocketAddr>,
    ) -> Result<WatchPermit, Status> {
        let mut c = self.counts.lock().expect("quota lock");
        if let Some(u) = user {
            if c.users.get(u).copied().unwrap_or(0) >= self.per_user {
                return Err(over(
                    "watch.max_watchers_per_user",
                    self.per_user,
                    format!("user \"{}\"", u.escape_debug()),
                ));
            }
        }
        if let Some(a) = connection {
            if c.connections.get(&a).copied().unwrap_or(0) >= self.per_connection {
                return Err(over(
                    "watch.max_watchers_per_connection",
                    self.per_connection,
                    format!("the connection from {a}"),
                ));
            }
        }
        if let Some(u) = user {
            *c.users.entry(u.to_string()).or_default() += 1;
        }
        if let Some(a) = connection {
            *c.connections.entry(a).or_default() += 1;
        }
        Ok(WatchPermit {
            quota: self.clone(),
            user: user.map(str::to_string),
            connection,
        })
    }

    /// Watches open for `user`.
    pub fn user_watches(&self, user: &str) -> usize {
        let c = self.counts.lock().expect("quota lock");
        c.users.get(user).copied().unwrap_or(0)
    }
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut c = self.quota.counts.lock().expect("quota lock");
        if let Some(u) = &self.user {
            if let Some(n) = c.users.get_mut(u) {
                *n -= 1;
                if *n == 0 {
                    c.users.remove(u);
                }
            }
        }
        if let Some(a) = &self.connection {
            if let Some(n) = c.connections.get_mut(a) {
                *n -= 1;
                if *n == 0 {
                    c.connections.remove(a);
                }
            }
        }
    }
}

/// An accepted connection holding its place under
/// `limits.max_client_connections` until it closes.
pub struct LimitedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepted connections (TCP_NODELAY), at most `max` open at once.
pub fn limited_incoming(
    listener: TcpListener,
    max: usize,
) -> impl tokio_stream::Stream<Item = std::io::Result<LimitedStream>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(max));
    let state = (listener, slots, None::<Instant>);
    futures_util::stream::unfold(state, move |(listener, slots, mut warned)| async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                // Per-connection accept errors (e.g. the peer reset) do not
                // stop the listener; resource errors are reported after a
                // pause so a full fd table does not spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a client connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    let _ = stream.set_nodelay(true);
                    let item = LimitedStream {
                        inner: stream,
                        _permit: permit,
                    };
                    return Some((Ok(item), (listener, slots, warned)));
                }
                Err(_) => {
                    if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(
                            %peer,
                            limit = max,
                            "client connection refused: limits.max_client_connections = {max} \
                             connections are open; raise the limit or find the client holding them"
                        );
                        warned = Some(Instant::now());
                    }
                    drop(stream);
                }
            }
        }
    })
}
