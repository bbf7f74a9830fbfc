//! Packaging contract of the facade's cargo features, read from the
//! resolved dependency graph (`cargo tree`, offline, from the lock file):
//! - `--no-default-features --features client` builds the gRPC client
//!   without the node: no `d-engine-node`, `sled` or `argon2`;
//! - the client crate does not force tokio's "full" feature on its users.

use std::path::Path;
use std::process::Command;

fn cargo_tree(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args(["tree", "--offline", "--locked", "--prefix", "none"])
        .args(args)
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn crate_names(tree: &str) -> Vec<&str> {
    tree.lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn client_only_build_has_no_node_storage_or_password_hashing() {
    let tree = cargo_tree(&[
        "-p",
        "d-engine",
        "--no-default-features",
        "--features",
        "client",
        "-e",
        "normal",
    ]);
    let names = crate_names(&tree);
    assert!(names.contains(&"d-engine-client"), "{tree}");
    for banned in ["d-engine-node", "sled", "argon2", "d-engine-storage"] {
        assert!(
            !names.contains(&banned),
            "a client-only build pulls {banned}:\n{tree}"
        );
    }
    // The default build still has both modes (existing users and examples).
    let full = cargo_tree(&["-p", "d-engine", "-e", "normal"]);
    let names = crate_names(&full);
    assert!(names.contains(&"d-engine-node") && names.contains(&"d-engine-client"));
}

#[test]
fn the_client_does_not_force_tokio_full() {
    let tree = cargo_tree(&[
        "-p",
        "d-engine-client",
        "-e",
        "normal,features",
        "-i",
        "tokio",
    ]);
    assert!(
        !tree.contains("tokio feature \"full\""),
        "d-engine-client (normal dependencies) enables tokio/full:\n{tree}"
    );
    assert!(tree.contains("tokio feature \"rt\""), "{tree}");
}
