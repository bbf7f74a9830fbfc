//! Request size limits and the one message each refusal carries, shared
//! by the gRPC client (checks before sending), the client service's
//! validation (with `field`/`limit` in the status), and the node runtime
//! (the embedded client's path). Every check answers a [`LimitError`]
//! naming the field, the limit and the server setting that sets it.
//!
//! The constants are the hard maxima (and defaults) of the server's
//! `limits` configuration; the state machine checks them once more when
//! applying a command. The pure-Python client keeps a copy of the
//! constants; a test in this crate fails if that copy drifts.

use crate::error::{Error, Result};

/// Largest key the server accepts by default (bytes).
pub const MAX_KEY_BYTES: usize = 4096;
/// Largest value the server accepts by default (bytes): 1 MiB.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Setting that bounds keys and prefixes.
pub const KEY_SETTING: &str = "limits.max_key_bytes";
/// Setting that bounds values.
pub const VALUE_SETTING: &str = "limits.max_value_bytes";

/// A request field over (or under) its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitError {
    /// The request field, e.g. `"key"`, `"keys[3]"`, `"expected_value"`.
    pub field: String,
    /// The limit that applies (bytes).
    pub limit: u64,
    /// The human-readable refusal; names the field, the size, the limit
    /// and the setting.
    pub message: String,
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LimitError {}

impl From<LimitError> for Error {
    fn from(e: LimitError) -> Error {
        Error::InvalidArgument(e.message)
    }
}

impl LimitError {
    /// The wire form: `InvalidArgument` with `field` and `limit` in the
    /// status' `ErrorInfo` metadata.
    pub fn to_status(&self) -> tonic::Status {
        crate::status_codec::limit_status(&self.field, self.limit, self.message.clone())
    }
}

/// Size limits of keys, prefixes and values. The defaults are the
/// server's defaults; a client raises them only together with the
/// server's `limits` configuration (the server checks again either way).
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

fn too_long(field: &str, len: usize, limit: usize, setting: &str) -> LimitError {
    LimitError {
        field: field.to_string(),
        limit: limit as u64,
        message: format!("{field} is {len} bytes; the limit is {limit} bytes ({setting})"),
    }
}

impl Limits {
    /// A key named `field`: non-empty and at most `max_key_bytes`.
    pub fn key(&self, field: &str, key: &[u8]) -> Result<(), LimitError> {
        if key.is_empty() {
            return Err(LimitError {
                field: field.to_string(),
                limit: self.max_key_bytes as u64,
                message: format!(
                    "{field} is empty; keys must be 1..={} bytes ({KEY_SETTING})",
                    self.max_key_bytes
                ),
            });
        }
        self.prefix(field, key)
    }

    /// A scan or watch prefix named `field`: may be empty (everything), at
    /// most `max_key_bytes`.
    pub fn prefix(&self, field: &str, prefix: &[u8]) -> Result<(), LimitError> {
        if prefix.len() > self.max_key_bytes {
            return Err(too_long(
                field,
                prefix.len(),
                self.max_key_bytes,
                KEY_SETTING,
            ));
        }
        Ok(())
    }

    /// A value named `field` (`"value"`, `"expected_value"`, ...): at most
    /// `max_value_bytes`.
    pub fn value(&self, field: &str, value: &[u8]) -> Result<(), LimitError> {
        if value.len() > self.max_value_bytes {
            return Err(too_long(
                field,
                value.len(),
                self.max_value_bytes,
                VALUE_SETTING,
            ));
        }
        Ok(())
    }

