#!/usr/bin/env bash
# The whole test suite: builds the Wasm modules (installing the wasm32-wasip2
# target if needed), then runs every test of the workspace — the rules' native
# unit tests, the SDK, the host's unit tests, the integration tests in
# tests/all that run the real components, the doc examples, and the Python
# package's pytest suite (scripts/test-python.sh) — and ends with one line
# totalling them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-rules.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets "$@" 2>&1 | tee "$log"
cargo test --workspace --doc 2>&1 | tee -a "$log"
scripts/test-python.sh 2>&1 | tee -a "$log"
# cargo: "test result: ok. N passed; F failed; ..."; pytest: "N passed, F failed, S skipped in Ts".
awk '/^test result:/ { p += $4; f += $6 }
     /^[0-9]+ (passed|failed).* in [0-9.]+s/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "rulehost tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$log"
