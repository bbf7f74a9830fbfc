//! Tiny little-endian binary codec shared by commands, state-machine records
//! and snapshot files. Decoding never panics and never allocates more than
//! the input holds: every length is checked against the remaining bytes.

use bytes::Bytes;
use std::fmt;

/// Why a byte string could not be decoded. `offset` is relative to the start
/// of the buffer handed to the [`Reader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireError {
    pub offset: usize,
    pub what: String,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for WireError {}

/// Appends encoded values to a `Vec<u8>`.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }
    /// Length-prefixed (u32) byte string.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        debug_assert!(v.len() <= u32::MAX as usize);
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(x) => self.u8(1).u64(x),
        }
    }
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(x) => self.u8(1).bytes(x),
        }
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values back; every method returns a [`WireError`] naming the field.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn err(&self, what: impl Into<String>) -> WireError {
        WireError {
            offset: self.pos,
            what: what.into(),
        }
    }
    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(self.err(format!(
                "truncated {field}: need {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self, field: &str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }
    pub fn u32(&mut self, field: &str) -> Result<u32, WireError> {
        let s = self.take(4, field)?;
        Ok(u32::from_le_bytes(s.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self, field: &str) -> Result<u64, WireError> {
        let s = self.take(8, field)?;
        Ok(u64::from_le_bytes(s.try_into().expect("8 bytes")))
    }
    pub fn bool(&mut self, field: &str) -> Result<bool, WireError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.err(format!("{field}: invalid boolean byte {b}"))),
        }
    }
    pub fn bytes(&mut self, field: &str) -> Result<&'a [u8], WireError> {
        let n = self.u32(field)? as usize;
        self.take(n, field)
    }
    pub fn bytes_owned(&mut self, field: &str) -> Result<Bytes, WireError> {
        Ok(Bytes::copy_from_slice(self.bytes(field)?))
    }
    pub fn string(&mut self, field: &str) -> Result<String, WireError> {
        let b = self.bytes(field)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(format!("{field}: not valid UTF-8")))
    }
    pub fn opt_u64(&mut self, field: &str) -> Result<Option<u64>, WireError> {
        if self.bool(field)? {
            Ok(Some(self.u64(field)?))
        } else {
            Ok(None)
        }
    }
    pub fn opt_bytes(&mut self, field: &str) -> Result<Option<Bytes>, WireError> {
        if self.bool(field)? {
            Ok(Some(self.bytes_owned(field)?))
        } else {
            Ok(None)
        }
    }
    /// The rest of the buffer.
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &str) -> Result<(), WireError> {
        if self.remaining() != 0 {
            return Err(self.err(format!(
                "{} unexpected trailing bytes after {what}",
                self.remaining()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let mut w = Writer::new();
        w.u8(7)
            .u32(9)
            .u64(u64::MAX)
            .bytes(b"abc")
            .opt_u64(None)
            .opt_bytes(Some(b"x"));
        let buf = w.into_vec();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u32("b").unwrap(), 9);
        assert_eq!(r.u64("c").unwrap(), u64::MAX);
        assert_eq!(r.bytes("d").unwrap(), b"abc");
        assert_eq!(r.opt_u64("e").unwrap(), None);
        assert_eq!(r.opt_bytes("f").unwrap().as_deref(), Some(&b"x"[..]));
        r.finish("test").unwrap();
        for cut in 0..buf.len() {
            let mut r = Reader::new(&buf[..cut]);
            let res = (|| -> Result<(), WireError> {
                r.u8("a")?;
                r.u32("b")?;
                r.u64("c")?;
                r.bytes("d")?;
                r.opt_u64("e")?;
                r.opt_bytes("f")?;
                Ok(())
            })();
            assert!(res.is_err(), "cut at {cut} must fail");
        }
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_an_allocation() {
        let mut w = Writer::new();
        w.u32(u32::MAX);
        let buf = w.into_vec();
        let err = Reader::new(&buf).bytes("value").unwrap_err();
        assert!(err.what.contains("truncated value"), "{err}");
    }
}
