//! `d-engine-server --print-config` shows the effective configuration
//! without its secrets (issue 16, finding 8).

use std::process::Command;

#[test]
fn print_config_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let token = "forward-secret-0123456789";
    let digest = d_engine::auth::sha256_hex(token.as_bytes());
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$dUzWt5xJzfFVNhPkJX4gcqiq1dh9Mzs3ZVGNaOgXvS8";
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[auth]
enabled = true
forward_token = "{token}"

[[auth.users]]
name = "fwd"
tokens = ["{digest}"]
password_hash = "{hash}"
roles = ["admin"]
"#
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_d-engine-server"))
        .args(["--config", path.to_str().unwrap(), "--print-config"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[auth]"), "{text}");
    for secret in [token, digest.as_str(), hash] {
        assert!(
            !text.contains(secret),
            "--print-config shows {secret}:\n{text}"
        );
    }
    assert!(text.contains("<redacted>"), "{text}");
}
