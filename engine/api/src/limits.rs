//! Client-side request validation, so an oversized key fails at once with a
//! message naming the limit instead of after a network round trip.

use crate::error::{Error, Result};

/// Largest key the server accepts by default (bytes).
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest value the server accepts by default (bytes): 1 MiB.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Size limits checked before a request is sent. The defaults match the
/// server's defaults; raise them only together with the server's
/// `limits` configuration (the server checks again either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Keys must be `1..=max_key_bytes` long; prefixes at most this long.
    pub max_key_bytes: usize,
    /// Values (and compare-and-swap operands) at most this long.
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: MAX_KEY_BYTES,
            max_value_bytes: MAX_VALUE_BYTES,
        }
    }
}

impl Limits {
    /// A key: non-empty and at most `max_key_bytes`.
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "key is empty; keys must be 1..={} bytes",
                self.max_key_bytes
            )));
        }
        self.check_len("key", key.len(), self.max_key_bytes)
    }

    /// A scan or watch prefix: may be empty (everything), at most `max_key_bytes`.
    pub fn check_prefix(&self, prefix: &[u8]) -> Result<()> {
        self.check_len("prefix", prefix.len(), self.max_key_bytes)
    }

    /// A value (`field` names it in the message, e.g. `"value"`, `"expected_value"`).
    pub fn check_value(&self, field: &str, value: &[u8]) -> Result<()> {
        self.check_len(field, value.len(), self.max_value_bytes)
    }

    fn check_len(&self, field: &str, len: usize, limit: usize) -> Result<()> {
        if len > limit {
            return Err(Error::InvalidArgument(format!(
                "{field} is {len} bytes; the limit is {limit} bytes"
            )));
        }
        Ok(())
    }

    /// Rejects limits of zero.
    pub fn validate(&self) -> Result<()> {
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "limits must be > 0 (max_key_bytes {}, max_value_bytes {})",
                self.max_key_bytes, self.max_value_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn keys() {
        let l = Limits::default();
        assert!(l.check_key(b"k").is_ok());
        assert!(l.check_key(&[7; MAX_KEY_BYTES]).is_ok());
        assert_eq!(
            msg(l.check_key(b"")),
            "key is empty; keys must be 1..=4096 bytes"
        );
        assert_eq!(
            msg(l.check_key(&[7; MAX_KEY_BYTES + 1])),
            "key is 4097 bytes; the limit is 4096 bytes"
        );
    }

    #[test]
    fn values_and_prefixes() {
        let l = Limits::default();
        assert!(l.check_value("value", &[]).is_ok());
        assert!(l.check_value("value", &vec![0; MAX_VALUE_BYTES]).is_ok());
        assert_eq!(
            msg(l.check_value("value", &vec![0; MAX_VALUE_BYTES + 1])),
            "value is 1048577 bytes; the limit is 1048576 bytes"
        );
        assert!(l.check_prefix(b"").is_ok());
        assert!(msg(l.check_prefix(&[1; 5000])).starts_with("prefix is 5000 bytes"));
        assert!(Limits {
            max_key_bytes: 0,
            ..l
        }
        .validate()
        .is_err());
        assert!(l.validate().is_ok());
    }
}
