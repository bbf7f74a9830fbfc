//! What a client's TLS needs, as data: which CA to trust, an optional
//! client certificate for mutual TLS, and the name to check on the
//! server's certificate; plus the PEM file checks the node's `[tls]`
//! loading shares.
//!
//! No TLS stack here: [`TlsOptions::read`] reads and checks the material
//! and returns the PEM bytes; the gRPC client turns them into its
//! transport's configuration (`d_engine_client::ClientBuilder::tls`).
//!
//! ```
//! use d_engine_api::TlsOptions;
//! let tls = TlsOptions::new()
//!     .ca_file("certs/ca.pem")
//!     .client_cert_files("certs/client-app.pem", "certs/client-app-key.pem");
//! assert!(tls.read().is_err()); // the files do not exist here
//! ```
//!
//! Files are read and checked when the client is built: an unreadable file
//! or one without the expected PEM block is an `InvalidArgument` naming the
//! option and the path.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// Where the TLS material comes from: a file path or PEM bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PemSource {
    File(PathBuf),
    Pem(Vec<u8>),
}

impl PemSource {
    fn describe(&self) -> String {
        match self {
            PemSource::File(p) => p.display().to_string(),
            PemSource::Pem(_) => "<PEM given in memory>".into(),
        }
    }

    fn bytes(&self, option: &str) -> std::result::Result<Vec<u8>, String> {
        match self {
            PemSource::File(p) => read_file(option, p),
            PemSource::Pem(b) => Ok(b.clone()),
        }
    }
}

/// TLS settings of a gRPC client (`d_engine_client::ClientBuilder::tls`).
/// With TLS configured, endpoints without a scheme use `https://`; an
/// `http://` endpoint is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// CA bundle the server's certificate must chain to. `None`: the Rust
    /// gRPC client trusts the operating system's roots instead (its
    /// `tls-native-roots` feature, on by default); a given CA replaces the
    /// system roots.
    pub ca: Option<PemSource>,
    /// Client certificate chain and key for mutual TLS (both or neither).
    pub cert: Option<PemSource>,
    pub key: Option<PemSource>,
    /// Name checked against the server certificate instead of the
    /// endpoint's host (e.g. `node-1` when connecting by IP to a
    /// certificate without that IP).
    pub domain: Option<String>,
}

impl TlsOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust the PEM CA bundle in `path`.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(PemSource::File(path.into()));
        self
    }

    /// Trust the PEM CA bundle `pem`.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(PemSource::Pem(pem.into()));
        self
    }

    /// Present the client certificate in `cert` with the key in `key` (PEM files).
    pub fn client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(PemSource::File(cert.into()));
        self.key = Some(PemSource::File(key.into()));
        self
    }

    /// Present the client certificate `cert` with the key `key` (PEM bytes).
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.cert = Some(PemSource::Pem(cert.into()));
        self.key = Some(PemSource::Pem(key.into()));
        self
    }

    /// Check the server certificate for `name` instead of the endpoint host.
    pub fn domain(mut self, name: impl Into<String>) -> Self {
        self.domain = Some(name.into());
        self
    }

    /// Reads and checks the material: the CA (required), the client
    /// identity (both halves or neither) and the domain (not empty). Every
    /// refusal is `InvalidArgument` naming the option and the file.
    pub fn read(&self) -> Result<TlsMaterial> {
        if self.ca.is_none() {
            return Err(Error::InvalidArgument(
                "TLS needs a CA to trust: set TlsOptions::ca_file (e.g. the ca.pem written by \
                 `d-engine-server certs`)"
                    .into(),
            ));
        }
        self.read_allowing_system_roots()
    }

    /// Like [`TlsOptions::read`], but without a CA the material's `ca` is
    /// empty: the caller trusts the system roots instead.
    pub fn read_allowing_system_roots(&self) -> Result<TlsMaterial> {
        let invalid = |m: String| Error::InvalidArgument(m);
        let ca_pem = match &self.ca {
            Some(ca) => {
                let pem = ca.bytes("ca").map_err(invalid)?;
                check_certs("ca", &ca.describe(), &pem).map_err(invalid)?;
                pem
            }
            None => Vec::new(),
        };
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let cert = c.bytes("cert").map_err(invalid)?;
                check_certs("cert", &c.describe(), &cert).map_err(invalid)?;
                let key = k.bytes("key").map_err(invalid)?;
                check_key("key", &k.describe(), &key).map_err(invalid)?;
                Some((cert, key))
            }
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "TLS client certificate and key must be given together \
                     (TlsOptions::client_cert_files(cert, key))"
                        .into(),
                ))
            }
        };
        if self.domain.as_deref() == Some("") {
            return Err(invalid("TlsOptions::domain must not be empty".into()));
        }
        Ok(TlsMaterial {
            ca: ca_pem,
            identity,
            domain: self.domain.clone(),
        })
    }
}

/// Checked TLS material of a [`TlsOptions`] (PEM bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsMaterial {
    /// CA bundle: at least one certificate (empty only from
    /// [`TlsOptions::read_allowing_system_roots`] without a CA).
    pub ca: Vec<u8>,
    /// Client certificate chain and private key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to check on the server certificate instead of the host.
    pub domain: Option<String>,
}

/// Reads `path` for `option`; the error names both and what to check.
pub fn read_file(option: &str, path: &Path) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "{option}: cannot read {}: {e}; check the path and the file's permissions",
            path.display()
        )
    })
}

/// Checks that `pem` (from `origin`, for `option`) holds at least one
/// certificate and nothing unparsable.
pub fn check_certs(option: &str, origin: &str, pem: &[u8]) -> std::result::Result<(), String> {
    let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(()),
        Ok(_) => Err(format!(
            "{option}: {origin} holds no PEM certificate (expected a \
             '-----BEGIN CERTIFICATE-----' block)"
        )),
        Err(e) => Err(format!(
            "{option}: {origin} is not a valid PEM certificate file: {e}"
        )),
    }
}

/// Checks that `pem` (from `origin`, for `option`) holds a private key.
pub fn check_key(option: &str, origin: &str, pem: &[u8]) -> std::result::Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem).map(|_| ()).map_err(|e| {
        format!("{option}: {origin} holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_and_half_identity_are_named() {
        let e = TlsOptions::new().read().unwrap_err();
        assert!(e.to_string().contains("ca_file"), "{e}");
        let e = TlsOptions::new()
            .ca_file("/nonexistent/ca.pem")
            .read()
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let e = TlsOptions::new()
            .ca_pem(b"not pem".to_vec())
            .read()
            .unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let mut o = TlsOptions::new().ca_pem(b"x".to_vec());
        o.cert = Some(PemSource::Pem(b"x".to_vec()));
        let e = o.read().unwrap_err();
        assert!(
            e.to_string().contains("no PEM certificate") || e.to_string().contains("together"),
            "{e}"
        );
    }
}
