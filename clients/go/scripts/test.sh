#!/usr/bin/env bash
# Go client gates, for CI (`bash clients/go/scripts/test.sh` from anywhere):
#   1. the committed stubs match proto/ (scripts/check-gen.sh);
#   2. gofmt, go vet on clients/go and examples/go; the examples build;
#   3. go test -race ./... in clients/go: unit tests, the fake-server
#      harness self-check, and the 3-node cluster + linearizability tests,
#      all under the race detector.
#
# Why the whole suite runs once under -race (not a plain run plus a race
# run of a subset): the suite is bound by waiting on servers, not by CPU,
# so -race costs little here (measured: 185 s with -race vs 168 s without,
# plus ~40 s to build the race binary), while a second run would add ~3 min.
# GO_TEST_RACE=0 runs it without the race detector (e.g. where cgo, which
# -race needs, is not available; the script also falls back by itself).
#
# The cluster tests use $DENGINE_SERVER_BIN if set; otherwise this script
# builds d-engine-server with cargo and uses it if it answers `--help`
# (until then the cluster tests report SKIP with the reason).
# Extra arguments go to `go test`, e.g. `-run Linearizability -lin.duration=10m`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"   # clients/go
root="$(cd "$here/../.." && pwd)"

echo "== go: generated stubs up to date"
"$here/scripts/check-gen.sh"

echo "== go: gofmt"
unformatted="$(cd "$here" && gofmt -l . ; cd "$root/examples/go" && gofmt -l .)"
if [ -n "$unformatted" ]; then
    echo "gofmt needed on:"; echo "$unformatted"; exit 1
fi

echo "== go: vet"
(cd "$here" && go vet ./...)
(cd "$root/examples/go" && go vet ./... && go build ./...)

if [ -z "${DENGINE_SERVER_BIN:-}" ] && command -v cargo >/dev/null 2>&1; then
    echo "== go: building d-engine-server for the cluster tests"
    target="${CARGO_TARGET_DIR:-$root/target}"
    if (cd "$root" && cargo build -p d-engine-server --locked) && \
        "$target/debug/d-engine-server" --help >/dev/null 2>&1; then
        export DENGINE_SERVER_BIN="$target/debug/d-engine-server"
    else
        echo "d-engine-server is not usable yet: the cluster tests will be skipped" >&2
    fi
fi

cd "$here"
race=(-race)
if [ "${GO_TEST_RACE:-1}" = "0" ]; then
    race=()
elif [ "$(go env CGO_ENABLED)" != "1" ] || ! command -v "$(go env CC)" >/dev/null 2>&1; then
    echo "go test: -race needs cgo and a C compiler ($(go env CC)); running without it" >&2
    race=()
fi
echo "== go test ${race[*]:-} (DENGINE_SERVER_BIN=${DENGINE_SERVER_BIN:-unset})"
go test "${race[@]}" -count=1 -timeout 20m ./... "$@"
