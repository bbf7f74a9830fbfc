//! Client credentials: sent as `authorization` metadata on every RPC
//! (Kv, watches, Cluster, Admin) when the server has `[auth]` enabled.

use std::fmt;

use base64::Engine as _;
use d_engine_api::AuthHeader;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::{Error, Result};

/// How the client proves who it is. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password (`authorization: Basic base64(user:password)`).
    Password { user: String, password: String },
    /// A token (`authorization: Bearer <token>`).
    Token(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { user, .. } => write!(f, "Password({user:?}, <redacted>)"),
            Credentials::Token(_) => write!(f, "Token(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Rejects what cannot be sent: an empty user or one containing ':',
    /// an empty token or one with characters invalid in metadata.
    pub fn validate(&self) -> Result<()> {
        match self {
            Credentials::Password { user, .. } if user.is_empty() || user.contains(':') => {
                Err(Error::InvalidArgument(
                    "credentials: the user name must be non-empty and without ':'".into(),
                ))
            }
            Credentials::Token(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                Err(Error::InvalidArgument(
                    "credentials: the token must be non-empty printable ASCII without spaces"
                        .into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The `authorization` metadata value.
    pub fn header_value(&self) -> Result<MetadataValue<Ascii>> {
        self.validate()?;
        let text = match self {
            Credentials::Password { user, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            Credentials::Token(t) => format!("Bearer {t}"),
        };
        text.parse()
            .map_err(|_| Error::InvalidArgument("credentials: not valid metadata".into()))
    }
}

/// The interceptor that adds `creds` (if any) to every outgoing request.
pub(crate) fn interceptor(creds: Option<&Credentials>) -> Result<AuthHeader> {
    Ok(AuthHeader::new(
        creds.map(|c| c.header_value()).transpose()?,
    ))
}

/// The channel type every generated stub of the client runs on.
pub(crate) type RpcChannel = InterceptedService<Channel, AuthHeader>;

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn header_values_and_validation() {
        let p = Credentials::Password {
            user: "Aladdin".into(),
            password: "open sesame".into(),
        };
        assert_eq!(
            p.header_value().unwrap(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert!(!format!("{p:?}").contains("sesame"));
        assert_eq!(
            Credentials::Token("abc".into()).header_value().unwrap(),
            "Bearer abc"
        );
        for bad in [
            Credentials::Password {
                user: "a:b".into(),
                password: String::new(),
            },
            Credentials::Password {
                user: String::new(),
                password: "x".into(),
            },
            Credentials::Token(String::new()),
            Credentials::Token("a b".into()),
        ] {
            assert!(matches!(bad.validate(), Err(Error::InvalidArgument(_))));
        }
    }

    #[test]
    fn the_interceptor_adds_the_header() {
        let c = Credentials::Token("t".into());
        let mut i = interceptor(Some(&c)).unwrap();
        let r = i.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer t");
        let mut none = AuthHeader::default();
        let r = none.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
    }
}
