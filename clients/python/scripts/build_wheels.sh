#!/usr/bin/env bash
# Builds both wheels of the `d-engine` Python package into OUT_DIR
# (default clients/python/dist):
#   d_engine-<v>-cp39-abi3-<platform>.whl   the gRPC clients AND the embedded
#       engine (the Rust extension, abi3: one wheel for every CPython >= 3.9);
#       built by maturin with cargo (profile $DENGINE_PY_PROFILE, default
#       release; CI uses dev to reuse the test build);
#   d_engine-<v>-py3-none-any.whl           the client-only build: the same
#       Python sources without the extension; installing it compiles nothing.
# Needs maturin (requirements-dev.txt) and, for the client-only wheel,
# hatchling (fetched by pip's build isolation when it is not installed).
# Usage: build_wheels.sh [OUT_DIR]   (Python: $PYTHON, else python)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$here/dist}"
py="${PYTHON:-python}"
mkdir -p "$out"
"$py" -m maturin build --manifest-path "$here/Cargo.toml" --profile "${DENGINE_PY_PROFILE:-release}" --out "$out"
isolation=()
if "$py" -c 'import hatchling' 2>/dev/null; then
    isolation=(--no-build-isolation)
fi
"$py" -m pip wheel --quiet --disable-pip-version-check --no-deps "${isolation[@]}" -w "$out" "$here/client-only"
ls -1 "$out"
