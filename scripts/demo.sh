#!/usr/bin/env bash
# The main job on the embedded default: builds the rules and the host,
# generates a deterministic sample (200 000 transactions), runs it through
# `rulehost run`, and prints the summary. Output lands in out/sample/.
set -euo pipefail
cd "$(dirname "$0")/.."
transactions=${TRANSACTIONS:-200000}
scripts/build-rules.sh
cargo build --quiet --release -p rulehost
bin=target/release/rulehost
mkdir -p out/sample
$bin gen --out out/sample --transactions "$transactions"
$bin check --rules examples/ruleset
set +e
$bin run --rules examples/ruleset --accounts out/sample/accounts.jsonl \
  --input out/sample/transactions.jsonl --output out/sample/decisions.jsonl
code=$?
set -e
echo "decisions: out/sample/decisions.jsonl (exit code $code: 0 = all clean, 1 = some input lines were errors, as the sample injects)" >&2
# The sample deliberately contains malformed lines, so exit code 1 is the expected result.
[ "$code" -le 1 ]
