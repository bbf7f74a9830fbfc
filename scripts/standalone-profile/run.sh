#!/bin/bash
# run.sh LABEL SERVERBIN SCENARIO [extra bench args]: one standalone-3, 1,000-client
# case with CPU/ops sampled over a mid-run window (sample.py).
# Usage (from the repo root, after cargo build --release -p d-engine-server -p d-engine-bench):
#   scripts/standalone-profile/run.sh base-w target/release/d-engine-server write
#   DUR=12 scripts/standalone-profile/run.sh base-r target/release/d-engine-server read
# Outputs in /tmp/admit_runs/LABEL.{md,json,log,sample.json}. See docs/performance.md,
# "Standalone 3 nodes at 1,000 clients: profile and fair admission".
here=$(cd "$(dirname "$0")" && pwd)
label=$1; bin=$(realpath "$2"); sc=$3; shift 3
export ABDIR=/tmp/admit_ab; mkdir -p $ABDIR /tmp/admit_runs; rm -f $ABDIR/*.pid
export REAL=$bin
B=${BENCH:-target/release/d-engine-bench}
dur=${DUR:-12}
( $B --targets standalone-3 --scenarios $sc --clients 1000 --duration $dur --warmup 2 --rounds 1 \
   --floor-secs 0.1 --no-progress --server-bin $here/wrap.sh \
   --out-dir /tmp/admit_runs --name $label "$@" > /tmp/admit_runs/$label.log 2>&1 ) &
bp=$!
sleep 0.5; pgrep -P $bp -f d-engine-bench > $ABDIR/bench.pid || echo $bp > $ABDIR/bench.pid
# wait for the servers
for i in $(seq 1 100); do [ -f $ABDIR/node3.pid ] && break; sleep 0.2; done
delay=${DELAY:-5}; [ "$sc" != write ] && delay=$((delay+2))
python3 $here/sample.py $delay ${WIN:-5} /tmp/admit_runs/$label.sample.json > /tmp/admit_runs/$label.sample.txt
wait $bp
echo "== $label $(uptime | sed 's/.*load/load/')"
grep -A3 "ops/s" /tmp/admit_runs/$label.md | head -8
cat /tmp/admit_runs/$label.sample.txt
