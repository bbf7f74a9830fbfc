#!/usr/bin/env bash
# Starts a single d-engine node with built-in defaults: client gRPC API on
# 127.0.0.1:9083, data in ./d-engine-data. Extra arguments go to the server
# (e.g. --config d-engine.toml). Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/ensure-tools.sh
ensure_rust
cargo build --release -p d-engine-server
exec ./target/release/d-engine-server "$@"
