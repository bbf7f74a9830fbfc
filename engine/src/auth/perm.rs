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

    /// True if `need` is allowed on every key of the range `[start, end)`
    /// (`end` empty: the single key `start`; `[0]`: every key from `start`
    /// on), i.e. one grant's prefix covers the whole range.
    pub fn allows_range(&self, start: &[u8], end: &[u8], need: Access) -> bool {
        if end.is_empty() {
            return self.allows(start, need);
        }
        self.admin
            || self.grants.iter().any(|(p, a)| {
                if !a.satisfies(need) || !start.starts_with(p) {
                    return false;
                }
                let p_end = d_engine_api::prefix_end(p);
                // `[0]`: the grant reaches past every key.
                p_end == [0] || (end != [0] && end <= &p_end[..])
            })
    }

    /// True if some grant gives `need` (on anything): what the lease calls
    /// need, which name no key.
    pub fn allows_any(&self, need: Access) -> bool {
        self.admin || self.grants.iter().any(|(_, a)| a.satisfies(need))
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
    fn ranges_need_one_grant_covering_all_of_them() {
        let p = Permissions::new([
            (b"app/".to_vec(), Access::Read),
            (b"app/tmp/".to_vec(), Access::Readwrite),
        ]);
        assert!(p.allows_range(b"app/a", b"app/z", Access::Read));
        assert!(
            p.allows_range(b"app/", b"app0", Access::Read),
            "the prefix's own end"
        );
        assert!(
            !p.allows_range(b"app/", b"app1", Access::Read),
            "past the grant"
        );
        assert!(
            !p.allows_range(b"app/", b"\0", Access::Read),
            "every key from app/ on"
        );
        assert!(p.allows_range(b"app/x", b"", Access::Read), "a single key");
        assert!(!p.allows_range(b"app/a", b"app/z", Access::Readwrite));
        assert!(p.allows_range(b"app/tmp/a", b"app/tmp/b", Access::Readwrite));
        let all = Permissions::new([(Vec::new(), Access::Readwrite)]);
        assert!(all.allows_range(b"\0", b"\0", Access::Readwrite));
        assert!(p.allows_any(Access::Readwrite));
        assert!(!Permissions::new([(b"a".to_vec(), Access::Read)]).allows_any(Access::Readwrite));
        assert!(Permissions::admin().allows_any(Access::Readwrite));
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
