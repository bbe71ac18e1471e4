#!/usr/bin/env bash
# The Python package against Rust (BENCHMARKS.md, "The Python package"):
# per-call cost of `decide(bytes)` / `decide(dict)` against `Host::evaluate`
# from Rust on the same sample and rule set, `decide_many` against
# `rulehost run`, and the example service's CPU with rulehost against the
# legacy logic. Release builds throughout.
#
#   scripts/bench-python.sh [TRANSACTIONS=20000] [ROUNDS=5]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20000}
rounds=${2:-5}
scripts/build-rules.sh
cargo build --quiet --release -p rulehost-cli
sample="$PWD/target/bench-python/sample"
rm -rf "$sample"
target/release/rulehost gen --out "$sample" --transactions "$n" >/dev/null 2>&1
venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9,<2"
VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" maturin develop --quiet --release --manifest-path python/Cargo.toml

echo "== Rust: Host::evaluate one by one (1 thread), evaluate_batch (1 thread)"
BENCH_SAMPLE="$sample" BENCH_ROUNDS="$rounds" cargo bench --quiet -p rulehost-cli --bench host_call
echo "== Python: decide(bytes), decide(dict) one by one (1 thread), decide_many (default threads)"
"$venv/bin/python" python/bench.py "$sample" "$rounds"
echo "== rulehost run on the same sample (default threads), wall seconds of $rounds runs"
for _ in $(seq "$rounds"); do
  /usr/bin/time -f "%e" target/release/rulehost run --rules examples/ruleset --accounts "$sample/accounts.jsonl" \
    --input "$sample/transactions.jsonl" --ledger :memory: --output /dev/null --quiet 2>&1 | tail -1 || true
done
legacy=${RULEHOST_LEGACY:-../shared/legacy/python_rules.py}
if [ -f "$legacy" ]; then
  echo "== examples/python-service: rulehost in-process beside the legacy logic"
  "$venv/bin/python" examples/python-service/service.py --replay "$sample/transactions.jsonl" \
    --accounts "$sample/accounts.jsonl" --legacy "$legacy" --threads 1 | tr -d "\n "; echo
fi
