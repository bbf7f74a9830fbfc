//! Endpoint strings: what users type (`127.0.0.1:9083`, `http://node-1:9083`)
//! turned into the one normalized form the client keys its connections by.

use tonic::codegen::http::Uri;

use crate::error::{Error, Result};

/// Port used when an endpoint names none (the server's default client port).
pub const DEFAULT_CLIENT_PORT: u16 = 9083;

/// Normalizes one endpoint to `scheme://host:port` (no path, no trailing slash).
///
/// Accepted: `host:port`, `host` (port [`DEFAULT_CLIENT_PORT`]),
/// `http://host[:port]`, `https://host[:port]`, IPv6 as `[::1]:9083`.
/// Without a scheme `default_scheme` (`"http"` or `"https"`) is used.
/// Anything else (another scheme, a path, a query, an empty string) is an
/// `InvalidArgument` that quotes the input.
pub fn normalize_endpoint(raw: &str, default_scheme: &str) -> Result<String> {
    let s = raw.trim();
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "endpoint {raw:?}: {why}; expected host:port or http(s)://host:port"
        ))
    };
    if s.is_empty() {
        return Err(bad("is empty"));
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (default_scheme.to_string(), s),
    };
    if scheme != "http" && scheme != "https" {
        return Err(bad(&format!("unsupported scheme {scheme:?}")));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains(['/', '?', '#', '@']) {
        return Err(bad("must not contain a path, query or user info"));
    }
    let uri: Uri = format!("{scheme}://{authority}")
        .parse()
        .map_err(|e| bad(&format!("is not a valid address ({e})")))?;
    let auth = uri.authority().ok_or_else(|| bad("has no host"))?;
    let host = auth.host();
    if host.is_empty() || host == "[]" {
        return Err(bad("has no host"));
    }
    let a = auth.as_str();
    let port_str = if a.starts_with('[') {
        a.rsplit_once("]:").map(|(_, p)| p)
    } else {
        a.rsplit_once(':').map(|(_, p)| p)
    };
    let port = match port_str {
        Some("") => return Err(bad("has an empty port")),
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("port must be 1..=65535")),
            Ok(p) => p,
        },
        None => DEFAULT_CLIENT_PORT,
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// Normalizes a list of endpoints, dropping duplicates (order kept).
/// The scheme of the first endpoint that names one becomes the default for
/// the others and for leader hints (see [`default_scheme`]).
pub fn normalize_endpoints(raw: &[String]) -> Result<(Vec<String>, String)> {
    if raw.is_empty() {
        return Err(Error::InvalidArgument(
            "no endpoints given; pass at least one address such as \"http://127.0.0.1:9083\""
                .into(),
        ));
    }
    let scheme = default_scheme(raw);
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for r in raw {
        let n = normalize_endpoint(r, &scheme)?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok((out, scheme))
}

/// `"https"` if the first endpoint that names a scheme names https, else `"http"`.
pub fn default_scheme(raw: &[String]) -> String {
    raw.iter()
        .find_map(|r| {
            r.trim()
                .split_once("://")
                .map(|(s, _)| s.to_ascii_lowercase())
        })
        .filter(|s| s == "https")
        .unwrap_or_else(|| "http".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<String> {
        normalize_endpoint(s, "http")
    }

    #[test]
    fn accepts_the_usual_forms() {
        assert_eq!(n("http://127.0.0.1:9083").unwrap(), "http://127.0.0.1:9083");
        assert_eq!(n("127.0.0.1:9083").unwrap(), "http://127.0.0.1:9083");
        assert_eq!(n(" 127.0.0.1:9083 ").unwrap(), "http://127.0.0.1:9083");
        assert_eq!(
            n("http://127.0.0.1:9083/").unwrap(),
            "http://127.0.0.1:9083"
        );
        assert_eq!(n("HTTP://node-1:7000").unwrap(), "http://node-1:7000");
        assert_eq!(
            n("https://db.example:443").unwrap(),
            "https://db.example:443"
        );
        assert_eq!(n("localhost").unwrap(), "http://localhost:9083");
        assert_eq!(n("http://localhost").unwrap(), "http://localhost:9083");
        assert_eq!(n("[::1]:9083").unwrap(), "http://[::1]:9083");
        assert_eq!(n("http://[::1]").unwrap(), "http://[::1]:9083");
        assert_eq!(normalize_endpoint("h:1", "https").unwrap(), "https://h:1");
    }

    #[test]
    fn rejects_bad_input_with_the_input_quoted() {
        for bad in [
            "",
            "   ",
            "ftp://h:1",
            "http://",
            "http://h:1/path",
            "h:1?x=1",
            "user@h:1",
            "h:0",
            "h:99999",
            "h:abc",
            "h:",
            "http://:9083",
        ] {
            let e = n(bad).expect_err(bad);
            match &e {
                Error::InvalidArgument(m) => {
                    assert!(m.contains(&format!("{bad:?}")), "{m}");
                    assert!(m.contains("expected host:port"), "{m}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn lists_dedupe_and_share_the_scheme() {
        let raw = vec![
            "https://a:1".to_string(),
            "b:2".to_string(),
            "https://a:1/".to_string(),
        ];
        let (eps, scheme) = normalize_endpoints(&raw).unwrap();
        assert_eq!(scheme, "https");
        assert_eq!(eps, vec!["https://a:1", "https://b:2"]);
        let (eps, scheme) = normalize_endpoints(&["a:1".to_string()]).unwrap();
        assert_eq!(
            (eps, scheme.as_str()),
            (vec!["http://a:1".to_string()], "http")
        );
        assert!(matches!(
            normalize_endpoints(&[]),
            Err(Error::InvalidArgument(m)) if m.contains("no endpoints")
        ));
    }
}
