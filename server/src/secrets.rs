//! `d-engine-server hash-password` and `gen-token`: the secrets of the
//! `[auth]` config (`docs/auth.md`).

use std::io::Read;

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
}
