#!/usr/bin/env bash
# CI for the Python package `d-engine` (clients/python). Works on a fresh
# clone with PyPI reachable:
#   1. a venv ($DENGINE_PY_VENV, default <repo>/target/py-venv) with the pinned
#      tools of requirements-dev.txt (the NEWEST runtime versions allowed);
#   2. the committed stubs match proto/, regenerated with the pinned
#      grpcio-tools of scripts/stub-tools.txt in a venv of its own;
#   3. ruff check and mypy (the package as users import it);
#   4. both wheels (scripts/build_wheels.sh: the abi3 wheel with the engine,
#      built by maturin with the dev profile so the workspace's test build is
#      reused, and the client-only wheel) into <repo>/target/py-dist; their
#      metadata agree;
#   5. the dependencies resolve (wheels only) for every Python the package
#      claims (3.9 .. 3.15);
#   6. a FRESH venv on the oldest claimed Python (3.9) installs the abi3
#      wheel FILE with the LOWEST allowed dependency versions
#      (scripts/lowest-deps.txt) and runs the unit tests and the examples
#      (standalone against a real 3-node d-engine-server cluster, embedded);
#   7. a FRESH venv installs the client-only wheel (nothing compiled) and runs
#      the standalone example against a real cluster;
#   8. the abi3 wheel in the main venv, and the whole pytest suite
#      (standalone cluster, failover, TLS, embedded, 3-process embedded
#      cluster). Exit code 5 ("no tests collected") is a failure.
# The oldest interpreter: $DENGINE_PY_OLDEST, else python3.9 on PATH, else
# pyenv's 3.9 (the CI image has it; Debian 12 packages only 3.11). Without
# one the run fails: the floor would be unproven.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

venv="${DENGINE_PY_VENV:-$root/target/py-venv}"
python="${PYTHON:-python3}"
dist="$root/target/py-dist"
pipq=(-m pip install --quiet --disable-pip-version-check)
claimed=(3.9 3.10 3.11 3.12 3.13 3.14 3.15)
t0=$SECONDS
step() { echo "== [python ${1}] $((SECONDS - t0))s"; }

step venv
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" "${pipq[@]}" -r "$here/requirements-dev.txt"

step "stub drift check (grpcio-tools of scripts/stub-tools.txt)"
genv="$root/target/py-gen-venv"
if [ ! -x "$genv/bin/python" ]; then
    "$python" -m venv "$genv"
fi
"$genv/bin/python" "${pipq[@]}" -r "$here/scripts/stub-tools.txt"
PYTHON="$genv/bin/python" bash "$here/scripts/check_proto.sh"

step "ruff check, mypy"
(cd "$here" && "$venv/bin/ruff" check . && "$venv/bin/mypy")

step "build both wheels (maturin profile ${DENGINE_PY_PROFILE:-dev}; client-only)"
rm -rf "$dist"
DENGINE_PY_PROFILE="${DENGINE_PY_PROFILE:-dev}" PYTHON="$venv/bin/python" bash "$here/scripts/build_wheels.sh" "$dist"
abi3=("$dist"/d_engine-*-cp39-abi3-*.whl)
pure=("$dist"/d_engine-*-py3-none-any.whl)
[ -f "${abi3[0]}" ] && [ -f "${pure[0]}" ] || { echo "expected one abi3 and one py3-none-any wheel in $dist" >&2; exit 1; }
"$venv/bin/python" - "${abi3[0]}" "${pure[0]}" <<'PY'
import re, sys, zipfile
def meta(path):
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(name).decode().splitlines()
    keep = ("Name:", "Version:", "Requires-Python:", "Requires-Dist:")
    out = []
    for l in lines:
        l = l.replace(" ", "")
        if l.startswith(keep) and "extra==" not in l:
            m = re.match(r"(Requires-Dist:[A-Za-z0-9_.-]+)(.*)", l)
            # Specifier order is the backend's choice: compare them as sets.
            out.append(m.group(1) + ",".join(sorted(m.group(2).split(","))) if m else l)
    return sorted(out)
