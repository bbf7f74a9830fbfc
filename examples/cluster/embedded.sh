#!/usr/bin/env bash
# A 3-node EMBEDDED d-engine cluster on 127.0.0.1: three application
# processes (engine/facade/examples/embedded_node.rs), each running a node
# in-process; the nodes talk Raft over gRPC like standalone servers.
#   examples/cluster/embedded.sh start    build and start apps 1-3
#   examples/cluster/embedded.sh status   show which apps run
#   examples/cluster/embedded.sh stop     stop them (SIGTERM, graceful)
#   examples/cluster/embedded.sh clean    stop and delete their data
# Peer ports 9481, 9581, 9681; client gRPC API 9483, 9583, 9683 (any
# d-engine client can connect). Data, config, logs: examples/cluster/.embedded/n{1,2,3}/
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$here/.embedded"
profile="${PROFILE:-release}"   # PROFILE=dev uses a debug build
bin="${CARGO_TARGET_DIR:-$root/target}/$( [ "$profile" = dev ] && echo debug || echo "$profile")/examples/embedded_node"

write_config() {
    local i=$1 dir=$2
    {
        echo "node_id = $i"
        echo "data_dir = \"$dir/data\""
        echo "peer_addr = \"127.0.0.1:$((9481 + (i - 1) * 100))\""
        echo "client_addr = \"127.0.0.1:$((9483 + (i - 1) * 100))\""
        for j in 1 2 3; do
            echo
            echo "[[members]]"
            echo "id = $j"
            echo "peer_addr = \"127.0.0.1:$((9481 + (j - 1) * 100))\""
            echo "client_addr = \"127.0.0.1:$((9483 + (j - 1) * 100))\""
        done
    } >"$dir/node.toml"
}

start() {
    (cd "$root" && cargo build --profile "$profile" -p d-engine --example embedded_node)
    for i in 1 2 3; do
        dir="$work/n$i"
        mkdir -p "$dir"
        if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            echo "app $i already running (pid $(cat "$dir/pid"))"; continue
        fi
        write_config "$i" "$dir"
        "$bin" "$dir/node.toml" >"$dir/log" 2>&1 &
        echo $! >"$dir/pid"
        echo "app $i started (pid $!), client API 127.0.0.1:$((9483 + (i - 1) * 100)), log $dir/log"
    done
}

status() {
    for i in 1 2 3; do
        pidf="$work/n$i/pid"
        if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
            echo "app $i: running (pid $(cat "$pidf")); last line: $(tail -n 1 "$work/n$i/log" 2>/dev/null)"
        else
            echo "app $i: stopped"
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
            echo "app $i stopped"
        fi
        rm -f "$pidf"
    done
}

case "${1:-}" in
    start) start ;;
    status) status ;;
    stop) stop ;;
    clean) stop; rm -rf "$work" ;;
    *) sed -n 2,11p "$0"; exit 2 ;;
esac
