//! TLS for the gRPC client: the options and PEM checks live in
//! `d_engine_api::tls` (re-exported here); this module turns checked
//! material into tonic's client configuration.
//!
//! ```no_run
//! # async fn f() -> Result<(), d_engine_client::Error> {
//! use d_engine_client::{ClientBuilder, TlsOptions};
//! let client = ClientBuilder::new(["https://127.0.0.1:9083"])
//!     .tls(TlsOptions::new().ca_file("certs/ca.pem")
//!         .client_cert_files("certs/client-app.pem", "certs/client-app-key.pem"))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Files are read and checked when the client is built: an unreadable file
//! or one without the expected PEM block is an `InvalidArgument` naming the
//! option and the path.

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub use d_engine_api::tls::{
    check_certs, check_key, read_file, PemSource, TlsMaterial, TlsOptions,
};

use crate::error::Result;

/// Reads and checks `tls` ([`TlsOptions::read`]); the tonic configuration
/// to connect with.
pub fn client_config(tls: &TlsOptions) -> Result<ClientTlsConfig> {
    let m = tls.read()?;
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(m.ca));
    if let Some((cert, key)) = m.identity {
        cfg = cfg.identity(Identity::from_pem(cert, key));
    }
    if let Some(d) = m.domain {
        cfg = cfg.domain_name(d);
    }
    Ok(cfg)
}
