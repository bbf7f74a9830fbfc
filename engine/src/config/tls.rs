//! `[tls]`: TLS on the client API and mutual TLS between peers
//! (`docs/tls.md`). Validation names the files each switch needs; their
//! contents are read and checked when the node starts (`crate::tls`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// Whether the client port asks for client certificates (`[tls] client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is requested (default).
    #[default]
    None,
    /// A client certificate is verified against `ca_file` if presented.
    Optional,
    /// Every client must present a certificate signed by `ca_file`.
    Require,
}

/// TLS for the client API and mutual TLS between peers. See `docs/tls.md`.
///
/// Both switches default to off (plaintext). The files are PEM; they are
/// read once at startup, and an unreadable or malformed file stops the node
/// with an error naming the key and the path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// This node's certificate chain (PEM). Required when `client_api` or
    /// `peer` is on. Default empty.
    pub cert_file: PathBuf,
    /// The private key of `cert_file` (PEM, PKCS#8, PKCS#1 or SEC1). Default empty.
    pub key_file: PathBuf,
    /// CA bundle (PEM) that signs the cluster's node certificates (peer
    /// mTLS) and the client certificates (`client_auth`). Required when
    /// `peer` is on or `client_auth` is not "none". Default empty.
    pub ca_file: PathBuf,
    /// Serve the client API over TLS. Default false.
    pub client_api: bool,
    /// Mutual TLS on the peer (Raft) port: both sides present node
    /// certificates signed by `ca_file`. Default false.
    pub peer: bool,
    /// Client certificates on the client port: "none" (default),
    /// "optional" or "require". Needs `client_api = true`.
    pub client_auth: ClientAuth,
    /// With `peer = true`: a peer calling as node N must present a
    /// certificate valid for the DNS name `node-N` (what `d-engine-server
    /// certs` writes), so one node's key cannot impersonate another.
    /// Default true.
    pub check_peer_names: bool,
    /// With `peer = true`: a separate CA bundle (PEM) that signs node
    /// certificates, trusted on the peer port instead of `ca_file` (like
    /// etcd's `--peer-trusted-ca-file`), so that a certificate issued for
    /// the client API can never act as a node. Default empty: `ca_file`.
    pub peer_ca_file: PathBuf,
    /// With `peer = true`: the certificate this node presents to peers
    /// (signed by `peer_ca_file`). Default empty: `cert_file`.
    pub peer_cert_file: PathBuf,
    /// The private key of `peer_cert_file`. Default empty: `key_file`.
    pub peer_key_file: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            ca_file: PathBuf::new(),
            client_api: false,
            peer: false,
            client_auth: ClientAuth::None,
            check_peer_names: true,
            peer_ca_file: PathBuf::new(),
            peer_cert_file: PathBuf::new(),
            peer_key_file: PathBuf::new(),
        }
    }
}

impl TlsConfig {
    /// True when any listener or outbound link uses TLS.
    pub fn enabled(&self) -> bool {
        self.client_api || self.peer
    }
}

impl Config {
    /// `[tls]`: the files each switch needs are named. Their contents are
    /// checked when the node starts (`crate::tls`).
    pub(super) fn validate_tls(&self) -> Result<(), ConfigError> {
        let t = &self.tls;
        let empty = |p: &PathBuf| p.as_os_str().is_empty();
        if t.enabled() {
            let why = if t.peer { "tls.peer" } else { "tls.client_api" };
            if empty(&t.cert_file) {
                return Err(ConfigError::new(
                    "tls.cert_file",
                    format!(
                        "must name this node's PEM certificate when {why} = true \
                         (`d-engine-server certs` writes development ones)"
                    ),
                ));
            }
            if empty(&t.key_file) {
                return Err(ConfigError::new(
                    "tls.key_file",
                    format!("must name the PEM private key of tls.cert_file when {why} = true"),
                ));
            }
        }
        if t.peer && empty(&t.ca_file) && empty(&t.peer_ca_file) {
            return Err(ConfigError::new(
                "tls.ca_file",
                "must name the CA (PEM) that signs the node certificates when tls.peer = true \
                 (or set tls.peer_ca_file)",
            ));
        }
        if !t.peer {
            for (key, p) in [
                ("tls.peer_ca_file", &t.peer_ca_file),
                ("tls.peer_cert_file", &t.peer_cert_file),
                ("tls.peer_key_file", &t.peer_key_file),
            ] {
                if !empty(p) {
                    return Err(ConfigError::new(
                        key,
                        "is only used with tls.peer = true; set tls.peer = true or remove it",
                    ));
                }
            }
        }
        if empty(&t.peer_cert_file) != empty(&t.peer_key_file) {
            return Err(ConfigError::new(
                "tls.peer_key_file",
                "tls.peer_cert_file and tls.peer_key_file are set together (the peer \
                 certificate and its key), or neither",
            ));
        }
        if t.client_auth != ClientAuth::None {
            if !t.client_api {
                return Err(ConfigError::new(
                    "tls.client_auth",
                    "needs tls.client_api = true (client certificates are a TLS feature)",
                ));
            }
            if empty(&t.ca_file) {
                return Err(ConfigError::new(
                    "tls.ca_file",
                    "must name the CA (PEM) that signs client certificates when \
                     tls.client_auth is \"optional\" or \"require\"",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key() {
        let e = Config::from_toml_str("[tls]\nclient_api = true").unwrap_err();
        assert_eq!(e.key, "tls.cert_file");
        let e = Config::from_toml_str("[tls]\ncert_file = \"c\"\nkey_file = \"k\"\npeer = true")
            .unwrap_err();
        assert_eq!(e.key, "tls.ca_file");
        let e = Config::from_toml_str("[tls]\nclient_auth = \"require\"").unwrap_err();
        assert_eq!(e.key, "tls.client_auth");
        let e = Config::from_toml_str("[tls]\nclient_auth = \"sometimes\"").unwrap_err();
        assert!(e.to_string().contains("sometimes"), "{e}");
    }
}
