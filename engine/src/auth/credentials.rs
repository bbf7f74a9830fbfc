//! Credentials on the wire and the secrets behind them.
//!
//! A client authenticates with the `authorization` gRPC metadata entry:
//! `Basic base64(user:password)` (RFC 7617; the user name cannot contain
//! `:`) or `Bearer <token>`. The server stores only an Argon2 PHC hash of
//! each password and the sha256 (hex) of each token.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use crate::config::auth::hex;

/// The metadata key carrying credentials.
pub const AUTHORIZATION: &str = "authorization";

/// What a request presented.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Credentials::Bearer(_) => write!(f, "Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Reads the `authorization` entry. `Ok(None)` when there is none;
    /// `Err` (a message for the caller) when it is malformed.
    pub fn from_metadata(md: &MetadataMap) -> Result<Option<Credentials>, String> {
        let Some(v) = md.get(AUTHORIZATION) else {
            return Ok(None);
        };
        let v = v
            .to_str()
            .map_err(|_| "the authorization metadata is not ASCII".to_string())?;
        Self::parse(v).map(Some)
    }

    /// Parses `Basic <base64(user:password)>` or `Bearer <token>` (scheme
    /// names are case-insensitive).
    pub fn parse(v: &str) -> Result<Credentials, String> {
        let (scheme, rest) = v.trim().split_once(' ').unwrap_or((v.trim(), ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| "Basic credentials are not valid base64".to_string())?;
            let text = String::from_utf8(raw)
                .map_err(|_| "Basic credentials are not UTF-8".to_string())?;
            let (user, password) = text
                .split_once(':')
                .ok_or_else(|| "Basic credentials must be base64(user:password)".to_string())?;
            if user.is_empty() {
                return Err("Basic credentials name no user".into());
            }
            Ok(Credentials::Basic {
                user: user.to_string(),
                password: password.to_string(),
            })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() {
                return Err("Bearer credentials carry no token".into());
            }
            Ok(Credentials::Bearer(rest.to_string()))
        } else {
            Err(format!(
                "unsupported authorization scheme \"{}\"; use Basic or Bearer",
                scheme.escape_debug()
            ))
        }
    }

    /// The header value a client sends for these credentials.
    pub fn header_value(&self) -> String {
        match self {
            Credentials::Basic { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            Credentials::Bearer(t) => format!("Bearer {t}"),
        }
    }

    /// A digest identifying these exact credentials (the key of the
    /// verification cache; the secret itself is never stored).
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        match self {
            Credentials::Basic { user, password } => {
                h.update(b"basic\0");
                h.update(user.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
            Credentials::Bearer(t) => {
                h.update(b"bearer\0");
                h.update(t.as_bytes());
            }
        }
        h.finalize().into()
    }
}

/// [`sha256_hex`] lives with the `[auth]` configuration, whose validation
/// needs it; re-exported here under its old path.
pub use crate::config::auth::sha256_hex;

/// Hashes a password into an Argon2id PHC string with a random salt
/// (default parameters: 19 MiB, 2 passes).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no OS randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A PHC hash of a random password with the Argon2 algorithm and cost of
/// `model` (a configured user's hash; the defaults when `None` or
/// unreadable). Unknown users are verified against it so that refusing
/// them takes as long as refusing a wrong password.
pub fn dummy_password_hash(model: Option<&str>) -> String {
    let params = model
        .and_then(|m| PasswordHash::new(m).ok())
        .and_then(|h| {
            let p = argon2::Params::try_from(&h).ok()?;
            let alg = argon2::Algorithm::try_from(h.algorithm).ok()?;
            let version = h
                .version
                .and_then(|v| argon2::Version::try_from(v).ok())
                .unwrap_or_default();
            Some(Argon2::new(alg, version, p))
        })
        .unwrap_or_default();
    let mut raw = [0u8; 32];
    let _ = getrandom::fill(&mut raw);
    let salt = SaltString::encode_b64(&raw[..16]).expect("16 bytes is a valid salt");
    params
        .hash_password(hex(&raw[16..]).as_bytes(), &salt)
        .map(|h| h.to_string())
        .expect("argon2 hashes a 32-byte password with a 16-byte salt")
}

/// True if `password` matches the PHC string `phc` (false if `phc` is malformed).
/// Costs one Argon2 evaluation: call off the async runtime.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A new random token (32 bytes from the OS, hex) and its sha256 for the config.
pub fn generate_token() -> Result<(String, String), String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("no OS randomness: {e}"))?;
    let token = hex(&raw);
    let digest = sha256_hex(token.as_bytes());
    Ok((token, digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_bearer_round_trip_through_the_header() {
        for c in [
            Credentials::Basic {
                user: "alice".into(),
                password: "p:a ss".into(),
            },
            Credentials::Bearer("tok".into()),
        ] {
            assert_eq!(Credentials::parse(&c.header_value()).unwrap(), c);
        }
        assert_eq!(
            Credentials::parse("bearer  xyz ").unwrap(),
            Credentials::Bearer("xyz".into())
        );
        // RFC 7617 example: Aladdin:open sesame
        assert_eq!(
            Credentials::parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap(),
            Credentials::Basic {
                user: "Aladdin".into(),
                password: "open sesame".into()
            }
        );
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        for (v, needle) in [
            ("Basic !!!", "base64"),
            ("Basic dXNlcg==", "user:password"), // "user"
            ("Basic OnB3", "no user"),           // ":pw"
            ("Bearer", "no token"),
            ("Digest abc", "unsupported"),
        ] {
            let e = Credentials::parse(v).unwrap_err();
            assert!(e.contains(needle), "{v}: {e}");
        }
        let mut md = MetadataMap::new();
        assert_eq!(Credentials::from_metadata(&md), Ok(None));
        md.insert(AUTHORIZATION, "Bearer t".parse().unwrap());
        assert_eq!(
            Credentials::from_metadata(&md),
            Ok(Some(Credentials::Bearer("t".into())))
        );
    }

    #[test]
    fn debug_hides_secrets_and_fingerprints_differ() {
        let a = Credentials::Basic {
            user: "u".into(),
            password: "secret".into(),
        };
        assert!(!format!("{a:?}").contains("secret"));
        let b = Credentials::Basic {
            user: "u".into(),
            password: "secreT".into(),
        };
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(
            Credentials::Bearer("x".into()).fingerprint(),
            Credentials::Basic {
                user: "x".into(),
                password: String::new()
            }
            .fingerprint()
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let phc = hash_password("hunter2").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("hunter2", &phc));
        assert!(!verify_password("hunter3", &phc));
        assert!(!verify_password("hunter2", "garbage"));
    }

    #[test]
    fn tokens_are_random_and_digests_hex() {
        let (t1, d1) = generate_token().unwrap();
        let (t2, _) = generate_token().unwrap();
        assert_ne!(t1, t2);
        assert_eq!(d1, sha256_hex(t1.as_bytes()));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
