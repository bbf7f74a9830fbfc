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
//!
//! Which certificates are trusted:
//! - a CA given with [`TlsOptions::ca_file`] / [`TlsOptions::ca_pem`]: that
//!   CA only (a private cluster CA, e.g. from `d-engine-server certs`);
//! - no CA (`https://` endpoints without `.tls(...)`, or `TlsOptions`
//!   without a CA): the operating system's trust store, read once per
//!   client (cargo feature `tls-native-roots`, on by default). Without that
//!   feature, TLS without a CA is refused with an error that says so.

use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub use d_engine_api::tls::{
    check_certs, check_key, read_file, PemSource, TlsMaterial, TlsOptions,
};

use crate::error::Result;

/// Reads and checks `tls`; the tonic configuration to connect with. With a
/// CA, only that CA is trusted; without one, the system roots (see the
/// module documentation).
pub fn client_config(tls: &TlsOptions) -> Result<ClientTlsConfig> {
    let m = tls.read_allowing_system_roots()?;
    let mut cfg = if m.ca.is_empty() {
        system_roots()?
    } else {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(m.ca))
    };
    if let Some((cert, key)) = m.identity {
        cfg = cfg.identity(Identity::from_pem(cert, key));
    }
    if let Some(d) = m.domain {
        cfg = cfg.domain_name(d);
    }
    Ok(cfg)
}

/// A configuration trusting the operating system's roots.
#[cfg(feature = "tls-native-roots")]
fn system_roots() -> Result<ClientTlsConfig> {
    Ok(ClientTlsConfig::new().with_native_roots())
}

#[cfg(not(feature = "tls-native-roots"))]
fn system_roots() -> Result<ClientTlsConfig> {
    Err(crate::error::Error::InvalidArgument(
        "TLS without a CA needs the system roots, but d-engine-client was built without its \
         `tls-native-roots` feature: enable it, or set TlsOptions::ca_file"
            .into(),
    ))
}
