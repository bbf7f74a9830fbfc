#!/usr/bin/env bash
# The benchmark, one command (see docs/performance.md):
#
#   bash scripts/bench.sh            # standard matrix: d-engine embedded and
#                                    # standalone, 1 and 3 nodes, beside etcd;
#                                    # writes docs/bench-results/<date>.{json,md,png}
#   bash scripts/bench.sh --smoke    # a few seconds, tiny counts, etcd only if
#                                    # installed (CI: scripts/test.sh)
#   bash scripts/bench.sh [--smoke] --rounds 5 --duration 10   # extra flags go to the tool
#   bash scripts/bench.sh --upstream # the standard matrix plus upstream d-engine
#                                    # 0.2.4 (crates.io) embedded 1 and 3 nodes and
#                                    # standalone 3 nodes, in the same tables
#
# --upstream builds the tool with `--features upstream` (the published
# d-engine 0.2.4 crate, renamed upstream-d-engine in bench/Cargo.toml; never
# built by CI or a default build) and installs `protoc` (Debian
# protobuf-compiler), which upstream's proto crate needs at build time.
# See docs/performance.md, "Upstream d-engine in the same run".
#
# Installs etcd (Debian `etcd-server`) with apt-get if it is missing (not in
# --smoke mode), builds the tool and d-engine-server in release mode (debug
# for --smoke), then runs `d-engine-bench`, which starts every server itself
# on free 127.0.0.1 ports with temporary data dirs and stops them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

smoke=""
upstream=""
args=()
for a in "$@"; do
    case "$a" in
        --smoke) smoke=1 ;;
        --upstream) upstream=1 ;;
        *) args+=("$a") ;;
    esac
done
if [ -n "$smoke" ] && [ -n "$upstream" ]; then
    echo "bench.sh: --upstream is for the measured run, not --smoke" >&2
    exit 2
fi

target_dir="${CARGO_TARGET_DIR:-$root/target}"

if [ -n "$smoke" ]; then
    cargo build -p d-engine-bench -p d-engine-server
    bin="$target_dir/debug/d-engine-bench"
    server="${DENGINE_SERVER_BIN:-$target_dir/debug/d-engine-server}"
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
    "$bin" --smoke --no-progress --server-bin "$server" --out-dir "$out" --name smoke "${args[@]}" > "$out/stdout.md"
    # The smoke run must have measured something and reported every request.
    grep -q '| d-engine-embedded | 1 | write-single |' "$out/smoke.md" || {
        cat "$out/stdout.md"; echo "bench smoke: no embedded result" >&2; exit 1; }
    # ... and the coordination scenarios (txn, range pages, lease keep-alive).
    for sc in txn range-page lease-keepalive; do
        grep -q "| d-engine-embedded | 1 | $sc |" "$out/smoke.md" || {
            cat "$out/stdout.md"; echo "bench smoke: no embedded $sc result" >&2; exit 1; }
    done
    # Every case reports CPU per op (the tool's at least; "–" only without ops).
    grep -q '| d-engine-embedded | 1 | write-single |.*| [0-9][0-9.]* | – | [0-9][0-9.]* | [0-9][0-9.]* |$' "$out/smoke.md" || {
        cat "$out/stdout.md"; echo "bench smoke: no CPU per op for embedded write-single" >&2; exit 1; }
    echo "bench smoke: ok ($(grep -c '^| d-engine\|^| etcd' "$out/smoke.md") result rows)"
    # The seed's latency table, quick variant (200 requests per row, 2
    # election/failover runs): every row measured, none failed.
    "$bin" --latency-table --smoke --no-progress --server-bin "$server" --out-dir "$out" --name table > "$out/table.md.out"
    for row in '| embedded | put(), 1 node |' '| embedded | leader election, 3 nodes |' \
               '| standalone | put(), local |' '| standalone | leader election, 3 processes: failover |'; do
        grep -qF "$row" "$out/table.md" || {
            cat "$out/table.md.out"; echo "bench smoke: latency table has no row $row" >&2; exit 1; }
    done
    if grep -q 'FAILED' "$out/table.md"; then
        cat "$out/table.md"; echo "bench smoke: a latency-table part failed" >&2; exit 1
    fi
    echo "bench smoke: latency table ok ($(grep -c '^| embedded\|^| standalone' "$out/table.md") rows)"
    exit 0
fi

if ! command -v etcd > /dev/null && [ ! -x /usr/bin/etcd ]; then
    echo "installing etcd (Debian etcd-server)..." >&2
    sudo_cmd=""
    if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get install -y etcd-server > /dev/null || {
        $sudo_cmd apt-get update > /dev/null && $sudo_cmd apt-get install -y etcd-server > /dev/null; }
fi

tool_flags=()
if [ -n "$upstream" ]; then
    if ! command -v protoc > /dev/null; then
        echo "installing protoc (Debian protobuf-compiler) for upstream d-engine's build..." >&2
        sudo_cmd=""
        if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
        $sudo_cmd apt-get install -y protobuf-compiler > /dev/null || {
            $sudo_cmd apt-get update > /dev/null && $sudo_cmd apt-get install -y protobuf-compiler > /dev/null; }
    fi
    # Two invocations: with the feature on, `-p d-engine-server` would also
    # name upstream's crate of that name; and our server is built exactly as
    # without --upstream.
    cargo build --release -p d-engine-bench --features upstream
    cargo build --release -p d-engine-server
    tool_flags+=(--upstream)
else
    cargo build --release -p d-engine-bench -p d-engine-server
fi
bin="$target_dir/release/d-engine-bench"
server="${DENGINE_SERVER_BIN:-$target_dir/release/d-engine-server}"
# Date and UTC time: a second run the same day does not overwrite the first.
date="$(date -u +%Y-%m-%d-%H%M)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs" >&2
exec "$bin" --matrix standard --duration 3 --warmup 1 --rounds 3 --plot \
    --server-bin "$server" --out-dir docs/bench-results --name "$date" \
    "${tool_flags[@]+"${tool_flags[@]}"}" "${args[@]+"${args[@]}"}"
