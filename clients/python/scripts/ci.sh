#!/usr/bin/env bash
# CI for the Python package `d-engine` (clients/python). Works on a fresh
# clone with PyPI reachable:
#   1. a venv ($DENGINE_PY_VENV, default <repo>/target/py-venv) with the pinned
#      tools of requirements-dev.txt;
#   2. the committed grpcio-tools stubs match proto/ (check_proto.sh);
#   3. ruff check;
#   4. `pip install ./clients/python` (maturin builds the pyo3 extension; no
#      system protoc). The build uses the workspace's target dir and the dev
#      profile (DENGINE_PY_PROFILE, default "dev"), so after `cargo test
#      --workspace` only pyo3 and the binding crate are compiled;
#   5. pytest (standalone cluster, failover, embedded, 3-process embedded
#      cluster). Exit code 5 ("no tests collected") is a failure.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

venv="${DENGINE_PY_VENV:-$root/target/py-venv}"
python="${PYTHON:-python3}"
t0=$SECONDS
step() { echo "== [python ${1}] $((SECONDS - t0))s"; }

step venv
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install --quiet --disable-pip-version-check -r "$here/requirements-dev.txt"

step "stub drift check"
bash "$here/scripts/check_proto.sh"

step "ruff check"
(cd "$here" && ruff check .)

step "build + install (maturin, profile ${DENGINE_PY_PROFILE:-dev})"
export MATURIN_PEP517_ARGS="--profile ${DENGINE_PY_PROFILE:-dev}"
python -m pip install --quiet --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps "$here"
python -c 'import d_engine, d_engine._native as n; print("installed d_engine", n.__version__, "from", d_engine.__file__)'

step pytest
# Run from the tests dir so the installed package (not the source tree) is imported.
cd "$here/tests"
set +e
python -m pytest -c "$here/pyproject.toml" --rootdir "$here" -q -p no:cacheprovider "$here/tests" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: treating as a failure" >&2
    exit 1
fi
step "done (pytest exit $rc)"
exit "$rc"
