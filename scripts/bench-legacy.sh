#!/usr/bin/env bash
# rulehost against the legacy Python implementation it replaces
# (../shared/legacy/python_rules.py), as whole processes on the same
# generated input, in one run: wall time and CPU time (user + system) of
# each, their ratios, and rulehost's throughput. Each program runs ROUNDS
# times (median reported); rulehost first once more to warm its compiled-
# module cache (a cold first start is reported separately).
#   scripts/bench-legacy.sh            (TRANSACTIONS=200000 ROUNDS=3 LEDGER=:memory:)
#   LEDGER=durable scripts/bench-legacy.sh   (rulehost on its durable default ledger)
set -euo pipefail
cd "$(dirname "$0")/.."
legacy=${LEGACY:-../shared/legacy/python_rules.py}
[ -f "$legacy" ] || { echo "bench-legacy: $legacy not found (set LEGACY=path/to/python_rules.py)" >&2; exit 2; }
transactions=${TRANSACTIONS:-200000}
rounds=${ROUNDS:-3}
ledger=${LEDGER:-:memory:}
scripts/build-rules.sh >/dev/null
cargo build --quiet --release -p rulehost-cli
bin=$PWD/target/release/rulehost
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$bin gen --out "$work" --transactions "$transactions" 2>/dev/null
cache="$work/cache"

# Runs the shell command $1 and prints "wall cpu" in seconds (CPU = user +
# system of the command and its children).
measure() {
  /usr/bin/time -f "%e %U %S" -o "$work/time" bash -c "$1" >/dev/null 2>"$work/stderr" \
    || { echo "bench-legacy: failed: $1" >&2; cat "$work/stderr" >&2; exit 1; }
  awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$work/time"
}
store=":memory:"
[ "$ledger" = durable ] && store="$work/ledger.sqlite"
rulehost_run="rm -f $work/ledger.sqlite*; $bin run --rules examples/ruleset --accounts $work/accounts.jsonl \
  --ledger $store --input $work/transactions.jsonl --output $work/decisions.jsonl --quiet --cache-dir $cache; \
  test \$? -le 1"
legacy_run="python3 $legacy $work/accounts.jsonl examples/ruleset/lists/blocked-accounts.txt \
  <$work/transactions.jsonl >$work/legacy.jsonl"
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

cold=$(measure "$rulehost_run")
: >"$work/r"; : >"$work/p"
for _ in $(seq "$rounds"); do
  measure "$rulehost_run" >>"$work/r"
  measure "$legacy_run" >>"$work/p"
done
r_wall=$(cut -d' ' -f1 "$work/r" | median); r_cpu=$(cut -d' ' -f2 "$work/r" | median)
p_wall=$(cut -d' ' -f1 "$work/p" | median); p_cpu=$(cut -d' ' -f2 "$work/p" | median)
lines=$(wc -l <"$work/transactions.jsonl")
[ "$(wc -l <"$work/legacy.jsonl")" = "$lines" ] || { echo "bench-legacy: the legacy output has the wrong length" >&2; exit 1; }
echo "input: $lines lines (rulehost gen), $(nproc) CPUs, median of $rounds; rulehost ledger: $ledger"
printf '%-34s %9s %9s %12s\n' program "wall s" "CPU s" "lines/s"
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", a / b }'; }
printf '%-34s %9s %9s %12.0f\n' "rulehost run (warm module cache)" "$r_wall" "$r_cpu" "$(div "$lines" "$r_wall")"
printf '%-34s %9s %9s %12s\n' "rulehost run (first start, cold)" "${cold% *}" "${cold#* }" ""
printf '%-34s %9s %9s %12.0f\n' "legacy python_rules.py" "$p_wall" "$p_cpu" "$(div "$lines" "$p_wall")"
printf 'wall time: rulehost is %.2fx faster (target >= 4)\n' "$(div "$p_wall" "$r_wall")"
printf 'CPU time: rulehost uses %.0f%% of the legacy CPU (target <= 25%%)\n' "$(awk -v a="$r_cpu" -v b="$p_cpu" 'BEGIN { printf "%.4f", 100 * a / b }')"
