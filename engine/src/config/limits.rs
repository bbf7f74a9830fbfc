//! What a node admits: `[limits]` (sizes of keys, values, requests, scans
//! and connections), `[batching]` (group commit of proposals) and
//! `[queues]` (bounded queues in front of the consensus loop, and how long
//! a request waits).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{range, Config, ConfigError};

/// Hard upper bound for keys, fixed by the storage format.
pub const MAX_KEY_BYTES: usize = d_engine_storage::command::MAX_KEY_BYTES;
/// Hard upper bound for values, fixed by the storage format.
pub const MAX_VALUE_BYTES: usize = d_engine_storage::command::MAX_VALUE_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest key. Default and maximum 4096; 1..=4096.
    pub max_key_bytes: usize,
    /// Largest value. Default and maximum 1 MiB (1048576); 0..=1048576.
    pub max_value_bytes: usize,
    /// Largest gRPC request/response message. Default 4 MiB; at least
    /// max_key_bytes + max_value_bytes + 4 KiB, at most 256 MiB.
    pub max_request_bytes: usize,
    /// Most pairs one scan returns (a request's limit 0 means this). Default 10000; 1..=1,000,000.
    pub max_scan_limit: u32,
    /// Most keys in one get_multi. Default 1000; 1..=100,000.
    pub max_get_multi_keys: usize,
    /// Concurrent HTTP/2 streams (calls and watches) per client connection;
    /// further calls on that connection wait for a free slot. Default 1024;
    /// 1..=65,536.
    pub max_concurrent_streams: u32,
    /// Open client-API connections per node; a connection beyond it is
    /// closed at once (logged). Default 4096; 1..=1,000,000.
    pub max_client_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests waiting for the consensus loop (proposals, reads, admin).
    /// Full → `Overloaded`. Default 8192; 16..=1,048,576.
    pub input_capacity: usize,
    /// Proposals accepted but not yet applied. Beyond this, new writes get
    /// `Overloaded`. Default 65536; 16..=4,194,304.
    pub max_pending_proposals: usize,
    /// Linearizable reads waiting for their read index. Default 65536; 16..=4,194,304.
    pub max_pending_reads: usize,
    /// Messages from peers waiting for the consensus loop. Full → the
    /// message is dropped (Raft retransmits). Default 16384; 16..=1,048,576.
    pub peer_inbox_capacity: usize,
    /// How long a client write or read waits before `Timeout`. Default 10000; 10..=600000.
    pub request_timeout_ms: u64,
}

/// Group commit of proposals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchingConfig {
    /// Most commands coalesced into one proposal batch. Default 4096; 1..=100,000.
    pub max_batch_entries: usize,
    /// Most command bytes coalesced into one proposal batch. Default 4 MiB;
    /// at least max_value_bytes + 64 KiB, at most 256 MiB.
    pub max_batch_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: MAX_VALUE_BYTES,
            max_request_bytes: 4 << 20,
            max_scan_limit: 10_000,
            max_get_multi_keys: 1000,
            max_concurrent_streams: 1024,
            max_client_connections: 4096,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            input_capacity: 8192,
            max_pending_proposals: 65536,
            max_pending_reads: 65536,
            peer_inbox_capacity: 16384,
            request_timeout_ms: 10_000,
        }
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            max_batch_entries: 4096,
            max_batch_bytes: 4 << 20,
        }
    }
}

impl Config {
    /// How long a client write or read waits (`queues.request_timeout_ms`).
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.queues.request_timeout_ms)
    }

    /// `[limits]`, then `[batching]` (a batch holds at least one largest
    /// command).
    pub(super) fn validate_limits(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        range("limits.max_key_bytes", l.max_key_bytes, 1, MAX_KEY_BYTES)?;
        range(
            "limits.max_value_bytes",
            l.max_value_bytes,
            0,
            MAX_VALUE_BYTES,
        )?;
        range(
            "limits.max_request_bytes",
            l.max_request_bytes,
            l.max_key_bytes + l.max_value_bytes + 4096,
            256 << 20,
        )?;
        range("limits.max_scan_limit", l.max_scan_limit, 1, 1_000_000)?;
        range(
            "limits.max_get_multi_keys",
            l.max_get_multi_keys,
            1,
            100_000,
        )?;
        range(
            "limits.max_concurrent_streams",
            l.max_concurrent_streams,
            1,
            65_536,
        )?;
        range(
            "limits.max_client_connections",
            l.max_client_connections,
            1,
            1_000_000,
        )?;

        let b = &self.batching;
        range(
            "batching.max_batch_entries",
            b.max_batch_entries,
            1,
            100_000,
        )?;
        range(
            "batching.max_batch_bytes",
            b.max_batch_bytes,
            l.max_value_bytes + l.max_key_bytes + (64 << 10),
            256 << 20,
        )?;
        Ok(())
    }

    /// `[queues]`.
    pub(super) fn validate_queues(&self) -> Result<(), ConfigError> {
        let q = &self.queues;
        range("queues.input_capacity", q.input_capacity, 16, 1 << 20)?;
        range(
            "queues.max_pending_proposals",
            q.max_pending_proposals,
            16,
            1 << 22,
        )?;
        range("queues.max_pending_reads", q.max_pending_reads, 16, 1 << 22)?;
        range(
            "queues.peer_inbox_capacity",
            q.peer_inbox_capacity,
            16,
            1 << 20,
        )?;
        range(
            "queues.request_timeout_ms",
            q.request_timeout_ms,
            10,
            600_000,
        )?;

        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_key_and_range() {
        let e = Config::from_toml_str("[limits]\nmax_key_bytes = 5000").unwrap_err();
        assert_eq!(e.key, "limits.max_key_bytes");
        assert!(e.to_string().contains("1..=4096"), "{e}");
    }
}

#[cfg(test)]
mod drift_tests {
    use super::*;

    /// The storage format's hard maxima, the API's defaults (which the
    /// clients check before sending) and the refusal texts agree: a key or
    /// value refused at apply time reads like one refused at the front.
    #[test]
    fn storage_and_api_limits_agree() {
        assert_eq!(MAX_KEY_BYTES, d_engine_api::limits::MAX_KEY_BYTES);
        assert_eq!(MAX_VALUE_BYTES, d_engine_api::limits::MAX_VALUE_BYTES);
        let big = vec![b'k'; MAX_KEY_BYTES + 1];
        let front = d_engine_api::Limits::default()
            .key("key", &big)
            .unwrap_err();
        let apply = d_engine_storage::command::CommandError::KeyTooLarge { len: big.len() };
        assert!(
            apply.to_string().starts_with(&front.message),
            "{apply} / {front}"
        );
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        let front = d_engine_api::Limits::default()
            .value("value", &big)
            .unwrap_err();
        let apply = d_engine_storage::command::CommandError::ValueTooLarge { len: big.len() };
        assert!(
            apply.to_string().starts_with(&front.message),
            "{apply} / {front}"
        );
    }
}