a, p = meta(sys.argv[1]), meta(sys.argv[2])
if a != p:
    sys.exit(f"the wheels' metadata differ:\nabi3: {a}\nclient-only: {p}")
print("both wheels:", "; ".join(a))
PY

step "dependencies resolve for Python ${claimed[*]}"
rm -rf "$root/target/py-resolve"
for v in "${claimed[@]}"; do
    # The abi3 wheel's own tags and Requires-Python, and binary wheels of
    # every dependency for that interpreter (no sdist builds).
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
        --python-version "$v" --dest "$root/target/py-resolve/$v" "${abi3[0]}" \
        || { echo "the dependencies of d-engine do not resolve for Python $v" >&2; exit 1; }
    echo "Python $v: $(cd "$root/target/py-resolve/$v" && ls | grep -E '^(grpcio|protobuf|googleapis)' | tr '\n' ' ')"
done

oldest="${DENGINE_PY_OLDEST:-}"
if [ -z "$oldest" ]; then
    for c in "$(command -v python3.9 || true)" "$HOME"/.pyenv/versions/3.9*/bin/python3.9; do
        if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
            oldest="$c"
            break
        fi
    done
fi
if [ -z "$oldest" ]; then
    echo "no Python 3.9 interpreter (set DENGINE_PY_OLDEST): the package's floor cannot be tested" >&2
    exit 1
fi
if [ -z "${DENGINE_SERVER_BIN:-}" ]; then
    cargo build -q -p d-engine-server
    export DENGINE_SERVER_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/d-engine-server"
fi

run_pytest() { # run_pytest PYTHON ARGS...: from the tests dir, so the installed package is imported
    local py="$1"
    shift
    (cd "$here/tests" && "$py" -m pytest -c "$here/pyproject.toml" --rootdir "$here" -q -p no:cacheprovider "$@")
}

step "fresh venv: Python $("$oldest" -c 'import platform; print(platform.python_version())'), abi3 wheel, lowest deps"
fresh="$root/target/py-fresh-oldest"
rm -rf "$fresh"
"$oldest" -m venv "$fresh"
"$fresh/bin/python" "${pipq[@]}" -r "$here/scripts/lowest-deps.txt" "${abi3[0]}" "pytest==8.4.2" "pytest-asyncio==1.2.0"
"$fresh/bin/python" -c 'import d_engine, google.protobuf, grpc; print("d_engine", d_engine.__version__, "engine:", d_engine.EMBEDDED_AVAILABLE, "grpcio", grpc.__version__, "protobuf", google.protobuf.__version__)'
run_pytest "$fresh/bin/python" test_packaging.py test_client_unit.py test_watch_unit.py test_examples.py \
    -k "not coordination_examples and not lock_and_election"

step "fresh venv: client-only wheel (nothing compiled)"
fresh="$root/target/py-fresh-client"
rm -rf "$fresh"
"$python" -m venv "$fresh"
"$fresh/bin/python" "${pipq[@]}" "${pure[0]}" "pytest==9.2.0" "pytest-asyncio==1.5.0"
"$fresh/bin/python" -c 'import d_engine; assert not d_engine.EMBEDDED_AVAILABLE; print("client-only d_engine", d_engine.__version__)'
run_pytest "$fresh/bin/python" test_packaging.py test_examples.py -k "standalone_examples or packaging"

step "install the abi3 wheel into $venv"
"$venv/bin/python" "${pipq[@]}" --force-reinstall --no-deps "${abi3[0]}"
"$venv/bin/python" -c 'import d_engine, d_engine._native as n; print("installed d_engine", n.__version__, "from", d_engine.__file__)'

step pytest
set +e
PATH="$venv/bin:$PATH" run_pytest "$venv/bin/python" "$here/tests" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: treating as a failure" >&2
    exit 1
fi
step "done (pytest exit $rc)"
exit "$rc"
