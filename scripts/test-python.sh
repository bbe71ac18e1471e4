#!/usr/bin/env bash
# The Python package (python/): builds it with maturin into a private
# virtualenv (target/python-venv, made from the machine's python3; maturin,
# pytest and mypy come from PyPI), type-checks the tests, the example service
# and the stubs with `mypy --strict`, and runs the pytest suite. The tests
# compare with the `rulehost` binary, built here if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "maturin>=1.9,<2" "pytest>=8" "mypy>=1.10"
cargo build --quiet -p rulehost-cli
VIRTUAL_ENV="$PWD/$venv" PATH="$PWD/$venv/bin:$PATH" maturin develop --quiet --manifest-path python/Cargo.toml
"$venv/bin/mypy" --strict --no-error-summary python/tests examples/python-service python/bench.py
"$venv/bin/mypy" --strict --no-error-summary -p rulehost
RULEHOST_BIN="$PWD/target/debug/rulehost" "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests "$@"
