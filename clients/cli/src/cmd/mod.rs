//! One module per command group; each function runs one subcommand and
//! returns the exit code.

pub mod auth;
pub mod cluster;
pub mod coord;
pub mod kv;
pub mod lease;
pub mod perf;
pub mod watch;

use d_engine_client::{Consistency, RangeEnd};

use crate::args::{ConsistencyArg, RangeSel};

/// The range the selection flags name.
pub fn range_end(r: &RangeSel) -> RangeEnd {
    if r.prefix {
        RangeEnd::Prefix
    } else if r.from_key {
        RangeEnd::FromKey
    } else if let Some(e) = &r.range_end {
        RangeEnd::Before(e.as_bytes().to_vec())
    } else {
        RangeEnd::Single
    }
}

pub fn consistency(c: ConsistencyArg) -> Consistency {
    match c {
        ConsistencyArg::Linearizable => Consistency::Linearizable,
        ConsistencyArg::Lease => Consistency::Lease,
        ConsistencyArg::Eventual => Consistency::Eventual,
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, caught from the moment [`Interrupt::new`]
/// returns (so a signal sent after the command printed that it is ready is
/// never lost, and never kills the process before it has cleaned up).
pub struct Interrupt {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Interrupt {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Interrupt {})
        }
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
