#!/usr/bin/env bash
# Fuzzes the input parsers and a whole decision stream with cargo-fuzz
# (libFuzzer, nightly): each target runs for SECONDS (default 60), its corpus
# seeded from the repository's fixtures. A crash stops the script and leaves
# its input in fuzz/artifacts/<target>/; turn it into a regression test.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(transaction accounts manifest cases stream)

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
[ -f examples/ruleset/modules/velocity.wasm ] || scripts/build-rules.sh

# Seed corpora: one file per fixture line (transactions, accounts) or file.
seed() {
    local target=$1
    shift
    mkdir -p "fuzz/corpus/$target"
    for f in "$@"; do
        case "$target" in
            transaction) split -l 1 -a 4 "$f" "fuzz/corpus/$target/$(basename "$(dirname "$f")")-" ;;
            *) cp "$f" "fuzz/corpus/$target/$(echo "$f" | tr / _)" ;;
        esac
    done
}
seed transaction tests/fixtures/pipeline/transactions.jsonl examples/ruleset/cases/smoke/transactions.jsonl
seed accounts tests/fixtures/pipeline/accounts.jsonl examples/ruleset/cases/smoke/accounts.jsonl
seed manifest examples/ruleset/manifest.toml
seed cases rules/*/cases.toml
mkdir -p fuzz/corpus/stream

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    status=0
    cargo +nightly fuzz run --fuzz-dir fuzz -s none "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^(INFO: Seed|#[0-9]+ +DONE|stat::number_of_executed_units|SUMMARY)|panicked' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz target $t failed (exit $status): its input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "fuzzing: ${#targets[@]} target(s), ${seconds}s each, no crash"
