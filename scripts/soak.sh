#!/usr/bin/env bash
# Soak test of `rulehost serve` (issue 11): steady load for DURATION seconds
# (default 600) with a reload every second and a hostile module swapped in
# and out of the rule set every 10 s. Passes when no answer is an error other
# than the expected refusals, the rule-set status still answers, RSS stays
# flat, every acknowledged decision reads back from the ledger, and the
# ledger reconciles afterwards. Prints a JSON report.
#   scripts/soak.sh [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-600}
scripts/build-rules.sh >/dev/null
cargo build --quiet --release -p rulehost-cli
bin=target/release/rulehost
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
cp -r examples/ruleset "$work/rules"
rm -rf "$work/rules/.rulehost"
$bin gen --out "$work" --accounts 2000 --transactions 1 2>/dev/null
grep '"currency":"USD"' "$work/accounts.jsonl" | grep '"status":"active"' | sed 's/.*"id":"\([^"]*\)".*/\1/' >"$work/ids"
token=soak-$RANDOM$RANDOM
RULEHOST_ADMIN_TOKEN=$token $bin serve --rules "$work/rules" --ledger "$work/ledger.sqlite" \
  --accounts "$work/accounts.jsonl" --listen 127.0.0.1:0 >"$work/addr" 2>"$work/log" &
echo $! >"$work/pid"
for _ in $(seq 300); do [ -s "$work/addr" ] && break; sleep 0.1; done
addr=$(sed 's/listening on //' "$work/addr")
status=0
python3 scripts/soak/load.py "$addr" "$work/rules" target/wasm32-wasip2/wasm-release/guest_hostile.wasm \
  "$work/ids" "$(cat "$work/pid")" "$duration" "$token" || status=$?
kill "$(cat "$work/pid")"
wait "$(cat "$work/pid")" 2>/dev/null || true
$bin ledger reconcile --ledger "$work/ledger.sqlite" || status=1
grep -c 'panicked' "$work/log" && status=1
exit $status
