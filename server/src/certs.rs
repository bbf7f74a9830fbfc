//! `d-engine-server certs`: a development certificate authority and
//! certificates for nodes and clients, so TLS and mutual TLS can be tried
//! without an existing PKI.
//!
//! Files written to `--out` (PEM; keys are created with mode 0600):
//! - `ca.pem`, `ca-key.pem`: the CA (`tls.ca_file` on every node, and the
//!   CA clients trust);
//! - `node-<id>.pem`, `node-<id>-key.pem`: node certificates for `tls.cert_file`
//!   / `tls.key_file`, valid for every `--hosts` name or IP and for the DNS
//!   name `node-<id>` (the peer identity `tls.check_peer_names` checks),
//!   usable as server and as client certificates;
//! - `client-<name>.pem`, `client-<name>-key.pem`: client certificates for
//!   mutual TLS on the client port.
//!
//! Existing files are not overwritten unless `--force` is given; with it,
//! each file is removed and created anew (a symlink in its place is
//! replaced, never followed; key files end up 0600 whatever the old file's
//! mode was). The CA key
//! sits next to the certificates: this is for development and tests only.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What `certs` generates.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct CertsArgs {
    /// Directory to write the PEM files to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Node ids to issue certificates for, comma separated (e.g. 1,2,3).
    #[arg(long, value_name = "IDS", value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
    /// Host names and IP addresses the node certificates are valid for,
    /// comma separated: every address clients and peers dial.
    #[arg(
        long,
        value_name = "HOSTS",
        value_delimiter = ',',
        default_value = "127.0.0.1,localhost"
    )]
    pub hosts: Vec<String>,
    /// Client certificate names, comma separated (letters, digits, '-', '_').
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Validity of every certificate, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 365)]
    pub days: u32,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

/// Why generating certificates failed; says what to change.
#[derive(Debug, thiserror::Error)]
#[error("certs: {0}")]
pub struct CertsError(pub String);

fn err(m: impl Into<String>) -> CertsError {
    CertsError(m.into())
}

/// One PEM file to write.
struct Output {
    name: String,
    pem: String,
    secret: bool,
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of slack for clocks a little behind.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Signs `params` with a fresh key under `issuer` and appends
/// `<name>.pem` and `<name>-key.pem` to `out`.
fn sign_leaf(
    name: &str,
    mut params: CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    days: u32,
    out: &mut Vec<Output>,
) -> Result<(), CertsError> {
    validity(&mut params, days);
    let k = key()?;
    let cert = params
        .signed_by(&k, issuer)
        .map_err(|e| err(format!("cannot create the certificate of {name}: {e}")))?;
    out.push(Output {
        name: format!("{name}.pem"),
        pem: cert.pem(),
        secret: false,
    });
    out.push(Output {
        name: format!("{name}-key.pem"),
        pem: k.serialize_pem(),
        secret: true,
    });
    Ok(())
}

fn key() -> Result<KeyPair, CertsError> {
    KeyPair::generate().map_err(|e| err(format!("cannot generate a key: {e}")))
}

fn check_args(a: &CertsArgs) -> Result<(), CertsError> {
    if a.nodes.is_empty() {
        return Err(err("--nodes lists no node id (e.g. --nodes 1,2,3)"));
    }
    if let Some(id) = a.nodes.iter().find(|id| **id == 0) {
        return Err(err(format!(
            "--nodes: node id {id} is reserved; ids start at 1"
        )));
    }
    if a.hosts.iter().any(|h| h.trim().is_empty()) {
        return Err(err(
            "--hosts has an empty entry (e.g. --hosts 127.0.0.1,localhost)",
        ));
    }
    for c in &a.clients {
        let ok = !c.is_empty()
            && c.len() <= 64
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
        if !ok {
            return Err(err(format!(
                "--clients: name {c:?} must be 1..=64 letters, digits, '-' or '_'"
            )));
        }
    }
    if a.days == 0 {
        return Err(err("--days must be at least 1"));
    }
    Ok(())
}

/// Generates every certificate in memory (nothing is written on error).
fn generate(a: &CertsArgs) -> Result<Vec<Output>, CertsError> {
    let bad = |what: &str, e: rcgen::Error| err(format!("cannot create the {what}: {e}"));
    let mut out = Vec::new();

    let ca_key = key()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "d-engine development CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca, a.days);
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| bad("CA", e))?;
    out.push(Output {
        name: "ca.pem".into(),
        pem: ca_cert.pem(),
        secret: false,
    });
    out.push(Output {
        name: "ca-key.pem".into(),
        pem: ca_key.serialize_pem(),
        secret: true,
    });
    let issuer = Issuer::new(ca, ca_key);

