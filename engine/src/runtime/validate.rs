//! Request validation against the configured limits (`limits.*`): every
//! refusal is `InvalidArgument` naming the limit and what to do. Checked
//! before a request reaches the consensus loop or the state machine.

use bytes::Bytes;

use super::handle::NodeHandle;
use super::types::{Op, Result};
use d_engine_storage::command::TxnOp;

/// The positions `(first, again)` of the first key that appears twice.
pub(crate) fn first_duplicate(keys: &[Bytes]) -> Option<(usize, usize)> {
    let mut seen = std::collections::HashMap::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        if let Some(first) = seen.insert(&k[..], i) {
            return Some((first, i));
        }
    }
    None
}

/// "keys[again] repeats keys[first] (<key>); ..." for a duplicate key.
pub(crate) fn duplicate_key_message(keys: &[Bytes], first: usize, again: usize) -> String {
    format!(
        "keys[{again}] repeats keys[{first}] ({}); ask for each key once per get_multi",
        show_key(&keys[again])
    )
}

/// A key for an error message: text if it is printable UTF-8, else escaped,
/// cut after 64 bytes.
pub(crate) fn show_key(k: &[u8]) -> String {
    let cut = &k[..k.len().min(64)];
    let more = if k.len() > 64 { "…" } else { "" };
    match std::str::from_utf8(cut) {
        Ok(s) if !s.chars().any(char::is_control) => format!("'{s}'{more}"),
        _ => format!("{}{more}", cut.escape_ascii()),
    }
}

impl NodeHandle {
    /// The API's size limits with this node's configured maxima.
    pub(super) fn limits(&self) -> d_engine_api::Limits {
        d_engine_api::Limits {
            max_key_bytes: self.shared.config.limits.max_key_bytes,
            max_value_bytes: self.shared.config.limits.max_value_bytes,
        }
    }

    pub(super) fn validate_key(&self, key: &[u8]) -> Result<()> {
        Ok(self.limits().key("key", key)?)
    }

    pub(super) fn validate_value(&self, value: &[u8]) -> Result<()> {
        Ok(self.limits().value("value", value)?)
    }

    pub(super) fn validate_op(&self, op: &Op) -> Result<()> {
        match op {
            Op::Put { key, value, .. } => {
                self.validate_key(key)?;
                self.validate_value(value)?;
                Self::storage_checks(op)
            }
            Op::Delete { key } => self.validate_key(key),
            Op::CompareAndSwap {
                key,
                expected,
                new_value,
                ..
            } => {
                self.validate_key(key)?;
                if let Some(v) = expected {
                    self.validate_value(v)?;
                }
                if let Some(v) = new_value {
                    self.validate_value(v)?;
                }
                Ok(())
            }
            Op::Expire { .. } => Ok(()),
            Op::DeleteRange { range, .. } => {
                self.validate_key(&range.start)?;
                Self::storage_checks(op)
            }
            Op::Txn(t) => {
                for c in &t.compares {
                    self.validate_key(&c.key)?;
                }
                for o in t.success.iter().chain(&t.failure) {
                    if let TxnOp::Put { key, value, .. } = o {
                        self.validate_key(key)?;
                        self.validate_value(value)?;
                    }
                }
                Self::storage_checks(op)
            }
            Op::LeaseGrant { .. } | Op::LeaseRevoke { .. } | Op::Auth(_) => {
                Self::storage_checks(op)
            }
        }
    }

    /// The state machine's own checks of an op (ranges, transaction sizes,
    /// lease parameters), as `InvalidArgument` before proposing.
    fn storage_checks(op: &Op) -> Result<()> {
        op.validate()
            .map_err(|e| super::types::Error::InvalidArgument(e.to_string()))
    }
}
