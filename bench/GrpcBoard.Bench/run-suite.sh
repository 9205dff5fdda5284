#!/usr/bin/env bash
# Runs the standard GrpcBoard benchmark configurations and keeps each output in a results directory.
# On a shared machine, a run during which other processes used CPU (the tool prints WARNING) is repeated,
# up to ATTEMPTS times, after waiting for the machine to be idle.
#
#   bench/GrpcBoard.Bench/run-suite.sh [results-dir] [extra options for every run...]
#   ATTEMPTS=3 IDLE_WAIT=600 bench/GrpcBoard.Bench/run-suite.sh /tmp/bench-results
#   SUITE=compare bench/GrpcBoard.Bench/run-suite.sh /tmp/bench-compare   # Redis store vs etcd vs raw Redis (3 rounds), watch fan-out
#
# SUITE=compare needs redis-server, redis-benchmark (apt: redis-server redis-tools), h2load (apt: nghttp2-client) and etcd (apt: etcd-server);
# the tool says which is missing and skips that part.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
results="${1:-$root/artifacts/bench-$(date -u +%Y%m%d-%H%M%S)}"
shift || true
attempts="${ATTEMPTS:-3}"
idle_wait="${IDLE_WAIT:-600}"
mkdir -p "$results"

dotnet build -c Release "$root/bench/GrpcBoard.Bench" -v quiet -nologo >/dev/null
dll="$root/bench/GrpcBoard.Bench/bin/Release/net10.0/GrpcBoard.Bench.dll"

# Waits until the machine is at least 90% idle over 3 s (or the wait runs out).
wait_idle() {
  local deadline=$(( $(date +%s) + idle_wait ))
  # Locals: the fields of /proc/stat must not overwrite the caller's variables (e.g. a loop's $n).
  local u n s i w q sq st t1 i1 t2 i2
  while true; do
    read -r _ u n s i w q sq st _ < /proc/stat; t1=$((u+n+s+i+w+q+sq+st)) i1=$i
    sleep 3
    read -r _ u n s i w q sq st _ < /proc/stat; t2=$((u+n+s+i+w+q+sq+st)) i2=$i
    (( 100*(i2-i1)/(t2-t1) >= 90 )) && return 0
    (( $(date +%s) >= deadline )) && { echo "  (machine still busy; running anyway)"; return 0; }
  done
}

run() {
  local name="$1"; shift
  for attempt in $(seq 1 "$attempts"); do
    wait_idle
    echo "== $name (attempt $attempt): $*"
    local out="$results/$name.$attempt.txt"
    dotnet "$dll" "$@" > "$out" 2>&1 || echo "  exit code $? (see $out)"
    grep -E '^(claims|claim\+complete pairs|deliveries|WARNING|verdict|with |redis store / |embedded|redis) ' "$out" | sed 's/^/  /' || true
    cp "$out" "$results/$name.txt"
    grep -q '^WARNING' "$out" || return 0
  done
}

if [ "${SUITE:-standard}" = compare ]; then
  run compare                          compare --rounds 3 "$@"
  for n in 1 2; do
    run watch-fanout-embedded-$n       watch-fanout "$@"
  done
  for n in 1 2; do
    run watch-fanout-redis-$n          watch-fanout --store redis "$@"
    run claim-complete-redis-full-$n   claim-complete --store redis "$@"
  done
  echo "results in $results"
  exit 0
fi

run claim-complete-embedded-full      claim-complete "$@"
run claim-complete-embedded-normal    claim-complete --synchronous NORMAL "$@"
run claim-complete-memory             claim-complete --store memory "$@"
run claim-only-embedded-full          claim-only "$@"
run claim-only-memory                 claim-only --store memory "$@"
run claim-complete-embedded-full-4conn claim-complete --connections 4 "$@"
run claim-complete-embedded-normal-4conn claim-complete --synchronous NORMAL --connections 4 "$@"
run claim-complete-memory-4conn       claim-complete --store memory --connections 4 "$@"
run claim-complete-embedded-full-inprocess claim-complete --in-process "$@"
echo "results in $results"
