//! Optional authentication and authorization of the client API
//! (`docs/auth.md`).
//!
//! - [`config`]: the `[auth]` section (users, roles, grants) and its
//!   validation; it lives at `crate::config::auth` (configuration imports
//!   nothing above it) and is re-exported here under its old path.
//! - [`credentials`]: `authorization` metadata (Basic / Bearer), password
//!   hashing (Argon2id PHC) and tokens (stored as sha256).
//! - [`perm`]: a user's effective permissions, checked by key prefix.
//! - [`guard`]: the [`Gate`] each service consults per RPC.
//!
//! Embedded clients call their local node directly and are not checked;
//! what they forward to the leader carries `auth.forward_token`.

pub use crate::config::auth as config;
pub mod credentials;
pub mod guard;
pub mod perm;
pub mod replicated;

pub use config::{Access, AuthConfig, GrantConfig, RoleConfig, UserConfig, ADMIN_ROLE};
pub use credentials::{generate_token, hash_password, sha256_hex, Credentials};
pub use guard::{Caller, Gate};
pub use perm::Permissions;
pub use replicated::AuthSource;