    for id in &a.nodes {
        let name = format!("node-{id}");
        let mut sans: Vec<String> = a.hosts.iter().map(|h| h.trim().to_string()).collect();
        sans.push(name.clone());
        let mut p = CertificateParams::new(sans)
            .map_err(|e| err(format!("--hosts: {e} (use host names or IP addresses)")))?;
        p.distinguished_name.push(DnType::CommonName, name.clone());
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        sign_leaf(&name, p, &issuer, a.days, &mut out)?;
    }

    for c in &a.clients {
        let name = format!("client-{c}");
        let mut p = CertificateParams::new(vec![name.replace('_', "-")])
            .map_err(|e| bad(&format!("certificate of {name}"), e))?;
        p.distinguished_name.push(DnType::CommonName, c.clone());
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        sign_leaf(&name, p, &issuer, a.days, &mut out)?;
    }
    Ok(out)
}

/// Writes `bytes` to a new file at `path`: mode 0600 when `secret`, else
/// 0644 (less the umask). Never follows a symlink at `path` and never
/// writes through an existing file: an existing entry (file or symlink) is
/// refused unless `force`, and with `force` it is removed first (a symlink
/// itself, not its target) and the file is created anew with
/// `create_new` (O_CREAT|O_EXCL, which does not follow symlinks). So a key
/// file always ends up with the mode above, whatever the old file's was.
pub fn write_new_file(path: &Path, bytes: &[u8], secret: bool, force: bool) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "a directory is in the way; choose another path",
            ))
        }
        Ok(_) if !force => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "the file already exists; pass --force to replace it",
            ))
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    if secret {
        // Exactly 0600 on the file just created (through its descriptor).
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = secret;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Generates the CA and certificates of `a` and writes them to `a.out`.
/// Returns the paths written, in order.
pub fn run(a: &CertsArgs) -> Result<Vec<PathBuf>, CertsError> {
    check_args(a)?;
    let files = generate(a)?;
    std::fs::create_dir_all(&a.out)
        .map_err(|e| err(format!("cannot create --out {}: {e}", a.out.display())))?;
    if !a.force {
        let existing: Vec<String> = files
            .iter()
            .map(|f| a.out.join(&f.name))
            // symlink_metadata: a dangling symlink is an existing entry too.
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .map(|p| p.display().to_string())
            .collect();
        if !existing.is_empty() {
            return Err(err(format!(
                "{} already exist(s); pass --force to overwrite or choose another --out",
                existing.join(", ")
            )));
        }
    }
    let mut written = Vec::new();
    for f in files {
        let path = a.out.join(&f.name);
        write_new_file(&path, f.pem.as_bytes(), f.secret, a.force)
            .map_err(|e| err(format!("cannot write {}: {e}", path.display())))?;
        written.push(path);
    }
    Ok(written)
}

/// `run`, printing what was written and a development-only warning.
pub fn main(a: &CertsArgs) -> Result<(), CertsError> {
    let written = run(a)?;
    println!("wrote:");
    for p in &written {
        println!("  {}", p.display());
    }
    println!(
        "\nWARNING: development certificates only. The CA key (ca-key.pem) is stored next \
         to them; anyone holding it can issue certificates your cluster trusts.\n\
         Node certificates are valid for: {}, node-<id>.\n\
         Configure each node with:\n  [tls]\n  cert_file = \"{out}/node-<id>.pem\"\n  \
         key_file = \"{out}/node-<id>-key.pem\"\n  ca_file = \"{out}/ca.pem\"\n  \
         client_api = true\n  peer = true",
        a.hosts.join(", "),
        out = a.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_ca_nodes_and_clients_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let a = CertsArgs {
            out: dir.path().join("certs"),
            nodes: vec![1, 2],
            hosts: vec!["127.0.0.1".into(), "localhost".into()],
            clients: vec!["app".into()],
            days: 30,
            force: false,
        };
        let written = run(&a).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ca.pem",
                "ca-key.pem",
                "node-1.pem",
                "node-1-key.pem",
                "node-2.pem",
                "node-2-key.pem",
                "client-app.pem",
                "client-app-key.pem"
            ]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.out.join("ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key files are private");
        }
        // The files are what a node's [tls] section accepts.
        let tls = d_engine::config::TlsConfig {
            cert_file: a.out.join("node-1.pem"),
            key_file: a.out.join("node-1-key.pem"),
            ca_file: a.out.join("ca.pem"),
            client_api: true,
            peer: true,
            client_auth: d_engine::config::ClientAuth::Require,
            check_peer_names: true,
            ..Default::default()
        };
        let loaded = d_engine::tls::NodeTls::load(&tls).unwrap().expect("TLS on");
        assert!(loaded.client_api.is_some() && loaded.peer.is_some());

        let e = run(&a).unwrap_err();
        assert!(e.to_string().contains("--force"), "{e}");
        run(&CertsArgs {
            force: true,
            ..a.clone()
        })
        .unwrap();

        let e = run(&CertsArgs {
            clients: vec!["a b".into()],
            force: true,
            ..a.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("--clients"), "{e}");
        let e = run(&CertsArgs {
            nodes: vec![0],
            ..a
        })
        .unwrap_err();
        assert!(e.to_string().contains("--nodes"), "{e}");
    }

    /// `--force` over a world-readable key and over symlinks: the keys end
    /// up 0600 regular files, and no symlink target is ever written.
    #[cfg(unix)]
    #[test]
    fn force_makes_keys_private_and_never_follows_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("certs");
        std::fs::create_dir_all(&out).unwrap();
        // An existing key file with mode 0644.
        let key = out.join("node-1-key.pem");
        std::fs::write(&key, "old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        // The CA key slot is a symlink to a file outside --out.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "do not touch").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("ca-key.pem")).unwrap();
        // The CA certificate slot is a dangling symlink.
        let nowhere = dir.path().join("created-through-link");
        std::os::unix::fs::symlink(&nowhere, out.join("ca.pem")).unwrap();
        let a = CertsArgs {
            out: out.clone(),
            nodes: vec![1],
            hosts: vec!["127.0.0.1".into()],
            clients: vec![],
            days: 1,
            force: false,
        };
        // Without --force the dangling link counts as an existing file.
        let e = run(&a).unwrap_err();
        assert!(e.to_string().contains("ca.pem"), "{e}");
        assert!(!nowhere.exists());
        run(&CertsArgs { force: true, ..a }).unwrap();
        for name in ["node-1-key.pem", "ca-key.pem"] {
            let m = std::fs::symlink_metadata(out.join(name)).unwrap();
            assert!(m.file_type().is_file(), "{name} is a regular file");
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{name}");
            let pem = std::fs::read_to_string(out.join(name)).unwrap();
            assert!(pem.contains("PRIVATE KEY"), "{name}");
        }
        assert!(std::fs::symlink_metadata(out.join("ca.pem"))
            .unwrap()
            .file_type()
            .is_file());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "do not touch");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(!nowhere.exists(), "nothing is created through a link");
    }
}
