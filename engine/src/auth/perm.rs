//! What a user may do: the union of its roles' grants, checked by prefix.
//!
//! A grant `(prefix, access)` covers a key, or a scan/watch prefix, that
//! starts with `prefix`. A scan or watch of prefix `p` is allowed only if a
//! single read grant covers `p` itself, i.e. every key the scan could
//! return; a wider request is refused, never silently filtered.

use std::collections::BTreeMap;

use super::config::{Access, AuthConfig, ADMIN_ROLE};

/// The effective permissions of one user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Holds the built-in `admin` role: everything, the Admin service included.
    pub admin: bool,
    /// (prefix, access) of every grant of every role the user holds.
    grants: Vec<(Vec<u8>, Access)>,
}

impl Permissions {
    /// Permissions from explicit grants (no admin role).
    pub fn new(grants: impl IntoIterator<Item = (Vec<u8>, Access)>) -> Self {
        Permissions {
            admin: false,
            grants: grants.into_iter().collect(),
        }
    }

    /// Everything.
    pub fn admin() -> Self {
        Permissions {
            admin: true,
            grants: Vec::new(),
        }
    }

    /// True if `need` is allowed on `key`, or on every key under a scan /
    /// watch prefix `key` (both mean: some grant's prefix is a prefix of it).
    pub fn allows(&self, key: &[u8], need: Access) -> bool {
        self.admin
            || self
                .grants
                .iter()
                .any(|(p, a)| a.satisfies(need) && key.starts_with(p))
    }
}

/// Resolves every user's roles into [`Permissions`], keyed by user name.
/// Assumes a validated config (unknown roles are ignored).
pub fn resolve(cfg: &AuthConfig) -> BTreeMap<String, Permissions> {
    let roles: BTreeMap<&str, Vec<(Vec<u8>, Access)>> = cfg
        .roles
        .iter()
        .map(|r| {
            let grants = r
                .grants
                .iter()
                .map(|g| (g.prefix.as_bytes().to_vec(), g.access))
                .collect();
            (r.name.as_str(), grants)
        })
        .collect();
    cfg.users
        .iter()
        .map(|u| {
            let mut p = Permissions::default();
            for r in &u.roles {
                if r == ADMIN_ROLE {
                    p.admin = true;
                } else if let Some(g) = roles.get(r.as_str()) {
                    p.grants.extend(g.iter().cloned());
                }
            }
            (u.name.clone(), p)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::{GrantConfig, RoleConfig, UserConfig};

    #[test]
    fn grants_cover_keys_and_narrower_prefixes_only() {
        let p = Permissions::new([
            (b"app/".to_vec(), Access::Read),
            (b"app/tmp/".to_vec(), Access::Readwrite),
        ]);
        assert!(p.allows(b"app/x", Access::Read));
        assert!(!p.allows(b"app/x", Access::Readwrite));
        assert!(p.allows(b"app/tmp/x", Access::Readwrite));
        assert!(p.allows(b"app/tmp/", Access::Read));
        // A wider scan than the grant is refused.
        assert!(!p.allows(b"app", Access::Read));
        assert!(!p.allows(b"", Access::Read));
        assert!(!p.allows(b"other/x", Access::Read));
        assert!(Permissions::admin().allows(b"", Access::Readwrite));
        assert!(!Permissions::default().allows(b"k", Access::Read));
        // An empty grant prefix covers everything.
        let all = Permissions::new([(Vec::new(), Access::Read)]);
        assert!(all.allows(b"", Access::Read));
        assert!(!all.allows(b"k", Access::Readwrite));
    }

    #[test]
    fn roles_resolve_per_user() {
        let cfg = AuthConfig {
            roles: vec![RoleConfig {
                name: "w".into(),
                grants: vec![GrantConfig {
                    prefix: "a/".into(),
                    access: Access::Readwrite,
                }],
            }],
            users: vec![
                UserConfig {
                    name: "u".into(),
                    password_hash: None,
                    tokens: vec![],
                    roles: vec!["w".into()],
                },
                UserConfig {
                    name: "root".into(),
                    password_hash: None,
                    tokens: vec![],
                    roles: vec!["admin".into()],
                },
            ],
            ..Default::default()
        };
        let m = resolve(&cfg);
        assert!(m["u"].allows(b"a/1", Access::Readwrite));
        assert!(!m["u"].admin);
        assert!(m["root"].admin);
    }
}
