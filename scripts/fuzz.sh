#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: libFuzzer through `cargo fuzz` with no
# sanitizer (`-s none`; see docs/security.md, "Fuzzing"). Installs the pinned cargo-fuzz if
# missing, checks format and lints of fuzz/, builds every target and runs each for
# FUZZ_SECONDS (default 20) from its committed seeds (fuzz/corpus/<target>/). Fails on any
# crash, panic, timeout or out-of-memory; the input is kept under $FUZZ_WORK/artifacts/.
#
#   FUZZ_SECONDS=600 FUZZ_TARGETS="token admin_api" FUZZ_WORK=$HOME/.cache/grantflow/fuzz-work \
#     FUZZ_LINT=0 scripts/fuzz.sh   # a long run; the grown corpus stays in $FUZZ_WORK/corpus/
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
TOOLS="$HOME/.cache/grantflow/tools"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
FUZZ_TARGETS="${FUZZ_TARGETS:-token check_request admin_api policy_spec redis_codec}"
# Instrumented builds have their own target dir: they must not evict the shared one.
FUZZ_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/grantflow/target-fuzz}"
# A scratch corpus and logs, removed after a clean smoke run (kept when FUZZ_WORK is given).
if [ -z "${FUZZ_WORK:-}" ]; then
  FUZZ_WORK="$(mktemp -d -t grantflow-fuzz.XXXXXX)"
  SCRATCH=1
fi

if [ "$("$TOOLS/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  cargo install --locked --version "$CARGO_FUZZ_VERSION" --root "$TOOLS" cargo-fuzz
fi
export PATH="$TOOLS/bin:$PATH"

# The fuzz crate is its own workspace: the main workspace's fmt/clippy do not see it. Clippy
# is a plain (uninstrumented) check, in the shared target dir like the main lint.
if [ "${FUZZ_LINT:-1}" != 0 ]; then
  (cd fuzz && cargo fmt -- --check)
  (cd fuzz && cargo clippy --all-targets --locked -- -D warnings)
fi

# -s none: no sanitizer, which is what needs nightly. -a: debug assertions; overflow checks
# come from fuzz/Cargo.toml's release profile. 16 codegen units keep the build short.
BUILD=(-s none -a -O --codegen-units 16 --target-dir "$FUZZ_TARGET_DIR")
cargo fuzz build "${BUILD[@]}"

failed=()
for target in $FUZZ_TARGETS; do
  corpus="$FUZZ_WORK/corpus/$target"
  artifacts="$FUZZ_WORK/artifacts/$target"
  log="$FUZZ_WORK/$target.log"
  mkdir -p "$corpus" "$artifacts"
  # New inputs go to the scratch corpus (first directory); the committed seeds are read only.
  if cargo fuzz run "${BUILD[@]}" "$target" "$corpus" "fuzz/corpus/$target" -- \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1; then
    summary="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)"
    runs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)"
    echo "fuzz $target: ok, ${FUZZ_SECONDS}s, ${runs:-?} runs; ${summary:-no summary}"
  else
    echo "fuzz $target: FAILED (log $log, inputs in $artifacts/):"
    grep -E -A30 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -60 || tail -40 "$log"
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
if [ "${SCRATCH:-0}" = 1 ]; then
  rm -rf "$FUZZ_WORK"
  echo "fuzz: ${FUZZ_TARGETS// /, } ok"
else
  echo "fuzz: ${FUZZ_TARGETS// /, } ok (corpus and logs in $FUZZ_WORK)"
fi
