//! Fault injection on real `d-engine-server` processes (see
//! `docs/fault-suite.md`): proxies on every peer link, process signals, a
//! filling disk, membership and leadership changes, while workloads record
//! histories that are checked afterwards.

pub mod disk;
pub mod history;
pub mod linearizability;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod runner;
pub mod workloads;
