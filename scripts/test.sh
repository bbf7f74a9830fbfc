#!/usr/bin/env bash
# Runs every d-engine test, in order of cost:
#   1. gates: rustfmt, clippy -D warnings
#   2. Rust: unit tests, the seeded Raft simulation sweep, storage crash and
#      corruption suites, multi-process cluster tests and the Rust driver of
#      the cross-language conformance suite (cargo test --workspace)
#   3. Go client: stub drift, gofmt, vet, unit + 3-node cluster +
#      porcupine linearizability tests and the conformance driver against
#      real d-engine-server processes
#   4. Python package (clients/python/scripts/ci.sh): stub drift, ruff,
#      mypy, both wheels (abi3 with the engine; client-only), a fresh venv
#      on the oldest claimed Python with the lowest allowed dependencies,
#      a fresh client-only venv, then pytest (real 3-node cluster,
#      conformance, embedded engine in-process and in three processes)
#   5. a few-second smoke run of the benchmark tool
# Installs what it needs (Go modules, Python packages into venvs under target/).
# Set SKIP_GO=1 / SKIP_PYTHON=1 / SKIP_BENCH=1 to skip a stage locally.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
source scripts/lib/ensure-tools.sh
ensure_rust
export CARGO_TERM_COLOR=never
# A one-shot full build gains nothing from incremental state, which would
# roughly double the target directory's size.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

stage() { printf '\n==== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

stage "cargo fmt --check"
cargo fmt --all -- --check

stage "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

stage "build d-engine-server and the dengine CLI"
cargo build -p d-engine-server -p dengine-cli --locked
export DENGINE_SERVER_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/d-engine-server"
# tests/tests/cli.rs runs it; `cargo test --workspace` also runs the CLI's
# own tests (txn grammar, help text in docs/cli.md).
export DENGINE_CLI_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/dengine"

stage "cargo test --workspace"
cargo test --workspace --locked
# Built by the step above for tests/tests/cluster_embedded.rs; the Python
# mixed-language cluster test runs it as its Rust node.
export DENGINE_EMBEDDED_APP_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/embedded-app"

stage "Rust examples (embedded mode)"
for ex in job_lock service_discovery; do
    timeout 120 cargo run -q --locked -p d-engine --example "$ex"
done

if [ -z "${SKIP_GO:-}" ]; then
    stage "Go client"
    bash clients/go/scripts/test.sh
fi

if [ -z "${SKIP_PYTHON:-}" ] && [ -f clients/python/scripts/ci.sh ]; then
    stage "Python package"
    bash clients/python/scripts/ci.sh
fi

if [ -z "${SKIP_BENCH:-}" ] && [ -f scripts/bench.sh ]; then
    stage "benchmark smoke run"
    bash scripts/bench.sh --smoke
fi

stage "all tests passed"
