#!/usr/bin/env bash
# Builds the nine shipped rules and the test guests to Wasm components
# (wasm32-wasip2, profile wasm-release) and copies the shipped rules into
# examples/ruleset/modules/<rule>.wasm.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
packages=()
for dir in rules/*/ tests/guests/*/; do
  packages+=(-p "$(sed -n 's/^name = "\(.*\)"/\1/p' "$dir/Cargo.toml" | head -1)")
done
cargo build --quiet --profile wasm-release --target wasm32-wasip2 "${packages[@]}"
out=target/wasm32-wasip2/wasm-release
mkdir -p examples/ruleset/modules examples/ruleset/cases
for dir in rules/*/; do
  rule=$(basename "$dir")
  cp "$out/rule_${rule//-/_}.wasm" "examples/ruleset/modules/$rule.wasm"
  # Each rule's own cases, so `rulehost test --ruleset examples/ruleset` runs them.
  cp "$dir/cases.toml" "examples/ruleset/cases/$rule.toml"
done
echo "built $(ls examples/ruleset/modules/*.wasm | wc -l) rule modules into examples/ruleset/modules" >&2
