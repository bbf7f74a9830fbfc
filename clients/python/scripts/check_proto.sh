#!/usr/bin/env bash
# Fails if the committed Python stubs differ from what proto/ generates with
# the pinned grpcio-tools (scripts/stub-tools.txt; $PYTHON must have it).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bash "$here/scripts/gen_proto.sh" "$tmp"
if ! diff -r -x __pycache__ "$tmp" "$here/python/d_engine/_proto" >/dev/null; then
    echo "Python stubs are stale: run clients/python/scripts/gen_proto.sh and commit the result" >&2
    diff -r -x __pycache__ "$tmp" "$here/python/d_engine/_proto" | head -20 >&2
    exit 1
fi
echo "Python stubs match proto/"
