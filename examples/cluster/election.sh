#!/usr/bin/env bash
# Leader election across three processes: starts the 3-node standalone
# cluster (standalone.sh), three `leader_election` candidates, kills the
# elected one with SIGKILL, and shows another candidate take over once the
# dead one's lease (3 s) expires.
#   examples/cluster/election.sh
# Uses release builds unless DENGINE_SERVER_BIN and DENGINE_EXAMPLE_BIN
# name prebuilt binaries. Logs: examples/cluster/.election/
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$here/.election"
example="${DENGINE_EXAMPLE_BIN:-$root/target/release/examples/leader_election}"
if [ -z "${DENGINE_EXAMPLE_BIN:-}" ]; then
    (cd "$root" && cargo build --release -p d-engine --example leader_election)
fi
rm -rf "$work" && mkdir -p "$work"
"$here/standalone.sh" start
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$here/standalone.sh" clean >/dev/null
}
trap cleanup EXIT
export DENGINE_ENDPOINTS=127.0.0.1:9083,127.0.0.1:9183,127.0.0.1:9283
for port in 9083 9183 9283; do # wait until every node listens
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
for i in 1 2 3; do
    "$example" "worker-$i" 60 >"$work/worker-$i.log" 2>&1 &
    pids+=($!)
done

elected() { grep -l "elected" "$work"/worker-*.log 2>/dev/null || true; }
wait_for() { # wait_for <what> <command>: up to 30 s
    for _ in $(seq 300); do
        out="$($2)"; [ -n "$out" ] && { echo "$out"; return 0; }
        sleep 0.1
    done
    echo "timed out waiting for $1" >&2; return 1
}
first="$(wait_for "a first leader" elected | head -1)"
who="$(basename "$first" .log)"
echo "elected: $who; killing it (SIGKILL)"
kill -KILL "${pids[$(( ${who#worker-} - 1 ))]}"
others() { elected | grep -v "$who" || true; }
next="$(wait_for "the next leader" others | head -1)"
echo "took over: $(basename "$next" .log)"
grep -h "observed leader" "$work"/worker-*.log | tail -3
