//! A node's TLS material, loaded once at startup from `[tls]`
//! (`docs/tls.md`).
//!
//! - Client port (`tls.client_api`): the node's certificate; with
//!   `tls.client_auth` = "optional" / "require", client certificates are
//!   verified against `tls.ca_file` (and required).
//! - Peer port (`tls.peer`): mutual TLS. The peer server requires a client
//!   certificate signed by the peer CA — `tls.peer_ca_file` when set (a
//!   trust root of its own, so a certificate issued for the client API can
//!   never act as a node), else `tls.ca_file`; outbound links present the
//!   node's peer certificate (`tls.peer_cert_file`/`peer_key_file`, default
//!   `cert_file`/`key_file`) and verify the peer's against the same CA. With
//!   `tls.check_peer_names` (default) the certificates must also name the
//!   node: an outbound link to node N checks the DNS name `node-N`, and the
//!   peer server checks that a caller claiming to be node N presents a
//!   certificate valid for `node-N` ([`cert_names_node`]).
//!
//! Every file problem is a [`ConfigError`] naming the key and the path.

use d_engine_api::tls::{check_certs, check_key, read_file};
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::config::{ClientAuth, ConfigError, TlsConfig};

/// The DNS name a node's certificate carries for peer identity checks.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// TLS settings of the peer transport (both directions).
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// Peer server: node identity, client certificates required.
    pub server: ServerTlsConfig,
    /// Outbound links: node identity, the cluster CA.
    pub client: ClientTlsConfig,
    /// Check that peer certificates name `node-<id>` (see module docs).
    pub check_names: bool,
}

impl PeerTls {
    /// The client configuration for a link to node `peer`.
    pub fn client_for(&self, peer: u64) -> ClientTlsConfig {
        if self.check_names {
            self.client.clone().domain_name(node_name(peer))
        } else {
            self.client.clone()
        }
    }
}

/// Everything TLS a node needs, read from the files named in `[tls]`.
#[derive(Clone, Debug, Default)]
pub struct NodeTls {
    /// The client API server's configuration (`tls.client_api`).
    pub client_api: Option<ServerTlsConfig>,
    /// Peer mTLS (`tls.peer`).
    pub peer: Option<PeerTls>,
    /// How this node's embedded client forwards to other nodes' TLS client
    /// API: trusting `ca_file` and presenting the node certificate.
    /// `None` when the client API is plaintext or no CA is configured.
    pub forward: Option<ClientTlsConfig>,
}

struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
    /// `tls.peer_ca_file`, when set.
    peer_ca: Option<Vec<u8>>,
    /// `tls.peer_cert_file` and `tls.peer_key_file`, when set.
    peer_identity: Option<(Vec<u8>, Vec<u8>)>,
}

fn load_files(t: &TlsConfig) -> Result<Files, ConfigError> {
    let read = |key: &'static str, path: &std::path::Path| {
        read_file(key, path).map_err(|m| ConfigError::new(key, m))
    };
    let cert = read("tls.cert_file", &t.cert_file)?;
    let origin = t.cert_file.display().to_string();
    check_certs("tls.cert_file", &origin, &cert)
        .map_err(|m| ConfigError::new("tls.cert_file", m))?;
    let key = read("tls.key_file", &t.key_file)?;
    check_key("tls.key_file", &t.key_file.display().to_string(), &key)
        .map_err(|m| ConfigError::new("tls.key_file", m))?;
    let ca = if t.ca_file.as_os_str().is_empty() {
        None
    } else {
        let ca = read("tls.ca_file", &t.ca_file)?;
        check_certs("tls.ca_file", &t.ca_file.display().to_string(), &ca)
            .map_err(|m| ConfigError::new("tls.ca_file", m))?;
        Some(ca)
    };
    let peer_ca = if t.peer_ca_file.as_os_str().is_empty() {
        None
    } else {
        let ca = read("tls.peer_ca_file", &t.peer_ca_file)?;
        check_certs(
            "tls.peer_ca_file",
            &t.peer_ca_file.display().to_string(),
            &ca,
        )
        .map_err(|m| ConfigError::new("tls.peer_ca_file", m))?;
        Some(ca)
    };
    let peer_identity = if t.peer_cert_file.as_os_str().is_empty() {
        None
    } else {
        let c = read("tls.peer_cert_file", &t.peer_cert_file)?;
        check_certs(
            "tls.peer_cert_file",
            &t.peer_cert_file.display().to_string(),
            &c,
        )
        .map_err(|m| ConfigError::new("tls.peer_cert_file", m))?;
        let k = read("tls.peer_key_file", &t.peer_key_file)?;
        check_key(
            "tls.peer_key_file",
            &t.peer_key_file.display().to_string(),
            &k,
        )
        .map_err(|m| ConfigError::new("tls.peer_key_file", m))?;
        Some((c, k))
    };
    Ok(Files {
        cert,
        key,
        ca,
        peer_ca,
        peer_identity,
    })
}

