#!/usr/bin/env bash
# Runs every d-engine test: formatting and lint gates, Rust unit/simulation/
# multi-process tests, Go and Python client suites. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure-tools.sh
ensure_rust

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
