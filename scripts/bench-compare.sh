#!/usr/bin/env bash
# bench-compare: holdfast (3 nodes on loopback, fsync on) against Redis+Lua
# (appendfsync always and everysec) and PostgreSQL (synchronous_commit on),
# plus the fasthttp no-op ceiling, on the drop and retail scenarios, one
# target after the other. Each target's max load is found first
# (--find-max: a closed-loop ramp of short steps), then the measured run is
# open loop at 50% of that target's own max. One table per scenario: max
# ops/s, holdfast's max divided by each target's, and p50/p99/p99.9 at 50%.
# Everything runs on 127.0.0.1, is bounded in time and is cleaned up on
# exit.
#
#   DURATION=30s  the measured run per target and scenario (the ramp adds
#                 at most 7 steps of 3 s per target)
#   OUT=bench-results  where JSON reports, plots and the text output go
#   BENCH_FLAGS   extra flags for every run, after the script's own (so they
#                 win), e.g. "--leader-aware=false" (round-robin holdfast
#                 client) or "--find-max-steps 32,64,128"
#   SERVE_FLAGS   extra flags for the holdfast nodes, e.g. "--fast-refusals=false"
set -euo pipefail
# (pipefail: a failed bench run fails its "| tee" too)
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30s}
OUT=${OUT:-bench-results}
BENCH_FLAGS=${BENCH_FLAGS:-}
SERVE_FLAGS=${SERVE_FLAGS:-}
WORK=$(mktemp -d /tmp/holdfast-compare.XXXXXX)
mkdir -p "$OUT"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/peers-down.sh >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

make build >/dev/null
mapfile -t peers < <(scripts/peers-up.sh)

peerlist=n1=127.0.0.1:19181,n2=127.0.0.1:19182,n3=127.0.0.1:19183
for i in 1 2 3; do
  # shellcheck disable=SC2086
  bin/holdfast serve --id "n$i" --data "$WORK/n$i" --http "127.0.0.1:1818$i" --raft "127.0.0.1:1918$i" \
    --peers "$peerlist" --log-level warn $SERVE_FLAGS >"$WORK/n$i.log" 2>&1 &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 300); do
    grep -q ready "$WORK/n$i.log" 2>/dev/null && break
    sleep 0.1
  done
  grep -q ready "$WORK/n$i.log" || { echo "node n$i did not start:"; cat "$WORK/n$i.log"; exit 1; }
done
cluster=http://127.0.0.1:18181,127.0.0.1:18182,127.0.0.1:18183

targets=(--target "$cluster")
for u in "${peers[@]}"; do targets+=(--target "$u"); done
targets+=(--target noop://)

status=0
for scenario in drop retail; do
  echo "=== $scenario ($DURATION per target)"
  # shellcheck disable=SC2086
  bin/holdfast bench "$scenario" "${targets[@]}" --find-max --duration "$DURATION" $BENCH_FLAGS \
    --json "$OUT/$scenario.json" --plot "$OUT/$scenario.png" --progress=false | tee "$OUT/$scenario.txt" || status=1
done
exit $status
