//! One gRPC client from the global flags (endpoints, TLS, credentials,
//! timeout).

use std::time::Duration;

use d_engine_client::{Client, ClientBuilder, TlsOptions};

use crate::args::Global;
use crate::exit::{CliError, CliResult};

/// The TLS options the flags ask for (`None` without `--cacert`).
pub fn tls_options(g: &Global) -> CliResult<Option<TlsOptions>> {
    let Some(ca) = &g.cacert else {
        if g.tls_cert.is_some() || g.tls_key.is_some() || g.server_name.is_some() {
            return Err(CliError::usage(
                "--cert, --key and --server-name need --cacert (the CA to verify the servers with)",
            ));
        }
        return Ok(None);
    };
    let mut t = TlsOptions::new().ca_file(ca);
    match (&g.tls_cert, &g.tls_key) {
        (Some(c), Some(k)) => t = t.client_cert_files(c, k),
        (None, None) => {}
        _ => {
            return Err(CliError::usage(
                "mutual TLS needs both --cert and --key (DENGINE_CERT, DENGINE_KEY)",
            ))
        }
    }
    if let Some(n) = &g.server_name {
        t = t.domain(n.clone());
    }
    Ok(Some(t))
}

/// The builder for the flags: `--timeout` bounds every request (retries
/// included); one attempt and the connection probe get at most 3 s of it.
pub fn builder(g: &Global) -> CliResult<ClientBuilder> {
    let attempt = g.timeout.min(Duration::from_secs(3));
    let mut b = ClientBuilder::new(g.endpoints.clone())
        .request_timeout(g.timeout)
        .attempt_timeout(attempt)
        .connect_timeout(attempt);
    if let Some(t) = tls_options(g)? {
        b = b.tls(t);
    }
    match (&g.user, &g.password, &g.token) {
        (Some(_), _, Some(_)) => {
            return Err(CliError::usage(
                "give either --user/--password or --token, not both",
            ))
        }
        (Some(u), Some(p), None) => b = b.credentials(u.clone(), p.clone()),
        (Some(_), None, None) => {
            return Err(CliError::usage(
                "--user needs --password (or DENGINE_PASSWORD)",
            ))
        }
        (None, Some(_), _) => {
            return Err(CliError::usage("--password needs --user (or DENGINE_USER)"))
        }
        (None, None, Some(t)) => b = b.token(t.clone()),
        (None, None, None) => {}
    }
    Ok(b)
}

/// Connects (checking that an endpoint answers).
pub async fn connect(g: &Global) -> CliResult<Client> {
    Ok(builder(g)?.build().await?)
}
