//! `d-engine-server hash-password` and `gen-token`: the secrets of the
//! `[auth]` config (`docs/auth.md`); `gen-secret`: the cluster secret of
//! `[peer] secret_file` (`docs/tls.md`).

use std::io::Read;
use std::path::PathBuf;

/// `gen-secret` arguments.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct GenSecretArgs {
    /// File to write (created with mode 0600; its directory must exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace an existing file (a symlink at `--out` is replaced by the
    /// new file; its target is never written).
    #[arg(long)]
    pub force: bool,
}

/// Writes a new random cluster secret (32 bytes as hex) to `a.out`, mode
/// 0600, never following a symlink; refuses an existing file unless
/// `a.force`. Returns what to do next.
pub fn gen_secret(a: &GenSecretArgs) -> Result<String, String> {
    let text = d_engine::transport::peer_auth::generate_secret_text()?;
    crate::certs::write_new_file(&a.out, text.as_bytes(), true, a.force)
        .map_err(|e| format!("cannot write {}: {e}", a.out.display()))?;
    Ok(format!(
        "wrote a new cluster secret to {out} (mode 0600)\n\
         # copy it to every node (keep it private) and set in each node's config:\n\
         [peer]\nsecret_file = \"{out}\"\n",
        out = a.out.display()
    ))
}

/// Reads a password from stdin (one trailing newline removed) and returns
/// its Argon2id PHC string for `[[auth.users]] password_hash`.
pub fn hash_password_from(mut input: impl Read) -> Result<String, String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    let pw = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&text);
    if pw.is_empty() {
        return Err("the password read from stdin is empty".into());
    }
    d_engine::auth::hash_password(pw)
}

/// A new token and the line to put in the config.
pub fn gen_token() -> Result<String, String> {
    let (token, digest) = d_engine::auth::generate_token()?;
    Ok(format!(
        "token: {token}\nsha256: {digest}\n# give the token to the client; add the sha256 to a user's tokens = [...]\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_stdin_and_refuses_empty() {
        let phc = hash_password_from(&b"pw\n"[..]).unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(hash_password_from(&b"\n"[..]).is_err());
        let t = gen_token().unwrap();
        assert!(t.starts_with("token: ") && t.contains("\nsha256: "), "{t}");
    }

    #[test]
    fn gen_secret_writes_a_private_loadable_file_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let a = GenSecretArgs {
            out: dir.path().join("secret"),
            force: false,
        };
        let msg = gen_secret(&a).unwrap();
        assert!(msg.contains("secret_file"), "{msg}");
        d_engine::transport::peer_auth::PeerSecret::load(&a.out).unwrap();
        let first = std::fs::read_to_string(&a.out).unwrap();
        let e = gen_secret(&a).unwrap_err();
        assert!(e.contains("--force"), "{e}");
        gen_secret(&GenSecretArgs {
            force: true,
            ..a.clone()
        })
        .unwrap();
        assert_ne!(std::fs::read_to_string(&a.out).unwrap(), first);
    }
}
