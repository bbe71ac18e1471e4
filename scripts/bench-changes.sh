#!/usr/bin/env bash
# What changing rules safely costs (issue 14), in one run on the same
# generated input, release build, `--ledger :memory:`: a plain `run`; `run`
# with a shadow candidate; `run` with a canary at 0% and at 20%; `backtest`
# over the whole stream; `diff` against the legacy Python on the first
# DIFF_TRANSACTIONS lines. Wall and CPU (user + system) seconds; medians of
# ROUNDS runs for the `run` jobs, one run of the long ones.
#   scripts/bench-changes.sh   (TRANSACTIONS=1000000 DIFF_TRANSACTIONS=200000 ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
transactions=${TRANSACTIONS:-1000000}
diff_transactions=${DIFF_TRANSACTIONS:-200000}
rounds=${ROUNDS:-3}
legacy=${LEGACY:-../shared/legacy/python_rules.py}
scripts/build-rules.sh >/dev/null
cargo build --quiet --release -p rulehost-cli
bin=$PWD/target/release/rulehost
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$bin gen --out "$work" --transactions "$transactions" 2>/dev/null
head -n "$diff_transactions" "$work/transactions.jsonl" >"$work/diff.jsonl"
cache="$work/cache"
# The candidate: the example rule set with review_at 400 → 300.
cp -r examples/ruleset "$work/candidate"
sed -i 's/^review_at = 400/review_at = 300/' "$work/candidate/manifest.toml"

measure() {
  /usr/bin/time -f "%e %U %S %M" -o "$work/time" bash -c "$1" >/dev/null 2>"$work/stderr" \
    || { echo "bench-changes: failed: $1" >&2; cat "$work/stderr" >&2; exit 1; }
  awk '{ printf "%.2f %.2f %d\n", $1, $2 + $3, $4 / 1024 }' "$work/time"
}
median() { sort -n | awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }'; }
common="--accounts $work/accounts.jsonl --cache-dir $cache"
run="$bin run --rules examples/ruleset $common --ledger :memory: --input $work/transactions.jsonl --quiet; test \$? -le 1"
$bin check --rules examples/ruleset --cache-dir "$cache" >/dev/null
$bin check --rules "$work/candidate" --cache-dir "$cache" >/dev/null

printf '%s lines; wall s, CPU s, peak RSS MiB\n' "$transactions"
row() {
  local name=$1 cmd=$2 n=$3 results=()
  for _ in $(seq "$n"); do results+=("$(measure "$cmd")"); done
  printf '%-40s %s\n' "$name" "$(printf '%s\n' "${results[@]}" | median)"
}
row "run" "$run" "$rounds"
row "run --shadow" "${run/--quiet/--quiet --shadow $work/candidate}" "$rounds"
row "run --canary (0%)" "${run/--quiet/--quiet --canary $work/candidate --canary-share 0}" "$rounds"
row "run --canary (20%)" "${run/--quiet/--quiet --canary $work/candidate --canary-share 20}" "$rounds"
row "backtest" "$bin backtest --rules examples/ruleset --candidate $work/candidate $common \
  --input $work/transactions.jsonl --json" 1
if [ -f "$legacy" ]; then
  printf '\ndiff on %s lines:\n' "$diff_transactions"
  row "rulehost run" "${run/$work\/transactions.jsonl/$work/diff.jsonl}" 1
  row "legacy alone" "python3 $legacy $work/accounts.jsonl examples/ruleset/lists/blocked-accounts.txt \
    <$work/diff.jsonl" 1
  row "diff (both sides + pairing)" "$bin diff --rules examples/ruleset $common --input $work/diff.jsonl \
    --legacy 'python3 $legacy $work/accounts.jsonl examples/ruleset/lists/blocked-accounts.txt' \
    --equate null-score-is-zero --equate errors-agree --json" 1
fi
