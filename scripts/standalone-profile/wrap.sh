#!/bin/bash
# d-engine-server wrapper for the bench: metrics listener per node, pid file.
# REAL=path of the real server binary (env), ABDIR=where to write pids.
cfg=""
prev=""
for a in "$@"; do [ "$prev" = "--config" ] && cfg="$a"; prev="$a"; done
n=$(basename "$cfg" .toml | tr -dc 0-9)
export DENGINE_LISTEN_METRICS=127.0.0.1:$((19100 + ${n:-0}))
echo $$ > ${ABDIR:-/tmp/admit_ab}/node$n.pid
exec nice -n ${SRV_NICE:-0} "$REAL" "$@"
