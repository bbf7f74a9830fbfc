//! A userspace TCP proxy for one directed peer link, controllable at runtime.
//!
//! Node A dials node B through the proxy of link A→B (A's
//! `--peer-dial-overrides` points B's id at [`LinkProxy::addr`]), so the
//! proxy sees every byte of A's outbound gRPC connection to B: A's Raft
//! messages flow "forward" (A→B), HTTP/2 acks and pings flow "backward".
//! B's messages to A travel on B's own link B→A, through another proxy.
//!
//! Contract of each [`Mode`]:
//! - `Pass`: bytes flow both ways unchanged.
//! - `Cut`: existing connections are closed at once and new ones are
//!   accepted and closed immediately (A sees resets and reconnects through
//!   the proxy, failing until healed).
//! - `Drop { forward, backward }`: connections stay open but bytes in the
//!   chosen direction(s) are read and discarded (a black hole: A's stream
//!   stalls until its HTTP/2 keepalive gives up).
//! - `Delay(d)`: every chunk is forwarded `d` after it was read, order kept.
//! - `Refuse`: existing connections keep working; new ones are closed at
//!   once (a restarted listener behind a firewall).
//!
//! Changing the mode affects bytes read after the change. Dropping the
//! proxy stops it and closes every connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the proxy does to the link's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Cut,
    Drop { forward: bool, backward: bool },
    Delay(Duration),
    Refuse,
}

/// Counters (bytes and connections) for the report and for tests.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub bytes_forwarded: AtomicU64,
    pub bytes_dropped: AtomicU64,
}

struct Shared {
    mode: watch::Sender<Mode>,
    conns: Mutex<Vec<JoinHandle<()>>>,
    stats: ProxyStats,
}

/// One directed link's proxy (from `from` to `to`).
pub struct LinkProxy {
    pub from: u64,
    pub to: u64,
    addr: String,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl LinkProxy {
    /// Listens on a fresh 127.0.0.1 port and forwards to `target`.
    pub async fn start(from: u64, to: u64, target: String) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            mode: watch::channel(Mode::Pass).0,
            conns: Mutex::new(Vec::new()),
            stats: ProxyStats::default(),
        });
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone()));
        Ok(LinkProxy {
            from,
            to,
            addr,
            shared,
            accept,
        })
    }

    /// The address node `from` must dial to reach node `to`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn mode(&self) -> Mode {
        *self.shared.mode.borrow()
    }

    /// Switches the mode; `Cut` also closes every open connection.
    pub fn set(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
        if mode == Mode::Cut {
            for h in self.shared.conns.lock().unwrap().drain(..) {
                h.abort();
            }
        }
    }

    /// Back to `Pass`.
    pub fn heal(&self) {
        self.set(Mode::Pass);
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for h in self.shared.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: String, shared: Arc<Shared>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mode = *shared.mode.borrow();
        if matches!(mode, Mode::Cut | Mode::Refuse) {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            drop(inbound);
            continue;
        }
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let h = tokio::spawn(serve(inbound, target.clone(), shared.clone()));
        let mut conns = shared.conns.lock().unwrap();
        conns.retain(|h| !h.is_finished());
        conns.push(h);
    }
}

/// One proxied connection: two pumps, each a reader and a delayed writer.
async fn serve(inbound: TcpStream, target: String, shared: Arc<Shared>) {
    let Ok(outbound) = TcpStream::connect(&target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (ir, iw) = inbound.into_split();
    let (or, ow) = outbound.into_split();
    // Either direction ending ends the connection.
    tokio::select! {
        _ = pump(ir, ow, true, shared.clone()) => {}
        _ = pump(or, iw, false, shared) => {}
    }
}

async fn pump<R, W>(mut r: R, mut w: W, forward: bool, shared: Arc<Shared>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(4096);
    let writer = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mode = *shared.mode.borrow();
            let at = match mode {
                Mode::Cut => return,
                Mode::Drop {
                    forward: f,
                    backward: b,
                } if (forward && f) || (!forward && b) => {
                    shared
                        .stats
                        .bytes_dropped
                        .fetch_add(n as u64, Ordering::Relaxed);
                    continue;
                }
                Mode::Delay(d) => Instant::now() + d,
                _ => Instant::now(),
            };
            shared
                .stats
                .bytes_forwarded
                .fetch_add(n as u64, Ordering::Relaxed);
            if tx.send((at, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    // The writer finishes the queued bytes after the reader ends (EOF).
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, within: Duration) -> Option<Duration> {
        let t = std::time::Instant::now();
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        match tokio::time::timeout(within, s.read_exact(&mut buf)).await {
            Ok(Ok(_)) if &buf == b"ping" => Some(t.elapsed()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn modes_pass_delay_drop_cut_refuse_heal() {
        let target = echo_server().await;
        let p = LinkProxy::start(1, 2, target).await.unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        assert!(roundtrip(&mut s, Duration::from_secs(2)).await.is_some());

        p.set(Mode::Delay(Duration::from_millis(150)));
        let rtt = roundtrip(&mut s, Duration::from_secs(2)).await.unwrap();
        assert!(rtt >= Duration::from_millis(280), "{rtt:?}");

        p.set(Mode::Drop {
            forward: true,
            backward: false,
        });
        assert!(roundtrip(&mut s, Duration::from_millis(300))
            .await
            .is_none());
        p.heal();
        assert!(roundtrip(&mut s, Duration::from_secs(2)).await.is_some());

        // Refuse: the old connection works, a new one is closed.
        p.set(Mode::Refuse);
        assert!(roundtrip(&mut s, Duration::from_secs(2)).await.is_some());
        let mut fresh = TcpStream::connect(p.addr()).await.unwrap();
        assert!(roundtrip(&mut fresh, Duration::from_millis(500))
            .await
            .is_none());

        // Cut: the old connection is closed too.
        p.set(Mode::Cut);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(roundtrip(&mut s, Duration::from_millis(500))
            .await
            .is_none());
        p.heal();
        let mut again = TcpStream::connect(p.addr()).await.unwrap();
        assert!(roundtrip(&mut again, Duration::from_secs(2))
            .await
            .is_some());
        assert!(p.stats().refused.load(Ordering::Relaxed) >= 1);
    }
}
