#!/usr/bin/env bash
# A 3-node standalone d-engine cluster on 127.0.0.1, three real processes.
#   examples/cluster/standalone.sh start    build (release) and start nodes 1-3
#   examples/cluster/standalone.sh status   show which nodes run and who leads
#   examples/cluster/standalone.sh stop     stop them (SIGTERM, graceful)
#   examples/cluster/standalone.sh clean    stop and delete their data
# Client ports: 9083, 9183, 9283. Peer ports: 9081, 9181, 9281.
# Data and logs: examples/cluster/.standalone/n{1,2,3}/
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$here/.standalone"
bin="${DENGINE_SERVER_BIN:-$root/target/release/d-engine-server}"
peers="1=127.0.0.1:9081/127.0.0.1:9083,2=127.0.0.1:9181/127.0.0.1:9183,3=127.0.0.1:9281/127.0.0.1:9283"

start() {
    if [ -z "${DENGINE_SERVER_BIN:-}" ]; then
        (cd "$root" && cargo build --release -p d-engine-server)
    fi
    for i in 1 2 3; do
        dir="$work/n$i"
        mkdir -p "$dir"
        if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            echo "node $i already running (pid $(cat "$dir/pid"))"; continue
        fi
        "$bin" --node-id "$i" --data-dir "$dir/data" \
            --listen-peer "127.0.0.1:$((9081 + (i - 1) * 100))" \
            --listen-client "127.0.0.1:$((9083 + (i - 1) * 100))" \
            --peers "$peers" >"$dir/log" 2>&1 &
        echo $! >"$dir/pid"
        echo "node $i started (pid $!), client 127.0.0.1:$((9083 + (i - 1) * 100)), log $dir/log"
    done
}

status() {
    for i in 1 2 3; do
        pidf="$work/n$i/pid"
        if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
            echo "node $i: running (pid $(cat "$pidf"))"
        else
            echo "node $i: stopped"
        fi
    done
}

stop() {
    for i in 1 2 3; do
        pidf="$work/n$i/pid"
        [ -f "$pidf" ] || continue
        pid="$(cat "$pidf")"
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            echo "node $i stopped"
        fi
        rm -f "$pidf"
    done
}

case "${1:-}" in
    start) start ;;
    status) status ;;
    stop) stop ;;
    clean) stop; rm -rf "$work" ;;
    *) sed -n 2,8p "$0"; exit 2 ;;
esac
