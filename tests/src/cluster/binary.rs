//! Finding (and if needed building) the `d-engine-server` and `dengine`
//! (CLI) binaries.
//!
//! Order: `$DENGINE_SERVER_BIN` / `$DENGINE_CLI_BIN` if set; else
//! `<target>/<profile>/<binary>` next to the running test executable
//! (`<target>/<profile>/deps/…`). That binary is (re)built with
//! `cargo build -p <package>` (same profile and target dir) when it is
//! missing or older than the test executable — the tests crate depends on
//! the server and CLI crates, so a change to either rebuilds the test
//! executable and marks the binary stale.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path of a current `d-engine-server` binary. Panics with instructions if
/// it cannot be found or built.
pub fn server_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(
        || match locate("d-engine-server", "d-engine-server", "DENGINE_SERVER_BIN") {
            Ok(p) => p,
            Err(e) => panic!("cannot find or build d-engine-server: {e}"),
        },
    )
    .clone()
}

/// Path of a current `dengine` (CLI) binary, found and built like
/// [`server_binary`] (`$DENGINE_CLI_BIN` overrides).
pub fn cli_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(
        || match locate("dengine", "dengine-cli", "DENGINE_CLI_BIN") {
            Ok(p) => p,
            Err(e) => panic!("cannot find or build dengine: {e}"),
        },
    )
    .clone()
}

fn locate(name: &str, package: &str, env_var: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env_var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env_var}={} is not a file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // <target>/<profile>/deps/<test-exe>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if is_fresh(&bin, &exe) {
        return Ok(bin);
    }
    build(profile_dir, package, env_var)?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo build -p {package} succeeded but {} does not exist; set {env_var}",
            bin.display()
        ))
    }
}

fn is_fresh(bin: &Path, exe: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (modified(bin), modified(exe)) {
        (Some(b), Some(e)) => b >= e,
        _ => false,
    }
}

fn build(profile_dir: &Path, package: &str, env_var: &str) -> Result<(), String> {
    let target_dir = profile_dir
        .parent()
        .ok_or("no target directory above the profile directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("-p")
        .arg(package)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.arg("--profile").arg(other);
        }
    }
    eprintln!("[cluster harness] building {package}: {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo: {e}; build it yourself or set {env_var}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`cargo build -p {package}` failed ({status}); set {env_var} to a built binary"
        ))
    }
}
