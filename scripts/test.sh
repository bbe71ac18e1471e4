#!/usr/bin/env bash
# The whole test suite: builds the Wasm modules (installing the wasm32-wasip2
# target if needed), then runs every test of the workspace — the rules' native
# unit tests, the SDK, the host's unit tests, and the integration tests in
# tests/all that run the real components.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-rules.sh
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