/// Checks that tonic/rustls accept a server configuration (e.g. that the
/// key matches the certificate) so a bad pair fails at startup.
fn check_server(cfg: &ServerTlsConfig) -> Result<(), ConfigError> {
    check_server_pair(cfg, "tls.cert_file", "tls.key_file")
}

fn check_server_pair(
    cfg: &ServerTlsConfig,
    cert_key: &str,
    key_key: &str,
) -> Result<(), ConfigError> {
    tonic::transport::Server::builder()
        .tls_config(cfg.clone())
        .map(|_| ())
        .map_err(|e| {
            ConfigError::new(
                key_key,
                format!(
                    "the certificate ({cert_key}) and key ({key_key}) are not usable \
                     together: {}",
                    error_chain(&e)
                ),
            )
        })
}

impl NodeTls {
    /// Reads and checks the files `t` names; `Ok(None)` when TLS is off.
    pub fn load(t: &TlsConfig) -> Result<Option<NodeTls>, ConfigError> {
        if !t.enabled() {
            return Ok(None);
        }
        let f = load_files(t)?;
        let identity = Identity::from_pem(&f.cert, &f.key);
        let mut out = NodeTls::default();
        if t.client_api {
            let mut s = ServerTlsConfig::new().identity(identity.clone());
            if t.client_auth != ClientAuth::None {
                let ca = f.ca.as_ref().ok_or_else(|| {
                    ConfigError::new("tls.ca_file", "is required by tls.client_auth")
                })?;
                s = s
                    .client_ca_root(Certificate::from_pem(ca))
                    .client_auth_optional(t.client_auth == ClientAuth::Optional);
            }
            check_server(&s)?;
            out.client_api = Some(s);
            if let Some(ca) = &f.ca {
                out.forward = Some(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(ca))
                        .identity(identity.clone()),
                );
            }
        }
        if t.peer {
            let ca = f.peer_ca.as_ref().or(f.ca.as_ref()).ok_or_else(|| {
                ConfigError::new(
                    "tls.ca_file",
                    "is required by tls.peer (or tls.peer_ca_file)",
                )
            })?;
            let (identity, keys) = match &f.peer_identity {
                Some((c, k)) => (
                    Identity::from_pem(c, k),
                    ("tls.peer_cert_file", "tls.peer_key_file"),
                ),
                None => (identity, ("tls.cert_file", "tls.key_file")),
            };
            let server = ServerTlsConfig::new()
                .identity(identity.clone())
                .client_ca_root(Certificate::from_pem(ca));
            check_server_pair(&server, keys.0, keys.1)?;
            let client = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(identity);
            out.peer = Some(PeerTls {
                server,
                client,
                check_names: t.check_peer_names,
            });
        }
        Ok(Some(out))
    }
}

/// True if the end-entity certificate `der` is valid for the DNS name
/// `node-<id>` (subject alternative names; the chain itself was already
/// verified by the TLS handshake).
pub fn cert_names_node(der: &CertificateDer<'_>, id: u64) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(node_name(id)) else {
        return false;
    };
    cert.verify_is_valid_for_subject_name(&name).is_ok()
}

/// An error and its sources on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cfg(dir: &std::path::Path) -> TlsConfig {
        TlsConfig {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            ca_file: dir.join("ca.pem"),
            client_api: true,
            ..TlsConfig::default()
        }
    }

    #[test]
    fn off_loads_nothing() {
        assert!(NodeTls::load(&TlsConfig::default()).unwrap().is_none());
    }

    #[test]
    fn file_errors_name_the_key_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = NodeTls::load(&cfg(dir.path())).unwrap_err();
        assert_eq!(e.key, "tls.cert_file");
        assert!(e.message.contains("cert.pem"), "{e}");

        std::fs::write(dir.path().join("cert.pem"), "garbage").unwrap();
        let e = NodeTls::load(&cfg(dir.path())).unwrap_err();
        assert_eq!(e.key, "tls.cert_file");
        assert!(e.message.contains("no PEM certificate"), "{e}");

        let t = TlsConfig {
            cert_file: PathBuf::from("/nonexistent/c.pem"),
            ..cfg(dir.path())
        };
        let e = NodeTls::load(&t).unwrap_err();
        assert!(e.message.contains("/nonexistent/c.pem"), "{e}");
    }
}
