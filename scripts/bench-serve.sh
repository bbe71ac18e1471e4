#!/usr/bin/env bash
# Loopback load test of `rulehost serve` with wrk (Debian package `wrk`):
# single-transaction requests at several concurrency levels, then batches.
# The server and the load generator share this machine's CPUs.
#   scripts/bench-serve.sh            (DURATION=10s CONNECTIONS="1 4 16 64" BATCH=100)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
duration=${DURATION:-10s}
scripts/build-rules.sh >/dev/null
cargo build --quiet --release -p rulehost-cli
bin=target/release/rulehost
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
$bin gen --out "$work" --accounts 2000 --transactions 1 2>/dev/null
grep '"currency":"USD"' "$work/accounts.jsonl" | grep '"status":"active"' | sed 's/.*"id":"\([^"]*\)".*/\1/' >"$work/ids"
export ACCOUNTS_FILE="$work/ids"
start_server() {
  rm -f "$work"/ledger.sqlite*
  $bin serve --rules examples/ruleset --ledger "$work/ledger.sqlite" --accounts "$work/accounts.jsonl" \
    --listen 127.0.0.1:0 --in-flight-max 4096 "$@" >"$work/addr" 2>"$work/log" &
  echo $! >"$work/pid"
  for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.1; done
  addr=$(sed 's/listening on //' "$work/addr")
}
stop_server() { kill "$(cat "$work/pid")"; wait "$(cat "$work/pid")" 2>/dev/null || true; }
echo "single-transaction requests (POST /v1/transactions), $duration each"
for c in ${CONNECTIONS:-1 4 16 64}; do
  start_server
  printf 'connections=%-4s ' "$c"
  wrk -t1 -c"$c" -d"$duration" -s scripts/bench/single.lua "$addr" | grep RESULT
  stop_server
done
echo "batches of ${BATCH:-100} (POST /v1/transactions:batch), $duration each"
for c in 1 2 8; do
  start_server
  printf 'connections=%-4s ' "$c"
  BATCH=${BATCH:-100} wrk -t1 -c"$c" -d"$duration" -s scripts/bench/batch.lua "$addr" | grep RESULT
  stop_server
done
