#!/usr/bin/env bash
# Fail if the committed Go stubs (clients/go/proto) differ from what scripts/gen.sh
# produces from proto/proto/dengine/v1/*.proto with the pinned tool versions.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$here/scripts/gen.sh" "$tmp" >/dev/null
if ! diff -ru "$here/proto" "$tmp" >"$tmp.diff" 2>&1; then
    cat "$tmp.diff" | head -100
    rm -f "$tmp.diff"
    echo
    echo "ERROR: clients/go/proto is out of date with proto/proto/dengine/v1/*.proto" >&2
    echo "       (or with the plugin versions pinned in clients/go/go.mod)." >&2
    echo "       Run clients/go/scripts/gen.sh and commit the result." >&2
    exit 1
fi
rm -f "$tmp.diff"
echo "Go stubs are up to date."