    /// [`Limits::key`] for the field `key`, as an [`Error`].
    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        Ok(self.key("key", key)?)
    }

    /// [`Limits::prefix`] for the field `prefix`, as an [`Error`].
    pub fn check_prefix(&self, prefix: &[u8]) -> Result<()> {
        Ok(self.prefix("prefix", prefix)?)
    }

    /// [`Limits::value`], as an [`Error`].
    pub fn check_value(&self, field: &str, value: &[u8]) -> Result<()> {
        Ok(self.value(field, value)?)
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
            "key is empty; keys must be 1..=4096 bytes (limits.max_key_bytes)"
        );
        assert_eq!(
            msg(l.check_key(&[7; MAX_KEY_BYTES + 1])),
            "key is 4097 bytes; the limit is 4096 bytes (limits.max_key_bytes)"
        );
        let e = l.key("keys[2]", &[7; MAX_KEY_BYTES + 1]).unwrap_err();
        assert_eq!(e.field, "keys[2]");
        assert_eq!(e.limit, 4096);
        assert!(e.message.starts_with("keys[2] is 4097 bytes"), "{e}");
    }

    #[test]
    fn values_and_prefixes() {
        let l = Limits::default();
        assert!(l.check_value("value", &[]).is_ok());
        assert!(l.check_value("value", &vec![0; MAX_VALUE_BYTES]).is_ok());
        assert_eq!(
            msg(l.check_value("value", &vec![0; MAX_VALUE_BYTES + 1])),
            "value is 1048577 bytes; the limit is 1048576 bytes (limits.max_value_bytes)"
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

    #[test]
    fn the_status_carries_field_and_limit() {
        use tonic_types::StatusExt;
        let st = Limits::default()
            .value("value", &[0; 9])
            .map_err(|e| e.to_status());
        assert!(st.is_ok());
        let e = Limits {
            max_key_bytes: 4,
            max_value_bytes: 8,
        }
        .value("expected_value", &[0; 9])
        .unwrap_err();
        let st = e.to_status();
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert_eq!(st.message(), e.message);
        let info = st.get_details_error_info().unwrap();
        assert_eq!(info.metadata["field"], "expected_value");
        assert_eq!(info.metadata["limit"], "8");
    }

    /// The pure-Python client (`clients/python/python/d_engine/_codec.py`)
    /// keeps its own copy of the constants; this fails when it drifts.
    #[test]
    fn python_client_constants_match() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../clients/python/python/d_engine/_codec.py"
        );
        let src = std::fs::read_to_string(path).expect("read the Python client's _codec.py");
        let value_of = |name: &str| -> usize {
            let line = src
                .lines()
                .find(|l| l.starts_with(&format!("{name} =")))
                .unwrap_or_else(|| panic!("{name} not defined in {path}"));
            let rhs = line.split_once('=').unwrap().1;
            let rhs = rhs.split('#').next().unwrap().trim();
            match rhs.split_once("<<") {
                Some((a, b)) => {
                    a.trim().parse::<usize>().unwrap() << b.trim().parse::<u32>().unwrap()
                }
                None => rhs.replace('_', "").parse().unwrap(),
            }
        };
        assert_eq!(value_of("MAX_KEY_BYTES"), MAX_KEY_BYTES, "{path}");
        assert_eq!(value_of("MAX_VALUE_BYTES"), MAX_VALUE_BYTES, "{path}");
        // The messages, as the Python f-strings spell them.
        for (name, value) in [
            ("KEY_SETTING", KEY_SETTING),
            ("VALUE_SETTING", VALUE_SETTING),
        ] {
            assert!(
                src.contains(&format!("{name} = \"{value}\"")),
                "{name} = \"{value}\" missing from {path}"
            );
        }
        for template in [
            "{what} is empty; keys must be 1..={MAX_KEY_BYTES} bytes ({KEY_SETTING})",
            "{what} is {len(b)} bytes; the limit is {MAX_KEY_BYTES} bytes ({KEY_SETTING})",
            "prefix is {len(b)} bytes; the limit is {MAX_KEY_BYTES} bytes ({KEY_SETTING})",
            "{what} is {len(b)} bytes; the limit is {MAX_VALUE_BYTES} bytes ({VALUE_SETTING})",
        ] {
            assert!(
                src.contains(template),
                "message {template:?} missing from {path}"
            );
        }
    }
}
