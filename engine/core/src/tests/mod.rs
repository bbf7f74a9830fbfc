//! Unit tests pinning the exact actions a node emits, plus small multi-node
//! scenarios on the in-memory [`harness::Network`].

mod harness;

mod chaos;
mod election;
mod hostile;
mod membership;
mod reads;
mod replication;
mod restore;
mod snapshot;
mod transfer;
