//! The systems under test: d-engine embedded, d-engine standalone, etcd,
//! and (feature `upstream`) upstream d-engine 0.2.4.

pub mod embedded;
pub mod etcd;
pub mod procs;
pub mod standalone;
#[cfg(feature = "upstream")]
pub mod upstream;

use std::sync::OnceLock;
use std::time::Duration;

use d_engine_client::{
    Compare, RangeEnd, RangeOptions, RangePage, Txn, TxnOp, TxnOpResult, TxnOutcome,
};

use crate::workload::{Consistency, OpError, PageReply, TxnReply};

/// Node settings given on the command line that every d-engine node of
/// the run gets (set once, before any system starts).
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeTuning {
    /// `raft.max_read_rounds_in_flight`; `None`: the engine's default.
    pub read_rounds: Option<usize>,
}

static NODE_TUNING: OnceLock<NodeTuning> = OnceLock::new();

/// Sets the run's [`NodeTuning`]; later calls are ignored.
pub fn set_node_tuning(t: NodeTuning) {
    let _ = NODE_TUNING.set(t);
}

/// The run's [`NodeTuning`] (the default if none was set).
pub fn node_tuning() -> NodeTuning {
    NODE_TUNING.get().copied().unwrap_or_default()
}

/// Maps a d-engine client error to the benchmark's error classes.
pub fn dengine_error(e: d_engine_client::Error) -> OpError {
    match e {
        d_engine_client::Error::Timeout(m) => OpError::Timeout(m),
        other => OpError::Other(other.to_string()),
    }
}

/// The d-engine consistency for a benchmark consistency.
pub fn dengine_consistency(c: Consistency) -> d_engine_client::Consistency {
    match c {
        Consistency::Linearizable => d_engine_client::Consistency::Linearizable,
        Consistency::Lease => d_engine_client::Consistency::Lease,
        Consistency::Eventual => d_engine_client::Consistency::Eventual,
    }
}

/// The transfer transaction of the `txn` scenario: if `from` was last
/// modified at `from_mod_revision`, put `value` under `from` and `to`;
/// else read `from`.
pub fn transfer_txn(from: &[u8], to: &[u8], from_mod_revision: u64, value: &[u8]) -> Txn {
    Txn::new()
        .when([Compare::mod_revision_is(from, from_mod_revision)])
        .and_then([TxnOp::put(from, value), TxnOp::put(to, value)])
        .or_else([TxnOp::get(from)])
}

/// A [`transfer_txn`] outcome as the benchmark counts it.
pub fn transfer_reply(o: &TxnOutcome) -> TxnReply {
    if o.succeeded {
        return TxnReply {
            succeeded: true,
            revision: o.revision,
        };
    }
    let current = match o.results.first() {
        Some(TxnOpResult::Range(page)) => page.kvs.first().map_or(0, |kv| kv.mod_revision),
        _ => 0,
    };
    TxnReply {
        succeeded: false,
        revision: current,
    }
}

/// Linearizable range options for a page of `[start, end)` (`end` = `[0]`:
/// every key from the start on).
pub fn page_options(end: &[u8], limit: u32) -> RangeOptions {
    RangeOptions {
        end: if end == [0] {
            RangeEnd::FromKey
        } else {
            RangeEnd::Before(end.to_vec())
        },
        limit,
        consistency: d_engine_client::Consistency::Linearizable,
        ..Default::default()
    }
}

/// A d-engine range page as the benchmark counts it.
pub fn page_reply(p: RangePage) -> PageReply {
    PageReply {
        keys: p.kvs.len() as u64,
        next: if p.more { p.next_key } else { None },
    }
}

/// A lease TTL as whole seconds (etcd's unit), at least 1.
pub fn ttl_secs(ttl: Duration) -> i64 {
    ttl.as_secs_f64().ceil().max(1.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use d_engine_client::KeyValue;

    #[test]
    fn a_failed_transfer_reports_the_current_revision_of_its_first_key() {
        let kv = KeyValue {
            key: b"a".to_vec().into(),
            value: b"v".to_vec().into(),
            create_revision: 3,
            mod_revision: 7,
            version: 2,
            expires_at_ms: 0,
            lease: 0,
        };
        let failed = TxnOutcome {
            succeeded: false,
            results: vec![TxnOpResult::Range(RangePage {
                kvs: vec![kv],
                ..Default::default()
            })],
            revision: 9,
            replayed: false,
        };
        assert_eq!(
            transfer_reply(&failed),
            TxnReply {
                succeeded: false,
                revision: 7
            }
        );
        let ok = TxnOutcome {
            succeeded: true,
            revision: 9,
            ..Default::default()
        };
        assert_eq!(
            transfer_reply(&ok),
            TxnReply {
                succeeded: true,
                revision: 9
            }
        );
        let t = transfer_txn(b"a", b"b", 7, b"v");
        assert_eq!(
            (t.compares.len(), t.success.len(), t.failure.len()),
            (1, 2, 1)
        );
    }

    #[test]
    fn page_options_map_the_open_end() {
        assert_eq!(page_options(&[0], 5).end, RangeEnd::FromKey);
        assert_eq!(
            page_options(b"0100", 5).end,
            RangeEnd::Before(b"0100".to_vec())
        );
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
    }
}
