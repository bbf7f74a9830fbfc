//! Multi-process test harness: real `d-engine-server` processes on
//! 127.0.0.1 with temporary data directories.
//!
//! ```no_run
//! # async fn t() {
//! use d_engine_tests::cluster::{Cluster, ClusterConfig};
//! use std::time::Duration;
//! let mut c = Cluster::start(ClusterConfig::default()); // 3 voters
//! let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
//! c.kill(leader);                       // SIGKILL
//! let next = c.wait_new_leader(leader, Duration::from_secs(20)).await.unwrap();
//! c.restart(leader);                    // same data dir and flags
//! # let _ = next; }
//! ```
//!
//! - The binary: [`server_binary`] (`$DENGINE_SERVER_BIN`, else
//!   `target/<profile>/d-engine-server`, rebuilt with `cargo build -p
//!   d-engine-server` when missing or stale).
//! - Ports: fresh free ports on 127.0.0.1 per cluster ([`free_ports`]).
//! - Logs: `<dir>/node-<id>.log` (all incarnations appended); kept with the
//!   data when a test panics, and their tails printed.
//! - Cleanup: dropping a [`Cluster`] or [`NodeProcess`] SIGKILLs its
//!   processes (paused ones too), so no test leaves a server behind.

mod binary;
mod harness;
mod ports;
mod process;
mod tls;

pub use binary::{cli_binary, server_binary};
pub use harness::{gen_secret, Cluster, ClusterConfig};
pub use ports::free_ports;
pub use process::{NodeProcess, NodeSpec};
pub use tls::{make_certs, TlsCluster, TlsClusterConfig};
