//! The `authorization` metadata every outgoing call of a client carries:
//! the Rust client's credentials, or an embedded node's `auth.forward_token`
//! when it forwards a call to the leader.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

/// Adds `authorization: <value>` to every request when set; adds nothing
/// when empty (auth off).
#[derive(Clone, Debug, Default)]
pub struct AuthHeader(Option<MetadataValue<Ascii>>);

impl AuthHeader {
    /// Sends `value` (e.g. `"Bearer <token>"`, already validated) on every call.
    pub fn new(value: Option<MetadataValue<Ascii>>) -> Self {
        AuthHeader(value)
    }
}

impl Interceptor for AuthHeader {
    fn call(
        &mut self,
        mut req: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_header_only_when_set() {
        let mut i = AuthHeader::new(Some("Bearer t".parse().unwrap()));
        let r = i.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer t");
        let mut none = AuthHeader::default();
        let r = none.call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
    }
}
